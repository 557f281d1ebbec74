"""Arbitrary arguments for every method of the table, sent to a real sidecar on a real
Redis: each reply is a success or an error with a contract code (never INTERNAL), the
connection survives, and the sidecar still answers `ping`.

The generated maps mix right and wrong: missing and unknown keys, wrong types, ints
around and far past each bound, names past 512 UTF-8 bytes, large strings, bin where a
str belongs, str bytes that are not UTF-8, nested values.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .fuzzing import budget, values
from .rawclient import RawConnection
from .support import RedisProcess, SidecarProcess
from .vectors.generate import METHODS

TABLE: list[dict[str, Any]] = json.loads(METHODS.read_text())["methods"]
BY_NAME = {method["name"]: method for method in TABLE}

# Errors a caller can act on. INTERNAL is a bug; UNKNOWN_METHOD cannot happen for a
# method of the table; SHUTTING_DOWN nothing here causes.
CONTRACT_CODES = {"BAD_REQUEST", "FORBIDDEN", "NOT_HELD", "TIMEOUT", "UNAVAILABLE"}

# A str whose bytes are swapped for invalid UTF-8 once packed: the frame is then not one
# valid MessagePack value, so the server must answer BAD_FRAME and keep the connection.
NOT_UTF8_MARK = "\x00not-utf8-mark\x00"  # 15 bytes, packed as 0xaf + the bytes
NOT_UTF8_PACKED = b"\xaf" + NOT_UTF8_MARK.encode()
NOT_UTF8_BYTES = b"\xaf" + b"\xff" * 15

RULES = """
[[ratelimit_rules]]
name = "api"
limit = 5
window_ms = 1000
"""

# Bounded waits stay short when valid, so a lock or lease held by an earlier example
# makes an example wait milliseconds, not the hours the range allows.
SHORT = {"wait_ms", "lease_ms"}
CHOICES = {
    "algorithm": ["sliding_window", "sliding_counter", "gcra", "token_bucket", ""],
    "on_redis_down": ["allow", "deny", "local", "maybe"],
    "rule": ["api", "nope"],
}

short_names = st.text(alphabet="abk:{}", min_size=1, max_size=3)
long_names = (
    st.sampled_from([510, 511, 512, 513, 600]).map(lambda n: "x" * n)
    | st.sampled_from([255, 256, 257]).map(lambda n: "é" * n)
    | st.sampled_from([128, 129]).map(lambda n: "🎉" * n)
)
huge_strs = st.sampled_from([4096, 70_000, 300_000]).map(lambda n: "s" * n)
wrong = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.binary(max_size=8)
    | st.just(NOT_UTF8_MARK)
    | st.lists(short_names, max_size=3)
    | st.dictionaries(short_names, st.integers(-(2**63), 2**63), max_size=2)
    | st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=4))
)


def int_values(spec: dict[str, Any]) -> st.SearchStrategy[Any]:
    low = spec.get("minimum", -(2**63))
    high = spec.get("maximum", 2**64 - 1)
    valid = (
        st.integers(low, min(high, low + 50)) if spec["name"] in SHORT else st.integers(low, high)
    )
    edges = [
        v for v in (low - 1, low, high, high + 1, -(2**63), 2**64 - 1) if -(2**63) <= v < 2**64
    ]
    if spec["name"] in SHORT:
        edges = [v for v in edges if not low + 50 < v <= high]
    return valid | st.sampled_from(edges) | st.sampled_from([1.0, True, "10"])


def names_values() -> st.SearchStrategy[Any]:
    item = short_names | long_names | wrong
    return st.lists(short_names, max_size=5) | st.lists(item, max_size=4) | st.just([])


def check_values() -> st.SearchStrategy[Any]:
    """ratelimit.hit_many's checks: arrays of maps shaped like hit's arguments, or not."""
    one = arguments_for(BY_NAME["ratelimit.hit"])
    return st.lists(one, min_size=1, max_size=4) | st.lists(one, max_size=70) | wrong


def value_for(spec: dict[str, Any]) -> st.SearchStrategy[Any]:
    name, kind = spec["name"], spec["type"]
    if name in CHOICES:
        return st.sampled_from(CHOICES[name]) | wrong
    if name == "checks":
        return check_values()
    if kind == "name":
        return short_names | short_names | long_names | st.just("") | wrong
    if kind == "int":
        return int_values(spec) | wrong
    if kind == "bool":
        return st.booleans() | wrong
    if kind == "str":
        return short_names | st.text(max_size=40) | huge_strs | st.just("") | wrong
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), values, max_size=4) | wrong
    if kind == "names":
        return names_values() | wrong
    return values | huge_strs | wrong  # "any"


@st.composite
def arguments_for(draw: st.DrawFn, method: dict[str, Any]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for spec in method["args"]:
        # Required arguments are there more often than not, so the checks after the
        # first one get exercised too.
        present = draw(st.integers(0, 9)) < (8 if spec["required"] else 5)
        if present:
            args[spec["name"]] = draw(value_for(spec))
    for unknown in draw(st.lists(st.sampled_from(["extra", "Key", "ttl", ""]), max_size=2)):
        args[unknown] = draw(values)
    return args


def encode_request(msgid: int, method: str, args: dict[str, Any]) -> tuple[bytes, bool]:
    """The frame, and whether it holds a str that is not UTF-8."""
    body = msgpack.packb([0, msgid, method, [args]], use_bin_type=True)
    broken = NOT_UTF8_PACKED in body
    body = body.replace(NOT_UTF8_PACKED, NOT_UTF8_BYTES)
    return len(body).to_bytes(4, "big") + body, broken


def reply_to(conn: RawConnection, msgid: int) -> Any:
    """The response to `msgid`, past notifications (presence diffs, pub/sub messages)
    the earlier calls of the example subscribed to; a framing error fails."""
    while True:
        message = conn.receive(timeout=15)
        if message[0] == 1 and message[1] == msgid:
            return message
        assert message[0] == 2 and message[1] != "error", message


@pytest.fixture(scope="module")
def sidecar_socket() -> Iterator[str]:
    redis = RedisProcess().start()
    sidecar = SidecarProcess(redis.url, config_toml=RULES).start()
    try:
        yield sidecar.socket_path
        assert sidecar.process is not None and sidecar.process.poll() is None, sidecar.log()
        conn = RawConnection(sidecar.socket_path)
        assert conn.call(1, "ping") == [1, 1, None, "pong"]
        conn.close()
        assert "internal_error" not in sidecar.log()
    finally:
        sidecar.stop()
        redis.stop()


msgids = itertools.count(1)


@pytest.mark.parametrize("name", [method["name"] for method in TABLE])
def test_any_arguments_get_a_contract_answer(name: str, sidecar_socket: str) -> None:
    method = BY_NAME[name]
    declared = {spec["name"] for spec in method["args"]}

    @budget(60)
    @given(calls=st.lists(arguments_for(method), min_size=1, max_size=3))
    def run(calls: list[dict[str, Any]]) -> None:
        conn = RawConnection(sidecar_socket)
        try:
            for args in calls:
                msgid = next(msgids) % 2**32
                frame, broken = encode_request(msgid, name, args)
                conn.send_raw(frame)
                if broken:
                    note = conn.receive(timeout=15)
                    assert note[0] == 2 and note[1] == "error", note
                    assert note[2][0]["code"] == "BAD_FRAME", note
                    continue
                _, _, error, result = reply_to(conn, msgid)
                if error is None:
                    continue
                assert result is None
                assert error["code"] in CONTRACT_CODES, error
                assert type(error["message"]) is str
                if error["code"] == "BAD_REQUEST":
                    # The message names what was wrong: an argument given or declared.
                    named = declared | {key for key in args if type(key) is str}
                    assert error.get("argument") in named, error
                    assert error["argument"] in error["message"], error
            msgid = next(msgids) % 2**32
            conn.request(msgid, "ping")
            assert reply_to(conn, msgid)[3] == "pong"
        finally:
            conn.close()

    run()
