"""Pure decision logic of a journey's conditions and goal, and the words that explain them:
which tracked events count, and how a condition, its evidence and a wait read in a reason.

Stdlib only: the workflow calls it deterministically, and tests call it directly."""

from datetime import UTC, datetime
from typing import Any

from domain.journey import POSITIVE_CONDITIONS, ConditionPlan, ConditionType, Evidence, ProductEvent

# What a negative condition's thing is called when it did not happen ("no human open").
_NOT_HAPPENED = {
    ConditionType.NOT_OPENED: "no human open",
    ConditionType.NOT_CLICKED: "no human click",
}


def parse_utc(text: str) -> datetime:
    """An ISO 8601 time as an aware UTC datetime (a naive one is taken as UTC)."""
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_text(value: datetime) -> str:
    """A time as the reasons print it: 2026-12-03T10:02:11Z."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(seconds: float) -> str:
    """A wait's length in words: 48 h, 90 min, 5 s."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds:g} s"


def event_counts(
    event: ProductEvent,
    name: str,
    since: datetime,
    where: dict[str, Any] | None = None,
    match: list[str] | None = None,
    trigger: ProductEvent | None = None,
) -> bool:
    """Whether a tracked event counts for a condition or goal on `name`: performed at or after
    the enrollment (`since`), with every `where` property value equal, and every `match`
    property equal to that of the event that enrolled the journey (none: nothing matches)."""
    if event.name != name or parse_utc(event.occurred_at) < since:
        return False
    properties = event.properties or {}
    if not where_matches(where, properties):
        return False
    if match:
        if trigger is None:
            return False
        wanted = trigger.properties or {}
        if any(key not in wanted for key in match):
            return False
        return where_matches({key: wanted[key] for key in match}, properties)
    return True


def where_matches(where: dict[str, Any] | None, properties: dict[str, Any]) -> bool:
    """Every property value `where` names is equal in `properties` (no `where`: any event),
    as JSON values: true is not 1."""
    return all(
        key in properties and _same(properties[key], value) for key, value in (where or {}).items()
    )


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def describe_condition(condition: ConditionPlan, step_orders: dict[int, int]) -> str:
    """A condition in words: not_opened(step 2), clicked(step 1, https://…),
    performed(order.completed, where plan=pro, match cart_id)."""
    if condition.event is not None:
        parts = [condition.event]
        if condition.where:
            parts.append("where " + ", ".join(f"{k}={v}" for k, v in condition.where.items()))
        if condition.match:
            parts.append("match " + ", ".join(condition.match))
    else:
        order = step_orders.get(condition.step_id)
        parts = [f"step {order}" if order is not None else f"step id {condition.step_id}"]
        if condition.url:
            parts.append(condition.url)
    return f"{condition.type}({', '.join(parts)})"


def describe_evidence(evidence: Evidence) -> str:
    """One piece of evidence in words: human open at 2026-12-03T10:02:11Z (evt_1)."""
    at = f" at {utc_text(parse_utc(evidence.at))}" if evidence.at else ""
    if evidence.type == "open":
        what = "human open"
    elif evidence.type == "click":
        what = f"human click on {evidence.url}" if evidence.url else "human click"
    else:
        what = evidence.type  # a tracked event's name
    return f"{what}{at} ({evidence.event_id})"


def reason(
    condition: ConditionPlan | None,
    met: bool | None,
    has_alternative: bool,
    evidence: list[Evidence],
    step_orders: dict[int, int],
) -> str:
    """The one sentence that says why a step was decided as it was."""
    if condition is None or met is None:
        return "sent: no condition"
    words = describe_condition(condition, step_orders)
    within = f" within {duration(condition.wait_seconds)}" if condition.wait_seconds else ""
    positive = condition.type in POSITIVE_CONDITIONS
    if met:
        if positive:
            return f"sent: {words} met{_because(evidence)}"
        nothing = _NOT_HAPPENED.get(condition.type, f"no {condition.event} event")
        return f"sent: {words} met — {nothing}{within}"
    verb = "alternative sent" if has_alternative else "skipped"
    if positive:
        return f"{verb}: {words} not met{within}"
    return f"{verb}: {words} failed{_because(evidence)}"


def _because(evidence: list[Evidence]) -> str:
    """The first event that settled it; none when it is no longer known (a finished journey
    explained from the database after its events were erased)."""
    return f" — {describe_evidence(evidence[0])}" if evidence else ""
