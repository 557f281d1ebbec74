"""Real processes for tests: redis-server and the sidecar, each in its own temp dir.

Readiness is awaited through sd_notify (both redis-server and madsidecar speak it), so no
test sleeps to wait for a process to come up.
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
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from madsidecar_client import BlockingClient

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 20.0


def short_tempdir(prefix: str = "msc-") -> str:
    """A private dir with a short path: AF_UNIX paths are limited to 107 bytes."""
    return tempfile.mkdtemp(prefix=prefix, dir="/tmp")


class NotifyListener:
    """A datagram socket posing as systemd's NOTIFY_SOCKET."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[str] = []

    def wait_for(self, line: str, timeout: float = START_TIMEOUT_S) -> list[str]:
        """Block until a datagram carrying `line` arrives; returns all lines so far."""
        deadline = time.monotonic() + timeout
        while not any(line in m.splitlines() for m in self.messages):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {line!r} within {timeout} s; got {self.messages}")
            self.sock.settimeout(remaining)
            with contextlib.suppress(TimeoutError):
                self.messages.append(self.sock.recv(65536).decode())
        return self.messages

    def close(self) -> None:
        self.sock.close()


def start_notifying(command: list[str], directory: str) -> subprocess.Popen[bytes]:
    """Start a process that speaks sd_notify (redis-server, sentinel) and wait for its
    READY=1, on a notify socket in `directory`."""
    notify = NotifyListener(directory)
    try:
        process = subprocess.Popen(
            command,
            env={**os.environ, "NOTIFY_SOCKET": notify.path},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        notify.wait_for("READY=1")
    finally:
        notify.close()
        os.unlink(notify.path)
    return process


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed; run ./dev test, which installs it")
    return path


class RedisProcess:
    """A private redis-server on a Unix socket."""

    def __init__(self, directory: str | None = None, extra_args: Sequence[str] = ()) -> None:
        self.dir = directory or short_tempdir("msc-redis-")
        self.socket_path = os.path.join(self.dir, "redis.sock")
        self.extra_args = list(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self) -> RedisProcess:
        """Start (or restart, on the same socket) and wait for its READY=1."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.dir, "notify.sock"))
        self.process = start_notifying(
            [
                require_binary("redis-server"),
                "--port",
                "0",
                "--unixsocket",
                self.socket_path,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--supervised",
                "systemd",
                "--logfile",
                os.path.join(self.dir, "redis.log"),
                *self.extra_args,
            ],
            self.dir,
        )
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class SidecarProcess:
    """`python -m madsidecar run` as a child process, ready once it says READY=1."""

    def __init__(
        self,
        redis_url: str | None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        config_toml: str | None = None,
    ) -> None:
        self.dir = short_tempdir("msc-side-")
        self.socket_path = os.path.join(self.dir, "madsidecar.sock")
        self.log_path = os.path.join(self.dir, "sidecar.log")
        self.redis_url = redis_url
        self.extra_args = list(extra_args)
        self.env = env or {}
        self.config_path: str | None = None
        if config_toml is not None:
            self.config_path = os.path.join(self.dir, "madsidecar.toml")
            Path(self.config_path).write_text(config_toml)
        self.process: subprocess.Popen[bytes] | None = None
        self.notify: NotifyListener | None = None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "madsidecar", "run", "--socket", self.socket_path]
        if self.redis_url is not None:
            cmd += ["--redis-url", self.redis_url]
        if self.config_path is not None:
            cmd += ["--config", self.config_path]
        return cmd + self.extra_args

    def start(self, wait_ready: bool = True) -> SidecarProcess:
        """Start, or start again after it stopped (same socket path, same log file)."""
        if self.notify is not None:
            self.notify.close()
            os.unlink(self.notify.path)
        self.notify = NotifyListener(self.dir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MADSIDECAR_")}
        env.update({"NOTIFY_SOCKET": self.notify.path, "PYTHONUNBUFFERED": "1"}, **self.env)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command(), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir
            )
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        assert self.notify is not None
        try:
            self.notify.wait_for("READY=1")
        except TimeoutError:
            raise AssertionError(f"sidecar not ready; log:\n{self.log()}") from None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def client(self, **kwargs: object) -> BlockingClient:
        return BlockingClient(self.socket_path, **kwargs)  # type: ignore[arg-type]

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and wait; returns the exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.notify is not None:
            self.notify.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_until(predicate: object, timeout: float, interval: float = 0.02) -> float:
    """Poll `predicate` (no event exists for these states); returns the seconds it took."""
    started = time.monotonic()
    while not predicate():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextlib.contextmanager
def running_sidecar(redis: RedisProcess | None, **kwargs: object) -> Iterator[SidecarProcess]:
    sidecar = SidecarProcess(redis.url if redis else None, **kwargs)  # type: ignore[arg-type]
    try:
        yield sidecar.start()
    finally:
        sidecar.stop()


def kill_redis_client(direct: Any, name: str) -> None:
    """CLIENT KILL the connection a sidecar named `name` (CLIENT SETNAME), as a network
    fault or a Redis-side kill would cut it."""
    found = [c for c in direct.client_list() if c["name"] == name]
    assert found, f"no Redis connection named {name!r}"
    direct.client_kill_filter(_id=found[0]["id"])


def next_note(client: BlockingClient, name: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        note = client.next_notification(left)
        if note is not None and note.name == name:
            return note.payload
    raise AssertionError(f"no {name} within {timeout} s")
