"""The listening socket, the set of connections, and the drain on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import itertools
import os
import socket
import stat
import time
from collections.abc import Sequence
from typing import Final

import structlog

from .config import Config
from .connection import ClientConnection
from .methods import Capability, MethodTable
from .request_metrics import RequestMetrics

log = structlog.get_logger("madsidecar.server")

LISTEN_BACKLOG: Final = 4096


class StartupError(Exception):
    """The sidecar cannot start; the message says what to do about it."""


class Server:
    def __init__(
        self,
        config: Config,
        table: MethodTable,
        capabilities: Sequence[Capability],
        request_metrics: RequestMetrics | None = None,
    ) -> None:
        self.config = config
        self.table = table
        self._capabilities = capabilities
        # Connections count and time each answer here when metrics are enabled.
        self.request_metrics = request_metrics
        self.connections: dict[int, ClientConnection] = {}
        self.requests = 0
        self.draining = False
        self.started_at = time.monotonic()
        self._ids = itertools.count(1)
        self._listener: asyncio.AbstractServer | None = None
        self._owned_path: str | None = None
        self._all_closed = asyncio.Event()
        self._all_closed.set()

    @property
    def uptime_ms(self) -> int:
        return int((time.monotonic() - self.started_at) * 1000)

    async def listen(self, activated: socket.socket | None = None) -> None:
        """Serve on the socket systemd handed over, else bind `config.socket`."""
        if activated is not None:
            sock = activated
            log.info("listening", socket="(socket-activated)", fd=sock.fileno())
        else:
            sock = bind_unix_socket(
                self.config.socket, self.config.socket_mode, self.config.socket_group
            )
            self._owned_path = self.config.socket
            log.info("listening", socket=self.config.socket, mode=oct(self.config.socket_mode))
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_unix_server(
            self._new_connection, sock=sock, backlog=LISTEN_BACKLOG
        )

    def _new_connection(self) -> ClientConnection:
        return ClientConnection(self, next(self._ids))

    def connection_opened(self, conn: ClientConnection) -> None:
        self.connections[conn.conn_id] = conn
        self._all_closed.clear()

    def connection_closed(self, conn: ClientConnection) -> None:
        self.connections.pop(conn.conn_id, None)
        for capability in self._capabilities:
            try:
                capability.connection_closed(conn)
            except Exception:
                log.exception("release_failed", capability=capability.group, conn=conn.conn_id)
        if not self.connections:
            self._all_closed.set()

    def apply_config(self, config: Config) -> None:
        self.config = config
        for conn in self.connections.values():
            conn.refresh_rule()

    async def drain(self, deadline_s: float) -> None:
        """Stop accepting, let in-flight work finish until the deadline, refuse the rest
        with SHUTTING_DOWN, then close every connection (releasing what each owns)."""
        self.draining = True
        if self._listener is not None:
            self._listener.close()
        deadline_ms = int(deadline_s * 1000)
        conns = list(self.connections.values())
        for conn in conns:
            conn.notify("shutdown", {"deadline_ms": deadline_ms})
        pending = [task for conn in conns for task in conn.inflight]
        if pending:
            log.info("draining", connections=len(conns), inflight=len(pending))
            await asyncio.wait(pending, timeout=deadline_s)
        await asyncio.gather(*(conn.cancel_inflight() for conn in conns))
        for conn in list(self.connections.values()):
            conn.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._all_closed.wait(), timeout=1.0)
        if self._owned_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._owned_path)


def bind_unix_socket(path: str, mode: int, group: str | None) -> socket.socket:
    """A listening-ready Unix socket at `path` with the given mode and group.

    A stale socket file left by a crashed sidecar is replaced; a live one is an error,
    so two sidecars never fight over one path.
    """
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o755, exist_ok=True)
    _remove_stale_socket(path)
    gid = _group_id(group) if group else None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Bind with a restrictive umask so the file never exists with looser permissions.
    previous_umask = os.umask(0o177)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise StartupError(f"cannot bind {path}: {exc.strerror}") from None
    finally:
        os.umask(previous_umask)
    if gid is not None:
        os.chown(path, -1, gid)
    os.chmod(path, mode)
    sock.setblocking(False)
    return sock


def _remove_stale_socket(path: str) -> None:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise StartupError(f"{path} exists and is not a socket; remove it or pick --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise StartupError(f"another process is already listening on {path}")


def _group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        if name.isdigit():
            return int(name)
        raise StartupError(f"socket_group: no such group {name!r}") from None
