"""Wires configuration, Redis, capabilities and the server together; owns the lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import resource
import signal
from collections.abc import Callable
from typing import Any, Final

import structlog

from . import __version__
from .build_info import is_compiled, stale_modules
from .cache import Cache
from .config import Config, ConfigError, load_config, reload_changes
from .core import CoreMethods
from .embedded_redis import EmbeddedRedis
from .locks import Locks
from .logs import configure_logging
from .methods import Capability, MethodTable
from .metrics import MetricsEndpoint, build_registry
from .presence import Presence
from .pubsub import PubSub
from .ratelimit import RateLimits
from .redis_gateway import RedisGateway, redis_settings
from .request_metrics import RequestMetrics
from .server import Server
from .sessions import Sessions
from .systemd import SystemdNotifier, take_activated_socket

log = structlog.get_logger("madsidecar")


class Sidecar:
    """One running daemon. `run()` returns the process exit status."""

    def __init__(self, config: Config, reload_config: Callable[[], Config] | None = None) -> None:
        self.config = config
        self._reload_config = reload_config or (lambda: load_config({}, None))
        self._stop = asyncio.Event()
        self._notifier = SystemdNotifier.from_env()
        self.embedded: EmbeddedRedis | None = None
        self.gateway: RedisGateway | None = None
        self.server: Server | None = None
        self.cache: Cache | None = None
        self.metrics: MetricsEndpoint | None = None
        self._capabilities: list[Capability] = []

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> int:
        raise_open_file_limit()
        log.info(
            "starting",
            version=__version__,
            node_id=self.config.node_id,
            redis=self.config.redacted_redis_url() or "embedded",
            compiled=is_compiled(),
        )
        stale = stale_modules()
        if stale:
            log.warning("compiled_modules_stale", sources=stale, fix="./dev build")
        redis_url = self.config.redis_url
        if redis_url is None:
            self.embedded = EmbeddedRedis(self.config)
            redis_url = await self.embedded.start()
        try:
            await self._serve(redis_url)
        finally:
            await self._shutdown_redis()
        log.info("stopped")
        return 0

    async def _serve(self, redis_url: str) -> None:
        self.gateway = RedisGateway(redis_settings(self.config, redis_url))
        self.gateway.start()
        table = MethodTable()
        requests = RequestMetrics() if self.config.metrics_listen is not None else None
        self.server = Server(self.config, table, self._capabilities, requests)
        self._capabilities += build_capabilities(
            self.config,
            self.gateway,
            self.server,
            self._capability_stats,
            self.embedded is not None,
        )
        self.cache = next(c for c in self._capabilities if isinstance(c, Cache))
        if self.config.metrics_listen is not None and requests is not None:
            # Before anything starts: a port in use stops the start with nothing to undo.
            core = next(c for c in self._capabilities if isinstance(c, CoreMethods))
            self.metrics = MetricsEndpoint(build_registry(core.snapshot, requests))
            url = await self.metrics.start(self.config.metrics_listen)
            log.info("metrics_listening", url=url)
        try:
            for capability in self._capabilities:
                for method in capability.methods():
                    table.register(method)
                await capability.start()
            await self.server.listen(take_activated_socket())
            self._install_signal_handlers()
            self._notifier.start_watchdog()
            ready = asyncio.create_task(self._announce_ready())
            await self._stop.wait()
            ready.cancel()
            await self._drain()
        finally:
            if self.metrics is not None:
                await self.metrics.close()

    async def _announce_ready(self) -> None:
        assert self.gateway is not None
        self._notifier.status("waiting for Redis")
        await self.gateway.wait_connected()
        if self.cache is not None:
            self._notifier.status("warming the cache")
            await self.cache.warm_up(self.config.cache_warm_timeout_ms / 1000)
        self._notifier.ready("serving")
        log.info("ready")

    async def _drain(self) -> None:
        assert self.server is not None
        log.info("shutting_down", deadline_ms=self.config.shutdown_timeout_ms)
        self._notifier.stopping()
        self._notifier.stop_watchdog()
        await self.server.drain(self.config.shutdown_timeout_ms / 1000)
        for capability in reversed(self._capabilities):
            try:
                await capability.close()
            except Exception:
                log.exception("capability_close_failed", capability=capability.group)

    async def _shutdown_redis(self) -> None:
        if self.gateway is not None:
            await self.gateway.close()
        if self.embedded is not None:
            await self.embedded.stop()

    def _capability_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {}
        for capability in self._capabilities:
            stats.update(capability.stats())
        return stats

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def reload(self) -> None:
        """SIGHUP: re-read env and the TOML file; apply what can change while running."""
        try:
            fresh = self._reload_config()
        except ConfigError as exc:
            log.error("reload_rejected", reason=str(exc))
            return
        self.config, applied, ignored = reload_changes(self.config, fresh)
        if "log_level" in applied:
            configure_logging(self.config.log_level, self.config.log_format)
        if self.server is not None:
            self.server.apply_config(self.config)
        for capability in self._capabilities:
            capability.reconfigure(self.config)
        log.info("reloaded", applied=applied or None, needs_restart=ignored or None)


def build_capabilities(
    config: Config,
    gateway: RedisGateway,
    server: Server,
    capability_stats: Callable[[], dict[str, Any]],
    embedded_redis: bool,
) -> list[Capability]:
    """Every capability, in method-table order; nothing is started or connected."""
    cache = Cache(config, gateway)
    return [
        CoreMethods(server, gateway, capability_stats, embedded_redis),
        cache,
        Locks(config, gateway),
        Sessions(config, gateway, cache),
        PubSub(config, gateway),
        Presence(config, gateway),
        RateLimits(config, gateway, cache),
    ]


def describe_methods(config: Config | None = None) -> list[dict[str, Any]]:
    """The method table as data (for SDK authors' conformance files): names and arguments."""
    config = config or Config()
    gateway = RedisGateway(redis_settings(config, "unix:///nonexistent"))
    server = Server(config, MethodTable(), [])
    capabilities = build_capabilities(config, gateway, server, dict, embedded_redis=False)
    return [method.describe() for c in capabilities for method in c.methods()]


def raise_open_file_limit() -> None:
    """Every client is a file descriptor; the default soft limit of 1024 is too few."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# Container objects allocated, net of those freed, before the cyclic garbage collector's
# youngest generation is scanned. Python's default, 700, is about what 64 requests in
# flight hold: the collector then ran every few requests and found nothing (the request
# path frees what it makes by reference counting; tests/test_garbage.py holds it to
# that), costing 1.5 us of a 9.8 us rate-limit check (docs/performance.md).
GC_YOUNG_THRESHOLD: Final = 20_000


def tune_garbage_collector() -> None:
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def run_sidecar(config: Config, reload_config: Callable[[], Config] | None = None) -> int:
    """Run in the foreground on uvloop until SIGTERM/SIGINT."""
    import uvloop

    tune_garbage_collector()
    sidecar = Sidecar(config, reload_config)
    with contextlib.suppress(KeyboardInterrupt):
        return uvloop.run(sidecar.run())
    return 0
