"""What is measured: timing loops, a minimal raw client, and one function per workload.

Latency workloads return a list of round-trip times in ns (time.perf_counter_ns, one
sample per call, taken back to back so the loop itself is inside the figure). Throughput
workloads return (messages completed, elapsed ns) over a fixed duration; the lock fairness
ones (acquisitions per waiter, elapsed ns, acquires timed out). Every workload opens its
own connection(s), warms up for `warmup_s`, then measures for `duration_s`.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgpack
import uvloop

HEADER = struct.Struct(">I")
NS = 1_000_000_000

# The cache rows read 100-byte values. The cache keys are names in the SDK's default
# namespace; REDIS_GET_KEY is redis-py's own key, outside the sidecar's prefix.
CACHE_VALUE = bytes(i % 251 for i in range(100))
L1_KEY = "bench:l1"
L2_KEY = "bench:l2:{}"
MEMORY_KEY = "bench:mem:{:07d}"
REDIS_GET_KEY = "bench:get:{}"
L1_READY_TIMEOUT_S = 5.0


class BenchError(RuntimeError):
    """A reply was wrong or missing: the figures of this run cannot be trusted."""


def _task_cpu_ns(pid: int) -> int:
    """CPU time of a process's main thread, in ns (/proc/PID/schedstat, first field)."""
    with open(f"/proc/{pid}/schedstat") as fh:
        return int(fh.read().split()[0])


class Meter:
    """CPU time spent by this process and by each server during the measured window only.

    Every loop below calls `begin()` after its warm-up and `end()` when time is up; the
    runner reads `cpu_ns` afterwards. Dividing by the messages of the window gives CPU per
    message on each side, which wakeup latency does not blur the way it blurs round trips.
    """

    def __init__(self) -> None:
        self.servers: dict[str, int] = {}  # name -> pid
        self.cpu_ns: dict[str, int] = {}
        self._start: dict[str, int] = {}

    def _read(self) -> dict[str, int]:
        now = {"client": time.process_time_ns()}
        for name, pid in self.servers.items():
            now[name] = _task_cpu_ns(pid)
        return now

    def begin(self) -> None:
        self.cpu_ns = {}
        self._start = self._read()

    def end(self) -> None:
        now = self._read()
        self.cpu_ns = {name: now[name] - self._start[name] for name in now}


METER = Meter()


# -- timing loops ----------------------------------------------------------------------


def _warm(fn: Callable[[], object], warmup_s: float, minimum: int = 100) -> None:
    end = time.perf_counter() + warmup_s
    done = 0
    while done < minimum or time.perf_counter() < end:
        fn()
        done += 1


def latency_loop(fn: Callable[[], object], warmup_s: float, duration_s: float) -> list[int]:
    _warm(fn, warmup_s)
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    METER.begin()
    now = clock()
    end = now + int(duration_s * NS)
    while now < end:
        fn()
        after = clock()
        append(after - now)
        now = after
    METER.end()
    return samples


def rate_loop(
    batch: Callable[[], object], size: int, warmup_s: float, duration_s: float
) -> tuple[int, int]:
    _warm(batch, warmup_s, minimum=10)
    clock = time.perf_counter_ns
    METER.begin()
    started = now = clock()
    end = now + int(duration_s * NS)
    batches = 0
    while now < end:
        batch()
        batches += 1
        now = clock()
    METER.end()
    return batches * size, now - started


async def _measured_window(
    workers: list[asyncio.Task[Any]],
    state: dict[str, Any],
    warmup_s: float,
    duration_s: float,
    drain_timeout_s: float | None,
) -> int:
    """Let running workers warm up, count only inside the measured window (they read
    state["counting"]), then tell them to stop (state["stop"]) and wait for them.
    Returns the window's length in ns."""
    try:
        await asyncio.sleep(warmup_s)
        METER.begin()
        state["counting"] = True
        started = time.perf_counter_ns()
        await asyncio.sleep(duration_s)
        state["counting"] = False
        elapsed = time.perf_counter_ns() - started
        METER.end()
        state["stop"] = True
        await asyncio.wait_for(asyncio.gather(*workers), drain_timeout_s)
    finally:
        for worker in workers:
            worker.cancel()
    return elapsed


async def _awarm(fn: Callable[[], Awaitable[object]], warmup_s: float, minimum: int) -> None:
    end = time.perf_counter() + warmup_s
    done = 0
    while done < minimum or time.perf_counter() < end:
        await fn()
        done += 1


async def alatency_loop(
    fn: Callable[[], Awaitable[object]], warmup_s: float, duration_s: float
) -> list[int]:
    await _awarm(fn, warmup_s, 100)
    clock = time.perf_counter_ns
    samples: list[int] = []
    append = samples.append
    METER.begin()
    now = clock()
    end = now + int(duration_s * NS)
    while now < end:
        await fn()
        after = clock()
        append(after - now)
        now = after
    METER.end()
    return samples


async def arate_loop(
    batch: Callable[[], Awaitable[object]], size: int, warmup_s: float, duration_s: float
) -> tuple[int, int]:
    await _awarm(batch, warmup_s, 10)
    clock = time.perf_counter_ns
    METER.begin()
    started = now = clock()
    end = now + int(duration_s * NS)
    batches = 0
    while now < end:
        await batch()
        batches += 1
        now = clock()
    METER.end()
    return batches * size, now - started


async def aconcurrent_rate(
    calls: Sequence[Callable[[], Awaitable[object]]], warmup_s: float, duration_s: float
) -> tuple[int, int]:
    """One coroutine per entry of `calls`, each awaiting its call in a loop; the calls
    completed inside the measured window."""
    state = {"stop": False, "counting": False, "count": 0}

    async def worker(call: Callable[[], Awaitable[object]]) -> None:
        while not state["stop"]:
            await call()
            if state["counting"]:
                state["count"] += 1

    workers = [asyncio.create_task(worker(call)) for call in calls]
    elapsed = await _measured_window(workers, state, warmup_s, duration_s, None)
    return int(state["count"]), elapsed


# -- a minimal blocking client ---------------------------------------------------------


