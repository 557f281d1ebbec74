"""Redis over TLS with an ACL user: real certificates made here, a real redis-server.

The server requires a client certificate and has its default user switched off, so
nothing reaches it without the CA, the client certificate and the ACL user together.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import trustme

from madsidecar.config import ConfigError, load_config
from madsidecar_client import UnavailableError

from .support import (
    RedisProcess,
    SidecarProcess,
    require_binary,
    short_tempdir,
    start_notifying,
    wait_until,
)

SERVICE = "tls-main"

USER, PASSWORD = "sidecar", "tls-acl-s3cret"


@dataclass
class TlsRedis:
    redis: RedisProcess
    port: int
    ca: str
    cert: str
    key: str
    dir: Path
    certs: Certificates

    def url(self, userinfo: str = f"{USER}:{PASSWORD}@") -> str:
        return f"rediss://{userinfo}127.0.0.1:{self.port}"

    def tls_args(self) -> list[str]:
        return [
            "--redis-tls-ca-file", self.ca,
            "--redis-tls-cert-file", self.cert,
            "--redis-tls-key-file", self.key,
        ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Certificates:
    ca: str
    server: str
    client: str

    def server_settings(self, port: int) -> list[tuple[str, str]]:
        """A redis-server (or sentinel) that speaks only TLS, on `port`, and requires a
        client certificate from the same CA."""
        return [
            ("tls-port", str(port)),
            ("tls-cert-file", self.server),
            ("tls-key-file", self.server),
            ("tls-ca-cert-file", self.ca),
            ("tls-auth-clients", "yes"),
        ]

    def server_args(self, port: int) -> list[str]:
        return [word for name, value in self.server_settings(port) for word in (f"--{name}", value)]


def make_certificates(directory: Path) -> Certificates:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("madsidecar-client")
    paths = {name: directory / f"{name}.pem" for name in ("ca", "server", "client")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    return Certificates(str(paths["ca"]), str(paths["server"]), str(paths["client"]))


# Only the sidecar's ACL user gets in: the default user is off.
ACL_ARGS = ["--user", "default", "off"]
ACL_ARGS += ["--user", USER, "on", f">{PASSWORD}", "~msc:*", "&*", "+@all"]


def start_tls_redis(certs: Certificates, *extra: str) -> tuple[RedisProcess, int]:
    port = free_port()
    redis = RedisProcess(extra_args=[*certs.server_args(port), *ACL_ARGS, *extra]).start()
    return redis, port


@pytest.fixture
def tls_redis() -> Iterator[TlsRedis]:
    directory = Path(short_tempdir("msc-tls-"))
    certs = make_certificates(directory)
    redis, port = start_tls_redis(certs)
    try:
        yield TlsRedis(redis, port, certs.ca, certs.client, certs.client, directory, certs)
    finally:
        redis.stop()


def refused_sidecar(url: str, extra: list[str]) -> SidecarProcess:
    """A sidecar Redis refuses: it serves (answering UNAVAILABLE) but never says READY=1,
    which waits for Redis; its log line saying why is the event awaited instead."""
    side = SidecarProcess(url, extra_args=extra).start(wait_ready=False)
    wait_until(lambda: "redis_unreachable" in side.log(), timeout=20)
    return side


def test_the_sidecar_serves_through_tls_with_an_acl_user(tls_redis: TlsRedis) -> None:
    side = SidecarProcess(tls_redis.url(), extra_args=tls_redis.tls_args()).start()
    try:
        with side.client() as client:
            client.call("cache.set", {"key": "k", "value": {"over": "tls"}})
            assert client.call("cache.get", {"key": "k"})["value"] == {"over": "tls"}
            lock = client.call("lock.acquire", {"name": "migrations"})
            assert lock["acquired"] and lock["fence"] > 0
            assert client.call("health")["ok"] is True
        assert PASSWORD not in side.log()
    finally:
        side.stop()


def test_user_and_password_from_settings_and_a_file(tls_redis: TlsRedis) -> None:
    secret = tls_redis.dir / "redis-password"
    secret.write_text(PASSWORD + "\n")
    extra = [*tls_redis.tls_args(), "--redis-username", USER, "--redis-password-file", str(secret)]
    side = SidecarProcess(tls_redis.url(userinfo=""), extra_args=extra).start()
    try:
        with side.client() as client:
            assert client.call("health")["ok"] is True
    finally:
        side.stop()


def test_a_certificate_from_another_ca_is_refused_and_said_so(tls_redis: TlsRedis) -> None:
    other = trustme.CA()
    wrong_ca = tls_redis.dir / "other-ca.pem"
    other.cert_pem.write_to_path(str(wrong_ca))
    args = tls_redis.tls_args()
    args[1] = str(wrong_ca)
    side = refused_sidecar(tls_redis.url(), args)
    try:
        with side.client() as client, pytest.raises(UnavailableError):
            client.call("health")
        assert "certificate verify failed" in side.log()
    finally:
        side.stop()


def test_a_wrong_password_is_unavailable_and_never_logged(tls_redis: TlsRedis) -> None:
    side = refused_sidecar(tls_redis.url(f"{USER}:not-the-password@"), tls_redis.tls_args())
    try:
        with side.client() as client, pytest.raises(UnavailableError):
            client.call("health")
        log = side.log()
        assert "WRONGPASS" in log or "invalid username-password" in log
        assert "not-the-password" not in log
    finally:
        side.stop()


def test_tls_settings_are_checked_at_start(tmp_path: Path) -> None:
    pem = tmp_path / "ca.pem"
    pem.write_text("x")
    with pytest.raises(ConfigError, match="no Redis URL is rediss://"):
        load_config({"redis_url": "redis://h:6379", "redis_tls_ca_file": str(pem)}, {})
    with pytest.raises(ConfigError, match="set both or neither"):
        load_config({"redis_url": "rediss://h:6379", "redis_tls_cert_file": str(pem)}, {})
    with pytest.raises(ConfigError, match="redis_tls_key_file: cannot read"):
        load_config(
            {"redis_url": "rediss://h:6379", "redis_tls_cert_file": str(pem),
             "redis_tls_key_file": str(tmp_path / "missing.pem")},
            {},
        )  # fmt: skip


def tls_direct(tls: TlsRedis, port: int) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1", port=port, username=USER, password=PASSWORD, socket_timeout=5,
        ssl=True, ssl_ca_certs=tls.ca, ssl_certfile=tls.cert, ssl_keyfile=tls.key,
        decode_responses=True,
    )  # fmt: skip


def serves_every_capability_once(side: SidecarProcess) -> None:
    with side.client() as client:
        client.call("cache.set", {"key": "k", "value": "over tls"})
        assert client.call("cache.get", {"key": "k"})["value"] == "over tls"
        assert client.call("lock.acquire", {"name": "migrations"})["acquired"]
        token = client.call("session.create", {"user_id": "u1"})["token"]
        assert client.call("session.get", {"token": token})["user_id"] == "u1"
        assert client.call("ratelimit.hit", {"key": "ip:1", "limit": 5, "window_ms": 1000})[
            "allowed"
        ]
        assert client.call("health")["ok"] is True
    assert PASSWORD not in side.log()


def test_a_tls_cluster_is_served_over_tls_to_every_node(tls_redis: TlsRedis) -> None:
    """A one-master cluster speaking only TLS: the seed read of the slot map and the
    node the map names are both reached over TLS, with the ACL user."""
    node, port = start_tls_redis(
        tls_redis.certs,
        "--cluster-enabled", "yes", "--tls-cluster", "yes", "--cluster-port", str(free_port()),
    )  # fmt: skip
    try:
        with tls_direct(tls_redis, port) as direct:
            direct.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
            wait_until(lambda: "cluster_state:ok" in direct.execute_command("CLUSTER", "INFO"), 20)
        url = f"rediss+cluster://{USER}:{PASSWORD}@127.0.0.1:{port}"
        side = SidecarProcess(url, extra_args=tls_redis.tls_args()).start()
        try:
            serves_every_capability_once(side)
            with side.client() as client:
                cluster = client.call("stats")["redis"]["cluster"]
            assert cluster["masters"] == [f"127.0.0.1:{port}"]
        finally:
            side.stop()
    finally:
        node.stop()


SENTINEL_PASSWORD = "sentinel-own-s3cret"


def start_tls_sentinel(tls: TlsRedis) -> tuple[subprocess.Popen[bytes], int]:
    """One sentinel speaking only TLS, with a password of its own, watching the TLS
    master as the ACL user."""
    port = free_port()
    config = tls.dir / "sentinel.conf"
    config.write_text(
        "port 0\nbind 127.0.0.1\n"
        f"dir {tls.dir}\nlogfile {tls.dir / 'sentinel.log'}\n"
        + "".join(f"{name} {value}\n" for name, value in tls.certs.server_settings(port))
        + "tls-replication yes\n"
        f"requirepass {SENTINEL_PASSWORD}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {tls.port} 1\n"
        f"sentinel auth-user {SERVICE} {USER}\nsentinel auth-pass {SERVICE} {PASSWORD}\n"
    )
    command = [require_binary("redis-server"), str(config), "--sentinel", "--supervised", "systemd"]
    return start_notifying(command, str(tls.dir)), port


def test_a_sentinel_deployment_over_tls_with_the_sentinels_own_password(
    tls_redis: TlsRedis,
) -> None:
    sentinel, port = start_tls_sentinel(tls_redis)
    secret = tls_redis.dir / "sentinel-password"
    secret.write_text(SENTINEL_PASSWORD + "\n")
    try:
        url = f"rediss+sentinel://{USER}:{PASSWORD}@127.0.0.1:{port}/{SERVICE}"
        extra = [*tls_redis.tls_args(), "--redis-sentinel-password-file", str(secret)]
        side = SidecarProcess(url, extra_args=extra).start()
        try:
            serves_every_capability_once(side)
            assert SENTINEL_PASSWORD not in side.log()
        finally:
            side.stop()
        # Without the sentinels' password no sentinel names a master: said, not hung.
        side = refused_sidecar(url, tls_redis.tls_args())
        try:
            with side.client() as client, pytest.raises(UnavailableError):
                client.call("health")
        finally:
            side.stop()
    finally:
        sentinel.kill()
        sentinel.wait()
