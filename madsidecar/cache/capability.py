"""cache.*: L1 per node in front of L2 in Redis, coherent across nodes.

Reads try L1 inline (no task, no Redis) and fall back to L2. Every node keeps a feed of
invalidations for the cache's key roots (see `redis_feed`); a key changed by anyone drops
out of every node's L1. The feed is proven live by a probe key this node writes and must
see invalidated; while it is not proven, L1 serves nothing (except as the documented
fallback while Redis itself is down). `fetch`/`fill` hand out one lease per key fleet-wide.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import secrets
import time
from collections.abc import Iterable
from functools import partial
from typing import Any, Final, Protocol

import msgpack
import structlog

from ..background import BackgroundWork
from ..config import Config, WarmTarget
from ..deferred import Deferred
from ..errors import BadRequest, NotHeld, SidecarError, Timeout, Unavailable, quoted
from ..methods import Arg, CapabilityBase, Client, Method
from ..protocol import Packed
from ..redis_feed import open_feed
from ..redis_gateway import RedisGateway
from ..redis_scripts import LuaScript
from .guard import ReadGuard
from .keys import CacheKeys
from .l1 import ENTRY_OVERHEAD_BYTES, L1Cache, L1Entry

log = structlog.get_logger("madsidecar.cache")

SCAN_BATCH: Final = 1000
MAX_MGET_KEYS: Final = 10_000
LEASE_POLL_MAX_S: Final = 0.5

_FETCH_HIT, _FETCH_LEASE, _FETCH_HIT_AND_LEASE, _FETCH_WAIT = 0, 1, 2, 3

# MessagePack pieces of cache entries, so stored values can be spliced into replies.
_MAP_HEADERS: Final = {n: bytes([0x80 | n]) for n in range(3, 6)}
_K_VALUE: Final = msgpack.packb("value")
_K_TTL: Final = msgpack.packb("ttl_ms")
_K_STALE: Final = msgpack.packb("stale")
_K_LEASE: Final = msgpack.packb("lease")
_TRUE: Final = msgpack.packb(True)
_NIL: Final = msgpack.packb(None)
_SOURCE_L1: Final = msgpack.packb("source") + msgpack.packb("l1")
_SOURCE_L2: Final = msgpack.packb("source") + msgpack.packb("l2")
_L1_HIT_HEAD: Final = _MAP_HEADERS[3] + _K_VALUE
_L1_HIT_TAIL: Final = _SOURCE_L1 + _K_TTL


def _packed_array(items: list[Packed | None]) -> Packed:
    count = len(items)
    if count < 16:
        header = bytes([0x90 | count])
    elif count < 1 << 16:
        header = b"\xdc" + count.to_bytes(2, "big")
    else:
        header = b"\xdd" + count.to_bytes(4, "big")
    return Packed(header + b"".join(_NIL if item is None else item for item in items))


class _Undecodable:
    """A value under our prefix that is not MessagePack (another program wrote it)."""


UNDECODABLE: Final = _Undecodable()


def _decode(raw: bytes) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, use_list=False, strict_map_key=False)
    except Exception:
        return UNDECODABLE


def _encode(value: Any) -> bytes:
    try:
        encoded: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequest(f"value cannot be stored: {exc}", argument="value") from None
    return encoded


class CacheStats:
    __slots__ = (
        "fills",
        "flushes",
        "invalidations",
        "l1_hits",
        "l2_hits",
        "leases_granted",
        "misses",
        "stale_served",
        "undecodable",
    )

    def __init__(self) -> None:
        self.l1_hits = self.l2_hits = self.misses = 0
        self.invalidations = self.flushes = self.leases_granted = 0
        self.fills = self.stale_served = self.undecodable = 0


class FeedListener(Protocol):
    """Another capability's in-memory copies of Redis keys, kept coherent by this node's
    invalidation feed (sessions' L1)."""

    def keys_invalidated(self, keys: list[str]) -> None:
        """These keys changed in Redis (or expired, or were deleted)."""

    def all_invalidated(self) -> None:
        """Anything may have changed: the feed broke, came back, or Redis was flushed."""


class Cache(CapabilityBase):
    group = "cache"

    def __init__(self, config: Config, gateway: RedisGateway) -> None:
        self._config = config
        self._gateway = gateway
        self._keys = CacheKeys(config.key_prefix, config.node_id)
        self._l1 = L1Cache(config.l1_max_entries, config.l1_max_bytes, config.l1_eviction)
        self._guard = ReadGuard()
        self._feed = open_feed(
            gateway,
            self,
            tracking_prefixes=(self._keys.value_root, self._keys.lease_root),
            channels=(self._keys.channel,),
            name="madsidecar-cache-feed:" + re.sub(r"[^\w.:-]", "_", config.node_id),
        )
        self._feed_live = False
        self._was_live = False
        # Set when the feed broke after L1 was used: invalidations may have been lost.
        self._feed_broke = False
        self._feed_live_event = asyncio.Event()
        self._probe_nonce = 0
        self._probe_seen = asyncio.Event()
        self._probes_unseen: set[str] = set()
        self._probe_now = asyncio.Event()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._listeners: list[tuple[str, FeedListener]] = []
        self._lease_waiters = 0
        # conn_id -> lease key -> (token, ttl_ms the fetch asked for)
        self._leases: dict[int, dict[str, tuple[str, int | None]]] = {}
        self._background = BackgroundWork("cache_background_work_failed")
        self._tasks: list[asyncio.Task[None]] = []
        self._stats = CacheStats()
        self._pack = msgpack.Packer(use_bin_type=True).pack
        self._scripts = {
            name: LuaScript.beside(__name__, f"{name}.lua")
            for name in ("set", "delete", "fetch", "fill", "release_lease")
        }

    # -- lifecycle ------------------------------------------------------------------------

    def methods(self) -> Iterable[Method]:
        ttl = Arg("ttl_ms", "int", None, minimum=1, maximum=2**47)
        return (
            Method("cache.get", self.get, (Arg("key", "name"),), ordered_by="key"),
            Method("cache.mget", self.mget, (Arg("keys", "names"),), ordered_by="keys"),
            Method(
                "cache.set",
                self.set,
                (Arg("key", "name"), Arg("value", "any"), ttl),
                ordered_by="key",
            ),
            Method("cache.delete", self.delete, (Arg("keys", "names"),), ordered_by="keys"),
            Method("cache.invalidate", self.invalidate, (Arg("prefix", "str"),), barrier=True),
            Method(
                "cache.fetch",
                self.fetch,
                (
                    Arg("key", "name"),
                    ttl,
                    Arg("lease_ms", "int", 10_000, minimum=1, maximum=86_400_000),
                    Arg("wait_ms", "int", 5_000, minimum=0, maximum=3_600_000),
                    Arg("refresh_ahead_ms", "int", 0, minimum=0, maximum=2**47),
                ),
                ordered_by="key",
            ),
            # Not ordered by key: a fill must never queue behind fetches of the same key
            # on its own connection that are waiting for this very fill.
            Method(
                "cache.fill",
                self.fill,
                (Arg("key", "name"), Arg("lease", "str"), Arg("value", "any"), ttl),
            ),
            Method("cache.warm", self.warm_method, (Arg("prefix", "str"),)),
        )  # fmt: skip

    async def start(self) -> None:
        self._feed.start()
        self._tasks.append(asyncio.create_task(self._probe_loop(), name="cache-probe"))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self._background.drain(self._gateway.timeout_s)
        await self._feed.close()

    async def warm_up(self, timeout_s: float) -> None:
        """At start: wait for a live feed (L1 usable), then load the configured keys."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._feed_live_event.wait()
                await self._warm_targets(self._config.cache_warm)
        except TimeoutError:
            log.warning("cache_not_warm_at_start", timeout_ms=int(timeout_s * 1000))
            if self._config.cache_warm:
                self._background.start(self._warm_when_live())

    async def _warm_when_live(self) -> None:
        await self._feed_live_event.wait()
        await self._warm_targets(self._config.cache_warm)

    def stats(self) -> dict[str, Any]:
        s = self._stats
        return {
            "cache": {
                "l1_hits": s.l1_hits,
                "l2_hits": s.l2_hits,
                "misses": s.misses,
                "l1_entries": self._l1.entries,
                "l1_bytes": self._l1.bytes,
                "evictions": self._l1.evictions,
                "invalidations": s.invalidations,
                "flushes": s.flushes,
                "leases_granted": s.leases_granted,
                "lease_waiters": self._lease_waiters,
                "fills": s.fills,
                "stale_served": s.stale_served,
                "undecodable": s.undecodable,
                "feed_live": self._feed_live,
            }
        }

    def connection_closed(self, client: Client) -> None:
        leases = self._leases.pop(client.conn_id, None)
        for lease_key, (token, _) in (leases or {}).items():
            self._background.start(
                self._scripts["release_lease"].run(self._gateway, [lease_key], [token])
            )

    # -- reads ----------------------------------------------------------------------------

    def get(self, client: Client, args: dict[str, Any]) -> Any:
        key = self._keys.value(client.namespace, args["key"])
        hit = self._l1_hit(key)
        if hit is not None:
            return hit
        return self._read_l2(key)

    def mget(self, client: Client, args: dict[str, Any]) -> Any:
        names = args["keys"]
        if len(names) > MAX_MGET_KEYS:
            raise BadRequest(f"cache.mget: at most {MAX_MGET_KEYS} keys", argument="keys")
        keys = [self._keys.value(client.namespace, name) for name in names]
        results = [self._l1_hit(key) for key in keys]
        missing = [i for i, result in enumerate(results) if result is None]
        if not missing:
            return _packed_array(results)
        return self._mget_rest(keys, results, missing)

    async def _mget_rest(
        self, keys: list[str], results: list[Packed | None], missing: list[int]
    ) -> Packed:
        reads = [self._read_l2(keys[i]) for i in missing]
        for i, entry in zip(missing, await asyncio.gather(*reads), strict=True):
            results[i] = entry
        return _packed_array(results)

    def _l1_hit(self, key: str, refresh_ahead_ms: int = 0) -> Packed | None:
        """The L1 answer, if L1 may give one (and, with refresh-ahead, if the entry has
        more than that much TTL left)."""
        if not self._feed_live:
            return None
        entry = self._l1.get(key)
        if entry is None:
            return None
        now = time.monotonic()
        if now >= entry.fresh_until:
            return None
        expires_at = entry.expires_at
        ttl_ms = None if expires_at is None else max(int((expires_at - now) * 1000), 0)
        if refresh_ahead_ms and ttl_ms is not None and ttl_ms < refresh_ahead_ms:
            return None
        self._stats.l1_hits += 1
        # The common reply, {value, source: "l1", ttl_ms}, in three pieces.
        return Packed(b"".join((_L1_HIT_HEAD, entry.raw, _L1_HIT_TAIL, self._pack(ttl_ms))))

    def _read_l2(self, key: str) -> Deferred:
        """`GET` and `PTTL` of `key`, answered from PTTL's reply: GET's is in by then (one
        link, replies in order, a failure fails both in order)."""
        generation = self._guard.begin(key)
        get = self._gateway.execute("GET", key)
        pttl = self._gateway.execute("PTTL", key)
        return Deferred(
            pttl,
            partial(self._l2_replied, key, generation, get),
            partial(self._l2_failed, key, generation, get),
            partial(self._guard.end, key, generation),
        )

    def _l2_replied(
        self, key: str, generation: int, get: asyncio.Future[Any], ttl_ms: int
    ) -> Packed | None:
        error = get.exception() if get.done() else Unavailable("redis did not answer", 50)
        if error is not None:
            return self._l2_failed(key, generation, get, error)
        fresh = self._guard.end(key, generation)
        raw = get.result()
        if raw is None or ttl_ms == -2:
            self._stats.misses += 1
            return None
        if _decode(raw) is UNDECODABLE:  # checked once here; L1 hits splice it unchecked
            self._note_undecodable(key)
            self._stats.misses += 1
            return None
        self._stats.l2_hits += 1
        if fresh and self._feed_live:
            self._remember(key, raw, ttl_ms)
        return self._entry(raw, _SOURCE_L2, None if ttl_ms < 0 else ttl_ms)

    def _l2_failed(
        self, key: str, generation: int, get: asyncio.Future[Any], error: BaseException
    ) -> Packed:
        self._guard.end(key, generation)
        _discard(get)
        if isinstance(error, Unavailable):
            fallback = self._stale_fallback(key)
            if fallback is not None:
                return fallback
        raise error

    def _entry(
        self,
        raw: bytes,
        source: bytes,
        ttl_ms: int | None,
        stale: bool = False,
        lease: str | None = None,
    ) -> Packed:
        """`{value, source, ttl_ms[, stale][, lease]}` with the stored MessagePack of the
        value spliced in, never decoded and packed again."""
        parts = [_MAP_HEADERS[3 + stale + (lease is not None)], _K_VALUE, raw, source]
        parts += (_K_TTL, self._pack(ttl_ms))
        if stale:
            parts += (_K_STALE, _TRUE)
        if lease is not None:
            parts += (_K_LEASE, self._pack(lease))
        return Packed(b"".join(parts))

    def _note_undecodable(self, key: str) -> None:
        self._stats.undecodable += 1
        if self._stats.undecodable == 1:
            log.warning("cache_value_not_msgpack", key=key, hint="written by another program?")

    def _stale_fallback(self, key: str) -> Packed | None:
        """Redis is down for this node: an L1 entry is the best answer there is, marked
        stale unless the feed still proves it current. Redis may be down for this node
        alone while other nodes still write, so without a live feed nothing is."""
        entry = self._l1.get(key)
        if entry is None:
            return None
        now = time.monotonic()
        if now - entry.stored_at > self._config.cache_stale_max_ms / 1000:
            return None
        stale = not self._feed_live or now >= entry.fresh_until
        if stale:
            self._stats.stale_served += 1
        return self._entry(entry.raw, _SOURCE_L1, _remaining_ms(entry, now), stale)

    def _remember(self, key: str, raw: bytes, ttl_ms: int) -> None:
        now = time.monotonic()
        life_s = self._config.l1_max_ttl_ms / 1000
        expires_at = None
        if ttl_ms >= 0:
            expires_at = now + ttl_ms / 1000
            life_s = min(life_s, ttl_ms / 1000)
        size = len(raw) + len(key) + ENTRY_OVERHEAD_BYTES
        self._l1.put(key, L1Entry(raw, size, now + life_s, expires_at, now))

    # -- writes ---------------------------------------------------------------------------

    async def set(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        encoded = _encode(args["value"])
        key = self._keys.value(client.namespace, args["key"])
        ttl_ms = self._jittered(args["ttl_ms"])
        await self._scripts["set"].run(
            self._gateway, [key, self._keys.lease_for_value(key)], [encoded, ttl_ms]
        )
        self._drop_local(key)
        return {"ok": True}

    async def delete(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        keys = [self._keys.value(client.namespace, name) for name in args["keys"]]
        if not keys:
            return {"deleted": 0}
        # One script per hash slot: a cluster runs a script on one slot's keys only.
        by_slot: dict[int, list[str]] = {}
        for key in keys:
            pair = (key, self._keys.lease_for_value(key))
            by_slot.setdefault(self._gateway.slot_of(key), []).extend(pair)
        script = self._scripts["delete"]
        counts = await asyncio.gather(
            *(script.run(self._gateway, pairs) for pairs in by_slot.values())
        )
        for key in keys:
            self._drop_local(key)
        return {"deleted": sum(int(count) for count in counts)}

    async def invalidate(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        namespace, prefix = client.namespace, args["prefix"]
        deleted = 0
        # Leases first: a lease on a key with no value yet must be voided too.
        for node in self._gateway.masters():
            cursor: Any = b"0"
            while cursor is not None:
                pattern = self._keys.lease_pattern(namespace, prefix)
                cursor, leases = await self._scan_page(node, pattern, cursor)
                await self._unlink(leases)
        for node in self._gateway.masters():
            cursor = b"0"
            while cursor is not None:
                pattern = self._keys.value_pattern(namespace, prefix)
                cursor, keys = await self._scan_page(node, pattern, cursor)
                deleted += await self._unlink(keys)
                for key in keys:
                    self._drop_local(key)
        # Keys that expired from L2 but sit in some node's L1 get no invalidation of
        # their own: every node drops the prefix from L1 on this message.
        self._drop_local_prefix(self._keys.value_prefix(namespace, prefix))
        await self._gateway.execute(
            "PUBLISH", self._keys.channel, self._keys.value_prefix(namespace, prefix)
        )
        return {"deleted": deleted}

    async def _unlink(self, keys: list[str]) -> int:
        """UNLINK, one command per hash slot (a cluster refuses keys of several)."""
        by_slot: dict[int, list[str]] = {}
        for key in keys:
            by_slot.setdefault(self._gateway.slot_of(key), []).append(key)
        counts = await asyncio.gather(
            *(self._gateway.execute("UNLINK", *group) for group in by_slot.values())
        )
        return sum(int(count) for count in counts)

    def _jittered(self, ttl_ms: int | None) -> int:
        ttl = ttl_ms if ttl_ms is not None else self._config.cache_default_ttl_ms
        jitter = int(ttl * self._config.cache_ttl_jitter_percent / 100)
        return ttl - random.randint(0, jitter) if jitter else ttl

    def _drop_local(self, key: str) -> None:
        self._l1.pop(key)
        self._guard.invalidated(key)

    def _drop_local_prefix(self, prefix: str) -> None:
        self._l1.drop_prefix(prefix)
        self._guard.invalidated_all()

    # -- leases ---------------------------------------------------------------------------

    def fetch(self, client: Client, args: dict[str, Any]) -> Any:
        key = self._keys.value(client.namespace, args["key"])
        hit = self._l1_hit(key, args["refresh_ahead_ms"])
        if hit is not None:
            return hit
        return self._fetch(client, key, args)

    async def _fetch(self, client: Client, key: str, args: dict[str, Any]) -> Any:
        lease_key = self._keys.lease_for_value(key)
        deadline = time.monotonic() + args["wait_ms"] / 1000
        while True:
            # Registered before asking Redis, so a fill landing in between still wakes us.
            woken = self._wait_on((key, lease_key))
            try:
                token = secrets.token_urlsafe(18)
                generation = self._guard.begin(key)
                try:
                    status, raw, pttl = await self._scripts["fetch"].run(
                        self._gateway,
                        [key, lease_key],
                        [token, args["lease_ms"], args["refresh_ahead_ms"]],
                    )
                finally:
                    fresh = self._guard.end(key, generation)
                if status == _FETCH_LEASE:
                    self._grant(client, lease_key, token, args["ttl_ms"])
                    return {"lease": token}
                if status in (_FETCH_HIT, _FETCH_HIT_AND_LEASE):
                    if _decode(raw) is UNDECODABLE:
                        self._note_undecodable(key)
                        raise BadRequest(
                            f"cache.fetch: the value of {quoted(args['key'])} in Redis is not "
                            "MessagePack (written by another program?)",
                            argument="key",
                        )
                    self._stats.l2_hits += 1
                    if fresh and self._feed_live:
                        self._remember(key, raw, pttl)
                    lease = None
                    if status == _FETCH_HIT_AND_LEASE:
                        self._grant(client, lease_key, token, args["ttl_ms"])
                        lease = token
                    return self._entry(raw, _SOURCE_L2, None if pttl < 0 else pttl, lease=lease)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise Timeout(
                        f"cache.fetch: no value for {quoted(args['key'])} within "
                        f"wait_ms={args['wait_ms']}; another caller holds the lease"
                    )
                # Woken by the fill or the lease's release; polling is only the fallback.
                poll = min(remaining, max(pttl / 1000, 0.01), LEASE_POLL_MAX_S)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(woken), poll)
            finally:
                self._stop_waiting((key, lease_key), woken)

    def _grant(self, client: Client, lease_key: str, token: str, ttl_ms: int | None) -> None:
        self._stats.leases_granted += 1
        if client.closed:
            self._background.start(
                self._scripts["release_lease"].run(self._gateway, [lease_key], [token])
            )
        else:
            self._leases.setdefault(client.conn_id, {})[lease_key] = (token, ttl_ms)

    async def fill(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        encoded = _encode(args["value"])
        key = self._keys.value(client.namespace, args["key"])
        lease_key = self._keys.lease_for_value(key)
        owned = self._leases.get(client.conn_id, {})
        token, fetch_ttl_ms = owned.get(lease_key, (None, None))
        ttl_ms = args["ttl_ms"] if args["ttl_ms"] is not None else fetch_ttl_ms
        landed = await self._scripts["fill"].run(
            self._gateway, [key, lease_key], [args["lease"], encoded, self._jittered(ttl_ms)]
        )
        if token == args["lease"]:
            del owned[lease_key]
        if not landed:
            raise NotHeld(
                f"cache.fill: the lease on {quoted(args['key'])} is no longer current "
                "(expired, released, or voided by a write of the key)"
            )
        self._stats.fills += 1
        self._drop_local(key)
        return {"ok": True}

    def _wait_on(self, keys: tuple[str, ...]) -> asyncio.Future[None]:
        self._lease_waiters += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for key in keys:
            self._waiters.setdefault(key, set()).add(future)
        return future

    def _stop_waiting(self, keys: tuple[str, ...], future: asyncio.Future[None]) -> None:
        self._lease_waiters -= 1
        for key in keys:
            waiting = self._waiters.get(key)
            if waiting is not None:
                waiting.discard(future)
                if not waiting:
                    del self._waiters[key]

    def _wake(self, key: str) -> None:
        for future in self._waiters.pop(key, ()):
            if not future.done():
                future.set_result(None)

    # -- warming --------------------------------------------------------------------------

    async def warm_method(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        if not self._feed_live:
            raise Unavailable(
                "cache.warm: the invalidation feed is not live, so L1 is off",
                retry_after_ms=self._config.cache_probe_interval_ms,
            )
        loaded = await self._warm(WarmTarget(client.namespace, args["prefix"]))
        return {"loaded": loaded}

    async def _warm_targets(self, targets: Iterable[WarmTarget]) -> None:
        for target in targets:
            started = time.monotonic()
            try:
                loaded = await self._warm(target)
            except SidecarError as exc:
                log.warning("cache_warm_failed", namespace=target.namespace, reason=exc.message)
                continue
            log.info(
                "cache_warmed",
                namespace=target.namespace,
                prefix=target.prefix,
                loaded=loaded,
                took_ms=int((time.monotonic() - started) * 1000),
            )

    async def _warm(self, target: WarmTarget) -> int:
        loaded = 0
        pattern = self._keys.value_pattern(target.namespace, target.prefix)
        for node in self._gateway.masters():
            cursor: Any = b"0"
            while cursor is not None:
                cursor, keys = await self._scan_page(node, pattern, cursor)
                entries = await asyncio.gather(*(self._read_l2(key) for key in keys))
                loaded += sum(entry is not None for entry in entries)
                if loaded and loaded % (10 * SCAN_BATCH) < len(keys):
                    log.info("cache_warming", namespace=target.namespace, loaded=loaded)
        return loaded

    async def _scan_page(
        self, node: RedisGateway, pattern: str, cursor: Any
    ) -> tuple[Any, list[str]]:
        """One SCAN step on one master: the next cursor (None once done), the keys."""
        cursor, found = await node.execute("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_BATCH)
        done = cursor in (b"0", 0, "0")
        return (None if done else cursor), [key.decode() for key in found]

    # -- the invalidation feed ------------------------------------------------------------

    def share_feed(self, prefix: str, listener: FeedListener) -> None:
        """Keys under `prefix` (which must not overlap the cache's own roots) are tracked
        by this node's invalidation feed too; `listener` hears of their changes, and of
        every time L1s must be dropped. Call before `start`."""
        self._feed.add_tracking_prefix(prefix)
        self._listeners.append((prefix, listener))

    @property
    def feed_live(self) -> bool:
        """Whether invalidations are proven to arrive: whether an L1 may be used."""
        return self._feed_live

    def feed_invalidated(self, keys: list[bytes] | None) -> None:
        if keys is None:
            self._flush("redis flushed its data")
            for key in list(self._waiters):
                self._wake(key)
            return
        for raw in keys:
            key = raw.decode("utf-8", "surrogateescape")
            if self._listeners and self._to_listener(key):
                continue
            if key.startswith(self._keys.probe_root):
                unseen = self._probes_unseen
                if key in unseen:
                    unseen.discard(key)
                    if not unseen:
                        self._probe_seen.set()
                continue
            self._stats.invalidations += 1
            self._l1.pop(key)
            self._guard.invalidated(key)
            if key in self._waiters:
                self._wake(key)

    def _to_listener(self, key: str) -> bool:
        for prefix, listener in self._listeners:
            if key.startswith(prefix):
                listener.keys_invalidated([key])
                return True
        return False

    def feed_message(self, channel: bytes, data: bytes) -> None:
        self._l1.drop_prefix(data.decode("utf-8", "surrogateescape"))
        self._guard.invalidated_all()

    def feed_up(self) -> None:
        self._probe_now.set()  # prove it at once rather than at the next interval

    def feed_down(self, reason: str) -> None:
        if self._feed_live:
            log.warning("cache_l1_off", reason=reason)
        self._feed_broke = self._was_live
        self._set_feed_live(False)

    def _set_feed_live(self, live: bool) -> None:
        if live == self._feed_live:
            return
        self._feed_live = live
        self._guard.invalidated_all()
        for _, listener in self._listeners:
            listener.all_invalidated()
        if live:
            # L1 off on an unbroken feed kept receiving invalidations: nothing to flush.
            flush = self._feed_broke
            self._feed_broke = False
            if flush:
                self._flush("invalidation feed proven live again")
            self._feed_live_event.set()
            if self._config.cache_warm and flush:
                # At start `warm_up` does this before READY=1; later, after each flush.
                self._background.start(self._warm_targets(self._config.cache_warm))
            self._was_live = True
        else:
            self._feed_live_event.clear()
            # Lease waiters cannot count on being woken; their polling takes over.
            for key in list(self._waiters):
                self._wake(key)

    def _flush(self, reason: str) -> None:
        for _, listener in self._listeners:
            listener.all_invalidated()
        had = self._l1.entries
        self._l1.clear()
        self._guard.invalidated_all()
        self._stats.flushes += 1
        log.info("cache_l1_flushed", reason=reason, entries=had)

    async def _probe_loop(self) -> None:
        """Every interval, prove the feed live; L1 is used only while it is."""
        interval = self._config.cache_probe_interval_ms / 1000
        patience = max(interval, self._gateway.timeout_s) * 2
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._probe_now.wait(), interval)
            self._probe_now.clear()
            if not self._feed.connected:
                continue
            try:
                await self._probe(patience)
            except SidecarError as exc:
                # Redis did not take the probe, maybe for this node alone while others
                # write: nothing is proven, so L1 goes off. The feed keeps its connection;
                # what it delivers meanwhile still counts, so no flush when it proves live.
                if self._feed_live:
                    log.warning("cache_l1_off", reason=f"probe not written: {exc}")
                self._set_feed_live(False)
                continue
            except TimeoutError:
                self._feed_broke = self._was_live
                self._set_feed_live(False)
                self._feed.restart(f"probe invalidation not seen within {patience:.1f} s")
                continue
            if not self._feed_live:
                log.info("cache_l1_on")
            self._set_feed_live(True)

    async def _probe(self, patience: float) -> None:
        """Write the probe key(s); their invalidations must come back through the feed
        within `patience` of the start, the write included, which bounds how long a
        silently broken feed goes unnoticed."""
        self._probe_seen.clear()
        self._probe_nonce += 1
        # One probe per master in a cluster: each master's tracker must prove itself.
        probes = self._feed.probe_keys(self._keys.probe)
        self._probes_unseen = set(probes)
        async with asyncio.timeout(patience):
            await asyncio.gather(
                *(
                    self._gateway.execute("SET", probe, self._probe_nonce, "PX", 60_000)
                    for probe in probes
                )
            )
            await self._probe_seen.wait()


def _discard(future: Any) -> None:
    """Drop a reply nobody will read, without leaving its error unretrieved."""
    if not future.done():
        future.cancel()  # the gateway skips replies to futures already done
    elif not future.cancelled():
        future.exception()


def _remaining_ms(entry: L1Entry, now: float) -> int | None:
    if entry.expires_at is None:
        return None
    return max(int((entry.expires_at - now) * 1000), 0)
