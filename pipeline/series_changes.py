"""Which series each write touched, so a reader can tell whether an answer it made still holds.

SQLite's ``PRAGMA data_version`` only says that *something* changed.  With collectors writing every
second, that is always true, and an answer cache keyed on it is flushed every second for every home.
So every write transaction of ``SQLiteStore`` also appends one row per (household, measurement) it
touched to ``series_changes``, with the time range of the points it wrote, in the same transaction as
the points: a reader never sees the points without the row, nor the row without the points.

A reader (the API's page cache, in any process on the host) polls the rows it has not seen yet into a
``ChangeLog`` and asks ``changed_since(version, query)``: could the answer to ``query`` made at
``version`` differ now?  It answers yes whenever it cannot be sure: a commit that logged no row (a
writer that does not keep this log, such as the sqlite3 shell), a maintenance job (``run_write``
logs a row that covers everything), rows pruned before the reader saw them, or a series whose recent
history was forgotten.

SQLite also moves ``data_version`` when no commit happened: a checkpoint that resets the write-ahead
log (and a writer reusing a log that was checkpointed) rewrites the log's index, which readers see as a
change.  With a collector writing every second that is every second or two, and taking it for a
commit without a row would drop every answer each time.  So a poll that finds ``data_version`` moved
and no new row asks SQLite's own count of commits (``commits_counted``: the ``iChange`` counter of the
write-ahead-log index, https://sqlite.org/walformat.html); unchanged since before the previous poll's
snapshot, nothing was committed in between and nothing is dropped.  When it cannot be read (no
``-shm`` file, an unknown index version) the poll counts a change, as before.

The log is pruned by the writer to the last ``KEEP_ROWS`` rows, minutes of history at fleet rates;
a reader that falls further behind than that starts afresh (its cache is emptied, nothing is served
stale).
"""

from __future__ import annotations

import sqlite3
import struct
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS series_changes (seq INTEGER PRIMARY KEY, household TEXT NOT NULL, "
    "measurement TEXT NOT NULL, lo_ns INTEGER NOT NULL, hi_ns INTEGER NOT NULL)"
)
EVERYTHING: Final = "*"  # a household no valid id can equal (ids are [A-Za-z0-9_.-])
KEEP_ROWS: Final = 100_000
PRUNE_EVERY: Final = 1000  # transactions between prunes
PER_SERIES: Final = 16  # changes remembered per series; older ones make its pages stale

Span = tuple[str, str, int, int]  # household, measurement, lowest and highest ts_ns written
WAL_INDEX_VERSION: Final = 3007000  # the wal-index header's iVersion of every SQLite 3.7.0 and later


def commits_counted(database: Path) -> int | None:
    """SQLite's counter of commits to ``database`` in WAL mode: ``iChange`` of the wal-index header
    (the first 12 bytes of the ``-shm`` file, in native byte order, after ``iVersion`` and a word
    unused).  It moves with every commit and with nothing else; None when it cannot be read."""
    try:
        with open(f"{database}-shm", "rb") as f:
            head = f.read(12)
    except OSError:
        return None
    if len(head) < 12:
        return None
    version, _, change = struct.unpack("=III", head)
    return int(change) if version == WAL_INDEX_VERSION else None


def record(conn: sqlite3.Connection, spans: Iterable[Span]) -> None:
    """Append the spans of one write (call inside its transaction)."""
    conn.executemany(
        "INSERT INTO series_changes (household, measurement, lo_ns, hi_ns) VALUES (?, ?, ?, ?)", spans
    )


def record_everything(conn: sqlite3.Connection) -> None:
    """A change that may touch any series at any time (maintenance: retention, rollups)."""
    record(conn, [(EVERYTHING, EVERYTHING, -(2**63), 2**63 - 1)])


def prune(conn: sqlite3.Connection) -> None:
    """Forget all but the last ``KEEP_ROWS`` rows (the newest row always stays, so ``seq`` keeps growing)."""
    conn.execute(
        "DELETE FROM series_changes WHERE seq <= (SELECT max(seq) FROM series_changes) - ?", (KEEP_ROWS,)
    )


@dataclass
class _History:
    # (version, seq, lo, hi) of the series' last changes, oldest first
    changes: deque[tuple[int, int, int, int]] = field(default_factory=lambda: deque(maxlen=PER_SERIES))
    forgotten: int = 0  # versions up to this one may have changed anything in the series
    forgotten_seq: int = 0  # ... and log rows up to this one
    last: int = 0


