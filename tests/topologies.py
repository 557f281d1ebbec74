"""Redis deployments for the high-availability tests, as real local processes.

`SentinelTopology`: a master, a replica and three sentinels on 127.0.0.1 (Sentinel only
speaks TCP), each in its own temp dir. Sentinel's timings are shortened (down after 1 s)
so a failover takes seconds, not half a minute.

`ClusterTopology`: a Redis Cluster of three masters and three replicas on 127.0.0.1, each
node in its own temp dir, created by `redis-cli --cluster create`. The node timeout is
shortened (1 s) for the same reason, so a replica takes over a killed master in seconds;
`redis-cli --cluster reshard` moves slots between masters while a test puts load on.
Neither topology persists anything: the nodes start empty and leave nothing behind.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import redis
from redis.crc import key_slot

from .support import RedisProcess, require_binary, short_tempdir, start_notifying, wait_until

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
TOPOLOGY_TIMEOUT_S = 30.0
CLUSTER_NODE_TIMEOUT_MS = 1000
REDIS_CLI_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpRedis(RedisProcess):
    """redis-server on a TCP port of 127.0.0.1 (and its Unix socket), optionally a replica.

    `extra_args` go after the defaults (a cluster node's flags); `directory` is for a
    caller that must name files in it before the process exists (nodes.conf)."""

    def __init__(
        self,
        replica_of: int | None = None,
        *,
        extra_args: Sequence[str] = (),
        directory: str | None = None,
    ) -> None:
        self.port = free_port()
        # No 5 s wait for more replicas before a full sync (Redis 7's default).
        extra = ["--port", str(self.port), "--bind", "127.0.0.1", "--repl-diskless-sync-delay", "0"]
        if replica_of is not None:
            extra += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.replica_of = replica_of
        super().__init__(directory=directory, extra_args=[*extra, *extra_args])

    def start(self) -> TcpRedis:
        super().start()
        if self.replica_of is not None:
            # READY=1 comes before the first sync has finished; a failover test needs a
            # replica that holds the data and acknowledges writes.
            wait_until(self._synced, TOPOLOGY_TIMEOUT_S, interval=0.05)
        return self

    def _synced(self) -> bool:
        """Acknowledging writes: after a diskless sync the master sends the replica its
        stream (and WAIT counts it) only from the replica's first ACK, up to 1 s later."""
        assert self.replica_of is not None
        with redis.Redis(host="127.0.0.1", port=self.replica_of, socket_timeout=5) as master:
            master.set("topology:synced", 1)
            return int(master.execute_command("WAIT", 1, 100)) >= 1

    def direct(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


class SentinelProcess:
    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self.dir = short_tempdir("msc-sent-")
        self.config = os.path.join(self.dir, "sentinel.conf")
        Path(self.config).write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.dir}\n"
            f"logfile {os.path.join(self.dir, 'sentinel.log')}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelProcess:
        command = [require_binary("redis-server"), self.config, "--sentinel"]
        self.process = start_notifying([*command, "--supervised", "systemd"], self.dir)
        return self

    def direct(self) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.port, socket_timeout=5, decode_responses=True
        )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelTopology:
    def __init__(self) -> None:
        self.master = TcpRedis()
        self.replica: TcpRedis | None = None
        self.sentinels: list[SentinelProcess] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def __enter__(self) -> SentinelTopology:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> SentinelTopology:
        try:
            self.master.start()
            self.replica = TcpRedis(replica_of=self.master.port).start()
            self.sentinels = [SentinelProcess(self.master.port).start() for _ in range(3)]
            # Ready for a failover once every sentinel knows the replica and the others.
            wait_until(self._sentinels_agree, TOPOLOGY_TIMEOUT_S, interval=0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError), sentinel.direct() as direct:
                state = direct.sentinel_master(SERVICE)
                if int(state["num-other-sentinels"]) == 2 and int(state["num-slaves"]) == 1:
                    continue
            return False
        return True

    def master_port(self) -> int:
        """The master's port as the sentinels' majority names it now."""
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError), sentinel.direct() as direct:
                _, port = direct.sentinel_get_master_addr_by_name(SERVICE)
                return int(port)
        raise AssertionError("no sentinel answered")

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        if self.replica is not None:
            self.replica.stop()
        self.master.stop()


# One range of CLUSTER SLOTS: first slot, last slot, master port, replica ports (sorted).
SlotRange = tuple[int, int, int, tuple[int, ...]]


