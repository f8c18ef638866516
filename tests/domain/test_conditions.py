"""The pure decision logic of conditions and goals (domain/conditions.py), and its words."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from domain.conditions import (
    describe_condition,
    describe_evidence,
    duration,
    event_counts,
    parse_utc,
    reason,
    utc_text,
    where_matches,
)
from domain.journey import ConditionPlan, ConditionType, Evidence, ProductEvent

ENROLLED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
CART = ProductEvent("evt_cart", "cart.abandoned", ENROLLED.isoformat(), {"cart_id": "c1"})


def order(at: datetime = ENROLLED, **properties: object) -> ProductEvent:
    return ProductEvent("evt_order", "order.completed", at.isoformat(), dict(properties))


def test_an_event_counts_from_the_enrollment_on_and_by_its_name() -> None:
    assert event_counts(order(), "order.completed", ENROLLED)
    assert event_counts(order(ENROLLED + timedelta(days=3)), "order.completed", ENROLLED)
    assert not event_counts(order(ENROLLED - timedelta(seconds=1)), "order.completed", ENROLLED)
    assert not event_counts(order(), "order.refunded", ENROLLED)


def test_where_needs_every_value_equal_as_json() -> None:
    assert where_matches({"plan": "pro"}, {"plan": "pro", "seats": 3})
    assert where_matches(None, {}) and where_matches({}, {"plan": "pro"})
    assert not where_matches({"plan": "pro"}, {"plan": "basic"})
    assert not where_matches({"plan": "pro", "seats": 3}, {"plan": "pro"})
    assert where_matches({"seats": 3}, {"seats": 3.0})
    assert not where_matches({"trial": True}, {"trial": 1}), "true is not 1"
    assert not where_matches({"n": 0}, {"n": False})


def test_match_compares_with_the_event_that_enrolled_the_journey() -> None:
    name = "order.completed"
    assert event_counts(order(cart_id="c1"), name, ENROLLED, match=["cart_id"], trigger=CART)
    assert not event_counts(order(cart_id="c2"), name, ENROLLED, match=["cart_id"], trigger=CART)
    assert not event_counts(order(), name, ENROLLED, match=["cart_id"], trigger=CART)
    assert not event_counts(order(cart_id="c1"), name, ENROLLED, match=["cart_id"])  # no trigger
    assert not event_counts(order(store="eu"), name, ENROLLED, match=["store"], trigger=CART)


def test_times_and_durations_in_words() -> None:
    assert parse_utc("2026-12-03T10:02:11") == datetime(2026, 12, 3, 10, 2, 11, tzinfo=UTC)
    assert parse_utc("2026-12-03T11:02:11+01:00") == datetime(2026, 12, 3, 10, 2, 11, tzinfo=UTC)
    assert utc_text(datetime(2026, 12, 3, 10, 2, 11, 999, tzinfo=UTC)) == "2026-12-03T10:02:11Z"
    assert [duration(s) for s in (48 * 3600, 5400, 3, 1.5, 5000)] == [
        "48 h", "90 min", "3 s", "1.5 s", "1.39 h"
    ]  # fmt: skip


def test_conditions_and_evidence_in_words() -> None:
    orders = {20: 2}
    assert describe_condition(ConditionPlan(ConditionType.NOT_OPENED, 20), orders) == (
        "not_opened(step 2)"
    )
    click = ConditionPlan(ConditionType.CLICKED, 20, "https://a.example/p")
    assert describe_condition(click, orders) == "clicked(step 2, https://a.example/p)"
    product = ConditionPlan(
        ConditionType.PERFORMED, 0, event="order.completed", where={"plan": "pro"},
        match=["cart_id"],
    )  # fmt: skip
    assert describe_condition(product, orders) == (
        "performed(order.completed, where plan=pro, match cart_id)"
    )
    at = "2026-12-03T10:02:11.5+00:00"
    assert describe_evidence(Evidence("evt_1", "open", at)) == (
        "human open at 2026-12-03T10:02:11Z (evt_1)"
    )
    assert describe_evidence(Evidence("evt_2", "click", at, url="https://a.example/p")) == (
        "human click on https://a.example/p at 2026-12-03T10:02:11Z (evt_2)"
    )
    assert describe_evidence(Evidence("evt_3", "order.completed", at)) == (
        "order.completed at 2026-12-03T10:02:11Z (evt_3)"
    )


def test_the_reason_of_each_outcome() -> None:
    orders = {20: 2}
    opened = Evidence("evt_1", "open", "2026-12-03T10:02:11+00:00")
    not_opened = ConditionPlan(ConditionType.NOT_OPENED, 20, wait_seconds=48 * 3600)
    assert reason(not_opened, False, True, [opened], orders) == (
        "alternative sent: not_opened(step 2) failed — human open at 2026-12-03T10:02:11Z (evt_1)"
    )
    assert reason(not_opened, True, True, [], orders) == (
        "sent: not_opened(step 2) met — no human open within 48 h"
    )
    performed = ConditionPlan(
        ConditionType.PERFORMED, 0, event="order.completed", match=["cart_id"],
        wait_seconds=48 * 3600,
    )  # fmt: skip
    assert reason(performed, False, False, [], orders) == (
        "skipped: performed(order.completed, match cart_id) not met within 48 h"
    )
    assert reason(None, None, False, [], orders) == "sent: no condition"