class RawClient:
    """The least a blocking client can do: pack, one sendall, recv until the frames are in.

    The socket stays in plain blocking mode (no timeout, hence no poll() before each
    recv); the run's watchdog kills the servers if anything hangs, which ends the recv.
    """

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = bytearray()
        self.msgid = 0
        self.pack = msgpack.Packer(use_bin_type=True).pack

    def close(self) -> None:
        self.sock.close()

    def _frame(self, method: str) -> bytes:
        self.msgid = (self.msgid + 1) & 0xFFFFFFFF
        body = self.pack((0, self.msgid, method, ()))
        return HEADER.pack(len(body)) + body

    def ping(self) -> None:
        self.sock.sendall(self._frame("ping"))
        reply = self._read(1)[0]
        if reply[1] != self.msgid or reply[3] != "pong":
            raise BenchError(f"unexpected reply {reply!r}")

    def ping_pipeline(self, depth: int) -> None:
        first = (self.msgid + 1) & 0xFFFFFFFF
        self.sock.sendall(b"".join([self._frame("ping") for _ in range(depth)]))
        replies = self._read(depth)
        if replies[0][1] != first or replies[-1][1] != self.msgid:
            raise BenchError(f"replies out of order: {replies[0]!r} ... {replies[-1]!r}")
        for reply in replies:
            if reply[3] != "pong":
                raise BenchError(f"unexpected reply {reply!r}")

    def _read(self, count: int) -> list[Any]:
        buf = self.buf
        recv = self.sock.recv
        out: list[Any] = []
        pos = 0
        while True:
            while len(buf) - pos >= 4:
                (length,) = HEADER.unpack_from(buf, pos)
                end = pos + 4 + length
                if len(buf) < end:
                    break
                out.append(msgpack.unpackb(buf[pos + 4 : end], use_list=False))
                pos = end
            if len(out) >= count:
                del buf[:pos]
                return out
            data = recv(262144)
            if not data:
                raise BenchError("the server closed the connection")
            buf += data


def raw_latency(path: str, warmup_s: float, duration_s: float) -> list[int]:
    client = RawClient(path)
    try:
        return latency_loop(client.ping, warmup_s, duration_s)
    finally:
        client.close()


class _RawAioProtocol(asyncio.Protocol):
    """The least an asyncio client can do: one future per call, resolved from data_received
    once the reply's frame is in."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: asyncio.Future[Any] | None = None
        self._buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        if len(buffer) >= 4:
            (length,) = struct.unpack_from(">I", buffer)
            if len(buffer) >= 4 + length:
                reply = msgpack.unpackb(buffer[4 : 4 + length])
                self._buffer = buffer[4 + length :]
                if self.waiting is not None and not self.waiting.done():
                    self.waiting.set_result(reply)
                return
        self._buffer = buffer


def raw_aio_latency(path: str, warmup_s: float, duration_s: float) -> list[int]:
    """Ping round trips from the least an asyncio (uvloop) client can do: pack, write,
    await a future that data_received resolves. The asyncio counterpart of `raw_latency`."""

    async def run() -> list[int]:
        loop = asyncio.get_running_loop()
        transport, wire = await loop.create_unix_connection(_RawAioProtocol, path)
        msgid = 0

        async def ping() -> None:
            nonlocal msgid
            msgid += 1
            body = msgpack.packb([0, msgid, "ping", []])
            wire.waiting = loop.create_future()
            transport.write(struct.pack(">I", len(body)) + body)
            reply = await wire.waiting
            if reply[1] != msgid:
                raise BenchError(f"reply to {reply[1]}, expected {msgid}")

        try:
            return await alatency_loop(ping, warmup_s, duration_s)
        finally:
            transport.close()

    return uvloop.run(run())


def raw_pipeline(path: str, depth: int, warmup_s: float, duration_s: float) -> tuple[int, int]:
    client = RawClient(path)
    try:
        batch = functools.partial(client.ping_pipeline, depth)
        return rate_loop(batch, depth, warmup_s, duration_s)
    finally:
        client.close()


# -- the Python SDK --------------------------------------------------------------------


def blocking_latency(path: str, method: str, warmup_s: float, duration_s: float) -> list[int]:
    from madsidecar_client import BlockingClient

    with BlockingClient(path) as client:
        if client.call(method) is None:
            raise BenchError(f"{method} returned nothing")
        return latency_loop(functools.partial(client.call, method), warmup_s, duration_s)


def blocking_pipeline(path: str, depth: int, warmup_s: float, duration_s: float) -> tuple[int, int]:
    from madsidecar_client import BlockingClient

    calls: list[tuple[str, dict[str, Any] | None]] = [("ping", None)] * depth

    with BlockingClient(path) as client:

        def batch() -> None:
            if client.pipeline(calls).count("pong") != depth:
                raise BenchError("a pipelined ping did not answer pong")

        return rate_loop(batch, depth, warmup_s, duration_s)


def aio_latency(path: str, method: str, warmup_s: float, duration_s: float) -> list[int]:
    from madsidecar_client import Client

    async def run() -> list[int]:
        client = await Client.connect(path)
        try:
            if await client.call(method) is None:
                raise BenchError(f"{method} returned nothing")
            return await alatency_loop(functools.partial(client.call, method), warmup_s, duration_s)
        finally:
            await client.close()

    return uvloop.run(run())


def aio_pipeline(path: str, depth: int, warmup_s: float, duration_s: float) -> tuple[int, int]:
    from madsidecar_client import Client

    calls: list[tuple[str, dict[str, Any] | None]] = [("ping", None)] * depth

    async def run() -> tuple[int, int]:
        client = await Client.connect(path)

        async def batch() -> None:
            if (await client.pipeline(calls)).count("pong") != depth:
                raise BenchError("a pipelined ping did not answer pong")

        try:
            return await arate_loop(batch, depth, warmup_s, duration_s)
        finally:
            await client.close()

    return uvloop.run(run())


def aio_concurrent(
    path: str, method: str, tasks: int, warmup_s: float, duration_s: float
) -> tuple[int, int]:
    from madsidecar_client import Client

    async def run() -> tuple[int, int]:
        client = await Client.connect(path)
        try:
            call = functools.partial(client.call, method)
            return await aconcurrent_rate([call] * tasks, warmup_s, duration_s)
        finally:
            await client.close()

    return uvloop.run(run())


# -- redis-py, straight to Redis, for context ------------------------------------------


def _redis(path: str) -> Any:
    import redis.asyncio

    return redis.asyncio.Redis(unix_socket_path=path, socket_timeout=10)


def redis_latency(path: str, warmup_s: float, duration_s: float) -> list[int]:
    async def run() -> list[int]:
        client = _redis(path)
        try:
            if await client.ping() is not True:
                raise BenchError("redis PING did not answer")
            return await alatency_loop(client.ping, warmup_s, duration_s)
        finally:
            await client.aclose()

    return uvloop.run(run())


def redis_concurrent(path: str, tasks: int, warmup_s: float, duration_s: float) -> tuple[int, int]:
    async def run() -> tuple[int, int]:
        client = _redis(path)
        try:
            return await aconcurrent_rate([client.ping] * tasks, warmup_s, duration_s)
        finally:
            await client.aclose()

    return uvloop.run(run())


def redis_get_latency(path: str, warmup_s: float, duration_s: float) -> list[int]:
    """GET of one 100-byte value, sequential: what an L1 hit is held against."""

    async def run() -> list[int]:
        client = _redis(path)
        key = REDIS_GET_KEY.format(0)
        try:
            await client.set(key, CACHE_VALUE)
            if await client.get(key) != CACHE_VALUE:
                raise BenchError("redis GET did not return the value just SET")
            return await alatency_loop(functools.partial(client.get, key), warmup_s, duration_s)
        finally:
            await client.aclose()

    return uvloop.run(run())


def redis_get_concurrent(
    path: str, tasks: int, warmup_s: float, duration_s: float
) -> tuple[int, int]:
    """`tasks` tasks, each GETting its own 100-byte value in a loop, over redis-py's pool."""

    async def run() -> tuple[int, int]:
        client = _redis(path)
        keys = [REDIS_GET_KEY.format(i) for i in range(tasks)]
        try:
            await client.mset(dict.fromkeys(keys, CACHE_VALUE))
            if await client.get(keys[-1]) != CACHE_VALUE:
                raise BenchError("redis GET did not return the value just SET")
            calls = [functools.partial(client.get, key) for key in keys]
            return await aconcurrent_rate(calls, warmup_s, duration_s)
        finally:
            await client.aclose()

    return uvloop.run(run())


