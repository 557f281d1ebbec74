"""The request path leaves no reference cycles behind.

Objects in a cycle outlive their request until the cyclic garbage collector finds them,
and its passes over everything the sidecar holds stall every connection. A cycle made
per request cost a tenth of the sidecar's time at 50k rate-limit checks a second
(docs/performance.md). The sidecar runs in this process so that the collector's findings
can be inspected; the Python SDK, its client here, is held to the same bar.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from madsidecar.app import Sidecar
from madsidecar.config import load_config
from madsidecar_client import Client, ServerError

from .support import START_TIMEOUT_S, NotifyListener, RedisProcess, short_tempdir

ROUNDS = 20
CONCURRENT = 8


@pytest.fixture
async def in_process_sidecar(
    redis_server: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[str]:
    directory = short_tempdir("msc-gc-")
    socket_path = os.path.join(directory, "madsidecar.sock")
    notify = NotifyListener(directory)
    notify.sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", notify.path)
    config = load_config({"socket": socket_path, "redis_url": redis_server.url}, {})
    sidecar = Sidecar(config)
    running = asyncio.create_task(sidecar.run())
    try:
        async with asyncio.timeout(START_TIMEOUT_S):
            loop = asyncio.get_running_loop()
            while b"READY=1" not in (await loop.sock_recv(notify.sock, 4096)).splitlines():
                assert not running.done(), "the sidecar stopped while starting"
        yield socket_path
    finally:
        notify.close()
        sidecar.request_stop()
        await asyncio.wait_for(running, START_TIMEOUT_S)


async def every_method(client: Client, i: int) -> None:
    """One round of each method's common paths, answers and refusals both."""
    call = client.call
    await call("ping", {})
    await call("stats", {})
    await call("health", {})
    await call("cache.set", {"key": f"k{i}", "value": b"v" * 100, "ttl_ms": 60_000})
    await call("cache.get", {"key": f"k{i}"})
    await call("cache.get", {"key": f"k{i}"})
    await call("cache.get", {"key": "never-set"})
    await call("cache.mget", {"keys": [f"k{i}", "never-set"]})
    fetched = await call("cache.fetch", {"key": f"f{i}", "ttl_ms": 60_000})
    await call("cache.fill", {"key": f"f{i}", "lease": fetched["lease"], "value": 1})
    await call("cache.delete", {"keys": [f"k{i}"]})
    await call("cache.invalidate", {"prefix": f"f{i}"})
    lock = await call("lock.acquire", {"name": f"l{i}", "ttl_ms": 10_000})
    await call("lock.acquire", {"name": f"l{i}", "ttl_ms": 10_000})
    await call("lock.extend", {"name": f"l{i}", "token": lock["token"], "ttl_ms": 10_000})
    await call("lock.inspect", {"name": f"l{i}"})
    await call("lock.release", {"name": f"l{i}", "token": lock["token"]})
    created = await call("session.create", {"user_id": f"u{i}", "data": {"n": i}})
    await call("session.get", {"token": created["token"]})
    await call("session.update", {"token": created["token"], "data": {"n": -i}})
    await call("session.list", {"user_id": f"u{i}"})
    await call("session.revoke", {"token": created["token"]})
    tracked = await call("presence.track", {"channel": "room", "key": f"u{i}", "meta": {}})
    await call("presence.update", {"channel": "room", "ref": tracked["ref"], "meta": {"a": 1}})
    await call("presence.list", {"channel": "room"})
    await call("presence.untrack", {"channel": "room", "ref": tracked["ref"]})
    await call("pubsub.publish", {"channel": "news", "message": i})
    for algorithm in ("sliding_window", "sliding_counter", "gcra"):
        check = {"key": f"r{i}", "limit": 5, "window_ms": 60_000, "algorithm": algorithm}
        await call("ratelimit.hit", check)
        await call("ratelimit.peek", check)
    spent = {"key": f"b{i}", "limit": 1, "window_ms": 60_000}
    pair = [{"key": f"a{i}", "limit": 5, "window_ms": 60_000}, spent]
    await call("ratelimit.hit_many", {"checks": pair})
    await call("ratelimit.hit_many", {"checks": pair})  # denied: b is spent
    await call("ratelimit.hit", spent)  # answered from the node's remembered denial
    with pytest.raises(ServerError):
        await call("lock.acquire", {"name": "", "ttl_ms": -1})
    with pytest.raises(ServerError):
        await call("no.such.method", {})


async def run_rounds(body: Callable[[int], Awaitable[None]], first: int) -> None:
    for round_ in range(ROUNDS):
        start = first + round_ * CONCURRENT
        await asyncio.gather(*(body(start + j) for j in range(CONCURRENT)))


def described(garbage: list[Any]) -> collections.Counter[str]:
    """What the collector found, by type; functions by where they were defined."""
    return collections.Counter(
        f"function {o.__module__}.{o.__qualname__}"
        if inspect.isfunction(o)
        else f"{type(o).__module__}.{type(o).__qualname__}"
        for o in garbage
    )


async def test_requests_of_every_method_leave_no_reference_cycles(
    in_process_sidecar: str,
) -> None:
    client = await Client.connect(in_process_sidecar)
    listener = await Client.connect(in_process_sidecar)
    await listener.call("pubsub.subscribe", {"channel": "news"})
    await listener.call("presence.subscribe", {"channel": "room"})

    async def body(i: int) -> None:
        await every_method(client, i)

    try:
        await run_rounds(body, 0)  # warm: scripts loaded, caches and pools filled
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            await run_rounds(body, 10_000)
            gc.collect()
            found = described(gc.garbage)
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
    finally:
        await client.close()
        await listener.close()
    # The whole process: the sidecar, and the Python SDK on the other side of the socket.
    assert not found, f"objects left in reference cycles: {found.most_common(20)}"
