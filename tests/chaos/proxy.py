"""A TCP proxy between the sidecars and Redis that adds latency and stalls on command.

The chaos run would use `tc netem` in a network namespace, but this kernel has no
`sch_netem`; a proxy in user space gives the same faults to a TCP link: every chunk held
back by a delay, or all traffic paused for a while (what a burst of packet loss looks like
to TCP: nothing, then everything at once after the retransmission).

Run as `python -m tests.chaos.proxy LISTEN_PORT TARGET_PORT`; it prints `ready`, then
reads commands from stdin, one per line: `delay MS`, `stall MS`, `normal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass, field


@dataclass
class Faults:
    delay_s: float = 0.0
    resume: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.resume.set()


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, faults: Faults) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            if not chunk:
                writer.close()
                return
            await faults.resume.wait()
            if (wait := due - loop.time()) > 0:
                await asyncio.sleep(wait)
            writer.write(chunk)
            await writer.drain()

    delivery = asyncio.create_task(deliver())
    try:
        while chunk := await reader.read(65536):
            queue.put_nowait((loop.time() + faults.delay_s, chunk))
    except OSError:
        pass
    queue.put_nowait((0.0, b""))
    with contextlib.suppress(OSError):
        await delivery


async def serve(listen_port: int, target_port: int) -> None:
    faults = Faults()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            redis_r, redis_w = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(pump(client_r, redis_w, faults), pump(redis_r, client_w, faults))

    server = await asyncio.start_server(handle, "127.0.0.1", listen_port, reuse_address=True)
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        await apply(line.split(), faults)
    server.close()


async def apply(words: list[str], faults: Faults) -> None:
    if words[:1] == ["delay"]:
        faults.delay_s = int(words[1]) / 1000
    elif words[:1] == ["stall"]:
        faults.resume.clear()
        await asyncio.sleep(int(words[1]) / 1000)
        faults.resume.set()
    elif words[:1] == ["normal"]:
        faults.delay_s = 0.0
        faults.resume.set()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))
