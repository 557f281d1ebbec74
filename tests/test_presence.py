"""Presence across two nodes on one Redis: joins, leaves, node death, versions, resync."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from madsidecar_client import BadRequestError

from .support import RedisProcess, SidecarProcess, kill_redis_client, next_note, wait_until

FAST = ["--presence-node-timeout-ms", "1000", "--presence-sweep-interval-ms", "300"]


@pytest.fixture
def fast_nodes(redis_server: RedisProcess) -> Iterator[tuple[SidecarProcess, SidecarProcess]]:
    """Two nodes whose presence leases lapse after 1 s, swept every 300 ms."""
    a = SidecarProcess(redis_server.url, extra_args=[*FAST, "--node-id", "a"]).start()
    b = SidecarProcess(redis_server.url, extra_args=[*FAST, "--node-id", "b"]).start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def refs(members: dict[str, list[dict[str, Any]]]) -> set[str]:
    return {entry["ref"] for entries in members.values() for entry in entries}


def test_join_reaches_the_other_node_within_200ms_and_leave_within_1s(
    fast_nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = fast_nodes
    with b.client() as watcher:
        assert watcher.call("presence.subscribe", {"channel": "lobby"}) == {
            "members": {},
            "version": 0,
        }
        tracker = a.client()
        started = time.monotonic()
        ref = tracker.call("presence.track", {"channel": "lobby", "key": "ann", "meta": {"x": 1}})
        join = next_note(watcher, "presence.diff", 0.2)
        assert time.monotonic() - started < 0.2
        assert join["version"] == 1 and join["leaves"] == {}
        [entry] = join["joins"]["ann"]
        assert entry["ref"] == ref["ref"] and entry["meta"] == {"x": 1}
        assert entry["node_id"] == "a" and entry["online_at_ms"] > 0
        tracker.close()  # the connection goes: its entries leave
        closed = time.monotonic()
        leave = next_note(watcher, "presence.diff", 1.0)
        assert time.monotonic() - closed < 1.0
        assert leave["version"] == 2 and leave["leaves"]["ann"][0]["ref"] == ref["ref"]
        assert watcher.call("presence.count", {"channel": "lobby"}) == {"keys": 0, "refs": 0}


def test_three_refs_of_one_key_leave_one_by_one_with_contiguous_versions(
    fast_nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = fast_nodes
    with b.client() as watcher:
        watcher.call("presence.subscribe", {"channel": "room"})
        trackers = [a.client(), a.client(), b.client()]
        made = [
            t.call("presence.track", {"channel": "room", "key": "bea", "meta": {"tab": i}})["ref"]
            for i, t in enumerate(trackers)
        ]
        listed = watcher.call("presence.list", {"channel": "room"})["members"]
        assert list(listed) == ["bea"] and refs(listed) == set(made)
        assert watcher.call("presence.count", {"channel": "room"}) == {"keys": 1, "refs": 3}
        versions = [next_note(watcher, "presence.diff")["version"] for _ in range(3)]
        for i, tracker in enumerate(trackers):
            if i == 1:
                assert tracker.call("presence.untrack", {"channel": "room", "ref": made[i]}) == {
                    "removed": True
                }
            else:
                tracker.close()
            diff = next_note(watcher, "presence.diff")
            versions.append(diff["version"])
            assert [e["ref"] for e in diff["leaves"]["bea"]] == [made[i]] and not diff["joins"]
            left = watcher.call("presence.count", {"channel": "room"})
            assert left == {"keys": 1 if i < 2 else 0, "refs": 2 - i}
        assert versions == list(range(1, 7)), "the versions a subscriber saw have a gap"
        trackers[1].close()


def test_update_and_unknown_refs(fast_nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, b = fast_nodes
    with a.client() as tracker, b.client() as watcher, b.client() as stranger:
        watcher.call("presence.subscribe", {"channel": "doc"})
        ref = tracker.call("presence.track", {"channel": "doc", "key": "cy"})["ref"]
        next_note(watcher, "presence.diff")
        assert tracker.call("presence.update", {"channel": "doc", "ref": ref, "meta": "typing"})
        diff = next_note(watcher, "presence.diff")
        assert diff["joins"]["cy"][0]["meta"] == "typing" and diff["leaves"]["cy"][0]["meta"] == {}
        # Only the connection that tracked an entry can change or remove it.
        assert stranger.call("presence.untrack", {"channel": "doc", "ref": ref}) == {
            "removed": False
        }
        assert stranger.call("presence.update", {"channel": "doc", "ref": ref, "meta": 1}) == {
            "updated": False
        }
        assert tracker.call("presence.untrack", {"channel": "other", "ref": ref}) == {
            "removed": False
        }


def test_a_node_killed_its_entries_leave_within_the_node_timeout_plus_a_sweep(
    fast_nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = fast_nodes
    with b.client() as watcher:
        watcher.call("presence.subscribe", {"channel": "hall"})
        trackers = [a.client() for _ in range(3)]
        for i, tracker in enumerate(trackers):
            tracker.call("presence.track", {"channel": "hall", "key": f"k{i}"})
        mine = b.client()
        mine.call("presence.track", {"channel": "hall", "key": "survivor"})
        for _ in range(4):
            next_note(watcher, "presence.diff")
        a.signal(signal.SIGKILL)
        killed = time.monotonic()
        gone: set[str] = set()
        while len(gone) < 3:
            diff = next_note(watcher, "presence.diff", 1.0 + 0.3 + 2.0)
            gone |= set(diff["leaves"])
        took = time.monotonic() - killed
        print(
            f"node killed: its 3 entries left after {took * 1000:.0f} ms (timeout 1000 + sweep 300)"
        )
        assert gone == {"k0", "k1", "k2"}
        assert took < 1.0 + 0.3 + 1.0  # the lease's remaining life, one sweep, slack
        members = watcher.call("presence.list", {"channel": "hall"})["members"]
        assert list(members) == ["survivor"]
        mine.close()


def test_a_node_restarted_at_once_under_the_same_id_its_old_entries_still_leave(
    fast_nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    """Found by the chaos run: a sidecar killed and back within the node timeout, with the
    same node id, used to renew the dead process's lease and keep its entries forever."""
    a, b = fast_nodes
    with b.client() as watcher, a.client() as tracker:
        watcher.call("presence.subscribe", {"channel": "hall"})
        tracker.call("presence.track", {"channel": "hall", "key": "ghost"})
        next_note(watcher, "presence.diff")
        a.signal(signal.SIGKILL)
        a.process.wait()  # type: ignore[union-attr]
        killed = time.monotonic()
        a.start()
        diff = next_note(watcher, "presence.diff", 1.0 + 0.3 + 2.0)
        assert list(diff["leaves"]) == ["ghost"]
        assert time.monotonic() - killed < 1.0 + 0.3 + 1.0
        assert watcher.call("presence.list", {"channel": "hall"}) == {"members": {}}


