"""TimerWheel: lock renewals share loop timers; an entry fires once, never late, and a
cancelled or rescheduled one does not fire from its old slot."""

from __future__ import annotations

import asyncio

import pytest

from madsidecar.timer_wheel import TimerWheel

SLOT_S = 0.005


async def test_each_entry_fires_once_no_later_than_its_delay() -> None:
    loop = asyncio.get_running_loop()
    fired: dict[str, float] = {}
    all_fired = loop.create_future()

    def on_due(name: str) -> None:
        fired[name] = loop.time()
        if len(fired) == 3:
            all_fired.set_result(None)

    wheel: TimerWheel[str] = TimerWheel(SLOT_S, on_due)
    started = loop.time()
    delays = {"a": 0.02, "b": 0.021, "c": 0.05}
    for name, delay in delays.items():
        wheel.schedule(name, delay)
    assert len(wheel) == 3 and "a" in wheel
    await asyncio.wait_for(all_fired, 5)
    for name, delay in delays.items():
        # Up to one slot early (and a little for the loop's clock resolution), not late
        # by more than the loop's own scheduling.
        assert fired[name] - started >= delay - SLOT_S - 0.002
    assert len(wheel) == 0


async def test_cancelled_and_moved_entries_do_not_fire_from_their_old_slot() -> None:
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    done = loop.create_future()

    def on_due(name: str) -> None:
        fired.append(name)
        if name == "last":
            done.set_result(None)

    wheel: TimerWheel[str] = TimerWheel(SLOT_S, on_due)
    wheel.schedule("cancelled", 0.01)
    wheel.schedule("moved", 0.01)
    wheel.schedule("kept", 0.01)
    wheel.cancel("cancelled")
    wheel.schedule("moved", 0.04)  # replaces the first schedule
    wheel.schedule("last", 0.06)
    await asyncio.wait_for(done, 5)
    assert fired == ["kept", "moved", "last"]
    assert "cancelled" not in wheel


async def test_a_callback_may_cancel_a_neighbour_of_its_slot() -> None:
    loop = asyncio.get_running_loop()
    fired: list[int] = []
    done = loop.create_future()
    wheel: TimerWheel[int]

    def on_due(entry: int) -> None:
        fired.append(entry)
        wheel.cancel(entry + 1)
        if not done.done():
            loop.call_later(0.02, done.set_result, None)

    wheel = TimerWheel(SLOT_S, on_due)
    for entry in range(4):
        wheel.schedule(entry, 0.01)
    await asyncio.wait_for(done, 5)
    # 0 cancels 1, so 2 is not cancelled and cancels 3, same slot or not.
    assert fired == [0, 2]
    assert len(wheel) == 0


@pytest.mark.parametrize("delay_s", [0.0, -1.0])
async def test_a_due_or_past_delay_fires_on_the_next_turns(delay_s: float) -> None:
    loop = asyncio.get_running_loop()
    fired = loop.create_future()
    wheel: TimerWheel[str] = TimerWheel(SLOT_S, fired.set_result)
    wheel.schedule("now", delay_s)
    assert await asyncio.wait_for(fired, 5) == "now"
