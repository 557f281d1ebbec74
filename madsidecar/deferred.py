"""`Deferred`: a handler's answer that waits on one Redis reply, finished by a callback."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Generator
from functools import partial
from typing import Any


class Reply:
    """A Redis reply still to come, for the request path: what an asyncio future is to a
    `Deferred`, without the loop in between. Callbacks run the moment the reply is set
    (from the Redis link's data_received), where a future schedules them for the next
    loop turn: about 160 ns a reply against 440. A callback that raises is reported to
    the loop's exception handler, as a future's would be, and the others still run."""

    __slots__ = ("_callback", "_done", "_error", "_more", "_result")

    def __init__(self) -> None:
        self._done = False
        self._result: Any = None
        self._error: BaseException | None = None
        # Nearly always one callback (the connection's): no list for it.
        self._callback: Callable[[Reply], object] | None = None
        self._more: list[Callable[[Reply], object]] | None = None

    def done(self) -> bool:
        return self._done

    def cancelled(self) -> bool:
        return False

    def result(self) -> Any:
        if not self._done:
            raise asyncio.InvalidStateError("the reply is not in yet")
        if self._error is not None:
            raise self._error
        return self._result

    def exception(self) -> BaseException | None:
        if not self._done:
            raise asyncio.InvalidStateError("the reply is not in yet")
        return self._error

    def add_done_callback(self, callback: Callable[[Reply], object]) -> None:
        if self._done:
            # As a future does: never inside the caller's own frame.
            asyncio.get_running_loop().call_soon(callback, self)
        elif self._callback is None:
            self._callback = callback
        elif self._more is None:
            self._more = [callback]
        else:
            self._more.append(callback)

    def set_result(self, value: Any) -> None:
        self._finish(value, None)

    def set_exception(self, error: BaseException) -> None:
        self._finish(None, error)

    def _finish(self, value: Any, error: BaseException | None) -> None:
        if self._done:
            raise asyncio.InvalidStateError("the reply is in already")
        self._done = True
        self._result = value
        self._error = error
        callback, self._callback = self._callback, None
        if callback is not None:
            self._run(callback)
        more, self._more = self._more, None
        for callback in more or ():
            self._run(callback)

    def _run(self, callback: Callable[[Reply], object]) -> None:
        try:
            callback(self)
        except Exception as exc:
            asyncio.get_running_loop().call_exception_handler(
                {"message": "a Redis reply's callback failed", "exception": exc}
            )

    def arrival(self) -> asyncio.Future[None]:
        """An asyncio future done (with None, whatever the reply) once this reply is in:
        something asyncio.wait can wait on."""
        arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.add_done_callback(partial(_arrived, arrived))
        return arrived


def _arrived(arrived: asyncio.Future[None], _: Reply) -> None:
    if not arrived.done():
        arrived.set_result(None)


# What a Deferred waits on: a Reply on the request path, else an asyncio future.
Pending = asyncio.Future[Any] | Reply


class Deferred:
    """An answer that waits on one pending Redis reply: `then(reply)` makes the result
    (or raises, or returns the next `Deferred`); `on_error(exc)`, if given, does the same
    for a failed reply. The connection finishes it from the reply's done-callback, which
    costs far less than a coroutine run as a task; it is awaitable where a task needs it.

    `abandoned()` runs instead, once the reply is in, when the request was cancelled
    first (its connection closed, or the drain refused it): the place to undo a side
    effect nobody will learn of (a lock taken for a caller that is gone)."""

    __slots__ = ("abandoned", "on_error", "pending", "then")

    def __init__(
        self,
        pending: Pending,
        then: Callable[[Any], Any],
        on_error: Callable[[BaseException], Any] | None = None,
        abandoned: Callable[[], object] | None = None,
    ) -> None:
        self.pending = pending
        self.then = then
        self.on_error = on_error
        self.abandoned = abandoned

    def resolve(self) -> Any:
        """The result, once `pending` is done; may be another Deferred."""
        error = self.pending.exception()
        if error is None:
            return self.then(self.pending.result())
        if self.on_error is not None:
            return self.on_error(error)
        raise error

    def map(
        self, fn: Callable[[Any], Any], abandoned: Callable[[], object] | None = None
    ) -> Deferred:
        """This answer passed through `fn` (the next `Deferred`, if any, too)."""
        then, on_error = self.then, self.on_error

        def mapped(value: Any) -> Any:
            return _map_result(then(value), fn, abandoned)

        def mapped_error(error: BaseException) -> Any:
            assert on_error is not None
            return _map_result(on_error(error), fn, abandoned)

        return Deferred(
            self.pending,
            mapped,
            mapped_error if on_error is not None else None,
            abandoned or self.abandoned,
        )

    def recover(self, fn: Callable[[BaseException], Any]) -> Deferred:
        """This answer, with `fn(error)` as the answer wherever it would fail (the next
        `Deferred`'s failures too, such as a script's EVAL fallback)."""
        then, on_error = self.then, self.on_error

        def recovered(value: Any) -> Any:
            result = then(value)
            return result.recover(fn) if type(result) is Deferred else result

        def recovering(error: BaseException) -> Any:
            if on_error is None:
                return fn(error)
            try:
                result = on_error(error)
            except Exception as exc:
                return fn(exc)
            return result.recover(fn) if type(result) is Deferred else result

        return Deferred(self.pending, recovered, recovering, self.abandoned)

    async def settle(self) -> Any:
        deferred = self
        while True:
            pending = deferred.pending
            waited = pending.arrival() if isinstance(pending, Reply) else pending
            try:
                # wait(), not await: a cancelled caller must not cancel the Redis reply,
                # which `abandoned` still needs.
                await asyncio.wait((waited,))
            except asyncio.CancelledError:
                if deferred.abandoned is not None:
                    pending.add_done_callback(_call_later(deferred.abandoned))
                raise
            result = deferred.resolve()
            if type(result) is not Deferred:
                return result
            deferred = result

    def __await__(self) -> Generator[Any, None, Any]:
        return self.settle().__await__()


def _call_later(callback: Callable[[], object]) -> Callable[[Any], object]:
    return lambda _: callback()


def _map_result(
    result: Any, fn: Callable[[Any], Any], abandoned: Callable[[], object] | None
) -> Any:
    if type(result) is Deferred:
        return result.map(fn, abandoned)
    return fn(result)


def then_do(
    awaitable: Awaitable[Any],
    fn: Callable[[Any], Any],
    abandoned: Callable[[], object] | None = None,
) -> Deferred | Coroutine[Any, Any, Any]:
    """`fn(await awaitable)` as a handler's answer: a `Deferred` when `awaitable` is one,
    else a coroutine (run as a task)."""
    if type(awaitable) is Deferred:
        return awaitable.map(fn, abandoned)
    return _then_async(awaitable, fn, abandoned)


async def _then_async(
    awaitable: Awaitable[Any], fn: Callable[[Any], Any], abandoned: Callable[[], object] | None
) -> Any:
    try:
        value = await awaitable
    except asyncio.CancelledError:
        if abandoned is not None:
            abandoned()
        raise
    return fn(value)
