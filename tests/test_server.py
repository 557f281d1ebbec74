"""The daemon as a client sees it: connection methods, errors, ordering, policy."""

from __future__ import annotations

import os
import signal
import stat
import struct
import subprocess
import sys
import time

import msgpack
import pytest

from madsidecar.app import GC_YOUNG_THRESHOLD
from madsidecar_client import (
    BadRequestError,
    BlockingClient,
    ForbiddenError,
    UnknownMethodError,
)

from .rawclient import RawConnection
from .support import RedisProcess, SidecarProcess, running_sidecar


def test_hello_reports_server_identity_and_methods(sidecar: SidecarProcess) -> None:
    with sidecar.client() as client:
        info = client.hello()
    assert info["server"] == "madsidecar"
    assert info["protocol"] == 1
    assert info["namespace"] == "default"
    assert info["max_frame_bytes"] == 4 * 1024 * 1024
    assert {"hello", "ping", "stats"} <= set(info["methods"])
    assert isinstance(info["node_id"], str) and info["node_id"]


def test_ping_and_stats(sidecar: SidecarProcess) -> None:
    with sidecar.client() as client:
        assert client.ping() == "pong"
        stats = client.stats()
    assert stats["connections"] == 1
    assert stats["requests"] >= 2
    assert stats["uptime_ms"] >= 0
    assert stats["redis"]["connected"] is True
    assert set(stats["cache"]) >= {"l1_hits", "l2_hits", "misses", "l1_entries", "l1_bytes"}
    assert stats["locks"]["held"] == 0
    assert stats["presence"]["tracked"] == 0
    assert stats["gc"]["threshold"][0] == GC_YOUNG_THRESHOLD, "the daemon tunes the collector"


def test_health_is_a_round_trip_to_redis(sidecar: SidecarProcess) -> None:
    with sidecar.client() as client:
        result = client.call("health")
    assert result["ok"] is True
    assert result["redis_latency_ms"] >= 0


def test_socket_file_is_mode_0660(sidecar: SidecarProcess) -> None:
    assert stat.S_IMODE(os.stat(sidecar.socket_path).st_mode) == 0o660


def test_unknown_method(sidecar: SidecarProcess) -> None:
    with sidecar.client() as client, pytest.raises(UnknownMethodError):
        client.call("no.such.method")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ({"bogus": 1}, "bogus"),
        ({"namespace": 7}, "namespace"),
        ({"namespace": ""}, "namespace"),
        ({"namespace": "x" * 513}, "namespace"),
        ({"client": b"bytes"}, "client"),
    ],
)
def test_bad_arguments_are_named(sidecar: SidecarProcess, args: dict, named: str) -> None:
    with sidecar.client() as client, pytest.raises(BadRequestError) as caught:
        client.call("hello", args)
    assert caught.value.argument == named
    assert named in caught.value.message


def test_ping_takes_no_arguments(sidecar: SidecarProcess) -> None:
    with sidecar.client() as client, pytest.raises(BadRequestError, match="unknown argument"):
        client.call("ping", {"x": 1})


def test_garbage_frame_gets_error_notification_and_connection_survives(
    sidecar: SidecarProcess,
) -> None:
    conn = RawConnection(sidecar.socket_path)
    conn.send_raw(struct.pack(">I", 1) + b"\xc1")
    kind, name, (payload,) = conn.receive()
    assert (kind, name, payload["code"]) == (2, "error", "BAD_FRAME")
    assert payload["message"]
    assert conn.call(9, "ping") == [1, 9, None, "pong"]


def test_invalid_message_with_msgid_is_answered_on_it(sidecar: SidecarProcess) -> None:
    conn = RawConnection(sidecar.socket_path)
    conn.send([0, 77, 12345, []])
    kind, msgid, error, result = conn.receive()
    assert (kind, msgid, result) == (1, 77, None)
    assert error["code"] == "BAD_REQUEST"
    conn.send({"not": "an array"})
    kind, name, (payload,) = conn.receive()
    assert (kind, name, payload["code"]) == (2, "error", "BAD_REQUEST")
    assert conn.call(1, "ping") == [1, 1, None, "pong"]