# -- the cache through the SDK ---------------------------------------------------------


def _cache_reads(stats: dict[str, Any]) -> tuple[int, int]:
    """(L1 hits, reads that went to Redis) from a `stats` answer."""
    cache = stats["cache"]
    return cache["l1_hits"], cache["l2_hits"] + cache["misses"]


def _check_l1_hits(before: tuple[int, int], after: tuple[int, int], measured: int) -> None:
    """Every measured call was an L1 hit (a stray invalidation may cost one or two)."""
    hits, others = after[0] - before[0], after[1] - before[1]
    if hits < measured or others * 100 > hits:
        raise BenchError(
            f"{measured:,} calls measured as L1 hits, but the sidecar counted {hits:,} L1 hits "
            f"and {others:,} reads from Redis"
        )


def _is_l1_hit(result: Any) -> bool:
    return isinstance(result, dict) and result.get("source") == "l1"


def _blocking_l1_ready(client: Any) -> Callable[[], Any]:
    """Set the key once, then read it until L1 answers (the first read after a set goes
    to Redis, and the set's own invalidation may still drop the entry it leaves)."""
    if client.call("cache.set", {"key": L1_KEY, "value": CACHE_VALUE}) != {"ok": True}:
        raise BenchError("cache.set failed")
    get = functools.partial(client.call, "cache.get", {"key": L1_KEY})
    deadline = time.monotonic() + L1_READY_TIMEOUT_S
    while not _is_l1_hit(get()):
        if time.monotonic() > deadline:
            raise BenchError("cache.get never answered from L1 (is the invalidation feed live?)")
        time.sleep(0.001)
    if get()["value"] != CACHE_VALUE:
        raise BenchError("cache.get returned another value than the one set")
    return get


async def _aio_l1_ready(client: Any) -> Callable[[], Awaitable[Any]]:
    if await client.call("cache.set", {"key": L1_KEY, "value": CACHE_VALUE}) != {"ok": True}:
        raise BenchError("cache.set failed")
    get = functools.partial(client.call, "cache.get", {"key": L1_KEY})
    deadline = time.monotonic() + L1_READY_TIMEOUT_S
    while not _is_l1_hit(await get()):
        if time.monotonic() > deadline:
            raise BenchError("cache.get never answered from L1 (is the invalidation feed live?)")
        await asyncio.sleep(0.001)
    if (await get())["value"] != CACHE_VALUE:
        raise BenchError("cache.get returned another value than the one set")
    return get


def blocking_l1_latency(path: str, warmup_s: float, duration_s: float) -> list[int]:
    from madsidecar_client import BlockingClient

    with BlockingClient(path) as client:
        get = _blocking_l1_ready(client)
        before = _cache_reads(client.stats())
        samples = latency_loop(get, warmup_s, duration_s)
        _check_l1_hits(before, _cache_reads(client.stats()), len(samples))
        return samples


def aio_l1_latency(path: str, warmup_s: float, duration_s: float) -> list[int]:
    from madsidecar_client import Client

    async def run() -> list[int]:
        client = await Client.connect(path)
        try:
            get = await _aio_l1_ready(client)
            before = _cache_reads(await client.stats())
            samples = await alatency_loop(get, warmup_s, duration_s)
            _check_l1_hits(before, _cache_reads(await client.stats()), len(samples))
            return samples
        finally:
            await client.close()

    return uvloop.run(run())


def blocking_l1_pipeline(
    path: str, depth: int, warmup_s: float, duration_s: float
) -> tuple[int, int]:
    from madsidecar_client import BlockingClient

    calls: list[tuple[str, dict[str, Any] | None]] = [("cache.get", {"key": L1_KEY})] * depth

    with BlockingClient(path) as client:
        _blocking_l1_ready(client)
        before = _cache_reads(client.stats())
        messages, elapsed = rate_loop(
            functools.partial(client.pipeline, calls), depth, warmup_s, duration_s
        )
        _check_l1_hits(before, _cache_reads(client.stats()), messages)
        return messages, elapsed


def aio_l1_pipeline(path: str, depth: int, warmup_s: float, duration_s: float) -> tuple[int, int]:
    from madsidecar_client import Client

    calls: list[tuple[str, dict[str, Any] | None]] = [("cache.get", {"key": L1_KEY})] * depth

    async def run() -> tuple[int, int]:
        client = await Client.connect(path)
        try:
            await _aio_l1_ready(client)
            before = _cache_reads(await client.stats())
            messages, elapsed = await arate_loop(
                functools.partial(client.pipeline, calls), depth, warmup_s, duration_s
            )
            _check_l1_hits(before, _cache_reads(await client.stats()), messages)
            return messages, elapsed
        finally:
            await client.close()

    return uvloop.run(run())


def aio_l2_concurrent(path: str, tasks: int, warmup_s: float, duration_s: float) -> tuple[int, int]:
    """`tasks` tasks, each `cache.get`ting its own key in a loop, over one connection to a
    sidecar whose L1 is off (l1_max_entries = 0): every read is an L2 read from Redis."""
    from madsidecar_client import Client

    async def run() -> tuple[int, int]:
        client = await Client.connect(path)
        keys = [L2_KEY.format(i) for i in range(tasks)]
        try:
            sets = [("cache.set", {"key": key, "value": CACHE_VALUE}) for key in keys]
            if any(result != {"ok": True} for result in await client.pipeline(sets)):
                raise BenchError("cache.set failed")
            first = await client.call("cache.get", {"key": keys[-1]})
            if first is None or first["source"] != "l2" or first["value"] != CACHE_VALUE:
                raise BenchError(f"expected an L2 hit with the value set, got {first!r:.200}")
            before = (await client.stats())["cache"]
            calls = [functools.partial(client.call, "cache.get", {"key": key}) for key in keys]
            messages, elapsed = await aconcurrent_rate(calls, warmup_s, duration_s)
            after = (await client.stats())["cache"]
            if after["l1_hits"] != before["l1_hits"] or (
                after["l2_hits"] - before["l2_hits"] < messages
            ):
                raise BenchError("the L2 row was answered from L1, or missed in Redis")
            return messages, elapsed
        finally:
            await client.close()

    return uvloop.run(run())


