"""Conformance vectors for every SDK, made by the Python protocol module.

    python -m tests.vectors.generate          write protocol-v1.json and methods.json
    python -m tests.vectors.generate --check  exit 1 if the files are out of date

Each vector is one message with its exact frame bytes (hex). An SDK must produce `frame`
from a request's `method`, `msgid` and `args`, and decode each response and notification
`frame` into what the vector says. The values are written in tagged JSON (see ENCODING),
so that types JSON cannot tell apart (bin, float, integers past 2**53) survive.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from madsidecar.app import describe_methods
from madsidecar.errors import ErrorCode, error_map
from madsidecar.protocol import NEED_DATA, Request, ServerProtocol, encode_frame

HERE = Path(__file__).resolve().parent
VECTORS = HERE / "protocol-v1.json"
METHODS = HERE / "methods.json"
SAFE_INT = 2**53 - 1

ENCODING = {
    "number": "a JSON number is a MessagePack int, always within +-(2**53 - 1)",
    "$int": '{"$int": "decimal"}: a MessagePack int outside +-(2**53 - 1)',
    "$float": '{"$float": number}: a MessagePack float 64',
    "$bin": '{"$bin": "hex"}: MessagePack bin',
    "$map": '{"$map": [[key, value], ...]}: a map whose keys are not all str',
    "object": "any other JSON object is a map with str keys, in the order written",
    "others": "JSON str, true, false, null and arrays are MessagePack str, bool, nil, array",
    "frame": "the whole frame, length prefix included, as lowercase hex",
    "request args": "encoded in the order methods.json lists the method's arguments "
    "(a hit_many check: in ratelimit.hit's order), absent optional arguments omitted; "
    "no arguments: params is the empty array",
    "request values": "maps inside values sent in requests have their keys in sorted order, "
    "so an SDK whose native maps are unordered can match them by sorting",
}

# Every kind of value an application may store, publish or attach.
VALUES: dict[str, Any] = {
    "nil": None,
    "true": True,
    "int_small": 7,
    "int_negative": -33,
    "int_u16": 65535,
    "int_u32": 4294967296,
    "int_i64_min": -(2**63),
    "int_u64_max": 2**64 - 1,
    "int_past_js_safe": 2**53 + 1,
    "float": 1.5,
    "float_integral": 2.0,
    "str_unicode": "héllo, 世界 🎉",
    "str_long": "x" * 300,
    "bin": b"\x00\xffmad\x80",
    "array": [1, "two", [3.25, None], False],
    "map_nested": {"a": {"b": [1, 2, {"c": b"\x01"}]}, "n": -1},
    "map_int_keys": {1: "one", 2: "two"},
}

BIG_FENCE = 2**62 + 3


def requests() -> Iterator[dict[str, Any]]:
    yield _request("ping", 1, None)
    yield _request("ping", 4294967295, None, "msgid uint32 max")
    yield _request("stats", 128, None)
    yield _request("health", 65536, None)
    yield _request(
        "hello", 2, {"client": "madsidecar-rust", "version": "0.1.0", "namespace": "gateway"}
    )
    yield _request("hello", 3, {"namespace": "default"}, "namespace only")
    yield _request("cache.get", 10, {"key": "project:42:config"})
    yield _request("cache.mget", 11, {"keys": ["a", "b", "é"]})
    for label, value in VALUES.items():
        yield _request("cache.set", 12, {"key": "k", "value": value}, f"value {label}")
    yield _request("cache.set", 13, {"key": "k", "value": {"x": 1}, "ttl_ms": 60000}, "with ttl_ms")
    yield _request("cache.delete", 14, {"keys": ["a"]})
    yield _request("cache.invalidate", 15, {"prefix": "project:"})
    yield _request("cache.fetch", 16, {"key": "k"})
    yield _request(
        "cache.fetch",
        17,
        {"key": "k", "ttl_ms": 30000, "lease_ms": 10000, "wait_ms": 5000, "refresh_ahead_ms": 1000},
        "every argument",
    )
    yield _request(
        "cache.fill", 18, {"key": "k", "lease": "IAi9O-0kuz5vKnP5pfJeCIqL", "value": b"\x01\x02"}
    )
    yield _request(
        "cache.fill", 19, {"key": "k", "lease": "L", "value": [1], "ttl_ms": 1000}, "with ttl_ms"
    )
    yield _request("cache.warm", 20, {"prefix": "p"})
    yield _request("lock.acquire", 30, {"name": "migrations"})
    yield _request(
        "lock.acquire",
        31,
        {"name": "jobs", "ttl_ms": 30000, "wait_ms": 86400000, "renew": False},
        "every argument",
    )
    yield _request(
        "lock.release", 32, {"name": "jobs", "token": "2bf848f116e533c03c8b84cfd676af28"}
    )
    yield _request("lock.extend", 33, {"name": "jobs", "token": "t", "ttl_ms": 2000})
    yield _request("lock.inspect", 34, {"name": "jobs"})
    yield _request("session.create", 40, {"user_id": "u1"})
    yield _request(
        "session.create",
        41,
        {
            "user_id": "u1",
            "data": {"role": "admin"},
            "idle_ttl_ms": 1800000,
            "absolute_ttl_ms": 31622400000,
        },
        "every argument",
    )
    yield _request("session.get", 42, {"token": "Ulb44yh9KGPFfK82bkRVUe2qu22o2SCqdQgVrzFfj4s"})
    yield _request("session.get", 43, {"token": "t", "touch": False}, "no touch")
    yield _request("session.update", 44, {"token": "t", "data": {"cart": [1, 2]}})
    yield _request("session.rotate", 45, {"token": "t"})
    yield _request("session.revoke", 46, {"token": "t"}, "by token")
    yield _request("session.revoke", 47, {"session_id": "uOBjpUKtgkMFoy5pTdbAuA"}, "by session_id")
    yield _request("session.revoke_user", 48, {"user_id": "u1"})
    yield _request(
        "session.revoke_user", 49, {"user_id": "u1", "except_session_id": "s"}, "except one"
    )
    yield _request("session.list", 50, {"user_id": "u1"})
    yield _request("presence.track", 60, {"channel": "room:1", "key": "alice"})
    yield _request(
        "presence.track",
        61,
        {"channel": "room:1", "key": "alice", "meta": {"status": "away"}},
        "with meta",
    )
    yield _request(
        "presence.update",
        62,
        {"channel": "room:1", "ref": "0a7c.Uv2Z", "meta": {"status": "online"}},
    )
    yield _request("presence.untrack", 63, {"channel": "room:1", "ref": "0a7c.Uv2Z"})
    yield _request("presence.list", 64, {"channel": "room:1"})
    yield _request("presence.count", 65, {"channel": "room:1"})
    yield _request("presence.subscribe", 66, {"channel": "room:1"})
    yield _request("presence.unsubscribe", 67, {"channel": "room:1"})
    yield _request(
        "pubsub.publish", 70, {"channel": "news", "message": {"body": "hi", "id": 2**53 + 1}}
    )
    yield _request("pubsub.subscribe", 71, {"channel": "news"})
    yield _request("pubsub.unsubscribe", 72, {"channel": "news"})
    yield _request("ratelimit.hit", 80, {"key": "ip:10.0.0.1", "limit": 100, "window_ms": 60000})
    yield _request(
        "ratelimit.hit",
        81,
        {
            "key": "user:7",
            "limit": 10,
            "window_ms": 1000,
            "algorithm": "gcra",
            "on_redis_down": "local",
            "cost": 3,
        },
        "every argument",
    )
    yield _request("ratelimit.hit", 82, {"key": "user:7", "rule": "api", "cost": 2}, "by rule")
    yield _request(
        "ratelimit.hit_many",
        83,
        {
            "checks": [
                {"key": "ip:1", "limit": 100, "window_ms": 60000},
                {"key": "user:7", "rule": "api"},
                {
                    "key": "user:7",
                    "limit": 5,
                    "window_ms": 1000,
                    "algorithm": "sliding_counter",
                    "cost": 2,
                },
            ]
        },
    )
    yield _request("ratelimit.peek", 84, {"key": "ip:1", "limit": 100, "window_ms": 60000})
    yield _request("ratelimit.peek", 85, {"key": "ip:1", "rule": "api"}, "by rule")
    yield _request("ratelimit.reset", 86, {"key": "ip:1"})
    yield _request("ratelimit.reset", 87, {"key": "ip:1", "rule": "api"}, "by rule")


def responses() -> Iterator[dict[str, Any]]:
    yield _response("ping", 1, "pong")
    yield _response(
        "hello",
        2,
        {
            "server": "madsidecar",
            "version": "0.1.0",
            "protocol": 1,
            "node_id": "node-a",
            "namespace": "gateway",
            "max_frame_bytes": 4194304,
            "methods": ["cache.get", "hello", "ping"],
        },
    )
    yield _response(
        "stats",
        3,
        {
            "uptime_ms": 7,
            "connections": 2,
            "requests": 3,
            "node_id": "node-a",
            "redis": {"connected": True, "latency_ms": None, "latency_us": None, "commands": 3},
            "cache": {
                "l1_hits": 1,
                "l2_hits": 2,
                "misses": 3,
                "l1_entries": 4,
                "l1_bytes": 5,
                "feed_live": True,
            },
            "locks": {"held": 0, "waiting": 0},
            "presence": {"tracked": 0},
            "ratelimit": {"checks": 0},
        },
        "unknown fields and nil latency",
    )
    yield _response("health", 4, {"ok": True, "redis_latency_ms": 0, "redis_latency_us": 73})
    yield _response("cache.get", 10, None, "miss")
    for label, value in VALUES.items():
        yield _response(
            "cache.get", 10, {"value": value, "source": "l1", "ttl_ms": 4988}, f"hit {label}"
        )
    yield _response(
        "cache.get",
        10,
        {"value": "old", "source": "l1", "ttl_ms": 0, "stale": True},
        "stale while Redis is down",
    )
    yield _response(
        "cache.mget",
        11,
        [
            {"value": {"a": 1}, "source": "l2", "ttl_ms": 4989},
            None,
            {"value": b"\x00", "source": "l1", "ttl_ms": 1},
        ],
    )
    yield _response("cache.set", 12, {"ok": True})
    yield _response("cache.delete", 14, {"deleted": 1})
    yield _response("cache.invalidate", 15, {"deleted": 12345})
    yield _response("cache.fetch", 16, {"lease": "IAi9O-0kuz5vKnP5pfJeCIqL"}, "lease")
    yield _response("cache.fetch", 16, {"value": 2, "source": "l2", "ttl_ms": 3568748}, "hit")
    yield _response("cache.fill", 18, {"ok": True})
    yield _response("cache.warm", 20, {"loaded": 1})
    yield _response(
        "lock.acquire",
        30,
        {
            "acquired": True,
            "token": "2bf848f116e533c03c8b84cfd676af28",
            "fence": 1795687664815445,
            "ttl_ms": 30000,
        },
        "acquired",
    )
    yield _response(
        "lock.acquire",
        30,
        {"acquired": True, "token": "t", "fence": BIG_FENCE, "ttl_ms": 1000},
        "fence past 2**53",
    )
    yield _response("lock.acquire", 31, {"acquired": False, "ttl_ms": 1000}, "held by another")
    yield _response("lock.release", 32, {"released": True})
    yield _response("lock.extend", 33, {"extended": False, "ttl_ms": 0})
    yield _response("lock.inspect", 34, {"held": True, "ttl_ms": 1000, "fence": 1795687664815445})
    yield _response("lock.inspect", 34, {"held": False, "ttl_ms": 0, "fence": 0}, "never taken")
    yield _response(
        "session.create",
        40,
        {
            "token": "Ulb44yh9KGPFfK82bkRVUe2qu22o2SCqdQgVrzFfj4s",
            "session_id": "uOBjpUKtgkMFoy5pTdbAuA",
            "expires_at_ms": 1795689464816,
        },
    )
    yield _response(
        "session.get",
        42,
        {
            "session_id": "uOBjpUKtgkMFoy5pTdbAuA",
            "user_id": "u1",
            "data": {"role": "admin", "ids": [1, 2**60]},
            "created_at_ms": 1795687664816,
            "last_seen_ms": 1795687664900,
            "expires_at_ms": 1795689464816,
        },
        "found",
    )
    yield _response("session.get", 42, None, "unknown token")
    yield _response("session.update", 44, {"updated": True})
    yield _response(
        "session.rotate", 45, {"token": "oma-CwwUKGerwGWTBNhNHEDbpLS-vcawdFdWpofqXTA"}, "rotated"
    )
    yield _response("session.rotate", 45, None, "unknown token")
    yield _response("session.revoke", 46, {"revoked": True})
    yield _response("session.revoke_user", 48, {"revoked": 3})
    yield _response(
        "session.list",
        50,
        [
            {
                "session_id": "uOBjpUKtgkMFoy5pTdbAuA",
                "created_at_ms": 1795687664816,
                "last_seen_ms": 1795687664816,
                "expires_at_ms": 1795689464816,
                "data": {},
            }
        ],
    )
    yield _response("session.list", 50, [], "none")
    entry = {
        "ref": "0a7c9cdf87fa.Uv2ZntQo40mr",
        "meta": {"s": 1},
        "node_id": "node-a",
        "online_at_ms": 1795687664818,
    }
    yield _response("presence.track", 60, {"ref": "0a7c9cdf87fa.Uv2ZntQo40mr"})
    yield _response("presence.update", 62, {"updated": True})
    yield _response("presence.untrack", 63, {"removed": False})
    yield _response("presence.list", 64, {"members": {"alice": [entry], "bob": [entry, entry]}})
    yield _response("presence.list", 64, {"members": {}}, "empty")
    yield _response("presence.count", 65, {"keys": 2, "refs": 3})
    yield _response("presence.subscribe", 66, {"members": {"alice": [entry]}, "version": 1})
    yield _response("presence.unsubscribe", 67, {"ok": True})
    yield _response("pubsub.publish", 70, {"receivers": 2})
    yield _response("pubsub.subscribe", 71, {"ok": True})
    yield _response("pubsub.unsubscribe", 72, {"ok": True})
    allowed = {
        "allowed": True,
        "limit": 100,
        "remaining": 99,
        "reset_ms": 60000,
        "retry_after_ms": 0,
    }
    denied = {
        "allowed": False,
        "limit": 1,
        "remaining": 0,
        "reset_ms": 1000,
        "retry_after_ms": 1000,
    }
    yield _response("ratelimit.hit", 80, allowed, "allowed")
    yield _response("ratelimit.hit", 80, denied, "denied")
    yield _response("ratelimit.hit", 80, {**allowed, "degraded": True}, "degraded")
    yield _response(
        "ratelimit.hit",
        80,
        {**allowed, "shadow": True, "would_deny": True},
        "shadow rule that would deny",
    )
    yield _response(
        "ratelimit.hit_many",
        83,
        {
            "allowed": False,
            "results": [allowed, denied, {**allowed, "remaining": -1, "evaluated": False}],
        },
    )
    yield _response("ratelimit.peek", 84, allowed)
    yield _response("ratelimit.reset", 86, {"ok": True})
    yield from errors()


def errors() -> Iterator[dict[str, Any]]:
    yield _error(
        "cache.get",
        90,
        error_map(
            ErrorCode.BAD_REQUEST, "cache.get: missing required argument 'key'", argument="key"
        ),
    )
    yield _error("nope", 91, error_map(ErrorCode.UNKNOWN_METHOD, "no such method: 'nope'"))
    yield _error(
        "hello", 92, error_map(ErrorCode.FORBIDDEN, "namespace 'x' is not allowed for this peer")
    )
    yield _error(
        "cache.set",
        93,
        error_map(ErrorCode.UNAVAILABLE, "Redis is unreachable", retry_after_ms=250),
    )
    yield _error(
        "lock.extend", 94, error_map(ErrorCode.NOT_HELD, "the token does not hold the lock")
    )
    yield _error("cache.fetch", 95, error_map(ErrorCode.TIMEOUT, "wait_ms ran out"))
    yield _error("lock.acquire", 96, error_map(ErrorCode.SHUTTING_DOWN, "the sidecar is draining"))
    yield _error("stats", 97, error_map(ErrorCode.INTERNAL, "internal error", error_id="7f3a9c"))
    yield _error(
        "ping",
        98,
        {"code": "SOMETHING_NEW", "message": "a code this SDK does not know"},
        "unknown code",
    )


def notifications() -> Iterator[dict[str, Any]]:
    entry = {"ref": "r1", "meta": {"s": 2}, "node_id": "node-b", "online_at_ms": 1795687664819}
    yield _notification(
        "lock.lost",
        {"name": "jobs", "token": "57bfbd155c661d926828119970bb7ef7", "fence": 1795687664823575},
    )
    yield _notification(
        "lock.lost", {"name": "jobs", "token": "t", "fence": BIG_FENCE}, "fence past 2**53"
    )
    yield _notification(
        "presence.diff",
        {
            "channel": "room:1",
            "version": 2,
            "joins": {"alice": [entry]},
            "leaves": {"alice": [{**entry, "meta": {"s": 1}}]},
        },
    )
    yield _notification(
        "presence.diff",
        {"channel": "room:1", "version": 3, "joins": {}, "leaves": {"bob": [entry]}},
        "leave only",
    )
    yield _notification(
        "presence.state", {"channel": "room:1", "version": 7, "members": {"alice": [entry]}}
    )
    for label in ("str_unicode", "bin", "map_nested", "int_u64_max"):
        yield _notification(
            "pubsub.message", {"channel": "news", "message": VALUES[label]}, f"message {label}"
        )
    yield _notification("pubsub.dropped", {"channel": "news", "dropped": 12})
    yield _notification("shutdown", {"deadline_ms": 5000})
    yield _notification("error", error_map(ErrorCode.BAD_FRAME, "zero-length frame"))
    yield _notification("something.new", {"x": 1}, "unknown name: ignore it")


def _request(
    method: str, msgid: int, args: dict[str, Any] | None, label: str = ""
) -> dict[str, Any]:
    params = (args,) if args else ()
    for name, value in (args or {}).items():
        if name != "checks":
            _check_sorted_maps(value)
    frame = encode_frame((0, msgid, method, params))
    _check_server_reads(frame, msgid, method, args or {})
    vector: dict[str, Any] = {"name": _name(method, label), "method": method, "msgid": msgid}
    if args:
        vector["args"] = tagged(args)
    vector["frame"] = frame.hex()
    return vector


def _response(method: str, msgid: int, result: Any, label: str = "") -> dict[str, Any]:
    frame = ServerProtocol().response(msgid, result)
    return {
        "name": _name(method, label),
        "method": method,
        "msgid": msgid,
        "result": tagged(result),
        "frame": frame.hex(),
    }


def _error(method: str, msgid: int, error: dict[str, Any], label: str = "") -> dict[str, Any]:
    frame = ServerProtocol().error_response(msgid, error)
    name = _name(method, label or str(error["code"]))
    return {
        "name": name,
        "method": method,
        "msgid": msgid,
        "error": tagged(error),
        "frame": frame.hex(),
    }


def _notification(name: str, payload: dict[str, Any], label: str = "") -> dict[str, Any]:
    frame = ServerProtocol().notification(name, payload)
    return {
        "name": _name(name, label),
        "notification": name,
        "payload": tagged(payload),
        "frame": frame.hex(),
    }


def _name(method: str, label: str) -> str:
    return f"{method} ({label})" if label else method


def _check_sorted_maps(value: Any) -> None:
    if isinstance(value, dict):
        assert list(value) == sorted(value), f"request value map keys not sorted: {list(value)}"
        for item in value.values():
            _check_sorted_maps(item)
    elif isinstance(value, list):
        for item in value:
            _check_sorted_maps(item)


def _check_server_reads(frame: bytes, msgid: int, method: str, args: dict[str, Any]) -> None:
    """A request vector the server would not read as that request is a broken vector."""
    server = ServerProtocol()
    server.receive_data(frame)
    event = server.next_event()
    assert isinstance(event, Request), event
    assert (event.msgid, event.method) == (msgid, method)
    assert server.next_event() is NEED_DATA


def tagged(value: Any) -> Any:
    """`value` as tagged JSON (ENCODING)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value if abs(value) <= SAFE_INT else {"$int": str(value)}
    if isinstance(value, float):
        return {"$float": value}
    if isinstance(value, bytes):
        return {"$bin": value.hex()}
    if isinstance(value, (list, tuple)):
        return [tagged(item) for item in value]
    if isinstance(value, dict):
        if all(isinstance(key, str) and not key.startswith("$") for key in value):
            return {key: tagged(item) for key, item in value.items()}
        return {"$map": [[tagged(key), tagged(item)] for key, item in value.items()]}
    raise TypeError(f"no tagged JSON for {type(value).__name__}")


