"""The chaos run: two sidecars, many clients, every capability, and faults throughout.

Redis (a real redis-server, AOF with fsync always, so a SIGKILL loses nothing acknowledged)
sits behind a fault proxy (`proxy.py`); two sidecars reach it through the proxy. Client
threads on both nodes use locks, the cache, sessions, presence and rate limits and record
every call (`history.py`). Meanwhile the fault loop kills and restarts Redis, kills and
restarts a sidecar, kills clients in the middle of a call, and slows or stalls the link to
Redis. At the end the checker holds the history against the contract.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from madsidecar_client import BlockingClient, MadsidecarError, ServerError

from ..support import SidecarProcess
from ..topologies import TcpRedis, free_port
from .history import (
    CacheRead,
    CacheWrite,
    Delivery,
    Departure,
    History,
    LockHold,
    Publish,
    RateHit,
    SessionLife,
    SessionRead,
    Verdict,
    check,
)

ROOM = "chaos-room"
NEWS = "chaos-news"
LOCK = "chaos-lock"
BLOCKER = "chaos-blocker"
CACHE_KEYS = [f"chaos-k{i}" for i in range(4)]
RATE_KEY, RATE_LIMIT, RATE_WINDOW_MS = "chaos-rl", 20, 1000
NODE_TIMEOUT_MS, SWEEP_MS, SESSION_L1_TTL_MS = 3000, 500, 1000
CLIENT_LEAVE_BOUND_S = 1.0  # contract: a closed connection's entries leave within 1 s
LOCK_RELEASE_BOUND_S = 1.0  # "releases it at once"; 1 s for a loaded 2-core machine
FAULTS = ("redis_restart", "sidecar_restart", "client_kill", "latency", "stall")


def now() -> float:
    return time.monotonic()


@dataclass
class Recorder:
    """The shared history; appends from many threads (list.append is atomic)."""

    history: History = field(default_factory=History)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def outcome(self, what: str) -> None:
        with self.lock:
            self.history.outcomes[what] += 1


def error_code(exc: MadsidecarError) -> str:
    if isinstance(exc, ServerError):
        return exc.code
    return type(exc).__name__


class Node:
    """One sidecar, restartable in place (same socket, same node id)."""

    def __init__(self, name: str, redis_url: str) -> None:
        self.name = name
        self.sidecar = SidecarProcess(
            redis_url,
            extra_args=[
                "--node-id", name,
                "--redis-timeout-ms", "500",
                "--cache-probe-interval-ms", "250",
                "--presence-node-timeout-ms", str(NODE_TIMEOUT_MS),
                "--presence-sweep-interval-ms", str(SWEEP_MS),
                "--session-l1-ttl-ms", str(SESSION_L1_TTL_MS),
                "--log-format", "json",
            ],
        )  # fmt: skip

    @property
    def socket(self) -> str:
        return self.sidecar.socket_path

    def client(self) -> BlockingClient:
        return BlockingClient(self.socket, timeout=5, connect=False)


class Worker(threading.Thread):
    """Runs `step` until told to stop, counting outcomes; a failed call is recorded by
    its code and retried after a short pause (the node may be restarting)."""

    def __init__(self, run: ChaosRun, node: Node, step: Callable[[BlockingClient], None]) -> None:
        super().__init__(daemon=True)
        self.run_ = run
        self.node = node
        self.step = step

    def run(self) -> None:
        client = self.node.client()
        while not self.run_.stopping.is_set():
            try:
                self.step(client)
            except MadsidecarError as exc:
                self.run_.recorder.outcome(error_code(exc))
                self.run_.stopping.wait(0.02)
            except OSError as exc:  # the socket broke under a call
                self.run_.recorder.outcome(type(exc).__name__)
                client.close()
                self.run_.stopping.wait(0.02)
        client.close()


class ChaosRun:
    def __init__(self, seconds: float, seed: int, progress: Callable[[str], None]) -> None:
        self.seconds = seconds
        self.rng = random.Random(seed)  # the clients' choices (several threads draw)
        self.fault_rng = random.Random(seed)  # the faults', drawn by one thread: replayable
        self.progress = progress
        self.recorder = Recorder()
        self.stopping = threading.Event()
        self.faults: Counter[str] = Counter()
        self.versions = {key: 0 for key in CACHE_KEYS}
        self.version_lock = threading.Lock()
        self.residents: dict[str, str | None] = {}  # node -> the resident's current ref
        self.watchers: list[threading.Thread] = []
        self.redis = TcpRedis(extra_args=["--appendonly", "yes", "--appendfsync", "always"])
        self.proxy_port = free_port()
        self.proxy: subprocess.Popen[str] | None = None
        url = f"redis://127.0.0.1:{self.proxy_port}"
        self.nodes = [Node("chaos-a", url), Node("chaos-b", url)]

    @property
    def history(self) -> History:
        return self.recorder.history

    # -- topology ----------------------------------------------------------------------

    @contextlib.contextmanager
    def topology(self) -> Iterator[None]:
        try:
            self.redis.start()
            self.proxy = subprocess.Popen(
                [sys.executable, "-m", "tests.chaos.proxy", str(self.proxy_port),
                 str(self.redis.port)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
            )  # fmt: skip
            assert self.proxy.stdout is not None and self.proxy.stdout.readline() == "ready\n"
            for node in self.nodes:
                node.sidecar.start()
            yield
        finally:
            self.stopping.set()
            for node in self.nodes:
                lines = node.sidecar.log().splitlines()
                self.history.internal_errors += [line for line in lines if "internal_error" in line]
                node.sidecar.stop()
            if self.proxy is not None:
                self.proxy.kill()
                self.proxy.wait()
            self.redis.stop()

    def tell_proxy(self, command: str) -> None:
        assert self.proxy is not None and self.proxy.stdin is not None
        self.proxy.stdin.write(command + "\n")
        self.proxy.stdin.flush()

    # -- the run -----------------------------------------------------------------------

    def execute(self) -> Verdict:
        with self.topology():
            holder = self.nodes[0].client()
            holder.call("lock.acquire", {"name": BLOCKER, "ttl_ms": 60_000})
            workers = self.start_workers()
            deadline = now() + self.seconds
            next_report = now() + 10
            while now() < deadline:
                self.inject(self.pick_fault())
                self.stopping.wait(self.fault_rng.uniform(1.0, 2.5))
                if now() >= next_report:
                    next_report += 10
                    self.progress(self.summary_line(deadline))
            self.stopping.set()
            for thread in [*workers, *self.watchers]:
                thread.join(timeout=30)
            holder.close()
        return check(self.history)

    def summary_line(self, deadline: float) -> str:
        served = self.history.outcomes["ok"]
        faults = sum(self.faults.values())
        return f"chaos: {deadline - now():.0f} s left, {served} requests served, {faults} faults"

    def start_workers(self) -> list[Worker]:
        workers: list[Worker] = []
        for node in self.nodes:
            other = self.nodes[1] if node is self.nodes[0] else self.nodes[0]
            workers += [
                Worker(self, node, self.lock_step),
                Worker(self, node, partial(self.cache_write_step, node=node.name)),
                Worker(self, node, partial(self.cache_read_step, node=node.name)),
                Worker(self, node, self.rate_step),
                Worker(self, node, self.rate_step),
                Worker(self, node, self.session_steps(node, other)),
                Worker(self, node, self.resident_step(node)),
                Worker(self, node, self.publish_step(node)),
                Worker(self, node, self.subscribe_step(node)),
            ]
        for worker in workers:
            worker.start()
        return workers

    # -- what the clients do -----------------------------------------------------------

    def lock_step(self, client: BlockingClient) -> None:
        start = now()
        reply = client.call("lock.acquire", {"name": LOCK, "ttl_ms": 3000, "wait_ms": 300})
        acquired_at = now()
        self.recorder.outcome("ok")
        if not reply["acquired"]:
            return
        self.stopping.wait(self.rng.uniform(0, 0.01))
        release_start = now()
        released = False
        try:
            released = self.release(client, reply["token"])
        finally:
            self.history.lock_holds.append(
                LockHold(LOCK, reply["fence"], start, acquired_at, release_start, released)
            )

    def release(self, client: BlockingClient, token: str) -> bool:
        """Release until the sidecar answers: a release that failed (Redis away) leaves the
        lease with this connection, renewed, as the contract says it must."""
        while True:
            try:
                answer = client.call("lock.release", {"name": LOCK, "token": token})
            except ServerError as exc:
                self.recorder.outcome(exc.code)
                self.stopping.wait(0.05)
                continue
            self.recorder.outcome("ok")
            return bool(answer["released"])

    def cache_write_step(self, client: BlockingClient, node: str = "") -> None:
        key = self.rng.choice(CACHE_KEYS)
        with self.version_lock:
            self.versions[key] += 1
            version = self.versions[key]
        start = now()
        acked = False
        try:
            client.call("cache.set", {"key": key, "value": version, "ttl_ms": 600_000})
            acked = True
            self.recorder.outcome("ok")
        finally:
            self.history.cache_writes.append(CacheWrite(node, key, version, start, now(), acked))
        self.stopping.wait(0.005)

    def cache_read_step(self, client: BlockingClient, node: str = "") -> None:
        key = self.rng.choice(CACHE_KEYS)
        start = now()
        entry = client.call("cache.get", {"key": key})
        end = now()
        self.recorder.outcome("ok")
        version = None if entry is None else int(entry["value"])
        stale = entry is not None and bool(entry.get("stale"))
        self.history.cache_reads.append(
            CacheRead(node, key, version, start, end, stale, entry["source"] if entry else "")
        )
        self.stopping.wait(0.002)  # L1 hits are fast: leave the CPU to the other clients

    def rate_step(self, client: BlockingClient) -> None:
        args = {"key": RATE_KEY, "limit": RATE_LIMIT, "window_ms": RATE_WINDOW_MS}
        start = now()
        reply = client.call("ratelimit.hit", args)
        end = now()
        self.recorder.outcome("ok")
        self.history.rate_hits.append(
            RateHit(
                RATE_KEY, RATE_LIMIT, RATE_WINDOW_MS / 1000, bool(reply["allowed"]),
                bool(reply.get("degraded")), start, end,
            )
        )  # fmt: skip
        self.stopping.wait(0.01)

    def session_steps(self, home: Node, other: Node) -> Callable[[BlockingClient], None]:
        """Create a session here, read it on both nodes, revoke it on either, read again."""
        elsewhere = other.client()

        def step(client: BlockingClient) -> None:
            made = client.call("session.create", {"user_id": f"u-{home.name}"})
            created_end = now()
            self.recorder.outcome("ok")
            token = made["token"]
            revoke_start: float | None = None
            revoke_end: float | None = None
            try:
                self.read_session(token, [client, elsewhere], rounds=3)
                revoker = self.rng.choice([client, elsewhere])
                revoke_start = now()
                if revoker.call("session.revoke", {"token": token})["revoked"]:
                    revoke_end = now()
                self.recorder.outcome("ok")
                self.read_session(token, [client, elsewhere], rounds=5)
            finally:
                self.history.sessions.append(
                    SessionLife(token, created_end, revoke_start, revoke_end)
                )

        return step

    def read_session(self, token: str, clients: list[BlockingClient], rounds: int) -> None:
        for _ in range(rounds):
            for client in clients:
                start = now()
                try:
                    found = client.call("session.get", {"token": token}) is not None
                except MadsidecarError as exc:
                    self.recorder.outcome(error_code(exc))
                    continue
                self.recorder.outcome("ok")
                self.history.session_reads.append(SessionRead(token, found, start, now()))
            self.stopping.wait(0.03)

    def resident_step(self, node: Node) -> Callable[[BlockingClient], None]:
        """A client that stays in the room: tracks once per connection, then pings; its
        current ref is what must leave if its node dies."""

        def step(client: BlockingClient) -> None:
            if self.residents.get(node.name) is None or not client.connected:
                reply = client.call("presence.track", {"channel": ROOM, "key": node.name})
                self.residents[node.name] = reply["ref"]
                self.recorder.outcome("ok")
            client.ping()
            self.recorder.outcome("ok")
            self.stopping.wait(0.1)

        return step

    def publish_step(self, node: Node) -> Callable[[BlockingClient], None]:
        numbers = iter(range(1 << 62))

        def step(client: BlockingClient) -> None:
            seq = next(numbers)
            acked = False
            try:
                message = {"from": node.name, "seq": seq}
                client.call("pubsub.publish", {"channel": NEWS, "message": message})
                acked = True
                self.recorder.outcome("ok")
            finally:
                self.history.publishes.append(Publish(node.name, seq, acked))
            self.stopping.wait(0.01)

        return step

    def subscribe_step(self, node: Node) -> Callable[[BlockingClient], None]:
        """Subscribes once per connection (a new connection, after its sidecar restarted,
        subscribes again), then records what arrives."""
        subscribed: list[BlockingClient | None] = [None]

        def step(client: BlockingClient) -> None:
            try:
                if subscribed[0] is not client or not client.connected:
                    client.call("pubsub.subscribe", {"channel": NEWS})
                    subscribed[0] = client
                    self.recorder.outcome("ok")
                note = client.next_notification(timeout=0.2)
            except MadsidecarError:
                subscribed[0] = None
                raise
            if note is not None and note.name == "pubsub.message":
                message = note.payload["message"]
                self.history.deliveries.append(Delivery(node.name, message["from"], message["seq"]))

        return step

    # -- faults ------------------------------------------------------------------------

    def pick_fault(self) -> str:
        busy = any(thread.is_alive() for thread in self.watchers)
        choices = [f for f in FAULTS if not (busy and f == "sidecar_restart")]
        # Every kind early on, so even a short run has each at least once.
        missing = [f for f in choices if self.faults[f] == 0]
        return missing[0] if missing else self.fault_rng.choice(choices)

    def inject(self, fault: str) -> None:
        self.faults[fault] += 1
        at = now()
        detail = getattr(self, f"fault_{fault}")()
        self.history.faults.append((at, f"{fault} {detail or ''}".strip()))

    def fault_redis_restart(self) -> str:
        down_at = now()
        self.redis.kill()
        self.stopping.wait(self.fault_rng.uniform(0.3, 1.5))
        self.redis.start()
        self.history.outages.append((down_at, now()))
        return f"back at {now():.3f}"

    def fault_sidecar_restart(self) -> str:
        victim = self.fault_rng.choice(self.nodes)
        witness = self.nodes[1] if victim is self.nodes[0] else self.nodes[0]
        ref = self.residents.get(victim.name)
        gone_at = now()
        victim.sidecar.process.kill()  # type: ignore[union-attr]
        victim.sidecar.process.wait()  # type: ignore[union-attr]
        self.residents[victim.name] = None
        if ref is not None:
            bound = (NODE_TIMEOUT_MS + SWEEP_MS) / 1000 + CLIENT_LEAVE_BOUND_S
            self.watch_presence(witness, f"entry of dead node {victim.name}", ref, gone_at, bound)
        self.stopping.wait(self.fault_rng.uniform(0.2, 1.0))
        victim.sidecar.start()
        return f"{victim.name} back at {now():.3f}"

    def fault_client_kill(self) -> None:
        node = self.fault_rng.choice(self.nodes)
        witness = self.nodes[1] if node is self.nodes[0] else self.nodes[0]
        number = self.faults["client_kill"]
        lock = f"chaos-crash-{number}"
        crasher = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.crasher", node.socket, ROOM, f"crasher-{number}",
             lock, BLOCKER],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
        )  # fmt: skip
        assert crasher.stdout is not None
        line = crasher.stdout.readline().split()
        if line[:1] != ["ready"]:
            # It could not get going (its node restarting, Redis away): no fault injected.
            crasher.kill()
            crasher.wait()
            self.faults["client_kill"] -= 1
            return
        gone_at = now()
        crasher.kill()
        crasher.wait()
        self.watch_presence(witness, f"crasher-{number}", line[1], gone_at, CLIENT_LEAVE_BOUND_S)
        self.watch_lock(witness, lock, gone_at)

    def fault_latency(self) -> None:
        self.tell_proxy(f"delay {self.fault_rng.choice([20, 50, 100])}")
        self.stopping.wait(self.fault_rng.uniform(1.0, 2.0))
        self.tell_proxy("normal")

    def fault_stall(self) -> None:
        # Longer than redis_timeout_ms (500) half of the time: requests must time out, not hang.
        self.tell_proxy(f"stall {self.fault_rng.choice([300, 800])}")

    # -- watching departures -----------------------------------------------------------

    def watch_presence(
        self, witness: Node, what: str, ref: str, gone_at: float, bound: float
    ) -> None:
        def gone(client: BlockingClient) -> bool:
            members = client.call("presence.list", {"channel": ROOM})["members"]
            return all(entry["ref"] != ref for entries in members.values() for entry in entries)

        self.watch("presence leaves", witness, what, gone, gone_at, bound)

    def watch_lock(self, witness: Node, lock: str, gone_at: float) -> None:
        def free(client: BlockingClient) -> bool:
            reply = client.call("lock.acquire", {"name": lock, "ttl_ms": 1000, "wait_ms": 200})
            if reply["acquired"]:
                client.call("lock.release", {"name": lock, "token": reply["token"]})
            return bool(reply["acquired"])

        self.watch(
            "locks released on disconnect", witness, lock, free, gone_at, LOCK_RELEASE_BOUND_S
        )

    def watch(
        self,
        promise: str,
        witness: Node,
        what: str,
        done: Callable[[BlockingClient], bool],
        gone_at: float,
        bound: float,
    ) -> None:
        """Poll `done` on `witness` until it holds, giving up well past the bound (Redis
        outages meanwhile extend it)."""

        def poll() -> None:
            client = witness.client()
            left_at: float | None = None
            give_up = gone_at + bound + 30
            while now() < give_up:
                try:
                    if done(client):
                        left_at = now()
                        break
                except MadsidecarError:
                    pass
                time.sleep(0.02)
            client.close()
            self.history.departures.append(Departure(promise, what, gone_at, left_at, bound))

        thread = threading.Thread(target=poll, daemon=True)
        self.watchers.append(thread)
        thread.start()


def render(run: ChaosRun, verdict: Verdict, seconds: float) -> str:
    history = run.history
    lines = [f"chaos run: {seconds:.0f} s, 2 sidecars, 18 client threads, seed shown above", ""]
    lines.append("faults injected")
    for fault in FAULTS:
        lines.append(f"  {fault:<28} {run.faults[fault]:>8}")
    lines.append("")
    lines.append(f"requests served (ok)           {history.outcomes['ok']:>8}")
    lines.append("errors by code")
    for code, count in sorted(history.outcomes.items()):
        if code != "ok":
            lines.append(f"  {code:<28} {count:>8}")
    lines.append("")
    lines.append(f"{'promise':<40} {'checked':>8} {'broken':>7}")
    for promise, count in sorted(verdict.checked.items()):
        lines.append(f"{promise:<40} {count:>8} {len(verdict.broken.get(promise, [])):>7}")
    for name, value in verdict.figures.items():
        lines.append(f"  {name}: {value}")
    if verdict.broken_count:
        lines.append("faults at: " + ", ".join(f"{what} {at:.3f}" for at, what in history.faults))
    for promise, found in verdict.broken.items():
        for how in found[:10]:
            lines.append(f"BROKEN {promise}: {how}")
    lines.append(f"promises broken: {verdict.broken_count}")
    return "\n".join(lines)


def run_chaos(
    seconds: float, seed: int | None = None, progress: Callable[[str], Any] = print
) -> tuple[ChaosRun, Verdict]:
    seed = random.randrange(1 << 32) if seed is None else seed
    progress(f"chaos: seed {seed}, {seconds:.0f} s")
    run = ChaosRun(seconds, seed, progress)
    return run, run.execute()
