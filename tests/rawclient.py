"""A raw frame-level client, for tests that must send what no SDK would."""

from __future__ import annotations

import socket
import struct
import time
from typing import Any

import msgpack


class RawConnection:
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._buf = bytearray()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, value: Any) -> None:
        body = msgpack.packb(value, use_bin_type=True)
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def request(self, msgid: int, method: str, args: dict[str, Any] | None = None) -> None:
        self.send([0, msgid, method, [args] if args is not None else []])

    def receive(self, timeout: float = 10.0) -> Any:
        """The next message; raises ConnectionError when the server closed the stream."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self._buf) >= 4:
                (length,) = struct.unpack_from(">I", self._buf)
                if len(self._buf) >= 4 + length:
                    body = bytes(self._buf[4 : 4 + length])
                    del self._buf[: 4 + length]
                    return msgpack.unpackb(body, raw=False, strict_map_key=False)
            self.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("closed by server")
            self._buf += chunk

    def call(self, msgid: int, method: str, args: dict[str, Any] | None = None) -> Any:
        self.request(msgid, method, args)
        return self.receive()

    def is_closed_by_server(self, timeout: float = 5.0) -> bool:
        try:
            self.receive(timeout)
        except ConnectionError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()
