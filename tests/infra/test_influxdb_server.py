"""The test InfluxDB server is real: it takes writes from the official client, answers Flux queries
with the values written, keeps them across a restart, and isolates tests in their own buckets."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from tests.influx_server import InfluxServer

pytestmark = pytest.mark.influxdb

T0 = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)

# One household's electricity and PV readings, in the schema of DESIGN.md (measurement = category).
POINTS = [
    Point("electricity")
    .tag("household", "hh-001")
    .tag("device", "meter-1")
    .tag("source", "echonet")
    .field("power_w", 350.0 + i)
    .field("import_wh_total", 1000.0 + 10 * i)
    .time(T0 + timedelta(minutes=i), WritePrecision.S)
    for i in range(5)
] + [
    Point("pv")
    .tag("household", "hh-002")
    .tag("device", "inverter-1")
    .tag("source", "modbus")
    .field("power_w", 2000.0)
    .time(T0, WritePrecision.S),
]

# Values come in through ``params`` (bound as Flux options), never by formatting the query string.
QUERY = """
from(bucket: bucket)
  |> range(start: start, stop: stop)
  |> filter(fn: (r) => r._measurement == measurement and r.household == household and r._field == field)
  |> sort(columns: ["_time"])
"""


@pytest.fixture
def client(influxdb: InfluxServer) -> Iterator[InfluxDBClient]:
    with InfluxDBClient(url=influxdb.url, token=influxdb.token, org=influxdb.org, timeout=30_000) as c:
        yield c


def write(client: InfluxDBClient, bucket: str) -> None:
    with client.write_api(write_options=SYNCHRONOUS) as w:
        w.write(bucket=bucket, record=POINTS)


def power_series(
    client: InfluxDBClient, bucket: str, household: str = "hh-001"
) -> list[tuple[datetime, float]]:
    params = {
        "bucket": bucket,
        "start": T0 - timedelta(hours=1),
        "stop": T0 + timedelta(hours=1),
        "measurement": "electricity",
        "household": household,
        "field": "power_w",
    }
    tables = client.query_api().query(QUERY, params=params)
    return [(rec.get_time(), rec.get_value()) for table in tables for rec in table.records]


def test_written_points_come_back_from_a_flux_query(client: InfluxDBClient, influx_bucket: str) -> None:
    write(client, influx_bucket)
    assert power_series(client, influx_bucket) == [(T0 + timedelta(minutes=i), 350.0 + i) for i in range(5)]
    # The filter really binds the parameter: another household sees none of hh-001's rows.
    assert power_series(client, influx_bucket, household="hh-002") == []


def test_rewriting_a_point_overwrites_it(client: InfluxDBClient, influx_bucket: str) -> None:
    write(client, influx_bucket)
    write(client, influx_bucket)  # a replay of the same batch must not duplicate
    assert len(power_series(client, influx_bucket)) == 5


def test_each_test_gets_an_empty_bucket_of_its_own(
    client: InfluxDBClient, influxdb: InfluxServer, influx_bucket: str
) -> None:
    assert power_series(client, influx_bucket) == []
    assert influx_bucket in influxdb.bucket_names()
    assert influx_bucket != influxdb.bucket


def test_data_survives_stop_and_start(
    client: InfluxDBClient, influxdb: InfluxServer, influx_bucket: str
) -> None:
    write(client, influx_bucket)
    influxdb.stop()
    assert not influxdb.running
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(influxdb.url + "/health", timeout=2)
    influxdb.start()
    assert influxdb.running
    assert power_series(client, influx_bucket) == [(T0 + timedelta(minutes=i), 350.0 + i) for i in range(5)]


def test_restart_keeps_the_setup_and_the_token(influxdb: InfluxServer) -> None:
    influxdb.restart()
    assert influxdb.bucket in influxdb.bucket_names()  # authenticated call with the setup token


def test_wrong_token_is_refused(influxdb: InfluxServer) -> None:
    with (
        InfluxDBClient(url=influxdb.url, token="not-the-token", org=influxdb.org) as c,
        pytest.raises(ApiException) as refused,
    ):
        c.query_api().query("buckets()")
    assert refused.value.status == 401
