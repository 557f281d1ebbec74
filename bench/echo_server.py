"""The ceiling: the least a uvloop MessagePack-RPC server over a Unix socket can do.

Same wire format as the sidecar (4-byte big-endian length, then one MessagePack value;
request [0, msgid, method, params], response [1, msgid, error, result]), same building
blocks (uvloop, asyncio.Protocol, msgpack), none of the sidecar's features: it parses the
frames, looks the method up in a dict, and answers [1, msgid, None, "pong"]. Every reply
produced by one read goes out in one write.

Run as a script (it imports nothing from this repository):
    python bench/echo_server.py --socket /tmp/echo.sock
It says READY=1 on $NOTIFY_SOCKET once it listens, and exits on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import struct
from typing import Any

import msgpack
import uvloop

HEADER = struct.Struct(">I")


def ping(params: Any) -> str:
    return "pong"


METHODS = {"ping": ping}


class EchoProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = bytearray()
        self.packer = msgpack.Packer(use_bin_type=True)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        size = len(buf)
        out = []
        pack = self.packer.pack
        while size - pos >= 4:
            (length,) = HEADER.unpack_from(buf, pos)
            end = pos + 4 + length
            if size < end:
                break
            _, msgid, method, params = msgpack.unpackb(buf[pos + 4 : end], use_list=False)
            handler = METHODS.get(method)
            if handler is None:
                body = pack((1, msgid, {"code": "UNKNOWN_METHOD"}, None))
            else:
                body = pack((1, msgid, None, handler(params)))
            out.append(HEADER.pack(len(body)))
            out.append(body)
            pos = end
        if pos:
            del buf[:pos]
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


def notify_ready() -> None:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(f"READY=1\nMAINPID={os.getpid()}".encode(), address)


async def serve(path: str) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await loop.create_unix_server(EchoProtocol, path, backlog=4096)
    notify_ready()
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    uvloop.run(serve(parser.parse_args().socket))


if __name__ == "__main__":
    main()
