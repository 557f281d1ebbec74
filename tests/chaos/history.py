"""What the chaos run saw, and the checker that holds it against the contract.

Every record carries the client's monotonic `start` (just before the request was sent)
and `end` (just after its reply arrived): the server acted somewhere in between. Each
check only convicts on what those intervals prove, so a slow machine can make the run
show less, never a false breach.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# A cache read may trail an acknowledged write by up to this much (contract: 100 ms p99);
# later than this it is a breach whatever the percentile says. It is the bound
# docs/caching.md gives for a feed that stalls silently, with the run's settings:
# cache_probe_interval_ms + 2 * max(cache_probe_interval_ms, redis_timeout_ms).
CACHE_STALE_BOUND_S = 0.250 + 2 * max(0.250, 0.500)
CACHE_P99_BOUND_S = 0.100
# The contract's hard bound for a revoked session (session_l1_ttl_ms, set by the run).
REVOKE_BOUND_S = 1.0
REVOKE_P99_BOUND_S = 0.100


@dataclass(frozen=True)
class LockHold:
    """One `lock.acquire` that got the lock, and what its `lock.release` said."""

    name: str
    fence: int
    acquire_start: float
    acquire_end: float
    release_start: float | None  # None: never released (connection lost, lease lost)
    released: bool  # the release said the lease was still ours


@dataclass(frozen=True)
class CacheWrite:
    node: str
    key: str
    version: int
    start: float
    end: float
    acked: bool  # returned ok (else it may or may not have landed)


@dataclass(frozen=True)
class CacheRead:
    node: str
    key: str
    version: int | None  # None: a miss
    start: float
    end: float
    stale: bool  # served from L1 while Redis was away, marked so
    source: str = ""  # l1 or l2


@dataclass(frozen=True)
class SessionLife:
    token: str
    created_end: float
    revoke_start: float | None  # when a revoke was sent, answered or not
    revoke_end: float | None  # when a revoke that said revoked=True returned


@dataclass(frozen=True)
class SessionRead:
    token: str
    found: bool
    start: float
    end: float


@dataclass(frozen=True)
class Departure:
    """Something owned by a connection or node that went away at `gone_at` (a presence
    entry, a lock) and must be gone within `deadline_s`."""

    promise: str
    what: str
    gone_at: float
    left_at: float | None  # first time another node saw it gone; None: never
    deadline_s: float


@dataclass(frozen=True)
class RateHit:
    key: str
    limit: int
    window_s: float
    allowed: bool
    degraded: bool  # Redis was away: the documented fallback, not the exact count
    start: float
    end: float


@dataclass(frozen=True)
class Publish:
    publisher: str
    seq: int
    acked: bool  # the publish returned (else it may still be delivered, and late)


@dataclass(frozen=True)
class Delivery:
    subscriber: str
    publisher: str
    seq: int


@dataclass
class History:
    lock_holds: list[LockHold] = field(default_factory=list)
    cache_writes: list[CacheWrite] = field(default_factory=list)
    cache_reads: list[CacheRead] = field(default_factory=list)
    sessions: list[SessionLife] = field(default_factory=list)
    session_reads: list[SessionRead] = field(default_factory=list)
    departures: list[Departure] = field(default_factory=list)
    rate_hits: list[RateHit] = field(default_factory=list)
    publishes: list[Publish] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    outages: list[tuple[float, float]] = field(default_factory=list)  # Redis down, start-end
    faults: list[tuple[float, str]] = field(default_factory=list)  # when, what
    outcomes: Counter[str] = field(default_factory=Counter)  # "ok" or an error code
    internal_errors: list[str] = field(default_factory=list)  # the sidecars' log lines


@dataclass
class Verdict:
    """Promises checked, and those broken (with one line each saying how)."""

    checked: Counter[str] = field(default_factory=Counter)
    broken: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    figures: dict[str, str] = field(default_factory=dict)

    def breach(self, promise: str, how: str) -> None:
        self.broken[promise].append(how)

    @property
    def broken_count(self) -> int:
        return sum(len(found) for found in self.broken.values())


def check(history: History) -> Verdict:
    verdict = Verdict()
    check_lock_fences(history.lock_holds, verdict)
    check_lock_exclusion(history.lock_holds, verdict)
    check_cache(history.cache_writes, history.cache_reads, verdict)
    check_sessions(history.sessions, history.session_reads, verdict)
    check_departures(history.departures, history.outages, verdict)
    check_rate_limits(history.rate_hits, verdict)
    check_pubsub(history.publishes, history.deliveries, verdict)
    check_no_internal_errors(history, verdict)
    return verdict


def check_pubsub(
    publishes: Sequence[Publish], deliveries: Sequence[Delivery], verdict: Verdict
) -> None:
    """Pub/sub is at most once, in order: a subscriber never gets a message nobody
    published, never one twice, and gets a publisher's acknowledged messages in the order
    they were published (one that failed may still arrive, late, and is not judged)."""
    sent = {(p.publisher, p.seq): p.acked for p in publishes}
    seen: set[tuple[str, str, int]] = set()
    last: dict[tuple[str, str], int] = {}
    for delivery in deliveries:
        promise = "pub/sub at most once, in order"
        verdict.checked[promise] += 1
        acked = sent.get((delivery.publisher, delivery.seq))
        where = f"{delivery.subscriber} got {delivery.publisher}'s #{delivery.seq}"
        if acked is None:
            verdict.breach(promise, f"{where}, never published")
        elif (delivery.subscriber, delivery.publisher, delivery.seq) in seen:
            verdict.breach(promise, f"{where} twice")
        elif acked:
            stream = (delivery.subscriber, delivery.publisher)
            if last.get(stream, -1) > delivery.seq:
                verdict.breach(promise, f"{where} after #{last[stream]}")
            last[stream] = delivery.seq
        seen.add((delivery.subscriber, delivery.publisher, delivery.seq))
    verdict.figures["pub/sub messages delivered / published"] = (
        f"{len(deliveries)} / {len(publishes)} (two subscribers)"
    )


def check_no_internal_errors(history: History, verdict: Verdict) -> None:
    """INTERNAL means a bug, whatever the faults: none may be answered, or logged."""
    verdict.checked["no INTERNAL error"] += sum(history.outcomes.values())
    if history.outcomes["INTERNAL"]:
        verdict.breach("no INTERNAL error", f"{history.outcomes['INTERNAL']} answered INTERNAL")
    for line in history.internal_errors[:10]:
        verdict.breach("no INTERNAL error", line[:300])


def check_lock_fences(holds: Sequence[LockHold], verdict: Verdict) -> None:
    """A fence is greater than every fence issued before it: an acquire that returned
    before another was sent has the smaller fence."""
    by_name: dict[str, list[LockHold]] = defaultdict(list)
    for hold in holds:
        by_name[hold.name].append(hold)
    for name, group in by_name.items():
        group.sort(key=lambda h: h.acquire_end)
        ends = [h.acquire_end for h in group]
        # The greatest fence among acquires that had returned before each point in time.
        running_max: list[int] = []
        for hold in group:
            running_max.append(max(hold.fence, running_max[-1] if running_max else 0))
        for hold in group:
            verdict.checked["lock fences strictly increase"] += 1
            before = bisect.bisect_left(ends, hold.acquire_start) - 1
            if before >= 0 and running_max[before] >= hold.fence:
                verdict.breach(
                    "lock fences strictly increase",
                    f"{name}: fence {hold.fence} issued after fence {running_max[before]}",
                )


def check_lock_exclusion(holds: Sequence[LockHold], verdict: Verdict) -> None:
    """Two holds whose releases both said the lease was still theirs never overlap: the
    later one was granted (between its acquire's send and reply) while the earlier one
    certainly held (between its acquire's reply and its release's send)."""
    by_name: dict[str, list[LockHold]] = defaultdict(list)
    for hold in holds:
        if hold.released and hold.release_start is not None:
            by_name[hold.name].append(hold)
    for name, group in by_name.items():
        group.sort(key=lambda h: h.acquire_end)
        longest: LockHold | None = None  # the earlier hold released last
        for hold in group:
            verdict.checked["lock exclusion"] += 1
            if longest is not None:
                assert longest.release_start is not None
                if longest.acquire_end < hold.acquire_start and (
                    hold.acquire_end < longest.release_start
                ):
                    verdict.breach(
                        "lock exclusion",
                        f"{name}: fence {hold.fence} granted while fence {longest.fence} "
                        "was still held",
                    )
            if longest is None or (hold.release_start or 0) > (longest.release_start or 0):
                longest = hold


def check_cache(writes: Sequence[CacheWrite], reads: Sequence[CacheRead], verdict: Verdict) -> None:
    """A read not marked stale returns no value older than the bound: if it returns the
    value of write W, no write that began after W returned, and itself returned more than
    the bound before the read was sent, may exist (that write certainly replaced W's value
    first). Writes that overlap in time may land in either order, so neither is judged
    against the other. A value never written, or a miss after any write returned (nothing
    deletes these keys), is a breach outright.

    A write that failed (its reply an error, say Redis timed out) may still land, and land
    late, as bytes already sent to Redis are still read by it: a read of such a write's
    value proves nothing about staleness and is not judged."""
    by_key: dict[str, list[CacheWrite]] = defaultdict(list)
    for write in writes:
        by_key[write.key].append(write)
    # Per key, acked writes by when they returned, and the latest start among the first i.
    acked: dict[str, tuple[list[CacheWrite], list[float]]] = {}
    for key, every in by_key.items():
        group = sorted((w for w in every if w.acked), key=lambda w: w.end)
        latest_start: list[float] = []
        for write in group:
            latest_start.append(max(write.start, latest_start[-1] if latest_start else 0.0))
        acked[key] = (group, latest_start)
    by_version = {(w.key, w.version): w for w in writes}
    lags: list[float] = []
    ambiguous = 0
    for read in reads:
        if read.stale:
            continue
        verdict.checked["cache coherence"] += 1
        source = None if read.version is None else by_version.get((read.key, read.version))
        if read.version is not None and (source is None or source.start > read.end):
            verdict.breach("cache coherence", f"{read.key}: version {read.version} never written")
            continue
        if source is not None and not source.acked:
            ambiguous += 1
            continue
        group, latest_start = acked.get(read.key, ([], []))
        # The first acked write that began after the read value's write returned.
        returned = source.end if source is not None else -1.0
        first = bisect.bisect_right(latest_start, returned)
        if first >= len(group) or group[first].end >= read.start:
            continue
        lag = read.start - group[first].end
        lags.append(lag)
        if lag > CACHE_STALE_BOUND_S:
            newer = group[first]
            verdict.breach(
                "cache coherence",
                f"{read.key}: {read.node} read version {read.version} ({read.source}) "
                f"{lag:.2f} s after {newer.node}'s later write of version {newer.version} "
                "returned",
            )
    verdict.figures["cache reads of a failed write's value (not judged)"] = str(ambiguous)
    share = len([lag for lag in lags if lag > CACHE_P99_BOUND_S])
    total = verdict.checked["cache coherence"]
    verdict.figures["cache reads behind a returned write by > 100 ms"] = f"{share} of {total}"
    if total and share / total > 0.01:
        verdict.breach("cache coherence", f"{share} of {total} reads trailed by > 100 ms (> 1%)")


def check_sessions(
    lives: Sequence[SessionLife], reads: Sequence[SessionRead], verdict: Verdict
) -> None:
    """A session is found from its creation until a revoke is sent, on every node; after a
    revoke returned, no node finds it beyond the bound."""
    by_token = {life.token: life for life in lives}
    late = 0
    for read in reads:
        life = by_token.get(read.token)
        if life is None:
            continue
        verdict.checked["sessions kept, revocations seen"] += 1
        before_revoke = life.revoke_start is None or read.end < life.revoke_start
        if not read.found and read.start > life.created_end and before_revoke:
            verdict.breach("sessions kept, revocations seen", "a live session was not found")
        revoked = life.revoke_end
        if read.found and revoked is not None and read.start > revoked:
            if read.start - revoked > REVOKE_BOUND_S:
                verdict.breach(
                    "sessions kept, revocations seen",
                    f"revoked session found {read.start - revoked:.2f} s after the revoke",
                )
            elif read.start - revoked > REVOKE_P99_BOUND_S:
                late += 1
    verdict.figures["session reads finding a revoked session > 100 ms on"] = str(late)


def check_departures(
    departures: Sequence[Departure], outages: Sequence[tuple[float, float]], verdict: Verdict
) -> None:
    """What a departed connection or node owned is gone within its bound; time Redis spent
    down in between is added, since nothing can be released or published then."""
    for gone in departures:
        verdict.checked[gone.promise] += 1
        excused = _overlap(outages, gone.gone_at, gone.gone_at + gone.deadline_s + 30)
        limit = gone.deadline_s + excused
        if gone.left_at is None or gone.left_at - gone.gone_at > limit:
            took = "never" if gone.left_at is None else f"{gone.left_at - gone.gone_at:.2f} s"
            verdict.breach(gone.promise, f"{gone.what}: gone after {took}, bound {limit:.2f} s")


def _overlap(outages: Iterable[tuple[float, float]], start: float, end: float) -> float:
    return sum(max(0.0, min(end, b) - max(start, a)) for a, b in outages)


def check_rate_limits(hits: Sequence[RateHit], verdict: Verdict) -> None:
    """sliding_window: never more than `limit` allowed in any `window` of time. Hits whose
    whole request lay inside one window were certainly decided inside it."""
    by_key: dict[str, list[RateHit]] = defaultdict(list)
    for hit in hits:
        if hit.allowed and not hit.degraded:
            by_key[hit.key].append(hit)
    for key, group in by_key.items():
        group.sort(key=lambda h: h.start)
        for index, first in enumerate(group):
            verdict.checked["rate limits exact"] += 1
            window_end = first.start + first.window_s
            inside = 0
            for hit in group[index:]:
                if hit.start >= window_end:
                    break
                if hit.end < window_end:
                    inside += 1
            if inside > first.limit:
                verdict.breach(
                    "rate limits exact",
                    f"{key}: {inside} hits allowed within one window of {first.limit}",
                )
