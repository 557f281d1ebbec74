"""Pub/sub through the sidecar: one Redis subscription per channel per node, local fan-out."""

from __future__ import annotations

import socket
import struct
import threading
import time
from typing import Any

import msgpack
import redis

from madsidecar_client import BlockingClient

from .support import RedisProcess, SidecarProcess, kill_redis_client

CHANNEL_KEY = "msc:ps:7:default:{}"


def next_message(client: BlockingClient, timeout: float = 5.0) -> Any:
    note = client.next_notification(timeout)
    assert note is not None, "no notification within the timeout"
    return note


def subscribers_in_redis(direct: redis.Redis, channel: str) -> int:
    return int(
        dict(direct.pubsub_numsub(CHANNEL_KEY.format(channel)))[
            CHANNEL_KEY.format(channel).encode()
        ]
    )


def test_publish_on_a_reaches_subscribers_on_both_nodes(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    with a.client() as pub, a.client() as near, b.client() as far, b.client() as other:
        for client in (near, far):
            assert client.call("pubsub.subscribe", {"channel": "news"}) == {"ok": True}
        other.call("pubsub.subscribe", {"channel": "sports"})
        sent = {"headline": "hi", "n": 2**40, "blob": b"\x00\xff"}
        assert pub.call("pubsub.publish", {"channel": "news", "message": sent}) == {"receivers": 2}
        for client in (near, far):
            note = next_message(client)
            assert note.name == "pubsub.message"
            assert note.payload == {"channel": "news", "message": sent}
        assert other.next_notification(0.2) is None, "another channel's subscriber got it"
        assert far.call("pubsub.unsubscribe", {"channel": "news"}) == {"ok": True}
        assert pub.call("pubsub.publish", {"channel": "news", "message": 1}) == {"receivers": 1}
        assert next_message(near).payload["message"] == 1
        assert far.next_notification(0.2) is None, "an unsubscribed client got a message"


def test_100_local_subscribers_share_one_redis_subscription(
    redis_server: RedisProcess, nodes: tuple[SidecarProcess, SidecarProcess]
) -> None:
    a, b = nodes
    direct = redis.Redis(unix_socket_path=redis_server.socket_path)
    subscribers = [b.client() for _ in range(100)]
    try:
        for client in subscribers:
            client.call("pubsub.subscribe", {"channel": "fanout"})
        assert subscribers_in_redis(direct, "fanout") == 1
        with a.client() as pub:
            for i in range(20):
                assert pub.call("pubsub.publish", {"channel": "fanout", "message": i}) == {
                    "receivers": 1
                }
        for client in subscribers:
            got = [next_message(client).payload["message"] for _ in range(20)]
            assert got == list(range(20)), "a subscriber missed or reordered messages"
        assert b.client().stats()["pubsub"]["delivered"] == 2000
    finally:
        for client in subscribers:
            client.close()
    # The last local subscriber gone (connections closed): the node unsubscribes.
    deadline = time.monotonic() + 5
    while subscribers_in_redis(direct, "fanout") != 0:
        assert time.monotonic() < deadline, "the node kept its Redis subscription"
        time.sleep(0.01)


def test_namespaces_have_their_own_channels(redis_server: RedisProcess) -> None:
    from .support import running_sidecar

    every_namespace = '[[policy]]\nnamespaces = ["*"]\n'
    with (
        running_sidecar(redis_server, config_toml=every_namespace) as side,
        side.client(namespace="ns1") as one,
        side.client(namespace="ns2") as two,
    ):
        one.call("pubsub.subscribe", {"channel": "c"})
        two.call("pubsub.subscribe", {"channel": "c"})
        with side.client(namespace="ns1") as pub:
            pub.call("pubsub.publish", {"channel": "c", "message": "for ns1"})
        assert next_message(one).payload["message"] == "for ns1"
        assert two.next_notification(0.2) is None


def raw_subscriber(path: str, channel: str) -> socket.socket:
    """A client that subscribes and then never reads its socket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(path)
    body = msgpack.packb([0, 1, "pubsub.subscribe", [{"channel": channel}]])
    sock.sendall(struct.pack(">I", len(body)) + body)
    return sock


def read_frames(sock: socket.socket, limit_s: float) -> list[Any]:
    sock.settimeout(0.5)
    buffer = b""
    frames = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 20)
        except TimeoutError:
            break
        if not data:
            break
        buffer += data
        while len(buffer) >= 4:
            (length,) = struct.unpack_from(">I", buffer)
            if len(buffer) < 4 + length:
                break
            frames.append(msgpack.unpackb(buffer[4 : 4 + length]))
            buffer = buffer[4 + length :]
    return frames


def test_a_subscriber_that_never_reads_loses_messages_not_memory(
    nodes: tuple[SidecarProcess, SidecarProcess],
) -> None:
    a, b = nodes
    slow = raw_subscriber(b.socket_path, "firehose")
    with a.client() as pub, b.client() as fast:
        fast.call("pubsub.subscribe", {"channel": "firehose"})
        deadline = time.monotonic() + 5
        while b.client().stats()["pubsub"]["subscriptions"] < 2:
            assert time.monotonic() < deadline
        blob = b"x" * 10_000
        count = 2000
        got: list[int] = []
        # The other subscriber reads all along, as a healthy client does; the publisher
        # keeps at most a few messages ahead of it, so a reader thread that the test
        # process's own load delays is never mistaken for one that does not read.
        ahead = threading.Semaphore(4)

        def read_all() -> None:
            for _ in range(count):
                got.append(next_message(fast, 10).payload["message"][0])
                ahead.release()

        reader = threading.Thread(target=read_all)
        reader.start()
        for i in range(count):
            assert ahead.acquire(timeout=10), f"the reading subscriber stalled at {i}"
            pub.call("pubsub.publish", {"channel": "firehose", "message": [i, blob]})
        reader.join(30)
        assert got == list(range(count)), "the reading subscriber lost messages"
        stats = b.client().stats()["pubsub"]
        assert stats["dropped"] > 0, "nothing was dropped for the subscriber that never reads"
        assert stats["dropped"] + stats["delivered"] == 2 * count
        # Once it reads, the slow subscriber is told how many it missed, before the next.
        frames = read_frames(slow, 5)
        pub.call("pubsub.publish", {"channel": "firehose", "message": ["last", b""]})
        frames += read_frames(slow, 2)
        notes = [f for f in frames if f[0] == 2]
        dropped = [f[2][0] for f in notes if f[1] == "pubsub.dropped"]
        assert dropped and dropped[0]["channel"] == "firehose"
        assert dropped[0]["dropped"] == stats["dropped"]
        assert notes[-1][1] == "pubsub.message" and notes[-1][2][0]["message"][0] == "last"
    slow.close()


def test_the_pubsub_connection_killed_subscriptions_come_back(
    redis_server: RedisProcess, nodes: tuple[SidecarProcess, SidecarProcess]
) -> None:
    a, b = nodes
    direct = redis.Redis(unix_socket_path=redis_server.socket_path)
    with a.client() as pub, b.client() as sub:
        sub.call("pubsub.subscribe", {"channel": "resilient"})
        kill_redis_client(direct, "madsidecar-pubsub:b")
        deadline = time.monotonic() + 5
        while pub.call("pubsub.publish", {"channel": "resilient", "message": "x"}) != {
            "receivers": 1
        }:
            assert time.monotonic() < deadline, "node B never subscribed again"
            time.sleep(0.01)
        assert next_message(sub).payload == {"channel": "resilient", "message": "x"}


def test_subscriptions_per_connection_are_bounded(redis_server: RedisProcess) -> None:
    from madsidecar_client import BadRequestError

    from .support import running_sidecar

    args = ["--pubsub-max-subscriptions", "3"]
    with running_sidecar(redis_server, extra_args=args) as side, side.client() as client:
        for i in range(3):
            client.call("pubsub.subscribe", {"channel": f"c{i}"})
        client.call("pubsub.subscribe", {"channel": "c1"})  # again: no new subscription
        try:
            client.call("pubsub.subscribe", {"channel": "c3"})
        except BadRequestError as exc:
            assert exc.argument == "channel" and "pubsub_max_subscriptions" in str(exc)
        else:
            raise AssertionError("a fourth subscription was accepted")
