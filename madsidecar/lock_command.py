"""`madsidecar lock NAME -- CMD`: flock(1) for the whole fleet."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from madsidecar_client import BadRequestError, Client, MadsidecarError

from .config import DEFAULT_SOCKET

TERM_GRACE_S = 10.0
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def run_locked(args: argparse.Namespace) -> int:
    command = args.cmd
    if not command:
        print(
            "madsidecar lock: no command given (madsidecar lock NAME -- CMD ...)", file=sys.stderr
        )
        return 2
    path = args.socket or os.environ.get("MADSIDECAR_SOCKET") or DEFAULT_SOCKET
    try:
        return asyncio.run(_run(args, command, path))
    except BadRequestError as exc:
        print(f"madsidecar lock: {exc.message}", file=sys.stderr)
        return 2
    except MadsidecarError as exc:
        print(f"madsidecar lock: {exc} (socket {path})", file=sys.stderr)
        return 1


class _Child:
    """The command, once started; signals that arrive before that are remembered."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None
        self.own_group = not sys.stdin.isatty()  # a terminal job stays in our group
        self.pending: list[int] = []

    def signal(self, signum: int) -> None:
        if self.process is None:
            self.pending.append(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            if self.own_group:
                os.killpg(self.process.pid, signum)  # the whole pipeline, not just its shell
            else:
                self.process.send_signal(signum)


async def _run(args: argparse.Namespace, command: list[str], path: str) -> int:
    client = await Client.connect(path, reconnect=False)
    lost = asyncio.Event()
    child = _Child()
    loop = asyncio.get_running_loop()
    for signum in FORWARDED:
        loop.add_signal_handler(signum, child.signal, signum)
    try:
        outcome: dict[str, Any] = await client.call(
            "lock.acquire",
            {"name": args.name, "ttl_ms": args.ttl_ms, "wait_ms": args.wait_ms},
        )
        if child.pending:
            return 128 + child.pending[0]  # told to stop while waiting for the lock
        if not outcome["acquired"]:
            print(
                f"madsidecar lock: {args.name!r} is held elsewhere (its lease has "
                f"{outcome.get('ttl_ms', 0)} ms left and may be renewed); "
                f"waited {args.wait_ms} ms" + ("" if args.wait_ms else ", pass --wait-ms to wait"),
                file=sys.stderr,
            )
            return int(args.conflict_exit_code)
        token = outcome["token"]
        client.on(
            "lock.lost", lambda note: lost.set() if note.payload.get("token") == token else None
        )
        # The lease belongs to our connection: if it drops, the lock is gone too.
        client.on_disconnect = lambda exc: lost.set()
        env = {
            **os.environ,
            "MADSIDECAR_LOCK_FENCE": str(outcome["fence"]),
            "MADSIDECAR_LOCK_NAME": args.name,
        }
        try:
            child.process = await asyncio.create_subprocess_exec(
                *command, env=env, process_group=0 if child.own_group else None
            )
        except OSError as exc:
            print(f"madsidecar lock: cannot run {command[0]!r}: {exc.strerror}", file=sys.stderr)
            return 127 if isinstance(exc, FileNotFoundError) else 126
        status = await _supervise(child, lost, args.name)
        with contextlib.suppress(MadsidecarError):
            await client.call("lock.release", {"name": args.name, "token": token})
        return status
    finally:
        client.on_disconnect = None
        await client.close()


async def _supervise(child: _Child, lost: asyncio.Event, name: str) -> int:
    assert child.process is not None
    for signum in child.pending:
        child.signal(signum)
    exited = asyncio.ensure_future(child.process.wait())
    lock_lost = asyncio.ensure_future(lost.wait())
    await asyncio.wait((exited, lock_lost), return_when=asyncio.FIRST_COMPLETED)
    lock_lost.cancel()
    if not exited.done():
        print(f"madsidecar lock: lost {name!r}; sending SIGTERM to the command", file=sys.stderr)
        child.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exited), TERM_GRACE_S)
        except TimeoutError:
            child.signal(signal.SIGKILL)
    returncode = await exited
    status = 128 - returncode if returncode < 0 else returncode
    if lost.is_set() and status == 0:
        # The command may have finished its work without the lock: never report success.
        print(f"madsidecar lock: {name!r} was lost while the command ran", file=sys.stderr)
        return 1
    return status
