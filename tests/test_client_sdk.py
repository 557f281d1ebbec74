"""The Python SDK: multiplexing, timeouts, reconnect, notifications, error classes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import pytest

import madsidecar_client as sdk
from madsidecar_client import BlockingClient, Client
from madsidecar_client.errors import error_from_map

from .support import RedisProcess, SidecarProcess, short_tempdir


def silent_server() -> tuple[socket.socket, str]:
    """A socket that accepts connections and never answers."""
    path = os.path.join(short_tempdir(), "silent.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
    return listener, path


async def test_concurrent_calls_are_multiplexed(sidecar: SidecarProcess) -> None:
    async with Client(sidecar.socket_path) as client:
        results = await asyncio.gather(*(client.ping() for _ in range(500)))
        assert results == ["pong"] * 500
        info = await client.hello()
        assert info["namespace"] == "default"
        stats = await client.stats()
    assert stats["connections"] == 1


async def test_async_call_timeout() -> None:
    listener, path = silent_server()
    try:
        async with Client(path, timeout=5) as client:
            with pytest.raises(sdk.CallTimeoutError):
                await client.call("ping", timeout=0.2)
            with pytest.raises(TimeoutError):
                await client.call("ping", timeout=0.05)
    finally:
        listener.close()


async def test_concurrent_calls_each_time_out_on_their_own_deadline() -> None:
    """Calls with longer and shorter timeouts, issued in any order, each fail at their own
    deadline (not at a neighbour's), and none lingers past it."""
    listener, path = silent_server()
    try:
        async with Client(path, timeout=5) as client:
            loop = asyncio.get_running_loop()
            started = loop.time()

            async def failing_after(timeout: float) -> float:
                with pytest.raises(sdk.CallTimeoutError):
                    await client.call("ping", timeout=timeout)
                return loop.time() - started

            timeouts = [0.6, 0.2, 0.4, 0.2, 1.0, 0.3, 0.3]
            took = await asyncio.wait_for(asyncio.gather(*(failing_after(t) for t in timeouts)), 10)
            for timeout, elapsed in zip(timeouts, took, strict=True):
                assert timeout <= elapsed < timeout + 2.0, (timeout, elapsed)
            assert took[1] < took[4], "a short timeout waited for a longer one"
    finally:
        listener.close()


def test_blocking_call_timeout() -> None:
    listener, path = silent_server()
    try:
        with BlockingClient(path) as client, pytest.raises(sdk.CallTimeoutError):
            client.call("ping", timeout=0.2)
    finally:
        listener.close()


def test_connecting_to_nothing_fails_clearly() -> None:
    path = os.path.join(short_tempdir(), "absent.sock")
    with pytest.raises(sdk.ConnectionLostError, match="cannot connect"):
        BlockingClient(path, reconnect=False)


def test_error_codes_map_to_classes() -> None:
    for code, cls in [
        ("BAD_FRAME", sdk.BadFrameError),
        ("FRAME_TOO_LARGE", sdk.FrameTooLargeError),
        ("BAD_REQUEST", sdk.BadRequestError),
        ("UNKNOWN_METHOD", sdk.UnknownMethodError),
        ("FORBIDDEN", sdk.ForbiddenError),
        ("UNAVAILABLE", sdk.UnavailableError),
        ("NOT_HELD", sdk.NotHeldError),
        ("TIMEOUT", sdk.ServerTimeoutError),
        ("SHUTTING_DOWN", sdk.ShuttingDownError),
        ("INTERNAL", sdk.InternalError),
    ]:
        exc = error_from_map({"code": code, "message": "m", "retry_after_ms": 5})
        assert type(exc) is cls and exc.code == code
        assert isinstance(exc, sdk.MadsidecarError)
    future_code = error_from_map({"code": "SOMETHING_NEW", "message": "m"})
    assert type(future_code) is sdk.ServerError and future_code.code == "SOMETHING_NEW"
    unavailable = error_from_map({"code": "UNAVAILABLE", "message": "m", "retry_after_ms": 250})
    assert isinstance(unavailable, sdk.UnavailableError) and unavailable.retry_after_ms == 250


async def test_async_client_reconnects_after_a_sidecar_restart(
    redis_server: RedisProcess,
) -> None:
    side = SidecarProcess(redis_server.url).start()
    try:
        reconnects: list[bool] = []
        disconnected = asyncio.Event()
        client = await Client.connect(side.socket_path)
        client.on_reconnect = lambda: reconnects.append(True)
        client.on_disconnect = lambda exc: disconnected.set()
        assert await client.ping() == "pong"
        assert side.terminate() == 0
        await asyncio.wait_for(disconnected.wait(), 10)
        assert not client.connected
        side.start()
        assert await client.ping() == "pong", "the next call reconnects by itself"
        assert reconnects == [True]
        await client.close()
    finally:
        side.stop()


def test_blocking_client_reconnects_after_a_sidecar_restart(redis_server: RedisProcess) -> None:
    side = SidecarProcess(redis_server.url).start()
    try:
        with side.client() as client:
            assert client.ping() == "pong"
            assert side.terminate() == 0
            with pytest.raises(sdk.ConnectionLostError):
                client.ping()
            side.start()
            assert client.ping() == "pong"
    finally:
        side.stop()


def test_no_reconnect_when_disabled(redis_server: RedisProcess) -> None:
    side = SidecarProcess(redis_server.url).start()
    try:
        client = side.client(reconnect=False)
        assert client.ping() == "pong"
        assert side.terminate() == 0
        side.start()
        with pytest.raises(sdk.ConnectionLostError):
            client.ping()
        with pytest.raises(sdk.ConnectionLostError, match="reconnect is off"):
            client.ping()
    finally:
        side.stop()


async def test_pending_calls_fail_when_the_connection_drops() -> None:
    listener, path = silent_server()
    try:
        client = await Client.connect(path)
        pending = asyncio.ensure_future(client.call("ping"))
        await asyncio.sleep(0)  # let the request be written
        conn, _ = listener.accept()
        conn.close()
        with pytest.raises(sdk.ConnectionLostError):
            await pending
        await client.close()
    finally:
        listener.close()


async def test_notifications_as_async_iterator(sidecar: SidecarProcess) -> None:
    async with Client(sidecar.socket_path, reconnect=False) as client:
        stream = client.notifications()
        first = asyncio.ensure_future(stream.__anext__())
        await client.ping()
        sidecar.signal(signal.SIGTERM)
        note = await asyncio.wait_for(first, 10)
        assert note.name == "shutdown"
        assert note.payload["deadline_ms"] >= 0
        await stream.aclose()


def test_blocking_pipeline_larger_than_the_socket_buffers(sidecar: SidecarProcess) -> None:
    with sidecar.client(timeout=60) as client:
        results = client.pipeline([("ping", None)] * 100_000)
    assert results == ["pong"] * 100_000


async def test_async_pipeline_larger_than_the_socket_buffers(sidecar: SidecarProcess) -> None:
    async with Client(sidecar.socket_path, timeout=60) as client:
        results = await client.pipeline([("stats", None)] * 20_000)
    assert len(results) == 20_000 and all(r["redis"]["connected"] for r in results)


def test_server_error_message_is_the_servers_words(sidecar: SidecarProcess) -> None:
    with sidecar.client() as client, pytest.raises(sdk.UnknownMethodError) as caught:
        client.call("nope")
    assert caught.value.message == caught.value.data["message"]
    assert str(caught.value).startswith("UNKNOWN_METHOD: ")


async def test_calls_issued_together_take_effect_in_issue_order(sidecar: SidecarProcess) -> None:
    """Calls and pipelines issued in one loop turn share a write; the order they were
    issued in is the order they take effect in."""
    async with Client(sidecar.socket_path) as client:
        for round_ in range(20):
            values = [f"{round_}-{i}" for i in range(5)]
            await asyncio.gather(
                client.call("cache.set", {"key": "ordered", "value": values[0]}),
                client.call("cache.set", {"key": "ordered", "value": values[1]}),
                client.pipeline(
                    [("cache.set", {"key": "ordered", "value": v}) for v in values[2:4]]
                ),
                client.call("cache.set", {"key": "ordered", "value": values[3]}),
                client.pipeline([("cache.set", {"key": "ordered", "value": values[4]})]),
            )
            assert (await client.call("cache.get", {"key": "ordered"}))["value"] == values[4]


def test_the_sidecar_runs_the_build_under_test(sidecar: SidecarProcess) -> None:
    """`stats.compiled` tells compiled from plain Python; the sidecar a test starts runs the
    same build as the test process (./dev test runs both)."""
    from madsidecar.build_info import is_compiled

    with sidecar.client() as client:
        compiled = client.stats()["compiled"]
    assert compiled is is_compiled()
    expected = os.environ.get("MADSIDECAR_EXPECT_COMPILED")
    if expected is not None:
        assert compiled is (expected != "0")