def test_dead_runs_leave_the_node_registry_even_without_entries(
    redis_server: RedisProcess, fast_nodes: tuple[SidecarProcess, SidecarProcess]
) -> None:
    """Each run of a sidecar registers itself for the sweepers; a run that died holding
    nothing must not stay registered (sweepers would check it forever)."""
    a, _ = fast_nodes
    for _ in range(3):
        a.signal(signal.SIGKILL)
        a.process.wait()  # type: ignore[union-attr]
        a.start()
    with redis.Redis.from_url(redis_server.url) as direct:
        # Two runs registered (a's current one and b's) once the dead ones are swept.
        wait_until(lambda: direct.scard("msc:pr:nodes") == 2, timeout=5)


def test_readers_skip_a_dead_nodes_entries_before_any_sweep(redis_server: RedisProcess) -> None:
    slow_sweep = ["--presence-node-timeout-ms", "1000", "--presence-sweep-interval-ms", "600000"]
    a = SidecarProcess(redis_server.url, extra_args=[*slow_sweep, "--node-id", "a"]).start()
    b = SidecarProcess(redis_server.url, extra_args=[*slow_sweep, "--node-id", "b"]).start()
    try:
        with a.client() as tracker, b.client() as reader:
            tracker.call("presence.track", {"channel": "q", "key": "ghost"})
            assert reader.call("presence.count", {"channel": "q"}) == {"keys": 1, "refs": 1}
            a.signal(signal.SIGKILL)
            killed = time.monotonic()
            while reader.call("presence.count", {"channel": "q"})["refs"]:
                assert time.monotonic() - killed < 3, "a dead node's entry is still listed"
                time.sleep(0.05)
            assert reader.call("presence.list", {"channel": "q"}) == {"members": {}}
    finally:
        a.stop()
        b.stop()


def test_the_pubsub_connection_killed_subscribers_get_a_fresh_state(
    redis_server: RedisProcess, fast_nodes: tuple[SidecarProcess, SidecarProcess]
) -> None:
    a, b = fast_nodes
    direct = redis.Redis(unix_socket_path=redis_server.socket_path)
    with a.client() as tracker, b.client() as watcher:
        watcher.call("presence.subscribe", {"channel": "live"})
        first = tracker.call("presence.track", {"channel": "live", "key": "dee"})["ref"]
        next_note(watcher, "presence.diff")
        kill_redis_client(direct, "madsidecar-presence:b")
        # A join while B's subscription is down: B's subscribers learn of it through the
        # fresh state sent once B's connection is back.
        second = tracker.call("presence.track", {"channel": "live", "key": "eve"})["ref"]
        state = next_note(watcher, "presence.state")
        assert refs(state["members"]) == {first, second}, "an entry was lost"
        assert state["version"] == 2
        tracker.call("presence.untrack", {"channel": "live", "ref": first})
        assert next_note(watcher, "presence.diff")["version"] == 3


