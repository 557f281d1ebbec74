"""A client the chaos run kills with SIGKILL in the middle of a call.

`python -m tests.chaos.crasher SOCKET CHANNEL KEY LOCK BLOCKER`: tracks KEY in CHANNEL,
takes LOCK, prints `ready REF`, then waits on BLOCKER (a lock held for the whole run), so
the kill lands while a request is in flight.
"""

from __future__ import annotations

import sys

from madsidecar_client import BlockingClient


def main(socket_path: str, channel: str, key: str, lock: str, blocker: str) -> None:
    with BlockingClient(socket_path, reconnect=False, timeout=10) as client:
        ref = client.call("presence.track", {"channel": channel, "key": key})["ref"]
        if not client.call("lock.acquire", {"name": lock, "ttl_ms": 30_000})["acquired"]:
            raise SystemExit(f"{lock} was not free")
        print(f"ready {ref}", flush=True)
        client.call("lock.acquire", {"name": blocker, "wait_ms": 60_000}, timeout=120)


if __name__ == "__main__":
    main(*sys.argv[1:6])
