"""Retention and downsampling on InfluxDB: buckets with expiry plus hourly/daily rollup tasks.

Raw points live ``raw_days`` in the raw bucket; InfluxDB tasks (Flux run by the server on a schedule)
copy hourly and daily rollups into their own buckets, which live longer.  A rollup has the raw
bucket's schema (measurement = category, the same tags, the same field names), so the very same
``SeriesQuery`` code reads a rollup bucket: gauges (power, SoC, voltage, ...) are averaged and
monotonic counters (``*_total``) keep their last value of the period, which is what consumption per
period is computed from.  Flags and the text ``state`` are not rolled up (an average of a fault flag
is not a fault).

Everything goes through the v2 HTTP API (``/api/v2/orgs``, ``/buckets``, ``/tasks``) and is
idempotent: buckets and tasks are found by name and updated in place, so running the setup on every
deploy is safe.  The task Flux is generated from bucket and org names that are validated first and
written as escaped Flux string literals.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import aiohttp

from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError
from seeds.vocabulary import FIELDS, SERIES_CATEGORIES

_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
GAUGE_FIELDS: Final = tuple(spec.name for spec in FIELDS if spec.type == "float" and not spec.counter)
TOTAL_FIELDS: Final = tuple(sorted(spec.name for spec in FIELDS if spec.counter))


class RetentionSetupError(PipelineError, RuntimeError):
    """The server refused a setup step; the message names the step and carries the server's answer."""


@dataclass(frozen=True)
class RollupPlan:
    raw_bucket: str
    raw_retention: timedelta = timedelta(days=30)
    hourly_retention: timedelta = timedelta(days=400)
    daily_retention: timedelta | None = None  # None: keep forever
    offset: timedelta = timedelta(minutes=5)  # let late points of the period arrive first

    def __post_init__(self) -> None:
        for name in (self.raw_bucket, self.hourly_bucket, self.daily_bucket):
            if not _NAME_RE.fullmatch(name):
                raise ValueError(f"bucket name {name!r} must match {_NAME_RE.pattern}")
        for label, span in (("raw", self.raw_retention), ("hourly", self.hourly_retention)):
            if span < timedelta(hours=1):
                raise ValueError(f"{label} retention must be at least one hour")
        if self.raw_retention < timedelta(days=1) + self.offset:
            raise ValueError("raw retention must outlive a daily rollup period")

    @property
    def hourly_bucket(self) -> str:
        return f"{self.raw_bucket}_hourly"

    @property
    def daily_bucket(self) -> str:
        return f"{self.raw_bucket}_daily"

    @classmethod
    def from_config(cls, config: PipelineConfig) -> RollupPlan:
        if not config.influx_bucket:
            raise ValueError("no InfluxDB bucket configured")
        return cls(
            raw_bucket=config.influx_bucket,
            raw_retention=timedelta(days=config.raw_days),
            hourly_retention=timedelta(days=config.hourly_days),
            daily_retention=None if config.daily_days is None else timedelta(days=config.daily_days),
        )


def flux_string(value: str) -> str:
    """A Flux string literal (backslash, quote and interpolation escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${") + '"'


def _duration(span: timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds <= 0 or span != timedelta(seconds=seconds):
        raise ValueError(f"{span!r} is not a whole positive number of seconds")
    return f"{seconds}s"


def _or_chain(column: str, values: tuple[str, ...]) -> str:
    return " or ".join(f"r.{column} == {flux_string(v)}" for v in values)


def rollup_flux(plan: RollupPlan, org: str, period: str) -> str:
    """The task script for ``period`` (``"hourly"`` or ``"daily"``).

    The task runs just after each period (``offset``) and rolls up the period that ended at its
    scheduled time: ``now()`` in a task is the scheduled time, so ``range(start: -task.every)`` is
    exactly the last whole period, and a re-run rewrites the same points (idempotent)."""
    if period == "hourly":
        every, target = "1h", plan.hourly_bucket
    elif period == "daily":
        every, target = "1d", plan.daily_bucket
    else:
        raise ValueError(f"unknown rollup period {period!r}")
    if not _NAME_RE.fullmatch(org):
        raise ValueError(f"org name {org!r} must match {_NAME_RE.pattern}")
    name = f"hems-rollup-{period}-{plan.raw_bucket}"
    categories = _or_chain("_measurement", tuple(SERIES_CATEGORIES))
    return f"""option task = {{name: {flux_string(name)}, every: {every}, offset: {_duration(plan.offset)}}}