class ClusterTopology:
    """Three masters and three replicas of a Redis Cluster, one replica per master.

    Ports are the nodes' identities here: a test kills, asks and reshards by port, and
    the cluster, not this object, says which ports are masters now (`master_ports`)."""

    def __init__(self) -> None:
        self.nodes: list[TcpRedis] = []
        self._reshards: dict[subprocess.Popen[bytes], IO[bytes]] = {}
        # Twelve ports from free_port (a node's and its bus's), none bound until start:
        # the kernel may hand out one twice, about once in 400 topologies.
        taken: set[int] = set()
        while len(self.nodes) < 6:
            bus_port = free_port()
            node = self._new_node(bus_port)
            if len({node.port, bus_port} - taken) == 2:
                taken |= {node.port, bus_port}
                self.nodes.append(node)
            else:
                shutil.rmtree(node.dir, ignore_errors=True)

    @staticmethod
    def _new_node(bus_port: int) -> TcpRedis:
        directory = short_tempdir("msc-clu-")
        return TcpRedis(
            directory=directory,
            extra_args=[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                os.path.join(directory, "nodes.conf"),
                "--cluster-node-timeout",
                str(CLUSTER_NODE_TIMEOUT_MS),
                # The bus defaults to the port + 10000: past 65535 for ports above 55535,
                # a fifth of the ephemeral range free_port draws from.
                "--cluster-port",
                str(bus_port),
            ],
        )

    @property
    def url(self) -> str:
        """Every node, the masters first (after start): a client needs one to answer."""
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"redis+cluster://{hosts}"

    def __enter__(self) -> ClusterTopology:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> ClusterTopology:
        try:
            for node in self.nodes:
                node.start()
            self._create()
            # redis-cli returns once the nodes agree on the config epochs, before all of
            # them know every slot's master, and before the replicas have synced.
            self._wait_converged(TOPOLOGY_TIMEOUT_S, "the cluster to form")
            masters = set(self.master_ports())
            self.nodes.sort(key=lambda node: node.port not in masters)
            wait_until(self._replicas_acknowledge, TOPOLOGY_TIMEOUT_S, interval=0.05)
            # CLUSTER SLOTS lists a replica only once its gossiped replication offset is
            # not 0: after these writes, not the master's first replication PING (10 s).
            # A client that reads from replicas finds them from here on.
            self._wait_converged(TOPOLOGY_TIMEOUT_S, "the replicas", replicas=True)
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        command = [
            require_binary("redis-cli"),
            "--cluster",
            "create",
            *(f"127.0.0.1:{node.port}" for node in self.nodes),
            "--cluster-replicas",
            "1",
            "--cluster-yes",
        ]
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=REDIS_CLI_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            output = _cli_output(exc.output or b"")
            raise RuntimeError(f"redis-cli --cluster create timed out:\n{output}") from None
        if result.returncode != 0:
            output = _cli_output(result.stdout)
            raise RuntimeError(f"redis-cli --cluster create exited {result.returncode}:\n{output}")

    def _replicas_acknowledge(self) -> bool:
        """Each master's replica has synced and acknowledges writes (see TcpRedis._synced);
        WAIT needs a key the master owns, or the master answers MOVED. The key is deleted
        after: a test finds the cluster empty."""
        for first, last, master, _ in self._slot_map(self._live_ports()):
            keys = (f"topology:synced:{i}" for i in itertools.count())
            key = next(key for key in keys if first <= _slot(key) <= last)
            with contextlib.suppress(redis.RedisError), self.direct(master) as direct:
                direct.set(key, 1)
                acknowledged = int(direct.execute_command("WAIT", 1, 100)) >= 1
                direct.delete(key)
                if acknowledged:
                    continue
            return False
        return True

    def _live_ports(self) -> list[int]:
        return [n.port for n in self.nodes if n.process is not None and n.process.poll() is None]

    def _slot_map(self, ports: Sequence[int]) -> list[SlotRange]:
        """CLUSTER SLOTS as the first of `ports` that answers sees it."""
        for port in ports:
            with contextlib.suppress(redis.RedisError), self.direct(port) as direct:
                return _slot_ranges(direct)
        raise AssertionError(f"no cluster node answered on {list(ports)}")

    def _converged(self, replicas: bool, dead_port: int | None) -> bool:
        """Every live node says cluster_state:ok and sees the same masters for the same
        slot ranges (and, if `replicas`, one replica each), none of them `dead_port`."""
        views: list[list[SlotRange]] = []
        for port in self._live_ports():
            try:
                with self.direct(port) as direct:
                    info = direct.execute_command("CLUSTER", "INFO").decode()
                    if "cluster_state:ok" not in info.splitlines():
                        return False
                    ranges = _slot_ranges(direct)
            except redis.RedisError:
                return False
            if replicas and any(len(r[3]) != 1 for r in ranges):
                return False
            if any(r[2] == dead_port for r in ranges):
                return False
            views.append(ranges if replicas else [(f, la, m, ()) for f, la, m, _ in ranges])
        return bool(views) and all(view == views[0] for view in views)

    def _wait_converged(
        self, timeout: float, what: str, replicas: bool = False, dead_port: int | None = None
    ) -> float:
        try:
            return wait_until(lambda: self._converged(replicas, dead_port), timeout, interval=0.05)
        except AssertionError:
            raise AssertionError(
                f"no agreement within {timeout} s waiting for {what}; "
                f"CLUSTER NODES:\n{self._describe()}"
            ) from None

    def _describe(self) -> str:
        for port in self._live_ports():
            with contextlib.suppress(redis.RedisError), self.direct(port) as direct:
                return str(direct.execute_command("CLUSTER", "NODES", NEVER_DECODE=True).decode())
        return "(no live node answered)"

    def master_ports(self) -> list[int]:
        """The ports of the masters that serve slots, as a live node sees them now (right
        after a kill, still the dead master until the failover), in slot order."""
        ports: list[int] = []
        for _, _, master, _ in self._slot_map(self._live_ports()):
            if master not in ports:
                ports.append(master)
        return ports

    def master_for_key(self, key: str) -> int:
        """The port of the master serving `key`'s slot, as a live node sees it now."""
        slot = _slot(key)
        for first, last, master, _ in self._slot_map(self._live_ports()):
            if first <= slot <= last:
                return master
        raise AssertionError(f"slot {slot} of {key!r} is not served")

    def kill(self, port: int) -> None:
        """SIGKILL the node on `port`: a crash, no goodbye to the others."""
        self._node(port).kill()

    def wait_failover(self, dead_port: int, timeout: float = TOPOLOGY_TIMEOUT_S) -> float:
        """Until the surviving nodes say cluster_state:ok and agree on a slot map in
        which `dead_port` serves nothing; returns the seconds waited (so call it right
        after `kill`)."""
        return self._wait_converged(timeout, f"a failover from {dead_port}", dead_port=dead_port)

    def reshard(self, source_port: int, target_port: int, slots: int) -> subprocess.Popen[bytes]:
        """Start moving `slots` slots (and their keys, by MIGRATE) from one master to
        another; returns at once so a test can put load on meanwhile. Its output goes to
        an unnamed file, not a pipe: nobody reads a pipe while the test runs its load,
        and a full pipe would stall redis-cli, and so the resharding."""
        source_id, target_id = self._node_id(source_port), self._node_id(target_port)
        command = [
            require_binary("redis-cli"),
            "--cluster",
            "reshard",
            f"127.0.0.1:{self._live_ports()[0]}",
            "--cluster-from",
            source_id,
            "--cluster-to",
            target_id,
            "--cluster-slots",
            str(slots),
            "--cluster-yes",
        ]
        # Closed by wait_reshard or stop: it outlives this call.
        output = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT
            )
        except BaseException:
            output.close()
            raise
        self._reshards[process] = output
        return process

    def wait_reshard(
        self, process: subprocess.Popen[bytes], timeout: float = REDIS_CLI_TIMEOUT_S
    ) -> float:
        """Wait for a `reshard`, then until every live node agrees on the new slot map
        (redis-cli tells the masters; the replicas learn it by gossip); returns the
        seconds waited. Raises with redis-cli's output if it failed or timed out."""
        started = time.monotonic()
        output = self._reshards.pop(process)
        try:
            try:
                returncode = process.wait(timeout)
                problem = f"exited {returncode}" if returncode != 0 else None
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                problem = f"still running after {timeout} s"
            if problem is not None:
                output.seek(0)
                text = _cli_output(output.read())
                raise AssertionError(f"redis-cli --cluster reshard {problem}:\n{text}")
        finally:
            output.close()
        remaining = max(timeout - (time.monotonic() - started), 1.0)
        self._wait_converged(remaining, "the resharded slot map")
        return time.monotonic() - started

    def _node_id(self, port: int) -> str:
        with self.direct(port) as direct:
            return str(direct.execute_command("CLUSTER", "MYID", NEVER_DECODE=True).decode())

    def _node(self, port: int) -> TcpRedis:
        for node in self.nodes:
            if node.port == port:
                return node
        raise KeyError(f"no cluster node on port {port}")

    def direct(self, port: int) -> redis.Redis:
        """A plain (not cluster-aware) client to one node: MOVED is an error to it."""
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def stop(self) -> None:
        for process, output in self._reshards.items():
            if process.poll() is None:
                process.kill()
                process.wait()
            output.close()
        self._reshards.clear()
        for node in self.nodes:
            node.stop()


def _cli_output(output: bytes) -> str:
    """redis-cli --cluster colours its messages even into a pipe or a file."""
    return re.sub(r"\x1b\[[0-9;]*m", "", output.decode(errors="replace"))


def _slot(key: str) -> int:
    return key_slot(key.encode())


def _slot_ranges(direct: Any) -> list[SlotRange]:
    """CLUSTER SLOTS, sorted: each entry is [first, last, [host, port, id, ...], replicas...].
    (`direct` is a redis.Redis; its execute_command has no type hints.)"""
    ranges: list[SlotRange] = []
    for first, last, master, *replicas in direct.execute_command("CLUSTER", "SLOTS"):
        replica_ports = tuple(sorted(int(replica[1]) for replica in replicas))
        ranges.append((int(first), int(last), int(master[1]), replica_ports))
    return sorted(ranges)
