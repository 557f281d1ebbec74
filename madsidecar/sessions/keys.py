"""Where sessions live in Redis, under `<prefix>s:<len(ns)>:<ns>:`:

- `t:<digest>`: the record, a hash, keyed by the token's digest (never the token);
- `i:<session_id>`: the digest of the session's current token, for revoke by id;
- `u:<user_id>`: the user's sessions, a sorted set of ids scored by expiry (ms).

All three expire with the session (the user index with its last session). The root is
tracked by the node's invalidation feed; only record keys are held in L1.
"""

from __future__ import annotations


class SessionKeys:
    def __init__(self, key_prefix: str) -> None:
        self.root = f"{key_prefix}s:"
        self._scopes: dict[str, str] = {}

    def scope(self, namespace: str) -> str:
        """The namespace's key root; the scripts build index keys from it."""
        scope = self._scopes.get(namespace)
        if scope is None:
            scope = self._scopes[namespace] = f"{self.root}{len(namespace)}:{namespace}:"
        return scope

    def record(self, namespace: str, digest: str) -> str:
        return self.scope(namespace) + "t:" + digest

    def by_id(self, namespace: str, session_id: str) -> str:
        return self.scope(namespace) + "i:" + session_id

    def user(self, namespace: str, user_id: str) -> str:
        return self.scope(namespace) + "u:" + user_id

    def is_record(self, key: str) -> bool:
        """Whether `key` (under the root) is a session record."""
        length, sep, tail = key[len(self.root) :].partition(":")
        if not sep or not length.isdigit():
            return False
        size = int(length)
        return tail[size : size + 3] == ":t:"
