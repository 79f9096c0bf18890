"""Retention and rollups on a real InfluxDB: buckets with expiry, hourly/daily tasks that exist on the
server, and the task's own Flux (fetched back from the server) producing the rollup when run by hand
with ``now`` set to the task's scheduled time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from pipeline.config import PipelineConfig
from pipeline.influx_retention import RollupPlan, flux_string, rollup_flux, setup_retention
from pipeline.influx_store import InfluxStore
from pipeline.points import Point
from pipeline.query import SeriesQuery, datetime_to_ns
from tests.influx_server import InfluxServer

# Yesterday (UTC), so the raw points sit inside the raw bucket's 30-day retention.
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
HOUR = DAY + timedelta(hours=12)


def test_plan_and_flux_refuse_unsafe_names() -> None:
    with pytest.raises(ValueError, match="bucket name"):
        RollupPlan(raw_bucket='raw") |> drop() //')
    with pytest.raises(ValueError, match="org name"):
        rollup_flux(RollupPlan(raw_bucket="raw"), 'org"', "hourly")
    with pytest.raises(ValueError, match="retention"):
        RollupPlan(raw_bucket="raw", raw_retention=timedelta(minutes=5))
    assert flux_string('a"b\\c${x}') == '"a\\"b\\\\c\\${x}"'


def test_plan_from_config() -> None:
    config = PipelineConfig.from_mapping({"raw_days": 10, "hourly_days": 90}, {"HEMS_INFLUX_BUCKET": "fleet"})
    plan = RollupPlan.from_config(config)
    assert (plan.raw_bucket, plan.hourly_bucket, plan.daily_bucket) == (
        "fleet",
        "fleet_hourly",
        "fleet_daily",
    )
    assert (plan.raw_retention, plan.hourly_retention, plan.daily_retention) == (
        timedelta(days=10),
        timedelta(days=90),
        None,
    )


def test_rollup_flux_shape() -> None:
    flux = rollup_flux(RollupPlan(raw_bucket="raw"), "org", "daily")
    assert 'option task = {name: "hems-rollup-daily-raw", every: 1d, offset: 300s}' in flux
    assert flux.count('to(bucket: "raw_daily", org: "org")') == 2
    assert '"fault"' not in flux and '"state"' not in flux  # flags and text are not rolled up


@pytest.fixture
async def raw_bucket(influxdb: InfluxServer) -> AsyncIterator[str]:
    name = f"raw-{uuid.uuid4().hex[:8]}"
    yield name
    if not influxdb.running:
        influxdb.start()
    answer = influxdb.api("GET", f"/api/v2/buckets?orgID={influxdb.org_id}&limit=100")
    for bucket in answer["buckets"]:
        if bucket["name"].startswith(name):
            influxdb.delete_bucket(bucket["id"])
    for task in influxdb.api("GET", f"/api/v2/tasks?orgID={influxdb.org_id}")["tasks"]:
        if task["name"].endswith(name):
            influxdb.api("DELETE", f"/api/v2/tasks/{task['id']}")


async def run_flux(server: InfluxServer, flux: str, now: datetime) -> str:
    body = {"query": flux, "type": "flux", "now": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    headers = {"Authorization": f"Token {server.token}"}
    async with (
        aiohttp.ClientSession(headers=headers) as session,
        session.post(f"{server.url}/api/v2/query", params={"org": server.org}, json=body) as resp,
    ):
        text = await resp.text()
        assert resp.status == 200, text
        return text


def points(start: datetime, values: list[float], step: timedelta, counter0: float = 1000.0) -> list[Point]:
    return [
        Point(
            "electricity",
            "hh-1",
            "meter",
            "echonet",
            datetime_to_ns(start + i * step),
            {"power_w": v, "import_wh_total": counter0 + 10 * i, "fault": i % 2 == 0},
        )
        for i, v in enumerate(values)
    ]


async def rolled(server: InfluxServer, bucket: str, start: datetime, stop: datetime) -> list[tuple[Any, ...]]:
    store = InfluxStore(server.url, server.org, bucket, server.token)
    try:
        frame = await store.query(
            SeriesQuery(("hh-1",), "electricity", ("power_w", "import_wh_total", "fault"), start, stop)
        )
    finally:
        await store.close()
    return frame.select("time", "power_w", "import_wh_total", "fault").rows()


@pytest.mark.influxdb
async def test_setup_creates_buckets_and_tasks_and_the_task_flux_rolls_up(
    influxdb: InfluxServer,
    raw_bucket: str,
) -> None:
    plan = RollupPlan(
        raw_bucket=raw_bucket, raw_retention=timedelta(days=30), hourly_retention=timedelta(days=400)
    )
    setup = await setup_retention(influxdb.url, influxdb.org, influxdb.token, plan)
    again = await setup_retention(influxdb.url, influxdb.org, influxdb.token, plan)
    assert again == setup  # idempotent: found by name, updated in place

    buckets = {
        b["name"]: b for b in influxdb.api("GET", f"/api/v2/buckets?orgID={influxdb.org_id}")["buckets"]
    }
    assert buckets[raw_bucket]["retentionRules"][0]["everySeconds"] == 30 * 86400
    assert buckets[plan.hourly_bucket]["retentionRules"][0]["everySeconds"] == 400 * 86400
    assert [r["everySeconds"] for r in buckets[plan.daily_bucket]["retentionRules"]] == [0]  # forever

    tasks = {}
    for period, task_id in setup.task_ids.items():
        task = influxdb.api("GET", f"/api/v2/tasks/{task_id}")
        assert task["status"] == "active"
        assert task["every"] == {"hourly": "1h", "daily": "1d"}[period]
        tasks[period] = task

    store = InfluxStore(influxdb.url, influxdb.org, raw_bucket, influxdb.token)
    try:
        # Six points in one hour (power mean 3.5, last counter 1050) and one later that day.
        await store.write(points(HOUR, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], timedelta(minutes=10)))
        await store.write(points(DAY + timedelta(hours=18), [10.5], timedelta(0), counter0=2000.0))
    finally:
        await store.close()

    # The hourly task as scheduled right after HOUR: only that hour, time = hour start.
    await run_flux(influxdb, tasks["hourly"]["flux"], HOUR + timedelta(hours=1))
    assert await rolled(influxdb, plan.hourly_bucket, DAY, DAY + timedelta(days=1)) == [
        (HOUR, 3.5, 1050.0, None)
    ]
    # Running it again rewrites the same point (no duplicate).
    await run_flux(influxdb, tasks["hourly"]["flux"], HOUR + timedelta(hours=1))
    assert len(await rolled(influxdb, plan.hourly_bucket, DAY, DAY + timedelta(days=1))) == 1

    # The daily task as scheduled at the next midnight: all seven points.
    await run_flux(influxdb, tasks["daily"]["flux"], DAY + timedelta(days=1))
    assert await rolled(influxdb, plan.daily_bucket, DAY, DAY + timedelta(days=1)) == [
        (DAY, (21.0 + 10.5) / 7, 2000.0, None)
    ]
