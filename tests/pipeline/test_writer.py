"""The writer end to end on real SQLite files and a real spool directory."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.reading import Reading
from pipeline.counters import CounterStateFile
from pipeline.points import Point
from pipeline.query import SeriesQuery
from pipeline.spool import Spool
from pipeline.sqlite_store import SQLiteStore
from pipeline.writer import SUBMIT_SLICE, Backpressure, Pipeline
from tests.pipeline.intake_watch import intake_watch

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=2)


def meter(i: int, import_wh: float | None = None, **fields: object) -> Reading:
    f: dict[str, object] = {"power_w": float(i)}
    if import_wh is not None:
        f["import_wh_total"] = import_wh
    f.update(fields)
    return Reading(
        household="hh-1",
        device="meter",
        category="electricity",
        ts_utc=T0 + timedelta(seconds=i),
        fields=f,  # type: ignore[arg-type]
        counter_wrap={"import_wh_total": 100_000_000.0},
    )


def all_power(days: int = 1) -> SeriesQuery:
    return SeriesQuery(("hh-1",), "electricity", ("power_w",), T0, T0 + timedelta(days=days))


async def test_submit_validates_converts_and_stores(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "hems.sqlite")
    async with Pipeline(store, batch_size=100, max_delay=0.01) as p:
        bad = Reading("hh-1", "meter", "electricity", T0 + timedelta(days=3), {"power_w": 1.0})
        res = await p.submit(
            [meter(0, 99_999_900.0), bad, meter(1, 50.0, soc_pct=150.0), meter(2, 80.0)], now=NOW
        )
        assert res.accepted == 3
        assert res.rejected == ((1, "timestamp_in_future"),)
    q = SeriesQuery(("hh-1",), "electricity", ("import_wh_total", "raw_import_wh_total"), T0, NOW)
    df = await store.query(q)
    assert df["import_wh_total"].to_list() == [99_999_900.0, 100_000_050.0, 100_000_080.0]
    assert df["raw_import_wh_total"].to_list() == [99_999_900.0, 50.0, 80.0]
    m = p.metrics()
    assert m["validation"]["rejected"] == {"timestamp_in_future": 1}
    assert m["validation"]["dropped_fields"] == {"out_of_range": 1}
    assert m["counters"]["wraps"] == 1
    assert m["points_written"] == 3
    await store.close()


async def test_concurrent_submitters_share_batches(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "hems.sqlite")
    async with Pipeline(store, batch_size=50, max_delay=0.05) as p:
        await asyncio.gather(*(p.submit([meter(k * 10 + j) for j in range(10)], now=NOW) for k in range(20)))
        assert p.stats.batches_written < 20
    assert (await store.query(all_power())).height == 200
    await store.close()


class WriteLog(SQLiteStore):
    """The real embedded store, remembering what each write call held (to see how batches were cut)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writes: list[list[float]] = []

    async def write(self, points: Sequence[Point]) -> None:
        self.writes.append([float(p.fields["power_w"]) for p in points])
        await super().write(points)


async def test_a_full_batch_is_written_while_the_next_fills(tmp_path: Path) -> None:
    """Readings that arrive after a batch reached ``batch_size`` go to the next batch (so the full one
    can be written meanwhile), batches are written oldest first, and nothing is lost or repeated."""
    store = WriteLog(tmp_path / "hems.sqlite")
    async with Pipeline(store, batch_size=25, max_delay=0.05) as p:
        calls = [p.submit([meter(k * 10 + j) for j in range(10)], now=NOW) for k in range(8)]
        results = await asyncio.gather(*calls)
    assert [r.accepted for r in results] == [10] * 8
    assert [len(w) for w in store.writes] == [30, 30, 20]  # sealed at 30 (>= 25), twice; the rest on time
    assert [v for w in store.writes for v in w] == [float(i) for i in range(80)]  # in submission order
    assert (await store.query(all_power())).height == 80
    await store.close()


