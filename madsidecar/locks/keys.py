"""Where locks live in Redis: `<prefix>lock:{<ns>:<name>}` (its fence counter: `:fence`).

The braces make the namespace and name the Redis Cluster hash tag, so a lock and its
fence counter share a slot and one script can touch both; braces and `%` inside the
names are percent-encoded so they cannot end the tag early.
"""

from __future__ import annotations

from typing import Final

from ..hash_tags import escape_tag

# Recently used keys, per namespace, remembered up to this many (then forgotten at once):
# a service takes the same few names over and over, and each request needs its key.
REMEMBERED_KEYS: Final = 4096
REMEMBERED_NAMESPACES: Final = 256


class LockKeys:
    def __init__(self, key_prefix: str) -> None:
        self._root = f"{key_prefix}lock:"
        self.channel = f"{key_prefix}lock:released"
        self._remembered: dict[str, dict[str, str]] = {}

    def lock(self, namespace: str, name: str) -> str:
        known = self._remembered.get(namespace)
        if known is None:
            if len(self._remembered) >= REMEMBERED_NAMESPACES:
                self._remembered.clear()
            known = self._remembered[namespace] = {}
        key = known.get(name)
        if key is None:
            if len(known) >= REMEMBERED_KEYS:
                known.clear()
            key = known[name] = self._key(namespace, name)
        return key

    def _key(self, namespace: str, name: str) -> str:
        return self._root + "{" + escape_tag(f"{len(namespace)}:{namespace}:{name}") + "}"
