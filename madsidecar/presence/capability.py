"""presence.*: who is online in which channel, across every node (Phoenix Presence).

Every channel's entries live in one Redis hash, `ref -> [key, entry]`, each ref starting
with its node's tag; a counter gives the channel's version. Every change is one script
that writes, increments the version and publishes the diff, so diffs carry versions that
rise by one. A node keeps one lease key, refreshed by its heartbeat (one command, however
many entries it holds); readers skip entries of nodes whose lease lapsed, and a sweeper
(any live node, claimed so only one does it) removes them and publishes their leaves.

Entries belong to the connection that tracked them: they leave when it closes (after
`presence_leave_grace_ms`). Subscriptions are one Redis subscription per channel per node,
fanned out locally; a gap in the versions a node receives, or its pub/sub connection
being re-made, sends its subscribers a fresh `presence.state`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Iterable
from typing import Any, Final

import msgpack
import structlog

from ..background import BackgroundWork
from ..config import Config
from ..errors import BadRequest, Unavailable
from ..hash_tags import escape_tag
from ..methods import Arg, CapabilityBase, Client, Method
from ..redis_feed import RedisFeed
from ..redis_gateway import RedisGateway
from ..redis_scripts import LuaScript

log = structlog.get_logger("madsidecar.presence")

SCRIPTS: Final = ("track", "untrack", "update", "list", "sweep", "sweep_channel")
NOTIFY_DIFF: Final = "presence.diff"
NOTIFY_STATE: Final = "presence.state"
SWEEP_CLAIM_MS: Final = 30_000


class Tracked:
    """An entry this node holds for one of its connections."""

    __slots__ = ("channel", "entries", "key", "namespace", "ref", "stored", "version_key")

    def __init__(
        self, namespace: str, channel: str, key: str, ref: str, stored: bytes, keys: tuple[str, str]
    ) -> None:
        self.namespace = namespace
        self.channel = channel  # the client's channel name
        self.key = key
        self.ref = ref
        self.stored = stored  # as in Redis: MessagePack [key, entry]
        self.entries, self.version_key = keys


class Watched:
    """A channel this node's clients subscribe to: the Redis subscription's state."""

    __slots__ = ("channel", "entries", "namespace", "subscribers", "version", "version_key")

    def __init__(self, namespace: str, channel: str, entries: str, version_key: str) -> None:
        self.namespace = namespace
        self.channel = channel
        self.entries = entries
        self.version_key = version_key
        self.subscribers: dict[int, Client] = {}
        self.version = 0  # the last version delivered to the subscribers


class Presence(CapabilityBase):
    group = "presence"

    def __init__(self, config: Config, gateway: RedisGateway) -> None:
        self._config = config
        self._gateway = gateway
        prefix = config.key_prefix
        # One tag per run of the process, not per node id: a sidecar restarted within the
        # node timeout must not renew the lease of the entries its dead run left behind.
        run_id = secrets.token_hex(8)
        self._tag = hashlib.sha1(f"{config.node_id}\0{run_id}".encode()).hexdigest()[:12]
        self._root = f"{prefix}pr:"
        self._diff_root = f"{prefix}prd:"
        self._lease = self._lease_of(self._tag)
        self._my_channels = self._channels_of(self._tag)
        self._registry = f"{prefix}pr:nodes"
        # Entries keys this node's channel list in Redis is known to hold.
        self._registered: set[str] = set()
        self._scripts = {name: LuaScript.beside(__name__, f"{name}.lua") for name in SCRIPTS}
        self._feed = RedisFeed(
            gateway, self, name="madsidecar-presence:" + re.sub(r"[^\w.:-]", "_", config.node_id)
        )
        self._tracked: dict[int, dict[str, Tracked]] = {}  # conn_id -> ref -> entry
        self._watched: dict[str, Watched] = {}  # diff channel -> its local subscribers
        self._watching: dict[int, set[str]] = {}  # conn_id -> diff channels
        self._tasks: list[asyncio.Task[None]] = []
        self._background = BackgroundWork("presence_background_work_failed")
        self.heartbeats = 0

    def methods(self) -> Iterable[Method]:
        channel = Arg("channel", "name")
        meta = Arg("meta", "any", None)
        ref = Arg("ref", "str")
        return (
            Method("presence.track", self.track, (channel, Arg("key", "name"), meta)),
            Method("presence.update", self.update, (channel, ref, Arg("meta", "any"))),
            Method("presence.untrack", self.untrack, (channel, ref)),
            Method("presence.list", self.list_members, (channel,)),
            Method("presence.count", self.count, (channel,)),
            Method("presence.subscribe", self.subscribe, (channel,)),
            Method("presence.unsubscribe", self.unsubscribe, (channel,)),
        )

    async def start(self) -> None:
        self._feed.start()
        self._tasks = [
            asyncio.create_task(self._heartbeat(), name="presence-heartbeat"),
            asyncio.create_task(self._sweep_loop(), name="presence-sweeper"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        await self._background.drain(self._gateway.timeout_s * 2)
        await self._feed.close()

    def stats(self) -> dict[str, Any]:
        return {
            "presence": {
                "tracked": sum(len(entries) for entries in self._tracked.values()),
                "channels_watched": len(self._watched),
                "subscribers": sum(len(w.subscribers) for w in self._watched.values()),
                "heartbeats": self.heartbeats,
            }
        }

    # -- methods --------------------------------------------------------------------------

    async def track(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        mine = self._tracked.setdefault(client.conn_id, {})
        if len(mine) >= self._config.presence_max_tracked:
            raise BadRequest(
                f"presence.track: at most {self._config.presence_max_tracked} entries per "
                "connection (presence_max_tracked)",
                argument="channel",
            )
        namespace, channel = client.namespace, args["channel"]
        ref = f"{self._tag}.{secrets.token_urlsafe(9)}"
        stored = self._stored(args["key"], ref, args["meta"])
        entries, version_key, _ = self._keys(namespace, channel)
        tracked = Tracked(namespace, channel, args["key"], ref, stored, (entries, version_key))
        mine[ref] = tracked  # before the write: a close meanwhile still untracks it
        try:
            await self._write(tracked)
        except BaseException:
            mine.pop(ref, None)  # the caller is told it failed: never write it later
            raise
        return {"ref": ref}

    async def update(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        tracked = self._tracked.get(client.conn_id, {}).get(args["ref"])
        if tracked is None or tracked.channel != args["channel"]:
            return {"updated": False}
        entries, version_key, diff_channel = self._keys(client.namespace, args["channel"])
        stored = self._stored(tracked.key, tracked.ref, args["meta"])
        version = await self._scripts["update"].call(
            self._gateway, [entries, version_key], [tracked.ref, stored, diff_channel]
        )
        if version:
            tracked.stored = stored
        return {"updated": bool(version)}

    async def untrack(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        mine = self._tracked.get(client.conn_id, {})
        tracked = mine.get(args["ref"])
        if tracked is None or tracked.channel != args["channel"]:
            return {"removed": False}
        del mine[tracked.ref]
        return {"removed": await self._remove(client.namespace, tracked)}

    async def list_members(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        _, members = await self._list(client.namespace, args["channel"])
        return {"members": members}

    async def count(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        _, members = await self._list(client.namespace, args["channel"])
        return {"keys": len(members), "refs": sum(len(refs) for refs in members.values())}

    async def subscribe(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        namespace, channel = client.namespace, args["channel"]
        entries, version_key, diff_channel = self._keys(namespace, channel)
        watching = self._watching.get(client.conn_id, ())
        limit = self._config.pubsub_max_subscriptions
        if diff_channel not in watching and len(watching) >= limit:
            raise BadRequest(
                f"presence.subscribe: at most {limit} channels per connection "
                "(pubsub_max_subscriptions)",
                argument="channel",
            )
        watched = self._watched.get(diff_channel)
        if watched is None:
            watched = self._watched[diff_channel] = Watched(
                namespace, channel, entries, version_key
            )
        watched.subscribers[client.conn_id] = client
        self._watching.setdefault(client.conn_id, set()).add(diff_channel)
        try:
            async with asyncio.timeout(self._gateway.timeout_s):
                await asyncio.shield(self._feed.subscribe(diff_channel))
        except TimeoutError:
            raise Unavailable(
                "presence.subscribe: redis did not confirm the subscription in time",
                retry_after_ms=int(self._gateway.timeout_s * 1000),
            ) from None
        # Listed after the subscription is live: every later diff reaches us.
        version, members = await self._list(namespace, channel)
        watched.version = max(watched.version, version)
        return {"members": members, "version": version}

    def unsubscribe(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        _, _, diff_channel = self._keys(client.namespace, args["channel"])
        self._unwatch(client.conn_id, diff_channel)
        return {"ok": True}

    def connection_closed(self, client: Client) -> None:
        for diff_channel in list(self._watching.get(client.conn_id, ())):
            self._unwatch(client.conn_id, diff_channel)
        tracked = self._tracked.pop(client.conn_id, None)
        if not tracked:
            return
        grace_s = self._config.presence_leave_grace_ms / 1000
        namespace = client.namespace
        for entry in tracked.values():
            if grace_s > 0:
                asyncio.get_running_loop().call_later(grace_s, self._remove_later, namespace, entry)
            else:
                self._remove_later(namespace, entry)

    def _remove_later(self, namespace: str, entry: Tracked) -> None:
        self._background.start(self._remove(namespace, entry))

    # -- diffs ----------------------------------------------------------------------------

    def feed_message(self, channel: bytes, data: bytes) -> None:
        watched = self._watched.get(channel.decode("utf-8", "surrogateescape"))
        if watched is None:
            return
        version_text, joins_text, packed = data.split(b":", 2)
        version = int(version_text)
        if version <= watched.version:
            return  # already in the state a subscriber was given
        if version != watched.version + 1:
            # A diff went missing: everyone watching gets the whole state again.
            self._background.start(self._send_state(watched))
            return
        watched.version = version
        diff = _diff(packed, int(joins_text))
        payload = {"channel": watched.channel, "version": version, **diff}
        for subscriber in list(watched.subscribers.values()):
            if not subscriber.closed:
                subscriber.notify(NOTIFY_DIFF, payload)

    def feed_up(self) -> None:
        # Diffs may have been missed while the connection was down.
        for watched in list(self._watched.values()):
            self._background.start(self._send_state(watched))

    def feed_down(self, reason: str) -> None:
        if self._watched:
            log.warning("presence_diffs_interrupted", reason=reason)

    def feed_invalidated(self, keys: list[bytes] | None) -> None:
        return None

    async def _send_state(self, watched: Watched) -> None:
        version, members = await self._list(watched.namespace, watched.channel)
        watched.version = version
        payload = {"channel": watched.channel, "version": version, "members": members}
        for subscriber in list(watched.subscribers.values()):
            if not subscriber.closed:
                subscriber.notify(NOTIFY_STATE, payload)

    # -- heartbeat and sweeper ------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Two commands per interval, whatever the number of entries: the lease, and the
        node's name in the registry the sweepers read. The name missing from the registry
        means this node was swept (a partition longer than presence_node_timeout_ms) or
        Redis lost its data: every entry still held here is written again."""
        timeout_ms = self._config.presence_node_timeout_ms
        while True:
            await self._gateway.wait_connected()
            try:
                await self._gateway.execute(
                    "SET", self._lease, self._config.node_id, "PX", timeout_ms
                )
                missing = await self._gateway.execute("SADD", self._registry, self._tag)
                if missing and self.heartbeats and any(self._tracked.values()):
                    await self._write_all_again()
            except Exception as exc:
                log.warning("presence_heartbeat_failed", reason=str(exc))
                await asyncio.sleep(0.1)
                continue
            self.heartbeats += 1
            await asyncio.sleep(timeout_ms / 3000)

    async def _write_all_again(self) -> None:
        held = [entry for entries in self._tracked.values() for entry in entries.values()]
        log.warning("presence_entries_restored", entries=len(held))
        self._registered.clear()
        for entry in held:
            await self._write(entry)

    async def _sweep_loop(self) -> None:
        interval = self._config.presence_sweep_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self._sweep_once()
            except Exception as exc:
                log.warning("presence_sweep_failed", reason=str(exc))

    async def _sweep_once(self) -> None:
        for raw in await self._gateway.execute("SMEMBERS", self._registry):
            tag = raw.decode()
            if tag == self._tag or await self._gateway.execute("EXISTS", self._lease_of(tag)):
                continue
            channels = await self._scripts["sweep"].call(
                self._gateway,
                [self._lease_of(tag), self._channels_of(tag), f"{self._root}sweep:{{{tag}}}"],
                [self._tag, SWEEP_CLAIM_MS],
            )
            if channels is None:  # alive again, or another node is sweeping it
                continue
            removed = 0
            # One script per channel: in a cluster each channel's keys have a slot of their
            # own. A sweeper that dies midway leaves the rest to the next, after the claim.
            for entries, diff_channel in zip(channels[::2], channels[1::2], strict=True):
                removed += await self._scripts["sweep_channel"].call(
                    self._gateway,
                    [entries, entries[:-1] + b"v"],
                    [tag, diff_channel],
                )
            await self._gateway.execute("DEL", self._channels_of(tag))
            await self._gateway.execute("SREM", self._registry, tag)
            log.warning("presence_node_swept", node_tag=tag, entries=removed)

    # -- internals ------------------------------------------------------------------------

    def _keys(self, namespace: str, channel: str) -> tuple[str, str, str]:
        """The channel's entries and version keys (one hash slot), and its diff channel."""
        scope = f"{len(namespace)}:{namespace}:{channel}"
        base = f"{self._root}c:{{{escape_tag(scope)}}}:"
        return base + "e", base + "v", self._diff_root + scope

    def _lease_of(self, node_tag: str) -> str:
        return f"{self._root}node:{{{node_tag}}}"

    def _channels_of(self, node_tag: str) -> str:
        """The node's channel list: its slot is the node's lease's."""
        return f"{self._root}nodech:{{{node_tag}}}"

    def _stored(self, key: str, ref: str, meta: Any) -> bytes:
        entry = {
            "ref": ref,
            "meta": {} if meta is None else meta,
            "node_id": self._config.node_id,
            "online_at_ms": int(time.time() * 1000),
        }
        stored: bytes = msgpack.packb([key, entry], use_bin_type=True)
        if len(stored) > self._config.presence_max_meta_bytes:
            raise BadRequest(
                f"presence: meta is over {self._config.presence_max_meta_bytes} bytes "
                "(presence_max_meta_bytes)",
                argument="meta",
            )
        return stored

    async def _write(self, tracked: Tracked) -> None:
        _, _, diff_channel = self._keys(tracked.namespace, tracked.channel)
        if tracked.entries not in self._registered:
            # Listed before the entry is written, so a sweeper after a crash finds it.
            await self._gateway.execute("HSET", self._my_channels, tracked.entries, diff_channel)
            self._registered.add(tracked.entries)
        await self._scripts["track"].call(
            self._gateway,
            [tracked.entries, tracked.version_key],
            [tracked.ref, tracked.stored, diff_channel],
        )

    async def _remove(self, namespace: str, tracked: Tracked) -> bool:
        _, _, diff_channel = self._keys(namespace, tracked.channel)
        version = await self._scripts["untrack"].call(
            self._gateway, [tracked.entries, tracked.version_key], [tracked.ref, diff_channel]
        )
        return bool(version)

    async def _list(self, namespace: str, channel: str) -> tuple[int, dict[str, list[Any]]]:
        entries, version_key, _ = self._keys(namespace, channel)
        reply = await self._scripts["list"].call(self._gateway, [entries, version_key])
        refs, stored_values = reply[1::2], reply[2::2]
        live = await self._live_nodes({ref.partition(b".")[0].decode() for ref in refs})
        members: dict[str, list[Any]] = {}
        for ref, stored in zip(refs, stored_values, strict=True):
            if ref.partition(b".")[0].decode() in live:
                key, entry = msgpack.unpackb(stored, raw=False, strict_map_key=False)
                members.setdefault(key, []).append(entry)
        return int(reply[0]), members

    async def _live_nodes(self, tags: set[str]) -> set[str]:
        """The nodes among `tags` whose lease is current (this one always is)."""
        others = sorted(tags - {self._tag})
        leases = await asyncio.gather(
            *(self._gateway.execute("EXISTS", self._lease_of(tag)) for tag in others)
        )
        return {self._tag} | {tag for tag, held in zip(others, leases, strict=True) if held}

    def _unwatch(self, conn_id: int, diff_channel: str) -> None:
        watching = self._watching.get(conn_id)
        if watching is not None:
            watching.discard(diff_channel)
            if not watching:
                del self._watching[conn_id]
        watched = self._watched.get(diff_channel)
        if watched is None:
            return
        watched.subscribers.pop(conn_id, None)
        if not watched.subscribers:
            del self._watched[diff_channel]
            self._feed.unsubscribe(diff_channel)


def _diff(packed: bytes, joins: int) -> dict[str, dict[str, list[Any]]]:
    """`{joins: {key: [entry]}, leaves: {key: [entry]}}` from the stored values on the
    wire: the first `joins` of them joined, the rest left."""
    diff: dict[str, dict[str, list[Any]]] = {"joins": {}, "leaves": {}}
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(packed)
    for index, (key, entry) in enumerate(unpacker):
        diff["joins" if index < joins else "leaves"].setdefault(key, []).append(entry)
    return diff
