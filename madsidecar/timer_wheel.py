"""`TimerWheel`: many deadlines sharing a few event-loop timers.

Every held lock needs a renewal some seconds from now, and most are released long
before it is due. One loop timer per lease costs a handle to make and one to cancel on
every acquire; here a deadline joins the slot of `slot_s` it falls in and leaving is a
dict removal. A slot's timer fires at the slot's start, so an entry is called up to
`slot_s` early, never late.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Entry = TypeVar("Entry", bound=Hashable)


class TimerWheel(Generic[Entry]):
    __slots__ = ("_loop", "_on_due", "_slot_of", "_slot_s", "_slots")

    def __init__(self, slot_s: float, on_due: Callable[[Entry], object]) -> None:
        self._slot_s = slot_s
        self._on_due = on_due
        self._slots: dict[int, dict[Entry, None]] = {}
        self._slot_of: dict[Entry, int] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, entry: Entry) -> bool:
        return entry in self._slot_of

    def schedule(self, entry: Entry, delay_s: float) -> None:
        """Call `on_due(entry)` in `delay_s` (at most `slot_s` sooner), replacing any
        earlier schedule of the same entry."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self.cancel(entry)
        slot = int((loop.time() + delay_s) // self._slot_s)
        members = self._slots.get(slot)
        if members is None:
            members = self._slots[slot] = {}
            loop.call_at(slot * self._slot_s, self._fire, slot)
        members[entry] = None
        self._slot_of[entry] = slot

    def cancel(self, entry: Entry) -> None:
        slot = self._slot_of.pop(entry, None)
        if slot is not None:
            members = self._slots.get(slot)
            if members is not None:
                members.pop(entry, None)

    def _fire(self, slot: int) -> None:
        for entry in self._slots.pop(slot, {}):
            # An earlier callback of this slot may have cancelled or moved this entry.
            if self._slot_of.get(entry) == slot:
                del self._slot_of[entry]
                self._on_due(entry)
