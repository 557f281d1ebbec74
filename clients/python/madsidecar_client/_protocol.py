"""The client side of protocol v1, sans-IO: shared by the asyncio and blocking clients."""

from __future__ import annotations

import itertools
import os
import struct
from typing import Any, Final

import msgpack

from .errors import ProtocolViolationError

HEADER: Final = struct.Struct(">I")
DEFAULT_SOCKET: Final = "/run/madsidecar/madsidecar.sock"
DEFAULT_MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
_MSGID_SPACE: Final = 1 << 32


def default_socket_path() -> str:
    return os.environ.get("MADSIDECAR_SOCKET") or DEFAULT_SOCKET


class Response:
    __slots__ = ("error", "msgid", "result")

    def __init__(self, msgid: int, error: Any, result: Any) -> None:
        self.msgid = msgid
        self.error = error
        self.result = result


class Notification:
    """A server-initiated message: `name` and its `payload` map."""

    __slots__ = ("name", "payload")

    def __init__(self, name: str, payload: dict[str, Any]) -> None:
        self.name = name
        self.payload = payload

    def __repr__(self) -> str:
        return f"Notification({self.name!r}, {self.payload!r})"


class ClientProtocol:
    """Encodes requests with fresh msgids; decodes responses and notifications."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()
        self._packer = msgpack.Packer(use_bin_type=True)
        self._ids = itertools.count(1)

    def next_msgid(self, in_use: Any = ()) -> int:
        while True:
            msgid = next(self._ids) % _MSGID_SPACE
            if msgid not in in_use:
                return msgid

    def request(self, msgid: int, method: str, params: dict[str, Any] | None) -> bytes:
        body: bytes = self._packer.pack((0, msgid, method, (params,) if params else ()))
        return HEADER.pack(len(body)) + body

    def receive_data(self, data: bytes) -> list[Response | Notification]:
        """Feed bytes; returns every complete message they finish, in order."""
        if self._buf:
            self._buf += data
            data = bytes(self._buf)
            self._buf.clear()
        messages: list[Response | Notification] = []
        size = len(data)
        pos = 0
        unpack_header = HEADER.unpack_from
        while size - pos >= 4:
            (length,) = unpack_header(data, pos)
            end = pos + 4 + length
            if size < end:
                break
            value = msgpack.unpackb(data[pos + 4 : end], raw=False, strict_map_key=False)
            pos = end
            # Responses are nearly everything a client reads; check their shape first.
            if type(value) is list and len(value) == 4 and value[0] == 1:
                messages.append(Response(value[1], value[2], value[3]))
            else:
                messages.append(_to_message(value))
        if pos < size:
            self._buf += data[pos:]
        return messages

    def reset(self) -> None:
        self._buf.clear()


def _to_message(value: Any) -> Response | Notification:
    if isinstance(value, list):
        if len(value) == 4 and value[0] == 1 and isinstance(value[1], int):
            return Response(value[1], value[2], value[3])
        if len(value) == 3 and value[0] == 2 and isinstance(value[1], str):
            params = value[2]
            payload = params[0] if isinstance(params, list) and params else {}
            return Notification(value[1], payload if isinstance(payload, dict) else {})
    raise ProtocolViolationError(f"unexpected message from the sidecar: {value!r:.200}")
