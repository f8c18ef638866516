"""When a message may go out: send windows in a zone, the zone a recipient's window uses, and a
step due at a date held in a recipient field. Pure and deterministic (stdlib + zoneinfo).

Zone data comes from the `tzdata` package, never from the machine's /usr/share/zoneinfo:
importing this module empties zoneinfo's search path, so every process (API, worker, tests,
any machine) reads the same pinned database, and a send time computed on one machine is the one
another would compute. (The journey also records each computed time in its history, so a
replay never recomputes it; the pinned data keeps live processes agreeing with each other.)

Wall-clock rules, exact across daylight-saving changes:
- a window opens at its `start` wall-clock time on each of its days, whatever the offset that
  day (09:00 the day after clocks change is 09:00, not 08:00 or 10:00);
- a wall-clock time that does not exist that day (02:30 on a spring-forward night) means the
  first valid minute after it: the moment the clocks jump (03:00);
- a wall-clock time that happens twice (01:30 on a fall-back night) means its first
  occurrence (the earlier instant, PEP 495 `fold=0`);
- `start > end` crosses midnight: the window opened on a day closes on the next one; a day in
  `days` is the day the window opens.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from domain.journey import SendTimeAnswer, SendTimeQuery, SendWindowPlan

# See the module docstring: the tzdata package, identical everywhere, not the system's files.
zoneinfo.reset_tzpath([])
ZoneInfo.clear_cache()

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
RECIPIENT_ZONE = "recipient"  # a window's `timezone`: the recipient's `timezone` field
TIMEZONE_FIELD = "timezone"


def zone_or_none(name: object) -> ZoneInfo | None:
    """The IANA zone of that name, or None when it is not one (or not a string)."""
    if not isinstance(name, str) or not name or name != name.strip():
        return None
    try:
        return ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None


def parse_clock(value: str) -> time:
    """`HH:MM` (24-hour) as a time; ValueError otherwise."""
    hours, sep, minutes = value.partition(":")
    if not (sep and len(hours) == 2 and len(minutes) == 2 and hours.isdigit()):
        raise ValueError(f"{value!r} is not a HH:MM time")
    if not minutes.isdigit() or int(hours) > 23 or int(minutes) > 59:
        raise ValueError(f"{value!r} is not a HH:MM time")
    return time(int(hours), int(minutes))


def wall_clock(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The instant (UTC) a clock in `zone` shows `at` on `day`: a time skipped by a change
    means the first valid minute after it, a time shown twice its first occurrence."""
    local = datetime.combine(day, at, tzinfo=zone)  # fold=0: the earlier of two occurrences
    instant = local.astimezone(UTC)
    if instant.astimezone(zone).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant
    # In a gap: fold=1 reads it with the offset after the change, landing before the jump;
    # step a minute at a time to the first instant whose wall-clock is past the asked time.
    moment = local.replace(fold=1).astimezone(UTC)
    while moment.astimezone(zone).replace(tzinfo=None) < local.replace(tzinfo=None):
        moment += timedelta(minutes=1)
    return moment.replace(second=0, microsecond=0)


@dataclass(frozen=True)
class Window:
    """A send window: on `days` (mon..sun), from `start` to `end` wall-clock, in `zone`."""

    days: Sequence[str]
    start: str  # HH:MM
    end: str  # HH:MM; before `start`: the window crosses midnight

    def openings(self, zone: ZoneInfo, around: datetime) -> list[tuple[datetime, datetime]]:
        """The (open, close) instants of the windows opening from the day before `around`'s
        local date to eight days after it, in order: enough to find the next opening."""
        start, end = parse_clock(self.start), parse_clock(self.end)
        first = around.astimezone(zone).date() - timedelta(days=1)
        spans = []
        for n in range(10):
            day = first + timedelta(days=n)
            if DAYS[day.weekday()] not in self.days:
                continue
            closes_on = day if end > start else day + timedelta(days=1)
            spans.append((wall_clock(day, start, zone), wall_clock(closes_on, end, zone)))
        return spans


def next_opening(window: Window, zone: ZoneInfo, at: datetime) -> datetime:
    """`at` itself when the window is open then, else the next moment it opens (UTC)."""
    for opens, closes in window.openings(zone, at):
        if opens >= closes:  # wholly inside a skipped hour that day: no window then
            continue
        if opens <= at < closes:
            return at.astimezone(UTC)
        if opens >= at:
            return opens
    raise ValueError("a window with no days never opens")  # validation refuses empty days


@dataclass(frozen=True)
class ZoneChoice:
    """The zone a recipient's window uses, and why (for the journey view)."""

    name: str
    reason: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.name)


