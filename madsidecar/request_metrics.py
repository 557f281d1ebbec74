"""Per-method request counts and latency histograms, kept only when metrics are enabled.

A request's latency runs from the read that brought it in to its answer being ready;
answers given inline during one read are timed together, with one clock read.

This is the one part of the Prometheus metrics that costs something per request, so it is
compiled with the request path and kept to plain counters: the exporter (metrics.py)
turns them into Prometheus families at scrape time. With metrics off, connections hold
None instead and pay a single None check per request.
"""

from __future__ import annotations

from time import perf_counter
from typing import Final

# Upper bounds in seconds. Inline answers (an L1 hit) take tens of microseconds; a Redis
# round trip, a few hundred; a lock wait or a slow Redis, up to seconds.
LATENCY_BUCKETS_S: Final[tuple[float, ...]] = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# Unknown method names come from clients: one label for all of them keeps a client that
# sends garbage from growing the series without bound.
UNKNOWN_METHOD: Final = "(unknown)"
OK: Final = "OK"
# The connection closed before the answer was ready: nothing was sent.
CLOSED: Final = "CLOSED"


class MethodCounts:
    """One method's answers by result code, and its latency histogram."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed: dict[str, int] = {}
        # Per-bucket (not cumulative) counts; the last slot is above the largest bound.
        self.buckets: list[int] = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.total_s = 0.0

    def codes(self) -> dict[str, int]:
        """Answers by result code: OK, an error code, or CLOSED."""
        codes = {OK: self.ok} if self.ok else {}
        codes.update(self.failed)
        return codes


class RequestMetrics:
    def __init__(self) -> None:
        self.methods: dict[str, MethodCounts] = {}

    def answered(self, method: str, started: float) -> None:
        """One request answered with a result; `started`: perf_counter() at its arrival."""
        elapsed = perf_counter() - started
        counts = self._counts(method)
        counts.ok += 1
        counts.buckets[_bucket(elapsed)] += 1
        counts.total_s += elapsed

    def answered_together(self, methods: list[str], started: float) -> None:
        """Requests read together and answered at once (inline): one clock read for all."""
        elapsed = perf_counter() - started
        bucket = _bucket(elapsed)
        for method in methods:
            counts = self._counts(method)
            counts.ok += 1
            counts.buckets[bucket] += 1
            counts.total_s += elapsed

    def failed(self, method: str, code: str, started: float) -> None:
        """One request answered with an error (or not at all: CLOSED)."""
        elapsed = perf_counter() - started
        counts = self._counts(method)
        counts.failed[code] = counts.failed.get(code, 0) + 1
        counts.buckets[_bucket(elapsed)] += 1
        counts.total_s += elapsed

    def _counts(self, method: str) -> MethodCounts:
        counts = self.methods.get(method)
        if counts is None:
            counts = self.methods[method] = MethodCounts()
        return counts


def _bucket(elapsed: float) -> int:
    # Most answers take well under a millisecond: counting up from the smallest bound
    # finds their bucket in a few comparisons of unboxed floats.
    bucket = 0
    bounds = LATENCY_BUCKETS_S
    last = len(bounds)
    while bucket < last and elapsed > bounds[bucket]:
        bucket += 1
    return bucket
