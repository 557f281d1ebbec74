"""The on_redis_down = "local" limiter, sans-IO: the same algorithms on a clock we move."""

from __future__ import annotations

import random

import pytest

from madsidecar.ratelimit.fallback import LocalCheck, LocalLimiter

SECOND_US = 1_000_000


def check(algorithm: str, limit: int = 10, window_ms: int = 1000, cost: int = 1) -> LocalCheck:
    return LocalCheck(f"k:{algorithm}", algorithm, limit, window_ms, cost)


def test_sliding_window_never_exceeds_the_limit_in_any_window() -> None:
    limiter = LocalLimiter(100)
    rng = random.Random(7)
    allowed_at: list[int] = []
    now = 0
    for _ in range(3000):
        now += rng.choice((1, 10, 1000, 50_000, 300_000))
        consumed, [decision] = limiter.decide([check("sliding_window")], True, now)
        assert decision.retry_after_ms >= 0
        if consumed:
            allowed_at.append(now)
    for index, start in enumerate(allowed_at):
        inside = [t for t in allowed_at[index:] if t < start + SECOND_US]
        assert len(inside) <= 10


def test_retry_after_is_exact_for_every_algorithm() -> None:
    for algorithm in ("sliding_window", "sliding_counter", "gcra"):
        limiter = LocalLimiter(100)
        now = 5 * SECOND_US + 123
        while limiter.decide([check(algorithm)], True, now)[0]:
            now += 7
        _, [denied] = limiter.decide([check(algorithm)], True, now)
        assert not denied.allowed and denied.retry_after_ms > 0
        later = now + denied.retry_after_ms * 1000
        assert limiter.decide([check(algorithm)], True, later)[0], algorithm


def test_gcra_allows_the_burst_then_one_per_interval() -> None:
    limiter = LocalLimiter(100)
    gcra = check("gcra", limit=100, window_ms=60_000)
    results = [limiter.decide([gcra], True, 0)[0] for _ in range(150)]
    assert sum(results) == 100
    # One unit comes back every 600 ms.
    assert not limiter.decide([gcra], True, 599_000)[0]
    assert limiter.decide([gcra], True, 600_000)[0]


def test_sliding_counter_bound_at_a_window_boundary() -> None:
    limiter = LocalLimiter(100)
    counter = check("sliding_counter", limit=10)
    # Everything at the end of one fixed window, then right after the boundary.
    before = sum(limiter.decide([counter], True, SECOND_US - 1)[0] for _ in range(20))
    after = sum(limiter.decide([counter], True, SECOND_US + 1)[0] for _ in range(20))
    assert before == 10 and after == 0
    # The previous window's weight fades: half way through, half the limit is back.
    half = sum(limiter.decide([counter], True, SECOND_US + SECOND_US // 2)[0] for _ in range(20))
    assert half == 5


@pytest.mark.parametrize("algorithm", ["sliding_window", "sliding_counter", "gcra"])
def test_all_or_nothing_and_cost(algorithm: str) -> None:
    limiter = LocalLimiter(100)
    big = LocalCheck("a", algorithm, 10, 1000, 7)
    small = LocalCheck("b", "gcra", 1, 1000, 1)
    assert limiter.decide([big, small], True, 0)[0]
    consumed, decisions = limiter.decide([big, small], True, 1)
    assert not consumed and not decisions[1].allowed
    # `a` consumed nothing the second time: 3 units are left.
    _, [left] = limiter.decide([LocalCheck("a", algorithm, 10, 1000, 3)], False, 2)
    assert left.allowed and left.remaining == 3


def test_keys_are_bounded() -> None:
    limiter = LocalLimiter(3)
    for index in range(10):
        limiter.decide([LocalCheck(f"k{index}", "gcra", 1, 1000, 1)], True, 0)
    assert len(limiter) == 3