def choose_zone(timezone: str, fallback: str | None, fields: Mapping[str, object]) -> ZoneChoice:
    """A window's zone: its own IANA zone, or with "recipient" the recipient's `timezone`
    field, falling back to `fallback` when the field is missing or not a valid zone."""
    if timezone != RECIPIENT_ZONE:
        return ZoneChoice(timezone, f"the window's zone {timezone}")
    value = fields.get(TIMEZONE_FIELD)
    if zone_or_none(value) is not None:
        return ZoneChoice(str(value), f"the recipient's timezone field: {value}")
    if fallback is None or zone_or_none(fallback) is None:
        raise ValueError("a recipient window needs a valid fallback_timezone")
    if value is None or value == "":
        why = "the recipient has no timezone field"
    else:
        why = f"the recipient's timezone field {str(value)[:64]!r} is not an IANA zone"
    return ZoneChoice(fallback, f"fallback_timezone {fallback}: {why}")


@dataclass(frozen=True)
class DueDate:
    """When a `delay_until` step is due: `at` (UTC), or None when it must be skipped;
    `reason` says which, and why."""

    at: datetime | None
    reason: str


def due_from_field(
    field: str, value: object, offset_hours: float, zone: ZoneInfo, now: datetime
) -> DueDate:
    """A `delay_until {field, offset_hours}` step's due time from the field's `value`: an ISO
    8601 date-time with an offset, a naive one read in `zone`, or a date (00:00 in `zone`);
    plus `offset_hours`; already past → due `now`."""
    if value is None or value == "":
        return DueDate(None, f"the field {field} is missing")
    parsed = parse_field_time(value, zone)
    if parsed is None:
        return DueDate(None, f"the field {field} ({repr(value)[:64]}) is not a date or date-time")
    due = parsed + timedelta(hours=offset_hours)
    when = (
        f"{field} {'-' if offset_hours < 0 else '+'} {abs(offset_hours):g} h"
        if offset_hours
        else field
    )
    if due <= now:
        return DueDate(now.astimezone(UTC), f"{when} is past: due now")
    return DueDate(due, f"due at {when}")


def parse_field_time(value: object, zone: ZoneInfo) -> datetime | None:
    """A field's date or date-time as an instant (UTC), or None when it is neither."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    try:
        if len(text) == 10:  # YYYY-MM-DD
            return wall_clock(date.fromisoformat(text), time(0, 0), zone)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return wall_clock(parsed.date(), parsed.time(), zone)
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class SendTime:
    """When a step goes out: `at` (UTC; None: skip it, `reason` says why), held by a window
    until then (`window_until`) or not, in `zone` (None without a window)."""

    at: datetime | None
    reason: str
    zone: str | None = None
    held_by_window: bool = False


def send_time(due: datetime, window: Window | None, zone: ZoneChoice | None) -> SendTime:
    """A step due at `due` goes out then, or at its window's next opening in `zone`."""
    if window is None or zone is None:
        return SendTime(due, "no send window")
    opening = next_opening(window, zone.zone, due)
    if opening == due.astimezone(UTC):
        return SendTime(opening, f"inside the send window ({zone.reason})", zone.name)
    local = opening.astimezone(zone.zone).strftime("%a %Y-%m-%d %H:%M")
    reason = f"held for the send window: opens {local} {zone.name} ({zone.reason})"
    return SendTime(opening, reason, zone.name, True)


def answer_send_time(query: SendTimeQuery, fields: dict[str, object]) -> SendTimeAnswer:
    """The answer to `query` for a recipient with these fields (the rules above), as the
    journey's compute_send_time activity answers it and a simulation too."""
    at = datetime.fromisoformat(query.at)
    if query.delay_until is not None:
        zone = reading_zone(fields, query.window)
        due = due_from_field(
            query.delay_until.field,
            fields.get(query.delay_until.field),
            query.delay_until.offset_hours,
            ZoneInfo(zone),
            at,
        )
        return SendTimeAnswer(due.at.isoformat() if due.at else None, due.reason, zone)
    if query.window is None:
        return SendTimeAnswer(query.at, "no send window")
    window = query.window
    chosen = choose_zone(window.timezone, window.fallback_timezone, fields)
    result = send_time(at, Window(window.days, window.start, window.end), chosen)
    assert result.at is not None
    return SendTimeAnswer(result.at.isoformat(), result.reason, chosen.name)


def reading_zone(fields: dict[str, object], window: SendWindowPlan | None) -> str:
    """The zone a naive date or date-time in a recipient field is read in: the recipient's
    `timezone` field, else the step's window zone (or its fallback), else UTC."""
    own = fields.get(TIMEZONE_FIELD)
    if zone_or_none(own) is not None:
        return str(own)
    if window is not None and window.timezone != RECIPIENT_ZONE:
        return window.timezone
    if window is not None and window.fallback_timezone:
        return window.fallback_timezone
    return "UTC"
