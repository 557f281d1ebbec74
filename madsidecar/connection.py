"""One client connection: a thin asyncio shell around `ServerProtocol`.

Flow control is explicit, in the manner of uvicorn: reading pauses while `max_inflight`
requests are unanswered or while the client is not reading our replies (the transport's
write buffer is over its high-water mark), so a stalled client holds a bounded amount of
memory and never slows anyone else down.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable
from time import perf_counter
from types import CoroutineType, NoneType
from typing import TYPE_CHECKING, Any, Final, cast

import structlog

from .config import PolicyRule
from .deferred import Deferred
from .errors import (
    BadRequest,
    ErrorCode,
    Forbidden,
    ShuttingDown,
    SidecarError,
    UnknownMethod,
    error_map,
    quoted,
)
from .methods import Method
from .ordering import RequestOrder
from .peer import UNKNOWN_PEER, PeerCredentials, read_peer_credentials, rule_for
from .protocol import (
    HEADER_SIZE,
    NEED_DATA,
    FatalFrame,
    InvalidMessage,
    Packed,
    Request,
    ServerProtocol,
)
from .request_metrics import CLOSED, UNKNOWN_METHOD, RequestMetrics

if TYPE_CHECKING:
    from .server import Server

log = structlog.get_logger("madsidecar.connection")

_ALWAYS_ALLOWED: Final = frozenset({"ping", "hello"})


class ClientConnection(asyncio.Protocol):
    def __init__(self, server: Server, conn_id: int) -> None:
        self._server = server
        self._proto = ServerProtocol(server.config.max_frame_bytes)
        self._methods = server.table.by_name
        self._max_reply = server.config.max_frame_bytes + HEADER_SIZE
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        # Requests still running: tasks, and the calls waiting on a `Deferred` answer.
        self._tasks: set[asyncio.Future[None] | DeferredCall] = set()
        # None unless metrics are enabled: then each answer is counted and timed, from the
        # read that brought its request in (one clock read per read, not per request).
        self._metrics: RequestMetrics | None = server.request_metrics
        self._arrived = 0.0
        # Methods answered inline since the last flush: timed together, with one clock read.
        self._answered_inline: list[str] = []
        self._order = RequestOrder()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._reading_paused = False
        self._writing_paused = False
        self._bad_frames = 0
        self.conn_id = conn_id
        self.peer: PeerCredentials = UNKNOWN_PEER
        self.rule: PolicyRule | None = None
        self._namespace = "default"
        self._allowed: set[str] = set()
        self.client_name: str | None = None
        self.closed = False
        self.requests = 0

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self.peer = read_peer_credentials(transport.get_extra_info("socket"))
        self.rule = rule_for(self._server.config.policy, self.peer)
        self._server.connection_opened(self)
        log.info(
            "client_connected",
            conn=self.conn_id,
            pid=self.peer.pid,
            uid=self.peer.uid,
            gid=self.peer.gid,
            allowed=self.rule is not None,
        )
        if self._server.draining:
            self.notify("shutdown", {"deadline_ms": 0})

    def data_received(self, data: bytes) -> None:
        if self._metrics is not None:
            self._arrived = perf_counter()
        self._proto.receive_data(data)
        self._process()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._transport = None
        for task in self._tasks:
            task.cancel()
        self._server.connection_closed(self)
        log.info(
            "client_disconnected",
            conn=self.conn_id,
            pid=self.peer.pid,
            requests=self.requests,
            bad_frames=self._bad_frames,
        )

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._process()

    # -- what handlers see --------------------------------------------------------------

    @property
    def inflight(self) -> frozenset[asyncio.Future[None]]:
        """The requests of this connection still running, as futures to wait on."""
        return frozenset(_awaitable(task) for task in self._tasks)

    @property
    def congested(self) -> bool:
        return self._writing_paused

    def notify(self, name: str, payload: dict[str, Any]) -> None:
        self._send(self._proto.notification(name, payload))

    def refresh_rule(self) -> None:
        self.rule = rule_for(self._server.config.policy, self.peer)
        self._allowed.clear()

    def close(self) -> None:
        self._flush()
        if self._transport is not None:
            self._transport.close()

    async def cancel_inflight(self) -> None:
        """Refuse what is still running (drain deadline passed); each gets SHUTTING_DOWN."""
        tasks: list[asyncio.Future[None]] = []
        for task in list(self._tasks):
            if isinstance(task, DeferredCall):
                self._refuse_deferred(task)
            else:
                task.cancel()
                tasks.append(task)
        if tasks:
            await asyncio.wait(tasks)

    # -- reading and dispatch -----------------------------------------------------------

    def _process(self) -> None:
        proto = self._proto
        limit = self._server.config.max_inflight
        while not self.closed:
            if len(self._tasks) >= limit or self._writing_paused:
                self._pause_reading()
                break
            event = proto.next_event()
            if event is NEED_DATA:
                self._resume_reading()
                break
            kind = type(event)
            if kind is Request:
                self._dispatch(event)  # type: ignore[arg-type]
            elif kind is InvalidMessage:
                self._reject(event)  # type: ignore[arg-type]
            else:
                self._fail(event)  # type: ignore[arg-type]
                break
        self._flush()
        # After the write, so that timing answers never delays them.
        if self._answered_inline:
            self._record_inline()

    def _dispatch(self, request: Request) -> None:
        self.requests += 1
        server = self._server
        server.requests += 1
        started = self._arrived
        method = self._methods.get(request.method)
        try:
            if method is None:
                raise UnknownMethod(f"no such method: {quoted(request.method)}")
            if server.draining:
                raise ShuttingDown("the sidecar is shutting down")
            if method.name not in _ALWAYS_ALLOWED and method.group not in self._allowed:
                self._authorize(method)
            args = method.bind(request.args) if request.args or method.args else request.args
        except SidecarError as exc:
            name = UNKNOWN_METHOD if method is None else method.name
            self._out.append(self._error_response(request.msgid, name, exc, started))
            return
        # Nothing can be ahead of this call when nothing of this connection is running.
        if method.is_async or (self._tasks and self._order.must_wait(method, args)):
            # Async work, or an inline handler that must queue behind its key.
            self._start_task(method, request.msgid, args, started)
            return
        try:
            result = method.handler(self, args)
        except SidecarError as exc:
            self._out.append(self._error_response(request.msgid, method.name, exc, started))
            return
        except Exception:
            self._out.append(self._internal_error(request.msgid, method.name, started))
            return
        if type(result) is Deferred:
            self._start_deferred(method, request.msgid, args, result, started)
            return
        if _is_awaitable(result):
            # An inline handler that could not answer at once (an L1 miss, say) hands
            # back the rest of its work; it runs as a task in this request's place.
            self._start_task(method, request.msgid, args, started, result)
            return
        self._out.append(self._encode_result(request.msgid, method.name, result, started, True))

    def _authorize(self, method: Method) -> None:
        rule = self.rule
        if rule is None or not rule.allows_group(method.group):
            raise Forbidden(f"this peer may not call {method.name}")
        if method.group != "core" and not rule.allows_namespace(self.namespace):
            raise Forbidden(f"this peer may not use namespace {quoted(self.namespace)}")
        # Remembered until the rule or the namespace changes.
        self._allowed.add(method.group)

    @property
    def namespace(self) -> str:
        return self._namespace

    @namespace.setter
    def namespace(self, value: str) -> None:
        self._namespace = value
        self._allowed.clear()

    def _start_task(
        self,
        method: Method,
        msgid: int,
        args: dict[str, Any],
        started_at: float,
        started: Awaitable[Any] | None = None,
    ) -> None:
        ordered = method.ordered_by is not None or method.barrier
        waits = (
            [_awaitable(t) for t in self._order.predecessors(method, args, self._tasks)]
            if ordered or self._tasks
            else []
        )
        task = self._loop.create_task(self._run(method, msgid, args, waits, started_at, started))
        self._tasks.add(task)
        if ordered:
            self._order.register(method, args, task)

    async def _run(
        self,
        method: Method,
        msgid: int,
        args: dict[str, Any],
        waits: list[asyncio.Future[None]],
        started_at: float,
        started: Awaitable[Any] | None,
    ) -> None:
        reply: bytes | None = None
        try:
            if waits:
                await asyncio.wait(waits)
            result = started if started is not None else method.handler(self, args)
            if _is_awaitable(result):
                result = await result
            reply = self._encode_result(msgid, method.name, result, started_at)
        except SidecarError as exc:
            reply = self._error_response(msgid, method.name, exc, started_at)
        except asyncio.CancelledError:
            if self._server.draining and not self.closed:
                reply = self._error_response(
                    msgid, method.name, ShuttingDown("the sidecar is shutting down"), started_at
                )
            elif self._metrics is not None:
                self._metrics.failed(method.name, CLOSED, started_at)
        except Exception:
            reply = self._internal_error(msgid, method.name, started_at)
        finally:
            task = asyncio.current_task()
            self._tasks.discard(task)
            self._order.release(method, args, task)
        if reply is not None:
            self._send(reply)
        if self._reading_paused and not self._writing_paused:
            self._process()

    def _start_deferred(
        self,
        method: Method,
        msgid: int,
        args: dict[str, Any],
        deferred: Deferred,
        started_at: float,
    ) -> None:
        call = DeferredCall(self, method, msgid, args, started_at, deferred)
        self._tasks.add(call)
        if method.ordered_by is not None or method.barrier:
            self._order.register(method, args, call)
        deferred.pending.add_done_callback(call.ready)

    def _deferred_ready(self, call: DeferredCall) -> None:
        deferred = call.deferred
        if call.done():  # cancelled: the connection closed, or the drain refused it
            if deferred.abandoned is not None:
                deferred.abandoned()
            # Still listed: the connection closed (a refusal was counted when it was sent).
            if call in self._tasks and self._metrics is not None:
                self._metrics.failed(call.method.name, CLOSED, call.started_at)
            return
        method = call.method
        try:
            result = deferred.resolve()
            if type(result) is Deferred:
                call.deferred = result
                result.pending.add_done_callback(call.ready)
                return
            reply = self._encode_result(call.msgid, method.name, result, call.started_at)
        except SidecarError as exc:
            reply = self._error_response(call.msgid, method.name, exc, call.started_at)
        except Exception:
            reply = self._internal_error(call.msgid, method.name, call.started_at)
        self._end_deferred(call)
        call.finish()
        self._send(reply)
        if self._reading_paused and not self._writing_paused:
            self._process()

    def _end_deferred(self, call: DeferredCall) -> None:
        self._tasks.discard(call)
        self._order.release(call.method, call.args, call)

    def _refuse_deferred(self, call: DeferredCall) -> None:
        self._end_deferred(call)
        call.cancel()
        if not self.closed:
            refusal = ShuttingDown("the sidecar is shutting down")
            self._send(self._error_response(call.msgid, call.method.name, refusal, call.started_at))

    def _encode_result(
        self, msgid: int, method: str, result: Any, started_at: float, inline: bool = False
    ) -> bytes:
        try:
            reply = self._proto.response(msgid, result)
        except Exception:
            return self._internal_error(msgid, method, started_at)
        if len(reply) > self._max_reply:
            too_large = BadRequest(
                f"{method}: the result ({len(reply) - HEADER_SIZE} bytes) exceeds "
                "max_frame_bytes; ask for less at a time"
            )
            return self._error_response(msgid, method, too_large, started_at)
        metrics = self._metrics
        if metrics is not None:
            if inline:
                self._answered_inline.append(method)
            else:
                metrics.answered(method, started_at)
        return reply

    def _record_inline(self) -> None:
        if self._metrics is not None:
            self._metrics.answered_together(self._answered_inline, self._arrived)
        self._answered_inline.clear()

    def _error_response(
        self, msgid: int, method: str, exc: SidecarError, started_at: float
    ) -> bytes:
        if self._metrics is not None:
            self._metrics.failed(method, str(exc.code), started_at)
        return self._proto.error_response(msgid, exc.to_map())

    def _internal_error(self, msgid: int, method: str, started_at: float) -> bytes:
        if self._metrics is not None:
            self._metrics.failed(method, str(ErrorCode.INTERNAL), started_at)
        error_id = uuid.uuid4().hex[:16]
        log.exception("internal_error", conn=self.conn_id, method=method, error_id=error_id)
        return self._proto.error_response(
            msgid, error_map(ErrorCode.INTERNAL, "internal error", error_id=error_id)
        )

    def _reject(self, event: InvalidMessage) -> None:
        self._bad_frames += 1
        if self._bad_frames == 1:
            log.warning(
                "client_sent_invalid_message",
                conn=self.conn_id,
                pid=self.peer.pid,
                code=event.error["code"],
                reason=event.error["message"],
            )
        if event.msgid is not None:
            self._out.append(self._proto.error_response(event.msgid, event.error))
        else:
            self._out.append(self._proto.notification("error", event.error))

    def _fail(self, event: FatalFrame) -> None:
        log.warning(
            "client_sent_bad_frame_header",
            conn=self.conn_id,
            pid=self.peer.pid,
            code=event.error["code"],
            reason=event.error["message"],
        )
        self._out.append(self._proto.notification("error", event.error))
        self.close()

    # -- writing ------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        if self.closed:
            return
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        transport = self._transport
        if transport is None:
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()


class DeferredCall:
    """A request whose answer waits on a `Deferred`: what answering it takes, and an
    asyncio future only once something must wait on it (a request ordered after it, a
    drain). Most never need one, and making one per request cost a tenth of a rate-limit
    check's time in the sidecar."""

    __slots__ = (
        "_done",
        "_future",
        "args",
        "connection",
        "deferred",
        "method",
        "msgid",
        "started_at",
    )

    def __init__(
        self,
        connection: ClientConnection,
        method: Method,
        msgid: int,
        args: dict[str, Any],
        started_at: float,
        deferred: Deferred,
    ) -> None:
        self.connection = connection
        self.method = method
        self.msgid = msgid
        self.args = args
        self.started_at = started_at
        self.deferred = deferred
        self._done = False
        self._future: asyncio.Future[None] | None = None

    def ready(self, _: object) -> None:
        """The pending reply is in (a done-callback)."""
        self.connection._deferred_ready(self)

    def done(self) -> bool:
        return self._done

    def finish(self) -> None:
        self._done = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    def cancel(self) -> None:
        """Answered no more: the connection closed, or the drain refused it."""
        self._done = True
        if self._future is not None:
            self._future.cancel()

    def future(self) -> asyncio.Future[None]:
        if self._future is None:
            self._future = asyncio.get_running_loop().create_future()
            if self._done:
                self._future.set_result(None)
        return self._future


def _awaitable(task: object) -> asyncio.Future[None]:
    """A running request (a task, or a DeferredCall) as something to wait on."""
    return task.future() if isinstance(task, DeferredCall) else cast(asyncio.Future[None], task)


# What a handler's answer is when it is the result itself, checked first because it is
# the common case. Anything else with __await__ is the rest of the work: a coroutine, or a
# compiled module's coroutine object (not a CoroutineType).
_PLAIN_RESULTS: Final = frozenset({dict, Packed, NoneType, list, str, int, bool, bytes, float})


def _is_awaitable(result: object) -> bool:
    kind = type(result)
    if kind in _PLAIN_RESULTS:
        return False
    return kind is CoroutineType or hasattr(kind, "__await__")
