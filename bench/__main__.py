"""`python -m bench [--quick]`: start redis-server, the sidecar and a bare echo server,
measure them in one run, stop them, print a table with ratios, write bench/results/latest.json.

The ceiling is a bare uvloop MessagePack-RPC echo server driven by a minimal raw-socket
client; the sidecar is measured through the same raw client (the daemon's own cost) and
through the Python SDK (what a service sees). The cache is measured against redis-py
straight to the same Redis: L1 hits on the sidecar itself, L2 reads on a second sidecar
whose L1 is off, and L1's memory on a third, fresh one loaded with 100,000 entries.
Locks are measured against redis-py's asyncio Lock and pottery's Redlock on the same
Redis: uncontended acquire+release cycles, fairness among 16 waiters, and the wake-up of
the next holder (on one sidecar, and across the first two as two nodes).
Rounds are interleaved, so slow drift of a noisy machine lands on every row alike and the
ratios stay comparable.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from . import sdks, workloads
from .procs import ALL_CPUS, REPO, EchoServer, Process, Redis, Sidecar, StartError, pin, proc_status

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MIB = 1024 * 1024
IDLE_WAIT_S = 1.5

# Targets: the sidecar through the SDK against the bare echo server, and its idle memory.
TARGET_PING_P50_RATIO = 1.5  # at most
TARGET_PIPELINE_RATIO = 0.5  # at least
TARGET_IDLE_RSS_MIB = 60.0  # at most
# The cache: L1 hits against redis-py GET, L1 hits pipelined against the echo server's
# pipelined ping, L2 reads from 64 tasks against redis-py GET from 64 tasks, and a
# sidecar's RSS with 100,000 entries of 100 bytes in L1.
TARGET_L1_BLOCKING_P50_RATIO = 0.5  # at most
TARGET_L1_AIO_P50_RATIO = 0.8  # at most
TARGET_L1_PIPELINE_RATIO = 0.4  # at least
TARGET_L2_TASKS_RATIO = 2.0  # at least
TARGET_L1_LOADED_RSS_MIB = round(150e6 / MIB, 1)  # at most: 150 MB
TARGET_PRESENCE_LOADED_RSS_MIB = round(250e6 / MIB, 1)  # at most: 250 MB, 100,000 entries
PRESENCE_LATENCY_TRIALS = 200
PUBSUB_SUBSCRIBERS = 100
# The presence load's sidecar: the fleet's key prefix (its diffs reach the second
# sidecar), heartbeats every 200 ms, and nothing else of its own on the Redis link (no
# sweeper, cache probe or health probe in the measured window).
PRESENCE_SETTINGS: dict[str, object] = {
    "node_id": "bench-presence",
    "presence_node_timeout_ms": 600,
    "presence_sweep_interval_ms": 600_000,
    "cache_probe_interval_ms": 60_000,
    "redis_health_interval_ms": 60_000,
}
CACHE_LOAD_BATCH = 1000
DEFAULT_L1_MAX_ENTRIES = 100_000  # the sidecar's default l1_max_entries

# The second sidecar (L2 reads) is another node of the same fleet, with its L1 off. The
# third (memory) uses its own key prefix, so the other two get no invalidations for the
# 100,000 keys it writes.
L1_OFF_SETTINGS: dict[str, object] = {"l1_max_entries": 0, "node_id": "bench-l1-off"}
L1_MEMORY_SETTINGS: dict[str, object] = {"key_prefix": "mscmem:", "node_id": "bench-l1-memory"}

# Locks: uncontended acquire+release cycles over LOCK_NAMES names against redis-py's asyncio
# Lock and pottery's Redlock (one master); LOCK_WAITERS waiters on one name, each holding it
# 5 ms, must each get at least half the mean share; the wake-up from a release to the next
# holder's acquire returning, on one sidecar and across two (two nodes, one Redis).
LOCK_NAMES = 16
LOCK_WAITERS = 16
TARGET_LOCK_REDIS_PY_RATIO = 3.0  # at least
TARGET_LOCK_POTTERY_RATIO = 10.0  # at least
TARGET_LOCK_FAIR_SHARE = 0.5  # at least: fewest acquisitions of a waiter / the mean
TARGET_LOCK_WAKEUP_P50_MS = 2.0  # at most

# Rate limits: `ratelimit.hit` (sliding_window) with RATE_TASKS callers against the `limits`
# library's moving window on async redis-py; p50 of one caller; denied floods.
RATE_TASKS = 64
TARGET_RATE_LIMITS_RATIO = 3.0  # at least

# Every SDK's bench program (bench/sdks.py): sequential pings, then pings with at most
# SDK_WINDOW in flight on one connection; compared with the Python SDK's same program.
SDK_PINGS = 20_000
SDK_PIPELINED = 100_000
SDK_WINDOW = 256

# Ratio targets, checked in every placement measured: (label, row, baseline row, figure,
# op, target); rows are keyed `<row>@<placement>`.
RATIO_TARGETS = (
    ("ping p50 / echo p50, BlockingClient", "sdk_blocking_seq", "echo_seq", "p50_us", "<=",
     TARGET_PING_P50_RATIO),
    ("ping p50 / echo p50, Client", "sdk_aio_seq", "echo_seq", "p50_us", "<=",
     TARGET_PING_P50_RATIO),
    ("pipelined / echo pipelined, BlockingClient", "sdk_blocking_pipe", "echo_pipe",
     "msgs_per_s", ">=", TARGET_PIPELINE_RATIO),
    ("pipelined / echo pipelined, Client", "sdk_aio_pipe", "echo_pipe", "msgs_per_s", ">=",
     TARGET_PIPELINE_RATIO),
    ("cache.get L1 p50 / redis-py GET p50, BlockingClient", "sdk_blocking_l1_seq",
     "redis_get_seq", "p50_us", "<=", TARGET_L1_BLOCKING_P50_RATIO),
    ("cache.get L1 p50 / redis-py GET p50, Client", "sdk_aio_l1_seq", "redis_get_seq",
     "p50_us", "<=", TARGET_L1_AIO_P50_RATIO),
    ("cache.get L1 pipelined / echo pipelined, BlockingClient", "sdk_blocking_l1_pipe",
     "echo_pipe", "msgs_per_s", ">=", TARGET_L1_PIPELINE_RATIO),
    ("cache.get L1 pipelined / echo pipelined, Client", "sdk_aio_l1_pipe", "echo_pipe",
     "msgs_per_s", ">=", TARGET_L1_PIPELINE_RATIO),
    ("cache.get L2 tasks / redis-py GET tasks, Client", "sdk_l2_tasks", "redis_get_tasks",
     "msgs_per_s", ">=", TARGET_L2_TASKS_RATIO),
    (f"lock acquire+release / redis-py Lock, {LOCK_NAMES} names", "sdk_lock_cycles",
     "redis_lock_cycles", "msgs_per_s", ">=", TARGET_LOCK_REDIS_PY_RATIO),
    (f"lock acquire+release / pottery Redlock, {LOCK_NAMES} names", "sdk_lock_cycles",
     "pottery_lock_cycles", "msgs_per_s", ">=", TARGET_LOCK_POTTERY_RATIO),
    (f"ratelimit.hit / limits moving window, {RATE_TASKS} tasks", "sdk_rate_hits",
     "limits_rate_hits", "msgs_per_s", ">=", TARGET_RATE_LIMITS_RATIO),
)  # fmt: skip
# Absolute lock targets: (label, row, what, op, target, unit).
LOCK_TARGETS = (
    (f"lock fairness, {LOCK_WAITERS} waiters: fewest acquisitions / mean", "sdk_lock_fair",
     "min_over_mean", ">=", TARGET_LOCK_FAIR_SHARE, ""),
    ("lock wake-up p50, one sidecar", "sdk_lock_wakeup", "p50_ms", "<=",
     TARGET_LOCK_WAKEUP_P50_MS, " ms"),
    ("lock wake-up p50, two sidecars", "sdk_lock_wakeup_2nodes", "p50_ms", "<=",
     TARGET_LOCK_WAKEUP_P50_MS, " ms"),
)  # fmt: skip

PLACEMENTS = {
    "split": "client on one CPU, servers on the other",
    "shared": "client and servers on one CPU",
    "free": "no pinning: the scheduler decides",
}

_T0 = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _T0:6.1f}s] {message}", flush=True)


# -- what a run measures ---------------------------------------------------------------


@dataclass
class Spec:
    key: str
    placement: str
    server: str
    client: str
    workload: str
    kind: str  # "latency" (samples in ns), "rate" ((messages, elapsed ns)), "fairness"
    # ((acquisitions per waiter, elapsed ns, acquires timed out)) or "sdk" (an SDK bench
    # program's figures, bench/sdks.py)
    run: Callable[[float, float], Any]  # (warmup_s, duration_s)
    baseline: str | None = None
    baseline_name: str = ""
    meter: str | None = None  # whose CPU the table shows, when not `server`'s


@dataclass
class Outcome:
    spec: Spec
    samples: list[int] = field(default_factory=list)
    round_p50_us: list[float] = field(default_factory=list)
    round_rates: list[float] = field(default_factory=list)
    round_counts: list[list[int]] = field(default_factory=list)  # fairness: per waiter
    round_figures: list[dict[str, float]] = field(default_factory=list)  # sdk
    timeouts: int = 0
    calls: int = 0
    cpu_ns: dict[str, int] = field(default_factory=dict)

    def add(self, value: Any, cpu_ns: dict[str, int]) -> str:
        for name, spent in cpu_ns.items():
            self.cpu_ns[name] = self.cpu_ns.get(name, 0) + spent
        if self.spec.kind == "latency":
            samples: list[int] = value
            self.samples.extend(samples)
            self.calls += len(samples)
            ordered = sorted(samples)
            p50, p99 = percentile(ordered, 50), percentile(ordered, 99)
            self.round_p50_us.append(p50)
            return f"p50 {p50:7.1f} us  p99 {p99:7.1f} us  ({len(samples):,} calls)"
        if self.spec.kind == "sdk":
            figures: dict[str, float] = value
            self.round_figures.append(figures)
            return (
                f"ping p50 {figures['ping_p50_us']:7.1f} us  p99 {figures['ping_p99_us']:7.1f} us"
                f"  pipelined {figures['pipelined_per_s']:11,.0f} msgs/s"
            )
        if self.spec.kind == "fairness":
            counts, elapsed_ns, timeouts = value
            self.round_counts.append(list(counts))
            self.timeouts += timeouts
            self.calls += sum(counts)
            rate = sum(counts) * 1e9 / elapsed_ns
            self.round_rates.append(rate)
            mean = sum(counts) / len(counts)
            return (
                f"{rate:11,.1f} acquisitions/s; per waiter min {min(counts)} mean {mean:.1f} "
                f"max {max(counts)}" + (f"; {timeouts} acquires timed out" if timeouts else "")
            )
        messages, elapsed_ns = value
        rate = messages * 1e9 / elapsed_ns
        self.calls += messages
        self.round_rates.append(rate)
        return f"{rate:11,.0f} msgs/s  ({messages:,} in {elapsed_ns / 1e9:.2f} s)"

    def cpu_us_per_msg(self) -> dict[str, float]:
        return {
            name: round(spent / 1000 / self.calls, 3)
            for name, spent in self.cpu_ns.items()
            if self.calls
        }

    def summary(self) -> dict[str, Any]:
        if self.spec.kind == "sdk":
            rounds = self.round_figures
            p50s = [r["ping_p50_us"] for r in rounds]
            return {
                "kind": "sdk",
                "p50_us": round(median(p50s), 2),
                "p99_us": round(median([r["ping_p99_us"] for r in rounds]), 2),
                "msgs_per_s": round(median([r["pipelined_per_s"] for r in rounds])),
                "round_p50_us": [round(v, 2) for v in p50s],
                "spread": spread(p50s),
                "cpu_us_per_msg": {},
            }
        if self.spec.kind == "latency":
            ordered = sorted(self.samples)
            return {
                "kind": "latency",
                "p50_us": round(percentile(ordered, 50), 2),
                "p90_us": round(percentile(ordered, 90), 2),
                "p99_us": round(percentile(ordered, 99), 2),
                "p999_us": round(percentile(ordered, 99.9), 2),
                "mean_us": round(sum(ordered) / len(ordered) / 1000, 2),
                "calls": self.calls,
                "round_p50_us": [round(v, 2) for v in self.round_p50_us],
                "spread": spread(self.round_p50_us),
                "cpu_us_per_msg": self.cpu_us_per_msg(),
            }
        if self.spec.kind == "fairness":
            # Each round is one run of fixed duration; the figures are its worst round's
            # (pooled rounds would hide a waiter starved in every round by another one).
            shares = [share(counts) for counts in self.round_counts]
            worst = self.round_counts[shares.index(min(shares))]
            return {
                "kind": "fairness",
                "msgs_per_s": round(median(self.round_rates), 1),
                "acquisitions": self.calls,
                "waiters": len(worst),
                "min": min(worst),
                "mean": round(sum(worst) / len(worst), 2),
                "max": max(worst),
                "min_over_mean": round(min(shares), 3),
                "round_min_over_mean": [round(v, 3) for v in shares],
                "round_per_waiter": self.round_counts,
                "timeouts": self.timeouts,
                "round_msgs_per_s": [round(v, 1) for v in self.round_rates],
                "spread": spread(self.round_rates),
                "cpu_us_per_msg": self.cpu_us_per_msg(),
            }
        return {
            "kind": "rate",
            "msgs_per_s": round(median(self.round_rates)),
            "messages": self.calls,
            "round_msgs_per_s": [round(v) for v in self.round_rates],
            "spread": spread(self.round_rates),
            "cpu_us_per_msg": self.cpu_us_per_msg(),
        }


def percentile(ordered_ns: list[int], pct: float) -> float:
    """Nearest-rank percentile of sorted ns samples, in us."""
    if not ordered_ns:
        return float("nan")
    rank = max(1, -(-len(ordered_ns) * pct // 100))  # ceil(n * pct / 100)
    return ordered_ns[int(rank) - 1] / 1000


def share(counts: list[int]) -> float:
    """Fairness: the fewest acquisitions of a waiter over the mean (0 when none)."""
    mean = sum(counts) / len(counts) if counts else 0
    return min(counts) / mean if mean else 0.0


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def spread(values: list[float]) -> float | None:
    """(max - min) / median across rounds; None with a single round."""
    if len(values) < 2:
        return None
    return round((max(values) - min(values)) / median(values), 4)


def ping_specs(placement: str, echo: EchoServer, sidecar: Sidecar, depth: int) -> list[Spec]:
    """The ceiling and the sidecar's ping, side by side, in one CPU placement."""
    w = workloads
    p = functools.partial
    seq = "ping, sequential"
    pipe = f"ping, pipelined {depth}"
    echo_seq, echo_pipe = f"echo_seq@{placement}", f"echo_pipe@{placement}"
    side = sidecar.socket_path
    return [
        Spec(echo_seq, placement, "echo", "raw socket", seq, "latency",
             p(w.raw_latency, echo.socket_path)),
        Spec(echo_pipe, placement, "echo", "raw socket", pipe, "rate",
             p(w.raw_pipeline, echo.socket_path, depth)),
        Spec(f"echo_aio_seq@{placement}", placement, "echo", "raw asyncio", seq, "latency",
             p(w.raw_aio_latency, echo.socket_path), echo_seq, "echo"),
        Spec(f"sidecar_raw_seq@{placement}", placement, "sidecar", "raw socket", seq, "latency",
             p(w.raw_latency, side), echo_seq, "echo"),
        Spec(f"sidecar_raw_pipe@{placement}", placement, "sidecar", "raw socket", pipe, "rate",
             p(w.raw_pipeline, side, depth), echo_pipe, "echo"),
        Spec(f"sdk_blocking_seq@{placement}", placement, "sidecar", "BlockingClient", seq,
             "latency", p(w.blocking_latency, side, "ping"), echo_seq, "echo"),
        Spec(f"sdk_aio_seq@{placement}", placement, "sidecar", "Client (uvloop)", seq,
             "latency", p(w.aio_latency, side, "ping"), echo_seq, "echo"),
        Spec(f"sdk_blocking_pipe@{placement}", placement, "sidecar", "BlockingClient", pipe,
             "rate", p(w.blocking_pipeline, side, depth), echo_pipe, "echo"),
        Spec(f"sdk_aio_pipe@{placement}", placement, "sidecar", "Client (uvloop)", pipe,
             "rate", p(w.aio_pipeline, side, depth), echo_pipe, "echo"),
    ]  # fmt: skip


