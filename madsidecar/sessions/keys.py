"""Where sessions live in Redis, under `<prefix>s:{<len(ns)>:<ns>:<shard>}:`:

- `t:<digest>`: the record, a hash, keyed by the token's digest (never the token);
- `i:<session_id>`: the digest of the session's current token, for revoke by id;
- `u:<user_id>`: the user's sessions, a sorted set of ids scored by expiry (ms).

All three expire with the session (the user index with its last session). The shard is
four hex digits of a digest of the user id, and it starts every token and session id
the user is given (`<shard>.<random>`): so the braces, a Redis Cluster hash tag, put a
user's records and indexes in one slot, where one script can change them together, and
the slot is known from a token alone. The root is tracked by the node's invalidation
feed; only record keys are held in L1.
"""

from __future__ import annotations

from ..hash_tags import escape_tag


class SessionKeys:
    def __init__(self, key_prefix: str) -> None:
        self.root = f"{key_prefix}s:"
        self._scopes: dict[tuple[str, str], str] = {}

    def scope(self, namespace: str, shard: str) -> str:
        """The key root of the namespace's sessions in `shard`; the scripts build index
        keys from it."""
        scope = self._scopes.get((namespace, shard))
        if scope is None:
            tag = escape_tag(f"{len(namespace)}:{namespace}:{shard}")
            scope = self._scopes[(namespace, shard)] = f"{self.root}{{{tag}}}:"
        return scope

    def record(self, namespace: str, shard: str, digest: str) -> str:
        return self.scope(namespace, shard) + "t:" + digest

    def by_id(self, namespace: str, shard: str, session_id: str) -> str:
        return self.scope(namespace, shard) + "i:" + session_id

    def user(self, namespace: str, shard: str, user_id: str) -> str:
        return self.scope(namespace, shard) + "u:" + user_id

    def is_record(self, key: str) -> bool:
        """Whether `key` (under the root) is a session record."""
        tail = key[len(self.root) :]
        end = tail.find("}")
        return tail.startswith("{") and tail[end + 1 : end + 4] == ":t:"
