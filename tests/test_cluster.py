"""Redis Cluster: three masters and three replicas, all real processes, and two sidecars on
`redis+cluster://`. Every capability across the two nodes, with keys spread over every
master; then a master killed with SIGKILL under load, and slots resharded under load."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from madsidecar.ratelimit.keys import RateKeys
from madsidecar.redis_cluster import slot_of
from madsidecar_client import BlockingClient, UnavailableError
from madsidecar_client.errors import ServerTimeoutError

from .failover_load import REDIS_TIMEOUT_MS, Loaded, start_load, start_sidecar
from .support import SidecarProcess, next_note, wait_until
from .topologies import ClusterTopology

# A call may take the command deadline, a redirect's, a reconnect attempt's, and scheduling.
CALL_BOUND_S = 3 * REDIS_TIMEOUT_MS / 1000 + 1.0
FOLLOW_MARGIN_S = 2.0
FAILOVER_LIMIT_S = 30.0
FAST_PRESENCE = ["--presence-node-timeout-ms", "1000", "--presence-sweep-interval-ms", "300"]

Nodes = tuple[SidecarProcess, SidecarProcess]


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterTopology]:
    with ClusterTopology() as topology:
        yield topology


@pytest.fixture(scope="module")
def nodes(cluster: ClusterTopology) -> Iterator[Nodes]:
    a = start_sidecar(cluster.url, "node-a", *FAST_PRESENCE)
    b = start_sidecar(cluster.url, "node-b", *FAST_PRESENCE)
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture
def fresh_cluster() -> Iterator[ClusterTopology]:
    """A cluster of its own, for tests that kill or reshard it."""
    with ClusterTopology() as topology:
        yield topology


def masters_of(cluster: ClusterTopology, keys: list[str]) -> set[int]:
    return {cluster.master_for_key(key) for key in keys}


def eventually(read: Callable[[], Any], expected: Any, timeout: float = 2.0) -> None:
    wait_until(lambda: read() == expected, timeout)


# -- every capability, two nodes ------------------------------------------------------------


def test_cache_values_spread_over_every_master_stay_coherent(
    cluster: ClusterTopology, nodes: Nodes
) -> None:
    a, b = nodes
    names = [f"cfg:{i}" for i in range(30)]
    assert len(masters_of(cluster, [f"msc:c:{{7:default:{n}}}" for n in names])) == 3
    with a.client() as ca, b.client() as cb:
        wait_until(lambda: cb.stats()["cache"]["feed_live"], 10)
        for i, name in enumerate(names):
            ca.call("cache.set", {"key": name, "value": i})
        for i, name in enumerate(names):
            assert cb.call("cache.get", {"key": name})["value"] == i
            assert cb.call("cache.get", {"key": name})["source"] == "l1"
        # A write on one node drops the key from the other's L1, whichever master has it.
        for name in names:
            ca.call("cache.set", {"key": name, "value": "new"})
        for name in names:
            eventually(lambda n=name: cb.call("cache.get", {"key": n})["value"], "new")  # type: ignore[misc]
        assert cb.call("cache.delete", {"keys": names[:10]}) == {"deleted": 10}
        assert cb.call("cache.invalidate", {"prefix": "cfg:"}) == {"deleted": 20}
        for name in names:
            eventually(lambda n=name: ca.call("cache.get", {"key": n}), None)  # type: ignore[misc]


def test_cache_fetch_lease_and_fill_across_nodes(nodes: Nodes) -> None:
    a, b = nodes
    with a.client() as ca, b.client() as cb:
        first = ca.call("cache.fetch", {"key": "report", "wait_ms": 0})
        assert "lease" in first
        with pytest.raises(ServerTimeoutError, match="another caller holds the lease"):
            cb.call("cache.fetch", {"key": "report", "wait_ms": 0})
        ca.call("cache.fill", {"key": "report", "lease": first["lease"], "value": "done"})
        assert cb.call("cache.fetch", {"key": "report"})["value"] == "done"


def test_locks_exclude_and_fence_across_nodes(nodes: Nodes) -> None:
    a, b = nodes
    with a.client() as holder, b.client() as other:
        fences = []
        for name in ("migrate", "jobs:1", "jobs:2", "reindex"):
            got = holder.call("lock.acquire", {"name": name, "ttl_ms": 10_000})
            assert got["acquired"]
            assert other.call("lock.acquire", {"name": name, "wait_ms": 0})["acquired"] is False
            assert holder.call("lock.release", {"name": name, "token": got["token"]})
            after = other.call("lock.acquire", {"name": name})
            assert after["acquired"] and after["fence"] > got["fence"]
            fences.append(after)
        # A holder's connection closing releases its locks on every master.
        other.close()
        with b.client() as third:
            for name in ("migrate", "jobs:1", "jobs:2", "reindex"):
                got = third.call("lock.acquire", {"name": name, "wait_ms": 2000})
                assert got["acquired"]


def test_sessions_revoked_on_one_node_are_gone_on_the_other(nodes: Nodes) -> None:
    a, b = nodes
    with a.client() as ca, b.client() as cb:
        made = [ca.call("session.create", {"user_id": f"user-{i}"}) for i in range(12)]
        for session in made:
            assert (
                cb.call("session.get", {"token": session["token"]})["session_id"]
                == (session["session_id"])
            )
        ca.call("session.revoke", {"token": made[0]["token"]})
        ca.call("session.revoke", {"session_id": made[1]["session_id"]})
        assert cb.call("session.get", {"token": made[0]["token"]}) is None
        assert cb.call("session.get", {"token": made[1]["token"]}) is None
        rotated = cb.call("session.rotate", {"token": made[2]["token"]})
        assert ca.call("session.get", {"token": made[2]["token"]}) is None
        assert ca.call("session.get", {"token": rotated["token"]})["user_id"] == "user-2"
        extra = [ca.call("session.create", {"user_id": "kim"}) for _ in range(3)]
        assert len(cb.call("session.list", {"user_id": "kim"})) == 3
        assert cb.call("session.revoke_user", {"user_id": "kim"}) == {"revoked": 3}
        for session in extra:
            assert ca.call("session.get", {"token": session["token"]}) is None


def test_presence_joins_and_leaves_reach_the_other_node(nodes: Nodes) -> None:
    a, b = nodes
    with b.client() as watcher:
        channels = [f"room:{i}" for i in range(6)]
        for channel in channels:
            assert watcher.call("presence.subscribe", {"channel": channel})["members"] == {}
        tracker = a.client()
        for channel in channels:
            tracker.call("presence.track", {"channel": channel, "key": "ann"})
            assert next_note(watcher, "presence.diff")["joins"]["ann"]
            assert watcher.call("presence.count", {"channel": channel})["refs"] == 1
        tracker.close()
        for _ in channels:
            assert next_note(watcher, "presence.diff")["leaves"]["ann"]
        for channel in channels:
            assert watcher.call("presence.count", {"channel": channel})["refs"] == 0


def test_presence_of_a_killed_node_is_swept(cluster: ClusterTopology) -> None:
    a = start_sidecar(cluster.url, "doomed", *FAST_PRESENCE)
    b = start_sidecar(cluster.url, "sweeper", *FAST_PRESENCE)
    try:
        with a.client() as tracker, b.client() as watcher:
            for channel in ("hall", "yard", "deck"):
                watcher.call("presence.subscribe", {"channel": channel})
                tracker.call("presence.track", {"channel": channel, "key": "bo"})
                next_note(watcher, "presence.diff")
            a.signal(signal.SIGKILL)
            # Every channel's leave, from a sweeper once the node's lease lapsed (1 s).
            left = {next_note(watcher, "presence.diff", 5.0)["version"] for _ in range(3)}
            assert left == {2}
            for channel in ("hall", "yard", "deck"):
                assert watcher.call("presence.count", {"channel": channel})["refs"] == 0
    finally:
        a.stop()
        b.stop()


def test_pubsub_messages_cross_nodes(nodes: Nodes) -> None:
    a, b = nodes
    with a.client() as publisher, b.client() as subscriber:
        for channel in ("news", "alerts", "jobs"):
            subscriber.call("pubsub.subscribe", {"channel": channel})
            publisher.call("pubsub.publish", {"channel": channel, "message": {"on": channel}})
            note = subscriber.next_notification(5.0)
            assert note is not None and note.payload["message"] == {"on": channel}


def test_rate_limits_are_exact_across_nodes(nodes: Nodes) -> None:
    a, b = nodes
    with a.client() as ca, b.client() as cb:
        limit = {"limit": 7, "window_ms": 60_000}
        answers = [
            client.call("ratelimit.hit", {"key": "ip:1", **limit})["allowed"]
            for _ in range(10)
            for client in (ca, cb)
        ]
        assert answers.count(True) == 7


def test_hit_many_over_several_slots_consumes_all_or_nothing(nodes: Nodes) -> None:
    a, b = nodes
    keys = RateKeys("msc:")
    names = ["user:1", "ip:9", "org:4"]
    counters = [keys.counter(keys.tag("default", "", n), "sliding_window") for n in names]
    assert len({slot_of(counter) for counter in counters}) == 3
    with a.client() as ca, b.client() as cb:
        limits = {"limit": 3, "window_ms": 60_000}
        for _ in range(3):
            assert cb.call("ratelimit.hit", {"key": "org:4", **limits})["allowed"]
        checks = [{"key": name, **limits} for name in names]
        denied = ca.call("ratelimit.hit_many", {"checks": checks})
        assert denied["allowed"] is False
        assert [r["allowed"] for r in denied["results"]] == [True, True, False]
        # Nothing was taken from the checks that would have allowed.
        for name in ("user:1", "ip:9"):
            assert cb.call("ratelimit.peek", {"key": name, **limits})["remaining"] == 3
        other = [{"key": name, **limits} for name in ("user:1", "ip:9")]
        assert cb.call("ratelimit.hit_many", {"checks": other})["allowed"]
        for name in ("user:1", "ip:9"):
            assert ca.call("ratelimit.peek", {"key": name, **limits})["remaining"] == 2


# -- faults ---------------------------------------------------------------------------------


def writes_everywhere_ok(sidecar: SidecarProcess) -> bool:
    """A write lands on every master (the keys are spread over all of them)."""
    with BlockingClient(sidecar.socket_path, timeout=10) as client:
        try:
            for i in range(12):
                client.call("cache.set", {"key": f"probe:{i}", "value": i})
        except UnavailableError:
            return False
    return True


def test_a_master_killed_under_load_is_followed_and_nothing_stale_is_served(
    fresh_cluster: ClusterTopology,
) -> None:
    first = start_sidecar(fresh_cluster.url, "node-a")
    second = start_sidecar(fresh_cluster.url, "node-b")
    loaded: Loaded | None = None
    try:
        with first.client() as a, second.client() as b:
            wait_until(lambda: b.stats()["cache"]["feed_live"], 10)
            a.call("cache.set", {"key": "config", "value": "before"})
            wait_until(lambda: b.call("cache.get", {"key": "config"})["source"] == "l1", 10)
            victim = fresh_cluster.master_for_key("msc:c:{7:default:config}")
            loaded = start_load(first, second)
            killed_at = time.monotonic()
            fresh_cluster.kill(victim)
            failover_s = fresh_cluster.wait_failover(victim, FAILOVER_LIMIT_S)
            wait_until(
                lambda: writes_everywhere_ok(first) and writes_everywhere_ok(second),
                FAILOVER_LIMIT_S,
            )
            followed_s = time.monotonic() - killed_at
            assert followed_s <= failover_s + FOLLOW_MARGIN_S, (failover_s, followed_s)

            # Written after the failover on one node: the other never serves the old value.
            a.call("cache.set", {"key": "config", "value": "after"})
            assert b.call("cache.get", {"key": "config"})["value"] == "after"
            recovered_at = time.monotonic()
            loaded.wait_for_calls(50)
        loaded.stop()
        loaded.assert_served(CALL_BOUND_S)
        loaded.assert_kept(recovered_at, first, second)
        assert "redis_cluster_masters" in first.log()
    finally:
        if loaded is not None:
            loaded.stop()
        first.stop()
        second.stop()


def test_locks_with_wait_replicas_keep_fences_rising_across_a_failover(
    fresh_cluster: ClusterTopology,
) -> None:
    first = start_sidecar(fresh_cluster.url, "node-a")
    second = start_sidecar(fresh_cluster.url, "node-b")
    try:
        with first.client() as holder, second.client() as other:
            got = holder.call(
                "lock.acquire", {"name": "migrate", "ttl_ms": 10_000, "wait_replicas": 1}
            )
            assert got["acquired"]
            victim = fresh_cluster.master_for_key("msc:lock:{7:default:migrate}")
            fresh_cluster.kill(victim)
            fresh_cluster.wait_failover(victim, FAILOVER_LIMIT_S)
            wait_until(lambda: writes_everywhere_ok(second), FAILOVER_LIMIT_S)
            # The replica had the lock before the holder was told: the new master has it.
            assert (
                other.call("lock.acquire", {"name": "migrate", "wait_ms": 0})["acquired"] is False
            )
            assert holder.call("lock.release", {"name": "migrate", "token": got["token"]})
            after = other.call("lock.acquire", {"name": "migrate"})
            assert after["acquired"] and after["fence"] > got["fence"]
    finally:
        first.stop()
        second.stop()


def test_slots_resharded_under_load_fail_no_request(fresh_cluster: ClusterTopology) -> None:
    first = start_sidecar(fresh_cluster.url, "node-a")
    second = start_sidecar(fresh_cluster.url, "node-b")
    loaded: Loaded | None = None
    try:
        with first.client() as a:
            wait_until(lambda: a.stats()["cache"]["feed_live"], 10)
        loaded = start_load(first, second)
        loaded.wait_for_calls(20)
        source, target, _ = fresh_cluster.master_ports()
        for moving in (source, target):
            others = [port for port in fresh_cluster.master_ports() if port != moving]
            fresh_cluster.wait_reshard(fresh_cluster.reshard(moving, others[0], 2000), 120)
        loaded.wait_for_calls(20)
        loaded.stop()
        loaded.assert_served(CALL_BOUND_S)
        assert [load.refused for load in loaded.loads] == [0] * len(loaded.loads)
        loaded.assert_kept(float("-inf"), first, second)
        with first.client() as a:
            assert a.stats()["redis"]["cluster"]["slots_unserved"] == 0
    finally:
        if loaded is not None:
            loaded.stop()
        first.stop()
        second.stop()
