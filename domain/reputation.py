"""The reputation guard's limits (applied by storage/reputation.py), set from settings."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReputationLimits:
    # Gmail and Yahoo reject bulk senders at a 0.3% spam-complaint rate; stop at it.
    max_complaint_rate: float = 0.003
    max_bounce_rate: float = 0.05
    min_sent: int = 100  # below this, one bad address would look like a catastrophe
