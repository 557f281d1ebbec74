"""Lua scripts run through the gateway: EVALSHA, falling back to EVAL once after Redis
forgot its script cache (a restart or SCRIPT FLUSH)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import partial
from importlib import resources
from typing import Any

from .deferred import Deferred, Pending
from .redis_gateway import RedisCommandError, RedisGateway, single_part


class LuaScript:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    @classmethod
    def beside(cls, module_name: str, name: str) -> LuaScript:
        return cls(source_beside(module_name, name))

    def call(
        self, gateway: RedisGateway, keys: Sequence[str], args: Sequence[Any] = ()
    ) -> Deferred:
        """The script's reply, as a `Deferred` (awaitable)."""
        return self.call_then(gateway, keys, args, _reply)

    def call_then(
        self,
        gateway: RedisGateway,
        keys: Sequence[str],
        args: Sequence[Any],
        then: Callable[[Any], Any],
        on_error: Callable[[BaseException], Any] | None = None,
        abandoned: Callable[[], object] | None = None,
    ) -> Deferred:
        """`call(...)` with the reply handed straight to `then` (a failure to `on_error`,
        if given): what `.map(then).recover(on_error)` does, without a layer per step,
        for the request path."""
        request = self._request(keys, args)
        return Deferred(
            self._send(gateway, request),
            then,
            partial(self._fallback, gateway, request, then, on_error, abandoned),
            abandoned,
        )

    async def run(
        self, gateway: RedisGateway, keys: Sequence[str], args: Sequence[Any] = ()
    ) -> Any:
        return await self.call(gateway, keys, args)

    def _request(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """What is sent for a call: EVALSHA's arguments after the digest."""
        return (len(keys), *keys, *args)

    def _send(self, gateway: RedisGateway, request: Any) -> Pending:
        return gateway.execute("EVALSHA", self.sha, *request)

    def _send_source(self, gateway: RedisGateway, request: Any) -> Pending:
        return gateway.execute("EVAL", self.source, *request)

    def _fallback(
        self,
        gateway: RedisGateway,
        request: Any,
        then: Callable[[Any], Any],
        on_error: Callable[[BaseException], Any] | None,
        abandoned: Callable[[], object] | None,
        error: BaseException,
    ) -> Any:
        if isinstance(error, RedisCommandError) and error.reply_code == "NOSCRIPT":
            return Deferred(self._send_source(gateway, request), then, on_error, abandoned)
        if on_error is None:
            raise error
        return on_error(error)


def _reply(value: Any) -> Any:
    return value


def source_beside(module_name: str, name: str) -> str:
    """The script `name` from the package of the module `module_name` (found through the
    package, not `__file__`, which a compiled module does not set reliably)."""
    package = module_name.rpartition(".")[0]
    return resources.files(package).joinpath(name).read_text(encoding="utf-8")


class MergingScript(LuaScript):
    """A script that runs any number of calls ("parts") in one go, in order: it takes
    `head` (arguments common to all), then each part's keys and arguments, and answers a
    list of one reply per part. Calls queued back to back on the link are sent as one
    EVALSHA, so Redis parses, looks up and sets up the script once for all of them; a
    call's own reply, or its error, reaches it as if it had been sent alone.

    Which keys and arguments belong to which part is the script's business: each part's
    arguments must say (an operation name, a count) how many keys it takes."""

    def __init__(self, source: str, head: Sequence[Any] = ()) -> None:
        super().__init__(source)
        self._head = tuple(head)

    def command(self, parts: list[Any]) -> tuple[Any, ...]:
        return ("EVALSHA", self.sha, *self._tail(parts))

    def _request(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return (keys, args)

    def _send(self, gateway: RedisGateway, request: Any) -> Pending:
        return gateway.execute_merged(self, request)

    def _send_source(self, gateway: RedisGateway, request: Any) -> Pending:
        # Sent alone: the parts it was merged with fall back on their own.
        return single_part(self, gateway.execute("EVAL", self.source, *self._tail([request])))

    def _tail(self, parts: list[Any]) -> tuple[Any, ...]:
        keys: list[str] = []
        args = list(self._head)
        for part_keys, part_args in parts:
            keys.extend(part_keys)
            args.extend(part_args)
        return (len(keys), *keys, *args)