def test_oversized_frame_is_refused_and_connection_closed(sidecar: SidecarProcess) -> None:
    conn = RawConnection(sidecar.socket_path)
    conn.send_raw(struct.pack(">I", 0xFFFFFFFF))
    kind, name, (payload,) = conn.receive()
    assert (kind, name, payload["code"]) == (2, "error", "FRAME_TOO_LARGE")
    assert conn.is_closed_by_server()
    with sidecar.client() as other:
        assert other.ping() == "pong"


def test_zero_length_frame_closes_with_bad_frame(sidecar: SidecarProcess) -> None:
    conn = RawConnection(sidecar.socket_path)
    conn.send_raw(b"\0\0\0\0")
    _kind, name, (payload,) = conn.receive()
    assert (name, payload["code"]) == ("error", "BAD_FRAME")
    assert conn.is_closed_by_server()


def test_errors_about_huge_names_still_fit_in_a_frame(redis_server: RedisProcess) -> None:
    # Found while fuzzing: error messages quoted the method or argument name whole, so a
    # long one made an error frame larger than max_frame_bytes (and 4x larger for bin).
    with running_sidecar(redis_server, extra_args=["--max-frame-bytes", "1024"]) as side:
        conn = RawConnection(side.socket_path)
        sent = [
            [0, 1, "m" * 1000, []],
            [0, 2, "ping", [{"a" * 990: 1}]],
            [0, 3, "cache.get", [{"key": "k", "x" * 980: 1}]],
            [0, 4, "ping", [{b"\x00" * 900: 1}]],
        ]
        for message in sent:
            body = msgpack.packb(message, use_bin_type=True)
            assert len(body) <= 1024
            conn.send_raw(struct.pack(">I", len(body)) + body)
            conn.sock.settimeout(10)
            header = b""
            while len(header) < 4:
                header += conn.sock.recv(4 - len(header))
            (length,) = struct.unpack(">I", header)
            assert length <= 1024, f"a reply of {length} bytes to {message[1]}"
            reply = b""
            while len(reply) < length:
                reply += conn.sock.recv(length - len(reply))
            _, msgid, error, _ = msgpack.unpackb(reply, raw=False)
            assert msgid == message[1]
            assert error["code"] in {"UNKNOWN_METHOD", "BAD_REQUEST"}
            assert len(error["message"]) < 300
        assert conn.call(5, "ping") == [1, 5, None, "pong"]
        conn.close()


def test_pipelined_requests_all_answered_with_their_msgids(sidecar: SidecarProcess) -> None:
    conn = RawConnection(sidecar.socket_path)
    frames = b"".join(
        struct.pack(">I", len(body)) + body
        for body in (
            msgpack.packb([0, i, "ping" if i % 2 else "hello", []]) for i in range(1, 2001)
        )
    )
    conn.send_raw(frames)
    replies = {}
    for _ in range(2000):
        kind, msgid, error, result = conn.receive()
        assert kind == 1 and error is None
        replies[msgid] = result
    assert sorted(replies) == list(range(1, 2001))
    assert all(replies[i] == "pong" for i in range(1, 2001, 2))


def test_sdk_pipeline_returns_results_and_errors_in_order(sidecar: SidecarProcess) -> None:
    with sidecar.client() as client:
        results = client.pipeline([("ping", None), ("nope", None), ("ping", None)])
    assert results[0] == "pong" and results[2] == "pong"
    assert isinstance(results[1], UnknownMethodError)


def test_default_policy_allows_only_namespace_default(sidecar: SidecarProcess) -> None:
    with sidecar.client() as client:
        assert client.hello(namespace="default")["namespace"] == "default"
        with pytest.raises(ForbiddenError):
            client.hello(namespace="billing")


