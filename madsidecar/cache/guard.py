"""Hazard 1: a reply that raced an invalidation must not enter L1.

Every L2 read registers its key before the command is sent. An invalidation of that key
(or of everything) that arrives before the reply marks the read stale, and a stale read
answers its caller but leaves L1 alone.
"""

from __future__ import annotations


class ReadGuard:
    def __init__(self) -> None:
        self._pending: dict[str, int] = {}
        self._stale: set[str] = set()
        self._generation = 0

    def begin(self, key: str) -> int:
        self._pending[key] = self._pending.get(key, 0) + 1
        return self._generation

    def end(self, key: str, generation: int) -> bool:
        """Done reading `key`; True when no invalidation raced the read."""
        fresh = generation == self._generation and key not in self._stale
        remaining = self._pending[key] - 1
        if remaining:
            self._pending[key] = remaining
        else:
            del self._pending[key]
            self._stale.discard(key)
        return fresh

    def invalidated(self, key: str) -> None:
        if key in self._pending:
            self._stale.add(key)

    def invalidated_all(self) -> None:
        self._generation += 1