data = from(bucket: {flux_string(plan.raw_bucket)})
  |> range(start: -task.every)
  |> filter(fn: (r) => {categories})

data
  |> filter(fn: (r) => {_or_chain("_field", GAUGE_FIELDS)})
  |> aggregateWindow(every: task.every, fn: mean, timeSrc: "_start", createEmpty: false)
  |> to(bucket: {flux_string(target)}, org: {flux_string(org)})

data
  |> filter(fn: (r) => {_or_chain("_field", TOTAL_FIELDS)})
  |> aggregateWindow(every: task.every, fn: last, timeSrc: "_start", createEmpty: false)
  |> to(bucket: {flux_string(target)}, org: {flux_string(org)})
"""


class _Api:
    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url.rstrip("/")

    async def call(
        self,
        step: str,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        missing_ok: bool = False,
    ) -> Any:
        async with self.session.request(method, self.url + path, params=params, json=body) as resp:
            text = await resp.text()
            if resp.status == 404 and missing_ok:
                return None  # a lookup by name answers 404 when nothing has that name
            if resp.status >= 300:
                raise RetentionSetupError(f"{step}: HTTP {resp.status}: {text[:500]}")
            return await resp.json(content_type=None) if text.strip() else None


def _retention_rules(span: timedelta | None) -> list[dict[str, Any]]:
    # 0 seconds is InfluxDB's spelling of "keep forever" (an empty list would not undo an old limit).
    seconds = 0 if span is None else int(span.total_seconds())
    return [{"type": "expire", "everySeconds": seconds}]


async def _ensure_bucket(api: _Api, org_id: str, name: str, span: timedelta | None) -> str:
    found = await api.call(
        "find bucket", "GET", "/api/v2/buckets", params={"orgID": org_id, "name": name}, missing_ok=True
    )
    rules = _retention_rules(span)
    buckets = (found or {}).get("buckets") or []
    if buckets:
        bucket_id: str = buckets[0]["id"]
        await api.call(
            "set retention", "PATCH", f"/api/v2/buckets/{bucket_id}", body={"retentionRules": rules}
        )
        return bucket_id
    made = await api.call(
        "create bucket",
        "POST",
        "/api/v2/buckets",
        body={"orgID": org_id, "name": name, "retentionRules": rules},
    )
    created: str = made["id"]
    return created


async def _ensure_task(api: _Api, org_id: str, name: str, flux: str) -> str:
    found = await api.call(
        "find task", "GET", "/api/v2/tasks", params={"orgID": org_id, "name": name}, missing_ok=True
    )
    tasks = [t for t in (found or {}).get("tasks") or [] if t.get("name") == name]
    if tasks:
        task_id: str = tasks[0]["id"]
        await api.call(
            "update task", "PATCH", f"/api/v2/tasks/{task_id}", body={"flux": flux, "status": "active"}
        )
        return task_id
    made = await api.call(
        "create task",
        "POST",
        "/api/v2/tasks",
        body={"orgID": org_id, "flux": flux, "status": "active", "description": "HEMS rollup"},
    )
    created: str = made["id"]
    return created


@dataclass(frozen=True)
class RetentionSetup:
    bucket_ids: dict[str, str]  # bucket name -> id
    task_ids: dict[str, str]  # "hourly"/"daily" -> task id


async def setup_retention(url: str, org: str, token: str, plan: RollupPlan) -> RetentionSetup:
    """Create or update the three buckets and the two rollup tasks; safe to run repeatedly."""
    headers = {"Authorization": f"Token {token}", "Accept": "application/json"}
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout) as session:
        api = _Api(session, url)
        orgs = await api.call("find org", "GET", "/api/v2/orgs", params={"org": org})
        matches = [o for o in (orgs or {}).get("orgs") or [] if o.get("name") == org]
        if not matches:
            raise RetentionSetupError(f"find org: no organization named {org!r}")
        org_id: str = matches[0]["id"]
        bucket_ids = {
            plan.raw_bucket: await _ensure_bucket(api, org_id, plan.raw_bucket, plan.raw_retention),
            plan.hourly_bucket: await _ensure_bucket(api, org_id, plan.hourly_bucket, plan.hourly_retention),
            plan.daily_bucket: await _ensure_bucket(api, org_id, plan.daily_bucket, plan.daily_retention),
        }
        task_ids = {}
        for period in ("hourly", "daily"):
            name = f"hems-rollup-{period}-{plan.raw_bucket}"
            task_ids[period] = await _ensure_task(api, org_id, name, rollup_flux(plan, org, period))
        return RetentionSetup(bucket_ids=bucket_ids, task_ids=task_ids)
