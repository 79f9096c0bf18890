"""A home gateway's backlog handed out several batches at once (``Spool.peek_records``), on real spool
files: the spool's guarantees stay per batch -- each batch is committed or released on its own, a
damaged batch is never jumped over, and what ``drop_oldest`` deletes while a hand-out is being
uploaded is counted exactly once, as lost only if that batch does not get through.  Then the same
through a gateway's writer (``spool_first``): a real SQLite store that goes away and comes back, and a
real HTTP fleet that answers 429 with Retry-After, or refuses one batch of a backlog."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from pipeline.points import Point
from pipeline.spool import Spool, encode_points
from pipeline.upload import INGEST_PATH, FleetUploader
from pipeline.writer import Backpressure, Pipeline
from tests.loopback import free_port
from tests.pipeline.test_spool import batch, drain
from tests.pipeline.test_writer_faults import (
    NOW,
    VanishingStore,
    assert_exact_tally,
    meter,
    wait_until_drained,
)


def spooled(spool: Spool, count: int) -> list[list[Point]]:
    batches = [batch(k * 10) for k in range(count)]
    for b in batches:
        spool.append(b)
    return batches


def damage(spool_dir: Path, batches: list[list[Point]], index: int) -> None:
    """Flip a byte inside the payload of ``batches[index]`` (all in the one segment file)."""
    (seg,) = spool_dir.glob("*.seg")
    offset = sum(len(encode_points(b)) + 8 for b in batches[:index]) + 8 + 5
    with open(seg, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x20]))


def test_a_hand_out_holds_at_most_max_points_and_is_committed_batch_by_batch(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    batches = spooled(spool, 5)
    found = spool.peek_records(7)
    assert [points for _, points in found] == batches[:2]  # a third batch would make 9 points
    (first, _), (second, _) = found
    assert spool.commit(second) is False  # not the oldest yet: never skips an unwritten batch
    assert spool.commit(first) is True
    assert spool.commit(first) is False  # a repeated commit is a no-op
    assert spool.commit(second) is True
    assert spool.depth_batches == 3
    again = spool.peek_records(100)
    assert [points for _, points in again] == batches[2:]
    for record, _ in again:
        spool.release(record)  # the store did not take them: they stay, nothing counted
    assert spool.losses.counts() == {}
    assert [points for _, points in spool.peek_records(1)] == [batches[2]]  # the oldest, however large
    assert drain(spool) == batches[2:]
    spool.close()


def test_a_damaged_batch_inside_a_hand_out_ends_it_and_is_skipped_once_it_is_the_oldest(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path)
    batches = spooled(spool, 4)
    damage(tmp_path, batches, 2)
    found = spool.peek_records(100)
    assert [points for _, points in found] == batches[:2]  # stops before the damaged batch
    assert spool.losses.counts() == {}  # not skipped while batches before it are unwritten
    for record, _ in found:
        assert spool.commit(record) is True
    rest = spool.peek_records(100)
    assert [points for _, points in rest] == [batches[3]]
    assert spool.losses.counts() == {"spool_corrupt": 3}  # counted once, when skipped
    assert spool.stats.events["corrupt_records"] == 1
    spool.close()


def test_drop_oldest_during_an_upload_counts_each_handed_batch_on_its_own(tmp_path: Path) -> None:
    # Two batches per segment, three segments fill the spool: the seventh drops the oldest segment.
    spool = Spool(tmp_path, max_bytes=1500, segment_bytes=500, policy="drop_oldest")
    batches = spooled(spool, 6)
    found = spool.peek_records(9)
    assert [points for _, points in found] == batches[:3]  # across two segments
    spool.append(batch(60))  # deletes batches 0 and 1, both being uploaded right now
    assert spool.stats.events["full_dropped_batches"] == 0  # lost only if their upload fails
    (b0, _), (b1, _), (b2, _) = found
    assert spool.commit(b0) is True  # got through after all: not lost
    spool.release(b1)  # did not: lost now, counted at once
    assert spool.losses.counts() == {"spool_dropped_oldest": 3}
    assert spool.stats.events["full_dropped_batches"] == 1
    assert spool.commit(b2) is True  # its segment survived: an ordinary commit
    spool.release(b1)  # a second release of a lost batch counts nothing more
    assert drain(spool) == [*batches[3:], batch(60)]
    spool.close()
    # Every batch appended is committed, drained or counted lost, exactly once.
    assert spool.losses.counts() == {"spool_dropped_oldest": 3}


def test_drop_oldest_counts_the_batches_not_handed_out_at_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1500, segment_bytes=500, policy="drop_oldest")
    spooled(spool, 6)
    ((b0, _),) = spool.peek_records(3)
    spool.append(batch(60))  # its segment goes: batch 1 (not handed out) is lost at once
    assert spool.losses.counts() == {"spool_dropped_oldest": 3}
    spool.release(b0)  # and batch 0 once its upload failed
    assert spool.losses.counts() == {"spool_dropped_oldest": 6}
    assert spool.stats.events["full_dropped_batches"] == 2
    assert spool.depth_batches == 5
    spool.close()


async def test_a_gateway_writer_through_an_outage_under_drop_oldest_loses_only_what_it_counts(
    tmp_path: Path,
) -> None:
    outage = VanishingStore(tmp_path)
    store = await outage.opened()
    spool = Spool(tmp_path / "spool", max_bytes=4000, segment_bytes=1000, policy="drop_oldest")
    # Batches of 5 readings (one per submit), hand-outs of up to 50 points: ten batches per write.
    p = Pipeline(store, spool=spool, batch_size=50, max_delay=0.01, replay_interval=0.05, spool_first=True)
    await p.start()
    outage.go()
    for k in range(60):
        await p.submit([meter(k * 5 + j) for j in range(5)], now=NOW)  # all acknowledged
    assert spool.stats.events["full_dropped_points"] > 0
    outage.come_back()
    await wait_until_drained(spool, 10.0)
    await p.close()
    stored = await assert_exact_tally(p, spool, store, 300)
    assert p.stats.replayed_points == stored  # a gateway writes only from its spool
    assert p.stats.store_latency_count < p.stats.replayed_batches  # several batches per write
    await store.close()


@pytest.fixture
async def saturated_fleet() -> AsyncIterator[tuple[str, list[float]]]:
    """A fleet endpoint that answers every upload 429 with ``Retry-After: 30``; the list gets the loop
    time of each request it saw."""
    seen: list[float] = []

    async def ingest(request: web.Request) -> web.Response:
        seen.append(asyncio.get_running_loop().time())
        await request.read()
        return web.json_response({"code": "saturated"}, status=429, headers={"Retry-After": "30"})

    app = web.Application()
    app.router.add_post(INGEST_PATH, ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


async def test_a_full_gateway_spool_does_not_offer_a_batch_to_a_fleet_that_said_retry_later(
    tmp_path: Path, saturated_fleet: tuple[str, list[float]]
) -> None:
    url, seen = saturated_fleet
    uploader = FleetUploader(url, "gw-test-credential")
    spool = Spool(tmp_path / "spool", max_bytes=2000, segment_bytes=1000, policy="refuse")
    p = Pipeline(uploader, spool=spool, batch_size=5, max_delay=0.01, replay_interval=0.05, spool_first=True)
    await p.start()
    await p.submit([meter(j) for j in range(5)], now=NOW)
    for _ in range(100):  # the replayer's first upload, answered 429
        if seen:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    assert len(seen) == 1
    refused = None
    for k in range(1, 40):
        try:
            await p.submit([meter(k * 5 + j) for j in range(5)], now=NOW)
        except Backpressure as exc:
            refused = exc
            break
    assert refused is not None and refused.reason == "spool_full"
    await asyncio.sleep(0.2)
    assert len(seen) == 1  # neither the full spool's offer nor the replayer knocked again
    assert spool.depth_batches == k  # everything acknowledged is still in the spool
    await p.close()  # Retry-After (30 s) is longer than close waits: left in the spool, not sent
    assert len(seen) == 1
    await uploader.close()


class PickyFleet:
    """A fleet endpoint that is down (503) until ``up``, then refuses (400) any batch holding a point of
    ``refused_household`` and stores the others' lines."""

    def __init__(self, refused_household: str) -> None:
        self.refused = refused_household.encode()
        self.up = False
        self.sizes: list[int] = []  # lines per request once up
        self.stored: list[bytes] = []

    async def ingest(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp undoes the gzip Content-Encoding
        if not self.up:
            return web.json_response({"code": "store_down"}, status=503)
        self.sizes.append(len(body.splitlines()))
        if self.refused in body:
            return web.json_response({"code": "bad_batch", "detail": "refused"}, status=400)
        self.stored += body.splitlines()
        return web.json_response({"stored": len(body.splitlines())})


@pytest.fixture
async def picky_fleet() -> AsyncIterator[tuple[str, PickyFleet]]:
    fleet = PickyFleet("hh-bad")
    app = web.Application()
    app.router.add_post(INGEST_PATH, fleet.ingest)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", fleet
    finally:
        await runner.cleanup()


async def test_a_batch_the_fleet_refuses_inside_a_backlog_is_set_aside_alone_and_counted(
    tmp_path: Path, picky_fleet: tuple[str, PickyFleet]
) -> None:
    url, fleet = picky_fleet
    uploader = FleetUploader(url, "gw-test-credential")
    spool = Spool(tmp_path / "spool")
    p = Pipeline(
        uploader,
        spool=spool,
        batch_size=50,
        max_delay=0.01,
        replay_interval=0.05,
        max_replay_backoff=0.2,
        spool_first=True,
    )
    await p.start()
    for household in ("hh-1", "hh-bad", "hh-1"):  # three batches of five while the fleet is down
        await p.submit([meter(len(fleet.stored) + j, household) for j in range(5)], now=NOW)
    assert spool.depth_batches == 3
    fleet.up = True
    await wait_until_drained(spool, 10.0)
    await p.close()
    await uploader.close()
    assert fleet.sizes == [15, 5, 5, 5]  # the backlog in one request, then one batch at a time
    assert len(fleet.stored) == 10  # both good batches, once each
    assert all(b"hh-bad" not in line for line in fleet.stored)
    assert spool.losses.counts() == {"store_refused": 5}  # the refused batch alone, counted
    assert len(list(spool.dir.glob("quarantine-*"))) == 1  # and kept on disk for a human
    assert p.stats.replayed_batches == 2
