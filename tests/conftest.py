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
def sidecar(redis_server: RedisProcess) -> Iterator[SidecarProcess]:
    side = SidecarProcess(redis_server.url).start()
    try:
        yield side
    finally:
        side.stop()
