"""The node's in-process cache: bounded by entry count and by bytes, LRU or LFU.

Entries keep the value's MessagePack encoding, which replies splice in as it is.
"""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import cachetools

# What an entry costs beyond its encoded value: the key, the entry object, the bytes
# object and the table slot (measured: about this much RSS per entry of a small value).
ENTRY_OVERHEAD_BYTES: Final = 400


@dataclass(slots=True)
class L1Entry:
    raw: bytes  # the value as MessagePack
    size: int
    fresh_until: float  # monotonic time after which L2 must be asked again
    expires_at: float | None  # monotonic time of the L2 expiry; None: no TTL in Redis
    stored_at: float


class _LRUStore:
    """Least recently used first out, on an OrderedDict (C-fast move_to_end)."""

    def __init__(self, max_bytes: int) -> None:
        self._entries: collections.OrderedDict[str, L1Entry] = collections.OrderedDict()
        self.maxsize: float = float(max_bytes)
        self.currsize: float = 0.0
        self.evictions = 0

    def get(self, key: str) -> L1Entry | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def __setitem__(self, key: str, entry: L1Entry) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.currsize -= old.size
        self._entries[key] = entry
        self.currsize += entry.size
        while self.currsize > self.maxsize:
            self.popitem()

    def popitem(self) -> tuple[str, L1Entry]:
        key, entry = self._entries.popitem(last=False)
        self.currsize -= entry.size
        self.evictions += 1
        return key, entry

    def pop(self, key: str, default: None = None) -> L1Entry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.currsize -= entry.size
        return entry

    def __delitem__(self, key: str) -> None:
        self.pop(key)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.currsize = 0.0


def _entry_size(entry: L1Entry) -> int:
    return entry.size


class _LFUStore(cachetools.LFUCache[str, L1Entry]):
    evictions = 0

    def popitem(self) -> tuple[str, L1Entry]:
        self.evictions += 1
        return super().popitem()


class L1Cache:
    def __init__(self, max_entries: int, max_bytes: int, eviction: str) -> None:
        self._max_entries = max_entries
        self._store: _LRUStore | _LFUStore = (
            _LRUStore(max(max_bytes, 1))
            if eviction == "lru"
            else _LFUStore(maxsize=max(max_bytes, 1), getsizeof=_entry_size)
        )
        self.get = self._store.get

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