def load_l1(path: str, entries: int, batch: int) -> dict[str, Any]:
    """`cache.set` `entries` keys, then `cache.get` each so it enters L1, pipelined
    `batch` deep. Gets are repeated (at most 3 passes) until L1 holds them all: a set's
    own invalidation may land after the get that filled L1 and drop the entry."""
    from madsidecar_client import BlockingClient

    def chunks() -> list[list[str]]:
        names = [MEMORY_KEY.format(i) for i in range(entries)]
        return [names[i : i + batch] for i in range(0, entries, batch)]

    with BlockingClient(path) as client:
        started = time.perf_counter()
        for names in chunks():
            calls = [("cache.set", {"key": name, "value": CACHE_VALUE}) for name in names]
            if any(result != {"ok": True} for result in client.pipeline(calls)):
                raise BenchError("a cache.set of the memory load failed")
        set_s = time.perf_counter() - started
        started = time.perf_counter()
        passes = 0
        while True:
            passes += 1
            for names in chunks():
                calls = [("cache.get", {"key": name}) for name in names]
                for result in client.pipeline(calls):
                    if not isinstance(result, dict) or result["value"] != CACHE_VALUE:
                        raise BenchError(f"a cache.get of the memory load: {result!r:.200}")
            cache = client.stats()["cache"]
            if cache["l1_entries"] >= entries:
                break
            if passes == 3:
                raise BenchError(f"L1 holds {cache['l1_entries']:,} of {entries:,} entries")
        return {
            "entries": entries,
            "l1_entries": cache["l1_entries"],
            "l1_bytes": cache["l1_bytes"],
            "evictions": cache["evictions"],
            "set_s": round(set_s, 2),
            "get_s": round(time.perf_counter() - started, 2),
            "get_passes": passes,
        }


# -- locks -----------------------------------------------------------------------------
#
# Every lock row runs `tasks` (or `waiters`) coroutines in this process. A sidecar lock is
# `lock.acquire {name, ttl_ms: 30000, wait_ms, renew: true}` (renewal on, the default) and
# `lock.release {name, token}`; redis-py's is `redis.asyncio.lock.Lock` with the same TTL;
# pottery's is `Redlock` on one master. Each library gets its own key names.

LOCK_NAME = "bench:lock:{}"
REDIS_LOCK_NAME = "bench:rlock:{}"
POTTERY_LOCK_NAME = "bench:plock:{}"
LOCK_TTL_MS = 30_000
LOCK_WAIT_MS = 10_000  # a waiter's wait_ms: far longer than any wait these rows expect
LOCK_HOLD_S = 0.005  # fairness: every waiter holds the lock this long
WAKEUP_HOLD_S = 0.002  # wake-up: the holder keeps the lock this long once the other asks
REDIS_LOCK_SLEEP_S = 0.001  # redis-py Lock's poll interval in the fairness row (default 0.1)
LOCK_DRAIN_TIMEOUT_S = 30.0

# A lock's (acquire, release): acquire returns a handle for release, or None when it ran out
# of time without the lock.
Acquire = Callable[[], Awaitable[Any]]
Release = Callable[[Any], Awaitable[None]]


def _sidecar_lock(client: Any, name: str, wait_ms: int) -> tuple[Acquire, Release]:
    acquire_params = {"name": name, "ttl_ms": LOCK_TTL_MS, "wait_ms": wait_ms}

    async def acquire() -> str | None:
        got = await client.call("lock.acquire", acquire_params)
        return got["token"] if got["acquired"] else None

    async def release(token: str) -> None:
        if not (await client.call("lock.release", {"name": name, "token": token}))["released"]:
            raise BenchError(f"lock.release of {name!r} found the lock no longer held")

    return acquire, release


def _redis_lock(client: Any, name: str, sleep_s: float = 0.1) -> tuple[Acquire, Release]:
    lock = client.lock(name, timeout=LOCK_TTL_MS / 1000, sleep=sleep_s)

    async def acquire() -> bool | None:
        return True if await lock.acquire(blocking=True) else None

    async def release(_: object) -> None:
        await lock.release()

    return acquire, release


async def _lock_cycles(locks: Sequence[tuple[Acquire, Release]], warmup_s: float,
                       duration_s: float) -> tuple[int, int]:  # fmt: skip
    """One task per lock, each acquiring (no wait) and releasing it in a loop: completed
    acquire+release cycles in the measured window."""

    def cycle(acquire: Acquire, release: Release) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            handle = await acquire()
            if not handle:
                raise BenchError("an uncontended lock was not acquired")
            await release(handle)

        return run

    return await aconcurrent_rate([cycle(*lock) for lock in locks], warmup_s, duration_s)


def aio_lock_cycles(path: str, tasks: int, warmup_s: float, duration_s: float) -> tuple[int, int]:
    """`tasks` tasks over one connection, each on its own name: `lock.acquire` with
    wait_ms 0, then `lock.release`, in a loop."""
    from madsidecar_client import Client

    async def run() -> tuple[int, int]:
        client = await Client.connect(path)
        try:
            locks = [_sidecar_lock(client, LOCK_NAME.format(i), 0) for i in range(tasks)]
            return await _lock_cycles(locks, warmup_s, duration_s)
        finally:
            await client.close()

    return uvloop.run(run())


def aio_lock_cycles_pipelined(
    path: str, names: int, warmup_s: float, duration_s: float
) -> tuple[int, int]:
    """`lock.acquire` (wait_ms 0) of `names` names in one `Client.pipeline`, then their
    `lock.release`s in another, in a loop: a service locking a batch of resources."""
    from madsidecar_client import Client

    keys = [LOCK_NAME.format(f"p{i}") for i in range(names)]
    acquires: list[tuple[str, dict[str, Any] | None]] = [
        ("lock.acquire", {"name": key, "ttl_ms": LOCK_TTL_MS, "wait_ms": 0}) for key in keys
    ]

    async def run() -> tuple[int, int]:
        client = await Client.connect(path)

        async def batch() -> None:
            got = await client.pipeline(acquires)
            if not all(isinstance(g, dict) and g["acquired"] for g in got):
                raise BenchError(f"an uncontended lock was not acquired: {got!r:.200}")
            releases: list[tuple[str, dict[str, Any] | None]] = [
                ("lock.release", {"name": key, "token": g["token"]})
                for key, g in zip(keys, got, strict=True)
            ]
            if not all(
                isinstance(r, dict) and r["released"] for r in await client.pipeline(releases)
            ):
                raise BenchError("a pipelined lock.release found the lock no longer held")

        try:
            return await arate_loop(batch, names, warmup_s, duration_s)
        finally:
            await client.close()

    return uvloop.run(run())


