"""The Prometheus endpoint (`metrics_listen`): GET /metrics, served from the event loop.

The collector reads the counters the sidecar keeps anyway (the `stats` map) when it is
scraped, so the request path pays nothing for them; only the per-method counts and
latencies are recorded per request (request_metrics.py). The HTTP side is a few lines
of asyncio rather than prometheus_client's thread server: collection then runs on the
loop thread, where the state it reads is never halfway through a change.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any, Final

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from .config import parse_listen
from .request_metrics import LATENCY_BUCKETS_S, RequestMetrics
from .server import StartupError

log = structlog.get_logger("madsidecar.metrics")

PREFIX: Final = "madsidecar_"
PATH: Final = b"/metrics"
# A scraper sends its request at once; anything slower, or larger, is not one.
IDLE_TIMEOUT_S: Final = 5.0
MAX_REQUEST_BYTES: Final = 16 * 1024
# Scrapers are few; past this many open connections, new ones are closed unanswered.
MAX_CONNECTIONS: Final = 64

Snapshot = Callable[[], dict[str, Any]]

GAUGE: Final = "gauge"
COUNTER: Final = "counter"

# Plain numbers of the stats map, one metric each: (section, key, name, kind, help).
# Counters are named without `_total`: prometheus_client appends it.
FROM_STATS: Final[tuple[tuple[str, str, str, str, str], ...]] = (
    ("redis", "commands", "redis_commands", COUNTER, "Redis commands sent"),
    ("redis", "pipelines", "redis_pipelines", COUNTER, "Redis pipelines sent"),
    ("cache", "l1_entries", "cache_l1_entries", GAUGE, "Entries in the node's L1 cache"),
    ("cache", "l1_bytes", "cache_l1_bytes", GAUGE, "Bytes of values in the L1 cache"),
    ("cache", "evictions", "cache_l1_evictions", COUNTER, "L1 entries evicted for room"),
    ("cache", "invalidations", "cache_invalidations", COUNTER, "L1 entries invalidated"),
    ("cache", "flushes", "cache_l1_flushes", COUNTER, "Whole-L1 flushes (feed gaps)"),
    ("cache", "fills", "cache_fills", COUNTER, "cache.fill writes"),
    ("cache", "leases_granted", "cache_leases_granted", COUNTER, "Fill leases granted"),
    ("cache", "lease_waiters", "cache_lease_waiters", GAUGE, "Clients waiting on a fill lease"),
    ("cache", "stale_served", "cache_stale_served", COUNTER, "Stale L1 answers, Redis down"),
    ("cache", "undecodable", "cache_undecodable", COUNTER, "Stored values that did not decode"),
    ("locks", "held", "locks_held", GAUGE, "Locks this node's clients hold"),
    ("locks", "waiting", "locks_waiting", GAUGE, "Clients waiting for a lock"),
    ("locks", "acquired", "locks_acquired", COUNTER, "Locks acquired"),
    ("locks", "released", "locks_released", COUNTER, "Locks released"),
    ("locks", "lost", "locks_lost", COUNTER, "Leases lost before their release"),
    ("locks", "timeouts", "locks_timeouts", COUNTER, "Lock waits that ran out of time"),
    ("sessions", "l1_entries", "sessions_l1_entries", GAUGE, "Sessions in the node's L1"),
    ("sessions", "reads", "sessions_reads", COUNTER, "Session reads"),
    ("sessions", "l1_hits", "sessions_l1_hits", COUNTER, "Session reads answered from L1"),
    ("sessions", "created", "sessions_created", COUNTER, "Sessions created"),
    ("sessions", "revoked", "sessions_revoked", COUNTER, "Sessions revoked"),
    ("presence", "tracked", "presence_entries", GAUGE, "Presence entries of this node's clients"),
    ("presence", "channels_watched", "presence_channels_watched", GAUGE, "Channels watched"),
    ("presence", "subscribers", "presence_subscribers", GAUGE, "Presence subscriptions"),
    ("presence", "heartbeats", "presence_heartbeats", COUNTER, "Node heartbeats written"),
    ("pubsub", "channels", "pubsub_channels", GAUGE, "Channels this node's clients subscribe to"),
    ("pubsub", "subscriptions", "pubsub_subscriptions", GAUGE, "Client subscriptions"),
    ("pubsub", "published", "pubsub_published", COUNTER, "Messages published"),
    ("pubsub", "received", "pubsub_received", COUNTER, "Messages received from Redis"),
    ("pubsub", "delivered", "pubsub_delivered", COUNTER, "Messages delivered to clients"),
    ("pubsub", "dropped", "pubsub_dropped", COUNTER, "Messages dropped (client not reading)"),
    ("ratelimit", "checks", "ratelimit_checks", COUNTER, "Rate-limit checks evaluated"),
    ("ratelimit", "denied_locally", "ratelimit_denied_locally", COUNTER,
     "Denials answered from remembered denials, without Redis"),
    ("ratelimit", "shadow_denied", "ratelimit_shadow_denied", COUNTER,
     "Shadow-rule checks that enforcing would have denied"),
    ("ratelimit", "degraded", "ratelimit_degraded", COUNTER,
     "Checks decided by on_redis_down while Redis was unreachable"),
    ("ratelimit", "redis_timeouts", "ratelimit_redis_timeouts", COUNTER,
     "Checks whose Redis answer missed ratelimit_timeout_ms"),
)  # fmt: skip


class SidecarCollector(Collector):
    """Every madsidecar_* metric, built from the counters at scrape time."""

    def __init__(self, snapshot: Snapshot, requests: RequestMetrics) -> None:
        self._snapshot = snapshot
        self._requests = requests

    def collect(self) -> Iterator[Metric]:
        stats = self._snapshot()
        yield from self._process(stats)
        yield from self._request_families()
        yield from self._redis(stats.get("redis", {}))
        yield from self._cache(stats.get("cache", {}))
        yield from self._ratelimit(stats.get("ratelimit", {}))
        for section, key, name, kind, doc in FROM_STATS:
            value = stats.get(section, {}).get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                family = GaugeMetricFamily if kind == GAUGE else CounterMetricFamily
                yield family(PREFIX + name, doc, value=value)

    def _process(self, stats: dict[str, Any]) -> Iterator[Metric]:
        info = InfoMetricFamily(PREFIX + "build", "Version and build of this sidecar")
        info.add_metric(
            [],
            {
                "version": str(stats.get("version", "")),
                "node_id": str(stats.get("node_id", "")),
                "compiled": str(bool(stats.get("compiled"))).lower(),
            },
        )
        yield info
        yield GaugeMetricFamily(
            PREFIX + "uptime_seconds",
            "Seconds since the sidecar started",
            value=stats.get("uptime_ms", 0) / 1000,
        )
        yield GaugeMetricFamily(
            PREFIX + "connections", "Client connections open", value=stats.get("connections", 0)
        )

    def _request_families(self) -> Iterator[Metric]:
        counts = CounterMetricFamily(
            PREFIX + "requests",
            "Requests answered, by method and result code (OK, an error code, or CLOSED: "
            "the client left first)",
            labels=["method", "code"],
        )
        latency = HistogramMetricFamily(
            PREFIX + "request_duration_seconds",
            "Time from reading a request to its answer, by method",
            labels=["method"],
        )
        bounds = [repr(bound) for bound in LATENCY_BUCKETS_S] + ["+Inf"]
        for method, recorded in sorted(self._requests.methods.items()):
            for code, count in sorted(recorded.codes().items()):
                counts.add_metric([method, code], count)
            cumulative, buckets = 0, []
            for bound, count in zip(bounds, recorded.buckets, strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            latency.add_metric([method], buckets, recorded.total_s)
        yield counts
        yield latency

    def _redis(self, redis: dict[str, Any]) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            PREFIX + "redis_up",
            "1 while the link to Redis is up, else 0",
            value=1 if redis.get("connected") else 0,
        )
        latency_us = redis.get("latency_us")
        if latency_us is not None:
            # Absent, rather than a made-up number, until a probe has come back.
            yield GaugeMetricFamily(
                PREFIX + "redis_latency_seconds",
                "Round trip of the last Redis health probe",
                value=latency_us / 1_000_000,
            )

    def _cache(self, cache: dict[str, Any]) -> Iterator[Metric]:
        l1_hits, l2_hits, misses = (cache.get(k, 0) for k in ("l1_hits", "l2_hits", "misses"))
        hits = CounterMetricFamily(
            PREFIX + "cache_hits", "Cache reads answered at this level", labels=["level"]
        )
        hits.add_metric(["l1"], l1_hits)
        hits.add_metric(["redis"], l2_hits)
        yield hits
        # Per level, so hits / (hits + misses) is that level's hit ratio: what L1 misses
        # goes on to Redis.
        missed = CounterMetricFamily(
            PREFIX + "cache_misses", "Cache reads this level could not answer", labels=["level"]
        )
        missed.add_metric(["l1"], l2_hits + misses)
        missed.add_metric(["redis"], misses)
        yield missed

    def _ratelimit(self, ratelimit: dict[str, Any]) -> Iterator[Metric]:
        decisions = CounterMetricFamily(
            PREFIX + "ratelimit_decisions",
            "Rate-limit decisions (shadow-rule denials are counted as denied)",
            labels=["decision"],
        )
        decisions.add_metric(["allowed"], ratelimit.get("allowed", 0))
        decisions.add_metric(["denied"], ratelimit.get("denied", 0))
        yield decisions


def build_registry(snapshot: Snapshot, requests: RequestMetrics) -> CollectorRegistry:
    """A registry of the app's own: nothing goes to prometheus_client's global one."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SidecarCollector(snapshot, requests))
    ProcessCollector(registry=registry)  # CPU, memory and file descriptors, from /proc
    return registry


