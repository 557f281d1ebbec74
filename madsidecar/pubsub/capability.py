"""pubsub.*: one Redis subscription per channel per node, fanned out to local subscribers.

Messages travel through Redis as the MessagePack of the value published, on
`<prefix>ps:<len(ns)>:<ns>:<channel>`; a node subscribes to a channel once, on its own
pub/sub connection, whatever the number of its local subscribers, and unsubscribes when
the last one leaves. A subscriber that does not read its socket (its replies are over the
high-water mark) has messages dropped, counted, and is told how many with a
`pubsub.dropped` notice before the next message it gets: never unbounded buffering.
Delivery is at most once, like Redis pub/sub: a message published while a node's pub/sub
connection is down does not reach that node's subscribers.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable
from typing import Any, Final

import msgpack
import structlog

from ..config import Config
from ..errors import BadRequest, Unavailable
from ..methods import Arg, CapabilityBase, Client, Method
from ..redis_feed import RedisFeed
from ..redis_gateway import RedisGateway

log = structlog.get_logger("madsidecar.pubsub")

NOTIFY_MESSAGE: Final = "pubsub.message"
NOTIFY_DROPPED: Final = "pubsub.dropped"


class Subscription:
    """One connection's subscription to one channel."""

    __slots__ = ("channel", "client", "dropped")

    def __init__(self, client: Client, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.dropped = 0


class PubSubStats:
    __slots__ = ("delivered", "dropped", "published", "received")

    def __init__(self) -> None:
        self.published = self.received = self.delivered = self.dropped = 0


class PubSub(CapabilityBase):
    group = "pubsub"

    def __init__(self, config: Config, gateway: RedisGateway) -> None:
        self._config = config
        self._gateway = gateway
        self._root = f"{config.key_prefix}ps:"
        self._feed = RedisFeed(
            gateway, self, name="madsidecar-pubsub:" + re.sub(r"[^\w.:-]", "_", config.node_id)
        )
        # Redis channel -> the local subscriptions to it.
        self._local: dict[str, dict[int, Subscription]] = {}
        # conn_id -> Redis channel -> its subscription.
        self._by_conn: dict[int, dict[str, Subscription]] = {}
        self._stats = PubSubStats()

    def methods(self) -> Iterable[Method]:
        channel = Arg("channel", "name")
        return (
            Method("pubsub.publish", self.publish, (channel, Arg("message", "any"))),
            Method("pubsub.subscribe", self.subscribe, (channel,)),
            Method("pubsub.unsubscribe", self.unsubscribe, (channel,)),
        )

    async def start(self) -> None:
        self._feed.start()

    async def close(self) -> None:
        await self._feed.close()

    def stats(self) -> dict[str, Any]:
        s = self._stats
        return {
            "pubsub": {
                "channels": len(self._local),
                "subscriptions": sum(len(subs) for subs in self._local.values()),
                "published": s.published,
                "received": s.received,
                "delivered": s.delivered,
                "dropped": s.dropped,
            }
        }

    # -- methods --------------------------------------------------------------------------

    async def publish(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        data = msgpack.packb(args["message"], use_bin_type=True)
        receivers = await self._gateway.execute(
            "PUBLISH", self._channel(client.namespace, args["channel"]), data
        )
        self._stats.published += 1
        return {"receivers": int(receivers)}

    def subscribe(self, client: Client, args: dict[str, Any]) -> Any:
        channel = self._channel(client.namespace, args["channel"])
        mine = self._by_conn.setdefault(client.conn_id, {})
        if channel in mine:
            return {"ok": True}
        if len(mine) >= self._config.pubsub_max_subscriptions:
            raise BadRequest(
                f"pubsub.subscribe: at most {self._config.pubsub_max_subscriptions} "
                "channels per connection (pubsub_max_subscriptions)",
                argument="channel",
            )
        subscription = Subscription(client, args["channel"])
        mine[channel] = subscription
        local = self._local.get(channel)
        if local is None:
            local = self._local[channel] = {}
        local[client.conn_id] = subscription
        return self._confirmed(self._feed.subscribe(channel))

    async def _confirmed(self, subscribed: asyncio.Future[None]) -> dict[str, Any]:
        """Answered once Redis confirmed the node's subscription: a message published
        after the reply reaches the subscriber."""
        try:
            async with asyncio.timeout(self._gateway.timeout_s):
                await asyncio.shield(subscribed)
        except TimeoutError:
            raise Unavailable(
                "pubsub.subscribe: redis did not confirm the subscription in time; it stays "
                "registered and takes effect when the pub/sub connection is back",
                retry_after_ms=int(self._gateway.timeout_s * 1000),
            ) from None
        return {"ok": True}

    def unsubscribe(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        self._drop(client.conn_id, self._channel(client.namespace, args["channel"]))
        return {"ok": True}

    def connection_closed(self, client: Client) -> None:
        for channel in list(self._by_conn.get(client.conn_id, ())):
            self._drop(client.conn_id, channel)

    # -- delivery -------------------------------------------------------------------------

    def feed_message(self, channel: bytes, data: bytes) -> None:
        local = self._local.get(channel.decode("utf-8", "surrogateescape"))
        if not local:
            return
        self._stats.received += 1
        try:
            message = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except Exception:
            log.warning("pubsub_undecodable_message", channel=channel, size=len(data))
            return
        for subscription in list(local.values()):
            self._deliver(subscription, message)

    def _deliver(self, subscription: Subscription, message: Any) -> None:
        client = subscription.client
        if client.closed:
            return
        if client.congested:
            subscription.dropped += 1
            self._stats.dropped += 1
            return
        if subscription.dropped:
            client.notify(
                NOTIFY_DROPPED, {"channel": subscription.channel, "dropped": subscription.dropped}
            )
            subscription.dropped = 0
        client.notify(NOTIFY_MESSAGE, {"channel": subscription.channel, "message": message})
        self._stats.delivered += 1

    def feed_invalidated(self, keys: list[bytes] | None) -> None:
        return None

    def feed_up(self) -> None:
        return None

    def feed_down(self, reason: str) -> None:
        if self._local:
            log.warning("pubsub_messages_lost", reason=reason, channels=len(self._local))

    # -- bookkeeping ----------------------------------------------------------------------

    def _channel(self, namespace: str, channel: str) -> str:
        return f"{self._root}{len(namespace)}:{namespace}:{channel}"

    def _drop(self, conn_id: int, channel: str) -> None:
        mine = self._by_conn.get(conn_id)
        if mine is None or mine.pop(channel, None) is None:
            return
        if not mine:
            del self._by_conn[conn_id]
        local = self._local.get(channel)
        if local is not None:
            local.pop(conn_id, None)
            if not local:
                del self._local[channel]
                self._feed.unsubscribe(channel)