def redis_lock_cycles(path: str, tasks: int, warmup_s: float, duration_s: float) -> tuple[int, int]:
    """`tasks` tasks over one `redis.asyncio.Redis` (its pool), each with a
    `redis.asyncio.lock.Lock` of its own name: `acquire(blocking=False)`, `release()`."""

    async def run() -> tuple[int, int]:
        client = _redis(path)
        try:
            locks = []
            for i in range(tasks):
                lock = client.lock(REDIS_LOCK_NAME.format(i), timeout=LOCK_TTL_MS / 1000)
                locks.append((functools.partial(lock.acquire, blocking=False), _release(lock)))
            return await _lock_cycles(locks, warmup_s, duration_s)
        finally:
            await client.aclose()

    return uvloop.run(run())


def _release(lock: Any) -> Release:
    async def release(_: object) -> None:
        await lock.release()

    return release


def pottery_lock_cycles(
    path: str, names: int, warmup_s: float, duration_s: float
) -> tuple[int, int]:
    """pottery's `Redlock` with one master (a synchronous `redis.Redis`), one thread going
    round `names` locks: `acquire(blocking=False)`, `release()`."""
    import redis
    from pottery import Redlock

    master = redis.Redis(unix_socket_path=path, socket_timeout=10)
    locks = [
        Redlock(key=POTTERY_LOCK_NAME.format(i), masters={master},
                auto_release_time=LOCK_TTL_MS / 1000)
        for i in range(names)
    ]  # fmt: skip
    turn = [0]

    def cycle() -> None:
        lock = locks[turn[0] % names]
        turn[0] += 1
        if not lock.acquire(blocking=False):
            raise BenchError("an uncontended pottery Redlock was not acquired")
        lock.release()

    try:
        return rate_loop(cycle, 1, warmup_s, duration_s)
    finally:
        master.close()


async def _fair_share(
    waiters: Sequence[tuple[Acquire, Release]], hold_s: float, warmup_s: float, duration_s: float
) -> tuple[list[int], int, int]:
    """Every waiter acquires the one lock (waiting), holds it `hold_s`, releases, repeats.
    (acquisitions per waiter in the measured window, elapsed ns, acquires that timed out).
    Fails if two waiters ever hold the lock at once."""
    state: dict[str, Any] = {"stop": False, "counting": False, "holder": None, "timeouts": 0}
    counts = [0] * len(waiters)

    async def waiter(me: int, acquire: Acquire, release: Release) -> None:
        while not state["stop"]:
            handle = await acquire()
            if handle is None:
                state["timeouts"] += 1
                continue
            if state["holder"] is not None:
                raise BenchError(f"waiters {state['holder']} and {me} hold the lock at once")
            state["holder"] = me
            if state["counting"]:
                counts[me] += 1
            await asyncio.sleep(hold_s)
            state["holder"] = None
            await release(handle)

    tasks = [asyncio.create_task(waiter(i, *pair)) for i, pair in enumerate(waiters)]
    elapsed = await _measured_window(tasks, state, warmup_s, duration_s, LOCK_DRAIN_TIMEOUT_S)
    return counts, elapsed, state["timeouts"]


def aio_lock_fairness(
    paths: Sequence[str], waiters: int, warmup_s: float, duration_s: float
) -> tuple[list[int], int, int]:
    """`waiters` connections (a Client each, spread round-robin over the sidecars of
    `paths`) on one name, each `lock.acquire` with wait_ms 10 s, hold 5 ms,
    `lock.release`, in a loop."""
    from madsidecar_client import Client

    async def run() -> tuple[list[int], int, int]:
        clients = [await Client.connect(paths[i % len(paths)]) for i in range(waiters)]
        try:
            name = LOCK_NAME.format(f"fair{len(paths)}")
            pairs = [_sidecar_lock(client, name, LOCK_WAIT_MS) for client in clients]
            return await _fair_share(pairs, LOCK_HOLD_S, warmup_s, duration_s)
        finally:
            for client in clients:
                await client.close()

    return uvloop.run(run())


def redis_lock_fairness(
    path: str, waiters: int, warmup_s: float, duration_s: float
) -> tuple[list[int], int, int]:
    """`waiters` tasks over one `redis.asyncio.Redis`, each with its own `Lock` object on one
    name, `sleep` = 1 ms (its poll interval), blocking without a timeout."""

    async def run() -> tuple[list[int], int, int]:
        client = _redis(path)
        try:
            name = REDIS_LOCK_NAME.format("fair")
            pairs = [_redis_lock(client, name, REDIS_LOCK_SLEEP_S) for _ in range(waiters)]
            return await _fair_share(pairs, LOCK_HOLD_S, warmup_s, duration_s)
        finally:
            await client.aclose()

    return uvloop.run(run())


async def _ping_pong(
    sides: tuple[tuple[Acquire, Release], tuple[Acquire, Release]],
    hold_s: float,
    warmup_s: float,
    duration_s: float,
) -> list[int]:
    """Two holders hand one lock back and forth. The holder lets the other ask (it waits),
    keeps the lock `hold_s` more, notes the time and releases; the other notes the time its
    acquire returns. One sample per hand-over: release sent -> next acquire returned, ns."""
    clock = time.perf_counter_ns
    state: dict[str, Any] = {"stop": False, "recording": False, "released_at": 0}
    may_ask = (asyncio.Event(), asyncio.Event())  # side i may ask: the other holds the lock
    samples: list[int] = []

    async def side(me: int, acquire: Acquire, release: Release) -> None:
        other = 1 - me
        if me == 1:
            await may_ask[me].wait()
        while True:
            handle = await acquire()
            acquired_at = clock()
            if handle is None:
                raise BenchError(f"a lock waiter ran out of its {LOCK_WAIT_MS} ms")
            if state["recording"] and state["released_at"]:
                samples.append(acquired_at - state["released_at"])
            state["released_at"] = 0
            may_ask[me].clear()
            may_ask[other].set()
            if state["stop"]:
                await release(handle)
                return
            await asyncio.sleep(hold_s)  # the other's acquire is waiting by now
            state["released_at"] = clock()
            await release(handle)
            await may_ask[me].wait()

    tasks = [asyncio.create_task(side(i, *pair)) for i, pair in enumerate(sides)]
    try:
        await asyncio.sleep(warmup_s)
        METER.begin()
        state["recording"] = True
        await asyncio.sleep(duration_s)
        state["recording"] = False
        METER.end()
        state["stop"] = True
        await asyncio.wait_for(asyncio.gather(*tasks), LOCK_DRAIN_TIMEOUT_S)
    finally:
        for task in tasks:
            task.cancel()
    return samples


