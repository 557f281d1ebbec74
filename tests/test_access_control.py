"""Access control with real peers of other uids: the socket's mode and group, the policy
per uid, and namespaces that isolate every capability.

The peers are this test process forked and switched to another uid (and groups) before
they connect, so the sidecar's SO_PEERCRED sees exactly what a service running as that
user would show. Switching uid needs root, as CI has.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from madsidecar_client import BlockingClient, MadsidecarError, ServerError

from .support import RedisProcess, SidecarProcess

TENANT_A, TENANT_B, STRANGER, SOCKET_GID = 4201, 4202, 4203, 4300


def _peer_main(
    uid: int, groups: list[int], socket_path: str, namespace: str | None,
    steps: Callable[[BlockingClient], Any], reply: Any,
) -> None:  # fmt: skip
    try:
        os.setgroups(groups)
        os.setgid(groups[0] if groups else uid)
        os.setuid(uid)
        with BlockingClient(socket_path, reconnect=False, timeout=10) as client:
            if namespace is not None:
                client.hello(namespace=namespace)
            reply.send(("ok", steps(client)))
    except ServerError as exc:
        reply.send(("error", exc.code))
    except (MadsidecarError, OSError) as exc:
        reply.send(("error", f"{type(exc).__name__}: {exc}"))


def as_peer(
    uid: int,
    socket_path: str,
    steps: Callable[[BlockingClient], Any],
    *,
    groups: list[int] | None = None,
    namespace: str | None = None,
) -> tuple[str, Any]:
    """Run `steps` with a client connected as `uid`; ("ok", result) or ("error", what)."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    peer = context.Process(
        target=_peer_main, args=(uid, groups or [], socket_path, namespace, steps, send)
    )
    peer.start()
    try:
        assert receive.poll(30), "the peer did not answer within 30 s"
        result: tuple[str, Any] = receive.recv()
        return result
    finally:
        peer.join(10)


def code_of(call: Callable[[], Any]) -> str:
    """The error code `call` fails with, or "ok"."""
    try:
        call()
    except ServerError as exc:
        return exc.code
    return "ok"


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("these tests switch to other uids: run them as root (CI does)")


def sidecar_for_peers(redis: RedisProcess, args: list[str], policy: str = "") -> SidecarProcess:
    side = SidecarProcess(redis.url, extra_args=args, config_toml=policy or None).start()
    os.chmod(side.dir, 0o711)  # others may reach the socket; its own mode decides the rest
    return side


@pytest.fixture
def open_sidecar(redis_server: RedisProcess) -> Iterator[SidecarProcess]:
    policy = f"""
[[policy]]
uids = [0]
namespaces = ["tenant-a"]

[[policy]]
uids = [{TENANT_A}]
namespaces = ["tenant-a"]
methods = ["cache", "session"]

[[policy]]
uids = [{TENANT_B}]
namespaces = ["tenant-b"]
methods = ["*"]
"""
    side = sidecar_for_peers(redis_server, ["--socket-mode", "0666"], policy)
    yield side
    side.stop()


def test_the_socket_mode_and_group_hold_against_other_uids(redis_server: RedisProcess) -> None:
    side = sidecar_for_peers(
        redis_server,
        ["--socket-mode", "0660", "--socket-group", str(SOCKET_GID)],
        "[[policy]]\nnamespaces = ['default']\n",
    )
    try:
        outcome, what = as_peer(STRANGER, side.socket_path, lambda c: c.ping())
        assert outcome == "error" and "Permission denied" in what
        member = as_peer(STRANGER, side.socket_path, lambda c: c.ping(), groups=[SOCKET_GID])
        assert member == ("ok", "pong")
    finally:
        side.stop()


def test_each_uid_gets_only_its_namespaces_and_method_groups(
    open_sidecar: SidecarProcess,
) -> None:
    path = open_sidecar.socket_path

    def tenant_a(client: BlockingClient) -> dict[str, str]:
        return {
            "cache": code_of(lambda: client.call("cache.set", {"key": "k", "value": 1})),
            "session": code_of(lambda: client.call("session.create", {"user_id": "u"})),
            "lock": code_of(lambda: client.call("lock.acquire", {"name": "L"})),
            "presence": code_of(
                lambda: client.call("presence.track", {"channel": "c", "key": "k"})
            ),
            "stats": code_of(client.stats),
            "ping": code_of(client.ping),
            "other namespace": code_of(lambda: client.hello(namespace="tenant-b")),
        }

    assert as_peer(TENANT_A, path, tenant_a, namespace="tenant-a") == (
        "ok",
        {
            "cache": "ok", "session": "ok", "lock": "FORBIDDEN", "presence": "FORBIDDEN",
            "stats": "FORBIDDEN", "ping": "ok", "other namespace": "FORBIDDEN",
        },
    )  # fmt: skip
    # A peer no rule names gets nothing but ping.
    assert as_peer(STRANGER, path, lambda c: c.ping()) == ("ok", "pong")
    assert as_peer(STRANGER, path, lambda c: c.call("cache.get", {"key": "k"})) == (
        "error",
        "FORBIDDEN",
    )
    assert "allowed=False" in open_sidecar.log() or '"allowed": false' in open_sidecar.log()


def test_namespaces_isolate_every_capability(open_sidecar: SidecarProcess) -> None:
    """Tenant A (this process, uid 0) holds one of everything; tenant B, another uid in
    its own namespace, sees none of it and disturbs none of it."""
    with open_sidecar.client() as mine:
        mine.hello(namespace="tenant-a")
        mine.call("cache.set", {"key": "config", "value": "a's"})
        lock = mine.call("lock.acquire", {"name": "migrations"})
        token = mine.call("session.create", {"user_id": "alice"})["token"]
        mine.call("presence.track", {"channel": "room", "key": "alice"})
        mine.call("pubsub.subscribe", {"channel": "news"})
        limit = {"key": "ip:1", "limit": 1, "window_ms": 60_000}
        assert mine.call("ratelimit.hit", limit)["allowed"]

        def tenant_b(client: BlockingClient) -> dict[str, Any]:
            taken = client.call("lock.acquire", {"name": "migrations"})
            return {
                "cache": client.call("cache.get", {"key": "config"}),
                "lock": taken["acquired"],
                "session": client.call("session.get", {"token": token}),
                "revoke": client.call("session.revoke", {"token": token})["revoked"],
                "presence": client.call("presence.list", {"channel": "room"}),
                "pubsub": client.call("pubsub.publish", {"channel": "news", "message": "x"}),
                "ratelimit": client.call("ratelimit.hit", limit)["allowed"],
                "invalidate": client.call("cache.invalidate", {"prefix": ""})["deleted"],
            }

        assert as_peer(TENANT_B, open_sidecar.socket_path, tenant_b, namespace="tenant-b") == (
            "ok",
            {
                "cache": None, "lock": True, "session": None, "revoke": False,
                "presence": {"members": {}}, "pubsub": {"receivers": 0}, "ratelimit": True,
                "invalidate": 0,
            },
        )  # fmt: skip
        # Tenant A's things are all still there.
        assert mine.call("cache.get", {"key": "config"})["value"] == "a's"
        assert mine.call("lock.inspect", {"name": "migrations"})["fence"] == lock["fence"]
        assert mine.call("session.get", {"token": token})["user_id"] == "alice"
        assert list(mine.call("presence.list", {"channel": "room"})["members"]) == ["alice"]
        assert not mine.call("ratelimit.hit", limit)["allowed"]
