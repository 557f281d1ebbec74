"""A dedicated Redis connection that receives pushes: key invalidations and pub/sub.

Client-side-caching invalidations use `CLIENT TRACKING ON REDIRECT <own id> BCAST PREFIX
...` on this very connection, then `SUBSCRIBE __redis__:invalidate`: tracking and its
redirect target live and die together, so the feed cannot break silently by losing a
separate tracking connection (redis#11767). Whether pushes really arrive is for the owner
to prove (the cache writes a probe key and waits for its invalidation).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
from collections.abc import Sequence
from typing import Any, Final, Protocol

import structlog
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from .redis_gateway import BACKOFF_FIRST_S, BACKOFF_MAX_S, RedisGateway

INVALIDATE_CHANNEL: Final = b"__redis__:invalidate"

log = structlog.get_logger("madsidecar.redis_feed")


class FeedHandler(Protocol):
    def feed_invalidated(self, keys: list[bytes] | None) -> None:
        """Keys changed (None: everything, after FLUSHALL/FLUSHDB)."""

    def feed_message(self, channel: bytes, data: bytes) -> None:
        """A pub/sub message on a subscribed channel."""

    def feed_up(self) -> None:
        """The feed is (re)connected and subscribed; pushes may have been missed."""

    def feed_down(self, reason: str) -> None:
        """The feed broke; pushes are being missed until `feed_up`."""


class RedisFeed:
    def add_tracking_prefix(self, prefix: str) -> None:
        """Track `prefix` too, from the next (re)connection on: call before `start`."""
        self._prefixes.append(prefix)

    def __init__(
        self,
        gateway: RedisGateway,
        handler: FeedHandler,
        tracking_prefixes: Sequence[str] = (),
        channels: Sequence[str] = (),
        name: str = "madsidecar-feed",
    ) -> None:
        self._gateway = gateway
        self._name = name
        self._handler = handler
        self._prefixes = list(tracking_prefixes)
        self._channels = list(channels)
        self._conn: AbstractConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closing_conn: asyncio.Future[None] | None = None
        self._pending_sends: set[asyncio.Future[Any]] = set()
        # Channels Redis confirmed on the live connection; callers waiting for others.
        self._confirmed: set[str] = set()
        self._awaiting: dict[str, list[asyncio.Future[None]]] = {}
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None

    def probe_keys(self, base: str) -> list[str]:
        """Keys whose invalidations prove every part of the feed live."""
        return [base]

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name="redis-feed")

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        """Receive `channel` too, from now on and after every reconnection. The future is
        done once Redis confirmed the subscription on the live connection: messages
        published after that reach us."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if channel in self._confirmed:
            done.set_result(None)
            return done
        self._awaiting.setdefault(channel, []).append(done)
        if channel not in self._channels:
            self._channels.append(channel)
            self._send_now("SUBSCRIBE", channel)
        return done

    def unsubscribe(self, channel: str) -> None:
        if channel not in self._channels:
            return
        self._channels.remove(channel)
        self._confirmed.discard(channel)
        self._send_now("UNSUBSCRIBE", channel)

    @property
    def channels(self) -> list[str]:
        return list(self._channels)

    def _send_now(self, *command: str) -> None:
        """On the live connection, if any (else the next one subscribes from the list).
        Confirmations come back as pushes, which the pump skips."""
        conn = self._conn
        if conn is not None:
            task = asyncio.ensure_future(conn.send_command(*command))
            self._pending_sends.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Future[Any]) -> None:
        self._pending_sends.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.restart(f"cannot send to the feed: {task.exception()}")

    async def close(self) -> None:
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait((self._task,), timeout=2.0)
        await self._drop_connection()

    def restart(self, reason: str) -> None:
        """Drop the connection (it proved useless); the supervisor opens a new one."""
        conn = self._conn
        if conn is not None:
            log.warning("redis_feed_restart", reason=reason)
            # The pump's read then fails and the supervisor opens a new connection.
            self._closing_conn = asyncio.ensure_future(conn.disconnect(nowait=True))

    async def _supervise(self) -> None:
        failures = 0
        while not self._closing:
            try:
                conn = await self._gateway.open_connection()
                self._conn = conn
                await self._subscribe(conn)
            except (RedisError, OSError, TimeoutError) as exc:
                await self._drop_connection()
                failures += 1
                if failures == 1:
                    self._handler.feed_down(f"cannot open the feed: {exc}")
                delay = min(BACKOFF_FIRST_S * 2 ** (failures - 1), BACKOFF_MAX_S)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                continue
            failures = 0
            self.reconnects += 1
            self._handler.feed_up()
            reason = await self._pump(conn)
            await self._drop_connection()
            if not self._closing:
                self._handler.feed_down(reason)
                failures = 1

    async def _subscribe(self, conn: AbstractConnection) -> None:
        async with asyncio.timeout(self._gateway.timeout_s):
            await conn.send_command("CLIENT", "SETNAME", self._name)
            await conn.read_response()
            await conn.send_command("CLIENT", "ID")
            own_id = await conn.read_response()
            if self._prefixes:
                prefixes = [word for p in self._prefixes for word in ("PREFIX", p)]
                await conn.send_command(
                    "CLIENT", "TRACKING", "ON", "REDIRECT", own_id, "BCAST", *prefixes
                )
                await conn.read_response()
            channels = [INVALIDATE_CHANNEL.decode(), *self._channels]
            await conn.send_command("SUBSCRIBE", *channels)
            for _ in channels:
                self._note_push(await conn.read_response())

    async def _pump(self, conn: AbstractConnection) -> str:
        """Deliver pushes until the connection breaks; returns why it broke."""
        while True:
            try:
                message: Any = await conn.read_response(timeout=math.inf)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                return f"feed connection lost: {exc}" if str(exc) else "feed connection lost"
            if not isinstance(message, list) or len(message) < 3 or message[0] != b"message":
                self._note_push(message)  # subscribe confirmations, pongs
                continue
            channel, data = message[1], message[2]
            try:
                if channel == INVALIDATE_CHANNEL:
                    self._handler.feed_invalidated(data)
                else:
                    self._handler.feed_message(channel, data)
            except Exception:
                log.exception("feed_handler_failed", channel=channel)

    def _note_push(self, message: Any) -> None:
        if isinstance(message, list) and len(message) >= 2 and message[0] == b"subscribe":
            channel = message[1].decode("utf-8", "surrogateescape")
            if channel in self._channels:
                self._confirmed.add(channel)
            for waiter in self._awaiting.pop(channel, ()):
                if not waiter.done():
                    waiter.set_result(None)

    async def _drop_connection(self) -> None:
        self._confirmed.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)


