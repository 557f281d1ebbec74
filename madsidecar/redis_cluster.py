"""Redis Cluster: every command goes to the master that serves its key's hash slot.

One `RedisGateway` per master (its own auto-pipelined link, supervisor and health probe)
and a slot map read with CLUSTER SLOTS. The map is corrected by each MOVED reply and read
again whenever a node fails, every quarter second until every slot has a reachable
master again, so a failover is followed within the cluster's own failover time plus a
refresh. ASK (a slot being migrated) is followed for that one command; TRYAGAIN (a
multi-key command whose keys a migration has split) is retried until the deadline.

Scripts name their keys, all in one slot (the capabilities' key layouts see to that);
commands without keys (PING, PUBLISH) go to any master.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any, Final
from urllib.parse import quote

import redis.asyncio as aioredis
import structlog
from redis.asyncio.connection import AbstractConnection
from redis.crc import key_slot
from redis.exceptions import RedisError

from .config import redact_url
from .errors import Unavailable
from .redis_gateway import PipelineCounters, RedisCommandError, RedisGateway, RedisSettings
from .redis_urls import parse_cluster_url

SLOTS: Final = 16384
MAX_REDIRECTS: Final = 5
TRYAGAIN_DELAY_S: Final = 0.02
# While some slot has no reachable master, the map is read again this often.
UNSETTLED_REFRESH_S: Final = 0.25
SETTLED_REFRESH_S: Final = 5.0
REDIRECTS: Final = frozenset(("MOVED", "ASK", "TRYAGAIN"))
KEYLESS: Final = frozenset((b"PING", b"PUBLISH", b"SCAN", b"WAIT", b"CLUSTER", b"INFO"))
KEYS_AT_3: Final = frozenset((b"EVALSHA", b"EVAL", b"EVALSHA_RO", b"EVAL_RO", b"FCALL"))

Address = tuple[str, int]

log = structlog.get_logger("madsidecar.redis")


def slot_of(key: str | bytes) -> int:
    return key_slot(key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key)


def routing_slot(args: tuple[Any, ...]) -> int | None:
    """The slot of the command's first key; None for a command without keys."""
    name = args[0].encode().upper() if isinstance(args[0], str) else bytes(args[0]).upper()
    if name in KEYS_AT_3:
        return slot_of(args[3]) if int(args[2]) > 0 else None
    if name in KEYLESS or len(args) < 2:
        return None
    key = args[1]
    return slot_of(key if isinstance(key, (str, bytes)) else str(key))