class ChangeLog:
    """A reader's view of the log.

    ``version`` is local: it grows by one for each poll that found changes; a page made while
    ``version`` was v is still current when ``changed_since(v, ...)`` is false.  ``last_change`` is
    global: the log row (``seq``) of the last change under a query's footprint, the same in every
    process that has read the log that far, so processes can share what they made (it is an upper
    bound where this reader's knowledge starts: anything older counts as that old)."""

    def __init__(self) -> None:
        self.version = 1
        self.seen_seq: int | None = None  # last row applied; None until the first poll
        self.floor_seq = 0  # rows up to this one are not known one by one
        self._everything_at = 0
        self._series: dict[tuple[str, str], _History] = {}
        self._commits_before: int | None = None  # ``commits_counted`` read before the last poll's snapshot

    def everything(self, floor_seq: int) -> None:
        self.version += 1
        self._everything_at = self.version
        self.floor_seq = max(self.floor_seq, floor_seq)
        self._series.clear()

    def poll(
        self,
        conn: sqlite3.Connection,
        last_data_version: int | None,
        commits: Callable[[], int | None] | None = None,
    ) -> int:
        """Apply what was committed since the last poll; returns SQLite's ``data_version`` for the
        next call.  The rows and ``data_version`` are read in one read transaction, so they describe
        the same snapshot (a commit that logged nothing is then told apart from one that did).
        ``commits``: SQLite's commit counter of the file (``commits_counted``), read before the
        snapshot and, when no row is new, after it: every commit the snapshot holds beyond the last
        one happened after the last poll read the counter, so an unchanged counter means none did."""
        select = (
            "SELECT seq, household, measurement, lo_ns, hi_ns FROM series_changes WHERE seq > ? ORDER BY seq"
        )
        counted_before, self._commits_before = self._commits_before, commits() if commits else None
        conn.execute("BEGIN")
        try:
            data_version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            if data_version == last_data_version:
                return data_version
            first = self.seen_seq is None
            rows = conn.execute(select, (self.seen_seq or 0,)).fetchall()
        finally:
            conn.execute("COMMIT")
        seen = self.seen_seq or 0
        if first:
            # The log as it stands is the history before this reader: no page is older than it.
            self.floor_seq = rows[0][0] - 1 if rows else 0
            self._apply(rows, self.version)
        elif (
            not rows
            and last_data_version is not None
            and counted_before is not None
            and commits is not None
            and commits() == counted_before
        ):
            pass  # the log's index was rewritten (a checkpoint), nothing committed: nothing changed
        elif not rows or rows[0][0] != seen + 1:
            # A commit without a row (a writer that keeps no log), or rows pruned before we saw them.
            self.everything(rows[0][0] - 1 if rows else seen)
            self.apply(rows)
        else:
            if last_data_version is None:
                self.everything(seen)  # the first poll after an error: whatever happened meanwhile
            self.apply(rows)
        if rows:
            self.seen_seq = int(rows[-1][0])
        elif first:
            self.seen_seq = 0
        return data_version

    def apply(self, rows: Iterable[tuple[int, str, str, int, int]]) -> None:
        """Log rows ``(seq, household, measurement, lo_ns, hi_ns)`` found by one poll."""
        self.version += 1
        self._apply(rows, self.version)

    def _apply(self, rows: Iterable[tuple[int, str, str, int, int]], version: int) -> None:
        for seq, household, measurement, lo, hi in rows:
            if household == EVERYTHING:
                self.everything(seq)
                version = self.version
                continue
            key = (household, measurement)
            history = self._series.get(key)
            if history is None:
                history = self._series[key] = _History()
            changes = history.changes
            if history.last == version:  # a second span of the same series in one poll: widen it
                _, _, old_lo, old_hi = changes[-1]
                changes[-1] = (version, seq, min(lo, old_lo), max(hi, old_hi))
                continue
            if len(changes) == PER_SERIES:
                history.forgotten, history.forgotten_seq = changes[0][0], changes[0][1]
            changes.append((version, seq, lo, hi))
            history.last = version

    def changed_since(
        self, version: int, households: Iterable[str], measurement: str, start_ns: int, stop_ns: int
    ) -> bool:
        """Whether a point of ``households`` x ``measurement`` with ``start_ns <= ts < stop_ns`` may
        have been written after ``version`` (as far as the last poll knows)."""
        if version < self._everything_at:
            return True
        series = self._series
        for household in households:
            history = series.get((household, measurement))
            if history is None or history.last <= version:
                continue
            if history.forgotten > version:
                return True
            for changed_at, _, lo, hi in reversed(history.changes):
                if changed_at <= version:
                    break
                if lo < stop_ns and hi >= start_ns:
                    return True
        return False

    def last_change(self, households: Iterable[str], measurement: str, start_ns: int, stop_ns: int) -> int:
        """The log row of the last change that may have touched the footprint (see the class)."""
        last = self.floor_seq
        series = self._series
        for household in households:
            history = series.get((household, measurement))
            if history is None:
                continue
            last = max(last, history.forgotten_seq)
            for _, seq, lo, hi in reversed(history.changes):
                if seq <= last:
                    break
                if lo < stop_ns and hi >= start_ns:
                    last = seq
                    break
        return last
