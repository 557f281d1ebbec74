"""Where rate-limit state lives in Redis.

One counter per (namespace, rule or ad-hoc, key, algorithm):
`<prefix>rl:{<len(ns)>:<ns>:<len(rule)>:<rule>:<key>}:<sw|sc|gc>`, the rule name empty
for ad-hoc checks. The braces are the Redis Cluster hash tag, so a key's counters and
its reset marker `<prefix>rlr:{...}` share a slot; braces and `%` in the names are
percent-encoded so they cannot end the tag early. Only reset markers are tracked by the
nodes' invalidation feed: counters change on every hit and must not flood it.
"""

from __future__ import annotations

from typing import Final

from ..hash_tags import escape_tag

ALGORITHM_SUFFIXES: Final = {"sliding_window": "sw", "sliding_counter": "sc", "gcra": "gc"}


class RateKeys:
    def __init__(self, key_prefix: str) -> None:
        self._root = f"{key_prefix}rl:"
        self.marker_root = f"{key_prefix}rlr:"

    def tag(self, namespace: str, rule: str, key: str) -> str:
        return "{" + escape_tag(f"{len(namespace)}:{namespace}:{len(rule)}:{rule}:{key}") + "}"

    def counter(self, tag: str, algorithm: str) -> str:
        return self._root + tag + ":" + ALGORITHM_SUFFIXES[algorithm]

    def counters(self, tag: str) -> list[str]:
        return [self._root + tag + ":" + suffix for suffix in ALGORITHM_SUFFIXES.values()]

    def marker(self, tag: str) -> str:
        return self.marker_root + tag

    def tag_of_marker(self, marker: str) -> str | None:
        return marker[len(self.marker_root) :] if marker.startswith(self.marker_root) else None
