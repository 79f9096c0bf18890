"""A counting limit for the collector's hot paths: polls in flight, requests on one connection.

Why not ``asyncio.Semaphore`` / ``asyncio.Lock``: on Python 3.11 every acquire runs a generator over the
waiters and every release scans them all (``_wake_up_next``), so with thousands of polls queued behind a
busy limit each release cost milliseconds (``bench.collector --profile``), just when the loop was
already behind.  Here taking a free slot is two attribute reads, and a release hands its slot to the
longest waiter directly (first come, first served); a waiter that was cancelled is skipped.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Slots:
    """``size`` slots: ``take_now()`` or ``await take()``, then ``release()``."""

    __slots__ = ("_waiters", "free")

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: deque[asyncio.Future[None]] = deque()

    def take_now(self) -> bool:
        """Take a slot if one is free and nobody is waiting for one."""
        if self.free and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.take_now():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():  # handed a slot, then cancelled: pass it on
                self.release()
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot goes to this waiter, ``free`` stays as it is
                return
        self.free += 1
