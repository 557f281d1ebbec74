"""The Redis gateway in-process, against a real redis-server."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from madsidecar.errors import Unavailable
from madsidecar.redis_gateway import RedisCommandError, RedisGateway, RedisSettings

from .support import RedisProcess


def settings_for(redis: RedisProcess, timeout_ms: int = 1000) -> RedisSettings:
    return RedisSettings(
        url=redis.url,
        password=None,
        timeout_ms=timeout_ms,
        connect_timeout_ms=1000,
        health_interval_ms=100,
    )


async def started(redis: RedisProcess, timeout_ms: int = 1000) -> RedisGateway:
    gateway = RedisGateway(settings_for(redis, timeout_ms))
    gateway.start()
    assert await gateway.wait_connected(10)
    return gateway


async def test_commands_of_one_loop_turn_go_as_one_pipeline_in_order(
    redis_server: RedisProcess,
) -> None:
    gateway = await started(redis_server)
    try:
        before = gateway.counters.pipelines
        replies = await asyncio.gather(*(gateway.execute("INCR", "n") for _ in range(500)))
        assert replies == list(range(1, 501)), "replies match their commands, in order"
        assert gateway.counters.pipelines - before == 1
    finally:
        await gateway.close()


async def test_error_reply_fails_only_its_own_command(redis_server: RedisProcess) -> None:
    gateway = await started(redis_server)
    try:
        ok1, bad, ok2 = await asyncio.gather(
            gateway.execute("SET", "a", "1"),
            gateway.execute("INCR", "a", "extra-arg"),
            gateway.execute("GET", "a"),
            return_exceptions=True,
        )
        assert ok1 is True or ok1 == b"OK"
        assert isinstance(bad, RedisCommandError)
        assert ok2 == b"1"
    finally:
        await gateway.close()


async def test_down_redis_fails_fast_with_retry_after(redis_server: RedisProcess) -> None:
    gateway = await started(redis_server)
    try:
        redis_server.kill()
        started_at = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            await gateway.execute("PING")
        assert time.monotonic() - started_at < 0.05
        assert caught.value.retry_after_ms >= 0
        redis_server.start()
        assert await gateway.wait_connected(10)
        assert await gateway.execute("PING") in (True, b"PONG")
    finally:
        await gateway.close()


async def test_hung_redis_times_out_then_link_is_replaced(redis_server: RedisProcess) -> None:
    gateway = await started(redis_server, timeout_ms=200)
    assert redis_server.process is not None
    try:
        redis_server.process.send_signal(signal.SIGSTOP)
        started_at = time.monotonic()
        with pytest.raises(Unavailable, match="did not answer within 200 ms"):
            await gateway.execute("PING")
        assert 0.15 < time.monotonic() - started_at < 1.0
        redis_server.process.send_signal(signal.SIGCONT)
        assert await gateway.wait_connected(10)
        assert await gateway.execute("PING") in (True, b"PONG")
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
        await gateway.close()


async def test_password_is_used_and_never_logged(
    redis_server: RedisProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    from madsidecar.logs import configure_logging

    configure_logging("info", "kv")
    admin = await started(redis_server)
    await admin.execute("CONFIG", "SET", "requirepass", "s3cret-value")
    await admin.close()
    url = f"unix://:wrong-pass@{redis_server.socket_path}"
    bad = RedisGateway(RedisSettings(url, None, 1000, 1000, 100))
    bad.start()
    assert not await bad.wait_connected(0.5)
    await bad.close()
    good = RedisGateway(RedisSettings(redis_server.url, "s3cret-value", 1000, 1000, 100))
    good.start()
    try:
        assert await good.wait_connected(10)
        assert await good.execute("PING") in (True, b"PONG")
    finally:
        await good.close()
    logged = capsys.readouterr().err
    assert "redis_unreachable" in logged
    assert "wrong-pass" not in logged and "s3cret-value" not in logged


async def test_commands_behind_a_stuck_write_still_time_out(redis_server: RedisProcess) -> None:
    gateway = await started(redis_server, timeout_ms=300)
    assert redis_server.process is not None
    try:
        redis_server.process.send_signal(signal.SIGSTOP)
        # 16 MB cannot fit in the socket buffers of a Redis that is not reading.
        big = gateway.execute("SET", "big", b"x" * (16 * 1024 * 1024))
        await asyncio.sleep(0)  # let the writer start the write that will block
        started_at = time.monotonic()
        with pytest.raises(Unavailable):
            await gateway.execute("PING")
        assert time.monotonic() - started_at < 0.3 + 0.3
        with pytest.raises(Unavailable):
            await big
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
        await gateway.close()
