"""Dispatch semantics in-process: ordering, backpressure, release on close, INTERNAL."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from madsidecar.config import Config
from madsidecar.methods import Arg, CapabilityBase, Client, Method, MethodTable
from madsidecar.server import Server
from madsidecar_client import BadRequestError, InternalError, ShuttingDownError
from madsidecar_client import Client as SdkClient

from .support import short_tempdir


class Recorder(CapabilityBase):
    """A test capability whose handlers record when they start and finish."""

    group = "test"

    def __init__(self) -> None:
        self.finished: list[Any] = []
        self.started = 0
        self.gate = asyncio.Event()
        self.closed_connections: list[int] = []
        self.progress = asyncio.Condition()
        self.released = asyncio.Event()

    async def _note_start(self) -> None:
        async with self.progress:
            self.started += 1
            self.progress.notify_all()

    async def wait_started(self, count: int) -> None:
        async with self.progress:
            await self.progress.wait_for(lambda: self.started >= count)

    def methods(self) -> Iterable[Method]:
        return (
            Method(
                "test.op",
                self.op,
                (Arg("key", "name"), Arg("delay_ms", "int", 0), Arg("tag", "any", None)),
                ordered_by="key",
            ),
            Method("test.peek", self.peek, (Arg("key", "name"),), ordered_by="key"),
            Method("test.gated", self.gated),
            Method("test.boom", self.boom),
            Method("test.big", self.big, (Arg("size", "int"),)),
        )

    async def op(self, client: Client, args: dict[str, Any]) -> Any:
        await self._note_start()
        await asyncio.sleep(args["delay_ms"] / 1000)
        self.finished.append(args["tag"])
        return args["tag"]

    def peek(self, client: Client, args: dict[str, Any]) -> list[Any]:
        return list(self.finished)

    async def gated(self, client: Client, args: dict[str, Any]) -> str:
        await self._note_start()
        await self.gate.wait()
        return "through"

    def big(self, client: Client, args: dict[str, Any]) -> str:
        return "x" * args["size"]

    def boom(self, client: Client, args: dict[str, Any]) -> None:
        raise RuntimeError("a bug")

    def connection_closed(self, client: Client) -> None:
        self.closed_connections.append(client.conn_id)
        self.released.set()


@pytest.fixture
async def served() -> AsyncIterator[tuple[Server, Recorder, str]]:
    directory = short_tempdir()
    path = os.path.join(directory, "s.sock")
    recorder = Recorder()
    table = MethodTable()
    for method in recorder.methods():
        table.register(method)
    config = Config(socket=path, max_inflight=4, max_frame_bytes=64 * 1024)
    server = Server(config, table, [recorder])
    await server.listen()
    try:
        yield server, recorder, path
    finally:
        recorder.gate.set()
        await server.drain(1.0)
        shutil.rmtree(directory, ignore_errors=True)


async def test_same_key_in_arrival_order_other_keys_overlap(
    served: tuple[Server, Recorder, str],
) -> None:
    _, recorder, path = served
    async with SdkClient(path) as client:
        results = await client.pipeline(
            [
                ("test.op", {"key": "a", "delay_ms": 80, "tag": "a1"}),
                ("test.op", {"key": "a", "delay_ms": 0, "tag": "a2"}),
                ("test.op", {"key": "b", "delay_ms": 0, "tag": "b1"}),
            ]
        )
    assert results == ["a1", "a2", "b1"]
    assert recorder.finished.index("a1") < recorder.finished.index("a2")
    assert recorder.finished.index("b1") < recorder.finished.index("a1"), "b did not wait for a"


async def test_inline_handler_waits_for_earlier_requests_on_its_key(
    served: tuple[Server, Recorder, str],
) -> None:
    _, _, path = served
    async with SdkClient(path) as client:
        results = await client.pipeline(
            [
                ("test.op", {"key": "a", "delay_ms": 50, "tag": "a1"}),
                ("test.peek", {"key": "a"}),
                ("test.peek", {"key": "b"}),
            ]
        )
    assert results[1] == ["a1"], "read-your-writes: the peek on 'a' saw the op on 'a'"
    assert results[2] == [], "a peek on another key did not wait"


async def test_reading_pauses_at_max_inflight(served: tuple[Server, Recorder, str]) -> None:
    _, recorder, path = served
    async with SdkClient(path) as client, SdkClient(path) as other:
        calls = [asyncio.ensure_future(client.call("test.gated")) for _ in range(10)]
        await recorder.wait_started(4)
        # A round trip on another connection lets the server run every ready callback.
        await other.call("test.op", {"key": "x"})
        assert recorder.started == 5, "4 gated (max_inflight) + the other connection's op"
        recorder.gate.set()
        assert await asyncio.gather(*calls) == ["through"] * 10


async def test_handler_bug_is_internal_with_error_id_in_the_log(
    served: tuple[Server, Recorder, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from madsidecar.logs import configure_logging

    configure_logging("info", "kv")
    _, _, path = served
    async with SdkClient(path) as client:
        with pytest.raises(InternalError) as caught:
            await client.call("test.boom")
        assert await client.call("test.op", {"key": "k"}) is None, "connection still serves"
    error_id = caught.value.error_id
    assert error_id and error_id in capsys.readouterr().err


async def test_closing_a_connection_releases_what_it_owns(
    served: tuple[Server, Recorder, str],
) -> None:
    server, recorder, path = served
    client = await SdkClient.connect(path)
    await client.call("test.op", {"key": "k"})
    [conn_id] = list(server.connections)
    await client.close()
    await asyncio.wait_for(recorder.released.wait(), 5)
    assert recorder.closed_connections == [conn_id]


async def test_drain_refuses_what_outlives_the_deadline(
    served: tuple[Server, Recorder, str],
) -> None:
    server, recorder, path = served
    client = await SdkClient.connect(path, reconnect=False)
    notes: list[str] = []
    client.on("shutdown", lambda note: notes.append(note.name))
    pending = asyncio.ensure_future(client.call("test.gated"))
    await recorder.wait_started(1)
    await server.drain(0.05)
    with pytest.raises(ShuttingDownError):
        await pending
    assert notes == ["shutdown"]
    await client.close()


async def test_a_result_over_max_frame_bytes_is_refused_not_sent(
    served: tuple[Server, Recorder, str],
) -> None:
    _, _, path = served
    async with SdkClient(path) as client:
        assert len(await client.call("test.big", {"size": 60_000})) == 60_000
        with pytest.raises(BadRequestError, match="exceeds max_frame_bytes"):
            await client.call("test.big", {"size": 70_000})
        assert await client.call("test.op", {"key": "k"}) is None


def test_arguments_accepted_inline_always_pass_the_full_check() -> None:
    """`Method.bind` skips an argument's check for common values: every value it lets
    through that way must be one the check accepts, for every argument of every method."""
    from madsidecar.app import build_capabilities
    from madsidecar.config import MAX_NAME_BYTES
    from madsidecar.redis_gateway import RedisGateway, redis_settings

    config = Config()
    gateway = RedisGateway(redis_settings(config, "unix:///nonexistent"))
    server = Server(config, MethodTable(), [])
    methods = [
        method
        for capability in build_capabilities(config, gateway, server, dict, embedded_redis=False)
        for method in capability.methods()
    ]
    values: list[Any] = [
        None, True, False, 0, 1, -1, 9, 10, 64, 65, 2**40, 2**40 + 1, 2**64, -(2**64), 1.5,
        "", "a", "é" * (MAX_NAME_BYTES // 4), "é" * (MAX_NAME_BYTES // 2 + 1),
        "x" * (MAX_NAME_BYTES + 1), b"bytes", [], ["a"], {}, {"k": 1},
    ]  # fmt: skip
    values += [
        bound for method in methods for arg in method.args
        for bound in (arg.minimum, arg.maximum) if bound is not None
        for bound in (bound - 1, bound, bound + 1)
    ]  # fmt: skip
    accepted = 0
    for method in methods:
        for arg in method.args:
            for value in values:
                if arg.accepts_at_once(value):
                    accepted += 1
                    arg.check(method.name, value)  # raises BadRequest if it slipped through
    assert accepted > 0
