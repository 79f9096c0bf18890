"""The negawatt items of households whose gateways upload to the fleet (issue 14's remainder).

Beside ``hems collect`` the pipeline derives them from the meter it polls; a home whose collector runs
on its gateway uploads to the fleet's ingest instead, and before this nothing derived its items there,
so a demand-response contractor was served nothing for it (and on main these tests fail at import:
there is no fleet pass).  The ingest replica that holds the job's lock among all replicas derives them
for the households of the gateway credentials; the contractor then reads the items, never the raw
series."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
from dataclasses import replace
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from access.api.ingest import IngestService, make_ingest_app
from access.compiler import Policy
from access.db import AccessDb, is_url
from access.gateways import GatewayCredentials
from hems.ingest import NEGAWATT_JOB, open_replica
from pipeline.config import PipelineConfig
from pipeline.factory import open_ingest_pipeline
from pipeline.fleet_config import FleetConfig
from pipeline.lineproto import LineEncoder
from pipeline.negawatt import negawatt_loop
from pipeline.sqlite_store import SQLiteStore
from seeds.vocabulary import NEGAWATT_ITEMS
from tests.access.api_world import (
    DAY,
    DAY_WINDOW,
    NEGAWATT,
    SERIES,
    Env,
    add_dr_contractor,
    api_policy,
    readings,
    start_env,
)
from tests.access.conftest import within

__all__ = ["api_policy"]


async def upload(client: TestClient[Any, Any], credential: str, text: bytes) -> None:
    resp = await client.post(
        "/api/v1/ingest",
        data=gzip.compress(text),
        headers={
            "Authorization": f"Bearer {credential}",
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Encoding": "gzip",
            "Idempotency-Key": hashlib.sha256(text).hexdigest(),
        },
    )
    assert resp.status == 200, await resp.text()


async def dr_get(env: Env, **query: str) -> tuple[int, dict[str, Any]]:
    r = await env.client.get(
        SERIES.format(hh="h1", cat="electricity"),
        params={**DAY_WINDOW, "purpose": NEGAWATT, **query},
        headers=env.auth("dr1"),
    )
    return r.status, await r.json()


async def test_a_gateway_households_negawatt_items_reach_the_dr_contractor_and_its_raw_series_do_not(
    tmp_path: Path, api_policy: Policy
) -> None:
    store_path = tmp_path / "fleet-series.sqlite"
    async for env in start_env(tmp_path, store_path, api_policy):
        add_dr_contractor(env)
        creds = GatewayCredentials(env.db)
        _, credential = creds.issue(["h1"], label="h1's gateway")
        ingest_store = SQLiteStore(store_path)
        pipeline = open_ingest_pipeline(PipelineConfig(max_delay_s=0.05), ingest_store, tmp_path / "spool")
        await pipeline.start()
        service = IngestService(creds, pipeline, ingest_store.ping, FleetConfig(ingest_rate_per_s=0))
        ingest = TestClient(TestServer(make_ingest_app(service), host="127.0.0.1"))
        await ingest.start_server()
        job: asyncio.Task[None] | None = None
        try:
            encoder = LineEncoder(ints_as_floats=True)
            for back in range(8):  # eight days of h1's readings, as its gateway uploads them
                day = [replace(p, ts_ns=p.ts_ns - back * 86400 * 10**9) for p in readings("h1", 288)]
                await upload(ingest, credential, "\n".join(encoder.lines(day)).encode())
            # Uploaded, and nothing derived yet: the contractor is served no negawatt values.
            status, body = await dr_get(env, every="30m")
            assert status == 200, body
            assert not any(v is not None for v in body["columns"].get("demand_procured_w", ()))
            # The fleet's pass (what an ingest replica runs every --negawatt-every seconds).
            job = asyncio.create_task(
                negawatt_loop(
                    ingest_store,
                    creds.uploading_households,
                    every_s=3600,
                    leads=partial(creds.leads, NEGAWATT_JOB),
                    clock=lambda: DAY + timedelta(days=1),
                )
            )

            async def served(env: Env = env) -> bool:
                status, body = await dr_get(env, every="30m")
                cols = body.get("columns", {})
                return status == 200 and sum(v is not None for v in cols.get("demand_procured_w", ())) == 48

            for _ in range(200):
                if await served():
                    break
                await asyncio.sleep(0.05)
            status, body = await dr_get(env, every="30m")
            assert status == 200, body
            assert set(body["columns"]) == {"time", "household", "device", *NEGAWATT_ITEMS}
            assert all(v is not None for v in body["columns"]["demand_procured_w"])
            assert any(v is not None for v in body["columns"]["baseline_w"])  # seven days before it
            # The raw series stays refused.
            for fields in ("power_w", "baseline_w,power_w"):
                status, body = await dr_get(env, fields=fields)
                assert status == 403 and body["reason"] == "item_not_granted", (fields, body)
        finally:
            if job is not None:
                job.cancel()
                await asyncio.gather(job, return_exceptions=True)
            await ingest.close()
            await pipeline.close()
            await ingest_store.close()
            creds.close()


def test_the_uploading_households_are_those_of_unrevoked_credentials(access_db: AccessDb) -> None:
    creds = GatewayCredentials(access_db)
    try:
        a, _ = creds.issue(["hh-a", "hh-b"])
        creds.issue(["hh-b"])
        gone, _ = creds.issue(["hh-c"])
        creds.revoke(gone.id)
        assert creds.uploading_households() == ("hh-a", "hh-b")
        creds.revoke(a.id)
        assert creds.uploading_households() == ("hh-b",)
    finally:
        creds.close()


def test_one_replica_of_all_derives(access_db: AccessDb) -> None:
    """On PostgreSQL one replica holds the job's lock (allow) and another does not (deny) until the
    first is gone; a SQLite file serves one host, where ``hems serve`` derives in its first process."""
    first, second = GatewayCredentials(access_db), GatewayCredentials(access_db)
    try:
        assert first.leads(NEGAWATT_JOB)
        if not is_url(access_db):
            assert second.leads(NEGAWATT_JOB)
            return
        assert not second.leads(NEGAWATT_JOB)
        first.close()
        assert within(2.0, lambda: second.leads(NEGAWATT_JOB)) is not None
    finally:
        second.close()
        if not is_url(access_db):
            first.close()


async def test_an_ingest_replica_runs_the_pass_only_when_asked(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "series.sqlite")
    db = tmp_path / "access.sqlite"
    with_job = await open_replica(store, db, tmp_path / "spool-a", None, negawatt_every_s=3600)
    without = await open_replica(store, db, tmp_path / "spool-b", None)
    try:
        assert with_job.negawatt is not None and not with_job.negawatt.done()
        assert without.negawatt is None
    finally:
        await with_job.close()
        await without.close()
        await store.close()
    assert with_job.negawatt.cancelled()
