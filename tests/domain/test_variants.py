"""Variant assignment and the winner's choice, as plain functions: deterministic, in proportion
to the weights, and ties to the first variant."""

from __future__ import annotations

from collections import Counter

from domain.variants import best, pick, point


def test_a_journeys_point_is_a_function_of_campaign_step_and_email_alone() -> None:
    assert point(1, 2, "ana@example.com") == point(1, 2, "ana@example.com")
    assert point(1, 2, "Ana@Example.com ") == point(1, 2, "ana@example.com")  # one address
    assert 0 <= point(1, 2, "ana@example.com") < 1
    others = {point(1, 3, "ana@example.com"), point(2, 2, "ana@example.com")}
    assert point(1, 2, "ana@example.com") not in others  # another step or campaign: re-drawn


def test_a_50_50_split_over_10000_emails_lands_within_2_percent() -> None:
    given = Counter(pick([1, 1], point(7, 11, f"person{n}@example.com")) for n in range(10_000))
    assert abs(given[0] - 5000) <= 200, given
    assert given[0] + given[1] == 10_000


def test_weights_are_proportions() -> None:
    given = Counter(pick([1, 3], point(7, 12, f"person{n}@example.com")) for n in range(10_000))
    assert abs(given[1] / 10_000 - 0.75) <= 0.02, given
    assert Counter(pick([0.2, 0.2, 0.6], p / 100) for p in range(100)) == {0: 20, 1: 20, 2: 60}
    assert pick([1, 1], 0.999_999_999_999) == 1


def test_the_best_rate_wins_and_ties_go_to_the_first() -> None:
    assert best([("A", 0.2), ("B", 0.3), ("C", 0.1)]) == "B"
    assert best([("A", 0.3), ("B", 0.3)]) == "A"
    assert best([("A", 0.0), ("B", 0.0), ("C", 0.0)]) == "A"
