"""Script calls merged on the Redis link (MergingScript), against a real redis-server:
calls queued back to back go to Redis as one EVALSHA, and each still gets its own reply,
its own error, and its place in the link's order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from madsidecar.deferred import Deferred, Reply
from madsidecar.errors import Unavailable
from madsidecar.redis_gateway import MAX_MERGED_PARTS, RedisCommandError, RedisGateway
from madsidecar.redis_scripts import REMEMBERED_ENCODINGS, MergingScript
from madsidecar_client import ServerError

from .support import RedisProcess, SidecarProcess
from .test_redis_gateway import started

# Per part: one key, one argument (how much to add). Replies the counter's new value, or
# the error of a key of the wrong type, for that part alone.
ADD = """
local reply = {}
for i = 1, #KEYS do
  reply[i] = redis.pcall('INCRBY', KEYS[i], ARGV[i + 1])
end
return reply
"""


@pytest.fixture
async def gateway(redis_server: RedisProcess) -> AsyncIterator[RedisGateway]:
    started_gateway = await started(redis_server)
    try:
        yield started_gateway
    finally:
        await started_gateway.close()


def adder() -> MergingScript:
    # The head argument is unused by the script; it shows the parts come after it.
    return MergingScript(ADD, head=("head",))


def add(script: MergingScript, gateway: RedisGateway, key: str, amount: int) -> Deferred:
    return script.call(gateway, [key], [amount])


async def test_calls_queued_back_to_back_go_as_one_command_each_with_its_own_reply(
    gateway: RedisGateway,
) -> None:
    script = adder()
    await add(script, gateway, "warm", 1)  # loads the script (NOSCRIPT, then EVAL)
    before = gateway.counters.commands
    calls = 2 * MAX_MERGED_PARTS + 1
    replies = await asyncio.gather(*(add(script, gateway, "n", 1) for _ in range(calls)))
    assert replies == list(range(1, calls + 1)), "each call has its own reply, in order"
    assert gateway.counters.commands - before == 3, "merged, at most 64 calls a command"


async def test_a_command_between_merged_calls_keeps_its_place(gateway: RedisGateway) -> None:
    script = adder()
    await add(script, gateway, "warm", 1)
    first, between, second, after = await asyncio.gather(
        add(script, gateway, "k", 1),
        gateway.execute("GET", "k"),
        add(script, gateway, "k", 10),
        gateway.execute("GET", "k"),
    )
    assert (first, between, second, after) == (1, b"1", 11, b"11")


async def test_a_failing_call_fails_alone(gateway: RedisGateway) -> None:
    script = adder()
    await gateway.execute("HSET", "a-hash", "field", "1")
    ok, bad, also_ok = await asyncio.gather(
        add(script, gateway, "x", 2),
        add(script, gateway, "a-hash", 1),
        add(script, gateway, "y", 3),
        return_exceptions=True,
    )
    assert (ok, also_ok) == (2, 3)
    assert isinstance(bad, RedisCommandError) and bad.reply_code == "WRONGTYPE"


async def test_encodings_remembered_past_their_limit_still_send_every_call_right(
    gateway: RedisGateway,
) -> None:
    """A script whose arguments recur remembers their encoding, up to a limit past which
    it starts afresh: calls on either side of that reset reach Redis intact."""
    script = MergingScript(ADD, head=("head",), repeated_args=True)
    keys = [f"e{i}" for i in range(REMEMBERED_ENCODINGS + 100)]
    for start in range(0, len(keys), 1000):
        chunk = keys[start : start + 1000]
        replies = await asyncio.gather(*(add(script, gateway, key, 1) for key in chunk))
        assert replies == [1] * len(chunk)
    replies = await asyncio.gather(*(add(script, gateway, key, 2) for key in keys[:300]))
    assert replies == [3] * 300
    with pytest.raises(RedisCommandError, match="cannot send"):
        await adder().call(gateway, ["bad"], [True])  # hiredis's rule: no bools


async def test_forgotten_script_each_call_sent_again_on_its_own(gateway: RedisGateway) -> None:
    script = adder()
    for round_ in range(3):
        await gateway.execute("SCRIPT", "FLUSH")
        replies = await asyncio.gather(*(add(script, gateway, "f", 1) for _ in range(10)))
        assert replies == list(range(10 * round_ + 1, 10 * round_ + 11))


async def test_redis_down_fails_merged_calls_at_once(
    gateway: RedisGateway, redis_server: RedisProcess
) -> None:
    script = adder()
    redis_server.kill()
    results = await asyncio.wait_for(
        asyncio.gather(*(add(script, gateway, "d", 1) for _ in range(5)), return_exceptions=True),
        timeout=5,
    )
    assert all(isinstance(result, Unavailable) for result in results)


async def test_a_reply_runs_its_callbacks_when_set_and_reports_one_that_fails() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        reply = Reply()
        seen: list[Any] = []

        def broken(_: Reply) -> None:
            raise RuntimeError("callback bug")

        reply.add_done_callback(lambda r: seen.append(r.result()))
        reply.add_done_callback(broken)
        reply.add_done_callback(lambda r: seen.append("after"))
        reply.set_result(42)
        assert seen == [42, "after"], "run at once, in order, past the one that failed"
        assert [type(c["exception"]) for c in reported] == [RuntimeError]
        with pytest.raises(asyncio.InvalidStateError):
            reply.set_result(43)
        assert await Deferred(reply, lambda value: value + 1) == 43
    finally:
        loop.set_exception_handler(None)


def spoil(direct: redis.Redis, pattern: str) -> None:
    """Turns the one key matching `pattern` into a hash, a type no script expects."""
    (key,) = direct.scan_iter(match=pattern)
    direct.delete(key)
    direct.hset(key, "not", "a counter")


def test_a_lock_call_redis_refuses_fails_alone(
    redis_server: RedisProcess, sidecar: SidecarProcess
) -> None:
    """Lock calls of one loop turn share a script call; one that Redis refuses must not
    take the others down with it, nor leave its own lock behind."""
    direct = redis.Redis(unix_socket_path=redis_server.socket_path)
    with sidecar.client() as client:
        token = client.call("lock.acquire", {"name": "broken"})["token"]
        client.call("lock.release", {"name": "broken", "token": token})
        spoil(direct, "*broken*:fence")
        calls = [("lock.acquire", {"name": name}) for name in ("p", "broken", "q")]
        first, failed, last = client.pipeline(calls)
        assert first["acquired"] is True and last["acquired"] is True
        assert isinstance(failed, ServerError)
        assert list(direct.scan_iter(match="*broken}")) == [], "no lock left behind"


def test_a_rate_limit_check_redis_refuses_fails_alone(
    redis_server: RedisProcess, sidecar: SidecarProcess
) -> None:
    direct = redis.Redis(unix_socket_path=redis_server.socket_path)
    limit = {"limit": 5, "window_ms": 60_000}
    with sidecar.client() as client:
        client.call("ratelimit.hit", {"key": "broken", **limit})
        spoil(direct, "*broken*")
        calls = [("ratelimit.hit", {"key": key, **limit}) for key in ("p", "broken", "q", "p")]
        first, failed, other, again = client.pipeline(calls)
        # Decided by its on_redis_down policy, as any check Redis fails to answer.
        assert failed["degraded"] is True
        assert (first["remaining"], other["remaining"], again["remaining"]) == (4, 4, 3)
