"""The Python SDK's side of bench/sdks.py: the same workload the other SDKs' programs run.

MADSIDECAR_SOCKET=... python bench/sdk_ping.py --pings 20000 --pipelined 100000
"""

from __future__ import annotations

import argparse
import json
import time

import uvloop

from madsidecar_client import Client

WARMUP = 1000
WINDOW = 256


async def measure(pings: int, pipelined: int) -> dict[str, object]:
    client = await Client.connect()
    try:
        for _ in range(WARMUP):
            await client.ping()
        samples = []
        for _ in range(pings):
            start = time.perf_counter_ns()
            await client.ping()
            samples.append(time.perf_counter_ns() - start)
        samples.sort()
        batch: list[tuple[str, dict[str, object] | None]] = [("ping", None)] * WINDOW
        start = time.perf_counter_ns()
        sent = 0
        while sent < pipelined:
            size = min(WINDOW, pipelined - sent)
            await client.pipeline(batch[:size])
            sent += size
        elapsed = time.perf_counter_ns() - start
    finally:
        await client.close()
    return {
        "sdk": "python",
        "ping_p50_us": samples[len(samples) // 2] / 1000,
        "ping_p99_us": samples[min(len(samples) - 1, len(samples) * 99 // 100)] / 1000,
        "pipelined_per_s": pipelined * 1e9 / elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pings", type=int, default=20000)
    parser.add_argument("--pipelined", type=int, default=100000)
    args = parser.parse_args()
    print(json.dumps(uvloop.run(measure(args.pings, args.pipelined))))


if __name__ == "__main__":
    main()
