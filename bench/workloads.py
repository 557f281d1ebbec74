"""What is measured: timing loops, a minimal raw client, and one function per workload.

Latency workloads return a list of round-trip times in ns (time.perf_counter_ns, one
sample per call, taken back to back so the loop itself is inside the figure). Throughput
workloads return (messages completed, elapsed ns) over a fixed duration. Every workload
opens its own connection, warms it up for `warmup_s`, then measures for `duration_s`.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import uvloop

HEADER = struct.Struct(">I")
NS = 1_000_000_000


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
    call: Callable[[], Awaitable[object]], tasks: int, warmup_s: float, duration_s: float
) -> tuple[int, int]:
    """`tasks` coroutines each awaiting `call` in a loop; completions inside the window."""
    state = {"stop": False, "counting": False, "count": 0}

    async def worker() -> None:
        while not state["stop"]:
            await call()
            if state["counting"]:
                state["count"] += 1

    workers = [asyncio.create_task(worker()) for _ in range(tasks)]
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
        await asyncio.gather(*workers)
    finally:
        for worker_task in workers:
            worker_task.cancel()
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
            return await aconcurrent_rate(call, tasks, warmup_s, duration_s)
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
            return await aconcurrent_rate(client.ping, tasks, warmup_s, duration_s)
        finally:
            await client.aclose()

    return uvloop.run(run())
