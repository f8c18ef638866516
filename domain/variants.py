"""A/B variants of a step: which variant a journey gets, and which variant wins.

Pure functions (stdlib only) so the assignment is the same in the send activity, in a rehearsal
and in a test: a journey's variant is a function of (campaign, step, email) alone, identical on
retry, replay and re-entry, until a winner is chosen (services/variants.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from enum import StrEnum

MIN_VARIANTS, MAX_VARIANTS = 2, 4  # sending variants; a holdout comes on top


class WinnerMetric(StrEnum):
    OPEN_RATE = "open_rate"  # human opens / sent
    CLICK_RATE = "click_rate"  # human clicks / sent
    CONVERSION_RATE = "conversion_rate"  # conversions / journeys given the variant


def point(campaign_id: int, step_id: int, email: str) -> float:
    """Where this address falls in [0, 1) for this step: the first 64 bits of a sha256."""
    key = f"{campaign_id}:{step_id}:{email.strip().lower()}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") / 2**64


def pick(weights: Sequence[float], at: float) -> int:
    """The index of the weight whose share of [0, 1) holds `at` (weights are proportions)."""
    total = sum(weights)
    upto = 0.0
    for index, weight in enumerate(weights):
        upto += weight / total
        if at < upto:
            return index
    return len(weights) - 1  # rounding: `at` just under 1


def best(rates: Sequence[tuple[str, float]]) -> str:
    """The name with the highest rate; ties go to the first listed."""
    winner, top = rates[0]
    for name, rate in rates[1:]:
        if rate > top:
            winner, top = name, rate
    return winner
