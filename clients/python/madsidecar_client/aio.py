"""The asyncio client: multiplexed calls over one connection, notifications, reconnect."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

from mypy_extensions import mypyc_attr

from ._protocol import ClientProtocol, Notification, Response, default_socket_path
from .errors import (
    CallTimeoutError,
    ConnectionLostError,
    ProtocolViolationError,
    ServerError,
    error_from_map,
)

DEFAULT_TIMEOUT_S: Final = 10.0
RECONNECT_FIRST_S: Final = 0.05
RECONNECT_MAX_S: Final = 2.0

NotificationHandler = Callable[[Notification], Any]


def effective_timeout(timeout: float | None, default: float | None, params: Any) -> float | None:
    """A call that asks the sidecar to wait gets that much longer on the client side."""
    chosen = default if timeout is None else timeout
    if chosen is None or not params:
        return chosen
    wait_ms = params.get("wait_ms")
    return chosen + wait_ms / 1000 if isinstance(wait_ms, int) and wait_ms > 0 else chosen


class _Wire(asyncio.Protocol):
    """The asyncio side of one connection; the client's state outlives it."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.transport: asyncio.Transport | None = None

    def send(self, frame: bytes) -> None:
        # Written at once, even in a burst of concurrent calls: holding frames to the end
        # of the loop turn to write them together measured slower (the sidecar, on
        # another CPU, then idles while this side finishes its turn).
        if self.transport is not None:
            self.transport.write(frame)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._client._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._client._on_lost(self, exc)


class NotificationStream:
    """An async iterator over the notifications received since it was made. When the
    consumer falls `maxsize` behind, newer ones are dropped for it (never for others)."""

    def __init__(self, queues: list[asyncio.Queue[Notification]], maxsize: int) -> None:
        self._queues = queues
        self._queue: asyncio.Queue[Notification] = asyncio.Queue(maxsize)
        self._closed = False
        queues.append(self._queue)

    def __aiter__(self) -> NotificationStream:
        return self

    async def __anext__(self) -> Notification:
        if self._closed:
            raise StopAsyncIteration
        return await self._queue.get()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._queues.remove(self._queue)

    async def __aenter__(self) -> NotificationStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


