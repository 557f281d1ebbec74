"""Protocol v1, sans-IO: bytes in, events out; events in, bytes out.

Nothing here touches a socket or an event loop. The server feeds whatever bytes it read to
`ServerProtocol.receive_data` and pulls events with `next_event` until it gets `NEED_DATA`;
it turns replies into bytes with `response`, `error_response` and `notification`.

Framing: a 4-byte big-endian length N, then N bytes holding exactly one MessagePack value.
The length is checked against `max_frame_bytes` from the header alone, so an oversized
frame is refused before a single byte of its body is buffered.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgpack
from mypy_extensions import mypyc_attr

from .errors import ErrorCode, error_map, quoted

DEFAULT_MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
HEADER: Final = struct.Struct(">I")
HEADER_SIZE: Final = HEADER.size
MAX_MSGID: Final = 0xFFFFFFFF

REQUEST: Final = 0
RESPONSE: Final = 1
NOTIFICATION: Final = 2

# Keep the buffer's consumed head around until it is this large: compacting a bytearray
# costs a memmove of everything after it, so doing it once per frame would be quadratic.
_COMPACT_AFTER: Final = 64 * 1024


# A plain Python class even when this module is compiled: mypyc's native classes cannot
# derive from bytes.
@mypyc_attr(native_class=False)
class Packed(bytes):
    """A result already encoded as MessagePack: sent as it is, not packed again.

    Lets a handler splice stored MessagePack (a cached value) into its reply."""

    __slots__ = ()


class NeedData:
    """Sentinel: no complete frame is buffered; feed more bytes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData()


class Request:
    """A well-formed request: `[0, msgid, method, params]`."""

    __slots__ = ("args", "method", "msgid")

    def __init__(self, msgid: int, method: str, args: dict[str, Any]) -> None:
        self.msgid = msgid
        self.method = method
        self.args = args

    def __repr__(self) -> str:
        # Argument names only: values may be secrets (session tokens) and must not reach
        # a log line through a repr.
        names = sorted(self.args) if isinstance(self.args, dict) else type(self.args).__name__
        return f"Request(msgid={self.msgid}, method={self.method!r}, args={names})"


class InvalidMessage:
    """A frame that cannot be served. The connection stays usable.

    When `msgid` is set, the error is answered as the response to that msgid; otherwise
    it goes out as an `error` notification.
    """

    __slots__ = ("error", "msgid")

    def __init__(self, error: dict[str, Any], msgid: int | None) -> None:
        self.error = error
        self.msgid = msgid

    def __repr__(self) -> str:
        return f"InvalidMessage(msgid={self.msgid}, error={self.error!r})"


class FatalFrame:
    """A frame header the stream cannot recover from: send `error`, then close."""

    __slots__ = ("error",)

    def __init__(self, error: dict[str, Any]) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"FatalFrame(error={self.error!r})"


Event = Request | InvalidMessage | FatalFrame | NeedData


def _unpack(body: bytearray) -> Any:
    # use_list=False: arrays become tuples, so maps keyed by arrays stay decodable;
    # they pack back as arrays, so values round-trip unchanged on the wire.
    return msgpack.unpackb(body, raw=False, use_list=False, strict_map_key=False)