def redis_specs(placement: str, sidecar: Sidecar, redis: Redis, tasks: int) -> list[Spec]:
    """redis-py straight to Redis against the sidecar's `health` (a PING through it)."""
    w = workloads
    p = functools.partial
    seq, many = f"redis_ping_seq@{placement}", f"redis_ping_tasks@{placement}"
    side = sidecar.socket_path
    return [
        Spec(seq, placement, "redis", "redis-py asyncio", "PING, sequential", "latency",
             p(w.redis_latency, redis.socket_path)),
        Spec(f"sdk_health_seq@{placement}", placement, "sidecar", "Client (uvloop)",
             "health, sequential", "latency", p(w.aio_latency, side, "health"), seq, "redis-py"),
        Spec(many, placement, "redis", "redis-py asyncio", f"PING, {tasks} tasks", "rate",
             p(w.redis_concurrent, redis.socket_path, tasks)),
        Spec(f"sdk_health_tasks@{placement}", placement, "sidecar", "Client (uvloop)",
             f"health, {tasks} tasks", "rate", p(w.aio_concurrent, side, "health", tasks),
             many, "redis-py"),
    ]  # fmt: skip


def cache_specs(placement: str, sidecar: Sidecar, redis: Redis, depth: int) -> list[Spec]:
    """L1 hits through the SDK against redis-py GET (latency) and the ceiling (pipelined)."""
    w = workloads
    p = functools.partial
    get_seq, echo_pipe = f"redis_get_seq@{placement}", f"echo_pipe@{placement}"
    seq = "cache.get L1, sequential"
    pipe = f"cache.get L1, pipelined {depth}"
    side = sidecar.socket_path
    return [
        Spec(get_seq, placement, "redis", "redis-py asyncio", "GET 100 B, sequential",
             "latency", p(w.redis_get_latency, redis.socket_path)),
        Spec(f"sdk_blocking_l1_seq@{placement}", placement, "sidecar", "BlockingClient", seq,
             "latency", p(w.blocking_l1_latency, side), get_seq, "redis-py"),
        Spec(f"sdk_aio_l1_seq@{placement}", placement, "sidecar", "Client (uvloop)", seq,
             "latency", p(w.aio_l1_latency, side), get_seq, "redis-py"),
        Spec(f"sdk_blocking_l1_pipe@{placement}", placement, "sidecar", "BlockingClient", pipe,
             "rate", p(w.blocking_l1_pipeline, side, depth), echo_pipe, "echo"),
        Spec(f"sdk_aio_l1_pipe@{placement}", placement, "sidecar", "Client (uvloop)", pipe,
             "rate", p(w.aio_l1_pipeline, side, depth), echo_pipe, "echo"),
    ]  # fmt: skip


