"""Per-connection request ordering: the contract's "two requests of one connection on the
same key take effect in that order", for methods of one key, of a list of keys, and for
barriers (a prefix invalidation) that order against everything of their group."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .methods import Method

# A running request: its task, or the call waiting on its Deferred answer. Only its
# identity matters here; the connection makes it something to wait on.
Task = object


def keys_of(method: Method, args: dict[str, Any]) -> tuple[Any, ...]:
    if method.ordered_by is None:
        return ()
    value = args[method.ordered_by]
    if type(value) is str:
        return (value,)
    return tuple(value) if isinstance(value, list | tuple) else (value,)


class RequestOrder:
    def __init__(self) -> None:
        self._tails: dict[tuple[str, Any], Task] = {}
        self._barriers: dict[str, Task] = {}

    def must_wait(self, method: Method, args: dict[str, Any]) -> bool:
        """Cheap check for the inline path: is anything unfinished ahead of this call?"""
        if self._barriers and method.group in self._barriers:
            return True
        if method.ordered_by is None or not self._tails:
            return False
        group = method.group
        return any((group, key) in self._tails for key in keys_of(method, args))

    def predecessors(
        self, method: Method, args: dict[str, Any], running: Iterable[Task]
    ) -> list[Task]:
        waits: list[Task] = []
        barrier = self._barriers.get(method.group)
        if barrier is not None:
            waits.append(barrier)
        if method.barrier:
            waits.extend(task for task in running if task is not barrier)
            return waits
        for key in keys_of(method, args):
            tail = self._tails.get((method.group, key))
            if tail is not None and tail not in waits:
                waits.append(tail)
        return waits

    def register(self, method: Method, args: dict[str, Any], task: Task) -> None:
        for key in keys_of(method, args):
            self._tails[(method.group, key)] = task
        if method.barrier:
            self._barriers[method.group] = task

    def release(self, method: Method, args: dict[str, Any], task: Task) -> None:
        for key in keys_of(method, args):
            if self._tails.get((method.group, key)) is task:
                del self._tails[(method.group, key)]
        if self._barriers.get(method.group) is task:
            del self._barriers[method.group]
