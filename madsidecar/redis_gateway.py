"""The one component that owns the sidecar's connection to Redis.

Commands issued by any client connection during one event-loop turn are written to Redis
as one pipeline on a single multiplexed connection, and their replies are matched back in
order (Redis answers a connection's commands in the order it received them). redis-py
supplies the connection itself: URL parsing, AUTH, TLS and the RESP parser.

Every command has a deadline (`redis_timeout_ms`); while the link is down, commands fail
at once with `UNAVAILABLE` carrying `retry_after_ms`. A supervisor reconnects with
exponential backoff and a health probe notices a hung Redis.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import hiredis
import redis.asyncio as aioredis
import structlog
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .config import Config, read_redis_password, read_sentinel_password, redact_url
from .deferred import Reply
from .errors import SidecarError, Unavailable
from .redis_urls import is_cluster_url, is_sentinel_url, parse_sentinel_url, uses_tls

if TYPE_CHECKING:
    from .redis_cluster import ClusterRouter

BACKOFF_FIRST_S: Final = 0.05
BACKOFF_MAX_S: Final = 2.0
BACKOFF_MS: Final = int(BACKOFF_FIRST_S * 1000)
READ_ONLY: Final = "the server is a read-only replica now (a failover?)"

log = structlog.get_logger("madsidecar.redis")


# Replies that say "not now" rather than "wrong": Redis loading its data after a restart,
# a script running too long, no master or not enough replicas, persistence failing. The
# caller may retry: UNAVAILABLE, not INTERNAL (found by the chaos run: LOADING).
NOT_NOW_REPLIES: Final = frozenset({"LOADING", "BUSY", "MASTERDOWN", "NOREPLICAS", "MISCONF"})


class RedisCommandError(SidecarError):
    """Redis answered a command with an error reply (a bug on our side if it happens).
    `reply_code` is the reply's first word (NOSCRIPT, WRONGTYPE, ...)."""

    def __init__(self, message: str, reply_code: str = "") -> None:
        super().__init__(message)
        self.reply_code = reply_code


@dataclass(frozen=True)
class RedisSettings:
    url: str
    password: str | None
    timeout_ms: int
    connect_timeout_ms: int
    health_interval_ms: int
    # ACL user and TLS files; the URL's own user and password win over these.
    username: str | None = None
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    client_name: str = "madsidecar"
    # A Sentinel URL's sentinels, when they require a password of their own.
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    def tls_options(self) -> dict[str, Any]:
        """redis-py's TLS arguments when the URL asks for TLS, else none."""
        if not uses_tls(self.url):
            return {}
        return {
            "ssl_ca_certs": self.tls_ca_file,
            "ssl_certfile": self.tls_cert_file,
            "ssl_keyfile": self.tls_key_file,
        }

    def connection_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"password": self.password, **self.tls_options()}
        if self.username is not None:
            options["username"] = self.username
        return options


def redis_settings(config: Config, url: str) -> RedisSettings:
    """How to reach the Redis at `url` (the main one, or a Redlock master)."""
    return RedisSettings(
        url=url,
        password=read_redis_password(config),
        timeout_ms=config.redis_timeout_ms,
        connect_timeout_ms=config.redis_connect_timeout_ms,
        health_interval_ms=config.redis_health_interval_ms,
        username=config.redis_username,
        tls_ca_file=config.redis_tls_ca_file,
        tls_cert_file=config.redis_tls_cert_file,
        tls_key_file=config.redis_tls_key_file,
        sentinel_username=config.redis_sentinel_username,
        sentinel_password=read_sentinel_password(config),
    )


def _connection_pool(settings: RedisSettings) -> aioredis.ConnectionPool:
    """Where the gateway's connections come from: the URL's Redis, or for a Sentinel URL
    whichever node the sentinels name as master when a connection is made (so every
    reconnect after a failover finds the new master)."""
    options: dict[str, Any] = {
        **settings.connection_options(),
        "socket_connect_timeout": settings.connect_timeout_ms / 1000,
        "socket_timeout": None,
        "health_check_interval": 0,
        "retry": Retry(NoBackoff(), 0),
        "protocol": 2,
        "client_name": settings.client_name,
    }
    if not is_sentinel_url(settings.url):
        return aioredis.ConnectionPool.from_url(settings.url, **options)
    target = parse_sentinel_url(settings.url)
    if target.username is not None:
        options["username"] = target.username
    if target.password is not None:
        options["password"] = target.password
    # A sentinel that does not answer is skipped after the connect timeout, not waited on.
    timeout = settings.connect_timeout_ms / 1000
    sentinel_options: dict[str, Any] = {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "username": settings.sentinel_username,
        "password": settings.sentinel_password,
        **settings.tls_options(),
    }
    if target.tls:
        options["ssl"] = sentinel_options["ssl"] = True
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=sentinel_options
    )
    return SentinelConnectionPool(target.service, sentinels, **options)  # type: ignore[no-untyped-call]


