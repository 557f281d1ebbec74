"""Lua scripts run through the gateway: EVALSHA, falling back to EVAL once after Redis
forgot its script cache (a restart or SCRIPT FLUSH)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import partial
from importlib import resources
from typing import Any, Final

import hiredis

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


# Enough for every hot counter of a busy node; past it, the memory starts afresh.
REMEMBERED_ENCODINGS: Final = 8192


def _remembered_encoding(remembered: dict[Any, bytes], value: str | tuple[Any, ...]) -> bytes:
    """A key, or a part's arguments, as bulk strings, from `remembered` if there."""
    encoded = remembered.get(value)
    if encoded is None:
        encoded = _bulk(value) if type(value) is str else b"".join([_bulk(a) for a in value])
        if len(remembered) >= REMEMBERED_ENCODINGS:
            remembered.clear()
        remembered[value] = encoded
    return encoded


def _bulk(value: Any) -> bytes:
    """One argument as a Redis bulk string: the types hiredis's pack_command takes."""
    kind = type(value)
    data: bytes
    if kind is str:
        data = value.encode()
    elif kind is bytes:
        data = value
    elif kind is int or kind is float:
        data = str(value).encode()
    else:
        raise TypeError("A tuple item must be str, int, float or bytes.")
    return b"$%d\r\n" % len(data) + data + b"\r\n"


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

    def __init__(self, source: str, head: Sequence[Any] = (), repeated_args: bool = False) -> None:
        """`repeated_args`: the same argument lists come back again and again (a rate
        limit's), so their encoding is remembered rather than redone per call. They must
        hold only str and int: equal lists are taken to encode alike, which (1, True,
        1.0) do not."""
        super().__init__(source)
        self._head = tuple(head)
        self._encoded_head = b"".join(_bulk(arg) for arg in self._head)
        self._prefix = b"$7\r\nEVALSHA\r\n" + _bulk(self.sha)
        self._encoded: dict[Any, bytes] | None = {} if repeated_args else None

    def command(self, parts: list[Any]) -> tuple[Any, ...]:
        return ("EVALSHA", self.sha, *self._tail(parts))

    def packed(self, parts: list[Any]) -> bytes:
        """`command(parts)` in Redis's protocol. With `repeated_args`, encoded here, so
        that what recurs (a counter's key, a rule's arguments) is encoded once: a lookup
        instead of 0.5 us a part."""
        remembered = self._encoded
        if remembered is None:
            # Nothing to reuse: hiredis encodes faster than Python does.
            packed: bytes = hiredis.pack_command(self.command(parts))
            return packed
        keys: list[bytes] = []
        args = [self._encoded_head]
        count = len(self._head)
        for part_keys, part_args in parts:
            for key in part_keys:
                keys.append(_remembered_encoding(remembered, key))
            args.append(_remembered_encoding(remembered, part_args))
            count += len(part_args)
        header = b"*%d\r\n" % (3 + len(keys) + count) + self._prefix + _bulk(len(keys))
        return header + b"".join(keys) + b"".join(args)

    def _request(self, keys: Sequence[str], args: Sequence[Any]) -> Any:
        return (keys, tuple(args))

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
