"""The embedded store on real SQLite files: write, query shape, idempotency, aggregation, outage."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from pipeline.points import Point
from pipeline.query import QueryError, SeriesQuery
from pipeline.sqlite_store import SQLiteStore, UnknownFieldError
from pipeline.store import Store, StoreUnavailable

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NS = 1_000_000_000
B = int(T0.timestamp()) * NS


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "db" / "hems.sqlite")
    yield s
    await s.close()


def q(**kw: object) -> SeriesQuery:
    args: dict[str, object] = {
        "households": ("hh-1",),
        "category": "electricity",
        "fields": ("power_w",),
        "start": T0,
        "stop": T0 + timedelta(hours=1),
    }
    args.update(kw)
    return SeriesQuery(**args)  # type: ignore[arg-type]


def pt(
    ts_s: float, hh: str = "hh-1", dev: str = "meter", cat: str = "electricity", **fields: object
) -> Point:
    return Point(cat, hh, dev, "echonet", B + int(ts_s * NS), fields)  # type: ignore[arg-type]


async def test_is_a_store(store: SQLiteStore) -> None:
    assert isinstance(store, Store)
    assert await store.ping()


async def test_raw_query_shape_order_and_nulls(store: SQLiteStore) -> None:
    await store.write(
        [
            pt(20, power_w=3.0),
            pt(0, power_w=1.0, fault=False),
            pt(10, fault=True),  # power absent here -> null
            pt(5, dev="aaa", power_w=7),
            pt(5, hh="hh-2", power_w=9.0),
            pt(5, cat="pv", power_w=11.0),
            pt(3600, power_w=99.0),  # stop is exclusive
        ]
    )
    df = await store.query(q(fields=("power_w", "fault")))
    expected_schema: dict[str, pl.DataType] = {
        "time": pl.Datetime("us", "UTC"),
        "household": pl.Utf8(),
        "device": pl.Utf8(),
        "power_w": pl.Float64(),
        "fault": pl.Boolean(),
    }
    assert df.schema == pl.Schema(expected_schema)
    assert df.rows() == [
        (T0 + timedelta(seconds=5), "hh-1", "aaa", 7.0, None),
        (T0, "hh-1", "meter", 1.0, False),
        (T0 + timedelta(seconds=10), "hh-1", "meter", None, True),
        (T0 + timedelta(seconds=20), "hh-1", "meter", 3.0, None),
    ]
    only_power = await store.query(q())
    assert only_power["power_w"].to_list() == [7.0, 1.0, 3.0]  # the fault-only point has no power


async def test_rewrite_is_idempotent_and_merges_fields(store: SQLiteStore) -> None:
    await store.write([pt(0, power_w=1.0, voltage_v=100.0)])
    await store.write([pt(0, power_w=1.0, voltage_v=100.0)])
    await store.write([pt(0, power_w=2.0)])  # same series+ts: power overwritten, voltage kept
    df = await store.query(q(fields=("power_w", "voltage_v")))
    assert df.rows() == [(T0, "hh-1", "meter", 2.0, 100.0)]


async def test_windowed_aggregation_aligned_to_epoch(store: SQLiteStore) -> None:
    # 15-minute windows; points at 0, 5, 14:59 min -> window 0; 15 min -> window 1
    await store.write(
        [
            pt(0, power_w=100.0),
            pt(300, power_w=200.0),
            pt(899, power_w=600.0),
            pt(900, power_w=50.0),
            pt(901, running=True),
        ]
    )
    every = timedelta(minutes=15)
    start = T0 + timedelta(minutes=7)  # not aligned: windows still start on epoch multiples
    # start at 7 min: the 0 s and 300 s points are outside the query, so window 0 holds only 899 s
    w0, w1 = T0, T0 + every
    expected = {
        "mean": [(w0, 600.0), (w1, 50.0)],
        "sum": [(w0, 600.0), (w1, 50.0)],
        "min": [(w0, 600.0), (w1, 50.0)],
        "max": [(w0, 600.0), (w1, 50.0)],
        "first": [(w0, 600.0), (w1, 50.0)],
        "last": [(w0, 600.0), (w1, 50.0)],
        "count": [(w0, 1), (w1, 1)],
    }
    for agg, rows in expected.items():
        df = await store.query(q(start=start, every=every, agg=agg))
        assert [(r[0], r[3]) for r in df.rows()] == rows, agg
    for agg, value in {
        "mean": 300.0,
        "sum": 900.0,
        "min": 100.0,
        "max": 600.0,
        "first": 100.0,
        "last": 600.0,
    }.items():
        df = await store.query(q(every=every, agg=agg))
        assert df.rows()[0][3] == value, agg
    full = await store.query(q(every=every, agg="mean", fields=("power_w", "running")))
    assert full.rows() == [
        (T0, "hh-1", "meter", 300.0, None),
        (T0 + every, "hh-1", "meter", 50.0, 1.0),
    ]
    counted = await store.query(q(every=every, agg="count", fields=("power_w", "running")))
    assert counted.schema["power_w"] == pl.Int64
    assert counted.rows() == [(T0, "hh-1", "meter", 3, 0), (T0 + every, "hh-1", "meter", 1, 1)]


async def test_empty_result_keeps_dtypes(store: SQLiteStore) -> None:
    df = await store.query(q(fields=("power_w", "state"), every=timedelta(hours=1), agg="last"))
    assert df.height == 0
    assert df.columns == ["time", "household", "device", "power_w", "state"]
    assert df.schema["state"] == pl.Utf8 and df.schema["time"] == pl.Datetime("us", "UTC")


async def test_devices_filter_and_many_households(store: SQLiteStore) -> None:
    await store.write(
        [pt(1, dev="a", power_w=1.0), pt(1, dev="b", power_w=2.0), pt(1, hh="hh-2", power_w=3.0)]
    )
    df = await store.query(q(households=("hh-2", "hh-1"), devices=("b",)))
    assert df.rows() == [(T0 + timedelta(seconds=1), "hh-1", "b", 2.0)]
    both = await store.query(q(households=("hh-2", "hh-1")))
    assert both["household"].to_list() == ["hh-1", "hh-1", "hh-2"]


async def test_hostile_ids_never_reach_sql(store: SQLiteStore) -> None:
    with pytest.raises(QueryError) as err:
        q(households=("x') OR 1=1 --",))
    assert err.value.field == "households"
    with pytest.raises(QueryError):
        q(fields=("power_w FROM points; --",))
    with pytest.raises(UnknownFieldError):
        await store.write([Point("electricity", "hh-1", "m", "echonet", B, {"power_w) VALUES (1); --": 1.0})])


async def test_outage_when_database_directory_disappears(tmp_path: Path) -> None:
    db_dir = tmp_path / "vol"
    s = SQLiteStore(db_dir / "hems.sqlite")
    try:
        await s.write([pt(0, power_w=1.0)])
        db_dir.rename(tmp_path / "vol-unmounted")  # a real outage: the volume is gone
        with pytest.raises(StoreUnavailable):
            await s.write([pt(1, power_w=2.0)])
        assert not await s.ping()
        (tmp_path / "vol-unmounted").rename(db_dir)  # back
        await s.write([pt(2, power_w=3.0)])
        df = await s.query(q())
        assert df["power_w"].to_list() == [1.0, 3.0]
    finally:
        await s.close()


async def test_one_failed_read_is_tried_again_on_a_new_connection(
    store: SQLiteStore, caplog: pytest.LogCaptureFixture
) -> None:
    """A transient SQLite error on a read is not a 503: the read is tried once more on a fresh
    connection.  The fault is SQLite's own: a progress handler that interrupts the next statement of the
    connection the query runs on (small windowed queries run on the caller's thread)."""
    await store.write([pt(0, power_w=1.0), pt(30, power_w=3.0)])
    minutes = q(every=timedelta(minutes=1), agg="mean")
    first = await store.query(minutes)
    conn = store._local.conn  # this thread's connection, opened by the query above
    assert conn is not None
    conn.set_progress_handler(lambda: 1, 1)  # every statement on it is interrupted from now on
    with caplog.at_level(logging.WARNING, logger="pipeline.sqlite_store"):
        again = await store.query(minutes)
    assert again.equals(first)
    assert first["power_w"].to_list()[0] == 2.0
    assert any(
        "trying once more" in r.getMessage() and "interrupted" in r.getMessage() for r in caplog.records
    )


async def test_outage_when_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "hems.sqlite"
    s = SQLiteStore(path)
    try:
        await s.write([pt(0, power_w=1.0)])
        path.rename(tmp_path / "old.sqlite")
        path.write_bytes(b"")  # someone put an empty file in its place
        with pytest.raises(StoreUnavailable):
            await s.write([pt(1, power_w=2.0)])
    finally:
        await s.close()


async def test_data_version_moves_on_every_change_and_only_then(tmp_path: Path) -> None:
    """The API reuses rendered pages while this value holds, so every kind of change must move it:
    this store's writes, another connection's (the collector in another process), and deletions."""
    path = tmp_path / "v" / "hems.sqlite"
    store = SQLiteStore(path, version_poll_s=0)  # ask SQLite every time
    assert store.data_version() is None  # no file yet
    await store.write([Point("electricity", "hh-1", "m", "echonet", B, {"power_w": 1.0})])
    v1 = store.data_version()
    assert v1 is not None
    await store.query(q())
    assert store.data_version() == v1  # reading changes nothing
    await store.write([Point("electricity", "hh-1", "m", "echonet", B + NS, {"power_w": 2.0})])
    v2 = store.data_version()
    assert v2 is not None and v2 != v1
    other = SQLiteStore(path)
    await other.write([Point("electricity", "hh-1", "m", "echonet", B + 2 * NS, {"power_w": 3.0})])
    await other.close()
    v3 = store.data_version()
    assert v3 is not None and v3 != v2
    await store.run_write(lambda conn: conn.execute("DELETE FROM points WHERE ts_ns = ?", (B,)))
    v4 = store.data_version()
    assert v4 is not None and v4 != v3
    await store.close()
    assert store.data_version() is None  # closed: nothing may be reused


async def test_data_version_sees_its_own_writes_at_once_and_others_within_the_poll(tmp_path: Path) -> None:
    path = tmp_path / "hems.sqlite"
    store = SQLiteStore(path, version_poll_s=3600)
    await store.write([Point("electricity", "hh-1", "m", "echonet", B, {"power_w": 1.0})])
    v1 = store.data_version()
    await store.write([Point("electricity", "hh-1", "m", "echonet", B + NS, {"power_w": 2.0})])
    v2 = store.data_version()
    assert v1 is not None and v2 is not None and v2 != v1  # own write: no poll needed
    other = SQLiteStore(path)
    await other.write([Point("electricity", "hh-1", "m", "echonet", B + 2 * NS, {"power_w": 3.0})])
    await other.close()
    assert store.data_version() == v2  # another connection's commit: not asked yet (documented delay)
    store.version_poll_s = 0
    assert store.data_version() != v2
    await store.close()


async def test_a_store_made_before_the_health_fields_is_migrated(tmp_path: Path) -> None:
    """A data directory from before the equipment-status fields existed keeps working: the columns are
    added on open, old rows read as null there, and device health is written and read back."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE points (household TEXT NOT NULL, measurement TEXT NOT NULL, ts_ns INTEGER NOT NULL, "
        "device TEXT NOT NULL, source TEXT NOT NULL, power_w REAL, "
        "PRIMARY KEY (household, measurement, ts_ns, device)) WITHOUT ROWID"
    )
    old.execute("INSERT INTO points VALUES ('hh-1', 'electricity', ?, 'meter', 'echonet', 5.0)", (B,))
    old.commit()
    old.close()
    store = SQLiteStore(path)
    try:
        await store.write([pt(1, dev="inverter", cat="equipment", health="timeout", health_since_s=1.5)])
        health = await store.query(q(category="equipment", fields=("health", "health_since_s")))
        assert health.select("device", "health", "health_since_s").rows() == [("inverter", "timeout", 1.5)]
        assert health.schema["health"] == pl.Utf8
        power = await store.query(q(fields=("power_w", "state")))
        assert power.select("power_w", "state").rows() == [(5.0, None)]
    finally:
        await store.close()
