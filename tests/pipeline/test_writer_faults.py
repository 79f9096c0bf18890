"""The writer when the spool's disk fills, when the spool's policy must lose readings, and when the
store hangs: nothing acknowledged is lost, every loss is counted and logged, and nothing waits on the
store for long.  Real SQLite files, real spool directories on real small volumes, a real TCP server
that accepts and never answers."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.reading import Reading
from pipeline.influx_store import InfluxStore
from pipeline.query import SeriesQuery
from pipeline.spool import Spool
from pipeline.sqlite_store import SQLiteStore
from pipeline.writer import Backpressure, Pipeline
from tests.volumes import Mount, fill

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=2)


def meter(i: int, household: str = "hh-1") -> Reading:
    return Reading(
        household=household,
        device="meter",
        category="electricity",
        ts_utc=T0 + timedelta(seconds=i),
        fields={"power_w": float(i), "import_wh_total": 1000.0 + i},
    )


def all_power(household: str = "hh-1") -> SeriesQuery:
    return SeriesQuery((household,), "electricity", ("power_w",), T0, NOW)


class VanishingStore:
    """A real SQLite store whose directory is moved away (an outage) and back."""

    def __init__(self, tmp_path: Path) -> None:
        self.vol, self.away = tmp_path / "store", tmp_path / "gone"
        self.store = SQLiteStore(self.vol / "hems.sqlite")

    async def opened(self) -> SQLiteStore:
        await self.store.open()
        return self.store

    def go(self) -> None:
        self.vol.rename(self.away)

    def come_back(self) -> None:
        self.away.rename(self.vol)


async def wait_until_drained(spool: Spool, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while len(spool) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


async def test_full_spool_volume_during_replay_drains_and_closes_cleanly(
    tmp_path: Path, small_volume: Mount
) -> None:
    outage = VanishingStore(tmp_path)
    store = await outage.opened()
    spool_vol = small_volume("160k")
    spool = Spool(spool_vol / "spool", max_bytes=1 << 30, segment_bytes=16 * 1024)
    p = Pipeline(
        store, spool=spool, batch_size=40, max_delay=0.01, replay_interval=0.05, max_replay_backoff=1
    )
    await p.start()
    outage.go()  # the store's disk goes away: everything goes to the spool
    acked: list[int] = []
    refused = 0
    i = 0
    while refused < 3:
        ids = list(range(i, i + 40))
        i += 40
        try:
            await p.submit([meter(j) for j in ids], now=NOW)
        except Backpressure as exc:
            assert exc.reason == "spool_write_failed"
            refused += 1
            continue
        acked.extend(ids)
    fill(spool_vol)  # and nothing at all is left on the spool's volume
    outage.come_back()  # the store comes back
    t0 = time.monotonic()
    await wait_until_drained(spool, 20.0)
    drained_in = time.monotonic() - t0
    assert len(spool) == 0, f"replay stalled with {spool.depth_batches} batches left"
    assert drained_in < 8.0  # not one batch per backoff period
    await p.close()  # no exception escapes shutdown
    df = await store.query(all_power())
    assert df["power_w"].to_list() == [float(j) for j in acked]
    assert p.stats.readings_accepted == len(acked)
    await store.close()


async def test_drop_oldest_losses_are_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outage = VanishingStore(tmp_path)
    store = await outage.opened()
    spool = Spool(tmp_path / "spool", max_bytes=4000, segment_bytes=1000, policy="drop_oldest")
    p = Pipeline(store, spool=spool, batch_size=5, max_delay=0.01, replay_interval=0.05)
    await p.start()
    outage.go()
    with caplog.at_level(logging.ERROR):
        for k in range(60):
            await p.submit([meter(k * 5 + j) for j in range(5)], now=NOW)  # all acknowledged
    assert spool.stats.events["full_dropped_points"] > 0
    lines = [r.getMessage() for r in caplog.records if "spool_dropped_oldest" in r.getMessage()]
    assert lines  # the first loss is logged at once (later ones once a minute)
    outage.come_back()
    await wait_until_drained(spool, 10.0)
    await p.close()
    await assert_exact_tally(p, spool, store, 300)
    await store.close()


async def assert_exact_tally(p: Pipeline, spool: Spool, store: SQLiteStore, accepted: int) -> int:
    """After a drained outage under ``drop_oldest``: every accepted reading is either in the store or
    counted (and logged) as dropped, the sum exact; returns how many are stored."""
    dropped = spool.stats.events["full_dropped_points"]
    assert spool.losses.counts() == {"spool_dropped_oldest": dropped}
    assert p.metrics()["lost"] == {"spool_dropped_oldest": dropped}
    stored = (await store.query(all_power())).height
    assert p.stats.readings_accepted == accepted
    assert stored + dropped == accepted
    return stored


async def test_refused_readings_are_not_counted_as_accepted(tmp_path: Path) -> None:
    outage = VanishingStore(tmp_path)
    store = await outage.opened()
    spool = Spool(tmp_path / "spool", max_bytes=600, segment_bytes=600)
    p = Pipeline(store, spool=spool, batch_size=5, max_delay=0.01, replay_interval=10)
    await p.start()
    outage.go()
    acked = 0
    refusals = 0
    for k in range(40):
        batch = [meter(k * 5 + j) for j in range(5)]
        for _attempt in range(3):  # a caller that retries what was refused
            try:
                await p.submit(batch, now=NOW)
            except Backpressure as exc:
                assert exc.reason == "spool_full"
                refusals += 1
                continue
            acked += 5
            break
    assert refusals > 0
    stats = p.stats
    assert stats.readings_accepted == acked == stats.points_written + stats.spooled_points
    assert stats.backpressure_points == 5 * refusals
    outage.come_back()
    await p.close()
    await store.close()


async def test_full_spool_is_bypassed_once_the_store_is_back(tmp_path: Path) -> None:
    """Under ``refuse`` a reading is refused only when both the spool and the store refuse it: once
    the store answers again, new readings go straight to it while the spool still waits to replay."""
    outage = VanishingStore(tmp_path)
    store = await outage.opened()
    spool = Spool(tmp_path / "spool", max_bytes=600, segment_bytes=600)
    p = Pipeline(store, spool=spool, batch_size=5, max_delay=0.01, replay_interval=30)
    await p.start()
    outage.go()
    k = 0
    while True:
        try:
            await p.submit([meter(k * 5 + j) for j in range(5)], now=NOW)
        except Backpressure:
            break
        k += 1
    outage.come_back()
    await p.submit([meter(10_000 + j) for j in range(5)], now=NOW)  # not refused
    assert len(spool) == k  # the replayer has not run yet: the spool is still full
    assert (await store.query(all_power())).height == 5
    await p.close()  # the last replay drains the spool
    assert (await store.query(all_power())).height == 5 * k + 5
    await store.close()


async def test_drop_oldest_drops_nothing_the_store_would_take(tmp_path: Path) -> None:
    """A full spool under ``drop_oldest`` offers a batch to the store before it drops older readings
    for it: once the store is back, a batch that does not fit is written straight to the store, though
    the replayer has not caught up yet, and every reading submitted after the return is stored."""
    outage = VanishingStore(tmp_path)
    store = await outage.opened()
    spool = Spool(tmp_path / "spool", max_bytes=2000, segment_bytes=500, policy="drop_oldest")
    p = Pipeline(store, spool=spool, batch_size=5, max_delay=0.01, replay_interval=30)
    await p.start()
    outage.go()
    for k in range(30):
        await p.submit([meter(k * 5 + j) for j in range(5)], now=NOW)
    assert spool.stats.events["full_dropped_points"] > 0
    assert spool.size_bytes + spool.size_bytes // len(spool) > spool.max_bytes  # the next one won't fit
    outage.come_back()
    await p.submit([meter(150 + j) for j in range(5)], now=NOW)
    assert p.stats.points_written == 5  # to the store, rather than dropping older readings for it
    for k in range(31, 40):
        await p.submit([meter(k * 5 + j) for j in range(5)], now=NOW)
    await p.close()
    stored = (await store.query(all_power()))["power_w"].to_list()
    assert set(stored) >= {float(i) for i in range(150, 200)}  # all submitted after the return
    assert len(stored) == 200 - spool.stats.events["full_dropped_points"]  # every other one counted
    await store.close()


@pytest.fixture
def hung_server() -> Iterator[str]:
    """A TCP server that accepts connections and never answers: a hung InfluxDB, as seen from us."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()


