"""The processes a benchmark run starts and stops: redis-server, sidecars, the echo server.

Each gets a private temp dir (AF_UNIX paths must stay short) and is awaited through
sd_notify READY=1 on a datagram socket posing as systemd's NOTIFY_SOCKET, the way
tests/support.py does it; nothing sleeps to wait for a process to come up. This module is
a small copy of that one so the benchmarks do not import the test package.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
ALL_CPUS = frozenset(os.sched_getaffinity(0))  # before anything is pinned


class StartError(RuntimeError):
    pass


def _wait_ready(sock: socket.socket, proc: subprocess.Popen[bytes], what: str, log: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            break
        sock.settimeout(min(remaining, 0.2))
        try:
            message = sock.recv(65536).decode(errors="replace")
        except TimeoutError:
            continue
        if "READY=1" in message.splitlines():
            return
    tail = ""
    with contextlib.suppress(OSError):
        tail = Path(log).read_text(errors="replace")[-2000:]
    state = f"exited with {proc.returncode}" if proc.poll() is not None else "not ready"
    raise StartError(f"{what} {state} after start; log tail:\n{tail}")


class Process:
    """One child process in its own temp dir, ready once it says READY=1."""

    name = "process"

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"msc-bench-{self.name}-", dir="/tmp")
        self.log_path = os.path.join(self.dir, f"{self.name}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("MADSIDECAR_")}

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Process:
        notify_path = os.path.join(self.dir, "notify.sock")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        try:
            env = {**self.env(), "NOTIFY_SOCKET": notify_path, "PYTHONUNBUFFERED": "1"}
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    self.command(),
                    env=env,
                    cwd=self.dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            _wait_ready(notify, self.proc, self.name, self.log_path)
        finally:
            notify.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(notify_path)
        return self

    def stop(self) -> int | None:
        """SIGTERM, wait, SIGKILL if it will not go; remove the temp dir. The exit status."""
        status: int | None = None
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            status = proc.returncode
        shutil.rmtree(self.dir, ignore_errors=True)
        return status


class Redis(Process):
    name = "redis"

    def __init__(self) -> None:
        super().__init__()
        self.socket_path = os.path.join(self.dir, "redis.sock")

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StartError("redis-server is not installed; `./dev bench` installs it")
        return [
            binary,
            "--port", "0",
            "--unixsocket", self.socket_path,
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--supervised", "systemd",
            "--logfile", self.log_path,
        ]  # fmt: skip


class Sidecar(Process):
    """`python -m madsidecar run` against the given Redis: its default settings, plus
    `settings` as command-line flags (`{"l1_max_entries": 0}` -> `--l1-max-entries 0`)."""

    name = "sidecar"

    def __init__(self, redis_url: str, settings: dict[str, object] | None = None) -> None:
        super().__init__()
        self.socket_path = os.path.join(self.dir, "madsidecar.sock")
        self.redis_url = redis_url
        self.settings = dict(settings or {})

    def command(self) -> list[str]:
        flags = []
        for name, value in self.settings.items():
            flags += ["--" + name.replace("_", "-"), str(value)]
        return [
            sys.executable, "-m", "madsidecar", "run",
            "--socket", self.socket_path,
            "--redis-url", self.redis_url,
            *flags,
        ]  # fmt: skip


class EchoServer(Process):
    name = "echo"

    def __init__(self) -> None:
        super().__init__()
        self.socket_path = os.path.join(self.dir, "echo.sock")

    def command(self) -> list[str]:
        script = str(Path(__file__).resolve().parent / "echo_server.py")
        return [sys.executable, script, "--socket", self.socket_path]


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in bytes."""
    found: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) * 1024
    return found


def pin(pid: int, cpus: set[int] | None) -> None:
    """Move every thread of a process onto `cpus` (None: all CPUs this process may use)."""
    target = cpus if cpus is not None else ALL_CPUS
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(int(tid), target)
