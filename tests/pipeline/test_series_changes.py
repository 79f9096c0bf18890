"""The store says which answers a write may have changed: only those of the series and time it touched.

Writers are real: a second ``SQLiteStore`` on the same file (as the collector's process is), a plain
sqlite3 connection (a writer that keeps no change log), and retention through ``run_write``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline import series_changes
from pipeline.points import Point
from pipeline.query import SeriesQuery, datetime_to_ns
from pipeline.retention import RetentionPolicy, run_retention
from pipeline.series_changes import ChangeLog
from pipeline.sqlite_store import SQLiteStore

DAY = datetime(2026, 6, 1, tzinfo=UTC)


def window(household: str, category: str = "pv", day: datetime = DAY) -> SeriesQuery:
    return SeriesQuery(
        (household,), category, ("power_w",), day, day + timedelta(days=1), timedelta(minutes=1)
    )


def point(household: str, at: datetime, category: str = "pv", value: float = 1.0) -> Point:
    return Point(category, household, "dev", "modbus", datetime_to_ns(at), {"power_w": value})


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[SQLiteStore, SQLiteStore]]:
    """(reader, writer): two stores on one file, as ``hems serve`` and ``hems collect`` are."""
    path = tmp_path / "series.sqlite"
    writer = SQLiteStore(path)
    await writer.write([point(h, DAY + timedelta(hours=1)) for h in ("A", "B")])
    reader = SQLiteStore(path, version_poll_s=0)
    yield reader, writer
    await reader.close()
    await writer.close()


async def test_a_write_changes_only_the_answers_it_touches(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    reader, writer = stores
    seen = reader.data_version()
    assert seen is not None
    await writer.write([point("A", DAY + timedelta(hours=12))])
    now = reader.data_version()
    assert now is not None and now > seen
    assert reader.changed_since(seen, window("A"))  # A's day holds the new reading
    assert not reader.changed_since(seen, window("B"))  # another household
    assert not reader.changed_since(seen, window("A", "electricity"))  # another category
    assert not reader.changed_since(seen, window("A", day=DAY - timedelta(days=1)))  # another day
    assert not reader.changed_since(now, window("A"))  # read after the write: current
    both = SeriesQuery(("B", "A"), "pv", ("power_w",), DAY, DAY + timedelta(days=1))
    assert reader.changed_since(seen, both)


async def test_the_edges_of_a_window_are_exact(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    reader, writer = stores
    seen = reader.data_version()
    assert seen is not None
    await writer.write([point("A", DAY + timedelta(days=1))])  # exactly at the window's stop
    reader.data_version()
    assert not reader.changed_since(seen, window("A"))
    assert reader.changed_since(seen, window("A", day=DAY + timedelta(days=1)))  # ... its next day's start


async def test_own_writes_count_at_once(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite")  # default poll interval: own writes do not wait for it
    await store.write([point("A", DAY)])
    seen = store.data_version()
    assert seen is not None
    await store.write([point("A", DAY + timedelta(minutes=5))])
    store.data_version()
    assert store.changed_since(seen, window("A")) and not store.changed_since(seen, window("B"))
    await store.close()


async def test_a_writer_that_keeps_no_log_changes_everything(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    reader, _ = stores
    seen = reader.data_version()
    assert seen is not None
    with sqlite3.connect(reader.path) as conn:  # e.g. someone editing the file in the sqlite3 shell
        conn.execute("UPDATE points SET power_w = 5 WHERE household = 'B'")
    reader.data_version()
    assert reader.changed_since(seen, window("A")) and reader.changed_since(seen, window("B"))


async def test_a_checkpoint_that_rewrites_the_log_changes_nothing(
    stores: tuple[SQLiteStore, SQLiteStore],
) -> None:
    """SQLite moves ``data_version`` when the write-ahead log is reset, though nothing was committed:
    that must not drop every answer (a collector's store resets it every second or two)."""
    reader, writer = stores
    await writer.write([point("A", DAY + timedelta(hours=2))])
    seen = reader.data_version()
    assert seen is not None
    with sqlite3.connect(reader.path) as conn:
        assert conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy: done
    assert reader.data_version() == seen
    assert not reader.changed_since(seen, window("A")) and not reader.changed_since(seen, window("B"))
    # A commit without a row after it still changes everything.
    with sqlite3.connect(reader.path) as conn:
        conn.execute("UPDATE points SET power_w = 7 WHERE household = 'B'")
    reader.data_version()
    assert reader.changed_since(seen, window("A")) and reader.changed_since(seen, window("B"))


async def test_maintenance_changes_everything(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    reader, writer = stores
    seen = reader.data_version()
    assert seen is not None
    await run_retention(writer, RetentionPolicy(), now=DAY + timedelta(days=2))
    reader.data_version()
    assert reader.changed_since(seen, window("B", "water", day=DAY - timedelta(days=300)))


async def test_a_reader_that_fell_behind_the_pruned_log_starts_afresh(
    stores: tuple[SQLiteStore, SQLiteStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, writer = stores
    seen = reader.data_version()
    assert seen is not None
    monkeypatch.setattr(series_changes, "KEEP_ROWS", 1)
    monkeypatch.setattr(series_changes, "PRUNE_EVERY", 1)
    for minute in range(3):  # each write prunes all but the newest row before the reader looks
        await writer.write([point("A", DAY - timedelta(days=5, minutes=minute))])
    reader.data_version()
    assert reader.changed_since(seen, window("B"))


async def test_a_series_with_more_changes_than_it_remembers_is_changed(
    stores: tuple[SQLiteStore, SQLiteStore],
) -> None:
    reader, writer = stores
    seen = reader.data_version()
    assert seen is not None
    for i in range(series_changes.PER_SERIES + 1):  # all outside the window, each seen by a poll
        await writer.write([point("A", DAY - timedelta(days=3, minutes=i))])
        reader.data_version()
    assert reader.changed_since(seen, window("A"))  # the oldest, forgotten one may have been inside
    recent = reader.data_version()
    assert recent is not None
    assert not reader.changed_since(recent, window("A"))


def test_rows_and_data_version_are_read_from_one_snapshot(tmp_path: Path) -> None:
    """A gap in the sequence (rows pruned unseen) makes everything changed; contiguous rows do not."""
    db = tmp_path / "log.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute(series_changes.SCHEMA)
        series_changes.record(conn, [("A", "pv", 0, 10)])
    reader = sqlite3.connect(db, isolation_level=None)
    log = ChangeLog()
    version = log.poll(reader, None)
    first = log.version
    with sqlite3.connect(db) as conn:
        series_changes.record(conn, [("A", "pv", 100, 200)])
    version = log.poll(reader, version)
    window_a = (["A"], "pv")
    assert log.changed_since(first, *window_a, 150, 160) and not log.changed_since(first, *window_a, 0, 50)
    second = log.version
    with sqlite3.connect(db) as conn:
        series_changes.record(conn, [("A", "pv", 300, 400), ("A", "pv", 500, 600)])
        conn.execute("DELETE FROM series_changes WHERE seq < (SELECT max(seq) FROM series_changes)")
    log.poll(reader, version)
    assert log.changed_since(second, ["B"], "water", 0, 1)  # the row for 300..400 was never seen
    reader.close()


async def test_two_readers_name_the_last_change_alike(stores: tuple[SQLiteStore, SQLiteStore]) -> None:
    """What lets two server processes share a page: the same number for the same data, and a new
    number only when a write touches the footprint."""
    reader, writer = stores
    other = SQLiteStore(reader.path, version_poll_s=0)
    try:
        reader.data_version()
        other.data_version()
        a0, b0 = reader.last_change(window("A")), other.last_change(window("B"))
        assert a0 is not None and b0 is not None
        await writer.write([point("A", DAY + timedelta(hours=3))])
        await writer.write([point("B", DAY - timedelta(days=2))])  # B, another day
        reader.data_version()
        other.data_version()
        a1, b1 = reader.last_change(window("A")), other.last_change(window("A"))
        assert a1 == b1 and a1 is not None and a1 > a0
        assert reader.last_change(window("B")) == other.last_change(window("B")) == b0
    finally:
        await other.close()
