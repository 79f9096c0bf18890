"""InfluxStore behaviour that the shared conformance cases do not cover: batching, gzip, retries that
honour Retry-After, outage -> StoreUnavailable, query parameters, and line-protocol escaping through a
real server.

Throttling (429/503 with Retry-After), 413 and 5xx answers cannot be provoked from a real influxd on
demand, so those cases use ``FakeThrottlingInflux``: a small aiohttp server on 127.0.0.1 that speaks
just ``POST /api/v2/write`` and answers from a script.  Everything else uses the real server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import polars as pl
import pytest
from aiohttp import web

from pipeline.columns import ColumnBatch
from pipeline.config import PipelineConfig
from pipeline.influx_store import (
    InfluxStore,
    InfluxWriteRejected,
    RetryPolicy,
    build_flux,
    retry_after_seconds,
)
from pipeline.points import Point
from pipeline.query import SeriesQuery
from pipeline.store import StoreUnavailable
from tests.influx_server import InfluxServer
from tests.loopback import free_port
from tests.pipeline.write_endpoint import write_endpoint

T0 = datetime(2026, 11, 25, tzinfo=UTC)
B = int(T0.timestamp()) * 1_000_000_000


def pt(i: int, **kw: Any) -> Point:
    args: dict[str, Any] = {
        "measurement": "electricity",
        "household": "hh-1",
        "device": "meter",
        "source": "modbus",
        "ts_ns": B + i * 1_000_000_000,
        "fields": {"power_w": float(i)},
    }
    args.update(kw)
    return Point(**args)


# -- the fake for faults a real server will not produce on demand ----------------------------------------


@dataclass
class FakeThrottlingInflux:
    """Answers each write with the next scripted ``(status, headers)``; then 204 for ever."""

    script: list[tuple[int, dict[str, str]]]
    bodies: list[bytes] = field(default_factory=list)
    encodings: list[str | None] = field(default_factory=list)
    wire_sizes: list[int] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp has already undone Content-Encoding
        self.encodings.append(request.headers.get("Content-Encoding"))
        self.wire_sizes.append(int(request.headers.get("Content-Length", "-1")))
        if self.script:
            status, headers = self.script.pop(0)
            return web.Response(status=status, headers=headers, text='{"code":"x","message":"scripted"}')
        self.bodies.append(body)
        return web.Response(status=204)


@pytest.fixture
async def fake() -> AsyncIterator[FakeThrottlingInflux]:
    server = FakeThrottlingInflux(script=[])
    async with write_endpoint(server.handle) as server.url:
        yield server


class Sleeps:
    """Records the delays the store asks for instead of sleeping them (the test checks the policy,
    not the clock)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def fake_store(fake: FakeThrottlingInflux, sleeps: Sleeps, **kw: Any) -> InfluxStore:
    return InfluxStore(fake.url, "org", "bucket", "token", sleep=sleeps, **kw)


async def test_batches_are_gzipped_and_split(fake: FakeThrottlingInflux) -> None:
    store = fake_store(fake, Sleeps(), batch_points=400)
    try:
        await store.write([pt(i) for i in range(1000)])
    finally:
        await store.close()
    assert set(fake.encodings) == {"gzip"}
    assert sum(fake.wire_sizes) * 5 < sum(len(b) for b in fake.bodies)  # really compressed
    lines = [line for body in fake.bodies for line in body.decode().split("\n")]
    assert sorted(len(b.decode().split("\n")) for b in fake.bodies) == [200, 400, 400]
    assert len(lines) == 1000 and len(set(lines)) == 1000
    # Chunks of one call travel concurrently (upserts make their order irrelevant), so bodies may
    # arrive in any order; each one holds a contiguous run of the call's points, in order.
    runs = sorted(
        [int(float(x.split(" ")[1].split("=")[1])) for x in b.decode().split("\n")] for b in fake.bodies
    )
    assert runs == [list(range(0, 400)), list(range(400, 800)), list(range(800, 1000))]
    assert f"electricity,device=meter,household=hh-1,source=modbus power_w=0.0 {B}" in lines


async def test_retry_after_is_honoured_on_429_and_503(fake: FakeThrottlingInflux) -> None:
    soon = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    fake.script = [(429, {"Retry-After": "7"}), (503, {"Retry-After": soon}), (503, {})]
    sleeps = Sleeps()
    store = fake_store(fake, sleeps, retry=RetryPolicy(attempts=4, base_delay_s=0.1, max_delay_s=1.0))
    try:
        await store.write([pt(1)])
    finally:
        await store.close()
    assert len(fake.bodies) == 1
    assert sleeps.delays[0] == 7.0
    assert 15.0 < sleeps.delays[1] <= 20.0
    assert 0.0 < sleeps.delays[2] <= 0.4  # no header: exponential backoff (third attempt)


