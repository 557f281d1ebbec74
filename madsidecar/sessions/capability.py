"""session.*: shared auth sessions, validated from memory, revoked everywhere at once.

Tokens are 256 random bits after the user's shard (see `keys`); Redis and the logs only
ever see a digest of them (SHA-256, or HMAC-SHA256 with `session_secret_file`).
`session.get` is answered from this node's L1 while the cache's invalidation feed is
proven live: every change of a record in Redis (revoke, rotate, update, revoke_user, a
touch, an expiry) drops it from every node's L1, and an entry lives there
`session_l1_ttl_ms` at most in case an invalidation is lost.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import structlog

from ..cache import Cache
from ..cache.guard import ReadGuard
from ..config import Config, read_session_secret
from ..errors import BadRequest
from ..methods import Arg, CapabilityBase, Client, Method
from ..redis_gateway import RedisGateway
from ..redis_scripts import LuaScript
from .keys import SessionKeys

log = structlog.get_logger("madsidecar.sessions")

SCRIPTS: Final = (
    "create",
    "touch",
    "update",
    "rotate",
    "revoke",
    "revoke_id",
    "revoke_user",
    "list",
)
MAX_TOKEN_CHARS: Final = 512
TOKEN_BYTES: Final = 32  # 256 bits
SESSION_ID_BYTES: Final = 16
SHARD_CHARS: Final = 4
HEX_DIGITS: Final = frozenset("0123456789abcdef")
MAX_TTL_MS: Final = 366 * 86_400_000


@dataclass(slots=True)
class Entry:
    """A session as `session.get` answers it, and until when L1 may answer with it."""

    result: dict[str, Any]
    fresh_until: float  # monotonic
    seen_ms: int
    expires_at_ms: int


class SessionStats:
    __slots__ = ("created", "invalidations", "l1_hits", "reads", "revoked")

    def __init__(self) -> None:
        self.created = self.revoked = self.l1_hits = self.reads = self.invalidations = 0


class Sessions(CapabilityBase):
    group = "session"

    def __init__(self, config: Config, gateway: RedisGateway, cache: Cache) -> None:
        self._config = config
        self._gateway = gateway
        self._cache = cache
        self._keys = SessionKeys(config.key_prefix)
        self._secret = read_session_secret(config)
        self._scripts = {name: LuaScript.beside(__name__, f"{name}.lua") for name in SCRIPTS}
        self._l1: collections.OrderedDict[str, Entry] = collections.OrderedDict()
        self._guard = ReadGuard()
        self._stats = SessionStats()
        cache.share_feed(self._keys.root, self)

    def methods(self) -> Iterable[Method]:
        token = Arg("token", "str")
        user_id = Arg("user_id", "name")
        return (
            Method(
                "session.create",
                self.create,
                (
                    user_id,
                    Arg("data", "any", None),
                    Arg("idle_ttl_ms", "int", 1_800_000, minimum=10, maximum=MAX_TTL_MS),
                    Arg("absolute_ttl_ms", "int", 604_800_000, minimum=10, maximum=MAX_TTL_MS),
                ),
            ),
            Method("session.get", self.get, (token, Arg("touch", "bool", True))),
            Method("session.update", self.update, (token, Arg("data", "any"))),
            Method("session.rotate", self.rotate, (token,)),
            Method(
                "session.revoke",
                self.revoke,
                (Arg("token", "str", None), Arg("session_id", "name", None)),
            ),
            Method(
                "session.revoke_user",
                self.revoke_user,
                (user_id, Arg("except_session_id", "name", None)),
            ),
            Method("session.list", self.list_sessions, (user_id,)),
        )

    def stats(self) -> dict[str, Any]:
        s = self._stats
        return {
            "sessions": {
                "l1_hits": s.l1_hits,
                "l1_entries": len(self._l1),
                "reads": s.reads,
                "created": s.created,
                "revoked": s.revoked,
                "invalidations": s.invalidations,
            }
        }

    # -- methods --------------------------------------------------------------------------

    async def create(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        namespace, user_id = client.namespace, args["user_id"]
        shard = self._user_shard(user_id)
        token = f"{shard}.{secrets.token_urlsafe(TOKEN_BYTES)}"
        session_id = f"{shard}.{secrets.token_urlsafe(SESSION_ID_BYTES)}"
        digest = self._digest(token)
        data = {} if args["data"] is None else args["data"]
        expires_at_ms, _ = await self._scripts["create"].call(
            self._gateway,
            [
                self._keys.record(namespace, shard, digest),
                self._keys.by_id(namespace, shard, session_id),
                self._keys.user(namespace, shard, user_id),
            ],
            [
                session_id,
                user_id,
                msgpack.packb(data, use_bin_type=True),
                args["idle_ttl_ms"],
                args["absolute_ttl_ms"],
                digest,
            ],
        )
        self._stats.created += 1
        return {"token": token, "session_id": session_id, "expires_at_ms": int(expires_at_ms)}

    def get(self, client: Client, args: dict[str, Any]) -> Any:
        key = self._record_key(client.namespace, args["token"])
        entry = self._l1_entry(key)
        if entry is not None and not (args["touch"] and self._touch_due(entry)):
            self._stats.l1_hits += 1
            return entry.result
        return self._read(key, args["touch"])

    async def update(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        key = self._record_key(client.namespace, args["token"])
        data = msgpack.packb(args["data"], use_bin_type=True)
        updated = await self._scripts["update"].call(self._gateway, [key], [data])
        self._drop(key)
        return {"updated": bool(updated)}

    async def rotate(self, client: Client, args: dict[str, Any]) -> dict[str, Any] | None:
        namespace = client.namespace
        old = self._record_key(namespace, args["token"])
        shard = _shard(args["token"])
        token = f"{shard}.{secrets.token_urlsafe(TOKEN_BYTES)}"
        digest = self._digest(token)
        new = self._keys.record(namespace, shard, digest)
        rotated = await self._scripts["rotate"].call(
            self._gateway, [old, new], [digest, self._keys.scope(namespace, shard)]
        )
        self._drop(old)
        return {"token": token} if rotated else None

    async def revoke(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        namespace, token, session_id = client.namespace, args["token"], args["session_id"]
        if (token is None) == (session_id is None):
            raise BadRequest(
                "session.revoke: give either token or session_id", argument="session_id"
            )
        shard = _shard(token if token is not None else session_id)
        scope = self._keys.scope(namespace, shard)
        if token is not None:
            key = self._record_key(namespace, token)
            found = await self._scripts["revoke"].call(self._gateway, [key], [scope])
            revoked_id = found.decode() if found else None
        else:
            digest = await self._scripts["revoke_id"].call(
                self._gateway,
                [self._keys.by_id(namespace, shard, session_id)],
                [scope, session_id],
            )
            key = self._keys.record(namespace, shard, digest.decode()) if digest else ""
            revoked_id = session_id if digest else None
        self._drop(key)
        revoked = revoked_id is not None
        if revoked:
            self._stats.revoked += 1
            log.info("session_revoked", session_id=revoked_id)
        return {"revoked": revoked}

    async def revoke_user(self, client: Client, args: dict[str, Any]) -> dict[str, Any]:
        namespace, user_id = client.namespace, args["user_id"]
        shard = self._user_shard(user_id)
        digests = await self._scripts["revoke_user"].call(
            self._gateway,
            [self._keys.user(namespace, shard, user_id)],
            [self._keys.scope(namespace, shard), args["except_session_id"] or ""],
        )
        for digest in digests:
            self._drop(self._keys.record(namespace, shard, digest.decode()))
        self._stats.revoked += len(digests)
        log.info(
            "sessions_revoked_for_user",
            revoked=len(digests),
            kept=args["except_session_id"],
        )
        return {"revoked": len(digests)}

    async def list_sessions(self, client: Client, args: dict[str, Any]) -> list[dict[str, Any]]:
        namespace, user_id = client.namespace, args["user_id"]
        shard = self._user_shard(user_id)
        rows = await self._scripts["list"].call(
            self._gateway,
            [self._keys.user(namespace, shard, user_id)],
            [self._keys.scope(namespace, shard)],
        )
        return [
            {
                "session_id": sid.decode(),
                "created_at_ms": int(created),
                "last_seen_ms": int(seen),
                "expires_at_ms": int(expires),
                "data": msgpack.unpackb(data, raw=False, strict_map_key=False),
            }
            for sid, created, seen, expires, data in rows
        ]

    # -- reads and L1 ---------------------------------------------------------------------

    async def _read(self, key: str, touch: bool) -> dict[str, Any] | None:
        generation = self._guard.begin(key)
        fresh = False
        try:
            self._stats.reads += 1
            if touch:
                fields = await self._scripts["touch"].call(
                    self._gateway,
                    [key],
                    [self._config.session_touch_interval_ms, _scope_of(key)],
                )
            else:
                fields = await self._gateway.execute("HGETALL", key)
            fresh = True
        finally:
            fresh = self._guard.end(key, generation) and fresh
        if not fields:
            return None
        record = _record(fields)
        if fresh:
            self._remember(key, record)
        return record.result

    def _l1_entry(self, key: str) -> Entry | None:
        entry = self._l1.get(key)
        if entry is None:
            return None
        if not self._cache.feed_live or time.monotonic() >= entry.fresh_until:
            del self._l1[key]
            return None
        if _now_ms() >= entry.expires_at_ms:
            del self._l1[key]
            return None
        self._l1.move_to_end(key)
        return entry

    def _remember(self, key: str, record: Entry) -> None:
        limit = self._config.session_l1_max_entries
        lifetime_ms = min(self._config.session_l1_ttl_ms, record.expires_at_ms - _now_ms())
        if limit == 0 or lifetime_ms <= 0 or not self._cache.feed_live:
            return
        record.fresh_until = time.monotonic() + lifetime_ms / 1000
        self._l1[key] = record
        self._l1.move_to_end(key)
        while len(self._l1) > limit:
            self._l1.popitem(last=False)

    def _touch_due(self, entry: Entry) -> bool:
        return _now_ms() - entry.seen_ms >= self._config.session_touch_interval_ms

    def _drop(self, key: str) -> None:
        """Our own write: L1 must not answer with the old record, even before the
        invalidation comes back through the feed."""
        if key:
            self._l1.pop(key, None)
            self._guard.invalidated(key)

    def _record_key(self, namespace: str, token: str) -> str:
        return self._keys.record(namespace, _shard(_token(token)), self._digest(token))

    def _user_shard(self, user_id: str) -> str:
        """The user's shard: keyed like token digests, so it tells nothing of the id."""
        return self._digest("user\0" + user_id)[:SHARD_CHARS]

    def _digest(self, token: str) -> str:
        raw = token.encode("utf-8", "surrogatepass")
        if self._secret is not None:
            return hmac.new(self._secret, raw, hashlib.sha256).hexdigest()
        return hashlib.sha256(raw).hexdigest()

    # -- the invalidation feed (shared with the cache) ------------------------------------

    def keys_invalidated(self, keys: list[str]) -> None:
        for key in keys:
            if self._keys.is_record(key):
                self._stats.invalidations += 1
                self._l1.pop(key, None)
                self._guard.invalidated(key)

    def all_invalidated(self) -> None:
        self._l1.clear()
        self._guard.invalidated_all()


