"""The Prometheus endpoint (`metrics_listen`): a real sidecar, scraped over HTTP, its
figures checked against the calls just made through the Python client."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from madsidecar.config import ConfigError, load_config
from madsidecar_client import BlockingClient, ServerError

from .rawclient import RawConnection
from .support import RedisProcess, SidecarProcess, wait_until
from .test_cli import madsidecar

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def get(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    """(status, content type, body) of a GET."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.headers["Content-Type"], reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def scrape(port: int) -> Samples:
    status, content_type, body = get(port)
    assert status == 200 and content_type == CONTENT_TYPE_LATEST
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def metered(redis_server: RedisProcess) -> Iterator[tuple[SidecarProcess, int]]:
    port = free_port()
    side = SidecarProcess(
        redis_server.url, extra_args=["--metrics-listen", f"127.0.0.1:{port}"]
    ).start()
    try:
        yield side, port
    finally:
        side.stop()


def test_scrape_reflects_calls_of_every_capability(metered: tuple[SidecarProcess, int]) -> None:
    side, port = metered
    [line] = [line for line in side.log().splitlines() if "metrics_listening" in line]
    assert f"url='http://127.0.0.1:{port}/metrics'" in line
    with side.client() as client:
        sources = exercise(client)
        lock = client.call("lock.acquire", {"name": "m", "ttl_ms": 60_000})
        held = scrape(port)
        client.call("lock.release", {"name": "m", "token": lock["token"]})
        with pytest.raises(ServerError):
            client.call("no.such.method", {})
        after = scrape(port)

    assert value(held, "madsidecar_locks_held") == 1
    assert value(after, "madsidecar_locks_held") == 0
    assert value(held, "madsidecar_connections") == 1
    assert value(held, "madsidecar_redis_up") == 1
    assert value(after, "madsidecar_presence_entries") == 2

    requests = "madsidecar_requests_total"
    assert value(after, requests, method="cache.get", code="OK") == 4
    assert value(after, requests, method="cache.set", code="OK") == 1
    assert value(after, requests, method="ratelimit.hit", code="OK") == 3
    assert value(after, requests, method="lock.acquire", code="OK") == 1
    assert value(after, requests, method="session.create", code="OK") == 1
    assert value(after, requests, method="session.get", code="BAD_REQUEST") == 1
    assert value(after, requests, method="(unknown)", code="UNKNOWN_METHOD") == 1
    assert value(after, requests, method="presence.track", code="OK") == 2
    assert value(after, requests, method="pubsub.publish", code="OK") == 1
    assert value(after, "madsidecar_request_duration_seconds_count", method="cache.get") == 4
    inf = value(after, "madsidecar_request_duration_seconds_bucket", method="cache.get", le="+Inf")
    assert inf == 4
    assert value(after, "madsidecar_request_duration_seconds_sum", method="cache.get") > 0

    hits, misses = "madsidecar_cache_hits_total", "madsidecar_cache_misses_total"
    assert value(after, hits, level="l1") == sources.count("l1") >= 1
    assert value(after, hits, level="redis") == sources.count("l2") >= 1
    assert value(after, misses, level="redis") == sources.count(None) == 1
    assert value(after, misses, level="l1") == sources.count("l2") + sources.count(None)

    decisions = "madsidecar_ratelimit_decisions_total"
    assert value(after, decisions, decision="allowed") == 1
    assert value(after, decisions, decision="denied") == 2
    assert value(after, "madsidecar_sessions_created_total") == 1
    assert value(after, "madsidecar_pubsub_published_total") == 1
    assert value(after, "madsidecar_uptime_seconds") > 0
    build = [key for key in after if key[0] == "madsidecar_build_info"]
    assert len(build) == 1 and ("node_id", side_node_id(side)) in build[0][1]
    assert value(after, "process_open_fds") > 0, "the process collector is registered"


def exercise(client: BlockingClient) -> list[str | None]:
    """One or more calls of each capability; returns where the cache reads came from."""
    sources: list[str | None] = []
    for key in ("absent", "k", "k", "k"):
        entry = client.call("cache.get", {"key": key})
        sources.append(None if entry is None else entry["source"])
        if entry is None:
            client.call("cache.set", {"key": "k", "value": "v"})
    # The first read of k comes from Redis, the next from L1 (its feed is live once ready).
    assert sources == [None, "l2", "l1", "l1"]
    limited = {"key": "ip", "limit": 1, "window_ms": 60_000}
    answers = [client.call("ratelimit.hit", limited)["allowed"] for _ in range(3)]
    assert answers == [True, False, False]
    session = client.call("session.create", {"user_id": "u"})
    assert session["token"]
    with pytest.raises(ServerError):
        client.call("session.get", {"token": 5})
    client.call("presence.track", {"channel": "lobby", "key": "ann"})
    client.call("presence.track", {"channel": "lobby", "key": "bea"})
    client.call("pubsub.publish", {"channel": "news", "message": "hi"})
    return sources


