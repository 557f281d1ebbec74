"""What protocol v1 says a server must make of a byte stream, written from the contract
(PROTOCOL.md sections 1, 2 and 4; docs/protocol.md sections 2 and 3) rather than from
`ServerProtocol`, so the fuzzers can hold the decoder to it.

Both the Hypothesis state machine (tests/test_fuzz_protocol.py) and the libFuzzer target
(fuzz/frame_decoder.py) compare the decoder's events with `expected_events`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgpack

HEADER_SIZE: Final = 4
# The smallest max_frame_bytes a configuration may set: with it or more, every error the
# server sends about a frame must fit in a frame itself. The fuzzers also decode with less,
# to reach the length checks with short inputs.
MIN_MAX_FRAME_BYTES: Final = 1024
MAX_MSGID: Final = 0xFFFFFFFF
# The only codes a decoder may produce on its own: everything else comes from handlers.
FRAME_CODES: Final = frozenset({"BAD_FRAME", "FRAME_TOO_LARGE", "BAD_REQUEST"})


@dataclass(frozen=True)
class Expected:
    """One event the contract requires: a request to serve, an invalid message (answered
    on `msgid`, or notified when it is None), or a fatal header (notify, then close)."""

    kind: str  # "request", "invalid" or "fatal"
    code: str | None = None
    msgid: int | None = None
    method: str | None = None
    args: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    events: list[Expected]
    # Bytes of an incomplete frame still waiting for the rest; 0 once the stream is closed.
    waiting: int
    closed: bool


def expected_events(stream: bytes, max_frame_bytes: int) -> Outcome:
    """The events for every complete frame of `stream`, in order."""
    events: list[Expected] = []
    pos = 0
    while len(stream) - pos >= HEADER_SIZE:
        length = int.from_bytes(stream[pos : pos + HEADER_SIZE], "big")
        # The length alone decides: a bad one is refused before any of the body arrives.
        if length == 0:
            events.append(Expected("fatal", "BAD_FRAME"))
            return Outcome(events, 0, True)
        if length > max_frame_bytes:
            events.append(Expected("fatal", "FRAME_TOO_LARGE"))
            return Outcome(events, 0, True)
        end = pos + HEADER_SIZE + length
        if end > len(stream):
            break
        events.append(classify_body(stream[pos + HEADER_SIZE : end]))
        pos = end
    return Outcome(events, len(stream) - pos, False)


def classify_body(body: bytes) -> Expected:
    """The event for one complete frame body."""
    try:
        # Arrays as tuples: a map keyed by an array is a valid value. A map keyed by a map
        # cannot be decoded at all, which docs/protocol.md lists as BAD_FRAME.
        value = msgpack.unpackb(body, raw=False, use_list=False, strict_map_key=False)
    except Exception:  # msgpack has no common base class for "not one valid value"
        return Expected("invalid", "BAD_FRAME")
    request = _as_request(value)
    if request is not None:
        return request
    msgid = None
    if type(value) is tuple and len(value) >= 2 and type(value[1]) is int and value[1] >= 0:
        msgid = value[1]
    return Expected("invalid", "BAD_REQUEST", msgid)


def _as_request(value: Any) -> Expected | None:
    if type(value) is not tuple or len(value) != 4:
        return None
    kind, msgid, method, params = value
    if type(kind) is not int or kind != 0:
        return None
    if type(msgid) is not int or not 0 <= msgid <= MAX_MSGID or type(method) is not str:
        return None
    if type(params) is not tuple or len(params) > 1:
        return None
    args = params[0] if params else {}
    if type(args) is not dict or any(type(name) is not str for name in args):
        return None
    return Expected("request", None, msgid, method, args)


def packed(value: Any) -> bytes:
    """A value's MessagePack bytes: compares values exactly (NaN, 1 vs 1.0 vs True)."""
    return bytes(msgpack.packb(value, use_bin_type=True))


def check_events(got: list[Any], want: list[Expected], max_frame_bytes: int) -> None:
    """Raise AssertionError unless the decoder's events are what the contract requires."""
    assert len(got) == len(want), f"{len(got)} events for {len(want)} frames: {got!r}"
    for index, (event, expected) in enumerate(zip(got, want, strict=True)):
        where = f"event {index} ({event!r}, expected {expected!r})"
        name = type(event).__name__
        if expected.kind == "request":
            assert name == "Request", where
            assert (event.msgid, event.method) == (expected.msgid, expected.method), where
            assert type(event.args) is dict, where
            assert packed(event.args) == packed(expected.args), where
            continue
        assert name == ("FatalFrame" if expected.kind == "fatal" else "InvalidMessage"), where
        error = event.error
        assert type(error) is dict and error.get("code") in FRAME_CODES, where
        assert error["code"] == expected.code, where
        assert type(error.get("message")) is str and error["message"], where
        if expected.code == "FRAME_TOO_LARGE":
            assert error.get("max_frame_bytes") == max_frame_bytes, where
        if expected.kind == "invalid":
            assert event.msgid == expected.msgid, where
        # The error goes out as a response or an `error` notification, and the server
        # never sends a frame larger than max_frame_bytes (docs/protocol.md, section 2).
        if expected.kind == "invalid" and expected.msgid is not None:
            reply = packed([1, expected.msgid, error, None])
        else:
            reply = packed([2, "error", [error]])
        if max_frame_bytes >= MIN_MAX_FRAME_BYTES:
            assert len(reply) <= max_frame_bytes, f"{where}: a reply of {len(reply)} bytes"


def check_reply(frame: bytes, want: Any) -> None:
    """A reply the server encoded is one frame holding exactly `want`."""
    assert len(frame) >= HEADER_SIZE
    length = int.from_bytes(frame[:HEADER_SIZE], "big")
    assert length == len(frame) - HEADER_SIZE, "the length prefix covers the body exactly"
    assert frame[HEADER_SIZE:] == packed(want)