def aio_lock_wakeup(first: str, second: str, warmup_s: float, duration_s: float) -> list[int]:
    """Two Clients, on sidecar `first` and sidecar `second` (the same one, or two nodes on
    one Redis), hand one lock back and forth with wait_ms 10 s: release -> acquired, ns."""
    from madsidecar_client import Client

    async def run() -> list[int]:
        a, b = await Client.connect(first), await Client.connect(second)
        try:
            name = LOCK_NAME.format("wakeup")
            sides = (_sidecar_lock(a, name, LOCK_WAIT_MS), _sidecar_lock(b, name, LOCK_WAIT_MS))
            return await _ping_pong(sides, WAKEUP_HOLD_S, warmup_s, duration_s)
        finally:
            await a.close()
            await b.close()

    return uvloop.run(run())


# -- sessions --------------------------------------------------------------------------
#
# A session as the gateway sees it: a user id and a small data map. redis-py reads the
# same record the way a service without the sidecar would: HGETALL of a hash.

SESSION_DATA = {"roles": ["reader", "writer"], "org": "acme", "plan": "pro"}
SESSION_HASH = "bench:session:h"


def _session_fields() -> dict[str, Any]:
    return {
        "sid": "s" * 22,
        "uid": "user-42",
        "data": msgpack.packb(SESSION_DATA),
        "created": 1_700_000_000_000,
        "seen": 1_700_000_000_000,
        "idle": 1_800_000,
        "abs": 1_700_604_800_000,
        "exp": 1_700_001_800_000,
    }


def redis_hgetall_latency(path: str, warmup_s: float, duration_s: float) -> list[int]:
    async def run() -> list[int]:
        client = _redis(path)
        try:
            await client.hset(SESSION_HASH, mapping=_session_fields())
            if len(await client.hgetall(SESSION_HASH)) != 8:
                raise BenchError("the session hash was not stored")
            return await alatency_loop(
                functools.partial(client.hgetall, SESSION_HASH), warmup_s, duration_s
            )
        finally:
            await client.aclose()

    return uvloop.run(run())


async def _session_l1_ready(client: Any) -> Callable[[], Awaitable[Any]]:
    """A fresh session, read until this node serves it from L1; then `session.get` of it
    (touch on, as a proxy validates; the touch interval keeps it an L1 hit)."""
    made = await client.call("session.create", {"user_id": "user-42", "data": SESSION_DATA})
    params = {"token": made["token"]}
    for _ in range(100):
        before = (await client.call("stats"))["sessions"]["l1_hits"]
        await client.call("session.get", params)
        if (await client.call("stats"))["sessions"]["l1_hits"] > before:
            break
    else:
        raise BenchError("the session never reached L1")

    async def get() -> Any:
        found = await client.call("session.get", params)
        if found is None:
            raise BenchError("the session was not found")
        return found

    return get


def aio_session_l1_latency(path: str, warmup_s: float, duration_s: float) -> list[int]:
    from madsidecar_client import Client

    async def run() -> list[int]:
        client = await Client.connect(path)
        try:
            return await alatency_loop(await _session_l1_ready(client), warmup_s, duration_s)
        finally:
            await client.close()

    return uvloop.run(run())


def redis_hgetall_concurrent(
    path: str, tasks: int, warmup_s: float, duration_s: float
) -> tuple[int, int]:
    async def run() -> tuple[int, int]:
        client = _redis(path)
        try:
            await client.hset(SESSION_HASH, mapping=_session_fields())
            calls = [functools.partial(client.hgetall, SESSION_HASH)] * tasks
            return await aconcurrent_rate(calls, warmup_s, duration_s)
        finally:
            await client.aclose()

    return uvloop.run(run())


def aio_session_l1_concurrent(
    path: str, tasks: int, warmup_s: float, duration_s: float
) -> tuple[int, int]:
    from madsidecar_client import Client

    async def run() -> tuple[int, int]:
        client = await Client.connect(path)
        try:
            get = await _session_l1_ready(client)
            before = (await client.call("stats"))["sessions"]["reads"]
            done = await aconcurrent_rate([get] * tasks, warmup_s, duration_s)
            reads = (await client.call("stats"))["sessions"]["reads"] - before
            if reads > done[0] // 100:
                raise BenchError(f"{reads} of the session.get calls went to Redis")
            return done
        finally:
            await client.close()

    return uvloop.run(run())


def aio_session_revoke(first: str, second: str, warmup_s: float, duration_s: float) -> list[int]:
    """Create on `first`, read on `second` until its L1 holds the session, revoke on
    `first`: from the revoke's reply to `second` answering nil, ns per trial."""
    from madsidecar_client import Client

    async def run() -> list[int]:
        a, b = await Client.connect(first), await Client.connect(second)
        samples: list[int] = []
        clock = time.perf_counter_ns
        try:
            started = time.monotonic()
            while time.monotonic() - started < warmup_s + duration_s:
                made = await a.call("session.create", {"user_id": "user-42"})
                params = {"token": made["token"], "touch": False}
                for _ in range(3):
                    if await b.call("session.get", params) is None:
                        raise BenchError("the session is not seen on the second node")
                await a.call("session.revoke", {"token": made["token"]})
                revoked = clock()
                while await b.call("session.get", params) is not None:
                    if clock() - revoked > 5_000_000_000:
                        raise BenchError("a revoke did not reach the second node in 5 s")
                if time.monotonic() - started >= warmup_s:
                    samples.append(clock() - revoked)
            return samples
        finally:
            await a.close()
            await b.close()

    return uvloop.run(run())


# -- presence and pub/sub -----------------------------------------------------------------

PRESENCE_CHANNELS = 100
PRESENCE_BATCH = 200
PRESENCE_CONNECTIONS = 10


