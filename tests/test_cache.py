"""The two-level cache, as services see it: two sidecars (two nodes) on one Redis."""

from __future__ import annotations

import asyncio
import bisect
import math
import signal
import threading
import time

import msgpack
import pytest

from madsidecar_client import (
    BadRequestError,
    BlockingClient,
    NotHeldError,
    ServerTimeoutError,
    UnavailableError,
)

from .support import RedisProcess, SidecarProcess, running_sidecar, wait_until


def cache_get(client: BlockingClient, key: str) -> dict | None:
    result: dict | None = client.call("cache.get", {"key": key})
    return result


def eventually(client: BlockingClient, key: str, expected: object, within: float = 1.0) -> None:
    """Another node's write shows here within the contract's 100 ms (p99); `within` is a
    generous bound that only catches a change that never arrives."""
    deadline = time.monotonic() + within
    while True:
        entry = cache_get(client, key)
        value = None if entry is None else entry["value"]
        if value == expected:
            return
        assert time.monotonic() < deadline, f"{key}: still {value!r}, expected {expected!r}"


def warm_l1(client: BlockingClient, key: str) -> None:
    """Read until the entry is served from L1 (the first read after a write is L2)."""
    for _ in range(100):
        entry = cache_get(client, key)
        if entry is not None and entry["source"] == "l1":
            return
    raise AssertionError(f"{key} never reached L1")


def test_set_get_delete_and_sources(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, _ = nodes
    with a.client() as client:
        assert cache_get(client, "k") is None
        assert client.call("cache.set", {"key": "k", "value": "v", "ttl_ms": 60_000}) == {
            "ok": True
        }
        first = cache_get(client, "k")
        assert first is not None and first["value"] == "v" and first["source"] == "l2"
        assert 57_000 <= first["ttl_ms"] <= 60_000, "TTL jitter only shortens, by <= 5%"
        second = cache_get(client, "k")
        assert second is not None and second["source"] == "l1" and second["value"] == "v"
        assert client.call("cache.delete", {"keys": ["k", "absent"]}) == {"deleted": 1}
        assert cache_get(client, "k") is None
        stats = client.stats()["cache"]
    assert stats["l1_hits"] >= 1 and stats["l2_hits"] >= 1 and stats["misses"] >= 2
    assert stats["feed_live"] is True


def test_mget_in_order_with_misses(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, _ = nodes
    with a.client() as client:
        client.call("cache.set", {"key": "x", "value": 1})
        client.call("cache.set", {"key": "y", "value": 2})
        warm_l1(client, "x")
        results = client.call("cache.mget", {"keys": ["x", "nope", "y"]})
    assert [r and r["value"] for r in results] == [1, None, 2]
    assert results[0]["source"] == "l1" and results[2]["source"] == "l2"


VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    1.5,
    -0.0,
    math.inf,
    "",
    "text ✓",
    b"",
    b"\x00\xff" * 100,
    [],
    [1, [2, [3, None]]],
    {},
    {"nested": {"list": [1, "two", b"3"], "map": {"k": 1.25}}},
    {1: "int key", b"bin": "bin key"},
    msgpack.ExtType(5, b"ext payload"),
]


def read_until_from_l1(client: BlockingClient, key: str, timeout: float = 5.0) -> dict | None:
    """Read until an answer comes from L1 (or the time is up: the last answer)."""
    deadline = time.monotonic() + timeout
    while True:
        entry = cache_get(client, key)
        if (entry is not None and entry["source"] == "l1") or time.monotonic() > deadline:
            return entry


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:30] for v in VALUES])
def test_every_msgpack_type_round_trips(
    nodes: tuple[SidecarProcess, SidecarProcess], value: object
) -> None:
    a, b = nodes
    with a.client() as writer, b.client() as reader:
        writer.call("cache.set", {"key": "v", "value": value})
        from_l2 = cache_get(reader, "v")
        # The set's invalidation of the previous case's entry may reach the reader's node
        # after this read was sent; the node then keeps nothing it cannot prove fresh, and
        # L1 fills on a later read instead.
        from_l1 = read_until_from_l1(reader, "v")
    assert from_l2 is not None and from_l1 is not None
    assert from_l1["source"] == "l1"
    for got in (from_l2["value"], from_l1["value"]):
        assert type(got) is type(value) or (isinstance(value, list) and isinstance(got, list))
        assert got == value


