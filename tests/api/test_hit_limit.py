"""The per-token limit on recorded tracking hits (api/hit_limit.py)."""

from __future__ import annotations

from api.hit_limit import HitLimiter


def test_a_token_records_at_most_n_hits_a_minute_then_again_the_next() -> None:
    limiter = HitLimiter(per_minute=3)
    assert [limiter.allow("a", now=60.0 + i) for i in range(5)] == [True] * 3 + [False] * 2
    assert limiter.allow("b", now=61.0)  # per token
    assert limiter.allow("a", now=120.0)  # a new minute


def test_memory_is_bounded_by_forgetting_the_least_recently_hit() -> None:
    limiter = HitLimiter(per_minute=1, max_tokens=2)
    for token in ("a", "b", "c"):
        assert limiter.allow(token, now=0.0)
    assert limiter.allow("a", now=1.0)  # forgotten, so allowed again
    assert not limiter.allow("c", now=1.0)
