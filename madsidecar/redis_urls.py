"""Redis URLs beyond redis-py's own: Sentinel and Cluster deployments.

`redis+sentinel://[user:password@]host:port[,host:port...]/service_name`: the sentinels to
ask, and the name of the master they watch. The user and password are the data nodes'
(the master's); the sentinels' own, if they require one, are separate settings.

`redis+cluster://[user:password@]host:port[,host:port...]`: some nodes of a Redis Cluster
(any of them: the rest is discovered); the user and password are every node's.

`rediss+sentinel://` and `rediss+cluster://` are the same over TLS: to every node, and to
the sentinels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

SENTINEL_SCHEMES: Final = ("redis+sentinel://", "rediss+sentinel://")
CLUSTER_SCHEMES: Final = ("redis+cluster://", "rediss+cluster://")
TLS_SCHEMES: Final = ("rediss://", "rediss+sentinel://", "rediss+cluster://")
DEFAULT_SENTINEL_PORT: Final = 26379
DEFAULT_REDIS_PORT: Final = 6379
PLAIN_SCHEMES: Final = ("redis://", "rediss://", "unix://")


class RedisUrlError(ValueError):
    pass


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    username: str | None
    password: str | None
    tls: bool = False


@dataclass(frozen=True)
class ClusterUrl:
    nodes: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    tls: bool = False


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEMES)


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def uses_tls(url: str) -> bool:
    return url.startswith(TLS_SCHEMES)


def _credentials(netloc: str) -> tuple[str, str | None, str | None]:
    """`netloc` without its `user:password@`, and the user and password."""
    if "@" not in netloc:
        return netloc, None, None
    userinfo, _, netloc = netloc.rpartition("@")
    user, colon, secret = userinfo.partition(":")
    return netloc, unquote(user) or None, unquote(secret) if colon else None


def parse_cluster_url(url: str) -> ClusterUrl:
    netloc, _, path = url.partition("://")[2].partition("/")
    netloc, username, password = _credentials(netloc)
    if path.partition("?")[0].strip("/") not in ("", "0"):
        raise RedisUrlError("a Cluster URL names no database: Redis Cluster only has db 0")
    nodes = tuple(_host_port(part, DEFAULT_REDIS_PORT) for part in netloc.split(",") if part)
    if not nodes:
        raise RedisUrlError("a Cluster URL lists at least one node as host:port")
    return ClusterUrl(nodes, username, password, uses_tls(url))


def parse_sentinel_url(url: str) -> SentinelUrl:
    netloc, _, path = url.partition("://")[2].partition("/")
    netloc, username, password = _credentials(netloc)
    service = unquote(path.partition("?")[0].strip("/"))
    if not service or "/" in service:
        raise RedisUrlError("a Sentinel URL ends with /service_name (the monitored master's name)")
    sentinels = tuple(_host_port(part) for part in netloc.split(",") if part)
    if not sentinels:
        raise RedisUrlError("a Sentinel URL lists at least one sentinel as host:port")
    return SentinelUrl(sentinels, service, username, password, uses_tls(url))


def _host_port(text: str, default_port: int = DEFAULT_SENTINEL_PORT) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise RedisUrlError(f"node {text!r}: expected host:port")
    if not port:
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisUrlError(f"node {text!r}: the port must be 1 to 65535")
    return host, int(port)


def check_redis_url(url: str) -> None:
    """Raise RedisUrlError unless `url` is one the gateway can connect to."""
    if is_sentinel_url(url):
        parse_sentinel_url(url)
    elif is_cluster_url(url):
        parse_cluster_url(url)
    elif not url.startswith(PLAIN_SCHEMES):
        raise RedisUrlError(
            "must start with redis://, rediss://, unix://, redis+sentinel://, "
            "rediss+sentinel://, redis+cluster:// or rediss+cluster://"
        )
