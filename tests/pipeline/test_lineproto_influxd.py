"""The column path's line protocol read back by the real influxd: every value with its own type.

``test_lineproto`` holds the column path to the line path byte for byte; here the judge is InfluxDB
itself.  Random batches of mixed shapes (ints, floats, flags and text in one batch, names and tags
that need escaping) are encoded column by column, written with the client library's write service,
and queried back with its Flux reader, which types each value by the column InfluxDB answers with
(``long``, ``double``, ``boolean``, ``string``): what comes back must be exactly what was put in.
Each example writes its own measurement, because InfluxDB fixes a field's type per measurement.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync
from influxdb_client.service.write_service import WriteService

from pipeline.columns import ColumnBatch
from pipeline.lineproto import LineEncoder, LineProtocolError
from pipeline.points import Point
from tests.influx_server import InfluxServer

pytestmark = pytest.mark.influxdb

TS = 1_780_000_000 * 10**9
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EXAMPLE = itertools.count()

NAMES = ["power_w", "soc_pct", "run ning", "a,b=c", "n=1", "tension_ü", "fault"]
TAGS = ["hh-1", "hh 2", "a,b=c", "haus-ß", "x=y z"]
# (Text is never empty here: the client's CSV reader answers an empty string as null.)
TYPED = {
    "float": st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([1e-5, -3.4e-6, 1e16, -2.5e17, 5e-324, 1.7e308, 0.1, -0.0]),
    "int": st.integers(min_value=-(2**63), max_value=2**63 - 1),
    "bool": st.booleans(),
    "text": st.text(
        st.characters(min_codepoint=32, max_codepoint=0x2FF, blacklist_characters="\x7f"),
        min_size=1,
        max_size=6,
    ),
}


@st.composite
def batches(draw: st.DrawFn) -> list[Point]:
    """Points of several shapes whose every field keeps one type across the batch (as InfluxDB
    demands), one microsecond apart (the client's reader keeps microseconds)."""
    kinds = {name: draw(st.sampled_from(sorted(TYPED))) for name in NAMES}
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(TAGS),
                st.sampled_from(["meter", "pv 1", "b,t"]),
                st.lists(st.sampled_from(NAMES), min_size=1, max_size=5, unique=True),
            ),
            min_size=1,
            max_size=40,
        )
    )
    return [
        Point(
            "m",
            household,
            device,
            "echonet",
            TS + i * 1000,
            {name: draw(TYPED[kinds[name]]) for name in fields},
        )
        for i, (household, device, fields) in enumerate(rows)
    ]


async def _write_and_read(server: InfluxServer, bucket: str, measurement: str, body: bytes) -> list[Any]:
    async with InfluxDBClientAsync(url=server.url, token=server.token, org=server.org) as client:
        await WriteService(client.api_client).post_write_async(
            org=server.org, bucket=bucket, body=body, precision="ns", content_type="text/plain; charset=utf-8"
        )
        flux = (
            f'from(bucket: "{bucket}") |> range(start: 0) '
            f'|> filter(fn: (r) => r._measurement == "{measurement}")'
        )
        tables = await client.query_api().query(flux)
    return [record for table in tables for record in table.records]


def _same(sent: object, got: object) -> bool:
    if type(sent) is not type(got):
        return False
    if isinstance(sent, float):
        return sent == got and math.copysign(1.0, sent) == math.copysign(1.0, got)  # type: ignore[arg-type]
    return sent == got


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(points=batches())
def test_mixed_types_come_back_from_influxd_as_written(
    influxdb: InfluxServer, influx_bucket: str, loop: asyncio.AbstractEventLoop, points: list[Point]
) -> None:
    measurement = f"m{next(_EXAMPLE)}"
    points = [Point(measurement, p.household, p.device, p.source, p.ts_ns, p.fields) for p in points]
    encoder = LineEncoder(vector_min=1)  # every batch column by column, however small
    body = encoder.encode(ColumnBatch(points))
    assert encoder._encode_batch(ColumnBatch(points)) == body  # (it did take the column path)
    records = loop.run_until_complete(_write_and_read(influxdb, influx_bucket, measurement, body))
    expected = {
        (p.household, p.device, p.ts_ns // 1000, name): value
        for p in points
        for name, value in p.fields.items()
    }
    got = {
        (
            r.values["household"],
            r.values["device"],
            (r.get_time() - EPOCH) // timedelta(microseconds=1),
            r.get_field(),
        ): r.get_value()
        for r in records
    }
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert _same(value, got[key]), (key, value, got[key])


def test_a_nan_or_an_infinity_is_refused_by_name_in_a_column_batch() -> None:
    """Never written as text InfluxDB would refuse (or worse, store), never skipped: the whole
    batch is refused naming the field, which the writer counts and logs (``test_refused_points``)."""
    for bad in (math.nan, math.inf, -math.inf):
        points = [
            Point("m", "hh-1", "meter", "echonet", TS + i, {"power_w": float(i), "n": i}) for i in range(300)
        ]
        points[123] = Point("m", "hh-1", "meter", "echonet", TS + 123, {"power_w": bad, "n": 1})
        with pytest.raises(LineProtocolError) as err:
            LineEncoder().encode(ColumnBatch(points))
        assert err.value.what == "power_w"
