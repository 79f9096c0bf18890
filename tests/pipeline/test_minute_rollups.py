"""Minute rollups kept at ingest answer windowed queries exactly as aggregating the raw points would.

Reference: the store's own raw points (a query without ``every``) aggregated by
``pipeline.frames.shape_result``, the one implementation of the result contract.  Real SQLite files.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from pipeline import minute_rollup
from pipeline.frames import shape_result
from pipeline.points import Point
from pipeline.query import AGGS, Deletion, SeriesQuery, datetime_to_ns
from pipeline.retention import RetentionPolicy, run_retention
from pipeline.sqlite_store import SQLiteStore

T0 = datetime(2026, 3, 1, tzinfo=UTC)
NS = 1_000_000_000


def pt(sec: float, dev: str = "m1", hh: str = "hh-1", cat: str = "electricity", **fields: Any) -> Point:
    return Point(cat, hh, dev, "echonet", datetime_to_ns(T0) + round(sec * NS), fields)


async def reference(store: SQLiteStore, q: SeriesQuery) -> pl.DataFrame:
    """``q`` answered from the raw points: every point in range, re-aggregated by ``shape_result``."""
    raw_q = SeriesQuery(q.households, q.category, q.fields, q.start, q.stop, devices=q.devices)
    raw = await store.query(raw_q)
    frame = raw.select(
        (pl.col("time").dt.epoch("us") * 1000).alias("ts_ns"), "household", "device", *q.fields
    ).with_columns(pl.col(f).cast(pl.Float64) for f in q.fields if f in ("fault", "running", "connected"))
    return shape_result(frame, q)


def same(got: pl.DataFrame, want: pl.DataFrame) -> None:
    """Equal frames; floats up to the order of summation (rollups add minute sums, not samples)."""
    assert_frame_equal(got, want, check_exact=False, rel_tol=1e-12, abs_tol=1e-9)


point_st = st.tuples(
    st.sampled_from(["m1", "m2"]),
    st.integers(0, 4 * 3600),  # seconds after T0
    st.one_of(st.none(), st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)),  # power_w
    st.one_of(st.none(), st.booleans()),  # fault
)


@given(
    batches=st.lists(st.lists(point_st, min_size=1, max_size=25), min_size=1, max_size=5),
    every_min=st.sampled_from([1, 2, 5, 60, 90]),
    agg=st.sampled_from(AGGS),
    start_s=st.integers(0, 3600),
    span_s=st.integers(1, 4 * 3600),
    fields=st.sampled_from([("power_w",), ("fault",), ("power_w", "fault")]),
)
@settings(max_examples=60, deadline=None)
def test_windows_equal_the_raw_aggregation(
    batches: list[list[tuple[str, int, float | None, bool | None]]],
    every_min: int,
    agg: str,
    start_s: int,
    span_s: int,
    fields: tuple[str, ...],
) -> None:
    """Points arrive in several writes (re-writes of a point merge field by field, as the store's upsert
    does); any window, aligned or not, any aggregation, one field or two."""
    q = SeriesQuery(
        ("hh-1",),
        "electricity",
        fields,
        T0 + timedelta(seconds=start_s),
        T0 + timedelta(seconds=start_s + span_s),
        every=timedelta(minutes=every_min),
        agg=agg,  # type: ignore[arg-type]
    )

    async def run() -> tuple[pl.DataFrame, pl.DataFrame]:
        with tempfile.TemporaryDirectory() as tmp:
            store = SQLiteStore(Path(tmp) / "r.sqlite")
            try:
                for batch in batches:
                    points = []
                    for dev, sec, power, fault in batch:
                        f: dict[str, Any] = {"voltage_v": 100.0}
                        if power is not None:
                            f["power_w"] = power
                        if fault is not None:
                            f["fault"] = fault
                        points.append(pt(sec, dev, **f))
                    await store.write(points)
                assert minute_rollup.serves(q)
                return await store.query(q), await reference(store, q)
            finally:
                await store.close()

    got, want = asyncio.run(run())
    same(got, want)


async def test_a_replayed_batch_counts_once_and_a_rewrite_replaces_its_value(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite")
    batch = [pt(s, power_w=float(s)) for s in range(0, 600, 10)]
    q = SeriesQuery(
        ("hh-1",), "electricity", ("power_w",), T0, T0 + timedelta(minutes=10), timedelta(minutes=1)
    )
    count_q = SeriesQuery(q.households, q.category, q.fields, q.start, q.stop, q.every, "count")
    await store.write(batch)
    once, counted = await store.query(q), await store.query(count_q)
    await store.write(batch)  # a spool replay: the same points again
    assert_frame_equal(await store.query(q), once)
    assert_frame_equal(await store.query(count_q), counted)
    assert counted["power_w"].to_list() == [6] * 10
    await store.write([pt(0, power_w=600.0)])  # the first point of minute 0, rewritten
    after = await store.query(q)
    assert after["power_w"][0] == pytest.approx((600.0 + 10 + 20 + 30 + 40 + 50) / 6)
    assert after["power_w"][1:].to_list() == once["power_w"][1:].to_list()
    same(after, await reference(store, q))
    await store.close()


async def test_a_rewrite_without_the_field_keeps_its_rollup(tmp_path: Path) -> None:
    """The upsert merges fields: a point re-sent with only another field keeps its power, and so do
    the power rollups."""
    store = SQLiteStore(tmp_path / "s.sqlite")
    await store.write([pt(5, power_w=10.0), pt(15, power_w=30.0)])
    await store.write([pt(5, voltage_v=101.0)])
    q = SeriesQuery(("hh-1",), "electricity", ("power_w", "voltage_v"), T0, T0 + timedelta(minutes=1),
                    timedelta(minutes=1))  # fmt: skip
    got = await store.query(q)
    assert got["power_w"].to_list() == [20.0] and got["voltage_v"].to_list() == [101.0]
    same(got, await reference(store, q))
    await store.close()


@pytest.mark.parametrize("agg", AGGS)
async def test_several_homes_devices_and_a_device_filter(tmp_path: Path, agg: str) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite")
    points = [
        pt(s, dev, hh, power_w=float((s * 7 + len(dev) + len(hh)) % 50) - 20.0, fault=s % 30 == 0)
        for s in range(0, 7200, 10)
        for dev in ("m1", "m2")
        for hh in ("hh-1", "hh-2")
    ]
    await store.write(points)
    for devices in (None, ("m2",)):
        q = SeriesQuery(("hh-2", "hh-1"), "electricity", ("power_w", "fault"), T0 + timedelta(seconds=95),
                        T0 + timedelta(seconds=5000), timedelta(minutes=5), agg, devices)  # type: ignore[arg-type]  # fmt: skip
        same(await store.query(q), await reference(store, q))
    await store.close()


async def test_a_store_written_before_minute_rollups_is_back_filled(tmp_path: Path) -> None:
    """A database of schema version 1 (points only) gets its rollups when a store opens it."""
    path = tmp_path / "old.sqlite"
    store = SQLiteStore(path)
    await store.write([pt(s, power_w=float(s % 97)) for s in range(0, 7200, 10)])
    await store.close()
    with sqlite3.connect(path) as conn:  # what a database of the previous version holds
        conn.execute("DROP TABLE minute_rollups")
        conn.execute("DROP TABLE series_changes")
        conn.execute("PRAGMA user_version = 1")
    store = SQLiteStore(path)
    q = SeriesQuery(("hh-1",), "electricity", ("power_w",), T0, T0 + timedelta(hours=2), timedelta(minutes=1))
    got = await store.query(q)
    assert got.height == 120
    same(got, await reference(store, q))
    await store.close()


# The minute rollups' table as schema version 2 made it (copied as text, not derived from today's code).
V2_MINUTE_ROLLUPS = (
    "CREATE TABLE minute_rollups (household TEXT NOT NULL, measurement TEXT NOT NULL, field TEXT NOT NULL, "
    "hour_ns INTEGER NOT NULL, device TEXT NOT NULL, n BLOB NOT NULL, total BLOB NOT NULL, "
    "min BLOB NOT NULL, max BLOB NOT NULL, first BLOB NOT NULL, last BLOB NOT NULL, "
    "PRIMARY KEY (household, measurement, field, hour_ns, device)) WITHOUT ROWID"
)


async def test_a_store_of_version_2_gets_its_minute_rollups_in_a_rowid_table_with_every_row(
    tmp_path: Path,
) -> None:
    """Version 2 kept the hour rows (about 3 KB each) in a WITHOUT ROWID table, whose look-ups were
    slow; opened now, the rows move to a rowid table with a unique key, answers unchanged, and a write
    to an hour already rolled up updates its row instead of adding one."""
    path = tmp_path / "v2.sqlite"
    store = SQLiteStore(path)
    await store.write(
        [pt(s, dev=dev, power_w=float(s % 89)) for s in range(0, 7200, 10) for dev in ("m1", "m2")]
    )
    await store.close()
    with sqlite3.connect(path) as conn:  # what a database of version 2 holds
        before = conn.execute(
            "SELECT * FROM minute_rollups ORDER BY household, field, hour_ns, device"
        ).fetchall()
        conn.execute("ALTER TABLE minute_rollups RENAME TO new_layout")
        conn.execute(V2_MINUTE_ROLLUPS)
        conn.execute("INSERT INTO minute_rollups SELECT * FROM new_layout")
        conn.execute("DROP TABLE new_layout")
        conn.execute("PRAGMA user_version = 2")
    store = SQLiteStore(path)
    q = SeriesQuery(("hh-1",), "electricity", ("power_w",), T0, T0 + timedelta(hours=2), timedelta(minutes=1))
    got = await store.query(q)
    assert got.height == 240
    same(got, await reference(store, q))
    await store.write([pt(7190.5, power_w=1e4)])  # an hour that has its row already
    same(await store.query(q), await reference(store, q))
    await store.close()
    with sqlite3.connect(path) as conn:
        (ddl,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'minute_rollups'").fetchone()
        assert "WITHOUT ROWID" not in ddl.upper() and conn.execute("PRAGMA user_version").fetchone()[0] == 3
        after = conn.execute(
            "SELECT * FROM minute_rollups ORDER BY household, field, hour_ns, device"
        ).fetchall()
    assert len(after) == len(before) and [r[:5] for r in after] == [r[:5] for r in before]
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert len(changed) == 1 and after[changed[0]][4] == "m1"  # only m1's second hour of power_w


async def test_retention_deletes_the_minute_rollups_with_the_raw_points(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite")
    old, recent = T0, T0 + timedelta(days=40)
    for day in (old, recent):
        base = (day - T0).total_seconds()
        await store.write([pt(base + s, power_w=float(s % 13)) for s in range(0, 3600, 10)])
    await run_retention(store, RetentionPolicy(raw_days=30), now=recent + timedelta(days=1))

    def hours(conn: sqlite3.Connection) -> list[int]:
        return [h for (h,) in conn.execute("SELECT DISTINCT hour_ns FROM minute_rollups ORDER BY hour_ns")]

    assert await store.run_write(hours) == [datetime_to_ns(recent)]
    q = SeriesQuery(("hh-1",), "electricity", ("power_w",), recent, recent + timedelta(hours=1),
                    timedelta(minutes=1))  # fmt: skip
    same(await store.query(q), await reference(store, q))
    await store.close()


def test_text_fields_and_other_resolutions_take_the_raw_path() -> None:
    day = (T0, T0 + timedelta(days=1))
    assert minute_rollup.serves(SeriesQuery(("h",), "electricity", ("power_w",), *day, timedelta(minutes=3)))
    assert not minute_rollup.serves(SeriesQuery(("h",), "pv", ("state",), *day, timedelta(minutes=1), "last"))
    assert not minute_rollup.serves(SeriesQuery(("h",), "pv", ("power_w",), *day, timedelta(seconds=90)))
    assert not minute_rollup.serves(SeriesQuery(("h",), "pv", ("power_w",), *day))


async def test_an_erasure_leaves_no_erased_sample_in_the_minute_rollups(tmp_path: Path) -> None:
    """Erasure from 00:30:20 to 01:10:00 of hh-1's electricity: every minute query answers as a store
    that never held those points (the edge minute 00:30 keeps its first two samples), and hh-2 is
    untouched.  Fails when the minute rollups keep the erased samples."""
    erased = (T0 + timedelta(minutes=30, seconds=20), T0 + timedelta(hours=1, minutes=10))
    points = [pt(s, power_w=float(s % 17), fault=s % 30 == 0) for s in range(0, 2 * 3600, 10)]
    other = [pt(s, hh="hh-2", power_w=1.0) for s in range(0, 2 * 3600, 10)]
    kept = [p for p in points if not datetime_to_ns(erased[0]) <= p.ts_ns < datetime_to_ns(erased[1])]
    store, fresh = SQLiteStore(tmp_path / "s.sqlite"), SQLiteStore(tmp_path / "fresh.sqlite")
    await store.write(points + other)
    await fresh.write(kept + other)
    assert await store.delete(Deletion("hh-1", "electricity", *erased)) == len(points) - len(kept)
    for every, agg in (
        (timedelta(minutes=1), "count"),
        (timedelta(minutes=1), "mean"),
        (timedelta(hours=1), "max"),
    ):
        q = SeriesQuery(("hh-1", "hh-2"), "electricity", ("power_w", "fault"), T0, T0 + timedelta(hours=2),
                        every, agg)  # fmt: skip
        got = await store.query(q)
        same(got, await fresh.query(q))
        same(got, await reference(store, q))
    minute_q = SeriesQuery(("hh-1",), "electricity", ("power_w",), T0, T0 + timedelta(hours=2),
                           timedelta(minutes=1), "count")  # fmt: skip
    counts = dict((await store.query(minute_q)).select("time", "power_w").rows())
    assert counts[T0 + timedelta(minutes=30)] == 2 and T0 + timedelta(minutes=31) not in counts
    await store.close()
    await fresh.close()
