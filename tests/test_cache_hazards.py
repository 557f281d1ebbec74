"""The three coherence hazards of docs/caching.md, each injected and shown closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import CoroutineType
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis

from madsidecar.cache import Cache
from madsidecar.config import Config, PolicyRule
from madsidecar.deferred import Deferred
from madsidecar.peer import UNKNOWN_PEER
from madsidecar.protocol import Packed
from madsidecar.redis_gateway import RedisGateway, RedisSettings

from .support import RedisProcess, SidecarProcess
from .test_cache import cache_get, check_history, eventually, warm_l1


@dataclass
class FakeClient:
    """The calling connection, as a handler sees it."""

    conn_id: int = 1
    namespace: str = "default"
    client_name: str | None = None
    closed: bool = False
    peer: Any = UNKNOWN_PEER
    rule: PolicyRule | None = None
    inflight: frozenset[Any] = frozenset()

    def notify(self, name: str, payload: dict[str, Any]) -> None:
        return None


async def answer(result: Any) -> Any:
    """A handler's answer, whether it came inline or as the rest of its work, decoded as
    the client would see it."""
    if goes_to_redis(result):
        result = await result
    return inline(result)


def goes_to_redis(result: Any) -> bool:
    """True when the handler could not answer from L1 (its answer waits on Redis)."""
    return type(result) is CoroutineType or type(result) is Deferred


def inline(result: Any) -> Any:
    """An inline answer as the client sees it (stored values are spliced in encoded)."""
    return msgpack.unpackb(result) if type(result) is Packed else result


@pytest.fixture
async def cache(redis_server: RedisProcess) -> AsyncIterator[Cache]:
    gateway = RedisGateway(RedisSettings(redis_server.url, None, 1000, 1000, 200))
    gateway.start()
    assert await gateway.wait_connected(10)
    node = Cache(Config(node_id="hazard", cache_probe_interval_ms=100), gateway)
    await node.start()
    await node.warm_up(10)  # returns once the feed is proven live
    try:
        yield node
    finally:
        await node.close()
        await gateway.close()


async def test_hazard1_invalidation_during_an_inflight_read(cache: Cache) -> None:
    client = FakeClient()
    await cache.set(client, {"key": "k", "value": "old", "ttl_ms": None})

    # Control: without an invalidation, a read from L2 makes the next read an L1 hit.
    assert (await answer(cache.get(client, {"key": "k"})))["source"] == "l2"
    assert inline(cache.get(client, {"key": "k"}))["source"] == "l1"
    await cache.set(client, {"key": "k", "value": "old", "ttl_ms": None})

    # The injection: the read's GET is on its way to Redis when an invalidation of the
    # key arrives, before the (now outdated) reply does.
    read = asyncio.ensure_future(answer(cache.get(client, {"key": "k"})))
    await asyncio.sleep(0)  # lets the read send its GET
    cache.feed_invalidated([b"msc:c:{7:default:k}"])
    reply = await read
    assert reply["value"] == "old", "the caller still gets the reply it asked for"
    pending = cache.get(client, {"key": "k"})
    assert goes_to_redis(pending), "the raced reply did not enter L1"
    assert (await answer(pending))["source"] == "l2"


class DeafHandler:
    """Forwards everything but invalidations: Redis silently stopped pushing them."""

    def __init__(self, inner: Cache) -> None:
        self.inner = inner

    def feed_invalidated(self, keys: list[bytes] | None) -> None:
        return None

    def feed_message(self, channel: bytes, data: bytes) -> None:
        return None

    def feed_up(self) -> None:
        self.inner.feed_up()

    def feed_down(self, reason: str) -> None:
        self.inner.feed_down(reason)


async def test_hazard2_tracking_silently_dropped(cache: Cache, redis_server: RedisProcess) -> None:
    client = FakeClient()
    await cache.set(client, {"key": "s", "value": "v1", "ttl_ms": None})
    await answer(cache.get(client, {"key": "s"}))
    assert inline(cache.get(client, {"key": "s"}))["source"] == "l1"
    feed = cache._feed
    feed._handler = DeafHandler(cache)
    # Another node writes; this node's invalidation never comes.
    other = aioredis.Redis(unix_socket_path=redis_server.socket_path)
    await other.set("msc:c:{7:default:s}", msgpack.packb("v2"))
    started = time.monotonic()
    while cache.stats()["cache"]["feed_live"]:
        assert time.monotonic() - started < 10, "the probe never noticed"
        await asyncio.sleep(0.01)  # the probe runs on its own schedule
    noticed = time.monotonic() - started
    assert (await answer(cache.get(client, {"key": "s"})))["value"] == "v2", "L1 is off"
    feed._handler = cache  # pushes flow again on the restarted feed connection
    while not cache.stats()["cache"]["feed_live"]:
        assert time.monotonic() - started < 20, "the feed was never proven live again"
        await asyncio.sleep(0.01)
    await answer(cache.get(client, {"key": "s"}))
    assert inline(cache.get(client, {"key": "s"}))["source"] == "l1", "L1 is back on"
    await other.aclose()
    print(f"silent feed loss noticed after {noticed * 1000:.0f} ms (probe every 100 ms)")


async def test_hazard3_own_writes_leave_l1_consistent(cache: Cache) -> None:
    client = FakeClient()
    for i in range(200):
        await cache.set(client, {"key": "own", "value": i, "ttl_ms": None})
        got = await answer(cache.get(client, {"key": "own"}))
        assert got["value"] == i
        again = await answer(cache.get(client, {"key": "own"}))
        assert again["value"] == i


def test_hazard2_feed_killed_with_client_kill(
    redis_server: RedisProcess,
) -> None:
    import redis

    a = SidecarProcess(redis_server.url, extra_args=["--node-id", "a"]).start()
    b = SidecarProcess(redis_server.url, extra_args=["--node-id", "b"]).start()
    direct = redis.Redis(unix_socket_path=redis_server.socket_path)
    try:
        with a.client() as ca, b.client() as cb:
            cb.call("cache.set", {"key": "cfg", "value": "v1"})
            warm_l1(ca, "cfg")
            flushes = ca.stats()["cache"]["flushes"]
            feed = next(c for c in direct.client_list() if c["name"] == "madsidecar-cache-feed:a")
            direct.client_kill_filter(_id=feed["id"])
            cb.call("cache.set", {"key": "cfg", "value": "v2"})  # A never hears of it
            eventually(ca, "cfg", "v2")
            deadline = time.monotonic() + 10
            while not ca.stats()["cache"]["feed_live"] or ca.stats()["cache"]["flushes"] == flushes:
                assert time.monotonic() < deadline, a.log()
            warm_l1(ca, "cfg")
            cb.call("cache.set", {"key": "cfg", "value": "v3"})
            eventually(ca, "cfg", "v3")
        assert "event='cache_l1_off'" in a.log() and "event='cache_l1_on'" in a.log()
    finally:
        direct.close()
        a.stop()
        b.stop()


def test_hazard2_redis_restart(redis_server: RedisProcess) -> None:
    a = SidecarProcess(redis_server.url, extra_args=["--node-id", "a"]).start()
    b = SidecarProcess(redis_server.url, extra_args=["--node-id", "b"]).start()
    try:
        with a.client() as ca, b.client() as cb:
            cb.call("cache.set", {"key": "cfg", "value": "before"})
            warm_l1(ca, "cfg")
            redis_server.kill()
            redis_server.start()
            deadline = time.monotonic() + 10
            while True:
                try:
                    cb.call("cache.set", {"key": "cfg", "value": "after"})
                    break
                except Exception:
                    assert time.monotonic() < deadline  # B reconnects on its own
            eventually(ca, "cfg", "after", within=10)
            deadline = time.monotonic() + 10
            while not (ca.stats()["cache"]["feed_live"] and ca.stats()["cache"]["flushes"]):
                assert time.monotonic() < deadline, "L1 was not flushed and turned back on"
            warm_l1(ca, "cfg")
            assert cache_get(ca, "cfg")["value"] == "after"  # type: ignore[index]
    finally:
        a.stop()
        b.stop()


def test_history_checker_catches_a_stale_read() -> None:
    writes = {"k": [(0.0, 0.0, 0), (1.0, 1.01, 1), (2.0, 2.01, 2)]}
    fine = [("k", 1.05, 0), ("k", 1.5, 1), ("k", 2.05, 1), ("k", 3.0, 2)]
    assert check_history(writes, fine) == []
    stale = [("k", 1.2, 0), ("k", 2.5, 1)]
    assert check_history(writes, stale) == [("k", 0, 1.2), ("k", 1, 2.5)]