class ClusterRouter:
    """Routes commands to the cluster's masters; owned by a `RedisGateway`."""

    def __init__(self, settings: RedisSettings, counters: PipelineCounters) -> None:
        target = parse_cluster_url(settings.url)
        username = target.username or settings.username
        password = target.password if target.password is not None else settings.password
        self._node_settings = replace(settings, username=username, password=password)
        self._tls = target.tls
        self._url = settings.url
        self._seeds: tuple[Address, ...] = target.nodes
        self._timeout_s = settings.timeout_ms / 1000
        self._counters = counters
        self._slots: list[Address | None] = [None] * SLOTS
        self._nodes: dict[Address, RedisGateway] = {}
        self._known: tuple[Address, ...] = ()
        self._masters: frozenset[Address] = frozenset()
        self._listeners: list[Callable[[], None]] = []
        self._refresh_wanted = asyncio.Event()
        self._mapped = asyncio.Event()
        self._remapped = asyncio.Event()  # set, and replaced, whenever the map is read
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self.last_error: str | None = None
        self.refreshes = 0

    # -- the gateway's surface ------------------------------------------------------------

    def start(self) -> None:
        self._spawn(self._maintain_map(), "redis-cluster-map")

    async def close(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        nodes, self._nodes = list(self._nodes.values()), {}
        for node in nodes:
            await node.close()

    @property
    def connected(self) -> bool:
        return self._mapped.is_set() and all(node.connected for node in self.masters())

    async def wait_connected(self) -> None:
        await self._mapped.wait()
        while not self.connected:
            # Bounded waits: the set of masters may change meanwhile.
            for node in self.masters():
                await node.wait_connected(UNSETTLED_REFRESH_S)

    def masters(self) -> list[RedisGateway]:
        """The gateways to the masters serving slots now."""
        return [self._nodes[address] for address in sorted(self._masters) if address in self._nodes]

    def on_masters_changed(self, listener: Callable[[], None]) -> None:
        """`listener()` runs whenever the set of masters changes (failover, new node)."""
        self._listeners.append(listener)

    def master_tags(self) -> list[str]:
        """One hash tag per master, each hashing to a slot that master serves now (for
        keys that must reach every master: the cache's feed probes)."""
        owners: dict[Address, str] = {}
        candidate = 0
        while len(owners) < len(self._masters) and candidate < 100 * SLOTS:
            tag = str(candidate)
            owner = self._slots[slot_of(tag)]
            if owner is not None and owner not in owners:
                owners[owner] = tag
            candidate += 1
        return [owners[address] for address in sorted(owners)]

    @property
    def latency_us(self) -> int | None:
        latencies = [node.latency_us for node in self.masters()]
        known = [latency for latency in latencies if latency is not None]
        return max(known) if known and len(known) == len(latencies) else None

    def status(self) -> dict[str, Any]:
        return {
            "masters": [f"{host}:{port}" for host, port in sorted(self._masters)],
            "slots_unserved": sum(1 for address in self._slots if address is None),
            "map_refreshes": self.refreshes,
        }

    async def open_connection(self) -> AbstractConnection:
        """A connection to some reachable master (pub/sub reaches every node of a
        cluster from any of them)."""
        live = [node for node in self.masters() if node.connected]
        if not live:
            raise ConnectionError(self.last_error or "no master of the cluster is reachable")
        return await random.choice(live).open_connection()

    def execute(self, args: tuple[Any, ...], slot: int | None = None) -> asyncio.Future[Any]:
        """The reply to `args`, from the master of `slot` (default: its first key's)."""
        loop = asyncio.get_running_loop()
        command = _Routed(
            loop.create_future(),
            args,
            routing_slot(args) if slot is None else slot,
            loop.time() + self._timeout_s,
        )
        self._send(command)
        return command.outer

    # -- routing --------------------------------------------------------------------------

    def _send(self, command: _Routed) -> None:
        if command.outer.done():
            return
        address = self._target(command)
        if address is None:
            # A failover in progress, a node not connected yet, or a map that has not
            # caught up: wait for a reachable node within the command's deadline.
            self._want_refresh()
            self._spawn(self._send_when_routable(command), "redis-cluster-route")
            return
        node = self._nodes[address]
        if command.asking is not None:
            node.execute("ASKING")
        inner = node.execute(*command.args)
        inner.add_done_callback(partial(self._replied, command, address))

    def _target(self, command: _Routed) -> Address | None:
        """Where `command` goes now, if that node is connected (its gateway is made, and
        starts connecting, on first sight)."""
        address = command.asking or self._address_for(command.slot)
        if address is None or not self._node(address).connected:
            return None
        return address

    async def _send_when_routable(self, command: _Routed) -> None:
        loop = asyncio.get_running_loop()
        while (left := command.deadline - loop.time()) > 0 and not command.outer.done():
            remapped = self._remapped
            # Bounded: a node may also connect without the map changing.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(remapped.wait(), min(left, UNSETTLED_REFRESH_S / 5))
            if self._target(command) is not None:
                self._send(command)
                return
        if not command.outer.done():
            why = (
                "the cluster map is not loaded yet"
                if not self._mapped.is_set()
                else f"no reachable master serves slot {command.slot} (a failover?)"
            )
            command.outer.set_exception(
                Unavailable(f"redis unavailable: {why}", retry_after_ms=250)
            )

    def _address_for(self, slot: int | None) -> Address | None:
        if slot is not None:
            return self._slots[slot]
        live = [address for address in sorted(self._masters) if self._is_live(address)]
        return random.choice(live) if live else None

    def _replied(self, command: _Routed, address: Address, inner: asyncio.Future[Any]) -> None:
        outer = command.outer
        if inner.cancelled():
            if not outer.done():
                outer.cancel()
            return
        error = inner.exception()
        if outer.done():
            return
        if error is None:
            outer.set_result(inner.result())
            return
        if isinstance(error, RedisCommandError):
            if error.reply_code in REDIRECTS and command.redirects < MAX_REDIRECTS:
                self._redirect(command, address, error)
                return
            if error.reply_code == "CLUSTERDOWN":
                self._want_refresh()
                error = Unavailable(f"redis unavailable: {error.message}", retry_after_ms=250)
        elif isinstance(error, Unavailable):
            self._want_refresh()  # the node may have failed: look for its successor
        outer.set_exception(error)

    def _redirect(self, command: _Routed, asked: Address, error: RedisCommandError) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() >= command.deadline:
            command.outer.set_exception(
                Unavailable(f"redis did not settle in time: {error.message}", retry_after_ms=250)
            )
            return
        command.redirects += 1
        command.asking = None
        if error.reply_code == "TRYAGAIN":
            loop.call_later(TRYAGAIN_DELAY_S, self._send, command)
            return
        # "MOVED <slot> <host>:<port>" / "ASK <slot> <host>:<port>"
        words = error.message.split()
        target = _address(words[-1], asked[0])
        if error.reply_code == "MOVED":
            command.slot = int(words[-2])
            self._slots[command.slot] = target
            self._want_refresh()
        else:
            command.asking = target
        self._send(command)

    def _node(self, address: Address) -> RedisGateway:
        node = self._nodes.get(address)
        if node is None:
            host, port = address
            userinfo = ""
            settings = self._node_settings
            if settings.username or settings.password:
                userinfo = quote(settings.username or "", safe="")
                userinfo += ":" + quote(settings.password or "", safe="") + "@"
            scheme = "rediss" if self._tls else "redis"
            url = f"{scheme}://{userinfo}{_url_host(host)}:{port}"
            node = self._nodes[address] = RedisGateway(replace(settings, url=url))
            node.counters = self._counters
            node.start()
        return node

    # -- the slot map ---------------------------------------------------------------------

    def _want_refresh(self) -> None:
        self._refresh_wanted.set()

    async def _maintain_map(self) -> None:
        while not self._closing:
            settled = await self._refresh()
            wait_s = SETTLED_REFRESH_S if settled else UNSETTLED_REFRESH_S
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._refresh_wanted.wait(), wait_s)
            if self._refresh_wanted.is_set():
                # Coalesce a burst of MOVED or failures into one read of the map.
                await asyncio.sleep(UNSETTLED_REFRESH_S / 5)
                self._refresh_wanted.clear()

    async def _refresh(self) -> bool:
        """Read the slot map from the first node that answers; whether every slot has a
        master that is connected (or still connecting for the first time)."""
        for address in self._candidates():
            try:
                ranges = await self._read_slots(address)
            except (RedisError, OSError, TimeoutError, Unavailable, RedisCommandError) as exc:
                self.last_error = f"{address[0]}:{address[1]}: {exc}"
                continue
            self.refreshes += 1
            self._apply(ranges, address)
            self.last_error = None
            return all(slot is not None for slot in self._slots) and all(
                node.last_error is None for node in self.masters()
            )
        log.warning("redis_cluster_unreachable", url=redact_url(self._url), reason=self.last_error)
        return False

    def _candidates(self) -> list[Address]:
        """Connected masters first, then every node ever seen, then the URL's nodes."""
        connected = [address for address in sorted(self._masters) if self._is_live(address)]
        rest = [a for a in (*self._known, *self._seeds) if a not in connected]
        random.shuffle(connected)
        return connected + list(dict.fromkeys(rest))

    def _is_live(self, address: Address) -> bool:
        node = self._nodes.get(address)
        return node is not None and node.connected

    async def _read_slots(self, address: Address) -> list[Any]:
        node = self._nodes.get(address)
        if node is not None and node.connected:
            reply: list[Any] = await node.execute("CLUSTER", "SLOTS")
            return reply
        settings = self._node_settings
        client = aioredis.Redis(
            host=address[0],
            port=address[1],
            username=settings.username,
            password=settings.password,
            socket_connect_timeout=settings.connect_timeout_ms / 1000,
            socket_timeout=self._timeout_s,
            protocol=2,
            ssl=self._tls,
            **settings.tls_options(),
        )
        try:
            answer: list[Any] = await client.execute_command(  # type: ignore[no-untyped-call]
                "CLUSTER", "SLOTS"
            )
            return answer
        finally:
            await client.aclose()

    def _apply(self, ranges: list[Any], asked: Address) -> None:
        slots: list[Address | None] = [None] * SLOTS
        masters: set[Address] = set()
        known: list[Address] = []
        for start, end, master, *replicas in ranges:
            address = _endpoint(master, asked[0])
            slots[int(start) : int(end) + 1] = [address] * (int(end) - int(start) + 1)
            masters.add(address)
            known += [address, *(_endpoint(replica, asked[0]) for replica in replicas)]
        self._slots = slots
        self._known = tuple(dict.fromkeys(known))
        for address in masters:
            self._node(address)
        remapped, self._remapped = self._remapped, asyncio.Event()
        remapped.set()
        if masters != self._masters:
            before = self._masters
            self._masters = frozenset(masters)
            self._retire([address for address in self._nodes if address not in masters])
            log.info(
                "redis_cluster_masters",
                masters=[f"{h}:{p}" for h, p in sorted(masters)],
                gone=[f"{h}:{p}" for h, p in sorted(before - masters)] or None,
            )
            for listener in self._listeners:
                listener()
        if all(address is not None for address in slots):
            self._mapped.set()

    def _retire(self, addresses: list[Address]) -> None:
        """Close the gateways of nodes that serve no slot any more, once the replies
        they still owe (MOVED, mostly) had time to arrive."""
        nodes = [self._nodes.pop(address) for address in addresses]
        if not nodes:
            return

        async def close_later() -> None:
            await asyncio.sleep(self._timeout_s)
            for node in nodes:
                await node.close()

        self._spawn(close_later(), "redis-cluster-retire")

    def _spawn(self, work: Any, name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


class _Routed:
    """A command on its way: where it is bound, until when, and how often redirected."""

    __slots__ = ("args", "asking", "deadline", "outer", "redirects", "slot")

    def __init__(
        self, outer: asyncio.Future[Any], args: tuple[Any, ...], slot: int | None, deadline: float
    ) -> None:
        self.outer = outer
        self.args = args
        self.slot = slot
        self.deadline = deadline
        self.redirects = 0
        self.asking: Address | None = None  # the node an ASK named, for the next send


def _endpoint(node: list[Any], fallback_host: str) -> Address:
    """A CLUSTER SLOTS node entry's address; an empty host means the node asked."""
    host = node[0].decode() if isinstance(node[0], bytes) else str(node[0])
    if host in ("", "?"):
        host = fallback_host
    return host, int(node[1])


def _address(text: str, fallback_host: str) -> Address:
    host, _, port = text.rpartition(":")
    return (host or fallback_host), int(port)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