class _FeedPart:
    """Hears one of a `ClusterFeed`'s connections and reports to the whole."""

    def __init__(self, whole: ClusterFeed) -> None:
        self._whole = whole

    def feed_invalidated(self, keys: list[bytes] | None) -> None:
        self._whole.handler.feed_invalidated(keys)

    def feed_message(self, channel: bytes, data: bytes) -> None:
        self._whole.handler.feed_message(channel, data)

    def feed_up(self) -> None:
        self._whole.part_up(self)

    def feed_down(self, reason: str) -> None:
        self._whole.part_down(self, reason)


class ClusterFeed:
    """A Redis Cluster's feed, with `RedisFeed`'s surface: the channels on one connection
    to any master (cluster pub/sub reaches every node), key invalidations from a tracking
    connection on every master (each one only sees writes to its own slots). It is up
    when every part is; whenever the set of masters changes it goes down and comes up
    again, so its owner drops what it holds after every failover or new master."""

    def __init__(
        self,
        gateway: RedisGateway,
        handler: FeedHandler,
        tracking_prefixes: Sequence[str] = (),
        channels: Sequence[str] = (),
        name: str = "madsidecar-feed",
    ) -> None:
        self.handler = handler
        self._gateway = gateway
        self._name = name
        self._prefixes = list(tracking_prefixes)
        self._channel_part = _FeedPart(self)
        self._channel_feed = RedisFeed(gateway, self._channel_part, channels=channels, name=name)
        self._trackers: dict[RedisGateway, tuple[_FeedPart, RedisFeed]] = {}
        self._up: set[_FeedPart] = set()
        self._started = False
        self._reported_up = False
        self._closing: set[asyncio.Future[None]] = set()
        gateway.on_masters_changed(self._masters_changed)

    def add_tracking_prefix(self, prefix: str) -> None:
        self._prefixes.append(prefix)

    @property
    def connected(self) -> bool:
        return self._channel_feed.connected and all(
            feed.connected for _, feed in self._trackers.values()
        )

    @property
    def reconnects(self) -> int:
        return self._channel_feed.reconnects + sum(f.reconnects for _, f in self._trackers.values())

    @property
    def channels(self) -> list[str]:
        return self._channel_feed.channels

    def probe_keys(self, base: str) -> list[str]:
        return self._gateway.spread_keys(base)

    def start(self) -> None:
        self._started = True
        self._channel_feed.start()
        self._masters_changed()

    def subscribe(self, channel: str) -> asyncio.Future[None]:
        return self._channel_feed.subscribe(channel)

    def unsubscribe(self, channel: str) -> None:
        self._channel_feed.unsubscribe(channel)

    def restart(self, reason: str) -> None:
        self._channel_feed.restart(reason)
        for _, feed in self._trackers.values():
            feed.restart(reason)

    async def close(self) -> None:
        self._started = False
        feeds = [self._channel_feed, *(feed for _, feed in self._trackers.values())]
        self._trackers.clear()
        for feed in feeds:
            await feed.close()

    def part_up(self, part: _FeedPart) -> None:
        self._up.add(part)
        parts = {self._channel_part, *(p for p, _ in self._trackers.values())}
        if self._trackers and parts <= self._up and not self._reported_up:
            self._reported_up = True
            self.handler.feed_up()

    def part_down(self, part: _FeedPart, reason: str) -> None:
        self._up.discard(part)
        self._report_down(reason)

    def _report_down(self, reason: str) -> None:
        self._reported_up = False
        self.handler.feed_down(reason)

    def _masters_changed(self) -> None:
        if not self._started:
            return
        masters = self._gateway.masters()
        for gone in [node for node in self._trackers if node not in masters]:
            part, feed = self._trackers.pop(gone)
            self._up.discard(part)
            closing = asyncio.ensure_future(feed.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        added = [node for node in masters if node not in self._trackers]
        for node in added:
            part = _FeedPart(self)
            feed = RedisFeed(node, part, tracking_prefixes=self._prefixes, name=self._name)
            self._trackers[node] = (part, feed)
            feed.start()
        if added:
            # Writes to a new master's slots were not watched until its tracker is up.
            self._report_down("the cluster's masters changed")


def open_feed(
    gateway: RedisGateway,
    handler: FeedHandler,
    tracking_prefixes: Sequence[str] = (),
    channels: Sequence[str] = (),
    name: str = "madsidecar-feed",
) -> RedisFeed | ClusterFeed:
    """The feed for `gateway`: one connection, or for invalidations from a cluster, one
    per master (pub/sub alone needs a single connection to any node)."""
    if gateway.is_cluster and tracking_prefixes:
        return ClusterFeed(gateway, handler, tracking_prefixes, channels, name)
    return RedisFeed(gateway, handler, tracking_prefixes, channels, name)
