"""The `on_redis_down = "local"` limiter: the same three algorithms, in this node's memory.

Sans-IO: the caller passes the time (integer microseconds of a monotonic clock). It
enforces each limit on this node alone, so while Redis is down a fleet of N nodes lets
up to N times the limit through. Keys are kept least-recently-used first, `max_keys` at
most.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LocalCheck:
    counter: str
    algorithm: str
    limit: int
    window_ms: int
    cost: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    remaining: int
    reset_ms: int
    retry_after_ms: int


def _ms(us: float) -> int:
    return 0 if us <= 0 else math.ceil(us / 1000)


class _Log:
    """sliding_window: when each unit in the window was consumed, oldest first."""

    def __init__(self) -> None:
        self.times: collections.deque[int] = collections.deque()

    def decide(self, check: LocalCheck, now: int) -> tuple[bool, int, int]:
        window = check.window_ms * 1000
        while self.times and self.times[0] <= now - window:
            self.times.popleft()
        used = len(self.times)
        if used + check.cost <= check.limit:
            return True, check.limit - used, 0
        # Room for `cost` once the unit that would leave it leaves the window.
        frees = self.times[used + check.cost - check.limit - 1] + window
        return False, check.limit - used, frees - now

    def consume(self, check: LocalCheck, now: int) -> int:
        self.times.extend([now] * check.cost)
        return check.window_ms * 1000

    def reset_us(self, check: LocalCheck, now: int) -> int:
        return self.times[-1] + check.window_ms * 1000 - now if self.times else 0


class _Counter:
    """sliding_counter: this fixed window's count and the previous one's."""

    def __init__(self) -> None:
        self.index = 0
        self.current = 0
        self.previous = 0

    def _roll(self, window: int, now: int) -> int:
        index = now // window
        if index != self.index:
            self.previous = self.current if index == self.index + 1 else 0
            self.current, self.index = 0, index
        return index

    def decide(self, check: LocalCheck, now: int) -> tuple[bool, int, int]:
        window = check.window_ms * 1000
        index = self._roll(window, now)
        elapsed = now - index * window
        estimate = self.previous * (window - elapsed) / window + self.current
        available = max(math.floor(check.limit - estimate), 0)
        if estimate + check.cost <= check.limit:
            return True, available, 0
        if self.current + check.cost <= check.limit:
            needed = window * (1 - (check.limit - check.cost - self.current) / self.previous)
            return False, available, math.ceil(needed - elapsed)
        needed = window * (1 - (check.limit - check.cost) / self.current)
        return False, available, math.ceil((index + 1) * window - now + needed)

    def consume(self, check: LocalCheck, now: int) -> int:
        self.current += check.cost
        return self.reset_us(check, now)

    def reset_us(self, check: LocalCheck, now: int) -> int:
        window = check.window_ms * 1000
        if self.current:
            return (self.index + 2) * window - now
        return (self.index + 1) * window - now if self.previous else 0


class _Gcra:
    """gcra: the theoretical arrival time of the next unit."""

    def __init__(self) -> None:
        self.tat = 0

    def decide(self, check: LocalCheck, now: int) -> tuple[bool, int, int]:
        interval = check.window_ms * 1000 // check.limit
        tolerance = interval * check.limit
        tat = max(self.tat, now)
        available = (tolerance - (tat - now)) // interval
        new_tat = tat + check.cost * interval
        if new_tat - now <= tolerance:
            return True, available, 0
        return False, available, new_tat - tolerance - now

    def consume(self, check: LocalCheck, now: int) -> int:
        interval = check.window_ms * 1000 // check.limit
        self.tat = max(self.tat, now) + check.cost * interval
        return self.tat - now

    def reset_us(self, check: LocalCheck, now: int) -> int:
        return max(self.tat - now, 0)


_State = _Log | _Counter | _Gcra


def _new_state(algorithm: str) -> _State:
    if algorithm == "sliding_window":
        return _Log()
    return _Counter() if algorithm == "sliding_counter" else _Gcra()


class LocalLimiter:
    def __init__(self, max_keys: int) -> None:
        self._max_keys = max_keys
        self._states: collections.OrderedDict[str, _State] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._states)

    def decide(
        self, checks: Sequence[LocalCheck], consume: bool, now_us: int
    ) -> tuple[bool, list[Decision]]:
        """Like the Redis script: all checks consume (when `consume` and all allow), or
        none does. Returns whether they consumed, and each check's decision."""
        states = [self._state(check) for check in checks]
        pairs = list(zip(states, checks, strict=True))
        verdicts = [state.decide(check, now_us) for state, check in pairs]
        consumed = consume and all(allowed for allowed, _, _ in verdicts)
        decisions = []
        for (state, check), verdict in zip(pairs, verdicts, strict=True):
            allowed, available, retry_us = verdict
            if consumed:
                reset_us = state.consume(check, now_us)
                available -= check.cost
            else:
                reset_us = state.reset_us(check, now_us)
            decisions.append(Decision(allowed, max(available, 0), _ms(reset_us), _ms(retry_us)))
        return consumed, decisions

    def clear(self) -> None:
        self._states.clear()

    def _state(self, check: LocalCheck) -> _State:
        key = check.counter
        state = self._states.get(key)
        if state is None:
            state = self._states[key] = _new_state(check.algorithm)
            if len(self._states) > self._max_keys:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(key)
        return state