async def test_outage_spools_then_replays_exactly_once(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    store = SQLiteStore(vol / "hems.sqlite")
    spool = Spool(tmp_path / "spool")
    async with Pipeline(store, spool=spool, batch_size=10, max_delay=0.01, replay_interval=0.02) as p:
        await p.submit([meter(i) for i in range(10)], now=NOW)
        vol.rename(tmp_path / "vol-gone")  # the store's volume disappears
        for k in range(1, 6):
            res = await p.submit([meter(k * 10 + i) for i in range(10)], now=NOW)
            assert res.accepted == 10  # acknowledged: in the spool
        assert p.metrics()["spool_depth_points"] == 50
        assert p.stats.store_failures["unavailable"] >= 1
        (tmp_path / "vol-gone").rename(vol)
        await p.submit([meter(60 + i) for i in range(10)], now=NOW)  # behind the spool, in order
        for _ in range(200):
            if len(spool) == 0:
                break
            await asyncio.sleep(0.02)
        assert p.metrics()["spool_depth_batches"] == 0
        assert p.stats.replayed_points >= 50
    df = await store.query(all_power())
    assert df["power_w"].to_list() == [float(i) for i in range(70)]  # each once, none missing
    await store.close()


async def test_spool_full_reports_backpressure(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    store = SQLiteStore(vol / "hems.sqlite")
    await store.write([])
    spool = Spool(tmp_path / "spool", max_bytes=600, segment_bytes=600)
    p = Pipeline(store, spool=spool, batch_size=5, max_delay=0.01, replay_interval=10)
    await p.start()
    await p.submit([meter(0)], now=NOW)
    vol.rename(tmp_path / "gone")
    acked = 0
    with pytest.raises(Backpressure):
        for k in range(1, 100):
            await p.submit([meter(k * 5 + i) for i in range(5)], now=NOW)
            acked += 5
    assert acked > 0
    assert p.stats.backpressure_batches == 1 and p.stats.backpressure_points == 5
    assert p.metrics()["spool_events"]["full_refused_batches"] == 1
    (tmp_path / "gone").rename(vol)
    await p.close()
    assert (await store.query(all_power())).height == 1 + acked  # every acknowledged reading
    await store.close()


async def test_counter_state_survives_pipeline_restart(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "hems.sqlite")
    async with Pipeline(
        store, counter_state=CounterStateFile(tmp_path / "state.sqlite"), max_delay=0.01
    ) as p:
        await p.submit([meter(0, 99_999_990.0), meter(1, 5.0)], now=NOW)  # wrap -> 100,000,005
    async with Pipeline(
        store, counter_state=CounterStateFile(tmp_path / "state.sqlite"), max_delay=0.01
    ) as p:
        await p.submit([meter(2, 25.0)], now=NOW)
    q = SeriesQuery(("hh-1",), "electricity", ("import_wh_total",), T0, NOW)
    assert (await store.query(q))["import_wh_total"].to_list() == [99_999_990.0, 100_000_005.0, 100_000_025.0]
    await store.close()


async def test_batch_the_store_refuses_is_quarantined_not_blocking(tmp_path: Path) -> None:
    # A spool left by an older version can hold a field this store no longer knows: the store
    # refuses that batch outright.  It is set aside on disk and counted; later batches still land.
    spool = Spool(tmp_path / "spool")
    spool.append([Point("electricity", "hh-1", "meter", "echonet", 10**18, {"power_w": 1.0})])
    spool.append([Point("electricity", "hh-1", "meter", "echonet", 10**18, {"retired_field": 1.0})])
    spool.append([Point("electricity", "hh-1", "meter", "echonet", 10**18 + 1, {"power_w": 2.0})])
    store = SQLiteStore(tmp_path / "hems.sqlite")
    p = Pipeline(store, spool=spool)
    await p.start()
    await p.close()
    assert p.stats.store_failures["error"] == 1
    assert spool.stats.events["quarantined_batches"] == 1
    assert len(list((tmp_path / "spool").glob("quarantine-*.json"))) == 1
    q = SeriesQuery(("hh-1",), "electricity", ("power_w",), datetime(2001, 9, 1, tzinfo=UTC), NOW)
    assert (await store.query(q))["power_w"].to_list() == [1.0, 2.0]
    await store.close()


async def test_a_long_submit_lets_the_loop_run_and_returns_when_every_slice_is_stored(
    tmp_path: Path,
) -> None:
    """Intake gives the event loop back between slices of ``SUBMIT_SLICE`` readings (a store write
    waiting behind a big submit would leave the store idle), and the call still answers only when all
    of its readings are stored, though they went into several batches."""
    store = SQLiteStore(tmp_path / "hems.sqlite")
    n = 4 * SUBMIT_SLICE + 7
    async with Pipeline(store, batch_size=SUBMIT_SLICE + 100, max_delay=0.05) as p:
        async with intake_watch(p) as seen:
            res = await p.submit([meter(i) for i in range(n)], now=NOW)
        assert res.accepted == n and res.rejected == ()
        assert any(0 < accepted < n for accepted in seen)  # the loop ran mid-intake
        assert p.stats.batches_written >= 2
        assert (await store.query(all_power())).height == n  # all durable when submit returned
