"""The chaos run in its short form, and its checker shown to catch each kind of breach.

A checker that cannot fail proves nothing: each promise gets a history that breaks it
and one, as close as can be, that keeps it.
"""

from __future__ import annotations

from collections import Counter

from .chaos.history import (
    CacheRead,
    CacheWrite,
    Delivery,
    Departure,
    History,
    LockHold,
    Publish,
    RateHit,
    SessionLife,
    SessionRead,
    check,
)
from .chaos.run import FAULTS, render, run_chaos

SHORT_RUN_S = 35


def test_the_short_chaos_run_breaks_no_promise() -> None:
    run, verdict = run_chaos(SHORT_RUN_S, progress=print)
    print(render(run, verdict, SHORT_RUN_S))
    assert verdict.broken_count == 0, dict(verdict.broken)
    assert all(run.faults[fault] >= 1 for fault in FAULTS), run.faults
    history = run.history
    assert history.outcomes["ok"] > 5000
    for promise in (
        "lock fences strictly increase", "lock exclusion", "cache coherence",
        "sessions kept, revocations seen", "rate limits exact", "presence leaves",
        "locks released on disconnect", "pub/sub at most once, in order",
    ):  # fmt: skip
        assert verdict.checked[promise] > 0, f"{promise}: nothing was checked"


def broken(history: History) -> set[str]:
    """The promises `history` breaks, by name."""
    return set(check(history).broken)


def hold(fence: int, acquired: tuple[float, float], release_at: float) -> LockHold:
    return LockHold("L", fence, acquired[0], acquired[1], release_at, True)


def test_fences_out_of_order_are_caught() -> None:
    kept = History(lock_holds=[hold(1, (0, 1), 2), hold(2, (3, 4), 5)])
    assert not broken(kept)
    backwards = History(lock_holds=[hold(5, (0, 1), 2), hold(4, (3, 4), 5)])
    assert broken(backwards) == {"lock fences strictly increase"}
    # Overlapping acquires may be granted in either order.
    concurrent = History(lock_holds=[hold(5, (0, 3), 3.5), hold(4, (1, 2), 2.5)])
    assert not broken(concurrent)


def test_two_confirmed_holders_at_once_are_caught() -> None:
    both = History(lock_holds=[hold(1, (0, 1), 10), hold(2, (2, 3), 4)])
    assert broken(both) == {"lock exclusion"}
    # The first holder's release said it no longer held: no proof of overlap.
    lost = History(lock_holds=[LockHold("L", 1, 0, 1, 10, False), hold(2, (2, 3), 4)])
    assert not broken(lost)


def write(version: int, start: float, end: float, acked: bool = True) -> CacheWrite:
    return CacheWrite("a", "k", version, start, end, acked)


def read(version: int | None, start: float, stale: bool = False) -> CacheRead:
    return CacheRead("b", "k", version, start, start + 0.001, stale)


def test_stale_cache_reads_are_caught_and_overlapping_writes_are_not() -> None:
    writes = [write(1, 0, 0.1), write(2, 1, 1.1)]
    assert not broken(History(cache_writes=writes, cache_reads=[read(2, 1.2)]))
    assert broken(History(cache_writes=writes, cache_reads=[read(1, 2.5)])) == {"cache coherence"}
    # Marked stale (Redis away): allowed.
    assert not broken(History(cache_writes=writes, cache_reads=[read(1, 2.5, stale=True)]))
    # A miss after a write returned is a loss.
    assert broken(History(cache_writes=writes, cache_reads=[read(None, 2.5)]))
    # A version nobody wrote.
    assert broken(History(cache_writes=writes, cache_reads=[read(7, 2.5)]))
    # Two writes in flight together land in either order.
    overlapping = [write(1, 0, 1.0), write(2, 0.5, 0.6)]
    assert not broken(History(cache_writes=overlapping, cache_reads=[read(1, 3)]))
    # A failed write may land late: its value is not judged.
    failed = [write(1, 0, 0.1, acked=False), write(2, 1, 1.1)]
    assert not broken(History(cache_writes=failed, cache_reads=[read(1, 5)]))


def test_lost_and_unrevoked_sessions_are_caught() -> None:
    life = SessionLife("t", created_end=1.0, revoke_start=5.0, revoke_end=5.1)
    fine = [SessionRead("t", True, 2, 2.1), SessionRead("t", False, 5.2, 5.3)]
    assert not broken(History(sessions=[life], session_reads=fine))
    lost = [SessionRead("t", False, 2, 2.1)]
    assert broken(History(sessions=[life], session_reads=lost))
    unrevoked = [SessionRead("t", True, 7.0, 7.1)]
    assert broken(History(sessions=[life], session_reads=unrevoked))


def test_late_departures_are_caught_unless_redis_was_down() -> None:
    late = Departure("presence leaves", "x", gone_at=10, left_at=12, deadline_s=1)
    assert broken(History(departures=[late]))
    assert not broken(History(departures=[late], outages=[(10.2, 11.5)]))
    never = Departure("presence leaves", "x", gone_at=10, left_at=None, deadline_s=1)
    assert broken(History(departures=[never]))


def test_more_hits_than_the_limit_in_one_window_are_caught() -> None:
    def hit(at: float, degraded: bool = False) -> RateHit:
        return RateHit("k", 2, 1.0, True, degraded, at, at + 0.01)

    assert not broken(History(rate_hits=[hit(0), hit(0.5), hit(1.1)]))
    assert broken(History(rate_hits=[hit(0), hit(0.3), hit(0.6)]))
    # Degraded (Redis away, the documented fallback) hits are not counted.
    assert not broken(History(rate_hits=[hit(0), hit(0.3), hit(0.6, degraded=True)]))


def test_an_internal_error_is_a_breach() -> None:
    assert broken(History(outcomes=Counter(ok=10, INTERNAL=1))) == {"no INTERNAL error"}
    assert broken(History(internal_errors=["event='internal_error'"])) == {"no INTERNAL error"}
    assert not broken(History(outcomes=Counter(ok=10, UNAVAILABLE=3)))


def test_pubsub_out_of_order_duplicated_or_invented_messages_are_caught() -> None:
    sent = [Publish("a", 1, True), Publish("a", 2, True), Publish("a", 3, False)]

    def got(*seqs: int) -> History:
        return History(publishes=sent, deliveries=[Delivery("b", "a", n) for n in seqs])

    assert not broken(got(1, 2))
    assert not broken(got(2))  # at most once: a message may be lost
    assert not broken(got(3, 1, 2))  # a failed publish may arrive late
    assert broken(got(2, 1)) == {"pub/sub at most once, in order"}
    assert broken(got(1, 1)) == {"pub/sub at most once, in order"}
    assert broken(got(7)) == {"pub/sub at most once, in order"}