class MergedCommand(Protocol):
    """A kind of command whose calls, queued back to back on a link, go to Redis as one:
    `command(parts)` is that one command, and its reply is a list with one reply per part,
    in order (an error reply in the list fails that part alone)."""

    def command(self, parts: list[Any]) -> tuple[Any, ...]: ...

    def packed(self, parts: list[Any]) -> bytes:
        """`command(parts)` encoded in Redis's protocol (TypeError or ValueError if an
        argument cannot be)."""
        ...


# Enough to amortise a command's cost many times over, small enough that one call never
# holds Redis for long.
MAX_MERGED_PARTS: Final = 64


class _Merged:
    """The parts of one merged command: answered together, failed together, and each
    part's future finished with its own reply. Quacks like the future a plain command
    waits on, so the link's queue, deadlines and failure paths treat both alike."""

    __slots__ = ("futures", "kind", "parts")

    def __init__(self, kind: MergedCommand) -> None:
        self.kind = kind
        self.parts: list[Any] = []
        self.futures: list[Reply] = []

    def done(self) -> bool:
        return all(future.done() for future in self.futures)

    def set_exception(self, error: BaseException) -> None:
        """Fails every part not answered yet."""
        for future in self.futures:
            if not future.done():
                future.set_exception(error)

    def resolve(self, reply: Any) -> bool:
        """Each part's reply to its future; True if one said the master was demoted."""
        futures = self.futures
        if type(reply) is not list or len(reply) != len(futures):
            self.set_exception(RedisCommandError(f"redis answered a merged command with {reply!r}"))
            return False
        demoted = False
        for part_reply, future in zip(reply, futures, strict=True):
            if future.done():
                continue
            if type(part_reply) is hiredis.ReplyError:
                error, read_only = _reply_error(part_reply)
                demoted = demoted or read_only
                future.set_exception(error)
            else:
                future.set_result(part_reply)
        return demoted


def single_part(kind: MergedCommand, whole: asyncio.Future[Any]) -> Reply:
    """The reply of a `kind` command of one part, sent alone (`whole`): the part's own
    reply, or its error."""
    merged = _Merged(kind)
    part = Reply()
    merged.futures.append(part)

    def answered(_: asyncio.Future[Any]) -> None:
        if whole.cancelled():
            part.set_exception(
                Unavailable("redis unavailable: the command was cancelled", BACKOFF_MS)
            )
            return
        error = whole.exception()
        if error is not None:
            merged.set_exception(error)
        else:
            merged.resolve(whole.result())

    whole.add_done_callback(answered)
    return part


class PipelineCounters:
    """How many commands went to Redis, in how many pipelines (writes)."""

    __slots__ = ("commands", "pipelines")

    def __init__(self) -> None:
        self.commands = 0
        self.pipelines = 0


