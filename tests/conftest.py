from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

import madsidecar
import madsidecar_client
from madsidecar.build_info import is_compiled, stale_modules

from .support import RedisProcess, SidecarProcess

# HYPOTHESIS_PROFILE=long: every property test explores more (tests/fuzzing.py scales the
# fuzz tests' own budgets by the same switch).
settings.register_profile("long", max_examples=2000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_sessionstart(session: pytest.Session) -> None:
    expected = os.environ.get("MADSIDECAR_EXPECT_COMPILED")
    if expected is not None and is_compiled() != (expected != "0"):
        pytest.exit(
            f"expected the {'compiled' if expected != '0' else 'plain Python'} build, "
            f"imported madsidecar from {madsidecar.__file__} (compiled: {is_compiled()})",
            returncode=2,
        )
    stale = stale_modules() + stale_modules(Path(madsidecar_client.__file__).parent)
    if stale:
        pytest.exit(
            f"compiled modules are older than their sources {stale}: the tests would run "
            "the old code. Run ./dev build (or ./dev test), or MADSIDECAR_COMPILE=0 ./dev test.",
            returncode=2,
        )


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
