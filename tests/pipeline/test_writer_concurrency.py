"""Writing beside the intake: batches written at once (``write_concurrency``), one slice of intake at
a time whoever submits it, and a store's request slots shared by concurrent write calls.

The stores are real (the embedded SQLite store; InfluxStore against an aiohttp server that speaks
InfluxDB's write endpoint and holds each request a moment, so the test can see how many are open at
once: a real influxd answers too fast and does not say).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from collector.reading import Reading
from pipeline.influx_store import InfluxStore
from pipeline.points import Point
from pipeline.query import SeriesQuery
from pipeline.spool import Spool
from pipeline.sqlite_store import SQLiteStore
from pipeline.store import StoreUnavailable
from pipeline.writer import SUBMIT_SLICE, Pipeline
from tests.pipeline.intake_watch import intake_watch
from tests.pipeline.write_endpoint import write_endpoint

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=2)


def meter(i: int) -> Reading:
    return Reading("hh-1", "meter", "electricity", T0 + timedelta(seconds=i), {"power_w": float(i)})


def everything() -> SeriesQuery:
    return SeriesQuery(("hh-1",), "electricity", ("power_w",), T0, T0 + timedelta(days=1))


class HeldWrites(SQLiteStore):
    """The real embedded store, each write held open a moment (as a remote store's round trip is),
    counting how many are open at once; a write holding a reading marked ``refuse`` fails as an
    outage."""

    def __init__(self, path: Path, refuse: float | None = None) -> None:
        super().__init__(path)
        self.open_now = self.most_open = 0
        self.refuse = refuse

    async def write(self, points: Sequence[Point]) -> None:
        self.open_now += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await asyncio.sleep(0.05)
            if self.refuse is not None and any(p.fields.get("power_w") == self.refuse for p in points):
                raise StoreUnavailable("held write refused (test)")
            await super().write(points)
        finally:
            self.open_now -= 1


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_batches_are_written_beside_each_other_up_to_write_concurrency(
    tmp_path: Path, concurrency: int
) -> None:
    """One batch at a time by default; with ``write_concurrency`` the next batches go to the store
    while earlier ones are still being written, never more than that many, each acknowledged."""
    store = HeldWrites(tmp_path / "hems.sqlite")
    async with Pipeline(store, batch_size=20, max_delay=0.05, write_concurrency=concurrency) as p:
        results = await asyncio.gather(
            *(p.submit([meter(k * 20 + j) for j in range(20)], now=NOW) for k in range(8))
        )
    assert [r.accepted for r in results] == [20] * 8
    assert store.most_open == concurrency
    assert (await store.query(everything()))["power_w"].to_list() == [float(i) for i in range(160)]
    await store.close()


async def test_a_batch_that_fails_beside_a_good_one_is_spooled_and_both_acknowledged(
    tmp_path: Path,
) -> None:
    store = HeldWrites(tmp_path / "hems.sqlite", refuse=25.0)
    spool = Spool(tmp_path / "spool")
    p = Pipeline(store, spool=spool, batch_size=20, max_delay=0.05, write_concurrency=2, replay_interval=60)
    await p.start()
    results = await asyncio.gather(
        *(p.submit([meter(k * 20 + j) for j in range(20)], now=NOW) for k in range(2))
    )
    assert [r.accepted for r in results] == [20, 20]  # one stored, one durable in the spool
    assert p.stats.spooled_batches == 1 and p.stats.batches_written == 1
    stored = (await store.query(everything()))["power_w"].to_list()
    assert stored == [float(i) for i in range(20)]
    assert spool.depth_points == 20
    store.refuse = None
    await p.close()  # the last replay writes the spooled batch
    assert (await store.query(everything())).height == 40
    await store.close()


async def test_close_waits_for_the_writes_in_flight(tmp_path: Path) -> None:
    store = HeldWrites(tmp_path / "hems.sqlite")
    p = Pipeline(store, batch_size=10, max_delay=0.01, write_concurrency=3)
    await p.start()
    submits = [
        asyncio.create_task(p.submit([meter(k * 10 + j) for j in range(10)], now=NOW)) for k in range(3)
    ]
    while store.open_now < 2:  # writes under way
        await asyncio.sleep(0.005)
    await p.close()
    assert store.open_now == 0
    assert (await store.query(everything())).height == 30
    assert [r.accepted for r in await asyncio.gather(*submits)] == [10, 10, 10]
    await store.close()


async def test_concurrent_submits_take_in_one_slice_at_a_time(tmp_path: Path) -> None:
    """With many callers at once, each step of a store write waits for one slice of intake, not a
    slice of every caller: between two turns of another task of the loop, at most one slice of
    readings is taken in (without the intake lock it was one per concurrent caller)."""
    store = SQLiteStore(tmp_path / "hems.sqlite")
    callers = 8
    async with Pipeline(store, batch_size=100_000, max_delay=0.05) as p, intake_watch(p) as seen:
        n = 3 * SUBMIT_SLICE
        await asyncio.gather(
            *(p.submit([meter(k * n + i) for i in range(n)], now=NOW) for k in range(callers))
        )
    steps = [b - a for a, b in itertools.pairwise(seen)]
    assert sum(steps) == callers * n
    assert max(steps) <= SUBMIT_SLICE
    await store.close()


@dataclass
class SlowInflux:
    """``POST /api/v2/write`` that holds each request 30 ms and counts how many are open at once."""

    open_now: int = 0
    most_open: int = 0
    requests: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.open_now += 1
        self.requests += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await asyncio.sleep(0.03)
        finally:
            self.open_now -= 1
        return web.Response(status=204)


@pytest.fixture
async def slow_influx() -> AsyncIterator[SlowInflux]:
    server = SlowInflux()
    async with write_endpoint(server.handle) as server.url:
        yield server


async def test_concurrent_writes_share_the_stores_requests_in_flight(slow_influx: SlowInflux) -> None:
    """``max_in_flight`` bounds the store's requests, not each call's: two writes of five chunks at
    once keep at most two requests open (it was two per call, four in all)."""
    store = InfluxStore(slow_influx.url, "org", "bucket", "token", batch_points=10, max_in_flight=2)
    points = [
        Point("electricity", "hh-1", "meter", "echonet", 10**18 + i, {"power_w": float(i)})
        for i in range(100)
    ]
    try:
        await store.open()
        await asyncio.gather(store.write(points[:50]), store.write(points[50:]))
    finally:
        await store.close()
    assert slow_influx.requests == 10
    assert slow_influx.most_open == 2


async def test_closing_while_the_flusher_writes_a_batch_lets_that_write_finish(tmp_path: Path) -> None:
    """One flush path for every ``write_concurrency``: each write is a task of its own, so stopping
    the flusher at close does not cancel a write in progress.  (With one batch at a time the flusher
    used to await the write itself: close found nothing left to flush, cancelled the flusher, and the
    batch it was writing was neither stored nor spooled, its submitter never answered.)"""
    store = HeldWrites(tmp_path / "hems.sqlite")
    pipeline = Pipeline(store, batch_size=20, max_delay=0.01, write_concurrency=1)
    await pipeline.start()
    submit = asyncio.create_task(pipeline.submit([meter(j) for j in range(20)], now=NOW))
    while store.open_now == 0:  # the flusher has taken the batch and is writing it
        await asyncio.sleep(0.001)
    await pipeline.close()
    assert (await store.query(everything()))["power_w"].to_list() == [float(i) for i in range(20)]
    assert (await asyncio.wait_for(submit, 5)).accepted == 20
    await store.close()


class ServerInAThread:
    """``write_endpoint`` on an event loop of its own, in a thread: it reads requests while the
    client's loop is held (an encode), and notes when each one had arrived whole."""

    def __init__(self) -> None:
        self.arrived: list[float] = []
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.arrived.append(time.perf_counter())
        return web.Response(status=204)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        async with write_endpoint(self._handle) as self.url:
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> ServerInAThread:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


async def test_a_chunks_request_goes_out_before_the_next_chunk_is_encoded() -> None:
    """Encoding a chunk holds the event loop (milliseconds at fleet rates): a chunk's request must be
    on its way before the next chunk's encoding starts.  It waited for it (the post was only
    scheduled), so the server went without that request for a whole encode, every chunk.  Here each
    encode is made to hold the loop 0.2 s (a fake: real ones are shorter), with one request slot."""
    encoded: list[float] = []  # when each chunk's encoding ended

    class SlowToEncode(InfluxStore):
        def _payload(self, chunk: Sequence[Point]) -> bytes:
            time.sleep(0.2)
            body = super()._payload(chunk)
            encoded.append(time.perf_counter())
            return body

    points = [
        Point("electricity", "hh-1", "meter", "echonet", 10**18 + i, {"power_w": float(i)}) for i in range(31)
    ]
    with ServerInAThread() as server:
        store = SlowToEncode(server.url, "org", "bucket", "token", batch_points=10, max_in_flight=1)
        try:
            await store.write(points[30:])  # (its connection made: the next requests reuse it)
            encoded.clear()
            await store.write(points[:30])
        finally:
            await store.close()
    assert len(server.arrived) == 4 and len(encoded) == 3
    first, second = server.arrived[1:3]
    assert first < encoded[1]  # the first chunk's request had arrived before the second was encoded
    assert second < encoded[2]


async def test_a_batch_sent_whole_makes_room_for_the_next_while_its_answers_are_awaited() -> None:
    """With ``write_concurrency`` batches at once, a batch whose requests are all with the store no
    longer holds the next one back: that one is encoded and sent while the answers are awaited (it
    waited for them, so a freed request slot waited for its encoding).  At most twice
    ``write_concurrency`` batches are with the store in all."""
    arrived = 0
    answer = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        nonlocal arrived
        await request.read()
        arrived += 1
        await answer.wait()
        return web.Response(status=204)

    async with write_endpoint(held) as url:
        store = InfluxStore(url, "org", "bucket", "token", batch_points=10, max_in_flight=8)
        pipeline = Pipeline(store, batch_size=10, max_delay=0.01, write_concurrency=2, store_write_timeout=30)
        await pipeline.start()
        submits = [
            asyncio.create_task(pipeline.submit([meter(10 * b + j) for j in range(10)], now=NOW))
            for b in range(6)
        ]
        try:
            for _ in range(200):
                if arrived >= 4:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # (a fifth batch would have time to arrive)
            assert arrived == 4  # two sent whole and awaiting answers, two more beside them; no more
            answer.set()
            results = await asyncio.wait_for(asyncio.gather(*submits), 10)
        finally:
            answer.set()
            await pipeline.close()
            await store.close()
    assert [r.accepted for r in results] == [10] * 6
    assert arrived == 6
