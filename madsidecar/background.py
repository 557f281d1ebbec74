"""Work a capability starts and does not await: releases after a disconnect, state
resends, cache warming. Kept referenced until done (asyncio holds tasks weakly), a failure
logged as one line, and waited for, up to a deadline, when the sidecar stops."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import structlog

log = structlog.get_logger("madsidecar.background")


class BackgroundWork:
    def __init__(self, failure_event: str) -> None:
        self._failure_event = failure_event
        self._running: set[asyncio.Future[Any]] = set()

    def start(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._done)

    async def drain(self, timeout_s: float) -> None:
        if self._running:
            await asyncio.wait(self._running, timeout=timeout_s)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning(self._failure_event, reason=str(task.exception()))
