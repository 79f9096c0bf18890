"""The negawatt items from stored readings, on a real SQLite store: the X-of-Y baseline worked by hand.

One home, readings every 5 minutes for 13 local days.  Every day draws a constant power of its own
(its "level") except the 10:00 slot, when it exports 500 W.  The baseline of the last day is then
exactly the mean of the four highest levels among the five weekdays before it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from pipeline.negawatt import DEVICE, derive
from pipeline.points import Point
from pipeline.query import SeriesQuery
from pipeline.sqlite_store import SQLiteStore

TOKYO = ZoneInfo("Asia/Tokyo")
FIRST = date(2026, 6, 1)  # a Monday
DAYS = [FIRST + timedelta(days=i) for i in range(13)]  # Mon 1 June .. Sat 13 June
LEVEL = {d: 300.0 + 37.0 * ((i * 7) % 11) for i, d in enumerate(DAYS)}
TARGET = date(2026, 6, 12)  # Friday: the weekdays before it are 11, 10, 9, 8, 5 June
EVENT_SLOT = 36  # 18:00 local on the target day: the household cut its demand to 100 W
HH = "hh-neg"


def _points() -> list[Point]:
    out = []
    for d in DAYS:
        midnight = datetime(d.year, d.month, d.day, tzinfo=TOKYO).astimezone(UTC)
        for k in range(288):
            ts = midnight + timedelta(minutes=5 * k)
            slot = k // 6
            power = LEVEL[d]
            if slot == 20:
                power = -500.0
            if d == TARGET and slot == EVENT_SLOT:
                power = 100.0
            out.append(
                Point("electricity", HH, "meter", "echonet", int(ts.timestamp()) * 10**9, {"power_w": power})
            )
    return out


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "negawatt.sqlite")
    await s.write(_points())
    yield s
    await s.close()


async def _items(store: SQLiteStore, day: date) -> pl.DataFrame:
    start = datetime(day.year, day.month, day.day, tzinfo=TOKYO).astimezone(UTC)
    q = SeriesQuery(
        (HH,),
        "electricity",
        ("generation_sold_w", "demand_procured_w", "baseline_w", "demand_reduction_w"),
        start,
        start + timedelta(days=1),
        devices=(DEVICE,),
    )
    return await store.query(q)


async def test_baseline_is_the_mean_of_the_four_highest_of_five_like_days(store: SQLiteStore) -> None:
    begin = datetime(2026, 5, 31, 15, tzinfo=UTC)  # 1 June 00:00 JST
    written = await derive(store, [HH], begin, begin + timedelta(days=13))
    assert written == 13 * 48
    items = await _items(store, TARGET)
    assert items.height == 48
    before = [date(2026, 6, d) for d in (11, 10, 9, 8, 5)]
    expected = sum(sorted((LEVEL[d] for d in before), reverse=True)[:4]) / 4
    lowest = min(LEVEL[d] for d in before)
    assert expected != pytest.approx(sum(LEVEL[d] for d in before) / 5)  # the lowest day really was dropped
    rows = {i: r for i, r in enumerate(items.iter_rows(named=True))}
    assert rows[0]["baseline_w"] == pytest.approx(expected)
    assert rows[0]["demand_procured_w"] == pytest.approx(LEVEL[TARGET])
    assert rows[0]["demand_reduction_w"] == pytest.approx(max(0.0, expected - LEVEL[TARGET]))
    # The export slot: generation sold, nothing procured, and the like days procured nothing then either.
    assert rows[20]["generation_sold_w"] == pytest.approx(500.0)
    assert rows[20]["demand_procured_w"] == 0.0 and rows[20]["baseline_w"] == 0.0
    # The event: demand cut to 100 W against the baseline.
    assert rows[EVENT_SLOT]["demand_reduction_w"] == pytest.approx(expected - 100.0)
    assert lowest < expected


async def test_no_baseline_without_four_like_days(store: SQLiteStore) -> None:
    begin = datetime(2026, 5, 31, 15, tzinfo=UTC)
    await derive(store, [HH], begin, begin + timedelta(days=13))
    # Thursday 4 June has three weekdays before it; Saturday 13 June has one Saturday/Sunday before it.
    for day in (date(2026, 6, 4), date(2026, 6, 13)):
        items = await _items(store, day)
        assert items.height == 48
        assert items["baseline_w"].null_count() == 48 and items["demand_reduction_w"].null_count() == 48
        assert items["demand_procured_w"].null_count() == 0
    # Friday 5 June has exactly four: a baseline.
    assert (await _items(store, date(2026, 6, 5)))["baseline_w"].null_count() == 0


async def test_a_later_pass_reads_the_stored_items_for_its_baselines(store: SQLiteStore) -> None:
    """Passes run every few minutes and read back the demand procured they stored, not weeks of raw
    readings: the last day computed alone equals the last day computed with all the others."""
    begin = datetime(2026, 5, 31, 15, tzinfo=UTC)
    await derive(store, [HH], begin, begin + timedelta(days=11))
    target = datetime(2026, 6, 11, 15, tzinfo=UTC)  # 12 June 00:00 JST
    assert await derive(store, [HH], target, target + timedelta(days=1)) == 48
    alone = await _items(store, TARGET)
    await derive(store, [HH], begin, begin + timedelta(days=13))
    together = await _items(store, TARGET)
    assert alone.equals(together)
    assert alone["baseline_w"].null_count() == 0
