"""Redis URLs beyond redis-py's own: `redis+sentinel://` names a Sentinel deployment.

`redis+sentinel://[user:password@]host:port[,host:port...]/service_name`: the sentinels to
ask, and the name of the master they watch. The user and password are the data nodes'
(the master's); the sentinels themselves are asked without credentials.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote

SENTINEL_SCHEME: Final = "redis+sentinel://"
DEFAULT_SENTINEL_PORT: Final = 26379
PLAIN_SCHEMES: Final = ("redis://", "rediss://", "unix://")


class RedisUrlError(ValueError):
    pass


@dataclass(frozen=True)
class SentinelUrl:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    username: str | None
    password: str | None


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEME)


def parse_sentinel_url(url: str) -> SentinelUrl:
    rest = url[len(SENTINEL_SCHEME) :]
    netloc, _, path = rest.partition("/")
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    service = unquote(path.partition("?")[0].strip("/"))
    if not service or "/" in service:
        raise RedisUrlError("a Sentinel URL ends with /service_name (the monitored master's name)")
    sentinels = tuple(_host_port(part) for part in netloc.split(",") if part)
    if not sentinels:
        raise RedisUrlError("a Sentinel URL lists at least one sentinel as host:port")
    return SentinelUrl(sentinels, service, username, password)


def _host_port(text: str) -> tuple[str, int]:
    if text.startswith("["):  # [IPv6]:port
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise RedisUrlError(f"sentinel {text!r}: expected host:port")
    if not port:
        return host, DEFAULT_SENTINEL_PORT
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise RedisUrlError(f"sentinel {text!r}: the port must be 1 to 65535")
    return host, int(port)


def check_redis_url(url: str) -> None:
    """Raise RedisUrlError unless `url` is one the gateway can connect to."""
    if is_sentinel_url(url):
        parse_sentinel_url(url)
    elif url.startswith("redis+cluster://"):
        raise RedisUrlError("Redis Cluster (redis+cluster://) is not supported yet")
    elif not url.startswith(PLAIN_SCHEMES):
        raise RedisUrlError("must start with redis://, rediss://, unix:// or redis+sentinel://")