class MetricsEndpoint:
    """An HTTP/1.x responder for GET /metrics; one request per connection."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self, listen: str) -> str:
        """Listen on `listen` (HOST:PORT); returns the URL. StartupError if it cannot."""
        host, port = parse_listen(listen)
        try:
            self._server = await asyncio.start_server(
                self._serve, host, port, limit=MAX_REQUEST_BYTES
            )
        except OSError as exc:
            # asyncio's own message repeats the address; the errno's text is the news.
            if isinstance(exc, socket.gaierror):
                reason = f"cannot resolve {host!r}: {exc.strerror}"
            elif exc.errno:
                reason = os.strerror(exc.errno).lower()
            else:
                reason = str(exc)
            raise StartupError(
                f"metrics_listen: cannot listen on {listen}: {reason}; pick another port "
                "or stop what uses it"
            ) from None
        return f"http://{listen}/metrics"

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._handlers) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._handlers.add(task)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT_S)
            writer.write(self._answer(head))
            await asyncio.wait_for(writer.drain(), IDLE_TIMEOUT_S)
        except (
            TimeoutError,
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ):
            # Idle, cut short, or a head over MAX_REQUEST_BYTES: not a scrape.
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _answer(self, head: bytes) -> bytes:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return _response(400, "Bad Request", b"not an HTTP/1.x request\n")
        verb, target = parts[0], parts[1]
        if target.split(b"?", 1)[0] != PATH:
            return _response(404, "Not Found", b"only /metrics is served here\n")
        if verb not in (b"GET", b"HEAD"):
            return _response(405, "Method Not Allowed", b"GET /metrics\n", b"Allow: GET, HEAD\r\n")
        try:
            body = generate_latest(self._registry)
        except Exception:
            log.exception("metrics_collect_failed")
            return _response(500, "Internal Server Error", b"collection failed; see the log\n")
        return _response(200, "OK", body, content_type=CONTENT_TYPE_LATEST, head=verb == b"HEAD")


def _response(
    status: int,
    reason: str,
    body: bytes,
    extra_headers: bytes = b"",
    content_type: str = "text/plain; charset=utf-8",
    head: bool = False,
) -> bytes:
    headers = (
        f"HTTP/1.1 {status} {reason}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
    ).encode() + extra_headers
    return headers + b"\r\n" + (b"" if head else body)
