"""One event-loop timer for the collector's many deadlines: poll slots and request timeouts.

Why: at 1,000 polls/s every poll armed a timer of its own to sleep until its slot, and every request
another for its timeout, cancelled a moment later when the answer came.  On uvloop each of those is a
libuv timer made, put on the loop's heap, taken off and freed, and each slot a wake-up of the process
of its own (``bench.collector``: the collector's CPU per read was 1.4-1.8x a plain paced asyncio
loop's, issue 20).  Here deadlines go on one heap and one loop timer is armed for the earliest; when
it fires, every deadline that has passed is served in that one wake-up.

Deadlines are served late, never early, by at most ``window_s`` (25 ms): the timer for a deadline is
armed that much after it, so the slots and timeouts falling due within it share a wake-up, and the
requests they start go out, and are answered, together.  The window was chosen by measurement
(``bench.collector``, 5,000 devices, same-run paced baseline): CPU per read 1.26-1.30x the baseline's
at 10 ms, 1.19x at 20 ms, 1.04-1.06x at 25 ms, 1.10x at 50 ms.  25 ms is half a percent of a 5 s poll
interval and a small part of a 1-2 s timeout, and it shows, honestly, as schedule lateness
(``Scheduler``: p50 about 15 ms where it was under 1 ms).

There is no cancelling: a deadline whose future is already done by the time it passes (the answer
came, the sleeper was cancelled) is dropped then, so a request that is answered costs a heap push and
nothing else.  Callbacks must therefore do nothing to a finished future, as ``wake`` and the
protocols' ``_expire`` functions do not.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable
from typing import Any

WINDOW_S = 0.025  # seconds; see the module's note


def wake(fut: asyncio.Future[None]) -> None:
    """Resolve a sleeper's future (nothing if it was cancelled or already woken)."""
    if not fut.done():
        fut.set_result(None)


class Timers:
    """Deadlines of one event loop: ``call_at(when, fn, *args)``, ``call_later(delay, fn, *args)`` or
    ``await wake_at(when)``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, window_s: float = WINDOW_S) -> None:
        self.loop = loop
        self.window_s = window_s
        self._heap: list[tuple[float, int, Callable[..., object], tuple[Any, ...]]] = []
        self._seq = itertools.count()
        # delay -> (when, fn, args) in the order set: deadlines of one delay (a client's timeout) fall
        # due in that order, so they need no heap
        self._fifos: dict[float, deque[tuple[float, Callable[..., object], tuple[Any, ...]]]] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0

    def call_at(self, when: float, fn: Callable[..., object], *args: Any) -> None:
        """Call ``fn(*args)`` once ``loop.time()`` has passed ``when`` (within ``window_s`` of it)."""
        heapq.heappush(self._heap, (when, next(self._seq), fn, args))
        fire = when + self.window_s
        if self._handle is None or fire < self._armed_at:
            self._arm(fire)

    def call_later(self, delay: float, fn: Callable[..., object], *args: Any) -> None:
        """``call_at(loop.time() + delay, ...)`` for a delay used again and again (a timeout)."""
        fifo = self._fifos.get(delay)
        if fifo is None:
            fifo = self._fifos[delay] = deque()
        when = self.loop.time() + delay
        fifo.append((when, fn, args))
        fire = when + self.window_s
        if self._handle is None or fire < self._armed_at:
            self._arm(fire)

    def wake_at(self, when: float) -> asyncio.Future[None]:
        """A future resolved once ``when`` has passed (within ``window_s``): the cheap ``sleep``."""
        fut = self.loop.create_future()
        self.call_at(when, wake, fut)
        return fut

    def _arm(self, fire: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed_at = fire
        self._handle = self.loop.call_at(fire, self._fire)

    def _call(self, fn: Callable[..., object], args: tuple[Any, ...]) -> None:
        try:
            fn(*args)
        except Exception as exc:  # one bad callback must not leave the others unserved
            self.loop.call_exception_handler({"message": f"timer callback {fn!r} failed", "exception": exc})

    def _fire(self) -> None:
        self._handle = None
        now = self.loop.time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, fn, args = heapq.heappop(heap)
            self._call(fn, args)
        nxt = heap[0][0] if heap else math.inf
        for delay, fifo in list(self._fifos.items()):
            while fifo and fifo[0][0] <= now:
                _, fn, args = fifo.popleft()
                self._call(fn, args)
            if fifo:
                nxt = min(nxt, fifo[0][0])
            else:
                del self._fifos[delay]
        if nxt < math.inf:
            self._arm(nxt + self.window_s)


_ATTRIBUTE = "_collector_timers"


def timers(loop: asyncio.AbstractEventLoop) -> Timers:
    """The loop's one ``Timers``: the scheduler and the protocol clients share its timer.  Kept on the
    loop itself (asyncio's and uvloop's loops take attributes), so it lives and goes with the loop: in
    a registry of its own, its pending futures would keep every loop a test ever ran alive."""
    found: Timers | None = getattr(loop, _ATTRIBUTE, None)
    if found is None:
        found = Timers(loop)
        setattr(loop, _ATTRIBUTE, found)
    return found
