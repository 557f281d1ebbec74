"""lock.*: leases owned by a connection, renewed by the sidecar, released on disconnect.

A lease is renewed every ttl/3 (monotonic clock) while its connection is open and
released the moment the connection closes. A renewal that finds the lease gone, or that
cannot reach Redis before the lease's validity runs out, sends `lock.lost` to the owner.

Waiting callers of one node queue per lock name, first come first served; only the head
asks Redis. It is woken by the release itself: at once for a release on this node, and
through the node's one subscription to the release channel for the others (re-checking
after registering, so a release between the attempt and the wait is never missed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import structlog

from ..background import BackgroundWork
from ..config import Config, quorum_urls
from ..deferred import Deferred, then_do
from ..errors import BadRequest, SidecarError
from ..methods import Arg, CapabilityBase, Client, Method
from ..redis_feed import RedisFeed
from ..redis_gateway import RedisGateway, redis_settings
from ..timer_wheel import TimerWheel
from .backends import Attempt, Inspection, LockBackend, Redlock, SingleRedis, drift_ms
from .keys import LockKeys

log = structlog.get_logger("madsidecar.locks")

MIN_RENEW_S: Final = 0.01
MAX_WAIT_REPLICAS: Final = 64
# Renewals due within one slot share a loop timer; they run up to this much early.
RENEWAL_SLOT_S: Final = 0.005
TOKEN_BYTES: Final = 16

# A handler's answer: now, once one Redis reply is in, or after more work (a task).
Answer = dict[str, Any] | Deferred | Coroutine[Any, Any, dict[str, Any]]


class TokenSource:
    """Lock tokens: 128 random bits each, as hex. The kernel's CSPRNG is read 256 tokens
    at a time, not once per lock (a syscall per acquire showed in profiles)."""

    __slots__ = ("_buffer", "_offset")

    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0

    def next(self) -> str:
        offset = self._offset
        if offset + TOKEN_BYTES > len(self._buffer):
            self._buffer = os.urandom(TOKEN_BYTES * 256)
            offset = 0
        self._offset = offset + TOKEN_BYTES
        return self._buffer[offset : offset + TOKEN_BYTES].hex()


def _busy(inspection: Inspection) -> dict[str, Any]:
    return {"acquired": False, "ttl_ms": inspection.ttl_ms}


@dataclass(eq=False)
class Lease:
    key: str
    name: str
    token: str
    fence: int
    ttl_ms: int  # as asked for; renewals extend by this much
    owner: Client
    valid_until: float  # monotonic: the lease is surely ours until then
    # renew=false: a timer until the lease runs out (renewals wait in Locks._renewals).
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    renewer: asyncio.Task[None] | None = field(default=None, repr=False)
    renew: bool = True


class LockStats:
    __slots__ = ("acquired", "lost", "released", "timeouts")

    def __init__(self) -> None:
        self.acquired = self.released = self.lost = self.timeouts = 0


class Locks(CapabilityBase):
    group = "lock"

    def __init__(self, config: Config, gateway: RedisGateway) -> None:
        self._config = config
        self._gateway = gateway
        self._keys = LockKeys(config.key_prefix)
        self._masters = [RedisGateway(redis_settings(config, url)) for url in quorum_urls(config)]
        self._backend: LockBackend = (
            Redlock(self._masters, gateway, self._keys.channel)
            if self._masters
            else SingleRedis(gateway, self._keys.channel)
        )
        self._feed = RedisFeed(
            gateway, self, channels=(self._keys.channel,), name="madsidecar-lock-wakeups"
        )
        self._leases: dict[int, dict[str, Lease]] = {}
        self._queues: dict[str, collections.deque[asyncio.Future[None]]] = {}
        self._wakes: dict[str, asyncio.Future[None]] = {}
        self._background = BackgroundWork("lock_background_work_failed")
        self._stats = LockStats()
        self._tokens = TokenSource()
        self._renewals: TimerWheel[Lease] = TimerWheel(RENEWAL_SLOT_S, self._renewal_due)
        self._durable: RedisGateway | None = None
        # WAIT answers before the command's own deadline, so a missing replica is reported
        # as such rather than as Redis not answering.
        self._wait_replicas_timeout_ms = max(config.redis_timeout_ms // 2, 1)
        # A waiting head retries at least every lock_retry_max_ms, renewing its flag.
        self._waiter_flag_ms = 2 * config.lock_retry_max_ms + 1000

    # -- lifecycle ------------------------------------------------------------------------

    def methods(self) -> Iterable[Method]:
        name = Arg("name", "name")
        return (
            Method(
                "lock.acquire",
                self.acquire,
                (
                    name,
                    Arg("ttl_ms", "int", 30_000, minimum=10, maximum=86_400_000),
                    Arg("wait_ms", "int", 0, minimum=0, maximum=86_400_000),
                    Arg("renew", "bool", True),
                    Arg("wait_replicas", "int", 0, minimum=0, maximum=MAX_WAIT_REPLICAS),
                ),
            ),
            Method("lock.release", self.release, (name, Arg("token", "str")), ordered_by="name"),
            Method(
                "lock.extend",
                self.extend,
                (name, Arg("token", "str"), Arg("ttl_ms", "int", minimum=10, maximum=86_400_000)),
                ordered_by="name",
            ),
            Method("lock.inspect", self.inspect, (name,)),
        )

    async def start(self) -> None:
        for master in self._masters:
            master.start()
        self._feed.start()

    async def close(self) -> None:
        await self._background.drain(self._gateway.timeout_s * 2)
        await self._feed.close()
        if self._durable is not None:
            await self._durable.close()
        for master in self._masters:
            await master.close()

    def stats(self) -> dict[str, Any]:
        s = self._stats
        return {
            "locks": {
                "held": sum(len(leases) for leases in self._leases.values()),
                "waiting": sum(len(queue) for queue in self._queues.values()),
                "acquired": s.acquired,
                "released": s.released,
                "lost": s.lost,
                "timeouts": s.timeouts,
                "redlock_masters": len(self._masters),
            }
        }

    def connection_closed(self, client: Client) -> None:
        for lease in (self._leases.pop(client.conn_id, None) or {}).values():
            self._stop_renewing(lease)
            self._background.start(self._release(lease))

    # -- methods --------------------------------------------------------------------------

    def acquire(self, client: Client, args: dict[str, Any]) -> Answer:
        key = self._keys.lock(client.namespace, args["name"])
        if args["wait_replicas"] > 0 and not isinstance(self._backend, SingleRedis):
            raise BadRequest(
                "lock.acquire: wait_replicas needs a single Redis (with replicas); Redlock's "
                "masters are independent, and its quorum is what keeps a lock"
            )
        if args["wait_ms"] > 0 or args["wait_replicas"] > 0:
            return self._wait_and_acquire(client, key, args)
        if key in self._queues:
            # Callers already waiting on this node come first.
            return then_do(self._backend.inspect(key), _busy)
        # A try: one attempt, no queue, nothing to wake.
        started = time.monotonic()
        token = self._tokens.next()
        tried = partial(self._tried, client, key, args, token, started)
        undo = partial(self._undo_attempt, key, token)
        return self._backend.try_acquire(key, token, args["ttl_ms"], tried, undo)

    def _tried(
        self,
        client: Client,
        key: str,
        args: dict[str, Any],
        token: str,
        started: float,
        attempt: Attempt,
    ) -> dict[str, Any]:
        if attempt.acquired:
            return self._grant(client, key, args, token, attempt, started)
        return {"acquired": False, "ttl_ms": max(attempt.ttl_ms, 0)}

    def _undo_attempt(self, key: str, token: str) -> None:
        """The caller went away during an attempt that may have taken the lock: a release
        of its token, queued behind the attempt on the same link, undoes it (and does
        nothing if it was not taken)."""
        self._background.start(self._backend.release(key, token))

    async def _wait_and_acquire(
        self, client: Client, key: str, args: dict[str, Any]
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + args["wait_ms"] / 1000
        queue = self._queues.setdefault(key, collections.deque())
        turn: asyncio.Future[None] = loop.create_future()
        queue.append(turn)
        if len(queue) == 1:
            turn.set_result(None)
        try:
            if not turn.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(turn), max(deadline - loop.time(), 0))
                if not turn.done():
                    self._stats.timeouts += 1
                    return {"acquired": False, "ttl_ms": (await self._backend.inspect(key)).ttl_ms}
            return await self._attempt_until(client, key, args, deadline)
        finally:
            self._leave_queue(key, turn)

    async def _attempt_until(
        self, client: Client, key: str, args: dict[str, Any], deadline: float
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        while True:
            woken = self._wake_on(key)  # before asking: a release in between still wakes us
            started = time.monotonic()
            token = self._tokens.next()
            flag_ms = self._waiter_flag_ms if args["wait_ms"] > 0 else 0
            attempt = await self._attempt(key, token, args, flag_ms)
            if attempt.acquired:
                return self._grant(client, key, args, token, attempt, started)
            remaining = deadline - loop.time()
            if remaining <= 0:
                if args["wait_ms"]:
                    self._stats.timeouts += 1
                return {"acquired": False, "ttl_ms": max(attempt.ttl_ms, 0)}
            # Woken by the release; else retry when the holder's lease would run out.
            pause = min(remaining, self._config.lock_retry_max_ms / 1000)
            if attempt.ttl_ms > 0:
                pause = min(pause, attempt.ttl_ms / 1000 + 0.001)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(woken), pause)

    async def _attempt(
        self, key: str, token: str, args: dict[str, Any], waiting_ms: int
    ) -> Attempt:
        try:
            replicas = args["wait_replicas"]
            if replicas > 0 and isinstance(self._backend, SingleRedis):
                return await self._backend.acquire_replicated(
                    await self._durable_gateway(),
                    key,
                    token,
                    args["ttl_ms"],
                    waiting_ms,
                    replicas,
                    self._wait_replicas_timeout_ms,
                )
            return await self._backend.acquire(key, token, args["ttl_ms"], waiting_ms)
        except asyncio.CancelledError:
            self._undo_attempt(key, token)
            raise

    async def _durable_gateway(self) -> RedisGateway:
        """The connection for acquisitions that WAIT for replicas, opened on first use."""
        if self._durable is None:
            self._durable = self._gateway.sibling("madsidecar-locks-wait")
            self._durable.start()
        # Not connected in time: its commands fail as UNAVAILABLE, like the main link's.
        await self._durable.wait_connected(self._gateway.timeout_s)
        return self._durable

    def _grant(
        self,
        client: Client,
        key: str,
        args: dict[str, Any],
        token: str,
        attempt: Attempt,
        started: float,
    ) -> dict[str, Any]:
        valid_until = started + attempt.ttl_ms / 1000
        lease = Lease(key, args["name"], token, attempt.fence, args["ttl_ms"], client, valid_until)
        if client.closed:
            # The caller went away while we were asking: nobody can release it but us.
            self._background.start(self._release(lease))
            return {"acquired": False, "ttl_ms": 0}
        self._stats.acquired += 1
        self._leases.setdefault(client.conn_id, {})[key] = lease
        lease.renew = args["renew"]
        if lease.renew:
            self._schedule_renewal(lease, lease.ttl_ms / 3000)
        else:
            lease.timer = asyncio.get_running_loop().call_at(
                _loop_time(lease.valid_until), self._lose, lease, "the lease ran out (renew=false)"
            )
        return {"acquired": True, "token": token, "fence": attempt.fence, "ttl_ms": attempt.ttl_ms}

    def release(self, client: Client, args: dict[str, Any]) -> Answer:
        key = self._keys.lock(client.namespace, args["name"])
        token = args["token"]
        released = partial(self._released, client, key, token)
        return self._backend.release_then(key, token, released)

    def _released(self, client: Client, key: str, token: str, released: bool) -> dict[str, Any]:
        # Forgotten only now: had Redis not answered, the lease would still be renewed,
        # and released when the connection closes.
        owned = self._leases.get(client.conn_id)
        lease = owned.get(key) if owned is not None else None
        if owned is not None and lease is not None and lease.token == token:
            del owned[key]
            self._stop_renewing(lease)
        if released:
            self._stats.released += 1
            self._wake(key)
        return {"released": released}

    async def extend(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        key = self._keys.lock(client.namespace, args["name"])
        started = time.monotonic()
        extended = await self._backend.extend(key, args["token"], args["ttl_ms"])
        lease = self._leases.get(client.conn_id, {}).get(key)
        if extended and lease is not None and lease.token == args["token"]:
            lease.ttl_ms = args["ttl_ms"]
            lease.valid_until = started + self._validity_s(args["ttl_ms"])
        return {"extended": extended, "ttl_ms": args["ttl_ms"] if extended else 0}

    async def inspect(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        found = await self._backend.inspect(self._keys.lock(client.namespace, args["name"]))
        return {"held": found.held, "ttl_ms": found.ttl_ms, "fence": found.fence}

    # -- leases ---------------------------------------------------------------------------

    def _schedule_renewal(self, lease: Lease, delay_s: float) -> None:
        self._renewals.schedule(lease, max(delay_s, MIN_RENEW_S))

    def _renewal_due(self, lease: Lease) -> None:
        lease.renewer = asyncio.create_task(self._renew(lease), name=f"renew {lease.key}")

    async def _renew(self, lease: Lease) -> None:
        started = time.monotonic()
        try:
            still_ours = await self._backend.extend(lease.key, lease.token, lease.ttl_ms)
        except Exception as exc:
            reason = exc.message if isinstance(exc, SidecarError) else repr(exc)
            left = lease.valid_until - time.monotonic()
            # Say so while the lease still stands, not after: the owner must stop in time.
            if left <= lease.ttl_ms / 10000:
                self._lose(lease, f"could not renew, {max(left, 0) * 1000:.0f} ms left: {reason}")
            else:
                self._schedule_renewal(lease, min(lease.ttl_ms / 3000, left / 2))
            return
        finally:
            lease.renewer = None
        if not still_ours:
            self._lose(lease, "the lease expired or was taken over")
            return
        lease.valid_until = started + self._validity_s(lease.ttl_ms)
        if self._owns(lease):
            self._schedule_renewal(lease, lease.ttl_ms / 3000)

    def _owns(self, lease: Lease) -> bool:
        return self._leases.get(lease.owner.conn_id, {}).get(lease.key) is lease

    def _validity_s(self, ttl_ms: int) -> float:
        drift = drift_ms(ttl_ms) if isinstance(self._backend, Redlock) else 0
        return (ttl_ms - drift) / 1000

    def _lose(self, lease: Lease, reason: str) -> None:
        owned = self._leases.get(lease.owner.conn_id, {})
        if owned.get(lease.key) is not lease:
            return  # released or lost already
        del owned[lease.key]
        self._stop_renewing(lease)
        self._stats.lost += 1
        log.warning("lock_lost", name=lease.name, fence=lease.fence, reason=reason)
        if not lease.owner.closed:
            lease.owner.notify(
                "lock.lost", {"name": lease.name, "token": lease.token, "fence": lease.fence}
            )

    def _stop_renewing(self, lease: Lease) -> None:
        self._renewals.cancel(lease)
        if lease.timer is not None:
            lease.timer.cancel()
            lease.timer = None
        if lease.renewer is not None and lease.renewer is not asyncio.current_task():
            lease.renewer.cancel()
            lease.renewer = None

    async def _release(self, lease: Lease) -> None:
        try:
            if await self._backend.release(lease.key, lease.token):
                self._stats.released += 1
                self._wake(lease.key)
        except Exception as exc:
            left_ms = max(int((lease.valid_until - time.monotonic()) * 1000), 0)
            log.warning(
                "lock_release_failed", name=lease.name, expires_in_ms=left_ms, reason=str(exc)
            )

    # -- waiting --------------------------------------------------------------------------

    def _leave_queue(self, key: str, turn: asyncio.Future[None]) -> None:
        queue = self._queues.get(key)
        if queue is None:
            return
        was_head = bool(queue) and queue[0] is turn
        with contextlib.suppress(ValueError):
            queue.remove(turn)
        if not queue:
            del self._queues[key]
        elif was_head and not queue[0].done():
            queue[0].set_result(None)

    def _wake_on(self, key: str) -> asyncio.Future[None]:
        woken = self._wakes.get(key)
        if woken is None or woken.done():
            woken = asyncio.get_running_loop().create_future()
            self._wakes[key] = woken
        return woken

    def _wake(self, key: str) -> None:
        woken = self._wakes.pop(key, None)
        if woken is not None and not woken.done():
            woken.set_result(None)

    def feed_message(self, channel: bytes, data: bytes) -> None:
        self._wake(data.decode("utf-8", "surrogateescape"))

    def feed_invalidated(self, keys: list[bytes] | None) -> None:
        return None

    def feed_up(self) -> None:
        # Releases may have been missed while the subscription was down.
        for key in list(self._wakes):
            self._wake(key)

    def feed_down(self, reason: str) -> None:
        log.warning("lock_wakeups_lost", reason=reason, fallback="retry polling")


def _loop_time(monotonic_at: float) -> float:
    """A time.monotonic() instant on the event loop's clock."""
    return asyncio.get_running_loop().time() + (monotonic_at - time.monotonic())
