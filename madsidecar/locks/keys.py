"""Where locks live in Redis: `<prefix>lock:{<ns>:<name>}` (its fence counter: `:fence`).

The braces make the namespace and name the Redis Cluster hash tag, so a lock and its
fence counter share a slot and one script can touch both; braces and `%` inside the
names are percent-encoded so they cannot end the tag early.
"""

from __future__ import annotations

from ..hash_tags import escape_tag


class LockKeys:
    def __init__(self, key_prefix: str) -> None:
        self._root = f"{key_prefix}lock:"
        self.channel = f"{key_prefix}lock:released"

    def lock(self, namespace: str, name: str) -> str:
        return self._root + "{" + escape_tag(f"{len(namespace)}:{namespace}:{name}") + "}"
