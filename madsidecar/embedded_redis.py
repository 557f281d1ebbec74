"""The embedded default: a private redis-server on a Unix socket, supervised.

It listens on no TCP port, keeps nothing on disk unless persistence is configured, is
restarted if it dies, and is stopped with the sidecar (and by the kernel if the sidecar
is killed outright, through PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import tempfile
import time
from typing import Final

import structlog

from .config import Config
from .server import StartupError

log = structlog.get_logger("madsidecar.embedded_redis")

READY_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 3.0
RESTART_BACKOFF_MAX_S: Final = 5.0
_PR_SET_PDEATHSIG: Final = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EmbeddedRedis:
    def __init__(self, config: Config) -> None:
        self._config = config
        self._binary: str | None = None
        self._dir = ""
        self._owns_dir = False
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self.restarts = 0

    @property
    def socket_path(self) -> str:
        return os.path.join(self._dir, "redis.sock")

    @property
    def _console_path(self) -> str:
        return os.path.join(self._dir, "redis-console.log")

    def _last_words(self) -> str:
        """The last line redis-server wrote, wherever it managed to write it."""
        for path in (os.path.join(self._dir, "redis.log"), self._console_path):
            try:
                with open(path, encoding="utf-8", errors="replace") as fh:
                    lines = [line.strip() for line in fh if line.strip()]
            except FileNotFoundError:
                continue
            if lines:
                return lines[-1]
        return f"no output; see {self._dir}"

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    async def start(self) -> str:
        """Start redis-server and wait until it answers; returns its URL."""
        self._binary = shutil.which(self._config.redis_server)
        if self._binary is None:
            raise StartupError(
                f"no redis-server found (looked for {self._config.redis_server!r} on PATH): "
                "install one (apt-get install redis-server) or pass --redis-url"
            )
        self._prepare_dir()
        await self._spawn()
        log.info(
            "embedded_redis_started",
            pid=self.pid,
            socket=self.socket_path,
            persistence=self._config.embedded_persistence,
        )
        self._supervisor = asyncio.create_task(self._supervise(), name="embedded-redis")
        return self.url

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._terminate()
        if self._owns_dir:
            shutil.rmtree(self._dir, ignore_errors=True)
        log.info("embedded_redis_stopped")

    def _prepare_dir(self) -> None:
        if self._config.embedded_dir:
            self._dir = self._config.embedded_dir
            os.makedirs(self._dir, mode=0o700, exist_ok=True)
        else:
            self._dir = tempfile.mkdtemp(prefix="madsidecar-redis-")
            self._owns_dir = True
        os.chmod(self._dir, 0o700)
        with open(os.path.join(self._dir, "redis.conf"), "w", encoding="utf-8") as fh:
            fh.write(self._redis_conf())

    def _redis_conf(self) -> str:
        lines = [
            "port 0",
            f"unixsocket {_quoted(self.socket_path)}",
            "unixsocketperm 700",
            f"dir {_quoted(self._dir)}",
            "daemonize no",
            f"logfile {_quoted(os.path.join(self._dir, 'redis.log'))}",
            'save ""',
            f"appendonly {'yes' if self._config.embedded_persistence else 'no'}",
        ]
        if self._config.embedded_maxmemory:
            lines.append(f"maxmemory {self._config.embedded_maxmemory}")
        return "\n".join(lines) + "\n"

    async def _spawn(self) -> None:
        assert self._binary is not None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        # Before redis-server opens its logfile (a bad config) it can only print.
        console = os.open(self._console_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            self._process = await asyncio.create_subprocess_exec(
                self._binary,
                os.path.join(self._dir, "redis.conf"),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=console,
                stderr=console,
                preexec_fn=_die_with_parent,
            )
        finally:
            os.close(console)
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        # redis-server has no readiness signal outside systemd; probing its socket is it.
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.returncode is not None:
                raise StartupError(
                    f"redis-server exited at start with status {self._process.returncode}: "
                    f"{self._last_words()}"
                )
            if await _answers_ping(self.socket_path):
                return
            await asyncio.sleep(0.01)
        raise StartupError(f"redis-server did not answer within {READY_TIMEOUT_S:.0f} s")

    async def _supervise(self) -> None:
        delay = 0.1
        while not self._stopping:
            assert self._process is not None
            status = await self._process.wait()
            if self._stopping:
                return
            log.error("embedded_redis_exited", status=status, restart_in_s=round(delay, 2))
            await asyncio.sleep(delay)
            try:
                await self._spawn()
            except (StartupError, OSError) as exc:
                log.error("embedded_redis_restart_failed", reason=str(exc))
                delay = min(delay * 2, RESTART_BACKOFF_MAX_S)
                continue
            self.restarts += 1
            delay = 0.1
            log.info("embedded_redis_restarted", pid=self.pid, restarts=self.restarts)

    async def _terminate(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _answers_ping(path: str) -> bool:
    try:
        reader, writer = await asyncio.open_unix_connection(path)
    except OSError:
        return False
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 1.0)
        return line.startswith(b"+PONG")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def _quoted(value: str) -> str:
    """A redis.conf string argument: double-quoted, with backslash escapes."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