def load_presence(
    path: str,
    watcher_path: str,
    entries: int,
    trials: int,
    measure_rss: Callable[[], dict[str, Any]],
) -> dict[str, Any]:
    """On a fresh sidecar: join-to-diff latency to a watcher on another node (`trials`
    sequential tracks), then `entries` entries tracked over PRESENCE_CONNECTIONS
    connections and PRESENCE_CHANNELS channels (pipelined), Redis commands per heartbeat
    with all of them held, and untracking them all."""
    from madsidecar_client import Client

    async def run() -> dict[str, Any]:
        clients = [await Client.connect(path) for _ in range(PRESENCE_CONNECTIONS)]
        watcher = await Client.connect(watcher_path)
        try:
            latency = await _join_to_diff(clients[0], watcher, trials)
            tracked, track_s = await _track_all(clients, entries)
            per_heartbeat = await _commands_per_heartbeat(clients[0])
            rss = measure_rss()  # with every entry held
            untrack_s = await _untrack_all(clients, tracked)
            return {
                "join_to_diff_ns": latency,
                "tracked": sum(len(refs) for refs in tracked),
                "track_per_s": round(entries / track_s),
                "untrack_per_s": round(entries / untrack_s),
                **rss,
                **per_heartbeat,
            }
        finally:
            for client in [*clients, watcher]:
                await client.close()

    return uvloop.run(run())


async def _join_to_diff(tracker: Any, watcher: Any, trials: int) -> list[int]:
    arrived: asyncio.Queue[int] = asyncio.Queue()
    watcher.on("presence.diff", lambda note: arrived.put_nowait(time.perf_counter_ns()))
    await watcher.call("presence.subscribe", {"channel": "bench:latency"})
    samples = []
    for i in range(trials):
        sent = time.perf_counter_ns()
        reply = await tracker.call("presence.track", {"channel": "bench:latency", "key": f"u{i}"})
        samples.append(await asyncio.wait_for(arrived.get(), 5) - sent)
        await tracker.call("presence.untrack", {"channel": "bench:latency", "ref": reply["ref"]})
        await asyncio.wait_for(arrived.get(), 5)
    return samples


async def _track_all(clients: list[Any], entries: int) -> tuple[list[list[str]], float]:
    per_client = entries // len(clients)

    async def fill(index: int, client: Any) -> list[str]:
        refs: list[str] = []
        for start in range(0, per_client, PRESENCE_BATCH):
            calls: list[tuple[str, dict[str, Any] | None]] = [
                ("presence.track", {
                    "channel": f"bench:room{(start + i) % PRESENCE_CHANNELS}",
                    "key": f"user{index}-{start + i}",
                    "meta": {"status": "online"},
                })
                for i in range(min(PRESENCE_BATCH, per_client - start))
            ]  # fmt: skip
            for result in await client.pipeline(calls):
                if not isinstance(result, dict):
                    raise BenchError(f"presence.track failed: {result}")
                refs.append(result["ref"])
        return refs

    started = time.perf_counter()
    tracked = await asyncio.gather(*(fill(i, c) for i, c in enumerate(clients)))
    return list(tracked), time.perf_counter() - started


async def _commands_per_heartbeat(client: Any) -> dict[str, Any]:
    before = await client.call("stats")
    await asyncio.sleep(1.5)
    after = await client.call("stats")
    beats = after["presence"]["heartbeats"] - before["presence"]["heartbeats"]
    commands = after["redis"]["commands"] - before["redis"]["commands"]
    if beats <= 0:
        raise BenchError("no presence heartbeat in 1.5 s")
    return {
        "heartbeats": beats,
        "redis_commands": commands,
        "commands_per_heartbeat": round(commands / beats, 2),
        "held": after["presence"]["tracked"],
    }


async def _untrack_all(clients: list[Any], tracked: list[list[str]]) -> float:
    async def empty(client: Any, refs: list[str]) -> None:
        for start in range(0, len(refs), PRESENCE_BATCH):
            calls: list[tuple[str, dict[str, Any] | None]] = [
                ("presence.untrack", {"channel": f"bench:room{(start + i) % PRESENCE_CHANNELS}",
                                      "ref": ref})
                for i, ref in enumerate(refs[start : start + PRESENCE_BATCH])
            ]  # fmt: skip
            for result in await client.pipeline(calls):
                if result != {"removed": True}:
                    raise BenchError(f"presence.untrack failed: {result}")

    started = time.perf_counter()
    await asyncio.gather(*(empty(c, refs) for c, refs in zip(clients, tracked, strict=True)))
    return time.perf_counter() - started


def aio_pubsub_fanout(
    path: str, subscribers: int, warmup_s: float, duration_s: float
) -> tuple[int, int]:
    """`subscribers` Clients subscribed to one channel on the sidecar, one publisher
    publishing 100-byte messages 16 at a time: messages delivered (all subscribers)."""
    from madsidecar_client import Client

    async def run() -> tuple[int, int]:
        clients = [await Client.connect(path) for _ in range(subscribers)]
        publisher = await Client.connect(path)
        delivered = [0]

        def count(note: Any) -> None:
            delivered[0] += 1

        try:
            for client in clients:
                client.on("pubsub.message", count)
                await client.call("pubsub.subscribe", {"channel": "bench:fanout"})
            calls: list[tuple[str, dict[str, Any] | None]] = [
                ("pubsub.publish", {"channel": "bench:fanout", "message": CACHE_VALUE})
            ] * 16
            stop = asyncio.Event()

            async def publish() -> None:
                while not stop.is_set():
                    await publisher.pipeline(calls)

            task = asyncio.create_task(publish())
            await asyncio.sleep(warmup_s)
            start_count, started = delivered[0], time.perf_counter_ns()
            METER.begin()
            await asyncio.sleep(duration_s)
            METER.end()
            done, elapsed = delivered[0] - start_count, time.perf_counter_ns() - started
            stop.set()
            await task
            return done, elapsed
        finally:
            for client in [*clients, publisher]:
                await client.close()

    return uvloop.run(run())


def redis_pubsub_fanout(
    path: str, subscribers: int, warmup_s: float, duration_s: float
) -> tuple[int, int]:
    """The same fan-out straight through Redis: `subscribers` redis-py asyncio PubSub
    connections on one channel, one publisher pipelining PUBLISH 16 at a time."""

    async def run() -> tuple[int, int]:
        publisher = _redis(path)
        readers = [_redis(path) for _ in range(subscribers)]
        pubsubs = [reader.pubsub() for reader in readers]
        delivered = [0]
        stop = asyncio.Event()

        async def receive(pubsub: Any) -> None:
            while not stop.is_set():
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if message is not None:
                    delivered[0] += 1

        async def publish() -> None:
            while not stop.is_set():
                pipe = publisher.pipeline(transaction=False)
                for _ in range(16):
                    pipe.publish("bench:rfanout", CACHE_VALUE)
                await pipe.execute()

        try:
            for pubsub in pubsubs:
                await pubsub.subscribe("bench:rfanout")
            tasks = [asyncio.create_task(receive(p)) for p in pubsubs]
            tasks.append(asyncio.create_task(publish()))
            await asyncio.sleep(warmup_s)
            start_count, started = delivered[0], time.perf_counter_ns()
            METER.begin()
            await asyncio.sleep(duration_s)
            METER.end()
            done, elapsed = delivered[0] - start_count, time.perf_counter_ns() - started
            stop.set()
            await asyncio.gather(*tasks)
            return done, elapsed
        finally:
            for pubsub in pubsubs:
                await pubsub.aclose()
            for client in [publisher, *readers]:
                await client.aclose()

    return uvloop.run(run())


