"""Where the cache keeps things in Redis.

Values live under `<prefix>c:{<len(ns)>:<ns>:<key>}` and leases under `<prefix>cl:{...}`.
The namespace is length-prefixed so that no (namespace, key) pair can spell another's
key, and the two roots are the feed's BCAST tracking prefixes (they do not overlap). The
braces are the Redis Cluster hash tag, so a value and its lease share a slot and one
script can touch both; braces and `%` in names are percent-encoded so that they cannot
end the tag early (the encoding keeps prefixes: a prefix of a name encodes to a prefix
of its encoding).
"""

from __future__ import annotations

from typing import Final

from ..hash_tags import escape_tag

_GLOB_SPECIALS: Final = str.maketrans({c: "\\" + c for c in "*?[]\\"})


class CacheKeys:
    def __init__(self, key_prefix: str, node_id: str) -> None:
        self.value_root = f"{key_prefix}c:"
        self.lease_root = f"{key_prefix}cl:"
        # Starts with "_", which no namespace length does: it can never be a user key.
        self.probe_root = f"{self.value_root}_probe:"
        # Brace-free: in a cluster the feed appends a hash tag to reach each master.
        self.probe = self.probe_root + escape_tag(node_id)
        self.channel = f"{key_prefix}cache:invalidate"
        self._value_scopes: dict[str, str] = {}  # namespace -> its value key prefix

    @staticmethod
    def scope(namespace: str) -> str:
        """The start of the namespace's hash tags (its opening brace included)."""
        return "{" + escape_tag(f"{len(namespace)}:{namespace}:")

    def value(self, namespace: str, key: str) -> str:
        root = self._value_scopes.get(namespace)
        if root is None:
            root = self._value_scopes[namespace] = self.value_root + self.scope(namespace)
        return root + escape_tag(key) + "}"

    def lease(self, namespace: str, key: str) -> str:
        return self.lease_root + self.scope(namespace) + escape_tag(key) + "}"

    def lease_for_value(self, value_key: str) -> str:
        return self.lease_root + value_key[len(self.value_root) :]

    def value_prefix(self, namespace: str, prefix: str) -> str:
        return self.value_root + self.scope(namespace) + escape_tag(prefix)

    def value_pattern(self, namespace: str, prefix: str) -> str:
        """A SCAN MATCH pattern for the namespace's values starting with `prefix`."""
        return self.value_prefix(namespace, prefix).translate(_GLOB_SPECIALS) + "*"

    def lease_pattern(self, namespace: str, prefix: str) -> str:
        """A SCAN MATCH pattern for the namespace's leases on keys starting with `prefix`."""
        lease_prefix = self.lease_root + self.scope(namespace) + escape_tag(prefix)
        return lease_prefix.translate(_GLOB_SPECIALS) + "*"
