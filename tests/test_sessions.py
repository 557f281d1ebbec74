"""Shared auth sessions on real Redis: two sidecars as two nodes of a fleet."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

from madsidecar.cache import Cache
from madsidecar.config import Config
from madsidecar.redis_gateway import RedisGateway, RedisSettings
from madsidecar.sessions import Sessions
from madsidecar_client import BadRequestError, BlockingClient

from .support import RedisProcess, SidecarProcess, kill_redis_client
from .test_cache_hazards import DeafHandler, FakeClient


def create(client: BlockingClient, user_id: str, **args: object) -> dict[str, Any]:
    result: dict[str, Any] = client.call("session.create", {"user_id": user_id, **args})
    return result


def get(client: BlockingClient, token: str, touch: bool = True) -> dict[str, Any] | None:
    result: dict[str, Any] | None = client.call("session.get", {"token": token, "touch": touch})
    return result


def warm(client: BlockingClient, token: str) -> None:
    """Read until the session is served from this node's L1 (its l1_hits count rises)."""
    for _ in range(100):
        before = client.stats()["sessions"]["l1_hits"]
        assert get(client, token) is not None
        if client.stats()["sessions"]["l1_hits"] > before:
            return
    raise AssertionError("the session never reached L1")


@pytest.fixture
def short_nodes(redis_server: RedisProcess) -> Iterator[tuple[SidecarProcess, SidecarProcess]]:
    """Two nodes that slide a session's idle expiry at most every 200 ms."""
    args = ["--session-touch-interval-ms", "200"]
    a = SidecarProcess(redis_server.url, extra_args=[*args, "--node-id", "a"]).start()
    b = SidecarProcess(redis_server.url, extra_args=[*args, "--node-id", "b"]).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_create_on_a_get_on_b_and_every_method(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    with a.client() as auth, b.client() as proxy:
        made = create(auth, "alice", data={"role": "admin", "ids": [1, 2**40]})
        assert len(made["token"]) >= 43 and made["session_id"] and made["expires_at_ms"] > 0
        seen = get(proxy, made["token"])
        assert seen is not None
        assert seen["session_id"] == made["session_id"] and seen["user_id"] == "alice"
        assert seen["data"] == {"role": "admin", "ids": [1, 2**40]}
        assert seen["created_at_ms"] <= seen["last_seen_ms"] < seen["expires_at_ms"]
        assert auth.call("session.update", {"token": made["token"], "data": "x"}) == {
            "updated": True
        }
        assert get(auth, made["token"])["data"] == "x"  # type: ignore[index]
        deadline = time.monotonic() + 1
        while get(proxy, made["token"])["data"] != "x":  # type: ignore[index]
            assert time.monotonic() < deadline, "node B kept the old data"
        listed = proxy.call("session.list", {"user_id": "alice"})
        assert [s["session_id"] for s in listed] == [made["session_id"]]
        assert listed[0]["data"] == "x"
        assert get(proxy, "no-such-token") is None
        assert auth.call("session.update", {"token": "no-such-token", "data": 1}) == {
            "updated": False
        }
        assert auth.call("session.rotate", {"token": "no-such-token"}) is None
        assert auth.call("session.revoke", {"token": "no-such-token"}) == {"revoked": False}
        assert auth.call("session.revoke", {"session_id": "nope"}) == {"revoked": False}
        assert proxy.stats()["sessions"]["created"] == 0 and auth.stats()["sessions"]["created"]


def test_bad_arguments_are_named(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, _ = nodes
    with a.client() as client:
        for method, args, named in (
            ("session.create", {}, "user_id"),
            ("session.create", {"user_id": "u", "idle_ttl_ms": 0}, "idle_ttl_ms"),
            ("session.get", {"token": ""}, "token"),
            ("session.get", {"token": "t" * 513}, "token"),
            ("session.revoke", {}, "session_id"),
            ("session.revoke", {"token": "t", "session_id": "s"}, "session_id"),
            ("session.update", {"token": "t"}, "data"),
        ):
            with pytest.raises(BadRequestError) as caught:
                client.call(method, args)
            assert caught.value.argument == named, (method, args)


def test_revoke_on_a_reaches_b_within_100ms_p99(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    delays = []
    with a.client() as auth, b.client() as proxy:
        for trial in range(200):
            made = create(auth, f"user{trial % 7}")
            warm(proxy, made["token"])
            by_id = trial % 2 == 0
            revoke = {"session_id": made["session_id"]} if by_id else {"token": made["token"]}
            assert auth.call("session.revoke", revoke) == {"revoked": True}
            revoked = time.monotonic()
            while get(proxy, made["token"]) is not None:
                assert time.monotonic() - revoked < 6, "the revoke never reached node B"
            delays.append(time.monotonic() - revoked)
    delays.sort()
    p99_ms = delays[int(len(delays) * 0.99) - 1] * 1000
    print(f"revoke on A -> nil on B: p50 {delays[100] * 1000:.2f} ms, p99 {p99_ms:.2f} ms")
    assert p99_ms < 100


def test_revoke_user_with_50_sessions_on_both_nodes(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    with a.client() as on_a, b.client() as on_b:
        made = [create(on_a if i % 2 else on_b, "bob") for i in range(50)]
        other = create(on_a, "carol")
        for session in made:
            warm(on_a, session["token"])
            warm(on_b, session["token"])
        kept = made[17]
        assert len(on_b.call("session.list", {"user_id": "bob"})) == 50
        revoked = on_a.call(
            "session.revoke_user", {"user_id": "bob", "except_session_id": kept["session_id"]}
        )
        assert revoked == {"revoked": 49}
        deadline = time.monotonic() + 5
        for node in (on_a, on_b):
            for session in made:
                alive = session is kept
                while (get(node, session["token"]) is not None) != alive:
                    assert time.monotonic() < deadline, "a revoked session still validates"
        assert [s["session_id"] for s in on_b.call("session.list", {"user_id": "bob"})] == [
            kept["session_id"]
        ]
        assert get(on_b, other["token"]) is not None, "another user's session survives"
        assert on_b.call("session.revoke_user", {"user_id": "bob"}) == {"revoked": 1}
        assert get(on_a, kept["token"]) is None


def test_rotation_kills_the_old_token_on_every_node(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    with a.client() as auth, b.client() as proxy:
        made = create(auth, "dave", data={"level": 1})
        warm(proxy, made["token"])
        rotated = auth.call("session.rotate", {"token": made["token"]})
        assert rotated["token"] != made["token"]
        assert get(auth, made["token"]) is None, "the old token is dead at once on A"
        deadline = time.monotonic() + 1
        while get(proxy, made["token"]) is not None:
            assert time.monotonic() < deadline, "the old token still validates on B"
        seen = get(proxy, rotated["token"])
        assert seen is not None and seen["session_id"] == made["session_id"]
        assert seen["data"] == {"level": 1}
        assert auth.call("session.revoke", {"session_id": made["session_id"]}) == {"revoked": True}
        assert get(auth, rotated["token"]) is None


def test_idle_expiry_and_touch(short_nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, b = short_nodes
    with a.client() as auth, b.client() as proxy:
        idle = create(auth, "erin", idle_ttl_ms=600)
        kept = create(auth, "erin", idle_ttl_ms=600)
        deadline = time.monotonic() + 1.8
        while time.monotonic() < deadline:
            # Validated (and touched) every 100 ms: the idle expiry keeps sliding.
            assert get(proxy, kept["token"]) is not None, "a touched session expired"
            time.sleep(0.1)
        # 1.8 s without a touch is three idle periods: gone on both nodes.
        assert get(proxy, idle["token"], touch=False) is None
        assert get(auth, idle["token"]) is None
        seen = get(proxy, kept["token"], touch=False)
        assert seen is not None and seen["expires_at_ms"] > kept["expires_at_ms"] + 1000


def test_absolute_expiry_caps_the_touches(
    short_nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = short_nodes
    with a.client() as auth, b.client() as proxy:
        made = create(auth, "frank", idle_ttl_ms=400, absolute_ttl_ms=1200)
        cap = made["expires_at_ms"] - 400 + 1200
        started = time.monotonic()
        while (seen := get(proxy, made["token"])) is not None:
            assert seen["expires_at_ms"] <= cap, "touch slid past the absolute expiry"
            assert time.monotonic() - started < 3, "the absolute expiry did not end it"
            time.sleep(0.05)
        assert time.monotonic() - started > 1.0, "ended well before its absolute expiry"


def test_touch_is_throttled(short_nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, b = short_nodes
    with a.client() as auth, b.client() as proxy:
        made = create(auth, "gina", idle_ttl_ms=60_000)
        first = get(proxy, made["token"])
        assert first is not None
        started = time.monotonic()
        burst = [get(proxy, made["token"]) for _ in range(50)]
        took_s = time.monotonic() - started
        # At most one slide (one write to Redis) per 200 ms touch interval.
        slides = {s["last_seen_ms"] for s in burst if s} - {first["last_seen_ms"]}
        assert len(slides) <= took_s / 0.2, (slides, took_s)
        time.sleep(0.25)
        later = get(proxy, made["token"])
        assert later is not None and later["last_seen_ms"] >= first["last_seen_ms"] + 200
        assert later["expires_at_ms"] > first["expires_at_ms"]
        untouched = get(auth, made["token"], touch=False)
        assert untouched is not None and untouched["last_seen_ms"] == later["last_seen_ms"]


def test_no_token_in_redis_or_in_the_logs(
    redis_server: RedisProcess, nodes: tuple[SidecarProcess, SidecarProcess]
) -> None:
    a, b = nodes
    tokens = []
    with a.client() as auth, b.client() as proxy:
        for i in range(20):
            made = create(auth, f"henry{i % 3}", data={"i": i})
            tokens.append(made["token"])
            get(proxy, made["token"])
        rotated = auth.call("session.rotate", {"token": tokens[0]})
        tokens.append(rotated["token"])
        auth.call("session.revoke", {"token": tokens[1]})
        auth.call("session.revoke_user", {"user_id": "henry2"})
    direct = redis.Redis(unix_socket_path=redis_server.socket_path)
    stored = []
    for key in direct.scan_iter(count=1000):
        stored.append(key)
        kind = direct.type(key)
        if kind == b"hash":
            stored += [v for pair in direct.hgetall(key).items() for v in pair]
        elif kind == b"zset":
            stored += direct.zrange(key, 0, -1)
        elif kind == b"string":
            stored.append(direct.get(key) or b"")
    assert any(key.startswith(b"msc:s:") for key in stored), "no session was stored"
    blob = b"\n".join(stored)
    logs = a.log() + b.log()
    for token in tokens:
        assert token.encode() not in blob, "a token is stored in plain text"
        assert token not in logs, "a token is in the logs"


def test_tokens_digested_with_the_secret_when_configured(
    redis_server: RedisProcess, tmp_path: Any
) -> None:
    import hashlib
    import hmac

    from .support import running_sidecar

    secret = tmp_path / "session.secret"
    secret.write_bytes(b"0123456789abcdef-fleet-secret\n")
    direct = redis.Redis(unix_socket_path=redis_server.socket_path)
    args = ["--session-secret-file", str(secret)]
    with running_sidecar(redis_server, extra_args=args) as side, side.client() as client:
        made = create(client, "kim")
        token = made["token"].encode()
        keyed = hmac.new(b"0123456789abcdef-fleet-secret", token, hashlib.sha256).hexdigest()
        plain = hashlib.sha256(token).hexdigest()
        shard = made["token"].partition(".")[0]
        assert direct.exists(f"msc:s:{{7:default:{shard}}}:t:{keyed}")
        assert not direct.exists(f"msc:s:{{7:default:{shard}}}:t:{plain}")
        assert get(client, made["token"]) is not None
    secret.write_bytes(b"short")
    refused = subprocess.run(
        [sys.executable, "-m", "madsidecar", "run", "--socket", str(tmp_path / "s.sock"),
         "--redis-url", redis_server.url, *args],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "session_secret_file: the secret must be 16 bytes or more" in refused.stderr


@pytest.fixture
async def node(redis_server: RedisProcess) -> AsyncIterator[tuple[Cache, Sessions]]:
    """One node in-process, its feed probed only every minute: a silently lost
    invalidation is then caught by session_l1_ttl_ms alone."""
    gateway = RedisGateway(RedisSettings(redis_server.url, None, 1000, 1000, 200))
    gateway.start()
    assert await gateway.wait_connected(10)
    config = Config(node_id="deaf", cache_probe_interval_ms=60_000, session_l1_ttl_ms=300)
    cache = Cache(config, gateway)
    sessions = Sessions(config, gateway, cache)
    await cache.start()
    await cache.warm_up(10)
    try:
        yield cache, sessions
    finally:
        await cache.close()
        await gateway.close()


async def answer(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


async def test_lost_invalidations_are_bounded_by_session_l1_ttl(
    node: tuple[Cache, Sessions], redis_server: RedisProcess
) -> None:
    cache, sessions = node
    client = FakeClient()
    made = await sessions.create(client, {"user_id": "ivan", "data": None, "idle_ttl_ms": 60_000,
                                          "absolute_ttl_ms": 600_000})  # fmt: skip
    args = {"token": made["token"], "touch": False}
    await answer(sessions.get(client, args))
    assert not inspect.isawaitable(sessions.get(client, args)), "served from L1"
    cache._feed._handler = DeafHandler(cache)  # invalidations stop arriving, silently
    other_node = redis.asyncio.Redis(unix_socket_path=redis_server.socket_path)
    keys = [key async for key in other_node.scan_iter(match="msc:s:*:t:*")]
    assert len(keys) == 1
    await other_node.delete(*keys)  # revoked elsewhere; this node never hears of it
    revoked = time.monotonic()
    while await answer(sessions.get(client, args)) is not None:
        assert time.monotonic() - revoked < 2, "L1 kept a revoked session past its cap"
        await asyncio.sleep(0.01)
    elapsed_ms = (time.monotonic() - revoked) * 1000
    print(f"lost revocation stopped validating after {elapsed_ms:.0f} ms (cap 300 ms)")
    assert elapsed_ms <= 300 + 100
    await other_node.aclose()


def test_feed_killed_revoked_session_stops_validating(
    redis_server: RedisProcess, nodes: tuple[SidecarProcess, SidecarProcess]
) -> None:
    a, b = nodes
    direct = redis.Redis(unix_socket_path=redis_server.socket_path)
    with a.client() as auth, b.client() as proxy:
        made = create(auth, "judy")
        warm(proxy, made["token"])
        kill_redis_client(direct, "madsidecar-cache-feed:b")
        assert auth.call("session.revoke", {"token": made["token"]}) == {"revoked": True}
        revoked = time.monotonic()
        while get(proxy, made["token"]) is not None:
            assert time.monotonic() - revoked < 5.0, "session_l1_ttl_ms (5 s) was not kept"
        print(f"feed killed: revoked session gone on B after {time.monotonic() - revoked:.3f} s")
