"""Redis deployments for the high-availability tests, as real local processes.

`SentinelTopology`: a master, a replica and three sentinels on 127.0.0.1 (Sentinel only
speaks TCP), each in its own temp dir. Sentinel's timings are shortened (down after 1 s)
so a failover takes seconds, not half a minute.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from pathlib import Path

import redis

from .support import RedisProcess, require_binary, short_tempdir, start_notifying, wait_until

SERVICE = "mymaster"
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000
TOPOLOGY_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TcpRedis(RedisProcess):
    """redis-server on a TCP port of 127.0.0.1 (and its Unix socket), optionally a replica."""

    def __init__(self, replica_of: int | None = None) -> None:
        self.port = free_port()
        # No 5 s wait for more replicas before a full sync (Redis 7's default).
        extra = ["--port", str(self.port), "--bind", "127.0.0.1", "--repl-diskless-sync-delay", "0"]
        if replica_of is not None:
            extra += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.replica_of = replica_of
        super().__init__(extra_args=extra)

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
