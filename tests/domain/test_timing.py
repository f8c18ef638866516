"""Send windows, zone choice and delay-until dates (domain/timing.py), to the minute."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.timing import (
    DAYS,
    Window,
    choose_zone,
    due_from_field,
    next_opening,
    parse_clock,
    send_time,
    wall_clock,
)

NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = Window(("mon", "tue", "wed", "thu", "fri"), "09:00", "17:00")
EVERY_DAY = Window(DAYS, "09:00", "17:00")


def local(zone: ZoneInfo, text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_issues_worked_example_to_the_minute() -> None:
    zone = choose_zone("recipient", "UTC", {"timezone": "America/New_York"})
    enrolled = local(NY, "2026-12-07T18:00")  # a Monday
    step1_due = enrolled + timedelta(hours=48)
    assert step1_due == local(NY, "2026-12-09T18:00")  # Wednesday 18:00
    step1 = send_time(step1_due, WEEKDAYS, zone)
    assert step1.at == local(NY, "2026-12-10T09:00")  # Thursday 09:00
    assert step1.held_by_window and step1.zone == "America/New_York"
    assert "Thu 2026-12-10 09:00 America/New_York" in step1.reason
    assert step1.at is not None
    step2_due = step1.at + timedelta(hours=48)  # delays count from the actual send
    assert step2_due == local(NY, "2026-12-12T09:00")  # Saturday 09:00
    step2 = send_time(step2_due, WEEKDAYS, zone)
    assert step2.at == local(NY, "2026-12-14T09:00")  # Monday 09:00
    assert step2.at == utc("2026-12-14T14:00")


def test_inside_the_window_goes_at_once() -> None:
    at = local(NY, "2026-12-08T10:17:23")
    result = send_time(at, WEEKDAYS, choose_zone("America/New_York", None, {}))
    assert result.at == at and not result.held_by_window
    assert send_time(local(NY, "2026-12-08T17:00"), WEEKDAYS, None).at == local(
        NY, "2026-12-08T17:00"
    )  # no zone: no window


@pytest.mark.parametrize(
    "zone,before,opening_utc",
    [
        # New York springs forward on Sun 2026-03-08 (02:00 EST -> 03:00 EDT)
        (NY, "2026-03-07T18:00", "2026-03-08T13:00"),  # 09:00 EDT, not 14:00 UTC (10:00)
        (NY, "2026-03-08T18:00", "2026-03-09T13:00"),
        # and falls back on Sun 2026-11-01 (02:00 EDT -> 01:00 EST)
        (NY, "2026-10-31T18:00", "2026-11-01T14:00"),  # 09:00 EST, not 13:00 UTC (08:00)
        (NY, "2026-11-01T18:00", "2026-11-02T14:00"),
        # Berlin springs forward on Sun 2026-03-29 (02:00 CET -> 03:00 CEST)
        (BERLIN, "2026-03-28T18:00", "2026-03-29T07:00"),
        (BERLIN, "2026-03-29T18:00", "2026-03-30T07:00"),
        # and falls back on Sun 2026-10-25 (03:00 CEST -> 02:00 CET)
        (BERLIN, "2026-10-24T18:00", "2026-10-25T08:00"),
        (BERLIN, "2026-10-25T18:00", "2026-10-26T08:00"),
    ],
)
def test_across_a_dst_change_the_window_opens_at_its_wall_clock_time(
    zone: ZoneInfo, before: str, opening_utc: str
) -> None:
    opening = next_opening(EVERY_DAY, zone, local(zone, before))
    assert opening == utc(opening_utc)
    assert opening.astimezone(zone).strftime("%H:%M") == "09:00"


@pytest.mark.parametrize(
    "zone,day,opening_utc",
    [
        (NY, "2026-03-08", "2026-03-08T07:00"),  # 02:30 does not exist: 03:00 EDT
        (BERLIN, "2026-03-29", "2026-03-29T01:00"),  # 02:30 does not exist: 03:00 CEST
    ],
)
def test_a_start_that_does_not_exist_opens_at_the_first_valid_minute_after_it(
    zone: ZoneInfo, day: str, opening_utc: str
) -> None:
    window = Window(DAYS, "02:30", "05:00")
    opening = next_opening(window, zone, local(zone, f"{day}T00:00"))
    assert opening == utc(opening_utc)
    assert opening.astimezone(zone).strftime("%H:%M") == "03:00"
    # the next day it opens at 02:30 again
    after = next_opening(window, zone, opening + timedelta(hours=3))
    assert after.astimezone(zone).strftime("%H:%M") == "02:30"


@pytest.mark.parametrize(
    "zone,day,opening_utc",
    [
        (NY, "2026-11-01", "2026-11-01T05:30"),  # 01:30 EDT, the first of the two 01:30s
        (BERLIN, "2026-10-25", "2026-10-25T00:30"),  # 02:30 CEST, the first of the two
    ],
)
def test_a_start_shown_twice_on_fall_back_opens_at_its_first_occurrence(
    zone: ZoneInfo, day: str, opening_utc: str
) -> None:
    start = "01:30" if zone is NY else "02:30"
    window = Window(DAYS, start, "06:00")
    assert next_opening(window, zone, local(zone, f"{day}T00:00")) == utc(opening_utc)


def test_a_window_wholly_inside_a_skipped_hour_does_not_open_that_day() -> None:
    window = Window(DAYS, "02:10", "02:40")
    opening = next_opening(window, NY, local(NY, "2026-03-08T00:00"))
    assert opening == local(NY, "2026-03-09T02:10")


def test_a_window_crossing_midnight() -> None:
    friday_night = Window(("fri",), "20:00", "02:00")
    zone = BERLIN
    # Friday 19:00: opens at 20:00
    assert next_opening(friday_night, zone, local(zone, "2026-12-11T19:00")) == local(
        zone, "2026-12-11T20:00"
    )
    # Saturday 01:30 is still Friday's window
    at = local(zone, "2026-12-12T01:30")
    assert next_opening(friday_night, zone, at) == at
    # Saturday 02:00 it has closed: next Friday
    assert next_opening(friday_night, zone, local(zone, "2026-12-12T02:00")) == local(
        zone, "2026-12-18T20:00"
    )


def test_parse_clock() -> None:
    assert parse_clock("09:05").hour == 9
    for bad in ("9:00", "24:00", "12:60", "12-00", "ab:cd", "12:0", " 9:00", "+1:00"):
        with pytest.raises(ValueError):
            parse_clock(bad)


def test_zone_choice_says_which_zone_and_why() -> None:
    fixed = choose_zone("Europe/Berlin", None, {"timezone": "America/New_York"})
    assert fixed.name == "Europe/Berlin" and "window's zone" in fixed.reason
    own = choose_zone("recipient", "Europe/Berlin", {"timezone": "America/New_York"})
    assert own.name == "America/New_York" and "recipient's timezone field" in own.reason
    missing = choose_zone("recipient", "Europe/Berlin", {})
    assert missing.name == "Europe/Berlin"
    assert missing.reason == "fallback_timezone Europe/Berlin: the recipient has no timezone field"
    invalid = choose_zone("recipient", "Europe/Berlin", {"timezone": "Mars/Olympus_Mons"})
    assert invalid.name == "Europe/Berlin" and "'Mars/Olympus_Mons' is not an IANA zone" in (
        invalid.reason
    )
    for junk in (42, "../../etc/passwd", " Europe/Berlin", ""):
        assert choose_zone("recipient", "UTC", {"timezone": junk}).name == "UTC"


def test_a_changed_timezone_field_gives_the_new_zone() -> None:
    # Each step reads the fields afresh, so a change takes effect at the next step.
    at = utc("2026-12-08T15:00")  # 10:00 in New York, 16:00 in Berlin
    ny = send_time(at, WEEKDAYS, choose_zone("recipient", "UTC", {"timezone": "America/New_York"}))
    berlin = send_time(at, WEEKDAYS, choose_zone("recipient", "UTC", {"timezone": "Europe/Berlin"}))
    assert ny.at == at
    assert berlin.at == at  # 16:00 < 17:00
    later = utc("2026-12-08T17:00")  # 12:00 NY, 18:00 Berlin
    assert send_time(
        later, WEEKDAYS, choose_zone("recipient", "UTC", {"timezone": "Europe/Berlin"})
    ).at == (local(BERLIN, "2026-12-09T09:00"))


NOW = utc("2026-12-01T12:00")


@pytest.mark.parametrize(
    "value,offset,expected",
    [
        ("2026-12-20T10:00:00+02:00", 0, "2026-12-20T08:00"),  # with an offset: as given
        ("2026-12-20T10:00:00Z", -24, "2026-12-19T10:00"),  # a day before
        ("2026-12-20T10:00", 0, "2026-12-20T15:00"),  # naive: read in the recipient's zone
        ("2026-12-20", 0, "2026-12-20T05:00"),  # a date: 00:00 in the recipient's zone
        ("2027-03-14T02:30", 0, "2027-03-14T07:00"),  # a skipped time: the first valid minute
        ("2026-12-20", 1.5, "2026-12-20T06:30"),
    ],
)
def test_delay_until_in_the_future(value: str, offset: float, expected: str) -> None:
    due = due_from_field("trial_ends_at", value, offset, NY, NOW)
    assert due.at == utc(expected)


def test_delay_until_in_the_past_is_due_now() -> None:
    due = due_from_field("trial_ends_at", "2026-11-01T10:00:00Z", 0, NY, NOW)
    assert due.at == NOW and "past: due now" in due.reason
    # the offset can make it past too
    due = due_from_field("trial_ends_at", "2026-12-01T13:00:00Z", -24, NY, NOW)
    assert due.at == NOW


@pytest.mark.parametrize(
    "value,reason",
    [
        (None, "the field trial_ends_at is missing"),
        ("", "the field trial_ends_at is missing"),
        ("next tuesday", "the field trial_ends_at ('next tuesday') is not a date or date-time"),
        (1767225600, "the field trial_ends_at (1767225600) is not a date or date-time"),
        (True, "the field trial_ends_at (True) is not a date or date-time"),
        ("2026-02-30", "the field trial_ends_at ('2026-02-30') is not a date or date-time"),
    ],
)
def test_delay_until_missing_or_unparseable_is_a_skip(value: object, reason: str) -> None:
    due = due_from_field("trial_ends_at", value, 0, NY, NOW)
    assert due.at is None and due.reason == reason


def test_every_process_reads_zone_data_from_the_tzdata_package() -> None:
    # A fresh interpreter: importing domain.timing empties the system search path, and zones
    # still resolve (from the tzdata package).
    code = (
        "import zoneinfo, domain.timing; from zoneinfo import ZoneInfo;"
        "assert zoneinfo.TZPATH == (), zoneinfo.TZPATH;"
        "print(ZoneInfo('America/New_York').key)"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "America/New_York"


instants = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
)
clocks = st.tuples(st.integers(0, 23), st.sampled_from([0, 15, 30, 45])).map(
    lambda hm: f"{hm[0]:02d}:{hm[1]:02d}"
)
windows = st.builds(
    Window,
    st.lists(st.sampled_from(DAYS), min_size=1, unique=True).map(tuple),
    clocks,
    clocks,
).filter(lambda w: w.start != w.end)
zones = st.sampled_from([NY, BERLIN, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("UTC")])


@settings(max_examples=300, deadline=None)
@given(window=windows, zone=zones, at=instants)
def test_the_next_opening_is_never_before_and_is_inside_the_window(
    window: Window, zone: ZoneInfo, at: datetime
) -> None:
    opening = next_opening(window, zone, at)
    assert opening >= at
    assert opening - at <= timedelta(days=8)
    assert next_opening(window, zone, opening) == opening  # open at that moment
    # nothing opens earlier: a minute before the opening the window was closed (or it is `at`)
    if opening > at:
        assert next_opening(window, zone, max(at, opening - timedelta(minutes=1))) == opening


def test_wall_clock_is_exact_on_ordinary_days() -> None:
    assert wall_clock(datetime(2026, 7, 1).date(), parse_clock("09:00"), NY) == utc(
        "2026-07-01T13:00"
    )