def l2_specs(placement: str, l1_off: Sidecar, redis: Redis, tasks: int) -> list[Spec]:
    """L2 reads (a sidecar with L1 off) from many tasks against redis-py GET from as many."""
    w = workloads
    p = functools.partial
    many = f"redis_get_tasks@{placement}"
    return [
        Spec(many, placement, "redis", "redis-py asyncio", f"GET 100 B, {tasks} tasks", "rate",
             p(w.redis_get_concurrent, redis.socket_path, tasks)),
        Spec(f"sdk_l2_tasks@{placement}", placement, "sidecar", "Client (uvloop)",
             f"cache.get L2, {tasks} tasks", "rate",
             p(w.aio_l2_concurrent, l1_off.socket_path, tasks), many, "redis-py",
             meter="sidecar_l1_off"),
    ]  # fmt: skip


def lock_specs(
    placement: str, sidecar: Sidecar, second: Sidecar, redis: Redis, pottery: bool
) -> list[Spec]:
    """Locks through the sidecar against redis-py's asyncio Lock and pottery's Redlock:
    uncontended cycles, fairness under contention, and the wake-up of the next holder."""
    w = workloads
    p = functools.partial
    cycles, fair = f"redis_lock_cycles@{placement}", f"redis_lock_fair@{placement}"
    side, names, waiters = sidecar.socket_path, LOCK_NAMES, LOCK_WAITERS
    specs = [
        Spec(cycles, placement, "redis", "redis-py asyncio", f"Lock acq+rel, {names} names",
             "rate", p(w.redis_lock_cycles, redis.socket_path, names)),
        Spec(f"pottery_lock_cycles@{placement}", placement, "redis", "pottery (sync)",
             f"Redlock acq+rel, {names} names", "rate",
             p(w.pottery_lock_cycles, redis.socket_path, names)),
        Spec(f"sdk_lock_cycles@{placement}", placement, "sidecar", "Client (uvloop)",
             f"lock acq+rel, {names} names", "rate", p(w.aio_lock_cycles, side, names),
             cycles, "redis-py"),
        Spec(f"sdk_lock_cycles_pipe@{placement}", placement, "sidecar", "Client (uvloop)",
             f"lock acq+rel, pipelined {names}", "rate",
             p(w.aio_lock_cycles_pipelined, side, names), cycles, "redis-py"),
        Spec(fair, placement, "redis", "redis-py asyncio", f"Lock, {waiters} waiters, 5 ms",
             "fairness", p(w.redis_lock_fairness, redis.socket_path, waiters)),
        Spec(f"sdk_lock_fair@{placement}", placement, "sidecar", "Client (uvloop)",
             f"lock, {waiters} waiters, 5 ms", "fairness",
             p(w.aio_lock_fairness, (side,), waiters), fair, "redis-py"),
        Spec(f"sdk_lock_fair_2nodes@{placement}", placement, "sidecar", "Client (uvloop)",
             f"lock, {waiters} on 2 nodes, 5 ms", "fairness",
             p(w.aio_lock_fairness, (side, second.socket_path), waiters), fair, "redis-py"),
        Spec(f"sdk_lock_wakeup@{placement}", placement, "sidecar", "Client (uvloop)",
             "lock wake-up, one node", "latency", p(w.aio_lock_wakeup, side, side)),
        Spec(f"sdk_lock_wakeup_2nodes@{placement}", placement, "sidecar", "Client (uvloop)",
             "lock wake-up, two nodes", "latency",
             p(w.aio_lock_wakeup, side, second.socket_path)),
    ]  # fmt: skip
    return [spec for spec in specs if pottery or not spec.key.startswith("pottery_")]