# -- rate limits ---------------------------------------------------------------------------

# Every caller has its own key with room for every hit it makes (a bench that hit its limit
# would measure denials, which the sidecar answers without Redis); each hit is checked.
RATE_KEY = "bench:rl:{}"
RATE_LIMIT = 10_000
RATE_WINDOW_MS = 1000
RATE_FLOOD_KEY = "bench:rl:flood"


def _limits_moving_window(path: str) -> tuple[Any, Any, Any]:
    """The `limits` library's moving window on its async redis-py storage."""
    from limits import RateLimitItemPerSecond
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import MovingWindowRateLimiter

    storage = RedisStorage(f"async+redis+unix://{path}", implementation="redispy")
    return MovingWindowRateLimiter(storage), RateLimitItemPerSecond(RATE_LIMIT), storage


def _limits_hit(limiter: Any, item: Any, key: str, expect: bool) -> Callable[[], Awaitable[None]]:
    async def hit() -> None:
        if await limiter.hit(item, key) is not expect:
            outcome = "allowed" if expect else "denied"
            raise BenchError(f"limits: a hit of {key!r} was not {outcome}")

    return hit


def _sidecar_hit(
    client: Any,
    key: str,
    expect: bool,
    algorithm: str = "sliding_window",
    limit: int = RATE_LIMIT,
    window_ms: int = RATE_WINDOW_MS,
) -> Callable[[], Awaitable[None]]:
    params = {"key": key, "limit": limit, "window_ms": window_ms, "algorithm": algorithm}

    async def hit() -> None:
        if (await client.call("ratelimit.hit", params))["allowed"] is not expect:
            raise BenchError(f"a hit of {key!r} was not {'allowed' if expect else 'denied'}")

    return hit


def _seq_keys(stem: str) -> list[str]:
    """One caller's keys, taken in turn: one key alone would pass its limit per second."""
    return [RATE_KEY.format(f"{stem}{i}") for i in range(8)]


def _round_robin(calls: list[Callable[[], Awaitable[None]]]) -> Callable[[], Awaitable[None]]:
    turn = iter(range(1 << 62))

    async def call() -> None:
        await calls[next(turn) % len(calls)]()

    return call


def limits_hits(path: str, tasks: int, warmup_s: float, duration_s: float) -> tuple[int, int]:
    """`tasks` tasks, each `hit`ting its own key with limits' moving window."""

    async def run() -> tuple[int, int]:
        limiter, item, storage = _limits_moving_window(path)
        calls = [_limits_hit(limiter, item, RATE_KEY.format(f"l{i}"), True) for i in range(tasks)]
        try:
            return await aconcurrent_rate(calls, warmup_s, duration_s)
        finally:
            await storage.reset()

    return uvloop.run(run())


def limits_latency(path: str, warmup_s: float, duration_s: float) -> list[int]:
    async def run() -> list[int]:
        limiter, item, storage = _limits_moving_window(path)
        try:
            hits = [_limits_hit(limiter, item, key, True) for key in _seq_keys("lseq")]
            return await alatency_loop(_round_robin(hits), warmup_s, duration_s)
        finally:
            await storage.reset()

    return uvloop.run(run())


def limits_denied(path: str, tasks: int, warmup_s: float, duration_s: float) -> tuple[int, int]:
    """`tasks` tasks hitting one key that is over its limit (1 per hour), with limits."""
    from limits import RateLimitItemPerHour

    async def run() -> tuple[int, int]:
        limiter, _, storage = _limits_moving_window(path)
        item = RateLimitItemPerHour(1)
        await limiter.hit(item, RATE_FLOOD_KEY)
        try:
            calls = [_limits_hit(limiter, item, RATE_FLOOD_KEY, False)] * tasks
            return await aconcurrent_rate(calls, warmup_s, duration_s)
        finally:
            await storage.reset()

    return uvloop.run(run())


def aio_rate_hits(
    path: str, tasks: int, algorithm: str, warmup_s: float, duration_s: float
) -> tuple[int, int]:
    """`tasks` tasks over one connection, each `ratelimit.hit`ting its own key."""
    from madsidecar_client import Client

    async def run() -> tuple[int, int]:
        client = await Client.connect(path)
        keys = [RATE_KEY.format(f"{algorithm}{i}") for i in range(tasks)]
        try:
            calls = [_sidecar_hit(client, key, True, algorithm) for key in keys]
            return await aconcurrent_rate(calls, warmup_s, duration_s)
        finally:
            for key in keys:
                await client.call("ratelimit.reset", {"key": key})
            await client.close()

    return uvloop.run(run())


def aio_rate_latency(path: str, warmup_s: float, duration_s: float) -> list[int]:
    from madsidecar_client import Client

    async def run() -> list[int]:
        client = await Client.connect(path)
        try:
            hits = [_sidecar_hit(client, key, True) for key in _seq_keys("seq")]
            return await alatency_loop(_round_robin(hits), warmup_s, duration_s)
        finally:
            for key in _seq_keys("seq"):
                await client.call("ratelimit.reset", {"key": key})
            await client.close()

    return uvloop.run(run())


def aio_rate_denied(path: str, tasks: int, warmup_s: float, duration_s: float) -> tuple[int, int]:
    """`tasks` tasks hitting one key over its limit: the node answers from its remembered
    denial. Fails if more than 1 % of the hits reached Redis."""
    from madsidecar_client import Client

    async def run() -> tuple[int, int]:
        client = await Client.connect(path)
        try:
            await client.call(
                "ratelimit.hit", {"key": RATE_FLOOD_KEY, "limit": 1, "window_ms": 3_600_000}
            )
            denied = _sidecar_hit(client, RATE_FLOOD_KEY, False, limit=1, window_ms=3_600_000)
            before = (await client.call("stats"))["ratelimit"]
            done = await aconcurrent_rate([denied] * tasks, warmup_s, duration_s)
            after = (await client.call("stats"))["ratelimit"]
            asked = (after["checks"] - before["checks"]) - (
                after["denied_locally"] - before["denied_locally"]
            )
            if asked > done[0] // 100:
                raise BenchError(f"{asked} of the denied hits went to Redis")
            return done
        finally:
            await client.call("ratelimit.reset", {"key": RATE_FLOOD_KEY})
            await client.close()

    return uvloop.run(run())
