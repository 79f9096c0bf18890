"""A real InfluxDB goes away in the middle of a writing run and comes back: nothing is lost and
nothing is duplicated.

The run submits readings tick by tick through the real ``Pipeline`` (validation, counters, batching)
into an ``InfluxStore``; the session's influxd is stopped (SIGTERM) part-way, the writer spools to a
real spool directory while it is down, the server is started again on the same data and port, and
after the replay a Flux count query finds every reading exactly once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.reading import Reading
from pipeline.influx_store import InfluxStore, RetryPolicy
from pipeline.query import SeriesQuery
from pipeline.spool import Spool
from pipeline.writer import Pipeline
from tests.influx_server import InfluxServer

pytestmark = pytest.mark.influxdb

T0 = datetime(2026, 11, 20, tzinfo=UTC)
NOW = T0 + timedelta(days=1)
HOMES = ("hh-1", "hh-2", "hh-3")
TICKS = 240
STOP_AT, DOWN_TICKS = 60, 80  # ticks submitted before the stop / while down


def readings(tick: int) -> list[Reading]:
    return [
        Reading(
            household=hh,
            device="meter",
            category="electricity",
            ts_utc=T0 + timedelta(seconds=10 * tick),
            fields={"power_w": float(tick % 17) * 10.0, "import_wh_total": 1000.0 + tick},
            source="echonet",
        )
        for hh in HOMES
    ]


async def flux_count(store: InfluxStore, bucket: str) -> dict[str, int]:
    """Points per household, counted by InfluxDB itself."""
    flux = (
        "from(bucket: b)\n"
        "  |> range(start: t0, stop: t1)\n"
        '  |> filter(fn: (r) => r._measurement == "electricity" and r._field == "power_w")\n'
        '  |> group(columns: ["household"])\n'
        "  |> count()"
    )
    tables = await store._api().query_api().query(flux, params={"b": bucket, "t0": T0, "t1": NOW})
    return {str(rec.values["household"]): int(rec.get_value()) for t in tables for rec in t.records}


async def test_store_outage_spools_and_replays_exactly_once(
    tmp_path: Path,
    influxdb: InfluxServer,
    influx_bucket: str,
) -> None:
    store = InfluxStore(
        influxdb.url,
        influxdb.org,
        influx_bucket,
        influxdb.token,
        timeout_s=3.0,
        retry=RetryPolicy(attempts=2, base_delay_s=0.05, max_delay_s=0.2),
    )
    spool = Spool(tmp_path / "spool", segment_bytes=64 * 1024)
    pipeline = Pipeline(
        store, spool=spool, batch_size=30, max_delay=0.01, replay_interval=0.1, max_replay_backoff=0.5
    )
    submitted = 0

    async def collect() -> None:
        """The writing run: one submit per tick, never paused by the outage."""
        nonlocal submitted
        for tick in range(TICKS):
            result = await pipeline.submit(readings(tick), now=NOW)
            assert result.accepted == len(HOMES)
            submitted += 1

    async def outage() -> None:
        """Stops influxd while submits are in flight, starts it again later."""
        while submitted < STOP_AT:
            await asyncio.sleep(0.005)
        await asyncio.to_thread(influxdb.stop)
        assert not await store.ping()
        down_from = submitted
        while submitted < min(down_from + DOWN_TICKS, TICKS - 20):
            await asyncio.sleep(0.005)
        assert len(spool) > 0, "the writer should have spooled while the store was down"
        # Started on the main thread, deliberately blocking the loop for the start-up: influxd is
        # tied to the starting thread's life (PR_SET_PDEATHSIG), and executor threads end with
        # the test's event loop, which would kill the session's server.
        influxdb.start()

    try:
        async with pipeline:
            await asyncio.gather(collect(), outage())
            await pipeline.flush()
            for _ in range(200):  # the replayer drains the spool in the background
                if len(spool) == 0:
                    break
                await asyncio.sleep(0.05)
            assert len(spool) == 0, "the spool should drain once the store is back"
        stats = pipeline.stats
        assert stats.spooled_points > 0
        assert stats.replayed_points == stats.spooled_points

        counts = await flux_count(store, influx_bucket)
        assert counts == {hh: TICKS for hh in HOMES}
        frame = await store.query(SeriesQuery(HOMES, "electricity", ("power_w", "import_wh_total"), T0, NOW))
        assert frame.height == TICKS * len(HOMES)
        assert frame.select("household", "time").is_duplicated().sum() == 0
        assert frame["import_wh_total"].null_count() == 0
    finally:
        if not influxdb.running:
            influxdb.start()
        await store.close()