def rate_specs(placement: str, sidecar: Sidecar, redis: Redis, limits: bool) -> list[Spec]:
    """`ratelimit.hit` against the `limits` library's moving window (async redis-py):
    concurrent callers, one caller's latency, and floods of denied hits."""
    w = workloads
    p = functools.partial
    side, tasks = sidecar.socket_path, RATE_TASKS
    hits, seq, flood = (
        f"{name}@{placement}"
        for name in ("limits_rate_hits", "limits_rate_seq", "limits_rate_denied")
    )
    specs = [
        Spec(hits, placement, "redis", "limits (async)", f"moving window hit, {tasks} tasks",
             "rate", p(w.limits_hits, redis.socket_path, tasks)),
        Spec(f"sdk_rate_hits@{placement}", placement, "sidecar", "Client (uvloop)",
             f"ratelimit.hit sliding_window, {tasks} tasks", "rate",
             p(w.aio_rate_hits, side, tasks, "sliding_window"), hits, "limits"),
        Spec(f"sdk_rate_gcra@{placement}", placement, "sidecar", "Client (uvloop)",
             f"ratelimit.hit gcra, {tasks} tasks", "rate",
             p(w.aio_rate_hits, side, tasks, "gcra"), hits, "limits"),
        Spec(f"sdk_rate_counter@{placement}", placement, "sidecar", "Client (uvloop)",
             f"ratelimit.hit sliding_counter, {tasks} tasks", "rate",
             p(w.aio_rate_hits, side, tasks, "sliding_counter"), hits, "limits"),
        Spec(seq, placement, "redis", "limits (async)", "moving window hit, sequential",
             "latency", p(w.limits_latency, redis.socket_path)),
        Spec(f"sdk_rate_seq@{placement}", placement, "sidecar", "Client (uvloop)",
             "ratelimit.hit, sequential", "latency", p(w.aio_rate_latency, side), seq,
             "limits"),
        Spec(flood, placement, "redis", "limits (async)", f"denied flood, {tasks} tasks",
             "rate", p(w.limits_denied, redis.socket_path, tasks)),
        Spec(f"sdk_rate_denied@{placement}", placement, "sidecar", "Client (uvloop)",
             f"ratelimit.hit denied flood, {tasks} tasks", "rate",
             p(w.aio_rate_denied, side, tasks), flood, "limits"),
    ]  # fmt: skip
    return [spec for spec in specs if limits or not spec.key.startswith("limits_")]


def session_specs(placement: str, sidecar: Sidecar, second: Sidecar, redis: Redis,
                  tasks: int) -> list[Spec]:  # fmt: skip
    """`session.get` served from L1 against redis-py's HGETALL of a session hash, and the
    time a revoke on one node takes to stop the session validating on another."""
    w = workloads
    p = functools.partial
    seq, many = f"redis_session_seq@{placement}", f"redis_session_tasks@{placement}"
    side = sidecar.socket_path
    return [
        Spec(seq, placement, "redis", "redis-py asyncio", "HGETALL session, sequential",
             "latency", p(w.redis_hgetall_latency, redis.socket_path)),
        Spec(f"sdk_session_l1_seq@{placement}", placement, "sidecar", "Client (uvloop)",
             "session.get L1, sequential", "latency", p(w.aio_session_l1_latency, side), seq,
             "redis-py"),
        Spec(many, placement, "redis", "redis-py asyncio", f"HGETALL session, {tasks} tasks",
             "rate", p(w.redis_hgetall_concurrent, redis.socket_path, tasks)),
        Spec(f"sdk_session_l1_tasks@{placement}", placement, "sidecar", "Client (uvloop)",
             f"session.get L1, {tasks} tasks", "rate",
             p(w.aio_session_l1_concurrent, side, tasks), many, "redis-py"),
        Spec(f"sdk_session_revoke_2nodes@{placement}", placement, "sidecar", "Client (uvloop)",
             "revoke -> nil on node 2", "latency",
             p(w.aio_session_revoke, side, second.socket_path)),
    ]  # fmt: skip


def pubsub_specs(placement: str, sidecar: Sidecar, redis: Redis) -> list[Spec]:
    """Pub/sub fan-out: one publisher, PUBSUB_SUBSCRIBERS subscribers on one node, against
    as many redis-py subscribers straight on Redis."""
    many, w = PUBSUB_SUBSCRIBERS, workloads
    direct = f"redis_pubsub_fanout@{placement}"
    return [
        Spec(direct, placement, "redis", "redis-py asyncio", f"pub/sub to {many} subscribers",
             "rate", functools.partial(w.redis_pubsub_fanout, redis.socket_path, many)),
        Spec(f"sdk_pubsub_fanout@{placement}", placement, "sidecar", "Client (uvloop)",
             f"pub/sub to {many} subscribers", "rate",
             functools.partial(w.aio_pubsub_fanout, sidecar.socket_path, many), direct,
             "redis-py"),
    ]  # fmt: skip


def sdk_specs(
    placement: str, sidecar: Sidecar, benches: list[sdks.SdkBench], quick: bool
) -> list[Spec]:
    """Each SDK's bench program against the same sidecar; ratios against Python's."""
    pings, pipelined = (2_000, 20_000) if quick else (SDK_PINGS, SDK_PIPELINED)
    workload = f"ping seq; {SDK_WINDOW} in flight"
    python = f"sdk_python@{placement}"
    return [
        Spec(f"sdk_{bench.sdk}@{placement}", placement, "sidecar", f"{bench.sdk} SDK", workload,
             "sdk", lambda warmup_s, duration_s, bench=bench: bench.run(
                 sidecar.socket_path, pings, pipelined),
             None if bench.sdk == "python" else python, "python")
        for bench in benches
    ]  # fmt: skip


