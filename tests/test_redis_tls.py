"""Redis over TLS with an ACL user: real certificates made here, a real redis-server.

The server requires a client certificate and has its default user switched off, so
nothing reaches it without the CA, the client certificate and the ACL user together.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from madsidecar.config import ConfigError, load_config
from madsidecar_client import UnavailableError

from .support import RedisProcess, SidecarProcess, short_tempdir, wait_until

USER, PASSWORD = "sidecar", "tls-acl-s3cret"


@dataclass
class TlsRedis:
    redis: RedisProcess
    port: int
    ca: str
    cert: str
    key: str
    dir: Path

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


@pytest.fixture
def tls_redis() -> Iterator[TlsRedis]:
    directory = Path(short_tempdir("msc-tls-"))
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("madsidecar-client")
    paths = {name: directory / f"{name}.pem" for name in ("ca", "server", "client")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_and_cert_chain_pem.write_to_path(str(paths["server"]))
    client.private_key_and_cert_chain_pem.write_to_path(str(paths["client"]))
    port = free_port()
    redis = RedisProcess(
        extra_args=[
            "--tls-port", str(port),
            "--tls-cert-file", str(paths["server"]),
            "--tls-key-file", str(paths["server"]),
            "--tls-ca-cert-file", str(paths["ca"]),
            "--tls-auth-clients", "yes",
            "--user", "default", "off",
            "--user", USER, "on", f">{PASSWORD}", "~msc:*", "&*", "+@all",
        ]
    ).start()  # fmt: skip
    try:
        yield TlsRedis(
            redis, port, str(paths["ca"]), str(paths["client"]), str(paths["client"]), directory
        )
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
