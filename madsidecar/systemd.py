"""The two systemd interfaces the daemon speaks: sd_notify and socket activation.

Both are a few lines of protocol, so they are written here rather than pulled in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping, MutableMapping
from typing import Final

SD_LISTEN_FDS_START: Final = 3


class SystemdNotifier:
    """Sends state lines to $NOTIFY_SOCKET; does nothing when not run by systemd."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self._address = address
        self.watchdog_usec = watchdog_usec
        self._watchdog: asyncio.TimerHandle | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SystemdNotifier:
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        watchdog_usec: int | None = None
        raw_usec = env.get("WATCHDOG_USEC")
        watchdog_pid = env.get("WATCHDOG_PID")
        if (
            raw_usec
            and raw_usec.isdigit()
            and int(raw_usec) > 0  # 0 would make the watchdog tick in a busy loop
            and (not watchdog_pid or watchdog_pid == str(os.getpid()))
        ):
            watchdog_usec = int(raw_usec)
        return cls(address, watchdog_usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *lines: str) -> None:
        if self._address is None:
            return
        address = self._address
        if address.startswith("@"):
            address = "\0" + address[1:]
        with (
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock,
            contextlib.suppress(OSError),  # systemd went away; nothing useful to do about it
        ):
            sock.sendto("\n".join(lines).encode(), address)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=draining")

    def start_watchdog(self) -> None:
        """Ping the watchdog from the event loop itself, so a stuck loop gets restarted."""
        if self.watchdog_usec is None or self._address is None:
            return
        interval = self.watchdog_usec / 1_000_000 / 2
        loop = asyncio.get_running_loop()

        def tick() -> None:
            self.send("WATCHDOG=1")
            self._watchdog = loop.call_later(interval, tick)

        tick()

    def stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None


def take_activated_socket(env: MutableMapping[str, str] | None = None) -> socket.socket | None:
    """The listening socket systemd passed (LISTEN_FDS), or None when not socket-activated.

    The variables are removed so that child processes do not believe they own it.
    """
    env = os.environ if env is None else env
    if env.get("LISTEN_PID") != str(os.getpid()):
        return None
    raw_count = env.get("LISTEN_FDS", "")
    count = int(raw_count) if raw_count.isdigit() else 0
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if count < 1:
        return None
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()  # not ours to close
        raise OSError("the socket systemd passed is not a Unix stream socket")
    # Passed fds arrive inheritable; the embedded redis-server must not hold it open.
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock
