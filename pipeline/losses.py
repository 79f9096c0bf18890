"""Readings that could not be kept: counted by reason, and logged without flooding the log.

The reliability contract allows a configured policy to lose readings (a full spool under ``refuse``
refuses the newest, ``drop_oldest`` deletes the oldest) but never silently: every loss is counted
here, the counts reach ``/metrics`` and the exit summary, and each reason is logged -- the first loss
at once, later ones as one line per ``interval_s`` saying how many were lost since the last line, so
a day-long outage costs a few hundred log lines rather than millions.

Thread-safe: the spool records its losses from the writer's worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

# The reasons, as /metrics labels them (``hems_readings_lost_total{reason=...}``).
SPOOL_FULL = "spool_full"  # the spool is at spool_max_bytes under "refuse" and the store is down
SPOOL_WRITE_FAILED = "spool_write_failed"  # the spool's disk failed (full volume, I/O error)
SPOOL_DROPPED_OLDEST = "spool_dropped_oldest"  # "drop_oldest" deleted spooled readings to make room
SPOOL_CORRUPT = "spool_corrupt"  # a spooled record failed its check at replay (damaged on disk)
STORE_REFUSED = "store_refused"  # the store refused the data itself; a retry cannot help
STORE_UNAVAILABLE = "store_unavailable"  # store down and no spool configured
QUEUE_FULL = "collector_queue_full"  # the collector's queue was full (drop_when_full, pushed values)
REASONS = (
    SPOOL_FULL,
    SPOOL_WRITE_FAILED,
    SPOOL_DROPPED_OLDEST,
    SPOOL_CORRUPT,
    STORE_REFUSED,
    STORE_UNAVAILABLE,
    QUEUE_FULL,
)


@dataclass
class _Pending:
    readings: int = 0
    last_log: float = -float("inf")
    detail: str = ""


@dataclass
class Losses:
    """``add(reason, n, detail)`` for every loss; ``counts()`` for /metrics and summaries."""

    log: logging.Logger
    interval_s: float = 60.0
    what: str = "readings lost"  # how each line names what it counts
    level: int = logging.ERROR
    clock: Callable[[], float] = time.monotonic
    _counts: Counter[str] = field(default_factory=Counter)
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, reason: str, readings: int, detail: str = "") -> None:
        if readings <= 0:
            return
        with self._lock:
            self._counts[reason] += readings
            pending = self._pending.setdefault(reason, _Pending())
            pending.readings += readings
            pending.detail = detail
            now = self.clock()
            if now - pending.last_log < self.interval_s:
                return
            line = self._line(reason, pending)
            pending.readings = 0
            pending.last_log = now
        self.log.log(self.level, "%s", line)

    def _line(self, reason: str, pending: _Pending) -> str:
        since = "" if pending.last_log == -float("inf") else f" in the last {self.interval_s:.0f} s"
        detail = f": {pending.detail}" if pending.detail else ""
        return f"{self.what} ({reason}): {pending.readings}{since}, {self._counts[reason]} in all{detail}"

    def flush(self) -> None:
        """Log what was lost since each reason's last line (at shutdown, so the log's tally is whole)."""
        with self._lock:
            lines = [self._line(r, p) for r, p in self._pending.items() if p.readings]
            for p in self._pending.values():
                p.readings = 0
        for line in lines:
            self.log.log(self.level, "%s", line)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())