async def test_hung_store_costs_a_bounded_wait_then_spools(tmp_path: Path, hung_server: str) -> None:
    # The store's own settings as deployed (10 s per request, 4 attempts): only the writer's bound helps.
    store = InfluxStore(hung_server, "org", "bucket", "token")
    spool = Spool(tmp_path / "spool")
    p = Pipeline(store, spool=spool, batch_size=50, max_delay=0.01, store_write_timeout=2.0)
    await p.start()
    try:
        t0 = time.monotonic()
        await asyncio.wait_for(p.submit([meter(j) for j in range(10)], now=NOW), timeout=15)
        first = time.monotonic() - t0
        assert first < 4.0  # bounded by store_write_timeout, not by the store's retries
        t0 = time.monotonic()
        for k in range(1, 6):  # later batches go behind the spool at once
            await asyncio.wait_for(p.submit([meter(k * 10 + j) for j in range(10)], now=NOW), timeout=15)
        assert time.monotonic() - t0 < 1.0
        assert spool.depth_points == 60
        assert p.stats.store_failures["unavailable"] >= 1
    finally:
        await asyncio.wait_for(p.close(), timeout=20)
        await store.close()
    assert len(Spool(tmp_path / "spool")) == 6  # everything kept for the store's return


async def test_outage_is_retried_on_the_backoff_not_at_every_flush(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """During an outage each flush spools a batch and wakes the replayer; it used to knock on the
    store (and log a warning) at every one of them, about once a second in `hems collect`.  The
    backoff must stand until it runs out, and the spool still drains soon after the store is back."""
    outage = VanishingStore(tmp_path)
    store = await outage.opened()
    spool = Spool(tmp_path / "spool", max_bytes=1 << 30)
    p = Pipeline(
        store, spool=spool, batch_size=5, max_delay=0.01, replay_interval=0.05, max_replay_backoff=0.8
    )
    await p.start()
    outage.go()
    caplog.set_level(logging.WARNING, logger="pipeline.writer")
    flushes = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2.5:
        await p.submit([meter(flushes * 5 + j) for j in range(5)], now=NOW)
        flushes += 1
        await asyncio.sleep(0.02)
    tries = p.stats.store_failures["unavailable"]
    warnings = [r for r in caplog.records if "store unavailable" in r.getMessage()]
    assert flushes > 60
    # 0.05, 0.1, 0.2, 0.4, 0.8, 0.8, 0.8 ... s apart: about 6 tries in 2.5 s, one direct write first.
    assert tries <= 10, f"{tries} store attempts for {flushes} flushes"
    assert len(warnings) <= tries
    outage.come_back()
    await wait_until_drained(spool, 5.0)
    assert len(spool) == 0
    await p.close()
    df = await store.query(all_power())
    assert df["power_w"].to_list() == [float(j) for j in range(flushes * 5)]
    await store.close()
