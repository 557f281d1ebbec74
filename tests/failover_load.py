"""Load for the failover tests: clients writing and reading in a loop on each sidecar,
every call timed, every acknowledged write remembered so that it can be read back."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from madsidecar_client import BlockingClient, MadsidecarError, UnavailableError

from .support import SidecarProcess, wait_until

REDIS_TIMEOUT_MS = 500


def start_sidecar(url: str, node: str, *extra: str) -> SidecarProcess:
    return SidecarProcess(
        url,
        extra_args=[
            "--node-id", node,
            "--redis-timeout-ms", str(REDIS_TIMEOUT_MS),
            "--redis-connect-timeout-ms", str(REDIS_TIMEOUT_MS),
            *extra,
        ],
    ).start()  # fmt: skip


@dataclass
class Load:
    """Writes and reads on one node in a loop, each call timed."""

    sidecar: SidecarProcess
    name: str
    stop: threading.Event = field(default_factory=threading.Event)
    longest_s: float = 0.0
    calls: int = 0
    refused: int = 0
    failures: list[str] = field(default_factory=list)
    acked: dict[str, tuple[int, float]] = field(default_factory=dict)  # key -> (value, at)

    def run(self) -> None:
        with BlockingClient(self.sidecar.socket_path, timeout=30) as client:
            n = 0
            while not self.stop.is_set():
                n += 1
                key = f"load:{self.name}:{n % 50}"
                started = time.monotonic()
                try:
                    client.call("cache.set", {"key": key, "value": n, "ttl_ms": 600_000})
                    self.acked[key] = (n, time.monotonic())
                    client.call("cache.get", {"key": key})
                    self.calls += 2
                except UnavailableError:
                    self.refused += 1  # the failover window: refused in time
                except MadsidecarError as exc:
                    self.failures.append(repr(exc))
                self.longest_s = max(self.longest_s, time.monotonic() - started)


@dataclass
class Loaded:
    loads: list[Load]
    threads: list[threading.Thread]

    def wait_for_calls(self, more: int) -> None:
        """Until every load made `more` calls from now: service is back everywhere."""
        before = [load.calls for load in self.loads]
        wait_until(
            lambda: all(load.calls >= n + more for load, n in zip(self.loads, before, strict=True)),
            10,
        )

    def assert_served(self, call_bound_s: float) -> None:
        """No call failed with anything but UNAVAILABLE, none took longer than the bound."""
        for load in self.loads:
            assert load.failures == [], load.failures
            assert load.longest_s <= call_bound_s, f"a call took {load.longest_s:.2f} s"

    def assert_kept(self, recovered_at: float, *sidecars: SidecarProcess) -> None:
        """Every write acknowledged after `recovered_at` reads back, on every node."""
        clients = [sidecar.client() for sidecar in sidecars]
        try:
            for load in self.loads:
                for key, (value, at) in load.acked.items():
                    if at > recovered_at:
                        for client in clients:
                            assert client.call("cache.get", {"key": key})["value"] == value
        finally:
            for client in clients:
                client.close()

    def stop(self) -> None:
        for load in self.loads:
            load.stop.set()
        for thread in self.threads:
            if thread.ident is not None:
                thread.join(30)


def start_load(*sidecars: SidecarProcess) -> Loaded:
    loads = [Load(sidecar, f"n{i}") for i, sidecar in enumerate(sidecars)]
    threads = [threading.Thread(target=load.run) for load in loads]
    for thread in threads:
        thread.start()
    return Loaded(loads, threads)