# Applications may wrap the client in a subclass of their own, compiled or not.
@mypyc_attr(allow_interpreted_subclasses=True)
class Client:
    """An asyncio connection to the sidecar.

    Calls may be issued concurrently; each gets its own msgid. When the connection drops,
    pending calls fail with `ConnectionLostError`; the next call reconnects (with backoff)
    and says `hello` again with the same namespace. Nothing else is replayed: locks,
    leases and presence belonged to the old connection and are gone with it.
    """

    def __init__(
        self,
        path: str | None = None,
        *,
        namespace: str | None = None,
        client_name: str = "madsidecar-python",
        timeout: float | None = DEFAULT_TIMEOUT_S,
        reconnect: bool = True,
    ) -> None:
        self.path = path or default_socket_path()
        self.namespace = namespace
        self.client_name = client_name
        self.timeout = timeout
        self.reconnect = reconnect
        self.server_info: dict[str, Any] | None = None
        self._proto = ClientProtocol()
        self._wire: _Wire | None = None
        self._pending: dict[int, asyncio.Future[Any]] = {}
        # Calls awaiting a reply, in deadline order: (deadline, future, timeout).
        self._deadlines: collections.deque[tuple[float, asyncio.Future[Any], float]] = (
            collections.deque()
        )
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._handlers: dict[str, list[NotificationHandler]] = {}
        self._queues: list[asyncio.Queue[Notification]] = []
        self._handler_tasks: set[asyncio.Future[Any]] = set()
        self._connecting: asyncio.Task[None] | None = None
        self._closed = False
        self.on_disconnect: Callable[[Exception | None], Any] | None = None
        self.on_reconnect: Callable[[], Any] | None = None
        self._ever_connected = False

    @classmethod
    async def connect(cls, path: str | None = None, **kwargs: Any) -> Client:
        client = cls(path, **kwargs)
        await client._ensure_connected(client.timeout)
        return client

    async def __aenter__(self) -> Client:
        await self._ensure_connected(self.timeout)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._wire is not None and self._wire.transport is not None

    async def close(self) -> None:
        self._closed = True
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        wire = self._wire
        if wire is not None and wire.transport is not None:
            wire.transport.close()
        self._fail_pending(ConnectionLostError("client closed"))

    # -- calls --------------------------------------------------------------------------

    async def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Send one request and return its result; raises the error class of its code."""
        limit = effective_timeout(timeout, self.timeout, params)
        wire = self._connected_wire()
        if wire is None:
            await self._ensure_connected(limit)
            wire = self._connected_wire()
            if wire is None:
                raise ConnectionLostError(f"not connected to {self.path}")
        future = self._send(wire, method, params)
        timer = self._watch(future, limit)
        try:
            return await future
        finally:
            # A raised error's traceback holds this frame: without the future in it, error,
            # frame and future form no cycle, and are freed at once (not by the collector).
            del future
            if timer is not None:
                timer.cancel()

    async def pipeline(
        self,
        calls: Sequence[tuple[str, dict[str, Any] | None]],
        *,
        timeout: float | None = None,
    ) -> list[Any]:
        """Send many requests in one write; results in order.

        A request the sidecar refused appears as its `ServerError` in the list; a lost
        connection or a timeout raises, as for `call`."""
        limit = effective_timeout(timeout, self.timeout, None)
        if self._connected_wire() is None:
            await self._ensure_connected(limit)
        wire = self._connected_wire()
        if wire is None:
            raise ConnectionLostError(f"not connected to {self.path}")
        loop = asyncio.get_running_loop()
        proto, pending = self._proto, self._pending
        futures: list[asyncio.Future[Any]] = []
        frames = []
        for method, params in calls:
            msgid = proto.next_msgid(pending)
            future: asyncio.Future[Any] = loop.create_future()
            pending[msgid] = future
            futures.append(future)
            frames.append(proto.request(msgid, method, params))
        wire.send(b"".join(frames))
        # One timer for the whole batch, not one per request.
        timer = None if limit is None else loop.call_later(limit, _expire_all, futures, limit)
        try:
            for future in futures:
                if not future.done():
                    with contextlib.suppress(ServerError):
                        await future
        finally:
            if timer is not None:
                timer.cancel()
        return [_outcome(future) for future in futures]

    async def hello(self, namespace: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"client": self.client_name}
        if namespace or self.namespace:
            params["namespace"] = namespace or self.namespace
        info: dict[str, Any] = await self.call("hello", params)
        self.namespace = info.get("namespace", self.namespace)
        self.server_info = info
        return info

    async def ping(self) -> str:
        result: str = await self.call("ping")
        return result

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.call("stats")
        return result

    # -- notifications ------------------------------------------------------------------

    def on(self, name: str, handler: NotificationHandler) -> None:
        """Call `handler(notification)` for every notification called `name` ("*": all)."""
        self._handlers.setdefault(name, []).append(handler)

    def notifications(self, maxsize: int = 10_000) -> NotificationStream:
        """Every notification from now on, in order: `async for note in ...`; `aclose()`
        (or `async with`) ends the subscription."""
        return NotificationStream(self._queues, maxsize)

    # -- internals ----------------------------------------------------------------------

    def _on_deadline(self) -> None:
        deadlines = self._deadlines
        now = asyncio.get_running_loop().time()
        while deadlines and (deadlines[0][1].done() or deadlines[0][0] <= now):
            _, future, limit = deadlines.popleft()
            _expire(future, limit)
        self._deadline_timer = (
            asyncio.get_running_loop().call_at(deadlines[0][0], self._on_deadline)
            if deadlines
            else None
        )

    def _connected_wire(self) -> _Wire | None:
        wire = self._wire
        return wire if wire is not None and wire.transport is not None else None

    def _send(self, wire: _Wire, method: str, params: dict[str, Any] | None) -> asyncio.Future[Any]:
        msgid = self._proto.next_msgid(self._pending)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[msgid] = future
        wire.send(self._proto.request(msgid, method, params))
        return future

    def _watch(
        self, future: asyncio.Future[Any], limit: float | None
    ) -> asyncio.TimerHandle | None:
        """Fail `future` with CallTimeoutError after `limit` s; a timer of its own to
        cancel once answered, or None when the shared one watches it."""
        if limit is None:
            return None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done():
            deadlines.popleft()  # answered calls leave from the front, oldest first
        if not deadlines or deadline >= deadlines[-1][0]:
            # Deadlines in call order (the usual case: one timeout for every call) share
            # one timer for the oldest; a timer per call cost 1.5 us of every call.
            deadlines.append((deadline, future, limit))
            if self._deadline_timer is None:
                self._deadline_timer = loop.call_at(deadlines[0][0], self._on_deadline)
            return None
        return loop.call_later(limit, _expire, future, limit)

    async def _ensure_connected(self, limit: float | None) -> None:
        if self._closed:
            raise ConnectionLostError("client closed")
        if self._connecting is None or self._connecting.done():
            if self._ever_connected and not self.reconnect:
                raise ConnectionLostError(f"connection to {self.path} lost; reconnect is off")
            self._connecting = asyncio.create_task(self._connect_with_backoff())
        try:
            await asyncio.wait_for(asyncio.shield(self._connecting), limit)
        except TimeoutError:
            raise CallTimeoutError(f"could not connect to {self.path} within {limit} s") from None

    async def _connect_with_backoff(self) -> None:
        delay = RECONNECT_FIRST_S
        while True:
            try:
                await self._connect_once()
                return
            except OSError as exc:
                if not self.reconnect and not self._ever_connected:
                    raise ConnectionLostError(f"cannot connect to {self.path}: {exc}") from exc
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _connect_once(self) -> None:
        loop = asyncio.get_running_loop()
        _, wire = await loop.create_unix_connection(lambda: _Wire(self), self.path)
        self._proto.reset()
        self._wire = wire
        reconnected = self._ever_connected
        self._ever_connected = True
        if self.namespace is not None or reconnected:
            await self.call("hello", {"client": self.client_name, "namespace": self.namespace})
        if reconnected and self.on_reconnect is not None:
            self.on_reconnect()

    def _on_data(self, data: bytes) -> None:
        try:
            for message in self._proto.receive_data(data):
                if type(message) is Response:
                    self._resolve(message)
                else:
                    self._deliver(message)  # type: ignore[arg-type]
        except ProtocolViolationError as exc:
            self._fail_pending(exc)
            wire = self._wire
            if wire is not None and wire.transport is not None:
                wire.transport.close()
        except Exception as exc:  # undecodable bytes from the server
            self._fail_pending(ProtocolViolationError(f"unreadable reply: {exc}"))

    def _resolve(self, response: Response) -> None:
        future = self._pending.pop(response.msgid, None)
        if future is None or future.done():
            return
        if response.error is None:
            future.set_result(response.result)
        else:
            future.set_exception(error_from_map(response.error))

    def _deliver(self, note: Notification) -> None:
        for handler in [*self._handlers.get(note.name, ()), *self._handlers.get("*", ())]:
            try:
                result = handler(note)
                if asyncio.iscoroutine(result):
                    task = asyncio.ensure_future(result)
                    self._handler_tasks.add(task)
                    task.add_done_callback(self._handler_tasks.discard)
            except Exception:
                continue  # a broken handler must not stop replies being delivered
        for queue in self._queues:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(note)

    def _on_lost(self, wire: _Wire, exc: Exception | None) -> None:
        if wire is not self._wire:
            return
        self._wire = None
        self._fail_pending(ConnectionLostError(f"connection to {self.path} lost"))
        if self.on_disconnect is not None and not self._closed:
            self.on_disconnect(exc)

    def _fail_pending(self, exc: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(exc)


def _outcome(future: asyncio.Future[Any]) -> Any:
    """A pipelined call's result, its ServerError as a value, or the failure raised."""
    error = future.exception()
    if error is None:
        return future.result()
    if isinstance(error, ServerError):
        return error
    raise error


def _expire_all(futures: list[asyncio.Future[Any]], limit: float) -> None:
    error: CallTimeoutError | None = None
    for future in futures:
        if not future.done():
            error = error or CallTimeoutError(f"no reply within {limit} s")
            future.set_exception(error)


def _expire(future: asyncio.Future[Any], limit: float) -> None:
    if not future.done():
        future.set_exception(CallTimeoutError(f"no reply within {limit} s"))