def _token(value: str) -> str:
    if not value or len(value) > MAX_TOKEN_CHARS:
        raise BadRequest(
            f"session: argument 'token' must be 1 to {MAX_TOKEN_CHARS} characters",
            argument="token",
        )
    return value


def _shard(token_or_id: str) -> str:
    """The shard a token or session id starts with; "" for one made by no sidecar of this
    layout (it then names no session)."""
    shard, dot, _ = token_or_id.partition(".")
    if dot and len(shard) == SHARD_CHARS and HEX_DIGITS.issuperset(shard):
        return shard
    return ""


def _scope_of(record_key: str) -> str:
    """The key root a record key starts with (up to and with its `t:`'s colon)."""
    return record_key[: record_key.rindex("}:") + 2]


def _record(fields: list[bytes]) -> Entry:
    raw = dict(zip(fields[::2], fields[1::2], strict=True))
    seen = int(raw[b"seen"])
    expires = int(raw[b"exp"])
    result = {
        "session_id": raw[b"sid"].decode(),
        "user_id": raw[b"uid"].decode(),
        "data": msgpack.unpackb(raw[b"data"], raw=False, strict_map_key=False),
        "created_at_ms": int(raw[b"created"]),
        "last_seen_ms": seen,
        "expires_at_ms": expires,
    }
    return Entry(result, 0.0, seen, expires)


def _now_ms() -> int:
    return int(time.time() * 1000)
