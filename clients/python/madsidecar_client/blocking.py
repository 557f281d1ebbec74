"""The blocking client: the same protocol core over a plain socket, for scripts and
threads that do not run an event loop. One instance is not safe to share between threads
without a lock of your own."""

from __future__ import annotations

import collections
import contextlib
import select
import socket
import struct
import time
from collections.abc import Sequence
from typing import Any, Final

from mypy_extensions import mypyc_attr

from ._protocol import ClientProtocol, Notification, Response, default_socket_path
from .aio import DEFAULT_TIMEOUT_S, RECONNECT_FIRST_S, RECONNECT_MAX_S, effective_timeout
from .errors import CallTimeoutError, ConnectionLostError, ServerError, error_from_map

_READ_SIZE: Final = 256 * 1024
_TIMEVAL: Final = struct.Struct("@ll")


# Applications may wrap the client in a subclass of their own, compiled or not.
@mypyc_attr(allow_interpreted_subclasses=True)
class BlockingClient:
    def __init__(
        self,
        path: str | None = None,
        *,
        namespace: str | None = None,
        client_name: str = "madsidecar-python",
        timeout: float | None = DEFAULT_TIMEOUT_S,
        reconnect: bool = True,
        connect: bool = True,
    ) -> None:
        self.path = path or default_socket_path()
        self.namespace = namespace
        self.client_name = client_name
        self.timeout = timeout
        self.reconnect = reconnect
        self.server_info: dict[str, Any] | None = None
        self._proto = ClientProtocol()
        self._sock: socket.socket | None = None
        self._sock_timeout: float | None = None
        self._replies: dict[int, Response] = {}
        self._waiting: set[int] = set()
        self._notes: collections.deque[Notification] = collections.deque()
        self._ever_connected = False
        if connect:
            self._connect(self.timeout)

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        limit = effective_timeout(timeout, self.timeout, params)
        sock = self._socket(limit)
        msgid = self._proto.next_msgid(self._waiting)
        self._waiting.add(msgid)
        try:
            self._write(sock, self._proto.request(msgid, method, params))
            return _unwrap(self._read_until(msgid, limit))
        finally:
            self._waiting.discard(msgid)

    def pipeline(
        self,
        calls: Sequence[tuple[str, dict[str, Any] | None]],
        *,
        timeout: float | None = None,
    ) -> list[Any]:
        """Send many requests in one write; results in order.

        A request the sidecar refused appears as its `ServerError` in the list; a lost
        connection or a timeout raises, as for `call`."""
        limit = effective_timeout(timeout, self.timeout, None)
        sock = self._socket(limit)
        msgids = []
        frames = []
        for method, params in calls:
            msgid = self._proto.next_msgid(self._waiting)
            self._waiting.add(msgid)
            msgids.append(msgid)
            frames.append(self._proto.request(msgid, method, params))
        try:
            self._write_reading_replies(sock, b"".join(frames), limit)
            results: list[Any] = []
            for msgid in msgids:
                try:
                    results.append(_unwrap(self._read_until(msgid, limit)))
                except ServerError as exc:
                    results.append(exc)
            return results
        finally:
            self._waiting.difference_update(msgids)

    def hello(self, namespace: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"client": self.client_name}
        if namespace or self.namespace:
            params["namespace"] = namespace or self.namespace
        info: dict[str, Any] = self.call("hello", params)
        self.namespace = info.get("namespace", self.namespace)
        self.server_info = info
        return info

    def ping(self) -> str:
        result: str = self.call("ping")
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.call("stats")
        return result

    def next_notification(self, timeout: float | None = None) -> Notification | None:
        """The oldest notification received, waiting up to `timeout` s for one."""
        if self._notes:
            return self._notes.popleft()
        sock = self._socket(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._notes:
            if not self._receive(sock, deadline):
                return None
        return self._notes.popleft()

    # -- internals ----------------------------------------------------------------------

    def _socket(self, limit: float | None) -> socket.socket:
        if self._sock is None:
            if self._ever_connected and not self.reconnect:
                raise ConnectionLostError(f"connection to {self.path} lost; reconnect is off")
            self._connect(limit)
        assert self._sock is not None
        return self._sock

    def _connect(self, limit: float | None) -> None:
        deadline = None if limit is None else time.monotonic() + limit
        delay = RECONNECT_FIRST_S
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
                break
            except OSError as exc:
                sock.close()
                if not self.reconnect or (
                    deadline is not None and time.monotonic() + delay > deadline
                ):
                    raise ConnectionLostError(f"cannot connect to {self.path}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
        self._sock = sock
        self._sock_timeout = None
        self._proto.reset()
        self._replies.clear()
        reconnected = self._ever_connected
        self._ever_connected = True
        if self.namespace is not None or reconnected:
            self.call("hello", {"client": self.client_name, "namespace": self.namespace})

    def _write(self, sock: socket.socket, data: bytes) -> None:
        try:
            sock.sendall(data)
        except OSError as exc:
            self._drop()
            raise ConnectionLostError(f"connection to {self.path} lost: {exc}") from exc

    def _write_reading_replies(self, sock: socket.socket, data: bytes, limit: float | None) -> None:
        """Write a large batch while reading replies, so neither side's buffers fill up
        and stall both (the sidecar stops reading a client that does not read)."""
        deadline = None if limit is None else time.monotonic() + limit
        view = memoryview(data)
        sent = 0
        sock.setblocking(False)
        try:
            # An offset, not a shrinking memoryview: mypyc (this module may be compiled)
            # mishandled `view = view[n:]` reassigned in this loop.
            while sent < len(view):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    self._drop()
                    raise CallTimeoutError(f"could not send the pipeline within {limit} s")
                readable, writable, _ = select.select([sock], [sock], [], remaining)
                if readable:
                    self._receive_available(sock)
                if writable:
                    try:
                        sent += sock.send(view[sent:])
                    except BlockingIOError:
                        continue
                    except OSError as exc:
                        self._drop()
                        raise ConnectionLostError(f"connection to {self.path} lost: {exc}") from exc
        finally:
            if self._sock is not None:
                sock.setblocking(True)

    def _receive_available(self, sock: socket.socket) -> None:
        """Read what a non-blocking socket has, if anything."""
        with contextlib.suppress(BlockingIOError):
            self._recv_once(sock)

    def _recv_once(self, sock: socket.socket) -> None:
        """One recv, absorbed; a closed or broken connection raises ConnectionLostError.
        BlockingIOError and TimeoutError pass through for the caller to judge."""
        try:
            data = sock.recv(_READ_SIZE)
        except (BlockingIOError, TimeoutError):
            raise
        except OSError as exc:
            self._drop()
            raise ConnectionLostError(f"connection to {self.path} lost: {exc}") from exc
        if not data:
            self._drop()
            raise ConnectionLostError(f"connection to {self.path} closed by the sidecar")
        self._absorb(data)

    def _read_until(self, msgid: int, limit: float | None) -> Response:
        deadline = None if limit is None else time.monotonic() + limit
        sock = self._sock
        while msgid not in self._replies:
            if sock is None or not self._receive(sock, deadline):
                raise CallTimeoutError(f"no reply within {limit} s")
        return self._replies.pop(msgid)

    def _receive(self, sock: socket.socket, deadline: float | None) -> bool:
        """Read once; False when the deadline passed first."""
        if deadline is None:
            self._set_timeout(sock, None)
        else:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # Changing the timeout costs a syscall: keep the one set unless a recv could
            # outlast the deadline, or it is so short that waits would spin.
            current = self._sock_timeout
            if current is None or current > remaining or current < remaining / 2:
                self._set_timeout(sock, remaining)
        try:
            self._recv_once(sock)
        except (TimeoutError, BlockingIOError):
            return deadline is not None and time.monotonic() < deadline
        return True

    def _set_timeout(self, sock: socket.socket, timeout: float | None) -> None:
        """A kernel-side timeout (SO_RCVTIMEO/SO_SNDTIMEO) on a blocking socket: unlike
        Python's socket timeouts it needs no poll() before every send and recv."""
        if timeout == self._sock_timeout:
            return
        seconds = 0.0 if timeout is None else max(timeout, 0.001)
        whole = int(seconds)
        value = _TIMEVAL.pack(whole, int((seconds - whole) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
        self._sock_timeout = timeout

    def _absorb(self, data: bytes) -> None:
        for message in self._proto.receive_data(data):
            if type(message) is Response:
                if message.msgid in self._waiting:
                    self._replies[message.msgid] = message
            else:
                self._notes.append(message)  # type: ignore[arg-type]

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _unwrap(response: Response) -> Any:
    if response.error is not None:
        raise error_from_map(response.error)
    return response.result
