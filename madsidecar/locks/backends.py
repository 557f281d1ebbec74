"""Where a lock is decided: one Redis, or a Redlock quorum of independent masters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from ..deferred import Deferred, then_do
from ..errors import Unavailable
from ..redis_gateway import RedisGateway
from ..redis_scripts import LuaScript, MergingScript, source_beside


class LockScripts:
    """`operations` acquires, releases and extends (consecutive calls merged into one
    EVALSHA); the other two are rare enough to run alone."""

    def __init__(self, channel: str) -> None:
        self.operations = MergingScript(source_beside(__name__, "operations.lua"), (channel,))
        self.inspect = LuaScript.beside(__name__, "inspect.lua")
        self.raise_fence = LuaScript.beside(__name__, "raise_fence.lua")


# Plain (not frozen) dataclasses: mypyc compiles these to native classes, while a
# frozen one's __init__ runs as interpreted code, once per lock request.
@dataclass
class Attempt:
    acquired: bool
    fence: int
    # Acquired: the lease's validity. Not: the holder's remaining lease, -1 if unknown.
    ttl_ms: int


@dataclass
class Inspection:
    held: bool
    ttl_ms: int
    fence: int


class LockBackend(Protocol):
    """`acquire` and `release` answer with an awaitable: a `Deferred` where one Redis reply
    decides (the handler can then answer without a task), else a coroutine."""

    def acquire(self, key: str, token: str, ttl_ms: int, waiting_ms: int = 0) -> Awaitable[Attempt]:
        """`waiting_ms` > 0: the caller will wait, so flag it for that long."""
        ...

    def release(self, key: str, token: str) -> Awaitable[bool]: ...

    def try_acquire(
        self,
        key: str,
        token: str,
        ttl_ms: int,
        then: Callable[[Attempt], Any],
        abandoned: Callable[[], object],
    ) -> Deferred | Coroutine[Any, Any, Any]:
        """`then(attempt)` of one attempt that does not wait, as a handler's answer;
        `abandoned()` if the caller went away meanwhile."""
        ...

    def release_then(
        self, key: str, token: str, then: Callable[[bool], Any]
    ) -> Deferred | Coroutine[Any, Any, Any]:
        """`then(released)`, as a handler's answer."""
        ...

    async def extend(self, key: str, token: str, ttl_ms: int) -> bool: ...

    async def inspect(self, key: str) -> Inspection: ...


def fence_key(lock_key: str) -> str:
    return lock_key + ":fence"


def waiters_key(lock_key: str) -> str:
    return lock_key + ":waiters"


def _attempt(reply: list[int]) -> Attempt:
    ok, fence, ttl = reply
    return Attempt(bool(ok), int(fence), int(ttl))


# Each operation's keys and arguments in operations.lua.
def _acquire_keys(key: str) -> list[str]:
    return [key, fence_key(key), waiters_key(key)]


def _acquire_args(token: str, ttl_ms: int, waiting_ms: int) -> list[Any]:
    return ["a", token, ttl_ms, waiting_ms]


def _release_keys(key: str) -> list[str]:
    return [key, waiters_key(key)]


def _release_args(token: str) -> list[Any]:
    return ["r", token]


def _extend_args(token: str, ttl_ms: int) -> list[Any]:
    return ["e", token, ttl_ms]


def _same(value: bool) -> bool:
    return value


def _then_attempt(then: Callable[[Attempt], Any], reply: list[int]) -> Any:
    return then(_attempt(reply))


def _then_bool(then: Callable[[bool], Any], reply: int) -> Any:
    return then(bool(reply))


def drift_ms(ttl_ms: int) -> float:
    """redis.io's allowance for clock drift between the masters and us."""
    return ttl_ms * 0.01 + 2


class SingleRedis:
    def __init__(self, gateway: RedisGateway, channel: str) -> None:
        self._gateway = gateway
        self._scripts = LockScripts(channel)

    def acquire(self, key: str, token: str, ttl_ms: int, waiting_ms: int = 0) -> Deferred:
        return self._acquire_on(self._gateway, key, token, ttl_ms, waiting_ms)

    def _acquire_on(
        self, gateway: RedisGateway, key: str, token: str, ttl_ms: int, waiting_ms: int
    ) -> Deferred:
        return self._scripts.operations.call_then(
            gateway, _acquire_keys(key), _acquire_args(token, ttl_ms, waiting_ms), _attempt
        )

    def try_acquire(
        self,
        key: str,
        token: str,
        ttl_ms: int,
        then: Callable[[Attempt], Any],
        abandoned: Callable[[], object],
    ) -> Deferred:
        # One layer: the reply goes to `then` as an Attempt, with nothing in between.
        return self._scripts.operations.call_then(
            self._gateway,
            _acquire_keys(key),
            _acquire_args(token, ttl_ms, 0),
            partial(_then_attempt, then),
            None,
            abandoned,
        )

    def release(self, key: str, token: str) -> Deferred:
        return self.release_then(key, token, _same)

    def release_then(self, key: str, token: str, then: Callable[[bool], Any]) -> Deferred:
        return self._scripts.operations.call_then(
            self._gateway, _release_keys(key), _release_args(token), partial(_then_bool, then)
        )

    async def acquire_replicated(
        self,
        durable: RedisGateway,
        key: str,
        token: str,
        ttl_ms: int,
        waiting_ms: int,
        replicas: int,
        timeout_ms: int,
    ) -> Attempt:
        """`acquire`, answered only once `replicas` replicas hold the lock and its fence
        (WAIT): a failover to one of them then keeps both. WAIT holds up the connection
        it runs on, so this runs on `durable`, a connection of its own, where WAIT counts
        the writes of the acquire before it."""
        got: Attempt = await self._acquire_on(durable, key, token, ttl_ms, waiting_ms)
        # Only now: had Redis forgotten the script, the acquire ran as a second command
        # (EVAL after NOSCRIPT), and a WAIT sent with the first would not cover it.
        copies = int(await durable.execute_for(key, "WAIT", replicas, timeout_ms))
        if got.acquired and copies < replicas:
            # Its acquire has answered, so a release on the main connection comes after it.
            await self.release(key, token)
            raise Unavailable(
                f"lock not granted: {copies} of the {replicas} replicas asked for "
                f"acknowledged it within {timeout_ms} ms",
                retry_after_ms=timeout_ms,
            )
        return got

    async def extend(self, key: str, token: str, ttl_ms: int) -> bool:
        operations = self._scripts.operations
        return bool(await operations.run(self._gateway, [key], _extend_args(token, ttl_ms)))

    async def inspect(self, key: str) -> Inspection:
        pttl, fence = await self._scripts.inspect.run(self._gateway, [key, fence_key(key)])
        return Inspection(held=int(pttl) != -2, ttl_ms=max(int(pttl), 0), fence=int(fence))