def test_namespaces_do_not_see_each_other(redis_server: RedisProcess) -> None:
    config = '[[policy]]\nnamespaces = ["*"]\n'
    with running_sidecar(redis_server, config_toml=config) as side:
        one = BlockingClient(side.socket_path, namespace="one")
        two = BlockingClient(side.socket_path, namespace="two")
        one.call("cache.set", {"key": "shared-name", "value": "one's"})
        assert cache_get(two, "shared-name") is None
        two.call("cache.set", {"key": "shared-name", "value": "two's"})
        assert cache_get(one, "shared-name")["value"] == "one's"  # type: ignore[index]
        one.call("cache.invalidate", {"prefix": ""})
        assert cache_get(two, "shared-name")["value"] == "two's"  # type: ignore[index]
        # A namespace that is a prefix of another, or contains the separator, stays apart.
        three = BlockingClient(side.socket_path, namespace="o")
        four = BlockingClient(side.socket_path, namespace="o:ne")
        three.call("cache.set", {"key": "ne:k", "value": 3})
        assert cache_get(four, "k") is None


def test_bad_arguments(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, _ = nodes
    with a.client() as client:
        with pytest.raises(BadRequestError) as caught:
            client.call("cache.set", {"key": "k", "value": 1, "ttl_ms": 0})
        assert caught.value.argument == "ttl_ms"
        with pytest.raises(BadRequestError) as caught:
            client.call("cache.get", {"key": ""})
        assert caught.value.argument == "key"
        with pytest.raises(BadRequestError) as caught:
            client.call("cache.set", {"key": "k"})
        assert caught.value.argument == "value"
        with pytest.raises(BadRequestError) as caught:
            client.call("cache.mget", {"keys": "not-a-list"})
        assert caught.value.argument == "keys"


def test_write_on_a_is_read_on_b_within_100ms_p99(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    with a.client() as writer, b.client() as reader:
        writer.call("cache.set", {"key": "cfg", "value": -1})
        warm_l1(reader, "cfg")
        delays = []
        for trial in range(200):
            assert cache_get(reader, "cfg")["source"] == "l1"  # type: ignore[index]
            writer.call("cache.set", {"key": "cfg", "value": trial})
            written = time.monotonic()
            while (entry := cache_get(reader, "cfg")) is None or entry["value"] != trial:
                assert time.monotonic() - written < 5, "the write never reached node B"
            delays.append(time.monotonic() - written)
            warm_l1(reader, "cfg")
    delays.sort()
    p99_ms = delays[int(len(delays) * 0.99) - 1] * 1000
    print(f"write on A -> new value on B: p50 {delays[100] * 1000:.2f} ms, p99 {p99_ms:.2f} ms")
    assert p99_ms < 100


def check_history(
    writes: dict[str, list[tuple[float, float, int]]], reads: list[tuple[str, float, int]]
) -> list[tuple[str, int, float]]:
    """Reads that returned a value superseded by a write which began after that value's
    write was acknowledged and was itself acknowledged over 100 ms before the read."""
    earliest_ack_after: dict[str, tuple[list[float], list[float]]] = {}
    for key, history in writes.items():
        by_start = sorted(history)
        starts = [w[0] for w in by_start]
        suffix_min_ack = [math.inf] * (len(by_start) + 1)
        for i in range(len(by_start) - 1, -1, -1):
            suffix_min_ack[i] = min(by_start[i][1], suffix_min_ack[i + 1])
        earliest_ack_after[key] = (starts, suffix_min_ack)
    acked_at = {(key, w[2]): w[1] for key, history in writes.items() for w in history}
    violations = []
    for key, read_started, value in reads:
        starts, suffix_min_ack = earliest_ack_after[key]
        first_later = bisect.bisect_right(starts, acked_at[(key, value)])
        if suffix_min_ack[first_later] < read_started - 0.1:
            violations.append((key, value, read_started))
    return violations


def test_history_of_concurrent_writers_and_readers_on_two_nodes(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    """No read returns a value older than one whose write was acknowledged more than
    100 ms before the read began."""
    a, b = nodes
    keys = [f"h{i}" for i in range(4)]
    writes: dict[str, list[tuple[float, float, int]]] = {k: [] for k in keys}
    reads: list[tuple[str, float, int]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + 10
    counter = iter(range(1, 10**9))
    with a.client() as setup:
        for key in keys:
            setup.call("cache.set", {"key": key, "value": 0})
    for key in keys:
        writes[key].append((0.0, 0.0, 0))

    def writer(side: SidecarProcess, seed: int) -> None:
        with side.client() as client:
            i = seed
            while time.monotonic() < stop_at:
                key = keys[i % len(keys)]
                with lock:
                    value = next(counter)
                started = time.monotonic()
                client.call("cache.set", {"key": key, "value": value})
                with lock:
                    writes[key].append((started, time.monotonic(), value))
                i += 1
                time.sleep(0.002)  # paces the writers; not a synchronisation

    def reader(side: SidecarProcess, seed: int) -> None:
        with side.client() as client:
            i = seed
            while time.monotonic() < stop_at:
                key = keys[i % len(keys)]
                started = time.monotonic()
                entry = cache_get(client, key)
                assert entry is not None
                with lock:
                    reads.append((key, started, entry["value"]))
                i += 1

    threads = [
        threading.Thread(target=fn, args=(side, seed))
        for fn in (writer, reader)
        for side in (a, b)
        for seed in (0, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    violations = check_history(writes, reads)
    total_writes = sum(len(h) for h in writes.values())
    print(f"history: {total_writes} writes, {len(reads)} reads, {len(violations)} violations")
    assert len(reads) > 1000 and total_writes > 500
    assert violations == []


def test_cache_invalidate_prefix_reaches_every_node(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    with a.client() as ca, b.client() as cb:
        for name in ("proj:1", "proj:2", "proj:3", "other"):
            ca.call("cache.set", {"key": name, "value": name})
        for name in ("proj:1", "other"):
            warm_l1(cb, name)
        assert ca.call("cache.invalidate", {"prefix": "proj:"}) == {"deleted": 3}
        eventually(cb, "proj:1", None)
        assert cache_get(ca, "proj:2") is None
        assert cache_get(cb, "other")["value"] == "other"  # type: ignore[index]


def test_glob_characters_in_prefix_are_literal(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, _ = nodes
    with a.client() as client:
        client.call("cache.set", {"key": "a*b", "value": 1})
        client.call("cache.set", {"key": "aXb", "value": 2})
        assert client.call("cache.invalidate", {"prefix": "a*"}) == {"deleted": 1}
        assert cache_get(client, "aXb") is not None


def test_writes_by_anyone_under_the_prefix_invalidate_l1(
    nodes: tuple[SidecarProcess, SidecarProcess], redis_server: RedisProcess
) -> None:
    import redis

    a, _ = nodes
    with a.client() as client:
        client.call("cache.set", {"key": "ext", "value": "ours"})
        warm_l1(client, "ext")
        direct = redis.Redis(unix_socket_path=redis_server.socket_path)
        direct.set("msc:c:{7:default:ext}", msgpack.packb("theirs"), px=60_000)
        eventually(client, "ext", "theirs")
        direct.close()


def test_own_writes_are_read_back_at_once(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, _ = nodes
    with a.client() as writer, a.client() as other:
        for i in range(300):
            writer.call("cache.set", {"key": "mine", "value": i})
            assert cache_get(writer, "mine")["value"] == i  # type: ignore[index]
            assert cache_get(other, "mine")["value"] == i  # type: ignore[index]
            cache_get(other, "mine")  # brings it into L1 before the next write


def test_pipelined_set_then_get_on_one_connection_reads_the_write(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, _ = nodes
    with a.client() as client:
        client.call("cache.set", {"key": "p", "value": "old"})
        warm_l1(client, "p")
        results = client.pipeline(
            [
                ("cache.set", {"key": "p", "value": "new"}),
                ("cache.get", {"key": "p"}),
            ]
        )
    assert results[1]["value"] == "new"


def test_pipelined_writes_order_list_and_prefix_reads_on_one_connection(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, _ = nodes
    with a.client() as client:
        for key in ("d", "m", "i:1"):
            client.call("cache.set", {"key": key, "value": "old"})
            warm_l1(client, key)
        results = client.pipeline(
            [
                ("cache.delete", {"keys": ["x", "d"]}),
                ("cache.get", {"key": "d"}),
                ("cache.set", {"key": "m", "value": "new"}),
                ("cache.mget", {"keys": ["m", "d"]}),
                ("cache.invalidate", {"prefix": "i:"}),
                ("cache.get", {"key": "i:1"}),
            ]
        )
    assert results[1] is None, "get after delete of the same key"
    assert [r and r["value"] for r in results[3]] == ["new", None], "mget after set"
    assert results[5] is None, "get after invalidate of its prefix"


# -- fetch / fill ------------------------------------------------------------------------


def test_100_concurrent_fetches_of_a_cold_key_one_lease_all_get_the_value(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    results: list[object] = [None] * 100
    leases: list[tuple[int, str, SidecarProcess]] = []
    barrier = threading.Barrier(101)
    lock = threading.Lock()

    def fetcher(index: int, side: SidecarProcess) -> None:
        with side.client(timeout=30) as client:
            barrier.wait()
            result = client.call("cache.fetch", {"key": "cold", "wait_ms": 20_000})
            if "lease" in result and "value" not in result:
                with lock:
                    leases.append((index, result["lease"], side))
                # The lease holder computes the value and fills it.
                client.call("cache.fill", {"key": "cold", "lease": result["lease"], "value": 42})
                result = {"value": 42, "filled_by_me": True}
            results[index] = result

    threads = [threading.Thread(target=fetcher, args=(i, (a, b)[i % 2])) for i in range(100)]
    for thread in threads:
        thread.start()
    barrier.wait()
    for thread in threads:
        thread.join(60)
    assert len(leases) == 1, "exactly one caller in the fleet got the lease"
    assert all(isinstance(r, dict) and r["value"] == 42 for r in results)


def test_stale_fill_is_refused(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, b = nodes
    with a.client() as holder, b.client() as writer:
        lease = holder.call("cache.fetch", {"key": "s"})["lease"]
        writer.call("cache.set", {"key": "s", "value": "fresh from the database"})
        with pytest.raises(NotHeldError):
            holder.call("cache.fill", {"key": "s", "lease": lease, "value": "stale"})
        assert cache_get(writer, "s")["value"] == "fresh from the database"  # type: ignore[index]
        lease = holder.call("cache.fetch", {"key": "t"})["lease"]
        writer.call("cache.delete", {"keys": ["t"]})
        with pytest.raises(NotHeldError):
            holder.call("cache.fill", {"key": "t", "lease": lease, "value": "stale"})
        lease = holder.call("cache.fetch", {"key": "u:1"})["lease"]
        writer.call("cache.invalidate", {"prefix": "u:"})
        with pytest.raises(NotHeldError):
            holder.call("cache.fill", {"key": "u:1", "lease": lease, "value": "stale"})
        with pytest.raises(NotHeldError):
            holder.call("cache.fill", {"key": "never", "lease": "made-up", "value": 1})


def test_lease_holder_killed_one_waiter_gets_a_new_lease(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    holder = a.client()
    assert "lease" in holder.call("cache.fetch", {"key": "orphan", "lease_ms": 60_000})
    outcomes: list[dict] = []
    lock = threading.Lock()

    def waiter(side: SidecarProcess) -> None:
        with side.client(timeout=30) as client:
            result = client.call("cache.fetch", {"key": "orphan", "wait_ms": 20_000})
            with lock:
                outcomes.append(result)
            if "lease" in result:
                client.call("cache.fill", {"key": "orphan", "lease": result["lease"], "value": 7})

    threads = [threading.Thread(target=waiter, args=((a, b)[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    with a.client() as probe_a, b.client() as probe_b:
        deadline = time.monotonic() + 10
        while (
            probe_a.stats()["cache"]["lease_waiters"] + probe_b.stats()["cache"]["lease_waiters"]
            < 6
        ):
            assert time.monotonic() < deadline, "the waiters never started waiting"
    started = time.monotonic()
    holder.close()  # the holder's process is gone: its lease goes with its connection
    for thread in threads:
        thread.join(30)
    took = time.monotonic() - started
    leases = [o for o in outcomes if "lease" in o]
    print(f"new lease {took * 1000:.0f} ms after the holder vanished (lease_ms was 60000)")
    assert len(leases) == 1
    assert all(o.get("value") == 7 for o in outcomes if "lease" not in o)
    assert took < 10, "promoted at the disconnect, not at the 60 s lease expiry"


def test_waiter_times_out(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, b = nodes
    with a.client() as holder, b.client() as waiter:
        assert "lease" in holder.call("cache.fetch", {"key": "slow"})
        started = time.monotonic()
        with pytest.raises(ServerTimeoutError):
            waiter.call("cache.fetch", {"key": "slow", "wait_ms": 300})
        assert 0.25 < time.monotonic() - started < 3


def test_refresh_ahead_hands_out_one_lease_while_serving_the_value(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    with a.client() as ca, b.client() as cb:
        ca.call("cache.set", {"key": "r", "value": "current", "ttl_ms": 5_000})
        first = ca.call("cache.fetch", {"key": "r", "refresh_ahead_ms": 10_000})
        second = cb.call("cache.fetch", {"key": "r", "refresh_ahead_ms": 10_000})
        assert first["value"] == "current" and second["value"] == "current"
        assert ("lease" in first) != ("lease" in second), "exactly one refresher"
        refresher, lease = (ca, first["lease"]) if "lease" in first else (cb, second["lease"])
        refresher.call("cache.fill", {"key": "r", "lease": lease, "value": "refreshed"})
        eventually(ca, "r", "refreshed")
        eventually(cb, "r", "refreshed")


def test_fetch_ttl_applies_to_the_fill(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, _ = nodes
    with a.client() as client:
        lease = client.call("cache.fetch", {"key": "ttl", "ttl_ms": 5_000})["lease"]
        client.call("cache.fill", {"key": "ttl", "lease": lease, "value": 1})
        entry = cache_get(client, "ttl")
    assert entry is not None and 4_000 <= entry["ttl_ms"] <= 5_000


async def test_fill_is_not_stuck_behind_its_own_connections_waiting_fetches(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    from madsidecar_client import Client

    a, _ = nodes
    async with Client(a.socket_path) as client:
        fetches = [
            asyncio.ensure_future(client.call("cache.fetch", {"key": "same", "wait_ms": 10_000}))
            for _ in range(4)
        ]
        done, _pending = await asyncio.wait(fetches, return_when=asyncio.FIRST_COMPLETED)
        lease = next(iter(done)).result()["lease"]
        started = time.monotonic()
        await client.call("cache.fill", {"key": "same", "lease": lease, "value": "v"})
        results = await asyncio.gather(*fetches)
        assert time.monotonic() - started < 5, "the fill did not wait for the waiters"
    assert sum("lease" in r for r in results) == 1
    assert all(r.get("value") == "v" for r in results if "lease" not in r)


def test_an_expired_lease_promotes_a_waiter(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, b = nodes
    with a.client() as holder, b.client() as waiter:
        assert "lease" in holder.call("cache.fetch", {"key": "exp", "lease_ms": 300})
        started = time.monotonic()
        result = waiter.call("cache.fetch", {"key": "exp", "wait_ms": 5_000})
        took = time.monotonic() - started
    assert "lease" in result
    assert 0.2 < took < 3, took


def test_a_foreign_value_under_the_prefix_is_a_miss(
    nodes: tuple[SidecarProcess, SidecarProcess], redis_server: RedisProcess
) -> None:
    import redis

    a, _ = nodes
    direct = redis.Redis(unix_socket_path=redis_server.socket_path)
    direct.set("msc:c:{7:default:junk}", b"\xc1 not msgpack")
    direct.close()
    with a.client() as client:
        assert cache_get(client, "junk") is None
        assert client.stats()["cache"]["undecodable"] == 1
        assert client.call("cache.warm", {"prefix": "j"}) == {"loaded": 0}
    assert a.log().count("cache_value_not_msgpack") == 1


# -- Redis down --------------------------------------------------------------------------


def test_redis_down_serves_l1_marks_stale_and_refuses_writes(
    redis_server: RedisProcess,
) -> None:
    args = ["--redis-timeout-ms", "300", "--l1-max-ttl-ms", "400"]
    with running_sidecar(redis_server, extra_args=args) as side, side.client() as client:
        client.call("cache.set", {"key": "keep", "value": "kept"})
        warm_l1(client, "keep")
        redis_server.kill()
        served = cache_get(client, "keep")
        assert served is not None and served["value"] == "kept"
        time.sleep(0.5)  # let the entry pass its L1 freshness (l1_max_ttl_ms=400)
        stale = cache_get(client, "keep")
        assert stale is not None and stale["value"] == "kept" and stale["stale"] is True
        with pytest.raises(UnavailableError):
            cache_get(client, "never-cached")
        with pytest.raises(UnavailableError):
            client.call("cache.set", {"key": "keep", "value": "new"})
        redis_server.start()
        deadline = time.monotonic() + 10
        while not client.stats()["cache"]["feed_live"]:
            assert time.monotonic() < deadline
        # Redis came back empty (no persistence): L1 was flushed, nothing stale survives.
        assert cache_get(client, "keep") is None


def test_a_node_cut_off_from_redis_marks_what_l1_serves_stale(
    redis_server: RedisProcess,
) -> None:
    """Redis is down for one node only (its ACL user disabled, its connections cut): the
    other node still writes, so the cut-off node cannot prove an L1 entry current, even
    one within its freshness. It may serve it, marked `stale`; never as current."""
    import redis

    direct = redis.Redis(unix_socket_path=redis_server.socket_path)
    direct.acl_setuser("cut", enabled=True, passwords=["+pw"], keys="*", channels="*",
                       commands=["+@all"])  # fmt: skip
    env = {"MADSIDECAR_REDIS_USERNAME": "cut", "MADSIDECAR_REDIS_PASSWORD": "pw"}
    cut_args = ["--node-id", "cut", "--redis-timeout-ms", "300"]
    with (
        running_sidecar(redis_server, extra_args=cut_args, env=env) as cut,
        running_sidecar(redis_server, extra_args=["--node-id", "writer"]) as other,
        cut.client() as reader,
        other.client() as writer,
    ):
        writer.call("cache.set", {"key": "k", "value": "old"})
        warm_l1(reader, "k")
        direct.acl_setuser("cut", enabled=False)
        direct.execute_command("CLIENT", "KILL", "USER", "cut")
        wait_until(lambda: reader.stats()["redis"]["connected"] is False, 5.0)
        writer.call("cache.set", {"key": "k", "value": "new"})
        served = cache_get(reader, "k")
        assert served is not None
        assert served["value"] == "new" or served.get("stale") is True, served
        assert reader.stats()["cache"]["stale_served"] >= 1
    direct.close()


def test_hung_redis_turns_l1_off_then_back_on_without_a_flush(
    redis_server: RedisProcess,
) -> None:
    """SIGSTOP: the probe cannot be written, so nothing proves L1 current (the hang may be
    this node's link alone) and its answers come marked stale. The feed's connection
    never broke, so once a probe comes back L1 serves again what it held."""
    args = ["--redis-timeout-ms", "300", "--cache-probe-interval-ms", "100"]
    assert redis_server.process is not None
    with running_sidecar(redis_server, extra_args=args) as side, side.client() as client:
        client.call("cache.set", {"key": "keep", "value": "kept"})
        warm_l1(client, "keep")
        flushes = client.stats()["cache"]["flushes"]
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: client.stats()["cache"]["feed_live"] is False, 5.0)
            served = cache_get(client, "keep")
            assert served is not None
            assert (served["value"], served["source"], served.get("stale")) == ("kept", "l1", True)
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        wait_until(lambda: client.stats()["cache"]["feed_live"] is True, 10.0)
        served = cache_get(client, "keep")
        assert served is not None and (served["value"], served["source"]) == ("kept", "l1")
        assert client.stats()["cache"]["flushes"] == flushes
        assert "probe not written" in side.log()


# -- configuration -----------------------------------------------------------------------


def test_l1_bounded_by_entries(redis_server: RedisProcess) -> None:
    with (
        running_sidecar(redis_server, extra_args=["--l1-max-entries", "10"]) as side,
        side.client() as client,
    ):
        for i in range(50):
            client.call("cache.set", {"key": f"e{i}", "value": i})
            cache_get(client, f"e{i}")
        stats = client.stats()["cache"]
    assert stats["l1_entries"] == 10
    assert stats["evictions"] >= 40


def test_l1_bounded_by_bytes_with_lfu(redis_server: RedisProcess) -> None:
    args = ["--l1-max-bytes", "20000", "--l1-eviction", "lfu"]
    with running_sidecar(redis_server, extra_args=args) as side, side.client() as client:
        client.call("cache.set", {"key": "hot", "value": b"h" * 1000})
        for _ in range(20):
            cache_get(client, "hot")
        for i in range(40):
            client.call("cache.set", {"key": f"cold{i}", "value": b"c" * 1000})
            cache_get(client, f"cold{i}")
        stats = client.stats()["cache"]
        assert stats["l1_bytes"] <= 20000
        assert cache_get(client, "hot")["source"] == "l1", "LFU keeps the hot key"  # type: ignore[index]


def test_configured_warming_fills_l1_before_ready(redis_server: RedisProcess) -> None:
    with running_sidecar(redis_server) as seed, seed.client() as client:
        for i in range(300):
            client.call("cache.set", {"key": f"project:{i}", "value": {"id": i}})
        client.call("cache.set", {"key": "unrelated", "value": 0})
    config = '[[cache_warm]]\nnamespace = "default"\nprefix = "project:"\n'
    with running_sidecar(redis_server, config_toml=config) as side, side.client() as client:
        assert client.stats()["cache"]["l1_entries"] == 300
        assert cache_get(client, "project:7")["source"] == "l1"  # type: ignore[index]
        assert cache_get(client, "unrelated")["source"] == "l2"  # type: ignore[index]
        assert "event='cache_warmed'" in side.log()
        client.call("cache.invalidate", {"prefix": "project:1"})
        assert client.call("cache.warm", {"prefix": "project:"}) == {"loaded": 300 - 111}


def test_sigterm_releases_leases_held_by_connections(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    holder = a.client()
    assert "lease" in holder.call("cache.fetch", {"key": "drain", "lease_ms": 60_000})
    assert a.terminate() == 0
    with b.client() as client:
        result = client.call("cache.fetch", {"key": "drain", "wait_ms": 0})
    assert "lease" in result, "the stopped node gave its lease back"
    holder.close()


def test_feed_connection_is_named_for_operators(
    nodes: tuple[SidecarProcess, SidecarProcess], redis_server: RedisProcess
) -> None:
    import redis

    direct = redis.Redis(unix_socket_path=redis_server.socket_path)
    names = {c["name"] for c in direct.client_list()}
    direct.close()
    assert {"madsidecar-cache-feed:a", "madsidecar-cache-feed:b"} <= names
