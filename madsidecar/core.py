"""Connection methods: hello, ping, stats, health."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from . import PROTOCOL_VERSION, __version__
from .build_info import is_compiled
from .deferred import Deferred
from .errors import BadRequest, Forbidden, quoted
from .methods import Arg, CapabilityBase, Client, Method
from .redis_gateway import RedisGateway
from .server import Server

StatsSource = Callable[[], dict[str, Any]]

# Sections the contract requires in `stats`; a capability that owns one replaces it.
REQUIRED_SECTIONS: dict[str, dict[str, int]] = {
    "cache": {"l1_hits": 0, "l2_hits": 0, "misses": 0, "l1_entries": 0, "l1_bytes": 0},
    "locks": {"held": 0},
    "presence": {"tracked": 0},
}


class CoreMethods(CapabilityBase):
    group = "core"

    def __init__(
        self,
        server: Server,
        gateway: RedisGateway,
        capability_stats: StatsSource,
        embedded: bool,
    ) -> None:
        self._server = server
        self._gateway = gateway
        self._compiled = is_compiled()
        self._capability_stats = capability_stats
        self._embedded = embedded

    def methods(self) -> Iterable[Method]:
        return (
            Method(
                "hello",
                self.hello,
                (
                    Arg("client", "str", None),
                    Arg("version", "any", None),
                    Arg("namespace", "name", None),
                ),
                group="core",
            ),
            Method("ping", self.ping, group="core"),
            Method("stats", self.stats_method, group="core"),
            Method("health", self.health, group="core"),
        )

    def hello(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        rule = client.rule
        if rule is None:
            raise Forbidden(f"no policy rule admits uid={client.peer.uid} gid={client.peer.gid}")
        namespace = args["namespace"] or client.namespace
        if not rule.allows_namespace(namespace):
            raise Forbidden(
                f"this peer may not use namespace {quoted(namespace)}", argument="namespace"
            )
        if namespace != client.namespace and client.inflight:
            # Requests already running read the namespace when they run; switching under
            # them would apply it to requests sent before the hello.
            raise BadRequest(
                "hello: cannot change the namespace while requests are in flight; send hello first",
                argument="namespace",
            )
        client.namespace = namespace
        if args["client"] is not None:
            client.client_name = args["client"]
        config = self._server.config
        return {
            "server": "madsidecar",
            "version": __version__,
            "protocol": PROTOCOL_VERSION,
            "node_id": config.node_id,
            "namespace": namespace,
            "max_frame_bytes": config.max_frame_bytes,
            "methods": self._server.table.names(),
        }

    def ping(self, client: Client, args: dict[str, Any]) -> str:
        return "pong"

    def stats_method(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """Every counter of the sidecar, as `stats` answers them (and /metrics reads them)."""
        server = self._server
        gateway = self._gateway
        latency_us = gateway.latency_us
        result: dict[str, Any] = {
            "uptime_ms": server.uptime_ms,
            "connections": len(server.connections),
            "requests": server.requests,
            "node_id": server.config.node_id,
            "compiled": self._compiled,
            "version": __version__,
            "redis": {
                "connected": gateway.connected,
                # The contract's durations are integer ms; Redis answers in microseconds.
                "latency_ms": None if latency_us is None else round(latency_us / 1000),
                "latency_us": latency_us,
                "embedded": self._embedded,
                "last_error": gateway.last_error,
                "commands": gateway.counters.commands,
                "pipelines": gateway.counters.pipelines,
            },
        }
        result["gc"] = _garbage_collector()
        cluster = gateway.cluster_status()
        if cluster is not None:
            result["redis"]["cluster"] = cluster
        result.update({name: dict(section) for name, section in REQUIRED_SECTIONS.items()})
        result.update(self._capability_stats())
        return result

    def health(self, client: Client, args: dict[str, Any]) -> Deferred:
        """A round trip to Redis through the sidecar: UNAVAILABLE when it cannot be made."""
        return Deferred(self._gateway.execute("PING"), partial(_healthy, time.perf_counter()))


def _garbage_collector() -> dict[str, Any]:
    """Python's cyclic collector since start: passes run, objects found in cycles (the
    request path makes none), and the thresholds that trigger a pass."""
    generations = gc.get_stats()
    return {
        "collections": sum(g["collections"] for g in generations),
        "collected": sum(g["collected"] for g in generations),
        "uncollectable": sum(g["uncollectable"] for g in generations),
        "threshold": list(gc.get_threshold()),
    }


def _healthy(started: float, _: object) -> dict[str, Any]:
    latency_us = round((time.perf_counter() - started) * 1_000_000)
    return {
        "ok": True,
        "redis_latency_ms": round(latency_us / 1000),
        "redis_latency_us": latency_us,
    }
