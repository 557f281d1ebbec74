"""Redis Sentinel: a master, a replica and three sentinels, all real processes, and two
sidecars on `redis+sentinel://`. The master is killed with SIGKILL under load."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from madsidecar.redis_urls import parse_sentinel_url
from madsidecar_client import BlockingClient, UnavailableError

from .failover_load import REDIS_TIMEOUT_MS, Loaded, start_load, start_sidecar
from .support import SidecarProcess, wait_until
from .topologies import SentinelTopology, TcpRedis

# A call may take the command deadline, plus a reconnect attempt's, plus scheduling.
CALL_BOUND_S = 2 * REDIS_TIMEOUT_MS / 1000 + 1.0
FOLLOW_MARGIN_S = 2.0
FAILOVER_LIMIT_S = 30.0


def test_sentinel_urls_parse() -> None:
    target = parse_sentinel_url("redis+sentinel://app:s%40cret@10.0.0.1:26379,[::1]:5,h/cache")
    assert target.sentinels == (("10.0.0.1", 26379), ("::1", 5), ("h", 26379))
    assert (target.service, target.username, target.password) == ("cache", "app", "s@cret")


@pytest.fixture
def topology() -> Iterator[SentinelTopology]:
    with SentinelTopology() as topology:
        yield topology


def writes_ok(sidecar: SidecarProcess) -> bool:
    with BlockingClient(sidecar.socket_path, timeout=10) as client:
        try:
            client.call("cache.set", {"key": "probe", "value": 1})
        except UnavailableError:
            return False
    return True


def test_sidecars_follow_a_failover_and_serve_nothing_stale(topology: SentinelTopology) -> None:
    first = start_sidecar(topology.url, "node-a")
    second = start_sidecar(topology.url, "node-b")
    loaded: Loaded | None = None
    try:
        with first.client() as a, second.client() as b:
            a.call("cache.set", {"key": "config", "value": "before"})
            # In L1 once node b's invalidation feed is proven live (right after start it
            # may not be yet, and reads then go to Redis).
            wait_until(lambda: b.call("cache.get", {"key": "config"})["source"] == "l1", 10)
            old_master = topology.master_port()
            loaded = start_load(first, second)

            killed_at = time.monotonic()
            topology.master.kill()
            wait_until(lambda: topology.master_port() != old_master, FAILOVER_LIMIT_S, 0.05)
            failover_s = time.monotonic() - killed_at
            wait_until(lambda: writes_ok(first) and writes_ok(second), FAILOVER_LIMIT_S)
            followed_s = time.monotonic() - killed_at
            assert followed_s <= failover_s + FOLLOW_MARGIN_S, (failover_s, followed_s)

            # Written after the failover on one node: the other never serves the old value.
            a.call("cache.set", {"key": "config", "value": "after"})
            assert b.call("cache.get", {"key": "config"})["value"] == "after"
            assert a.call("cache.get", {"key": "config"})["value"] == "after"
            recovered_at = time.monotonic()
            loaded.wait_for_calls(20)
    finally:
        if loaded is not None:
            loaded.stop()
    assert loaded is not None
    try:
        loaded.assert_served(CALL_BOUND_S)
        # Every write acknowledged after the failover reads back, on both nodes.
        loaded.assert_kept(recovered_at, first, second)
        assert "redis_disconnected" in first.log()
    finally:
        first.stop()
        second.stop()


def test_locks_taken_with_wait_replicas_survive_a_failover(topology: SentinelTopology) -> None:
    first = start_sidecar(topology.url, "node-a")
    second = start_sidecar(topology.url, "node-b")
    try:
        with first.client() as holder, second.client() as other:
            got = holder.call(
                "lock.acquire", {"name": "migrate", "ttl_ms": 10_000, "wait_replicas": 1}
            )
            assert got["acquired"]
            old_master = topology.master_port()
            topology.master.kill()
            wait_until(lambda: topology.master_port() != old_master, FAILOVER_LIMIT_S, 0.05)
            wait_until(lambda: writes_ok(first) and writes_ok(second), FAILOVER_LIMIT_S)
            # The replica had the lock before the holder was told: the new master has it.
            taken = other.call("lock.acquire", {"name": "migrate", "wait_ms": 0})
            assert taken["acquired"] is False
            released = holder.call("lock.release", {"name": "migrate", "token": got["token"]})
            assert released["released"]
            after = other.call("lock.acquire", {"name": "migrate"})
            assert after["acquired"] and after["fence"] > got["fence"]
    finally:
        first.stop()
        second.stop()


def test_wait_replicas_without_the_replicas_refuses_and_leaves_the_lock_free() -> None:
    redis = TcpRedis().start()
    sidecar = start_sidecar(f"redis://127.0.0.1:{redis.port}", "lonely")
    try:
        with sidecar.client() as client:
            with pytest.raises(UnavailableError, match="0 of the 1 replicas"):
                client.call("lock.acquire", {"name": "job", "wait_replicas": 1})
            assert client.call("lock.inspect", {"name": "job"})["held"] is False
            assert client.call("lock.acquire", {"name": "job"})["acquired"]
    finally:
        sidecar.stop()
        redis.stop()


def test_wait_replicas_answers_once_the_replica_holds_the_lock_and_its_fence() -> None:
    # A fresh Redis: the first acquire runs as EVAL after NOSCRIPT, and must still be
    # what WAIT counts.
    master = TcpRedis().start()
    replica = TcpRedis(replica_of=master.port).start()
    sidecar = start_sidecar(f"redis://127.0.0.1:{master.port}", "durable")
    try:
        with sidecar.client() as client, replica.direct() as on_replica:
            got = client.call("lock.acquire", {"name": "job", "wait_replicas": 1})
            assert got["acquired"]
            held = [k for k in on_replica.scan_iter("*lock:{*job}") if b"fence" not in k]
            assert len(held) == 1 and on_replica.get(held[0]).decode() == got["token"]
            (fence_key,) = on_replica.scan_iter("*lock:{*job}:fence")
            assert int(on_replica.get(fence_key)) == got["fence"]
    finally:
        sidecar.stop()
        replica.stop()
        master.stop()


def test_a_sidecar_pointed_at_a_replica_refuses_writes_as_unavailable() -> None:
    master = TcpRedis().start()
    replica = TcpRedis(replica_of=master.port).start()
    sidecar = start_sidecar(f"redis://127.0.0.1:{replica.port}", "misrouted")
    try:
        with sidecar.client() as client, pytest.raises(UnavailableError, match="read-only"):
            client.call("cache.set", {"key": "k", "value": 1})
        wait_until(lambda: "redis_disconnected" in sidecar.log(), 10)
    finally:
        sidecar.stop()
        replica.stop()
        master.stop()