def side_node_id(side: SidecarProcess) -> str:
    with side.client() as client:
        node_id: str = client.stats()["node_id"]
        return node_id


def test_redis_latency_appears_after_a_health_probe(metered: tuple[SidecarProcess, int]) -> None:
    _, port = metered
    # The gateway probes Redis every redis_health_interval_ms; no event tells us when.
    wait_until(lambda: value(scrape(port), "madsidecar_redis_latency_seconds") > 0, 5.0)


def test_other_paths_and_verbs_and_garbage(metered: tuple[SidecarProcess, int]) -> None:
    _, port = metered
    status, _, body = get(port, "/")
    assert status == 404 and "/metrics" in body
    assert get(port, "/metrics?x=1")[0] == 200
    assert raw_exchange(port, b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    head = raw_exchange(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")
    assert raw_exchange(port, b"\x00\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    # A request head larger than any scrape's is not answered: the connection is closed.
    assert raw_exchange(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 70_000) == b""


def test_an_idle_connection_is_closed_unanswered(metered: tuple[SidecarProcess, int]) -> None:
    _, port = metered
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        started = time.monotonic()
        assert sock.recv(1024) == b"", "closed, and nothing sent"
        assert 4.5 <= time.monotonic() - started < 20, "after the 5 s idle timeout"


def test_a_request_whose_client_left_counts_as_closed(metered: tuple[SidecarProcess, int]) -> None:
    side, port = metered
    with side.client() as holder:
        holder.call("lock.acquire", {"name": "m", "ttl_ms": 60_000})
        waiter = RawConnection(side.socket_path)
        waiter.request(1, "lock.acquire", {"name": "m", "wait_ms": 60_000})
        # The sidecar's state, not an event the test can wait on: poll the gauge.
        wait_until(lambda: value(scrape(port), "madsidecar_locks_waiting") == 1, 5.0)
        waiter.close()
        closed = {"method": "lock.acquire", "code": "CLOSED"}
        wait_until(lambda: value(scrape(port), "madsidecar_requests_total", **closed) == 1, 5.0)


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send `request`, read until the sidecar closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request)
        except ConnectionError:
            return b""
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def test_metrics_are_off_by_default(sidecar: SidecarProcess) -> None:
    listening = [
        conn
        for conn in psutil.Process(sidecar.pid).net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN
    ]
    assert listening == []
    assert "metrics_listening" not in sidecar.log()


def test_a_port_in_use_stops_the_start(redis_server: RedisProcess) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        side = SidecarProcess(
            redis_server.url, extra_args=["--metrics-listen", f"127.0.0.1:{port}"]
        )
        try:
            side.start(wait_ready=False)
            assert side.process is not None
            assert side.process.wait(30) == 1
            log = side.log()
        finally:
            side.stop()
    assert (
        f"cannot start: metrics_listen: cannot listen on 127.0.0.1:{port}: address already in use"
        in log
    )
    assert "Traceback" not in log


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("9464", "expected HOST:PORT"),
        (":9464", "expected a host name or address"),
        ("localhost:0", "the port must be a number from 1 to 65535"),
        ("localhost:99999", "the port must be a number from 1 to 65535"),
        ("localhost:http", "the port must be a number from 1 to 65535"),
        ("::1:9464", "an IPv6 address goes in brackets"),
    ],
)
def test_a_bad_metrics_listen_is_a_configuration_error(raw: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"metrics_listen": raw}, {})
    assert str(caught.value).startswith(f"metrics_listen: {problem}")
    assert f"got {raw!r} from --metrics-listen" in str(caught.value)


def test_metrics_listen_from_env_and_its_error_exit() -> None:
    good: dict[str, Any] = {"MADSIDECAR_METRICS_LISTEN": "[::1]:9464"}
    assert load_config({}, good).metrics_listen == "[::1]:9464"
    assert load_config({}, {}).metrics_listen is None
    result = madsidecar("run", env={"MADSIDECAR_METRICS_LISTEN": "nowhere"})
    assert result.returncode == 2
    assert "configuration error: metrics_listen: expected HOST:PORT" in result.stderr
    assert "from MADSIDECAR_METRICS_LISTEN" in result.stderr