def untagged(value: Any) -> Any:
    """The inverse of `tagged`: tagged JSON back to the Python value msgpack decodes."""
    if isinstance(value, list):
        return [untagged(item) for item in value]
    if isinstance(value, dict):
        if "$int" in value:
            return int(value["$int"])
        if "$float" in value:
            return float(value["$float"])
        if "$bin" in value:
            return bytes.fromhex(value["$bin"])
        if "$map" in value:
            return {untagged(key): untagged(item) for key, item in value["$map"]}
        return {key: untagged(item) for key, item in value.items()}
    return value


def method_table() -> list[dict[str, Any]]:
    """Every method the sidecar serves, with its arguments in their canonical order."""
    return describe_methods()


def render() -> dict[Path, str]:
    vectors = {
        "protocol": 1,
        "encoding": ENCODING,
        "requests": list(requests()),
        "responses": list(responses()),
        "notifications": list(notifications()),
    }
    methods = {"protocol": 1, "methods": method_table()}
    _check_argument_order(vectors["requests"], methods["methods"])
    return {
        VECTORS: json.dumps(vectors, indent=1, ensure_ascii=False) + "\n",
        METHODS: json.dumps(methods, indent=1, ensure_ascii=False) + "\n",
    }


def _check_argument_order(vectors: list[dict[str, Any]], methods: list[dict[str, Any]]) -> None:
    order = {m["name"]: [a["name"] for a in m["args"]] for m in methods}
    covered = {v["method"] for v in vectors}
    assert covered == set(order), f"methods without a request vector: {set(order) - covered}"
    for vector in vectors:
        names = list(vector.get("args", {}))
        canonical = [n for n in order[vector["method"]] if n in names]
        assert names == canonical, f"{vector['name']}: arguments {names} not in order {canonical}"


def main(argv: list[str]) -> int:
    rendered = render()
    if "--check" in argv:
        stale = [p.name for p, text in rendered.items() if not p.exists() or p.read_text() != text]
        if stale:
            print(f"out of date: {stale}; run python -m tests.vectors.generate", file=sys.stderr)
            return 1
        return 0
    for path, text in rendered.items():
        path.write_text(text)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