class ServerProtocol:
    """The server side of one connection's byte stream."""

    __slots__ = ("_buf", "_closed", "_max_frame", "_packer", "_pos")

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._max_frame = max_frame_bytes
        self._buf = bytearray()
        self._pos = 0
        self._closed = False
        self._packer = msgpack.Packer(use_bin_type=True)

    @property
    def closed(self) -> bool:
        """True once a fatal frame was seen; later bytes are ignored."""
        return self._closed

    @property
    def buffered_bytes(self) -> int:
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes) -> None:
        if not self._closed:
            self._buf += data

    def next_event(self) -> Event:
        if self._closed:
            return NEED_DATA
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < HEADER_SIZE:
            self._compact()
            return NEED_DATA
        (length,) = HEADER.unpack_from(buf, pos)
        if length == 0 or length > self._max_frame:
            return self._fail_fatally(length)
        end = pos + HEADER_SIZE + length
        if len(buf) < end:
            self._compact()
            return NEED_DATA
        try:
            value = _unpack(buf[pos + HEADER_SIZE : end])
        except Exception as exc:  # msgpack raises several unrelated types
            value = _BadBody(exc)
        self._pos = end
        if end >= _COMPACT_AFTER:
            self._compact()
        # The common cases, without the general checks: no arguments, or one map of them.
        if (
            type(value) is tuple
            and len(value) == 4
            and value[0] == REQUEST
            and type(value[0]) is int
            and type(value[1]) is int
            and 0 <= value[1] <= MAX_MSGID
            and type(value[2]) is str
        ):
            params = value[3]
            if params == ():
                return Request(value[1], value[2], {})
            if type(params) is tuple and len(params) == 1 and type(params[0]) is dict:
                for name in params[0]:
                    if type(name) is not str:
                        break
                else:
                    return Request(value[1], value[2], params[0])
        if type(value) is _BadBody:
            return InvalidMessage(error_map(ErrorCode.BAD_FRAME, value.describe()), None)
        return _to_request(value)

    def response(self, msgid: int, result: Any) -> bytes:
        if type(result) is Packed:
            head: bytes = self._packer.pack(msgid)
            size = HEADER.pack(len(head) + len(result) + 3)
            return b"".join((size, b"\x94\x01", head, b"\xc0", result))
        body: bytes = self._packer.pack((RESPONSE, msgid, None, result))
        return HEADER.pack(len(body)) + body

    def error_response(self, msgid: int, error: dict[str, Any]) -> bytes:
        frame = self._frame((RESPONSE, msgid, error, None))
        if len(frame) - HEADER_SIZE > self._max_frame:
            frame = self._frame((RESPONSE, msgid, _shortened(error), None))
        return frame

    def notification(self, name: str, payload: dict[str, Any]) -> bytes:
        frame = self._frame((NOTIFICATION, name, (payload,)))
        if name == "error" and len(frame) - HEADER_SIZE > self._max_frame:
            frame = self._frame((NOTIFICATION, name, (_shortened(payload),)))
        return frame

    def _frame(self, message: tuple[Any, ...]) -> bytes:
        body: bytes = self._packer.pack(message)
        return HEADER.pack(len(body)) + body

    def _compact(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0

    def _fail_fatally(self, length: int) -> FatalFrame:
        self._closed = True
        self._buf = bytearray()
        self._pos = 0
        if length == 0:
            return FatalFrame(error_map(ErrorCode.BAD_FRAME, "zero-length frame"))
        return FatalFrame(
            error_map(
                ErrorCode.FRAME_TOO_LARGE,
                f"frame of {length} bytes exceeds max_frame_bytes={self._max_frame}",
                max_frame_bytes=self._max_frame,
            )
        )


def _shortened(error: dict[str, Any]) -> dict[str, Any]:
    """An error map cut to fit any frame (max_frame_bytes is at least 1024): the server
    never sends a frame larger than max_frame_bytes, not even an error about a huge one.
    Messages quote what clients sent in short already; this is the last line."""
    shortened: dict[str, Any] = {}
    for name, value in error.items():
        if type(value) is str:
            shortened[name] = value if len(value) <= 200 else value[:197] + "..."
        elif value is None or type(value) in (int, bool, float):
            shortened[name] = value
    return shortened


class _BadBody:
    __slots__ = ("exc",)

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def describe(self) -> str:
        if isinstance(self.exc, msgpack.ExtraData):
            return "frame body holds more than one MessagePack value"
        if isinstance(self.exc, UnicodeDecodeError):
            return "frame body holds a str that is not valid UTF-8"
        if isinstance(self.exc, TypeError):
            return f"frame body holds a map key that cannot be used as a key ({self.exc})"
        return f"frame body is not a valid MessagePack value ({type(self.exc).__name__})"


def _to_request(value: Any) -> Request | InvalidMessage:
    if type(value) is not tuple or len(value) != 4 or value[0] != REQUEST:
        return _bad_shape(value, "a request is the array [0, msgid, method, params]")
    kind, msgid, method, params = value
    if type(kind) is not int:
        return _bad_shape(value, "a request is the array [0, msgid, method, params]")
    if type(msgid) is not int or not 0 <= msgid <= MAX_MSGID:
        return _bad_shape(value, "msgid must be a uint32")
    if type(method) is not str:
        return _bad_shape(value, "method must be a str")
    if type(params) is not tuple or len(params) > 1:
        return _bad_shape(value, "params must be an array of zero or one map")
    if not params:
        return Request(msgid, method, {})
    args = params[0]
    if type(args) is not dict:
        return _bad_shape(value, "params[0] must be a map of named arguments")
    for name in args:
        if type(name) is not str:
            return _bad_shape(value, f"argument names must be str, got {quoted(name)}")
    return Request(msgid, method, args)


def _bad_shape(value: Any, message: str) -> InvalidMessage:
    """Answer the msgid when one can be read from the value, else notify."""
    msgid: int | None = None
    if type(value) is tuple and len(value) >= 2 and type(value[1]) is int and value[1] >= 0:
        msgid = value[1]
    return InvalidMessage(error_map(ErrorCode.BAD_REQUEST, message), msgid)


def encode_frame(value: Any) -> bytes:
    """Frame one value; for clients, tests and tools."""
    body: bytes = msgpack.packb(value, use_bin_type=True)
    return HEADER.pack(len(body)) + body
