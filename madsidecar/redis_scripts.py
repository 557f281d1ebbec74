"""Lua scripts run through the gateway: EVALSHA, falling back to EVAL once after Redis
forgot its script cache (a restart or SCRIPT FLUSH)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import partial
from importlib import resources
from typing import Any

from .deferred import Deferred
from .redis_gateway import RedisCommandError, RedisGateway


class LuaScript:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    @classmethod
    def beside(cls, module_name: str, name: str) -> LuaScript:
        """The script `name` from the package of the module `module_name` (found through
        the package, not `__file__`, which a compiled module does not set reliably)."""
        package = module_name.rpartition(".")[0]
        return cls(resources.files(package).joinpath(name).read_text(encoding="utf-8"))

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
        tail = (len(keys), *keys, *args)
        return Deferred(
            gateway.execute("EVALSHA", self.sha, *tail),
            then,
            partial(self._fallback, gateway, tail, then, on_error, abandoned),
            abandoned,
        )

    async def run(
        self, gateway: RedisGateway, keys: Sequence[str], args: Sequence[Any] = ()
    ) -> Any:
        return await self.call(gateway, keys, args)

    def _fallback(
        self,
        gateway: RedisGateway,
        tail: tuple[Any, ...],
        then: Callable[[Any], Any],
        on_error: Callable[[BaseException], Any] | None,
        abandoned: Callable[[], object] | None,
        error: BaseException,
    ) -> Any:
        if isinstance(error, RedisCommandError) and error.reply_code == "NOSCRIPT":
            return Deferred(gateway.execute("EVAL", self.source, *tail), then, on_error, abandoned)
        if on_error is None:
            raise error
        return on_error(error)


def _reply(value: Any) -> Any:
    return value
