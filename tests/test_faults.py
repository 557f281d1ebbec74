"""Faults from the outside: garbage, floods, stalled clients, Redis dying, SIGTERM."""

from __future__ import annotations

import contextlib
import os
import random
import re
import resource
import select
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator

import msgpack
import pytest
import redis

from madsidecar_client import BlockingClient, ShuttingDownError, UnavailableError

from .rawclient import RawConnection
from .support import RedisProcess, SidecarProcess, rss_bytes, running_sidecar, wait_until

MB = 1024 * 1024


def ping_latencies_ms(client: BlockingClient, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        assert client.ping() == "pong"
        samples.append((time.perf_counter() - started) * 1000)
    return sorted(samples)


def p99(sorted_samples: list[float]) -> float:
    return sorted_samples[int(len(sorted_samples) * 0.99) - 1]


class ReplyDrainer(threading.Thread):
    """Reads and counts whatever the server sends on a raw socket, so it never stalls."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.buffer = bytearray()
        self.messages: list[object] = []
        self.closed = threading.Event()
        self._arrived = threading.Condition()

    def run(self) -> None:
        try:
            while chunk := self.sock.recv(1 << 20):
                self.buffer += chunk
                with self._arrived:
                    self._split()
                    self._arrived.notify_all()
        except OSError:
            pass
        with self._arrived:
            self.closed.set()
            self._arrived.notify_all()

    def wait_for(self, message: object, timeout: float) -> bool:
        """Block until `message` has arrived; False on timeout or when the stream closed."""
        with self._arrived:
            return (
                self._arrived.wait_for(
                    lambda: message in self.messages or self.closed.is_set(), timeout
                )
                and message in self.messages
            )

    def _split(self) -> None:
        pos = 0
        while len(self.buffer) - pos >= 4:
            (length,) = struct.unpack_from(">I", self.buffer, pos)
            if len(self.buffer) - pos < 4 + length:
                break
            self.messages.append(msgpack.unpackb(bytes(self.buffer[pos + 4 : pos + 4 + length])))
            pos += 4 + length
        del self.buffer[:pos]


def garbage_frames(count: int, rng: random.Random) -> Iterator[bytes]:
    valid = msgpack.packb([0, 1, "ping", []])
    for i in range(count):
        kind = i % 4
        if kind == 0:
            body = rng.randbytes(rng.randint(1, 48))
        elif kind == 1:
            body = valid[: rng.randint(1, len(valid) - 1)]  # truncated msgpack
        elif kind == 2:
            body = b"\xc1" + rng.randbytes(rng.randint(0, 8))  # never-used type byte
        else:
            body = msgpack.packb(rng.choice([[0], {"a": 1}, [0, "x", 1, 2], "str", 5]))
        yield struct.pack(">I", len(body)) + body


def test_100k_garbage_frames_leave_others_served_and_memory_flat(
    sidecar: SidecarProcess,
) -> None:
    rng = random.Random(1234)
    with sidecar.client() as bystander:
        ping_latencies_ms(bystander, 200)
        rss_before = rss_bytes(sidecar.pid)
        attacker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        attacker.connect(sidecar.socket_path)
        drainer = ReplyDrainer(attacker)
        drainer.start()
        chunk: list[bytes] = []
        for index, frame in enumerate(garbage_frames(100_000, rng), 1):
            chunk.append(frame)
            if len(chunk) == 1000:
                attacker.sendall(b"".join(chunk))
                chunk = []
            if index % 10_000 == 0:
                assert bystander.ping() == "pong"
        # A last valid request proves the stream is still in step after all of it.
        valid = msgpack.packb([0, 4242, "ping", []])
        attacker.sendall(struct.pack(">I", len(valid)) + valid)
        assert drainer.wait_for([1, 4242, None, "pong"], 60), "no reply after the garbage"
        rss_after = rss_bytes(sidecar.pid)
        assert bystander.ping() == "pong"
    errors = [m for m in drainer.messages if isinstance(m, list) and m[0] in (1, 2)]
    assert len(errors) >= 100_000, "every garbage frame is answered"
    growth = (rss_after - rss_before) / MB
    print(f"RSS growth after 100k garbage frames: {growth:.1f} MB")
    assert growth <= 20
    attacker.close()


def test_4gib_header_is_refused_without_allocating(sidecar: SidecarProcess) -> None:
    rss_before = rss_bytes(sidecar.pid)
    conn = RawConnection(sidecar.socket_path)
    conn.send_raw(struct.pack(">I", 0xFFFFFFFF) + b"\0" * 65536)
    _kind, _name, (payload,) = conn.receive()
    assert payload["code"] == "FRAME_TOO_LARGE"
    assert conn.is_closed_by_server()
    assert rss_bytes(sidecar.pid) - rss_before < 8 * MB


def test_1000_concurrent_connections_are_served(sidecar: SidecarProcess) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    body = msgpack.packb([0, 1, "ping", []])
    frame = struct.pack(">I", len(body)) + body
    conns = []
    try:
        for _ in range(1000):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            sock.connect(sidecar.socket_path)
            conns.append(sock)
        for sock in conns:
            sock.sendall(frame)
        expected = msgpack.packb([1, 1, None, "pong"])
        for sock in conns:
            reply = b""
            while len(reply) < 4 + len(expected):
                chunk = sock.recv(64)
                assert chunk, "connection closed"
                reply += chunk
            assert reply[4:] == expected
        with sidecar.client() as client:
            assert client.stats()["connections"] == 1001
    finally:
        for sock in conns:
            sock.close()


def test_client_that_never_reads_cannot_hurt_anyone(sidecar: SidecarProcess) -> None:
    body = msgpack.packb([0, 1, "ping", []])
    frame = struct.pack(">I", len(body)) + body
    batch = frame * 5000
    rss_before = rss_bytes(sidecar.pid)
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(sidecar.socket_path)
    stalled.setblocking(False)
    sent_requests = 0
    pending = memoryview(batch)
    while sent_requests < 200_000:
        _, writable, _ = select.select([], [stalled], [], 1.0)
        if not writable:
            break  # unwritable for a second: the sidecar stopped reading us (backpressure)
        try:
            sent = stalled.send(pending)
        except BlockingIOError:
            continue
        pending = pending[sent:]
        if not pending:
            sent_requests += 5000
            pending = memoryview(batch)
    with sidecar.client() as bystander:
        latencies = ping_latencies_ms(bystander, 1000)
        rss_growth = (rss_bytes(sidecar.pid) - rss_before) / MB
        assert sent_requests < 200_000, "the sidecar kept reading a client that never reads"
        print(
            f"sent {sent_requests} unread requests; bystander ping p99 {p99(latencies):.2f} ms;"
            f" RSS growth {rss_growth:.1f} MB"
        )
        assert p99(latencies) < 10
        assert rss_growth <= 100
        stalled.close()
        assert bystander.ping() == "pong"


def test_redis_killed_and_restarted(redis_server: RedisProcess) -> None:
    side = SidecarProcess(redis_server.url, extra_args=["--redis-timeout-ms", "500"]).start()
    try:
        with side.client() as client:
            assert client.call("health")["ok"]
            redis_server.kill()
            assert client.ping() == "pong"
            took = wait_until(lambda: client.stats()["redis"]["connected"] is False, 2.0)
            print(f"stats showed redis.connected false after {took * 1000:.0f} ms")
            started = time.monotonic()
            with pytest.raises(UnavailableError) as caught:
                client.call("health")
            assert time.monotonic() - started < 0.5 + 0.2
            assert caught.value.retry_after_ms >= 0
            redis_server.start()
            took = wait_until(lambda: client.stats()["redis"]["connected"] is True, 10.0)
            print(f"recovered {took * 1000:.0f} ms after redis came back")
            assert client.call("health")["ok"]
        log = side.log()
        assert log.count("event='redis_disconnected'") == 1
        assert "event='redis_connected'" in log
    finally:
        side.stop()


def test_hung_redis_answers_unavailable_within_the_timeout(redis_server: RedisProcess) -> None:
    side = SidecarProcess(redis_server.url, extra_args=["--redis-timeout-ms", "300"]).start()
    assert redis_server.process is not None
    try:
        with side.client() as client:
            assert client.call("health")["ok"]
            redis_server.process.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                with pytest.raises(UnavailableError):
                    client.call("health")
                elapsed = time.monotonic() - started
                assert elapsed < 0.3 + 0.3, elapsed
                assert client.ping() == "pong"
            finally:
                redis_server.process.send_signal(signal.SIGCONT)
            wait_until(lambda: client.stats()["redis"]["connected"] is True, 10.0)
            wait_until(lambda: _health_ok(client), 10.0)
    finally:
        side.stop()


def _health_ok(client: BlockingClient) -> bool:
    try:
        return bool(client.call("health")["ok"])
    except UnavailableError:
        return False


def send_health_requests(path: str, count: int) -> tuple[socket.socket, ReplyDrainer]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    drainer = ReplyDrainer(sock)
    drainer.start()
    frames = b"".join(
        struct.pack(">I", len(body)) + body
        for body in (msgpack.packb([0, i, "health", []]) for i in range(count))
    )
    sock.sendall(frames)
    return sock, drainer


def test_sigterm_with_100_requests_in_flight_refuses_them_and_exits_0(
    redis_server: RedisProcess,
) -> None:
    side = SidecarProcess(
        redis_server.url, extra_args=["--shutdown-timeout-ms", "200", "--redis-timeout-ms", "4000"]
    ).start()
    assert redis_server.process is not None
    try:
        with side.client() as client:
            assert client.call("health")["ok"]
        redis_server.process.send_signal(signal.SIGSTOP)  # holds every health call in flight
        sock, drainer = send_health_requests(side.socket_path, 100)
        with side.client() as probe:
            wait_until(lambda: probe.stats()["requests"] >= 101, 5.0)
        started = time.monotonic()
        status = side.terminate(timeout=10)
        elapsed = time.monotonic() - started
        drainer.join(5)
        assert status == 0
        assert elapsed < 5.0
        replies = [m for m in drainer.messages if isinstance(m, list) and m[0] == 1]
        assert sorted(m[1] for m in replies) == list(range(100))
        assert all(m[2]["code"] == "SHUTTING_DOWN" for m in replies)
        notes = [m for m in drainer.messages if isinstance(m, list) and m[0] == 2]
        assert notes and notes[0][1] == "shutdown"
        sock.close()
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
        side.stop()


def test_sigterm_lets_in_flight_requests_finish_within_the_deadline(
    redis_server: RedisProcess,
) -> None:
    side = SidecarProcess(redis_server.url, extra_args=["--shutdown-timeout-ms", "3000"]).start()
    assert redis_server.process is not None
    try:
        redis_server.process.send_signal(signal.SIGSTOP)
        sock, drainer = send_health_requests(side.socket_path, 100)
        with side.client() as probe:
            wait_until(lambda: probe.stats()["requests"] >= 101, 5.0)
            side.signal(signal.SIGTERM)
            note = probe.next_notification(timeout=5)
            assert note is not None and note.name == "shutdown"
            with pytest.raises(ShuttingDownError):
                probe.call("stats")
        redis_server.process.send_signal(signal.SIGCONT)
        assert side.process is not None
        assert side.process.wait(10) == 0
        drainer.join(5)
        replies = [m for m in drainer.messages if isinstance(m, list) and m[0] == 1]
        assert sorted(m[1] for m in replies) == list(range(100))
        assert all(m[2] is None and m[3]["ok"] for m in replies), "all finished, none refused"
        sock.close()
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
        side.stop()


def embedded_redis_pid(log: str) -> int:
    match = re.search(r"event='embedded_redis_started' pid=(\d+)", log)
    assert match, log
    return int(match.group(1))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_embedded_redis_is_started_supervised_and_stopped() -> None:
    side = SidecarProcess(redis_url=None).start()
    try:
        with side.client() as client:
            assert client.call("health")["ok"]
            assert client.stats()["redis"]["embedded"] is True
            first = embedded_redis_pid(side.log())
            os.kill(first, signal.SIGKILL)
            wait_until(lambda: "event='embedded_redis_restarted'" in side.log(), 10.0)
            wait_until(lambda: _health_ok(client), 10.0)
        second = int(re.findall(r"embedded_redis_restarted' pid=(\d+)", side.log())[-1])
        assert second != first
        assert side.terminate() == 0
        assert not pid_alive(second), "the embedded redis-server stops with the sidecar"
    finally:
        side.stop()


def test_embedded_redis_dies_with_a_killed_sidecar() -> None:
    side = SidecarProcess(redis_url=None).start()
    try:
        pid = embedded_redis_pid(side.log())
        side.signal(signal.SIGKILL)
        assert side.process is not None
        side.process.wait(10)
        wait_until(lambda: not pid_alive(pid) or _zombie(pid), 5.0)
    finally:
        side.stop()


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_missing_redis_server_binary_is_one_clear_line() -> None:
    side = SidecarProcess(redis_url=None, extra_args=["--redis-server", "/nonexistent/redis"])
    try:
        side.start(wait_ready=False)
        assert side.process is not None
        assert side.process.wait(20) == 1
        lines = [line for line in side.log().splitlines() if "cannot start" in line]
        assert len(lines) == 1
        assert "--redis-url" in lines[0] and "apt-get install redis-server" in lines[0]
    finally:
        side.stop()


def test_a_client_that_crashes_mid_request_does_not_disturb_others(
    sidecar: SidecarProcess,
) -> None:
    with sidecar.client() as bystander:
        for _ in range(50):
            conn = RawConnection(sidecar.socket_path)
            body = msgpack.packb([0, 1, "health", []])
            conn.send_raw(struct.pack(">I", len(body)) + body[: len(body) // 2])
            conn.close()
            conn = RawConnection(sidecar.socket_path)
            conn.request(1, "health")
            conn.close()
        assert bystander.call("health")["ok"]
        # Closes are seen asynchronously by the server; every one must be processed.
        wait_until(lambda: bystander.stats()["connections"] == 1, 5.0)


def test_one_connections_flood_is_held_to_max_inflight(redis_server: RedisProcess) -> None:
    """With max_inflight 4, four waits fill the connection's slots: its fifth request is
    not even read until one of them ends, while another connection is served at once."""
    with (
        running_sidecar(redis_server, extra_args=["--max-inflight", "4"]) as side,
        side.client() as holder,
        side.client() as other,
    ):
        held = holder.call("lock.acquire", {"name": "busy"})
        flood = RawConnection(side.socket_path)
        for msgid in range(1, 5):
            flood.request(msgid, "lock.acquire", {"name": "busy", "wait_ms": 60_000})
        flood.request(5, "ping")
        assert other.ping() == "pong"  # served while the flood waits
        holder.call("lock.release", {"name": "busy", "token": held["token"]})
        # The release wakes one waiter (the others wait on, for the lock it now holds);
        # its slot freed, the ping is read and answered.
        first, second = flood.receive(), flood.receive()
        assert first[1] in (1, 2, 3, 4) and first[3]["acquired"], first
        assert second[1] == 5 and second[3] == "pong", second
        flood.close()


def test_redis_busy_or_loading_is_unavailable_not_internal(redis_server: RedisProcess) -> None:
    """Found by the chaos run: Redis answering LOADING (after a restart with AOF) gave
    clients INTERNAL. A reply that says "not now" is UNAVAILABLE with retry_after_ms; a
    script running past lua-time-limit (BUSY) shows the same path on demand."""
    direct = redis.Redis.from_url(redis_server.url)
    direct.config_set("lua-time-limit", 50)
    spinner = threading.Thread(target=spin_a_script, args=(redis_server.url,), daemon=True)
    with running_sidecar(redis_server) as side, side.client() as client:
        client.call("cache.set", {"key": "k", "value": 1})
        spinner.start()
        try:
            wait_until(lambda: redis_is_busy(direct), timeout=10)
            with pytest.raises(UnavailableError) as caught:
                client.call("cache.delete", {"keys": ["k"]})
            assert caught.value.retry_after_ms > 0
        finally:
            direct.script_kill()
            spinner.join(10)
        wait_until(lambda: redis_answers(client), timeout=10)
    direct.close()


def spin_a_script(url: str) -> None:
    with redis.Redis.from_url(url) as spinner, contextlib.suppress(redis.ResponseError):
        spinner.eval("while true do end", 0)  # until SCRIPT KILL


def redis_is_busy(direct: redis.Redis) -> bool:
    try:
        direct.ping()
    except redis.ResponseError as exc:
        return str(exc).startswith("BUSY")
    return False


def redis_answers(client: BlockingClient) -> bool:
    try:
        return bool(client.call("health")["ok"])
    except UnavailableError:
        return False
