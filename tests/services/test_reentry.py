"""Who may enter a campaign again (services/reentry.py): only once the latest journey there has
ended and the cooldown has passed since, and never after an unsubscribe, a complaint, a hard
bounce or an erasure — whatever the cooldown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.reentry import refusal
from storage.models import Enrollment

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def entry(
    n: int, status: str, ended_ago: timedelta | None, reason: str | None = None
) -> Enrollment:
    finished = NOW - ended_ago if ended_ago is not None else None
    return Enrollment(campaign_id=1, email="a@x.example", entry=n, status=status,
                      status_reason=reason, finished_at=finished, workflow_id=f"w{n}")  # fmt: skip


def test_an_ended_journey_may_be_followed_once_the_cooldown_has_passed() -> None:
    assert refusal([entry(1, "completed", 2 * DAY)], DAY, NOW) is None
    assert refusal([entry(1, "converted", DAY)], DAY, NOW) is None  # exactly at its end
    assert refusal([entry(1, "removed", timedelta(0))], timedelta(0), NOW) is None
    # Only the latest entry's end counts.
    rows = [entry(1, "completed", 9 * DAY), entry(2, "completed", timedelta(hours=1))]
    assert refusal(rows, DAY, NOW) == (
        "already enrolled in this campaign: re-entry allowed from 2026-12-02T11:00:00+00:00"
    )


def test_a_journey_not_ended_yet_is_not_entered_again() -> None:
    assert "entry 1 is still running" in (refusal([entry(1, "active", None)], DAY, NOW) or "")
    # Marked ended but its end not recorded yet (a removal its journey has not heard of).
    assert "still running" in (refusal([entry(1, "removed", None)], timedelta(0), NOW) or "")


@pytest.mark.parametrize(
    "status,reason", [("unsubscribed", None), ("bounced", None), ("complained", None),
                      ("removed", "erased")]
)  # fmt: skip
def test_never_after_an_unsubscribe_bounce_complaint_or_erasure(
    status: str, reason: str | None
) -> None:
    rows = [entry(1, status, 30 * DAY, reason), entry(2, "completed", 20 * DAY)]
    said = refusal(rows, timedelta(0), NOW)
    assert said is not None and "no re-entry after an unsubscribe" in said
