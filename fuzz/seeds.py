"""Writes the seed corpus of the frame decoder target (fuzz/corpus/): one input per kind
of frame the contract names, so a short run starts from every branch of the decoder.

    .venv/bin/python -m fuzz.seeds
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import msgpack

CORPUS = Path(__file__).resolve().parent / "corpus"


def frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def value(message: object) -> bytes:
    return frame(msgpack.packb(message, use_bin_type=True))


def seeds() -> dict[str, bytes]:
    ping = value([0, 1, "ping", []])
    hello = value([0, 2, "hello", [{"namespace": "billing", "client": "fuzz"}]])
    stored = value(
        [
            0,
            3,
            "cache.set",
            [{"key": "k", "value": {"a": [1, 2.5, b"\x00"], 7: None, (1, "x"): True}}],
        ]
    )
    streams = {
        "ping": ping,
        "pipeline": ping + hello + stored,
        "timestamp_and_ext": value(
            [0, 4, "cache.set", [{"value": [msgpack.Timestamp(1, 2), msgpack.ExtType(5, b"e")]}]]
        ),
        "not_msgpack": frame(b"\xc1") + ping,
        "two_values": frame(b"\x01\x02") + ping,
        "truncated_body": frame(msgpack.packb([0, 5, "ping", []])[:-1]) + ping,
        "not_utf8": frame(b"\x94\x00\x06\xa2\xff\xfe\x90") + ping,
        "map_keyed_by_map": frame(b"\x94\x00\x07\xa4ping\x91\x81\x81\x80\x01\x01"),
        "not_an_array": value({"hello": "world"}) + value("hi"),
        "method_not_str": value([0, 8, 17, []]),
        "msgid_past_uint32": value([0, 2**32, "ping", []]),
        "msgid_negative": value([0, -1, "ping", []]),
        "msgid_bool": value([0, True, "ping", []]),
        "params_shapes": value([0, 9, "m", [{}, {}]]) + value([0, 10, "m", [{1: "x"}]]),
        "response_sent": value([1, 11, None, "x"]) + value([2, "note", [{}]]),
        "zero_length": ping + b"\x00\x00\x00\x00" + ping,
        "too_large": ping + b"\x7f\xff\xff\xff" + ping,
        "incomplete": ping + b"\x00\x00\x01\x00\x94",
    }
    # Byte 0: max_frame_bytes (255: the default; 2: 33 bytes), byte 1: the chunk size.
    inputs: dict[str, bytes] = {}
    for name, stream in streams.items():
        inputs[f"{name}-default"] = b"\xff\x00" + stream
        inputs[f"{name}-small-chunks"] = b"\x02\x02" + stream
    return inputs


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    for name, data in seeds().items():
        digest = hashlib.sha1(data).hexdigest()[:8]
        (CORPUS / f"{name}-{digest}").write_bytes(data)


if __name__ == "__main__":
    main()