def selected(only: str | None, key: str) -> bool:
    """--only: comma-separated substrings of row keys (a key inside one counts too)."""
    if not only:
        return True
    return any(part in key or key in part for part in only.split(",") if part)


def have_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


# -- the run ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="./dev bench",
        description="Benchmark the sidecar against a bare uvloop echo server, in one run.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="one short round of everything (about 30 s, for CI)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument(
        "--duration", type=float, help="seconds measured per workload per round (1.2, quick 0.5)"
    )
    parser.add_argument(
        "--warmup", type=float, help="seconds of warm-up per workload per round (0.25, quick 0.15)"
    )
    parser.add_argument("--depth", type=int, default=64, help="pipeline depth (default 64)")
    parser.add_argument(
        "--tasks",
        type=int,
        default=64,
        help="concurrent asyncio tasks for health and L2 reads (default 64)",
    )
    parser.add_argument(
        "--cache-entries",
        type=int,
        default=100_000,
        help="entries loaded into a fresh sidecar's L1 for its RSS (default 100000; 0: skip)",
    )
    parser.add_argument(
        "--presence-entries",
        type=int,
        default=100_000,
        help="presence entries tracked on a fresh sidecar (default 100000; 0: skip)",
    )
    parser.add_argument(
        "--placement",
        choices=("both", "split", "shared", "free"),
        default="both",
        help="CPU placement of the ping and cache rows: split (client on one CPU, servers on "
        "another), shared (all on one CPU), both (the default), or free (no pinning); the "
        "health rows always run in the first placement measured",
    )
    parser.add_argument(
        "--only",
        metavar="SUBSTR",
        help="run only the rows whose key contains SUBSTR, or any of several separated by "
        "commas (the memory load's is l1_memory; the SDKs' sdk_python, sdk_rust, sdk_go, "
        "sdk_node)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=RESULTS_DIR / "latest.json",
        help="where the JSON results go (default bench/results/latest.json)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit with status 1 when a target is missed"
    )
    parser.add_argument(
        "--no-sdks",
        dest="sdks",
        action="store_false",
        help="leave out the Rust, Go and TypeScript SDKs' rows (they are built first)",
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.duration is None:
        args.duration = 0.5 if args.quick else 1.2
    if args.warmup is None:
        args.warmup = 0.15 if args.quick else 0.25
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0 or args.depth < 1:
        parser.error("--rounds, --duration and --depth must be positive, --warmup not negative")
    if args.tasks < 1 or args.cache_entries < 0:
        parser.error("--tasks must be positive, --cache-entries not negative")
    return args


def plan_placements(choice: str) -> dict[str, tuple[set[int] | None, set[int] | None]]:
    """Placement name -> (client CPUs, server CPUs).

    Where a process sleeps matters more than anything measured here: on this VM, waking a
    process that waits on another, idle vCPU costs some 15-20 us, waking one on the same
    CPU a couple. Left to itself the scheduler flips between the two, so round trips come
    out bimodal; pinning makes every row of one placement pay the same, known cost.
    """
    usable = sorted(ALL_CPUS)
    plans: dict[str, tuple[set[int] | None, set[int] | None]] = {}
    if choice in ("both", "split") and len(usable) >= 2:
        plans["split"] = ({usable[0]}, {usable[1]})
    if choice in ("both", "shared") or (not plans and choice == "split"):
        plans["shared"] = ({usable[0]}, {usable[0]})
    if choice == "free":
        plans["free"] = (None, None)
    return plans


class Watchdog:
    """Bounds the run: past the limit, the servers are killed, which fails any call."""

    def __init__(self, limit_s: float, processes: list[Process]) -> None:
        self.fired = False
        self._processes = processes
        self._timer = threading.Timer(limit_s, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.fired = True
        print("!! watchdog: the run overran its time limit; killing the servers", flush=True)
        for process in self._processes:
            if process.proc is not None and process.proc.poll() is None:
                process.proc.kill()

    def cancel(self) -> None:
        self._timer.cancel()


def rss_mib(pid: int) -> dict[str, float]:
    status = proc_status(pid)
    return {
        "rss_mib": round(status["VmRSS"] / MIB, 1),
        "peak_rss_mib": round(status["VmHWM"] / MIB, 1),
    }


def environment() -> dict[str, Any]:
    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    redis_server = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        redis_server = subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, timeout=5
        ).stdout.strip()

    def git(*argv: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(
                ["git", *argv], capture_output=True, text=True, timeout=5, cwd=REPO
            ).stdout.strip()
        return ""

    return {
        # What was measured: the commit, and whether the daemon or SDK had local edits.
        "git_commit": git("rev-parse", "HEAD"),
        "git_local_changes": git(
            "status", "--porcelain", "--", "madsidecar", "clients"
        ).splitlines(),
        "cpus": os.cpu_count(),
        "cpus_usable": len(ALL_CPUS),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": version("uvloop"),
        "msgpack": version("msgpack"),
        "redis_py": version("redis"),
        "hiredis": version("hiredis"),
        "pottery": version("pottery"),
        "limits": version("limits"),
        "redis_server": redis_server,
        "loadavg_before": list(os.getloadavg()),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    redis, echo = Redis(), EchoServer()
    sidecar, l1_off = Sidecar(""), Sidecar("", L1_OFF_SETTINGS)
    sidecars = {"sidecar": sidecar, "sidecar_l1_off": l1_off}
    servers: list[Process] = [redis, echo, sidecar, l1_off]
    plans = plan_placements(args.placement)
    env = environment()
    env["placements"] = {
        name: {"client_cpus": fmt_cpus(client), "server_cpus": fmt_cpus(server)}
        for name, (client, server) in plans.items()
    }
    memory: dict[str, Any] = {}
    outcomes: dict[str, Outcome] = {}
    exit_statuses: dict[str, int | None] = {}
    watchdog: Watchdog | None = None
    load_memory = args.cache_entries > 0 and selected(args.only, "l1_memory")
    load_presence = args.presence_entries > 0 and selected(args.only, "presence_load")
    pottery = have_module("pottery")
    limits = have_module("limits")
    if not limits:
        progress("limits is not installed (`pip install -e '.[test]'`): no limits rows")
    if not pottery:
        progress("pottery is not installed (`pip install -e '.[test]'`): no Redlock row")
    sdk_benches: list[sdks.SdkBench] = []
    if args.sdks and any(selected(args.only, f"sdk_{sdk}@") for sdk in sdks.LANGUAGES):
        progress("building the SDKs' bench programs (--no-sdks to leave them out)")
        sdk_benches = sdks.build_all(progress)
    try:
        progress("starting redis-server, echo server, sidecar and a second sidecar with L1 off")
        redis.start()
        echo.start()
        for process in sidecars.values():
            process.redis_url = redis.url
            process.start()
        progress(
            f"ready: redis pid {redis.pid}, echo pid {echo.pid}, sidecar pid {sidecar.pid}, "
            f"sidecar with L1 off pid {l1_off.pid}"
        )
        workloads.METER.servers = {
            "echo": echo.pid,
            "sidecar": sidecar.pid,
            "redis": redis.pid,
            "sidecar_l1_off": l1_off.pid,
        }
        time.sleep(0.5)
        memory["sidecar_after_start"] = rss_mib(sidecar.pid)
        memory["echo_after_start"] = rss_mib(echo.pid)
        progress(
            f"idle RSS after start: sidecar {memory['sidecar_after_start']['rss_mib']} MiB, "
            f"echo server {memory['echo_after_start']['rss_mib']} MiB"
        )
        specs: list[Spec] = []
        for number, placement in enumerate(plans):
            specs += ping_specs(placement, echo, sidecar, args.depth)
            specs += cache_specs(placement, sidecar, redis, args.depth)
            if number == 0:
                specs += redis_specs(placement, sidecar, redis, args.tasks)
            specs += l2_specs(placement, l1_off, redis, args.tasks)
            if number == 0:
                specs += lock_specs(placement, sidecar, l1_off, redis, pottery)
                specs += session_specs(placement, sidecar, l1_off, redis, args.tasks)
                specs += rate_specs(placement, sidecar, redis, limits)
                specs += pubsub_specs(placement, sidecar, redis)
            specs += sdk_specs(placement, sidecar, sdk_benches, args.quick)
        specs = [spec for spec in specs if selected(args.only, spec.key)]
        outcomes = {spec.key: Outcome(spec) for spec in specs}
        expected_s = len(specs) * args.rounds * (args.duration + args.warmup + 0.2)
        watchdog = Watchdog(2 * expected_s + (90 if load_memory else 60), servers)
        # The first few hundred ms of traffic after a start (or an idle spell) run slower;
        # spend them on the servers before anything is recorded.
        first_client, first_servers = next(iter(plans.values()))
        for server in servers:
            pin(server.pid, first_servers)
        pin(os.getpid(), first_client)
        for path in (echo.socket_path, sidecar.socket_path, l1_off.socket_path):
            workloads.raw_latency(path, 0.0, 0.3)
        current: str | None = None
        for number in range(1, args.rounds + 1):
            for spec in specs:
                if spec.placement != current:
                    current = spec.placement
                    client_cpus, server_cpus = plans[current]
                    for server in servers:
                        pin(server.pid, server_cpus)
                    pin(os.getpid(), client_cpus)
                    progress(
                        f"placement {current}: client on {fmt_cpus(client_cpus)}, "
                        f"servers on {fmt_cpus(server_cpus)}"
                    )
                value = spec.run(args.warmup, args.duration)
                line = outcomes[spec.key].add(value, workloads.METER.cpu_ns)
                label = f"{spec.server} / {spec.client} / {spec.workload}"
                progress(f"round {number}/{args.rounds}  {label:<60} {line}")
        pin(os.getpid(), None)
        last_traffic = time.monotonic()
        if load_memory:
            # A fresh sidecar of its own, so the idle figures above stay idle ones; it is
            # loaded while the first sidecar waits out IDLE_WAIT_S.
            settings: dict[str, object] = dict(L1_MEMORY_SETTINGS)
            if args.cache_entries > DEFAULT_L1_MAX_ENTRIES:
                settings["l1_max_entries"] = args.cache_entries
            memory_sidecar = Sidecar(redis.url, settings)
            servers.append(memory_sidecar)  # the watchdog's list too
            sidecars["sidecar_l1_memory"] = memory_sidecar
            memory["sidecar_l1_loaded"] = load_l1_memory(memory_sidecar, args.cache_entries)
        if load_presence:
            settings = dict(PRESENCE_SETTINGS, presence_max_tracked=args.presence_entries)
            presence_sidecar = Sidecar(redis.url, settings)
            servers.append(presence_sidecar)
            sidecars["sidecar_presence"] = presence_sidecar
            memory["presence_loaded"] = run_presence_load(
                presence_sidecar, l1_off, args.presence_entries
            )
        # Idle means idle: past redis_timeout_ms (1 s by default), so no per-request timer
        # or buffer of the last workload is still alive when RSS is read.
        time.sleep(max(0.0, IDLE_WAIT_S - (time.monotonic() - last_traffic)))
        memory["sidecar_after_runs"] = rss_mib(sidecar.pid)
        progress(f"idle RSS after the runs: sidecar {memory['sidecar_after_runs']['rss_mib']} MiB")
    finally:
        if watchdog is not None:
            watchdog.cancel()
        for name, process in sidecars.items():
            exit_statuses[name] = process.stop()
        echo.stop()
        redis.stop()
        progress(f"stopped everything (sidecar exit statuses {exit_statuses})")
    if watchdog is not None and watchdog.fired:
        raise RuntimeError("the run overran its time limit")
    env["loadavg_after"] = list(os.getloadavg())
    return {
        "environment": env,
        "outcomes": outcomes,
        "memory": memory,
        "sidecar_exit_status": exit_statuses.get("sidecar"),
        "sidecar_exit_statuses": exit_statuses,
    }


def run_presence_load(sidecar: Sidecar, watcher: Sidecar, entries: int) -> dict[str, Any]:
    """Start `sidecar`; join-to-diff latency to a subscriber on `watcher`; `entries`
    entries tracked; Redis commands per heartbeat; RSS; all untracked."""
    sidecar.start()
    at_start = rss_mib(sidecar.pid)
    progress(f"presence: tracking {entries:,} entries on a fresh sidecar (pid {sidecar.pid})")
    loaded = workloads.load_presence(
        sidecar.socket_path,
        watcher.socket_path,
        entries,
        PRESENCE_LATENCY_TRIALS,
        lambda: rss_mib(sidecar.pid),
    )
    latency = sorted(loaded.pop("join_to_diff_ns"))
    result = {
        **loaded,
        "rss_after_start_mib": at_start["rss_mib"],
        "join_to_diff_p50_us": round(percentile(latency, 50), 1),
        "join_to_diff_p99_us": round(percentile(latency, 99), 1),
    }
    progress(
        f"presence: {result['held']:,} held, RSS {result['rss_mib']} MiB, "
        f"{result['track_per_s']:,} tracks/s, {result['untrack_per_s']:,} untracks/s, "
        f"{result['commands_per_heartbeat']} Redis commands per heartbeat"
    )
    return result


def load_l1_memory(sidecar: Sidecar, entries: int) -> dict[str, Any]:
    """Start `sidecar`, fill its L1 with `entries` 100-byte values, read its RSS."""
    sidecar.start()
    at_start = rss_mib(sidecar.pid)
    progress(
        f"memory: loading {entries:,} entries into a fresh sidecar's L1 (pid {sidecar.pid}, "
        f"RSS {at_start['rss_mib']} MiB), {CACHE_LOAD_BATCH} calls per pipeline"
    )
    loaded = workloads.load_l1(sidecar.socket_path, entries, CACHE_LOAD_BATCH)
    after = rss_mib(sidecar.pid)
    grown = (after["rss_mib"] - at_start["rss_mib"]) * MIB
    result = {
        **after,
        "rss_after_start_mib": at_start["rss_mib"],
        "bytes_per_entry": round(grown / loaded["l1_entries"]) if loaded["l1_entries"] else None,
        **loaded,
    }
    progress(
        f"memory: {loaded['l1_entries']:,} entries in L1 ({loaded['set_s']} s of cache.set, "
        f"{loaded['get_s']} s of cache.get in {loaded['get_passes']} pass(es)); "
        f"RSS {after['rss_mib']} MiB, {result['bytes_per_entry']} bytes per entry"
    )
    return result


def fmt_cpus(cpus: set[int] | None) -> str:
    return "any" if cpus is None else ",".join(map(str, sorted(cpus)))


# -- the report ------------------------------------------------------------------------


def evaluate(
    outcomes: dict[str, Outcome], results: dict[str, dict[str, Any]], memory: dict[str, Any]
) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, op: str, limit: float, unit: str = "") -> None:
        if value is None:
            return
        met = value <= limit if op == "<=" else value >= limit
        checks.append(
            {"name": name, "value": round(value, 3), "op": op, "target": limit,
             "unit": unit, "met": met}
        )  # fmt: skip

    def ratio(key: str, base: str, field_name: str) -> float | None:
        if key in results and base in results:
            return float(results[key][field_name]) / float(results[base][field_name])
        return None

    placements = list(dict.fromkeys(outcome.spec.placement for outcome in outcomes.values()))
    for placement in placements:
        for label, key, base, field_name, op, target in RATIO_TARGETS:
            check(
                f"{label}, {placement}",
                ratio(f"{key}@{placement}", f"{base}@{placement}", field_name), op, target,
            )  # fmt: skip
        for label, key, what, op, target, unit in LOCK_TARGETS:
            row = results.get(f"{key}@{placement}")
            if row is not None:
                value = row["p50_us"] / 1000 if what == "p50_ms" else row[what]
                check(f"{label}, {placement}", value, op, target, unit)
    for moment in ("after_start", "after_runs"):
        sample = memory.get(f"sidecar_{moment}")
        if sample:
            check(
                f"sidecar idle RSS {moment.replace('_', ' ')}",
                sample["rss_mib"], "<=", TARGET_IDLE_RSS_MIB, " MiB",
            )  # fmt: skip
    loaded = memory.get("sidecar_l1_loaded")
    if loaded:
        check(
            f"sidecar RSS, {loaded['l1_entries']:,} L1 entries (150 MB)",
            loaded["rss_mib"], "<=", TARGET_L1_LOADED_RSS_MIB, " MiB",
        )  # fmt: skip
    presence = memory.get("presence_loaded")
    if presence:
        check(
            f"sidecar RSS, {presence['held']:,} presence entries (250 MB)",
            presence["rss_mib"], "<=", TARGET_PRESENCE_LOADED_RSS_MIB, " MiB",
        )  # fmt: skip
    return checks


def l1_floors(results: dict[str, dict[str, Any]], echo_row: str = "echo_seq") -> dict[str, float]:
    """Per placement, the echo server's ping p50 (from the least blocking client, or with
    `echo_aio_seq` the least asyncio one) over redis-py's GET p50: the least an L1 hit's
    ratio could be if the sidecar and the SDK were as fast as the ceiling."""
    floors = {}
    for key, row in results.items():
        name, _, placement = key.partition("@")
        echo = results.get(f"{echo_row}@{placement}")
        if name == "redis_get_seq" and echo:
            floors[placement] = round(echo["p50_us"] / row["p50_us"], 3)
    return floors


def sdk_notes(results: dict[str, dict[str, Any]]) -> list[str]:
    """Each SDK's ping p50 and pipelined rate against the Python SDK's, same program."""
    lines = []
    for key, row in results.items():
        name, _, placement = key.partition("@")
        python = results.get(f"sdk_python@{placement}")
        if row["kind"] != "sdk" or python is None or name == "sdk_python":
            continue
        lines.append(
            f"{name[4:]} SDK ({placement}): ping p50 {row['p50_us']} us "
            f"({row['p50_us'] / python['p50_us']:.2f}x Python's {python['p50_us']} us), "
            f"pipelined {row['msgs_per_s']:,}/s "
            f"({row['msgs_per_s'] / python['msgs_per_s']:.2f}x Python's {python['msgs_per_s']:,}/s)"
        )
    return lines


def lock_notes(results: dict[str, dict[str, Any]]) -> list[str]:
    """What the lock rows' ratio column cannot hold: pottery's ratio, the shares."""
    lines = []
    for key, row in results.items():
        name, _, placement = key.partition("@")
        if name in ("sdk_lock_cycles", "sdk_lock_cycles_pipe"):
            against = [
                f"{row['msgs_per_s'] / results[base]['msgs_per_s']:.2f}x {label}"
                for base, label in (
                    (f"redis_lock_cycles@{placement}", "redis-py Lock"),
                    (f"pottery_lock_cycles@{placement}", "pottery Redlock"),
                )
                if base in results
            ]
            how = "pipelined" if name.endswith("_pipe") else "one task per name"
            lines.append(
                f"lock acq+rel ({placement}, {how}): acquire (wait_ms 0) + release cycles/s = "
                f"{', '.join(against)}"
            )
    who = {
        "sdk_lock_fair": "sidecar",
        "sdk_lock_fair_2nodes": "two sidecars",
        "redis_lock_fair": "redis-py Lock, sleep 1 ms",
    }
    for key, row in results.items():
        name, _, placement = key.partition("@")
        if row["kind"] == "fairness":
            lines.append(
                f"lock fairness ({placement}, {who.get(name, name)}): acquisitions per waiter "
                f"in the worst round: min {row['min']} / mean {row['mean']:.1f} / max "
                f"{row['max']}"
                + (f", {row['timeouts']} acquires timed out" if row["timeouts"] else "")
            )
    if any(key.startswith("sdk_lock_wakeup") for key in results):
        lines.append(
            "lock wake-up: release sent -> the waiting holder's acquire returned, two Clients "
            "handing one lock back and forth (two nodes: the second on the L1-off sidecar)"
        )
    return lines


def render(
    outcomes: dict[str, Outcome],
    results: dict[str, dict[str, Any]],
    checks: list[dict[str, Any]],
    memory: dict[str, Any],
) -> str:
    lines = []
    header = (
        f"{'cpus':<6} {'server':<7} {'client':<16} {'workload':<26} {'p50 us':>6} "
        f"{'p99 us':>6} {'msgs/s':>9} {'cpu c/s':>9}  {'ratio':<14} {'spread':>6}"
    )
    lines += [header, "-" * len(header)]
    previous = None
    for key, outcome in outcomes.items():
        spec, res = outcome.spec, results[key]
        if previous is not None and spec.placement != previous:
            lines.append("")
        previous = spec.placement
        if spec.kind == "latency":
            figures = f"{res['p50_us']:>6.1f} {res['p99_us']:>6.1f} {'':>9}"
            field_name = "p50_us"
        elif spec.kind == "sdk":
            figures = f"{res['p50_us']:>6.1f} {res['p99_us']:>6.1f} {res['msgs_per_s']:>9,}"
            field_name = "p50_us"
        else:
            figures = f"{'':>6} {'':>6} {res['msgs_per_s']:>9,}"
            field_name = "msgs_per_s"
        ratio = ""
        if spec.kind == "fairness":
            ratio = f"min/mean {res['min_over_mean']:.2f}"
        elif spec.baseline in results:
            value = res[field_name] / results[spec.baseline][field_name]
            ratio = f"{value:.2f}x {spec.baseline_name}"
        spread_text = "-" if res["spread"] is None else f"{res['spread'] * 100:.0f}%"
        cpu = res["cpu_us_per_msg"]
        cpu_text = f"{cpu.get('client', 0):.1f}/{cpu.get(spec.meter or spec.server, 0):.1f}"
        if spec.kind == "sdk":  # another process's program: its CPU is not metered
            cpu_text = "-"
        lines.append(
            f"{spec.placement:<6} {spec.server:<7} {spec.client:<16} {spec.workload:<26} "
            f"{figures} {cpu_text:>9}  {ratio:<14} {spread_text:>6}"
        )
    lines.append("")
    lines.append(
        "cpus: " + "; ".join(f"{name} = {PLACEMENTS[name]}" for name in dict.fromkeys(
            outcome.spec.placement for outcome in outcomes.values()))
    )  # fmt: skip
    lines.append("cpu c/s: CPU us per message spent by the client / by the server named in the row")
    lines.append("spread: (max - min) / median of the per-round p50 or msgs/s")
    if any(outcome.spec.key.startswith("sdk_l2_") for outcome in outcomes.values()):
        lines.append("cache.get L2: a second sidecar with l1_max_entries = 0, on the same Redis")
    lines += lock_notes(results)
    lines += sdk_notes(results)
    floors, aio_floors = l1_floors(results), l1_floors(results, "echo_aio_seq")
    if floors:
        lines.append(
            "L1 floor (echo ping p50 / redis-py GET p50, the best an L1 hit's ratio can be): "
            + ", ".join(f"{placement} {value:.2f}" for placement, value in floors.items())
        )
    if aio_floors:
        lines.append(
            "L1 floor, asyncio (raw asyncio echo ping p50 / redis-py GET p50): "
            + ", ".join(f"{placement} {value:.2f}" for placement, value in aio_floors.items())
        )
    lines.append("")
    for name, label in (
        ("sidecar_after_start", "sidecar RSS after start"),
        ("sidecar_after_runs", "sidecar RSS after the runs"),
        ("echo_after_start", "echo server RSS after start"),
    ):
        if name in memory:
            sample = memory[name]
            lines.append(
                f"{label:<29} {sample['rss_mib']:6.1f} MiB (peak {sample['peak_rss_mib']} MiB)"
            )
    loaded = memory.get("sidecar_l1_loaded")
    if loaded:
        lines.append(
            f"{'sidecar RSS, L1 loaded':<29} {loaded['rss_mib']:6.1f} MiB "
            f"(peak {loaded['peak_rss_mib']} MiB): a fresh sidecar, {loaded['l1_entries']:,} "
            f"entries of 100 B in L1; {loaded['rss_after_start_mib']} MiB at start, "
            f"{loaded['bytes_per_entry']} bytes per entry"
        )
    presence = memory.get("presence_loaded")
    if presence:
        lines.append(
            f"{'sidecar RSS, presence loaded':<29} {presence['rss_mib']:6.1f} MiB "
            f"(peak {presence['peak_rss_mib']} MiB): a fresh sidecar holding "
            f"{presence['held']:,} presence entries over {workloads.PRESENCE_CONNECTIONS} "
            f"connections and {workloads.PRESENCE_CHANNELS} channels"
        )
        lines.append(
            f"presence: {presence['track_per_s']:,} tracks/s and {presence['untrack_per_s']:,} "
            f"untracks/s (pipelined {workloads.PRESENCE_BATCH} deep); "
            f"{presence['commands_per_heartbeat']} Redis commands per heartbeat with all held "
            f"({presence['redis_commands']} in {presence['heartbeats']} heartbeats); "
            f"join on one node -> diff on another p50 {presence['join_to_diff_p50_us']} us, "
            f"p99 {presence['join_to_diff_p99_us']} us ({PRESENCE_LATENCY_TRIALS} trials)"
        )
    if checks:
        lines.append("")
        lines.append("targets:")
        for check in checks:
            verdict = "met" if check["met"] else "MISSED"
            value = f"{check['value']:.2f}{check['unit']}"
            target = f"{check['op']} {check['target']}{check['unit']}"
            lines.append(f"  {check['name']:<64} {value:>10}   target {target:<13} {verdict}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    mode = "quick" if args.quick else "full"
    progress(
        f"madsidecar benchmark ({mode}): {args.rounds} round(s), {args.duration} s per workload "
        f"after {args.warmup} s warm-up, pipeline depth {args.depth}, {args.tasks} tasks, "
        f"{args.cache_entries:,} L1 entries for memory"
    )
    try:
        raw = run(args)
    except StartError as exc:
        print(f"bench: cannot start: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print("bench: failed; every process it started has been stopped", file=sys.stderr)
        return 1
    outcomes: dict[str, Outcome] = raw["outcomes"]
    results = {key: outcome.summary() for key, outcome in outcomes.items()}
    checks = evaluate(outcomes, results, raw["memory"])
    print()
    print(render(outcomes, results, checks, raw["memory"]))
    report = {
        "generated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "pipeline_depth": args.depth,
            "tasks": args.tasks,
            "cache_entries": args.cache_entries,
            "placement": args.placement,
            "lock_names": LOCK_NAMES,
            "lock_waiters": LOCK_WAITERS,
            "lock_hold_ms": workloads.LOCK_HOLD_S * 1000,
            "lock_wakeup_hold_ms": workloads.WAKEUP_HOLD_S * 1000,
            "redis_py_lock_sleep_ms": workloads.REDIS_LOCK_SLEEP_S * 1000,
        },
        "environment": raw["environment"],
        "results": {
            key: {
                "placement": outcome.spec.placement,
                "server": outcome.spec.server,
                "client": outcome.spec.client,
                "workload": outcome.spec.workload,
                "baseline": outcome.spec.baseline,
                **results[key],
            }
            for key, outcome in outcomes.items()
        },
        "memory": raw["memory"],
        "targets": checks,
        "l1_floor": l1_floors(results),
        "l1_floor_asyncio": l1_floors(results, "echo_aio_seq"),
        "sidecar_exit_status": raw["sidecar_exit_status"],
        "sidecar_exit_statuses": raw["sidecar_exit_statuses"],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults written to {args.output}")
    for name, status in raw["sidecar_exit_statuses"].items():
        if status not in (0, None):
            print(f"bench: {name} exited with status {status}", file=sys.stderr)
            return 1
    if args.check and not all(check["met"] for check in checks):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