class _Link:
    """One connection to Redis, used as a FIFO pipe of commands.

    redis-py opens it (URL, AUTH, TLS, SELECT); after that handshake the byte stream is
    ours: commands are packed by hiredis and written straight to the stream, and replies
    are parsed by a hiredis Reader as they arrive, every buffered reply in one pass.
    redis-py's own per-reply read path costs about three times as much.
    """

    def __init__(
        self, conn: AbstractConnection, timeout_s: float, counters: PipelineCounters
    ) -> None:
        self._conn = conn
        # redis-py keeps the connected transport behind its StreamWriter; once its
        # handshake is done the byte stream is ours, read by a plain Protocol: replies are
        # parsed in data_received, with no reader task to wake per batch.
        writer: asyncio.StreamWriter = conn._writer  # type: ignore[assignment]
        self._transport = cast(asyncio.Transport, writer.transport)
        self._parser = hiredis.Reader()
        self._counters = counters
        self._timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        self._queue: _Batch = []
        # Batches still owed replies, oldest first, with their deadlines; one timer for
        # the oldest, so an answered batch is freed at once rather than at its deadline.
        self._deadlines: collections.deque[tuple[float, _Batch]] = collections.deque()
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._awaiting_reply: collections.deque[_Waiter] = collections.deque()
        self.failure: str | None = None
        self.dead = asyncio.Event()
        self._transport.set_protocol(_LinkProtocol(self))

    def submit(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = self._loop.create_future()
        self._enqueue(args, future)
        return future

    def submit_merged(self, kind: MergedCommand, part: Any) -> Reply:
        """One part of a `kind` command, merged into the command queued just before it if
        that is one of the same kind: nothing queued in between, so the order of
        everything on the link stays exactly as submitted."""
        future = Reply()
        queue = self._queue
        merged = queue[-1][1] if queue else None
        if (
            type(merged) is not _Merged
            or merged.kind is not kind
            or len(merged.parts) >= MAX_MERGED_PARTS
        ):
            merged = _Merged(kind)
            self._enqueue(None, merged)
        merged.parts.append(part)
        merged.futures.append(future)
        return future

    def _enqueue(self, args: tuple[Any, ...] | None, waiter: _Waiter) -> None:
        if not self._queue:
            # Everything submitted in this loop turn goes out as one write.
            self._loop.call_soon(self._flush)
            # The deadline runs from submission, so commands stuck behind a write that
            # Redis is not reading still fail in time.
            self._deadlines.append((self._loop.time() + self._timeout_s, self._queue))
            if self._deadline_timer is None:
                self._arm_deadline_timer()
        self._queue.append((args, waiter))

    def _flush(self) -> None:
        batch, self._queue = self._queue, []
        if not batch or self.failure is not None:
            return
        chunks = []
        awaiting = self._awaiting_reply
        for args, waiter in batch:
            try:
                if args is None:
                    assert type(waiter) is _Merged
                    chunks.append(waiter.kind.packed(waiter.parts))
                else:
                    chunks.append(hiredis.pack_command(args))
            except (TypeError, ValueError) as exc:
                if not waiter.done():
                    name = "a merged command" if args is None else repr(args[0])
                    waiter.set_exception(RedisCommandError(f"cannot send {name}: {exc}"))
                continue
            awaiting.append(waiter)
        self._counters.pipelines += 1
        self._counters.commands += len(chunks)
        try:
            self._transport.write(b"".join(chunks))
        except Exception as exc:
            self.fail(f"write failed: {exc}")

    def _arm_deadline_timer(self) -> None:
        when = self._deadlines[0][0]
        self._deadline_timer = self._loop.call_at(when, self._on_deadline)

    def _on_deadline(self) -> None:
        self._deadline_timer = None
        now = self._loop.time()
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _expire(deadlines.popleft()[1], self._timeout_s)
        if deadlines:
            self._arm_deadline_timer()

    def data_received(self, data: bytes) -> None:
        if self.failure is not None:
            return
        parser = self._parser
        awaiting = self._awaiting_reply
        deadlines = self._deadlines
        demoted = False
        try:
            parser.feed(data)
            while (reply := parser.gets()) is not False:
                waiter = awaiting.popleft()
                if type(reply) is hiredis.ReplyError:
                    error, read_only = _reply_error(reply)
                    demoted = demoted or read_only
                    if not waiter.done():
                        waiter.set_exception(error)
                elif type(waiter) is _Merged:
                    demoted = waiter.resolve(reply) or demoted
                elif not waiter.done():
                    cast("asyncio.Future[Any]", waiter).set_result(reply)
                if deadlines and deadlines[0][1] and deadlines[0][1][-1][1] is waiter:
                    deadlines.popleft()  # the oldest batch has all its replies
        except IndexError:
            self.fail("redis sent a reply nobody asked for")
            return
        except Exception as exc:
            self.fail(f"unreadable reply: {exc}" if str(exc) else "unreadable reply")
            return
        if demoted:
            # A failover turned this master into a replica: reconnect, which finds the
            # new master (through the sentinels, for a Sentinel URL).
            self.fail(READ_ONLY)

    def fail(self, reason: str) -> None:
        if self.failure is not None:
            return
        self.failure = reason
        error = Unavailable(
            f"redis unavailable: {reason}", retry_after_ms=int(BACKOFF_FIRST_S * 1000)
        )
        for waiter in self._awaiting_reply:
            if not waiter.done():
                waiter.set_exception(error)
        for _, waiter in self._queue:
            if not waiter.done():
                waiter.set_exception(error)
        self._awaiting_reply.clear()
        self._queue.clear()
        self._deadlines.clear()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self.dead.set()

    async def close(self) -> None:
        self.fail("closed")
        with contextlib.suppress(Exception):
            await self._conn.disconnect(nowait=True)


class _LinkProtocol(asyncio.Protocol):
    def __init__(self, link: _Link) -> None:
        self._link = link

    def data_received(self, data: bytes) -> None:
        self._link.data_received(data)

    def eof_received(self) -> bool | None:
        self._link.fail("connection closed by Redis")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._link.fail(f"connection lost: {exc}" if exc else "connection closed by Redis")


def _command_error(reply: hiredis.ReplyError) -> RedisCommandError:
    text = str(reply)
    return RedisCommandError(f"redis error reply: {text}", text.split(" ", 1)[0])


def _reply_error(reply: hiredis.ReplyError) -> tuple[SidecarError, bool]:
    """What an error reply means to the caller, and whether it says the master was
    demoted to a replica."""
    command_error = _command_error(reply)
    if command_error.reply_code == "READONLY":
        return Unavailable(f"redis unavailable: {READ_ONLY}", BACKOFF_MS), True
    if command_error.reply_code in NOT_NOW_REPLIES:
        return Unavailable(f"redis unavailable: {reply}", BACKOFF_MS), False
    return command_error, False


# A plain command waits on its future; the parts of a merged command on their _Merged.
# set_exception on either fails whatever is not done yet.
_Waiter = asyncio.Future[Any] | _Merged
_Batch = list[tuple[tuple[Any, ...] | None, _Waiter]]


def _expire(batch: _Batch, timeout_s: float) -> None:
    error: Unavailable | None = None
    for _, waiter in batch:
        if not waiter.done():
            if error is None:
                error = Unavailable(
                    f"redis did not answer within {int(timeout_s * 1000)} ms",
                    retry_after_ms=int(timeout_s * 1000),
                )
            waiter.set_exception(error)


class RedisGateway:
    """Auto-pipelined, supervised access to one Redis, or to a Redis Cluster through one
    gateway per master (`redis_cluster`)."""

    def __init__(self, settings: RedisSettings) -> None:
        self._settings = settings
        self._timeout_s = settings.timeout_ms / 1000
        self._link: _Link | None = None
        self._connected = asyncio.Event()
        self._closing = False
        self._next_attempt_at = 0.0
        self._last_error: str | None = None
        self._latency_us: int | None = None
        self.counters = PipelineCounters()
        self._tasks: list[asyncio.Task[None]] = []
        self._pool: aioredis.ConnectionPool | None = None
        self._cluster: ClusterRouter | None = None
        if is_cluster_url(settings.url):
            from .redis_cluster import ClusterRouter

            self._cluster = ClusterRouter(settings, self.counters)
        else:
            self._pool = _connection_pool(settings)

    @property
    def connected(self) -> bool:
        if self._cluster is not None:
            return self._cluster.connected
        return self._link is not None

    @property
    def latency_us(self) -> int | None:
        """The last health probe's round trip (the slowest master's, in a cluster)."""
        if self._cluster is not None:
            return self._cluster.latency_us
        return self._latency_us

    @property
    def is_cluster(self) -> bool:
        return self._cluster is not None

    def slot_of(self, key: str) -> int:
        """The key's hash slot in a cluster (0 on a single Redis): keys one script or
        one multi-key command touches must share it."""
        if self._cluster is None:
            return 0
        from .redis_cluster import slot_of

        return slot_of(key)

    def masters(self) -> list[RedisGateway]:
        """One gateway per master, for commands every master must run (SCAN)."""
        if self._cluster is None:
            return [self]
        return self._cluster.masters()

    def on_masters_changed(self, listener: Callable[[], None]) -> None:
        """`listener()` runs when a cluster's set of masters changes (never otherwise)."""
        if self._cluster is not None:
            self._cluster.on_masters_changed(listener)

    def spread_keys(self, base: str) -> list[str]:
        """Keys that land one on each master (`base` itself on a single Redis); `base`
        must hold no braces."""
        if self._cluster is None:
            return [base]
        return [f"{base}{{{tag}}}" for tag in self._cluster.master_tags()]

    def cluster_status(self) -> dict[str, Any] | None:
        return self._cluster.status() if self._cluster is not None else None

    def sibling(self, client_name: str) -> RedisGateway:
        """Another gateway to the same Redis, for commands that must not share this one's
        connection (WAIT blocks the connection it runs on). Not started."""
        return RedisGateway(replace(self._settings, client_name=client_name))

    @property
    def last_error(self) -> str | None:
        if self._cluster is not None:
            return self._cluster.last_error or next(
                (node.last_error for node in self._cluster.masters() if node.last_error), None
            )
        return self._last_error

    def start(self) -> None:
        if self._cluster is not None:
            self._cluster.start()
            return
        self._tasks = [
            asyncio.create_task(self._supervise(), name="redis-supervisor"),
            asyncio.create_task(self._probe_health(), name="redis-health"),
        ]

    async def wait_connected(self, timeout_s: float | None = None) -> bool:
        try:
            if self._cluster is not None:
                await asyncio.wait_for(self._cluster.wait_connected(), timeout_s)
            else:
                await asyncio.wait_for(self._connected.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def execute(self, *args: Any) -> asyncio.Future[Any]:
        """Queue one command; the reply (bytes, int, list, ...) or `Unavailable`."""
        link = self._link
        if link is None or link.failure is not None:
            if self._cluster is not None:
                return self._cluster.execute(args)
            return self._refused()
        return link.submit(args)

    def execute_merged(self, kind: MergedCommand, part: Any) -> Reply:
        """One part of a `kind` command: merged with the parts queued just before it on
        the link (`_Link.submit_merged`); in a cluster, whose parts could lie in different
        slots, sent alone. The part's own reply either way."""
        link = self._link
        if link is None or link.failure is not None:
            if self._cluster is not None:
                return single_part(kind, self._cluster.execute(kind.command([part])))
            return single_part(kind, self._refused())
        return link.submit_merged(kind, part)

    def execute_for(self, key: str, *args: Any) -> asyncio.Future[Any]:
        """`args` where `key` lives: in a cluster, on its slot's master (for commands that
        name no key but concern one, like WAIT after a write)."""
        if self._cluster is not None:
            return self._cluster.execute(args, self.slot_of(key))
        return self.execute(*args)

    def _refused(self) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        wait_ms = max(int((self._next_attempt_at - time.monotonic()) * 1000), 0)
        reason = self._last_error or "not connected yet"
        future.set_exception(Unavailable(f"redis unavailable: {reason}", retry_after_ms=wait_ms))
        return future

    async def close(self) -> None:
        self._closing = True
        if self._cluster is not None:
            await self._cluster.close()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2.0)
        if self._link is not None:
            await self._link.close()
            self._link = None
        if self._pool is not None:
            await self._pool.disconnect()

    async def _supervise(self) -> None:
        failures = 0
        while not self._closing:
            try:
                link = await self._open_link()
            except (RedisError, OSError, TimeoutError) as exc:
                failures += 1
                self._note_failure(str(exc) or type(exc).__name__, failures)
                delay = min(BACKOFF_FIRST_S * 2 ** (failures - 1), BACKOFF_MAX_S)
                delay *= random.uniform(0.8, 1.2)
                self._next_attempt_at = time.monotonic() + delay
                await asyncio.sleep(delay)
                continue
            if self._closing:
                await link.close()
                return
            failures = 0
            self._last_error = None
            self._link = link
            self._connected.set()
            log.info("redis_connected", url=redact_url(self._settings.url))
            await link.dead.wait()
            self._link = None
            self._connected.clear()
            self._last_error = link.failure
            self._latency_us = None
            await link.close()
            if not self._closing:
                log.warning("redis_disconnected", reason=link.failure)

    def _note_failure(self, reason: str, failures: int) -> None:
        self._last_error = reason
        # One line when the outage starts, then one a minute or so, not one per attempt.
        if failures == 1 or failures % 30 == 0:
            log.warning(
                "redis_unreachable",
                url=redact_url(self._settings.url),
                reason=reason,
                attempts=failures,
            )

    async def open_connection(self) -> AbstractConnection:
        """A new, connected redis-py connection with this gateway's URL and credentials,
        for work that cannot share the pipelined link (subscriptions); in a cluster, to
        some reachable master."""
        if self._cluster is not None:
            return await self._cluster.open_connection()
        assert self._pool is not None
        conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            # that arrives as the connect completes, and shutdown would then hang.
            async with asyncio.timeout(self._settings.connect_timeout_ms / 1000):
                await conn.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)
            raise
        return conn

    @property
    def timeout_s(self) -> float:
        return self._timeout_s

    async def _open_link(self) -> _Link:
        return _Link(await self.open_connection(), self._timeout_s, self.counters)

    async def _probe_health(self) -> None:
        interval = self._settings.health_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            link = self._link
            if link is None:
                continue
            started = time.perf_counter()
            try:
                await link.submit(("PING",))
            except SidecarError as exc:
                link.fail(f"health probe failed: {exc.message}")
                continue
            self._latency_us = round((time.perf_counter() - started) * 1_000_000)
