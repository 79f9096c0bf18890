"""A point the line-protocol serializer refuses must not stall the spool replay.

The validator keeps such points out of new batches, but a spool outlives code versions (a batch
spooled by an older, laxer build, or by a future bug) and batches appended while the spool is
non-empty never meet the store before replay.  The writer's promise for that case: a batch the store
refuses outright (any error but ``StoreUnavailable``) is quarantined -- kept on disk, counted -- and
the batches behind it are replayed in order.  Here the refusal is real: ``InfluxStore`` against the
session's influxd, with ``LineProtocolError`` raised by the serializer before anything is sent.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.influx_store import InfluxStore
from pipeline.lineproto import LineEncoder, LineProtocolError
from pipeline.points import Point
from pipeline.query import SeriesQuery, datetime_to_ns
from pipeline.spool import Spool
from pipeline.writer import Pipeline
from tests.influx_server import InfluxServer

pytestmark = pytest.mark.influxdb

T0 = datetime(2026, 11, 20, tzinfo=UTC)
BAD_HOUSEHOLD = "hh-2\nelectricity,household=hh-9 power_w=1e9"  # a newline would start a forged line


def batch(household: str, start: int, n: int = 5) -> list[Point]:
    return [
        Point(
            "electricity",
            household,
            "meter",
            "echonet",
            datetime_to_ns(T0 + timedelta(seconds=10 * (start + i))),
            {"power_w": 100.0 + start + i},
        )
        for i in range(n)
    ]


async def wait_until_empty(spool: Spool, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(spool) > 0:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"spool still holds {len(spool)} batches after {timeout} s")
        await asyncio.sleep(0.05)


def test_the_serializer_refuses_the_poisoned_batch() -> None:
    """The premise: this batch cannot be written, whatever the server's state."""
    with pytest.raises(LineProtocolError) as err:
        LineEncoder().encode(batch(BAD_HOUSEHOLD, 5))
    assert err.value.what == "household"


async def test_refused_batch_is_quarantined_and_later_batches_replay_in_order(
    influxdb: InfluxServer, influx_bucket: str, tmp_path: Path
) -> None:
    spool_dir = tmp_path / "spool"
    first, poisoned, last = batch("hh-1", 0), batch(BAD_HOUSEHOLD, 5), batch("hh-1", 10)
    # Last batch overwrites one point of the first: replay order decides which value survives.
    last.append(Point("electricity", "hh-1", "meter", "echonet", first[0].ts_ns, {"power_w": -1.0}))
    spool = Spool(spool_dir)
    for b in (first, poisoned, last):
        spool.append(b)
    store = InfluxStore(influxdb.url, influxdb.org, influx_bucket, influxdb.token)
    try:
        pipeline = Pipeline(store, spool=spool, replay_interval=0.05)
        async with pipeline:
            await wait_until_empty(spool)
        metrics = pipeline.metrics()
        frame = await store.query(
            SeriesQuery(("hh-1", "hh-2", "hh-9"), "electricity", ("power_w",), T0, T0 + timedelta(hours=1))
        )
    finally:
        await store.close()

    # Replay went past the refused batch, in order, and nothing of the refused batch (nor the line
    # its household tried to forge) reached the store.
    assert frame["household"].unique().to_list() == ["hh-1"]
    assert frame.height == 10  # 5 + 5 timestamps; the extra point of the last batch overwrote one
    assert frame.sort("time")["power_w"][0] == -1.0
    assert metrics["replayed_batches"] == 2 and metrics["replayed_points"] == 11
    assert metrics["store_failures"] == {"error": 1}
    assert metrics["spool_events"].get("quarantined_batches") == 1
    # Kept on disk for a human, with the refused point intact.
    quarantined = list(spool_dir.glob("quarantine-*"))
    assert len(quarantined) == 1
    rows = json.loads(quarantined[0].read_bytes())
    assert [(r[1], r[4]) for r in rows] == [(p.household, p.ts_ns) for p in poisoned]
