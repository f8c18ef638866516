"""A journey's workflow id names its campaign, address and entry, and reads back to them."""

from __future__ import annotations

import pytest

from domain.journey import parse_workflow_id, workflow_id


@pytest.mark.parametrize(
    "campaign,email,entry",
    [(1, "maya@example.com", 1), (12, "maya@example.com", 2), (3, "a#1-b@x.example", 1),
     (3, "a#1-b@x.example", 10), (7, "o'neil+tag@sub.example.org", 3)],
)  # fmt: skip
def test_an_id_reads_back_to_its_campaign_address_and_entry(
    campaign: int, email: str, entry: int
) -> None:
    made = workflow_id(campaign, email, entry)
    assert made.endswith(f"#{entry}") == (entry > 1)
    assert parse_workflow_id(made) == (campaign, email, entry)


def test_other_ids_are_not_journeys() -> None:
    assert workflow_id(5, " Maya@Example.com ") == "drip-campaign-5-maya@example.com"
    for other in ("enrollment-batch-3", "drip-campaign-x-a@b.c", "drip-campaign-4-", "resend-1"):
        assert parse_workflow_id(other) is None
    # Only a number after the address is an entry.
    assert parse_workflow_id("drip-campaign-4-a@b.c#x") == (4, "a@b.c#x", 1)