async def test_retry_after_is_capped(fake: FakeThrottlingInflux) -> None:
    fake.script = [(429, {"Retry-After": "86400"})]
    sleeps = Sleeps()
    store = fake_store(fake, sleeps, retry=RetryPolicy(max_retry_after_s=3.0))
    try:
        await store.write([pt(1)])
    finally:
        await store.close()
    assert sleeps.delays == [3.0]


async def test_persistent_5xx_becomes_store_unavailable_after_bounded_attempts(
    fake: FakeThrottlingInflux,
) -> None:
    fake.script = [(503, {})] * 10
    sleeps = Sleeps()
    store = fake_store(fake, sleeps, retry=RetryPolicy(attempts=3))
    try:
        with pytest.raises(StoreUnavailable, match="after 3 attempts"):
            await store.write([pt(1)])
    finally:
        await store.close()
    assert len(sleeps.delays) == 2 and len(fake.script) == 7


async def test_bad_data_is_rejected_not_retried(fake: FakeThrottlingInflux) -> None:
    fake.script = [(422, {})]
    sleeps = Sleeps()
    store = fake_store(fake, sleeps)
    try:
        with pytest.raises(InfluxWriteRejected, match="422"):
            await store.write([pt(1)])
    finally:
        await store.close()
    assert sleeps.delays == []


async def test_auth_or_missing_bucket_is_an_outage_so_data_is_kept(fake: FakeThrottlingInflux) -> None:
    fake.script = [(404, {})]
    store = fake_store(fake, Sleeps())
    try:
        with pytest.raises(StoreUnavailable, match="bucket"):
            await store.write([pt(1)])
    finally:
        await store.close()


async def test_too_large_batch_is_split(fake: FakeThrottlingInflux) -> None:
    fake.script = [(413, {})]
    store = fake_store(fake, Sleeps())
    try:
        await store.write([pt(i) for i in range(10)])
    finally:
        await store.close()
    assert sorted(len(b.split(b"\n")) for b in fake.bodies) == [5, 5]


async def test_nothing_listening_is_store_unavailable() -> None:
    port = free_port()  # free: nothing listens there
    sleeps = Sleeps()
    store = InfluxStore(
        f"http://127.0.0.1:{port}", "o", "b", "t", sleep=sleeps, retry=RetryPolicy(attempts=2)
    )
    try:
        with pytest.raises(StoreUnavailable, match="unavailable after 2 attempts"):
            await store.write([pt(1)])
        assert not await store.ping()
        with pytest.raises(StoreUnavailable):
            await store.query(
                SeriesQuery(("hh-1",), "electricity", ("power_w",), T0, T0 + timedelta(hours=1))
            )
    finally:
        await store.close()


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("12") == 12.0
    assert retry_after_seconds(" 0 ") == 0.0
    assert retry_after_seconds(None) is None
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds("Wed, 25 Nov 2026 00:00:10 GMT", now=T0.timestamp()) == 10.0
    assert retry_after_seconds("Wed, 25 Nov 2026 00:00:10 GMT", now=T0.timestamp() + 60) == 0.0


def test_query_values_travel_as_parameters_never_as_flux_text() -> None:
    hostile = "hh-9"
    query = SeriesQuery(
        (hostile, "hh-2"), "battery", ("soc_pct", "fault"), T0, T0 + timedelta(days=1),
        every=timedelta(minutes=15), agg="mean", devices=("bat-1",),
    )  # fmt: skip
    flux, params = build_flux(query, "my-bucket")
    for value in (hostile, "hh-2", "battery", "soc_pct", "fault", "my-bucket", "bat-1", "2026", "15m", "900"):
        assert value not in flux, value
    assert set(params.values()) >= {hostile, "hh-2", "battery", "soc_pct", "fault", "my-bucket", "bat-1"}
    assert params["hems_every"] == timedelta(minutes=15)
    assert params["hems_start"] == T0


def test_constructor_refuses_missing_settings() -> None:
    with pytest.raises(ValueError, match="bucket"):
        InfluxStore("http://127.0.0.1:1", "org", "", "token")
    with pytest.raises(ValueError, match="gzip_level"):
        InfluxStore("http://127.0.0.1:1", "org", "b", "token", gzip_level=10)


