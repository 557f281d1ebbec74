"""A Hypothesis state machine against the sans-IO decoder: any mix of valid frames,
garbage, bad lengths, truncated and misshapen frames, cut into any chunks, interleaved with
reply encoding, must give exactly the events the contract (fuzz/oracle.py) requires."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from fuzz.oracle import HEADER_SIZE, check_events, check_reply, expected_events, packed
from madsidecar.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    NEED_DATA,
    Packed,
    ServerProtocol,
)

from .fuzzing import budget, values

uint32 = st.integers(0, 2**32 - 1)
method_names = st.sampled_from(["ping", "hello", "cache.set", "lock.acquire"]) | st.text(
    max_size=12
)
arguments = st.dictionaries(st.text(max_size=10), values, max_size=4)
# Whatever may sit in a request's slots, right or wrong.
anything = values | uint32 | method_names | st.just(()) | arguments.map(lambda a: (a,))


def header(length: int) -> bytes:
    return struct.pack(">I", length)


def framed(body: bytes) -> bytes:
    return header(len(body)) + body


class FrameStream(RuleBasedStateMachine):
    """One connection's byte stream. `stream` is every byte given to the decoder so far;
    the oracle says what the complete frames among them must have produced."""

    def __init__(self) -> None:
        super().__init__()
        self.max_frame = DEFAULT_MAX_FRAME_BYTES
        self.proto = ServerProtocol()
        self.stream = bytearray()
        self.events: list[Any] = []

    @initialize(max_frame=st.sampled_from([48, 512, 4096, DEFAULT_MAX_FRAME_BYTES]))
    def start(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.proto = ServerProtocol(max_frame)

    # -- feeding ------------------------------------------------------------------------

    def feed(self, data: bytes, split: st.DataObject) -> None:
        """Give `data` in chunks of any sizes; after each, drain or not (a server paused
        at max_inflight does not), as the draw says."""
        pos = 0
        while pos < len(data):
            size = split.draw(st.integers(1, max(1, len(data) - pos)), label="chunk")
            self.proto.receive_data(data[pos : pos + size])
            self.stream += data[pos : pos + size]
            pos += size
            if split.draw(st.booleans(), label="drain"):
                self.drain()

    @rule()
    def drain(self) -> None:
        while (event := self.proto.next_event()) is not NEED_DATA:
            self.events.append(event)
        outcome = expected_events(bytes(self.stream), self.max_frame)
        check_events(self.events, outcome.events, self.max_frame)
        assert self.proto.closed == outcome.closed
        # What is held is the incomplete frame and nothing else: never more than one
        # frame, and a refused header's body is never buffered.
        assert self.proto.buffered_bytes == outcome.waiting
        assert self.proto.buffered_bytes < HEADER_SIZE + self.max_frame
        assert len(self.proto._buf) == self.proto.buffered_bytes, "consumed bytes released"

    # -- what a client may send ---------------------------------------------------------

    @rule(msgid=uint32, method=method_names, args=arguments, split=st.data())
    def valid_request(self, msgid: int, method: str, args: dict[str, Any], split: Any) -> None:
        params = [args] if args or msgid % 2 else []
        self.feed(framed(packed([0, msgid, method, params])), split)

    @rule(batch=st.lists(st.tuples(uint32, method_names, arguments), max_size=6), split=st.data())
    def pipelined_requests(self, batch: list[tuple[int, str, dict[str, Any]]], split: Any) -> None:
        self.feed(b"".join(framed(packed([0, m, name, [a]])) for m, name, a in batch), split)

    @rule(body=st.binary(min_size=1, max_size=80), split=st.data())
    def garbage_body(self, body: bytes, split: Any) -> None:
        self.feed(framed(body), split)

    @rule(garbage=st.binary(min_size=1, max_size=40), split=st.data())
    def unframed_garbage(self, garbage: bytes, split: Any) -> None:
        self.feed(garbage, split)

    @rule(value=values, cut=st.integers(1, 64), split=st.data())
    def truncated_body(self, value: Any, cut: int, split: Any) -> None:
        body = packed([0, 1, "cache.set", [{"key": "k", "value": value}]])
        self.feed(framed(body[: max(1, len(body) - cut)]), split)

    @rule(first=values, second=values, split=st.data())
    def two_values_in_one_frame(self, first: Any, second: Any, split: Any) -> None:
        self.feed(framed(packed(first) + packed(second)), split)

    @rule(msgid=uint32, bad=st.sampled_from([b"\xa1\xff", b"\xa2\xc3\x28", b"\xa3\xed\xa0\x80"]))
    def invalid_utf8(self, msgid: int, bad: bytes) -> None:
        # A str slot holding bytes that are not UTF-8, as the method or an argument value.
        prefix = b"\x94\x00" + packed(msgid)
        for body in (prefix + bad + b"\x90", prefix + b"\xa4ping\x91\x81\xa1k" + bad):
            self.proto.receive_data(framed(body))
            self.stream += framed(body)

    @rule(msgid=uint32, key=values)
    def map_keyed_by_map(self, msgid: int, key: Any) -> None:
        body = b"\x94\x00" + packed(msgid) + b"\xa4ping\x91\x81\x81\xa1k" + packed(key) + b"\x01"
        self.proto.receive_data(framed(body))
        self.stream += framed(body)

    @rule(value=values, split=st.data())
    def any_single_value(self, value: Any, split: Any) -> None:
        self.feed(framed(packed(value)), split)

    @rule(
        kind=st.sampled_from([0, 1, 2, -1, True, False, 0.0, None, "0"]),
        msgid=anything,
        method=anything,
        params=anything,
        extra=st.lists(anything, max_size=2),
        length=st.integers(0, 6),
        split=st.data(),
    )
    def misshapen_request(
        self,
        kind: Any,
        msgid: Any,
        method: Any,
        params: Any,
        extra: list[Any],
        length: int,
        split: Any,
    ) -> None:
        message = [kind, msgid, method, params, *extra][:length]
        self.feed(framed(packed(message)), split)

    @rule(excess=st.integers(1, 2**32 - 1), body=st.binary(max_size=64), split=st.data())
    def oversize_length(self, excess: int, body: bytes, split: Any) -> None:
        self.feed(header(min(self.max_frame + excess, 2**32 - 1)) + body, split)

    @rule(after=st.binary(max_size=32), split=st.data())
    def zero_length(self, after: bytes, split: Any) -> None:
        self.feed(header(0) + after, split)

    @precondition(lambda self: self.max_frame > 8)
    @rule(data=st.data(), split=st.data())
    def truncated_frame(self, data: st.DataObject, split: Any) -> None:
        # A header promising more than follows: what comes next completes it.
        length = data.draw(st.integers(1, min(self.max_frame, 4096)), label="length")
        self.feed(header(length) + bytes(data.draw(st.integers(0, length - 1))), split)

    # -- replies, encoded between reads --------------------------------------------------

    @rule(msgid=uint32, result=values, how=st.sampled_from(["plain", "packed"]))
    def encode_response(self, msgid: int, result: Any, how: str) -> None:
        before = self.proto.buffered_bytes
        given = Packed(packed(result)) if how == "packed" else result
        check_reply(self.proto.response(msgid, given), [1, msgid, None, result])
        assert self.proto.buffered_bytes == before, "encoding never touches the input"

    @rule(msgid=uint32, code=st.sampled_from(["BAD_REQUEST", "NOT_HELD"]), message=st.text())
    def encode_error(self, msgid: int, code: str, message: str) -> None:
        error = {"code": code, "message": message}
        check_reply(self.proto.error_response(msgid, error), [1, msgid, error, None])

    @rule(name=st.text(min_size=1, max_size=20), payload=st.dictionaries(st.text(), values))
    def encode_notification(self, name: str, payload: dict[str, Any]) -> None:
        check_reply(self.proto.notification(name, payload), [2, name, [payload]])

    @rule(msgid=uint32, bad=st.sampled_from([object(), 2**64, -(2**63) - 1]))
    def encode_unencodable(self, msgid: int, bad: Any) -> None:
        # The connection turns this into INTERNAL; the next reply must not carry any of it.
        with pytest.raises((TypeError, OverflowError, ValueError)):
            self.proto.response(msgid, {"ok": [1, bad]})
        check_reply(self.proto.response(msgid, "ok"), [1, msgid, None, "ok"])

    @invariant()
    def closed_means_nothing_is_kept(self) -> None:
        if self.proto.closed:
            assert self.proto.buffered_bytes == 0


FrameStream.TestCase.settings = budget(100, stateful_step_count=40)
test_frame_stream = FrameStream.TestCase


def test_a_stream_after_a_refused_header_is_ignored() -> None:
    # The contract: the body of a bad length is never read or buffered, and neither is
    # anything after it, however it arrives.
    proto = ServerProtocol(max_frame_bytes=64)
    proto.receive_data(header(65)[:2])
    assert proto.next_event() is NEED_DATA
    proto.receive_data(header(65)[2:] + framed(msgpack.packb([0, 1, "ping", []])))
    event = proto.next_event()
    assert type(event).__name__ == "FatalFrame"
    assert proto.next_event() is NEED_DATA
    proto.receive_data(framed(msgpack.packb([0, 2, "ping", []])))
    assert proto.next_event() is NEED_DATA
    assert proto.buffered_bytes == 0
