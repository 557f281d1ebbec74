from __future__ import annotations

from collections.abc import Iterator

import pytest

from .support import RedisProcess, SidecarProcess


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    redis = RedisProcess().start()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
def nodes(redis_server: RedisProcess) -> Iterator[tuple[SidecarProcess, SidecarProcess]]:
    """Two sidecars on one Redis: two nodes of a fleet."""
    a = SidecarProcess(redis_server.url, extra_args=["--node-id", "a"]).start()
    b = SidecarProcess(redis_server.url, extra_args=["--node-id", "b"]).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def sidecar(redis_server: RedisProcess) -> Iterator[SidecarProcess]:
    side = SidecarProcess(redis_server.url).start()
    try:
        yield side
    finally:
        side.stop()