def test_limits_per_connection(redis_server: RedisProcess) -> None:
    from .support import running_sidecar

    args = ["--presence-max-tracked", "2", "--presence-max-meta-bytes", "200"]
    args += ["--pubsub-max-subscriptions", "2"]
    with running_sidecar(redis_server, extra_args=args) as side, side.client() as client:
        for i in range(2):
            client.call("presence.track", {"channel": "c", "key": f"k{i}"})
        with pytest.raises(BadRequestError) as caught:
            client.call("presence.track", {"channel": "c", "key": "k2"})
        assert "presence_max_tracked" in str(caught.value)
        with side.client() as other, pytest.raises(BadRequestError) as caught:
            other.call("presence.track", {"channel": "c", "key": "k", "meta": "m" * 300})
        assert caught.value.argument == "meta"
        for channel in ("s1", "s2", "s1"):
            client.call("presence.subscribe", {"channel": channel})
        with pytest.raises(BadRequestError) as caught:
            client.call("presence.subscribe", {"channel": "s3"})
        assert "pubsub_max_subscriptions" in str(caught.value)


def test_a_node_swept_during_a_pause_writes_its_entries_again(
    fast_nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    """A partition (here: a pause) longer than the node timeout gets the node swept; its
    connections are still open, so once it is back its entries are written again."""
    a, b = fast_nodes
    with a.client() as tracker, b.client() as watcher:
        watcher.call("presence.subscribe", {"channel": "split"})
        ref = tracker.call("presence.track", {"channel": "split", "key": "fay"})["ref"]
        next_note(watcher, "presence.diff")
        a.signal(signal.SIGSTOP)
        try:
            leave = next_note(watcher, "presence.diff", 1.0 + 0.3 + 2.0)
            assert leave["leaves"]["fay"][0]["ref"] == ref
        finally:
            a.signal(signal.SIGCONT)
        back = next_note(watcher, "presence.diff", 3.0)
        assert back["joins"]["fay"][0]["ref"] == ref, "the entry did not come back"
        members = watcher.call("presence.list", {"channel": "split"})["members"]
        assert refs(members) == {ref}
        assert tracker.call("presence.untrack", {"channel": "split", "ref": ref}) == {
            "removed": True
        }


def test_a_leave_grace_absorbs_a_reconnect(redis_server: RedisProcess) -> None:
    """With presence_leave_grace_ms, a client that reconnects and tracks again never
    makes its key leave: the new entry joins before the old one goes."""
    grace = ["--presence-leave-grace-ms", "500", "--node-id", "g"]
    side = SidecarProcess(redis_server.url, extra_args=[*FAST, *grace]).start()
    try:
        with side.client() as watcher:
            watcher.call("presence.subscribe", {"channel": "flaky"})
            first = side.client()
            old = first.call("presence.track", {"channel": "flaky", "key": "gil"})["ref"]
            next_note(watcher, "presence.diff")
            first.close()
            closed = time.monotonic()
            again = side.client()
            new = again.call("presence.track", {"channel": "flaky", "key": "gil"})["ref"]
            assert next_note(watcher, "presence.diff")["joins"]["gil"][0]["ref"] == new
            assert watcher.call("presence.count", {"channel": "flaky"}) == {"keys": 1, "refs": 2}
            leave = next_note(watcher, "presence.diff", 2.0)
            assert leave["leaves"]["gil"][0]["ref"] == old
            assert time.monotonic() - closed >= 0.45, "the old entry left before the grace"
            assert watcher.call("presence.count", {"channel": "flaky"}) == {"keys": 1, "refs": 1}
            again.close()
    finally:
        side.stop()


def test_redis_restarted_empty_entries_are_written_again(
    redis_server: RedisProcess, fast_nodes: tuple[SidecarProcess, SidecarProcess]
) -> None:
    """Redis restarts without its data: subscribers get a fresh state, and every entry a
    live connection still holds is written again (with its join) within a heartbeat."""
    a, b = fast_nodes
    with a.client() as tracker, b.client() as watcher:
        watcher.call("presence.subscribe", {"channel": "restart"})
        refs_made = {
            tracker.call("presence.track", {"channel": "restart", "key": f"h{i}"})["ref"]
            for i in range(3)
        }
        for _ in range(3):
            next_note(watcher, "presence.diff")
        redis_server.kill()
        redis_server.start()
        state = next_note(watcher, "presence.state", 10)
        assert state["version"] >= 0  # counting starts over with the data gone
        deadline = time.monotonic() + 10
        while refs(watcher.call("presence.list", {"channel": "restart"})["members"]) != refs_made:
            assert time.monotonic() < deadline, "entries were not written again"
            time.sleep(0.05)