class Redlock:
    """The redis.io distributed lock over N independent masters.

    Acquired only with a majority, and only while time remains: validity = ttl - elapsed -
    drift, drift = 1% of ttl + 2 ms. A failed attempt is undone on every master. The fence
    is the largest counter of the masters that granted it, written back to them as a
    floor, so the next quorum (which shares at least one of them) issues a larger one.
    Fewer than a majority answering is UNAVAILABLE, never "held".
    """

    def __init__(self, masters: list[RedisGateway], wake: RedisGateway, channel: str) -> None:
        self._masters = masters
        self._quorum = len(masters) // 2 + 1
        self._wake = wake
        self._channel = channel
        self._scripts = LockScripts(channel)

    async def acquire(self, key: str, token: str, ttl_ms: int, waiting_ms: int = 0) -> Attempt:
        started = time.monotonic()
        operations = self._scripts.operations
        replies = await self._on_all(
            operations, _acquire_keys(key), _acquire_args(token, ttl_ms, waiting_ms)
        )
        answered = [r for r in replies if r is not None]
        granted = [r for r in answered if r[0]]
        if len(granted) >= self._quorum:
            fence = max(int(r[1]) for r in granted)
            raised = await self._on_all(self._scripts.raise_fence, [fence_key(key)], [fence])
            validity = int(ttl_ms - (time.monotonic() - started) * 1000 - drift_ms(ttl_ms))
            if sum(r is not None for r in raised) >= self._quorum and validity > 0:
                return Attempt(True, fence, validity)
        # Not acquired: undo everywhere (a master that did not answer may have granted).
        await self._on_all(operations, _release_keys(key), _release_args(token))
        if len(answered) < self._quorum:
            raise Unavailable(
                f"only {len(answered)} of {len(self._masters)} Redlock masters answered",
                retry_after_ms=50,
            )
        holders = [int(r[2]) for r in answered if not r[0] and int(r[2]) > 0]
        return Attempt(False, 0, min(holders) if holders else -1)

    def try_acquire(
        self,
        key: str,
        token: str,
        ttl_ms: int,
        then: Callable[[Attempt], Any],
        abandoned: Callable[[], object],
    ) -> Deferred | Coroutine[Any, Any, Any]:
        return then_do(self.acquire(key, token, ttl_ms), then, abandoned)

    def release_then(
        self, key: str, token: str, then: Callable[[bool], Any]
    ) -> Deferred | Coroutine[Any, Any, Any]:
        return then_do(self.release(key, token), then)

    async def release(self, key: str, token: str) -> bool:
        replies = await self._on_all(
            self._scripts.operations, _release_keys(key), _release_args(token)
        )
        # The masters publish on themselves; the fleet listens on the shared Redis.
        if any(r == 2 for r in replies):
            await self._wake.execute("PUBLISH", self._channel, key)
        return any(bool(r) for r in replies if r is not None)

    async def extend(self, key: str, token: str, ttl_ms: int) -> bool:
        replies = await self._on_all(self._scripts.operations, [key], _extend_args(token, ttl_ms))
        if sum(r is not None for r in replies) < self._quorum:
            raise Unavailable("fewer than a majority of Redlock masters answered", 50)
        return sum(bool(r) for r in replies if r is not None) >= self._quorum

    async def inspect(self, key: str) -> Inspection:
        inspect = self._scripts.inspect
        replies = [r for r in await self._on_all(inspect, [key, fence_key(key)], []) if r]
        if len(replies) < self._quorum:
            raise Unavailable("fewer than a majority of Redlock masters answered", 50)
        held = [int(r[0]) for r in replies if int(r[0]) != -2]
        return Inspection(
            held=len(held) >= self._quorum,
            ttl_ms=sorted(held)[len(held) // 2] if held else 0,
            fence=max(int(r[1]) for r in replies),
        )

    async def _on_all(self, script: LuaScript, keys: list[str], args: list[Any]) -> list[Any]:
        """The script on every master at once; None where a master did not answer."""
        replies = await asyncio.gather(
            *(script.run(master, keys, args) for master in self._masters),
            return_exceptions=True,
        )
        return [None if isinstance(reply, BaseException) else reply for reply in replies]
