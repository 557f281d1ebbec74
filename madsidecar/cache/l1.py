"""The node's in-process cache: bounded by entry count and by bytes, LRU or LFU."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cachetools

# What an entry costs beyond its encoded value: the key, the entry object, the dict slot.
ENTRY_OVERHEAD_BYTES = 200


@dataclass(slots=True)
class L1Entry:
    value: Any
    size: int
    fresh_until: float  # loop time after which L2 must be asked again
    expires_at: float | None  # loop time of the L2 expiry; None: no TTL in Redis
    stored_at: float


def _entry_size(entry: L1Entry) -> int:
    return entry.size


class _CountingLRU(cachetools.LRUCache[str, L1Entry]):
    evictions = 0

    def popitem(self) -> tuple[str, L1Entry]:
        self.evictions += 1
        return super().popitem()


class _CountingLFU(cachetools.LFUCache[str, L1Entry]):
    evictions = 0

    def popitem(self) -> tuple[str, L1Entry]:
        self.evictions += 1
        return super().popitem()


class L1Cache:
    def __init__(self, max_entries: int, max_bytes: int, eviction: str) -> None:
        self._max_entries = max_entries
        store_class = _CountingLRU if eviction == "lru" else _CountingLFU
        self._store = store_class(maxsize=max(max_bytes, 1), getsizeof=_entry_size)

    def get(self, key: str) -> L1Entry | None:
        return self._store.get(key)

    def put(self, key: str, entry: L1Entry) -> bool:
        """Keep `entry`, evicting as needed; False when it cannot fit at all."""
        if self._max_entries == 0 or entry.size > self._store.maxsize:
            return False
        self._store[key] = entry
        while len(self._store) > self._max_entries:
            self._store.popitem()
        return True

    def pop(self, key: str) -> bool:
        return self._store.pop(key, None) is not None

    def drop_prefix(self, prefix: str) -> int:
        doomed = [key for key in self._store if key.startswith(prefix)]
        for key in doomed:
            del self._store[key]
        return len(doomed)

    def clear(self) -> None:
        self._store.clear()

    @property
    def entries(self) -> int:
        return len(self._store)

    @property
    def bytes(self) -> int:
        return int(self._store.currsize)

    @property
    def evictions(self) -> int:
        return self._store.evictions