def test_settings_come_from_the_pipeline_config() -> None:
    env = {
        "HEMS_INFLUX_URL": "http://127.0.0.1:8086",
        "HEMS_INFLUX_ORG": "fleet",
        "HEMS_INFLUX_BUCKET": "raw",
        "HEMS_INFLUX_TOKEN": "secret",
    }
    store = InfluxStore.from_config(PipelineConfig.from_mapping({"batch_size": 1234}, env))
    assert (store.url, store.org, store.bucket, store.batch_points) == (
        "http://127.0.0.1:8086",
        "fleet",
        "raw",
        1234,
    )
    with pytest.raises(ValueError, match="HEMS_INFLUX"):
        InfluxStore.from_config(PipelineConfig.from_mapping({}, {}))


# -- against the real server -----------------------------------------------------------------------


@pytest.mark.influxdb
async def test_awkward_names_survive_a_real_round_trip(
    influxdb: InfluxServer,
    influx_bucket: str,
) -> None:
    """Values that need escaping in line protocol come back unchanged from the real server."""
    store = InfluxStore(influxdb.url, influxdb.org, influx_bucket, influxdb.token)
    try:
        weird_device = "dev 1,x=y"
        await store.write(
            [
                pt(0, device=weird_device, fields={"power_w": 1e-7, "state": 'say "hi" \\ , = ok'}),
                pt(1, device=weird_device, fields={"power_w": 1.7976931348623157e308, "energy_wh_total": 5}),
                pt(2, device=weird_device, fields={"power_w": -0.1, "fault": True}),
            ]
        )
        query = SeriesQuery(
            ("hh-1",),
            "electricity",
            ("power_w", "state", "energy_wh_total", "fault"),
            T0,
            T0 + timedelta(hours=1),
        )
        got = await store.query(query)
    finally:
        await store.close()
    assert got["device"].to_list() == [weird_device] * 3
    assert got["power_w"].to_list() == [1e-7, 1.7976931348623157e308, -0.1]
    assert got["state"].to_list() == ['say "hi" \\ , = ok', None, None]
    assert got["energy_wh_total"].to_list() == [None, 5.0, None]  # int stored as float
    assert got["fault"].to_list() == [None, None, True]
    assert got.schema["energy_wh_total"] == pl.Float64


@pytest.mark.influxdb
async def test_large_write_is_complete(
    influxdb: InfluxServer,
    influx_bucket: str,
) -> None:
    store = InfluxStore(influxdb.url, influxdb.org, influx_bucket, influxdb.token, batch_points=2000)
    try:
        points = [pt(i, household=f"hh-{i % 7}", fields={"power_w": i * 0.5}) for i in range(20_000)]
        await store.write(points)
        query = SeriesQuery(
            tuple(f"hh-{i}" for i in range(7)),
            "electricity",
            ("power_w",),
            T0,
            T0 + timedelta(days=1),
            every=timedelta(days=1),
            agg="count",
        )
        got = await store.query(query)
    finally:
        await store.close()
    assert got["power_w"].sum() == 20_000


@pytest.mark.influxdb
async def test_a_point_sent_twice_in_a_batch_keeps_its_last_values_across_shapes(
    influxdb: InfluxServer,
    influx_bucket: str,
) -> None:
    """The column path writes a batch shape by shape and puts the lines back in the batch's order:
    a series sent twice at one timestamp with two sets of fields (two shapes) keeps the later value
    of a field both carry, as the line-by-line order says (InfluxDB: the last line wins)."""
    points = [pt(i, household=f"hh-{i % 5}") for i in range(300)]  # (enough for the column path)
    for i in range(0, 300, 50):
        at = pt(i, household="hh-dup", fields={"power_w": 1.0 + i, "import_wh_total": 10.0 + i})
        again = pt(i, household="hh-dup", fields={"power_w": 2.0 + i})
        points[i : i + 1] = [at, points[i], again] if i % 100 else [again, points[i], at]
    store = InfluxStore(influxdb.url, influxdb.org, influx_bucket, influxdb.token)
    try:
        await store.write(ColumnBatch(points))
        got = await store.query(
            SeriesQuery(
                ("hh-dup",), "electricity", ("power_w", "import_wh_total"), T0, T0 + timedelta(days=1)
            )
        )
    finally:
        await store.close()
    last = {p.ts_ns: p.fields["power_w"] for p in points if p.household == "hh-dup"}
    assert got["power_w"].to_list() == [last[k] for k in sorted(last)]
    assert got["power_w"].to_list() == [2.0 + i if i % 100 else 1.0 + i for i in range(0, 300, 50)]
    assert got["import_wh_total"].to_list() == [10.0 + i for i in range(0, 300, 50)]
