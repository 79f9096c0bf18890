"""Retention deletes raw days only after rolling them up; windowed queries read the same afterwards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipeline.points import Point
from pipeline.query import SeriesQuery, datetime_to_ns
from pipeline.retention import RetentionPolicy, run_retention
from pipeline.sqlite_store import SQLiteStore

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 12
STEP = timedelta(minutes=20)


def points() -> list[Point]:
    out = []
    n = int(timedelta(days=DAYS) / STEP)
    for i in range(n):
        ts = datetime_to_ns(T0 + i * STEP)
        fields: dict[str, float | bool | str] = {"power_w": float((i * 37) % 1000 - 300), "state": "ok"}
        if i % 3:
            fields["running"] = i % 2 == 0
        out.append(Point("battery", "hh-1", "bat", "echonet", ts, fields))
        out.append(Point("battery", "hh-2", "bat", "echonet", ts + 1, {"power_w": float(i)}))
    return out


def query(every: timedelta, agg: str, start: datetime = T0) -> SeriesQuery:
    return SeriesQuery(
        ("hh-1", "hh-2"),
        "battery",
        ("power_w", "running"),
        start,
        T0 + timedelta(days=DAYS),
        every=every,
        agg=agg,  # type: ignore[arg-type]
    )


CASES = [
    (every, agg)
    for every in (timedelta(hours=1), timedelta(hours=7), timedelta(days=1))
    for agg in ("mean", "min", "max", "sum", "first", "last", "count")
]


async def test_rollups_answer_like_raw_after_deletion(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "hems.sqlite")
    await store.write(points())
    before = {case: await store.query(query(*case)) for case in CASES}
    now = T0 + timedelta(days=DAYS, hours=5)
    report = await run_retention(store, RetentionPolicy(raw_days=5), now=now)
    cutoff = datetime(2026, 1, 8, tzinfo=UTC)  # floor_day(now - 5 days)
    assert report.raw_floor_ns == datetime_to_ns(cutoff)
    assert report.raw_deleted == 2 * int(timedelta(days=7) / STEP)
    raw_left = await store.query(SeriesQuery(("hh-1",), "battery", ("power_w",), T0, now))
    assert raw_left["time"].min() == cutoff
    for case in CASES:
        assert_frame_equal(await store.query(query(*case)), before[case], check_exact=False, rel_tol=1e-12)
    # a second pass changes nothing
    await run_retention(store, RetentionPolicy(raw_days=5), now=now)
    assert_frame_equal(
        await store.query(query(timedelta(hours=7), "mean")), before[(timedelta(hours=7), "mean")]
    )
    await store.close()


async def test_text_fields_are_not_rolled_up(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "hems.sqlite")
    await store.write(points())
    await run_retention(store, RetentionPolicy(raw_days=5), now=T0 + timedelta(days=DAYS))
    q = SeriesQuery(
        ("hh-1",), "battery", ("power_w", "state"), T0, T0 + timedelta(days=2), timedelta(hours=1), "last"
    )
    df = await store.query(q)
    assert df.height == 48
    assert df["state"].null_count() == 48  # documented limit: text lives only in raw data
    assert df.schema["state"] == pl.Utf8
    await store.close()


@pytest.mark.parametrize("hourly_days", [3])
async def test_old_hourly_rollups_expire_daily_stay(tmp_path: Path, hourly_days: int) -> None:
    store = SQLiteStore(tmp_path / "hems.sqlite")
    await store.write(points())
    now = T0 + timedelta(days=DAYS)
    report = await run_retention(store, RetentionPolicy(raw_days=2, hourly_days=hourly_days), now=now)
    assert report.rollups_deleted > 0
    hourly = await store.query(query(timedelta(hours=1), "count"))
    daily = await store.query(query(timedelta(days=1), "count"))
    assert hourly["time"].min() == now - timedelta(days=hourly_days)
    assert daily.filter(pl.col("household") == "hh-1")["power_w"].to_list() == [72] * DAYS
    await store.close()


# A window whose ends are not on the rollups' bucket boundaries, below the raw floor: the served period of
# a new occupant who moved in at 10:20 on the 2nd and of a partner whose link ended at 07:30 on the 4th.
INSIDE = (T0 + timedelta(days=1, hours=10, minutes=20), T0 + timedelta(days=3, hours=7, minutes=30))
WHOLE_HOURS = (T0 + timedelta(days=1, hours=11), T0 + timedelta(days=3, hours=7))


@pytest.mark.parametrize(("every", "agg"), CASES)
async def test_rollups_never_answer_with_readings_outside_the_window(
    tmp_path: Path, every: timedelta, agg: str
) -> None:
    """After retention, a window that starts or stops inside an hourly or daily bucket is answered from
    the whole hours inside it only: a bucket's partial aggregates hold readings from before the start (the
    previous occupant's morning) or after the stop, and the raw points that would split it are gone.
    The answer equals the raw answer over the whole hours inside the window, as it was before retention."""
    store = SQLiteStore(tmp_path / "hems.sqlite")
    await store.write(points())
    whole = SeriesQuery(("hh-1", "hh-2"), "battery", ("power_w", "running"), *WHOLE_HOURS, every, agg)  # type: ignore[arg-type]
    expected = await store.query(whole)
    await run_retention(store, RetentionPolicy(raw_days=5), now=T0 + timedelta(days=DAYS, hours=5))
    asked = SeriesQuery(("hh-1", "hh-2"), "battery", ("power_w", "running"), *INSIDE, every, agg)  # type: ignore[arg-type]
    got = await store.query(asked)
    assert_frame_equal(got, expected, check_exact=False, rel_tol=1e-12)
    await store.close()


async def test_rollups_answer_a_window_on_bucket_boundaries_whole(tmp_path: Path) -> None:
    """The allow side: a window on day boundaries below the raw floor is answered from the daily rows
    in full, every reading of it counted."""
    store = SQLiteStore(tmp_path / "hems.sqlite")
    await store.write(points())
    window = (T0 + timedelta(days=1), T0 + timedelta(days=3))
    q = SeriesQuery(("hh-1",), "battery", ("power_w",), *window, timedelta(days=1), "count")
    await run_retention(store, RetentionPolicy(raw_days=5), now=T0 + timedelta(days=DAYS, hours=5))
    got = await store.query(q)
    assert got["power_w"].to_list() == [72, 72]
    await store.close()
