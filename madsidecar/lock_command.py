"""`madsidecar lock NAME -- CMD`: flock(1) for the whole fleet."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from typing import Any

from madsidecar_client import Client, MadsidecarError

from .config import DEFAULT_SOCKET

TERM_GRACE_S = 10.0


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
    except MadsidecarError as exc:
        print(f"madsidecar lock: {exc} (socket {path})", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, command: list[str], path: str) -> int:
    client = await Client.connect(path, reconnect=False)
    lost = asyncio.Event()
    try:
        outcome: dict[str, Any] = await client.call(
            "lock.acquire",
            {"name": args.name, "ttl_ms": args.ttl_ms, "wait_ms": args.wait_ms},
        )
        if not outcome["acquired"]:
            print(
                f"madsidecar lock: {args.name!r} is held elsewhere (free in at most "
                f"{outcome.get('ttl_ms', 0)} ms); waited {args.wait_ms} ms"
                + ("" if args.wait_ms else ", pass --wait-ms to wait"),
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
            child = await asyncio.create_subprocess_exec(*command, env=env)
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


async def _supervise(child: asyncio.subprocess.Process, lost: asyncio.Event, name: str) -> int:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(signum, _forward, child, signum)
    exited = asyncio.ensure_future(child.wait())
    lock_lost = asyncio.ensure_future(lost.wait())
    await asyncio.wait((exited, lock_lost), return_when=asyncio.FIRST_COMPLETED)
    lock_lost.cancel()
    if not exited.done():
        print(f"madsidecar lock: lost {name!r}; sending SIGTERM to the command", file=sys.stderr)
        _forward(child, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exited), TERM_GRACE_S)
        except TimeoutError:
            _forward(child, signal.SIGKILL)
    returncode = await exited
    return 128 - returncode if returncode < 0 else returncode


def _forward(child: asyncio.subprocess.Process, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        child.send_signal(signum)
