"""Lock leases on real Redis, two sidecars as two nodes."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import redis

from madsidecar.locks.keys import LockKeys
from madsidecar_client import BadRequestError, BlockingClient

from .support import RedisProcess, SidecarProcess, running_sidecar, short_tempdir, wait_until


def acquire(client: BlockingClient, name: str, **args: object) -> dict:
    result: dict = client.call("lock.acquire", {"name": name, **args})
    return result


def test_acquire_inspect_extend_release(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, b = nodes
    with a.client() as holder, b.client() as other:
        assert other.call("lock.inspect", {"name": "m"}) == {"held": False, "ttl_ms": 0, "fence": 0}
        got = acquire(holder, "m", ttl_ms=5000)
        assert got["acquired"] is True and got["ttl_ms"] == 5000 and got["token"]
        seen = other.call("lock.inspect", {"name": "m"})
        assert seen["held"] is True and 0 < seen["ttl_ms"] <= 5000 and seen["fence"] == got["fence"]
        refused = acquire(other, "m")
        assert refused["acquired"] is False and 0 < refused["ttl_ms"] <= 5000
        assert "token" not in refused
        assert other.call("lock.release", {"name": "m", "token": "not-mine"}) == {"released": False}
        assert other.call("lock.extend", {"name": "m", "token": "not-mine", "ttl_ms": 100}) == {
            "extended": False,
            "ttl_ms": 0,
        }
        assert holder.call("lock.extend", {"name": "m", "token": got["token"], "ttl_ms": 9000}) == {
            "extended": True,
            "ttl_ms": 9000,
        }
        assert holder.call("lock.release", {"name": "m", "token": got["token"]}) == {
            "released": True
        }
        again = acquire(other, "m")
        assert again["acquired"] is True and again["fence"] > got["fence"]
        assert holder.stats()["locks"]["held"] == 0 and other.stats()["locks"]["held"] == 1


def test_bad_arguments_are_named(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, _ = nodes
    with a.client() as client:
        for args, named in (
            ({"name": "m", "ttl_ms": 0}, "ttl_ms"),
            ({"name": "m", "wait_ms": -1}, "wait_ms"),
            ({"name": "m", "renew": "yes"}, "renew"),
            ({"name": ""}, "name"),
        ):
            with pytest.raises(BadRequestError) as caught:
                client.call("lock.acquire", args)
            assert caught.value.argument == named


def test_mutual_exclusion_and_fence_order_8_contenders_on_2_nodes(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    holds: list[tuple[float, float, int]] = []
    guard = threading.Lock()
    per_contender = 250

    def contender(side: SidecarProcess) -> None:
        with side.client(timeout=60) as client:
            for _ in range(per_contender):
                got = acquire(client, "exclusive", ttl_ms=5000, wait_ms=30_000)
                assert got["acquired"], got
                start = time.monotonic()
                end = time.monotonic()
                with guard:
                    holds.append((start, end, got["fence"]))
                assert client.call("lock.release", {"name": "exclusive", "token": got["token"]})[
                    "released"
                ]

    threads = [threading.Thread(target=contender, args=(side,)) for side in nodes * 4]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    took = time.monotonic() - started
    holds.sort()
    assert len(holds) == 8 * per_contender
    overlaps = [(p, n) for p, n in itertools.pairwise(holds) if n[0] < p[1]]
    assert overlaps == [], "two holders at once"
    fences = [fence for _, _, fence in holds]
    assert all(b > a for a, b in itertools.pairwise(fences)), "fences rise in acquisition order"
    print(f"2000 exclusive acquisitions by 8 contenders on 2 nodes in {took:.2f} s")


HOLDER = """
import sys, time
from madsidecar_client import BlockingClient
c = BlockingClient(sys.argv[1])
got = c.call("lock.acquire", {"name": sys.argv[2], "ttl_ms": int(sys.argv[3])})
print("held" if got["acquired"] else "refused", flush=True)
time.sleep(600)
"""


def start_holder(side: SidecarProcess, name: str, ttl_ms: int) -> subprocess.Popen[str]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, side.socket_path, name, str(ttl_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_client_killed_while_holding_frees_the_lock_at_once(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    holder = start_holder(a, "crash", ttl_ms=60_000)
    with b.client() as waiter:
        pending: dict = {}
        thread = threading.Thread(
            target=lambda: pending.update(acquire(waiter, "crash", wait_ms=20_000))
        )
        thread.start()
        killed = time.monotonic()
        holder.kill()
        holder.wait()
        thread.join(30)
        took = time.monotonic() - killed
    print(f"waiter had the lock {took * 1000:.0f} ms after the holder was killed")
    assert pending["acquired"] is True
    assert took < 1.0


def test_sidecar_killed_lock_frees_after_its_ttl(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    holder = start_holder(a, "node-crash", ttl_ms=1500)
    try:
        killed = time.monotonic()
        a.signal(signal.SIGKILL)
        with b.client() as waiter:
            got = acquire(waiter, "node-crash", wait_ms=10_000)
        took = time.monotonic() - killed
        assert got["acquired"] is True
        assert 1.0 < took < 1.5 + 1.0, f"free after the 1.5 s ttl, not before: {took:.2f} s"
    finally:
        holder.kill()
        holder.wait()


def test_renewal_keeps_a_1s_lease_for_5s(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, b = nodes
    with a.client() as holder, b.client() as observer:
        got = acquire(holder, "renewed", ttl_ms=1000)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            seen = observer.call("lock.inspect", {"name": "renewed"})
            assert seen["held"] and seen["fence"] == got["fence"], "held throughout"
            assert acquire(observer, "renewed")["acquired"] is False
            time.sleep(0.05)  # sampling interval of the observer, not a synchronisation
        assert holder.next_notification(timeout=0.1) is None, "no lock.lost"
        assert holder.call("lock.release", {"name": "renewed", "token": got["token"]})["released"]
        assert holder.stats()["locks"]["lost"] == 0


def test_sidecar_paused_past_ttl_owner_gets_lock_lost(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    with a.client() as owner, b.client() as rival:
        first = acquire(owner, "paused", ttl_ms=500)
        a.signal(signal.SIGSTOP)
        try:
            second = acquire(rival, "paused", wait_ms=5000)
            assert second["acquired"] and second["fence"] > first["fence"]
        finally:
            a.signal(signal.SIGCONT)
        note = owner.next_notification(timeout=5)
        assert note is not None and note.name == "lock.lost"
        assert note.payload == {"name": "paused", "token": first["token"], "fence": first["fence"]}
        assert owner.call("lock.release", {"name": "paused", "token": first["token"]}) == {
            "released": False
        }
        assert rival.call("lock.inspect", {"name": "paused"})["fence"] == second["fence"]


def test_waiters_are_woken_by_the_release_not_by_polling(redis_server: RedisProcess) -> None:
    slow_polls = ["--lock-retry-max-ms", "30000"]
    with (
        running_sidecar(redis_server, extra_args=slow_polls) as a,
        running_sidecar(redis_server, extra_args=slow_polls) as b,
        a.client() as holder,
    ):
        for waiter_side in (a, b):  # same node, then another node
            got = acquire(holder, "wake", ttl_ms=60_000)
            result: dict = {}
            with waiter_side.client(timeout=60) as waiter:
                thread = threading.Thread(
                    target=lambda w=waiter, r=result: r.update(acquire(w, "wake", wait_ms=50_000))
                )
                thread.start()
                deadline = time.monotonic() + 10
                while waiter_side.client().stats()["locks"]["waiting"] == 0:
                    assert time.monotonic() < deadline
                released = time.monotonic()
                holder.call("lock.release", {"name": "wake", "token": got["token"]})
                thread.join(30)
                took = time.monotonic() - released
                assert result["acquired"], result
                waiter.call("lock.release", {"name": "wake", "token": result["token"]})
            assert took < 1.0, f"woken after {took:.2f} s: by polling, not by the release"


def test_local_waiters_are_served_first_come_first_served(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, _ = nodes
    order: list[int] = []
    with a.client() as holder, a.client() as probe:
        got = acquire(holder, "fifo", ttl_ms=60_000)
        threads = []
        for index in range(4):

            def wait_turn(i: int = index) -> None:
                with a.client(timeout=60) as waiter:
                    mine = acquire(waiter, "fifo", wait_ms=30_000)
                    order.append(i)
                    waiter.call("lock.release", {"name": "fifo", "token": mine["token"]})

            threads.append(threading.Thread(target=wait_turn))
            threads[-1].start()
            deadline = time.monotonic() + 10
            while probe.stats()["locks"]["waiting"] < index + 1:
                assert time.monotonic() < deadline
        assert acquire(probe, "fifo")["acquired"] is False, "a try does not jump the queue"
        holder.call("lock.release", {"name": "fifo", "token": got["token"]})
        for thread in threads:
            thread.join(30)
    assert order == [0, 1, 2, 3]


def test_sigterm_releases_held_locks_at_once(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, b = nodes
    holder = a.client()
    acquire(holder, "drain", ttl_ms=60_000)
    assert a.terminate() == 0
    with b.client() as other:
        assert other.call("lock.inspect", {"name": "drain"})["held"] is False
    holder.close()


def test_namespaces_have_their_own_locks(redis_server: RedisProcess) -> None:
    with running_sidecar(redis_server, config_toml='[[policy]]\nnamespaces = ["*"]\n') as side:
        one = BlockingClient(side.socket_path, namespace="one")
        two = BlockingClient(side.socket_path, namespace="two")
        assert acquire(one, "same")["acquired"]
        assert acquire(two, "same")["acquired"]
        one.close()
        two.close()


# -- Redlock -----------------------------------------------------------------------------


class RedlockFleet:
    """N independent masters and a sidecar whose locks use them as a Redlock quorum."""

    def __init__(self, masters: int) -> None:
        self.servers = [RedisProcess().start() for _ in range(masters)]
        self.directs = [redis.Redis(unix_socket_path=s.socket_path) for s in self.servers]
        urls = ",".join(server.url for server in self.servers)
        self.side = SidecarProcess(
            self.servers[0].url, extra_args=["--lock-quorum-urls", urls]
        ).start()

    def __enter__(self) -> RedlockFleet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.side.stop()
        for direct in self.directs:
            direct.close()
        for server in self.servers:
            server.stop()


@pytest.mark.parametrize("masters", [3, 5])
def test_redlock_acquires_exactly_when_a_majority_is_free(masters: int) -> None:
    key = LockKeys("msc:").lock("default", "quorum")
    with RedlockFleet(masters) as fleet, fleet.side.client() as client:
        for size in range(masters + 1):
            for occupied in itertools.combinations(range(masters), size):
                for index in occupied:
                    fleet.directs[index].set(key, "someone-else", px=60_000)
                got = acquire(client, "quorum", ttl_ms=10_000)
                expect = masters - size >= masters // 2 + 1
                assert got["acquired"] is expect, (occupied, got)
                if got["acquired"]:
                    client.call("lock.release", {"name": "quorum", "token": got["token"]})
                for direct in fleet.directs:
                    assert direct.get(key) in (None, b"someone-else"), "nothing left behind"
                    direct.delete(key)
        fleet.servers[-1].kill()
        got = acquire(client, "quorum", ttl_ms=10_000)
        assert got["acquired"], "one master down still leaves a majority"
        assert got["ttl_ms"] <= 10_000 - 100 - 2, "validity accounts for clock drift"
        seen = client.call("lock.inspect", {"name": "quorum"})
        assert seen["held"] and seen["fence"] == got["fence"]


def test_redlock_fences_rise_even_when_the_highest_counter_refuses() -> None:
    key = LockKeys("msc:").lock("default", "fenced")
    with RedlockFleet(3) as fleet, fleet.side.client() as client:
        # Master 0's counter runs far ahead of the others (its clock, say).
        fleet.directs[0].set(key + ":fence", 5 * 10**15)  # exact in a Lua double (< 2**53)
        first = acquire(client, "fenced")
        assert first["acquired"] and first["fence"] > 5 * 10**15
        client.call("lock.release", {"name": "fenced", "token": first["token"]})
        fleet.directs[0].set(key, "someone-else", px=60_000)  # master 0 now refuses
        second = acquire(client, "fenced")
        assert second["acquired"] and second["fence"] > first["fence"]


def test_redlock_without_a_majority_of_masters_is_unavailable() -> None:
    from madsidecar_client import UnavailableError

    with RedlockFleet(3) as fleet, fleet.side.client() as client:
        fleet.servers[1].kill()
        fleet.servers[2].kill()
        with pytest.raises(UnavailableError):
            acquire(client, "q")
        with pytest.raises(UnavailableError):
            client.call("lock.inspect", {"name": "q"})


def test_a_connection_closed_mid_acquire_leaves_no_lock_behind(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    import msgpack

    from .rawclient import RawConnection

    a, b = nodes
    for i in range(100):
        conn = RawConnection(a.socket_path)
        conn.send([0, 1, "lock.acquire", [{"name": f"orphan{i % 5}", "ttl_ms": 60_000}]])
        conn.close()
    with b.client() as probe:
        deadline = time.monotonic() + 5
        while any(probe.call("lock.inspect", {"name": f"orphan{i}"})["held"] for i in range(5)):
            assert time.monotonic() < deadline, "a lock outlived the connection that took it"
    assert msgpack  # the raw frames above are MessagePack


def test_unrenewed_lease_runs_out_and_the_owner_is_told(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, _ = nodes
    with a.client() as owner:
        got = acquire(owner, "short", ttl_ms=300, renew=False)
        note = owner.next_notification(timeout=5)
        assert note is not None and note.name == "lock.lost"
        assert note.payload["token"] == got["token"]
        assert owner.stats()["locks"]["held"] == 0
        # The owner is told as the lease's time runs out by the sidecar's clock, which
        # started before Redis's did: Redis lets the key go a moment later, never earlier.
        wait_until(lambda: owner.call("lock.inspect", {"name": "short"})["held"] is False, 2)


# -- madsidecar lock ---------------------------------------------------------------------


def madsidecar_lock(side: SidecarProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "madsidecar", "lock", "--socket", side.socket_path, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_lock_command_runs_cmd_with_the_fence_and_passes_its_status(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, _ = nodes
    script = 'echo "fence=$MADSIDECAR_LOCK_FENCE name=$MADSIDECAR_LOCK_NAME"; exit 7'
    result = madsidecar_lock(a, "migrations", "--", "sh", "-c", script)
    assert result.returncode == 7, result.stderr
    fence = int(result.stdout.split("fence=")[1].split()[0])
    assert "name=migrations" in result.stdout
    with a.client() as client:
        seen = client.call("lock.inspect", {"name": "migrations"})
    assert seen == {"held": False, "ttl_ms": 0, "fence": fence}, "released after CMD"


def test_lock_command_when_held_elsewhere(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, b = nodes
    with b.client() as holder:
        acquire(holder, "busy", ttl_ms=60_000)
        marker = os.path.join(short_tempdir(), "ran")
        result = madsidecar_lock(a, "busy", "--wait-ms", "200", "--", "touch", marker)
    assert result.returncode == 75
    assert "held elsewhere" in result.stderr and "waited 200 ms" in result.stderr
    assert not os.path.exists(marker), "the command did not run"


def test_lock_command_sends_sigterm_when_the_lock_is_lost(
    nodes: tuple[SidecarProcess, SidecarProcess], redis_server: RedisProcess
) -> None:
    a, _ = nodes
    key = LockKeys("msc:").lock("default", "fragile")
    script = "trap 'echo got-term; exit 3' TERM; echo started; while :; do sleep 0.05; done"
    proc = subprocess.Popen(
        [sys.executable, "-m", "madsidecar", "lock", "--socket", a.socket_path, "fragile",
         "--ttl-ms", "600", "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    direct = redis.Redis(unix_socket_path=redis_server.socket_path)
    direct.delete(key)  # someone removes the lock behind the holder's back
    direct.close()
    out, err = proc.communicate(timeout=30)
    assert "got-term" in out
    assert proc.returncode == 3
    assert "lost 'fragile'" in err


def test_lock_command_unknown_command(nodes: tuple[SidecarProcess, SidecarProcess]) -> None:
    a, _ = nodes
    result = madsidecar_lock(a, "x", "--", "/nonexistent/tool")
    assert result.returncode == 127
    assert "cannot run" in result.stderr


def test_scripts_forgotten_by_redis_are_sent_again(
    redis_server: RedisProcess, sidecar: SidecarProcess
) -> None:
    """A Redis restart (or SCRIPT FLUSH) empties its script cache; every lock call must
    still work, the sidecar sending the script itself once EVALSHA says NOSCRIPT."""
    direct = redis.Redis(unix_socket_path=redis_server.socket_path)
    with sidecar.client() as client:
        for _ in range(3):
            direct.script_flush()
            got = acquire(client, "flushed", ttl_ms=5000)
            assert got["acquired"] is True
            assert client.call("lock.inspect", {"name": "flushed"})["held"] is True
            direct.script_flush()
            released = client.call("lock.release", {"name": "flushed", "token": got["token"]})
            assert released == {"released": True}
