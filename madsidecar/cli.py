"""`madsidecar run | ping | stats`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import __version__
from .config import DEFAULT_SOCKET, ConfigError, env_name, load_config, scalar_settings

DESCRIPTION = """\
madsidecar: one daemon per node that owns the Redis connection, an in-process cache,
locks, sessions, presence and rate limits. Services talk to it over a Unix socket.

  madsidecar run                  start it in the foreground (an embedded redis-server
                                  is started when no --redis-url is given)
  madsidecar ping                 check that a running sidecar answers
  madsidecar stats [--json]       print a running sidecar's counters: a summary, or
                                  the raw stats map as JSON
  madsidecar lock NAME -- CMD     run CMD while holding a fleet-wide lock (like flock(1))
"""

EX_TEMPFAIL = 75
LOCK_DESCRIPTION = """\
Run CMD while this process holds the lock NAME, fleet-wide. The sidecar renews the
lease while CMD runs, and releases it when CMD exits (or if this process dies).

  madsidecar lock migrations --wait-ms 600000 -- ./manage.py migrate

CMD gets MADSIDECAR_LOCK_FENCE (the fencing token: strictly greater than any issued
before for NAME) and MADSIDECAR_LOCK_NAME in its environment. The exit status is CMD's
(128+N if a signal N ended it). If the lock is lost while CMD runs, CMD gets SIGTERM.
If the lock is not had within --wait-ms, CMD does not run and the exit status is
--conflict-exit-code (75, EX_TEMPFAIL, by default).
"""

RUN_EPILOG = """\
Every flag can also be set as an environment variable MADSIDECAR_<NAME> (for example
--redis-url is MADSIDECAR_REDIS_URL) or as a key in the TOML file given by --config.
Flags win over the environment, which wins over the file. SIGTERM drains and exits,
SIGHUP reloads log_level, policy, max_inflight and shutdown_timeout_ms.
See docs/configuration.md for every setting.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="madsidecar",
        allow_abbrev=False,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"madsidecar {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        allow_abbrev=False,
        help="run the sidecar in the foreground",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", metavar="FILE", help="TOML configuration file")
    for setting in scalar_settings():
        if setting.metadata.get("secret"):
            continue  # secrets come from env or files, never from argv (visible in ps)
        flag = "--" + setting.name.replace("_", "-")
        run.add_argument(
            flag,
            dest=setting.name,
            metavar=setting.name.upper().split("_")[-1],
            help=f"{setting.metadata['help']} [env {env_name(setting.name)}]",
        )

    lock = commands.add_parser(
        "lock",
        usage="madsidecar lock [-h] [--ttl-ms N] [--wait-ms N] [--socket P] NAME -- CMD [ARGS...]",
        help="run a command while holding a fleet-wide lock",
        description=LOCK_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    lock.add_argument("name", help="the lock's name (1 to 512 bytes)")
    lock.add_argument("--ttl-ms", type=int, default=30_000, help="lease, renewed (default 30000)")
    lock.add_argument(
        "--wait-ms", type=int, default=0, help="how long to wait for the lock (default 0)"
    )
    lock.add_argument(
        "--conflict-exit-code",
        type=int,
        default=EX_TEMPFAIL,
        help=f"exit status when the lock was not had in time (default {EX_TEMPFAIL})",
    )
    lock.add_argument("--socket", help="socket path [env MADSIDECAR_SOCKET]")

    for name, summary in (("ping", "check that a sidecar answers"), ("stats", "print counters")):
        sub = commands.add_parser(name, help=summary)
        sub.add_argument(
            "--socket",
            help=f"socket path [env MADSIDECAR_SOCKET, default {DEFAULT_SOCKET}]",
        )
        sub.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
        if name == "stats":
            sub.add_argument(
                "--json", action="store_true", help="print the raw stats map as JSON instead"
            )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first "--" is the command `madsidecar lock` runs, untouched.
    command: list[str] = []
    if "--" in words:
        split = words.index("--")
        words, command = words[:split], words[split + 1 :]
    args = build_parser().parse_args(words)
    args.cmd = command
    if args.command == "run":
        return _run(args)
    if args.command == "lock":
        from .lock_command import run_locked

        return run_locked(args)
    return _talk(args)


def _run(args: argparse.Namespace) -> int:
    from .app import run_sidecar
    from .logs import configure_logging
    from .server import StartupError

    flags: dict[str, str | None] = {
        setting.name: getattr(args, setting.name, None) for setting in scalar_settings()
    }
    flags["config"] = args.config

    def load() -> Any:
        return load_config(flags, os.environ)

    try:
        config = load()
    except ConfigError as exc:
        print(f"madsidecar: configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, config.log_format)
    try:
        return run_sidecar(config, load)
    except StartupError as exc:
        print(f"madsidecar: cannot start: {exc}", file=sys.stderr)
        return 1


def _talk(args: argparse.Namespace) -> int:
    from madsidecar_client import BlockingClient, MadsidecarError

    path = args.socket or os.environ.get("MADSIDECAR_SOCKET") or DEFAULT_SOCKET
    try:
        with BlockingClient(path, timeout=args.timeout, reconnect=False) as client:
            if args.command == "ping":
                started = time.perf_counter()
                reply = client.ping()
                elapsed_ms = (time.perf_counter() - started) * 1000
                print(f"{reply} from {path} in {elapsed_ms:.2f} ms")
            elif args.json:
                print(json.dumps(client.stats(), indent=2, sort_keys=True, default=repr))
            else:
                from .stats_view import render

                print(render(client.stats()))
    except MadsidecarError as exc:
        print(
            f"madsidecar: no answer from {path}: {exc.message} "
            "(is it running? start it with `madsidecar run`, or pass --socket)",
            file=sys.stderr,
        )
        return 1
    return 0