def test_policy_maps_uid_to_namespaces_and_method_groups(redis_server: RedisProcess) -> None:
    uid = os.getuid()
    config = f"""
[[policy]]
uids = [{uid}]
namespaces = ["billing", "default"]
methods = ["cache"]
"""
    with running_sidecar(redis_server, config_toml=config) as side, side.client() as client:
        assert client.hello(namespace="billing")["namespace"] == "billing"
        assert client.ping() == "pong", "ping is always allowed"
        with pytest.raises(ForbiddenError):
            client.stats()
        with pytest.raises(ForbiddenError):
            client.hello(namespace="other")


def test_peer_matching_no_rule_is_forbidden(redis_server: RedisProcess) -> None:
    config = f"""
[[policy]]
uids = [{os.getuid() + 4242}]
namespaces = ["*"]
"""
    with running_sidecar(redis_server, config_toml=config) as side, side.client() as client:
        with pytest.raises(ForbiddenError):
            client.hello()
        with pytest.raises(ForbiddenError):
            client.stats()
        assert "allowed=False" in side.log()


def test_peer_credentials_are_logged(sidecar: SidecarProcess) -> None:
    with sidecar.client() as client:
        client.ping()
    log = sidecar.log()
    assert f"pid={os.getpid()}" in log
    assert f"uid={os.getuid()}" in log
    assert f"gid={os.getgid()}" in log


def test_sighup_reloads_policy(redis_server: RedisProcess) -> None:
    side = SidecarProcess(redis_server.url, config_toml='[[policy]]\nnamespaces = ["default"]\n')
    try:
        side.start()
        with side.client() as client:
            with pytest.raises(ForbiddenError):
                client.hello(namespace="billing")
            assert side.config_path is not None
            with open(side.config_path, "w") as fh:
                fh.write('[[policy]]\nnamespaces = ["default", "billing"]\n')
            side.signal(signal.SIGHUP)
            # No event tells the client the reload happened; retry until it shows.
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert client.hello(namespace="billing")["namespace"] == "billing"
                    break
                except ForbiddenError:
                    assert time.monotonic() < deadline, side.log()
        assert "event='reloaded'" in side.log()
    finally:
        side.stop()


def test_blocking_client_reads_socket_path_from_env(
    sidecar: SidecarProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MADSIDECAR_SOCKET", sidecar.socket_path)
    with BlockingClient() as client:
        assert client.ping() == "pong"


def test_hello_cannot_switch_namespace_under_running_requests(redis_server: RedisProcess) -> None:
    config = '[[policy]]\nnamespaces = ["*"]\n'
    assert redis_server.process is not None
    with running_sidecar(redis_server, config_toml=config) as side, side.client() as client:
        redis_server.process.send_signal(signal.SIGSTOP)  # keeps `health` in flight
        try:
            _health, hello = client.pipeline([("health", None), ("hello", {"namespace": "other"})])
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        assert isinstance(hello, BadRequestError) and hello.argument == "namespace"
        assert client.hello(namespace="other")["namespace"] == "other"


def test_policy_gids_match_supplementary_groups(redis_server: RedisProcess) -> None:
    """A service user added to the sidecar's group is admitted by a gids rule."""
    config = "[[policy]]\ngids = [4242]\nnamespaces = ['default']\n"
    probe = (
        "import sys; from madsidecar_client import BlockingClient\n"
        "c = BlockingClient(sys.argv[1])\n"
        "print(c.stats()['connections'])\n"
    )
    with running_sidecar(redis_server, config_toml=config) as side:
        with side.client() as client, pytest.raises(ForbiddenError):
            client.stats()
        member = subprocess.run(
            [sys.executable, "-c", probe, side.socket_path],
            extra_groups=[4242],  # needs root, as CI has; the sidecar sees the group
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert member.returncode == 0, member.stderr
