"""``POST /api/v1/ingest`` on a real server socket, over a real pipeline, spool and SQLite store.

Each clause that lets a gateway write, or stops it, has a test that it writes and one that it is
refused: its own households versus a forged one, a live versus a revoked credential, a gateway
credential versus an API token; then the limits (body, unzipped body, lines), the saturation and
outage answers with their ``Retry-After``, and the batch-id memory.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from access.api.ingest import IngestService, make_ingest_app
from access.gateways import GatewayCredentials
from access.tokens import TokenStore
from pipeline.config import PipelineConfig
from pipeline.factory import open_ingest_pipeline
from pipeline.fleet_config import FleetConfig
from pipeline.lineproto import LineEncoder
from pipeline.points import Point
from pipeline.query import SeriesQuery
from pipeline.sqlite_store import SQLiteStore
from tests.access.api_world import api_policy, start_env, store_path

__all__ = ["api_policy", "store_path"]  # fixtures

NOW = datetime.now(UTC).replace(microsecond=0)
T0_NS = int((NOW - timedelta(hours=1)).timestamp()) * 10**9


def readings(household: str, n: int, start_ns: int = T0_NS, device: str = "smart_meter") -> list[Point]:
    return [
        Point("electricity", household, device, "echonet", start_ns + i * 10**10, {"power_w": 100.0 + i})
        for i in range(n)
    ]


def metric(text: str, series: str) -> float:
    """The value of one series in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return 0.0


def body(points: Sequence[Point]) -> bytes:
    return "\n".join(LineEncoder(ints_as_floats=True).lines(points)).encode()


@dataclass
class Fleet:
    client: TestClient[Any, Any]
    service: IngestService
    store: SQLiteStore
    store_path: Path
    db: Path
    credential: str  # bound to hh-a
    credential_id: str

    async def upload(
        self, points: Sequence[Point] | bytes, credential: str | None = None, **headers: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        raw = points if isinstance(points, bytes) else body(points)
        sent = {
            "Authorization": f"Bearer {credential or self.credential}",
            "Content-Type": "text/plain; charset=utf-8",
            "Content-Encoding": "gzip",
            "Idempotency-Key": hashlib.sha256(raw).hexdigest(),
        }
        sent.update(headers)
        data = gzip.compress(raw) if sent["Content-Encoding"] == "gzip" else raw
        resp = await self.client.post("/api/v1/ingest", data=data, headers=sent)
        answer = await resp.json(content_type=None)
        return resp.status, answer, dict(resp.headers)

    async def stored(self, household: str = "hh-a") -> int:
        q = SeriesQuery(
            (household,), "electricity", ("power_w",), NOW - timedelta(days=2), NOW + timedelta(days=1)
        )
        return (await self.store.query(q)).height

    async def metrics(self) -> str:
        resp = await self.client.get("/metrics")
        return await resp.text()


async def start_fleet(
    tmp_path: Path, fleet: FleetConfig, pipeline_cfg: PipelineConfig
) -> AsyncIterator[Fleet]:
    db = tmp_path / "access.sqlite"
    creds = GatewayCredentials(db)
    info, text = creds.issue(["hh-a"], label="test gateway")
    store_path = tmp_path / "fleet.sqlite"
    store = SQLiteStore(store_path)
    await store.write(readings("hh-z", 1, start_ns=T0_NS - 10**12))  # the file exists from here on
    pipeline = open_ingest_pipeline(pipeline_cfg, store, tmp_path / "spool")
    await pipeline.start()
    service = IngestService(creds, pipeline, store.ping, fleet)
    client = TestClient(TestServer(make_ingest_app(service), host="127.0.0.1"))
    await client.start_server()
    try:
        yield Fleet(client, service, store, store_path, db, text, info.id)
    finally:
        await client.close()
        await pipeline.close()
        await store.close()
        creds.close()


QUICK = PipelineConfig(max_delay_s=0.05)


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[Fleet]:
    async for f in start_fleet(tmp_path, FleetConfig(ingest_rate_per_s=0), QUICK):
        yield f


# -- who may write what --------------------------------------------------------------------------------
async def test_a_gateway_writes_its_own_household(fleet: Fleet) -> None:
    status, answer, _ = await fleet.upload(readings("hh-a", 5))
    assert status == 200, answer
    assert answer["accepted"] == 5 and answer["rejected"] == {} and answer["duplicate"] is False
    assert await fleet.stored() == 5


async def test_a_forged_household_refuses_the_whole_batch_logged_and_counted(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="access.api.ingest")
    batch = readings("hh-a", 3) + readings("hh-b", 1)
    status, answer, headers = await fleet.upload(batch)
    assert status == 403
    assert headers["Content-Type"].startswith("application/problem+json")
    assert answer["code"] == "household_not_bound" and "hh-b" in answer["detail"]
    assert await fleet.stored("hh-a") == 0 and await fleet.stored("hh-b") == 0  # not even hh-a's lines
    assert any(fleet.credential_id in r.getMessage() and "hh-b" in r.getMessage() for r in caplog.records)
    assert metric(await fleet.metrics(), 'hems_ingest_requests_total{outcome="household_not_bound"}') == 1


async def test_forged_uploads_are_all_counted_but_logged_at_most_once_a_minute(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="access.api.ingest")
    for i in range(5):
        status, _, _ = await fleet.upload(readings("hh-b", 1, start_ns=T0_NS + i))
        assert status == 403
    assert len([r for r in caplog.records if "not bound" in r.getMessage()]) == 1
    assert metric(await fleet.metrics(), 'hems_ingest_requests_total{outcome="household_not_bound"}') == 5


async def test_an_upload_reaches_the_store_in_columns_without_a_point_per_line(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload is read into the pipeline's column buffers and written from them: not one ``Point``
    is made between the request and the store (the old ingest made one per line)."""
    raw = body(readings("hh-a", 600, start_ns=T0_NS - 600 * 10**10))
    made: list[tuple[Any, ...]] = []
    made_before = Point.__init__

    def counted(self: Point, *args: Any, **kw: Any) -> None:
        made.append(args)
        made_before(self, *args, **kw)

    monkeypatch.setattr(Point, "__init__", counted)
    status, answer, _ = await fleet.upload(raw)
    monkeypatch.undo()
    assert status == 200, answer
    assert answer["accepted"] == 600
    assert made == []
    assert await fleet.stored() == 600


async def test_a_credential_bound_to_two_households_writes_both(fleet: Fleet) -> None:
    creds = GatewayCredentials(fleet.db)
    _, text = creds.issue(["hh-a", "hh-b"])
    creds.close()
    status, answer, _ = await fleet.upload(readings("hh-a", 2) + readings("hh-b", 2), credential=text)
    assert status == 200, answer
    assert await fleet.stored("hh-a") == 2 and await fleet.stored("hh-b") == 2


async def test_no_credential_a_wrong_one_or_an_api_token_cannot_write(fleet: Fleet) -> None:
    tokens = TokenStore(fleet.db)
    _, api_token = tokens.create("alice", ["p"], frozenset({"p"}))
    tokens.close()
    wrong = f"{fleet.credential[:-43]}{'A' * 43}"  # right id, wrong secret (43 characters, may hold "_")
    for credential in (api_token, wrong, "hemsgw_nonsense"):
        status, answer, headers = await fleet.upload(readings("hh-a", 1), credential=credential)
        assert status == 401, credential
        assert answer["code"] == "invalid_credential"
        assert "Bearer" in headers["WWW-Authenticate"]
    resp = await fleet.client.post("/api/v1/ingest", data=b"", headers={"Content-Type": "text/plain"})
    assert resp.status == 401
    assert await fleet.stored() == 0


async def test_a_revoked_credential_is_refused_by_a_replica_that_had_verified_it(fleet: Fleet) -> None:
    status, _, _ = await fleet.upload(readings("hh-a", 1))
    assert status == 200  # verified and remembered by this replica
    other = GatewayCredentials(fleet.db)  # another process's connection, as `hems principals` is
    other.revoke(fleet.credential_id)
    other.close()
    revoked_at = asyncio.get_running_loop().time()
    while True:
        status, answer, _ = await fleet.upload(readings("hh-a", 1, start_ns=T0_NS + 7))
        if status == 401:
            break
        assert status == 200
        await asyncio.sleep(0.02)
    assert asyncio.get_running_loop().time() - revoked_at < 1.0
    assert answer["code"] == "credential_revoked"


# -- what a batch must be ------------------------------------------------------------------------------
async def test_the_same_batch_twice_is_stored_once_and_answered_as_a_duplicate(fleet: Fleet) -> None:
    batch = readings("hh-a", 4)
    first = await fleet.upload(batch)
    second = await fleet.upload(batch)
    assert first[0] == second[0] == 200
    assert first[1]["duplicate"] is False and second[1]["duplicate"] is True
    assert first[1]["batch"] == second[1]["batch"] == hashlib.sha256(body(batch)).hexdigest()
    assert await fleet.stored() == 4
    text = await fleet.metrics()
    assert metric(text, 'hems_ingest_requests_total{outcome="stored"}') == 1
    assert metric(text, 'hems_ingest_requests_total{outcome="duplicate"}') == 1
    assert metric(text, "hems_ingest_points_accepted_total") == 4


async def test_a_batch_id_that_is_not_the_body_digest_is_refused(fleet: Fleet) -> None:
    status, answer, _ = await fleet.upload(readings("hh-a", 2), **{"Idempotency-Key": "0" * 64})
    assert (status, answer["code"]) == (400, "batch_id_mismatch")
    assert await fleet.stored() == 0


async def test_without_a_batch_id_the_store_still_keeps_one_copy(fleet: Fleet) -> None:
    raw = body(readings("hh-a", 3))
    for _ in range(2):
        resp = await fleet.client.post(
            "/api/v1/ingest",
            data=raw,
            headers={"Authorization": f"Bearer {fleet.credential}", "Content-Type": "text/plain"},
        )
        assert resp.status == 200
    assert await fleet.stored() == 3


async def test_bad_line_protocol_is_refused_naming_the_line_and_nothing_is_stored(fleet: Fleet) -> None:
    good = body(readings("hh-a", 2))
    for bad, what in (
        (good + b"\nelectricity,device=m,household=hh-a,source=echonet power_w=1", "line 3: no timestamp"),
        (good + b"\nelectricity,device=m,household=hh-a power_w=1 5", "line 3: tags"),
        (b"\xff" + good, "line 1: not UTF-8"),
    ):
        status, answer, _ = await fleet.upload(bad)
        assert status == 400 and answer["code"] == "bad_line_protocol", answer
        assert what in answer["detail"]
    assert await fleet.stored() == 0


async def test_values_validation_refuses_are_answered_and_counted(fleet: Fleet) -> None:
    future = int((NOW + timedelta(hours=2)).timestamp()) * 10**9
    batch = (
        readings("hh-a", 2)
        + readings("hh-a", 1, start_ns=future)
        + [Point("electricity", "hh-a", "smart_meter", "echonet", T0_NS + 5, {"power_w": 9e9})]
    )
    status, answer, _ = await fleet.upload(batch)
    assert status == 200
    assert answer["accepted"] == 2
    assert answer["rejected"] == {"timestamp_in_future": 1, "no_valid_fields": 1}
    assert await fleet.stored() == 2
    text = await fleet.metrics()
    assert metric(text, 'hems_ingest_points_rejected_total{reason="timestamp_in_future"}') == 1
    assert metric(text, 'hems_pipeline_validation_dropped_fields{key="out_of_range"}') == 1


async def test_unsupported_types_and_encodings_are_refused(fleet: Fleet) -> None:
    raw = body(readings("hh-a", 1))
    auth = {"Authorization": f"Bearer {fleet.credential}"}
    for headers in (
        {"Content-Type": "application/json"},
        {"Content-Type": "text/plain", "Content-Encoding": "compress"},
    ):
        resp = await fleet.client.post("/api/v1/ingest", data=raw, headers={**auth, **headers})
        assert resp.status == 415, headers
    resp = await fleet.client.post(
        "/api/v1/ingest?precision=s", data=raw, headers={**auth, "Content-Type": "text/plain"}
    )
    assert resp.status == 400
    resp = await fleet.client.post(
        "/api/v1/ingest",
        data=b"not gzip at all",
        headers={**auth, "Content-Type": "text/plain", "Content-Encoding": "gzip"},
    )
    assert resp.status == 400
    assert await fleet.stored() == 0


# -- limits ----------------------------------------------------------------------------------------------
async def test_bodies_beyond_the_limits_are_refused_with_413(tmp_path: Path) -> None:
    cfg = FleetConfig(
        ingest_rate_per_s=0,
        ingest_max_body_bytes=4096,
        ingest_max_inflated_bytes=64 * 1024,
        ingest_max_points=50,
    )
    async for fleet in start_fleet(tmp_path, cfg, QUICK):
        status, answer, _ = await fleet.upload(readings("hh-a", 51))
        assert (status, answer["code"]) == (413, "too_large")
        assert "50 lines" in answer["detail"]
        # Random digits do not compress: more than 4 KiB as sent.
        noise = os.urandom(3000).hex().encode()
        status, answer, _ = await fleet.upload(noise, **{"Content-Encoding": "identity"})
        assert (status, answer["code"]) == (413, "too_large")
        # A small gzip that unzips to more than 64 KiB: refused without unzipping it all.
        bomb = b"#" + b" " * (3 * 2**20)
        assert len(gzip.compress(bomb)) < 4096
        status, answer, _ = await fleet.upload(bomb)
        assert (status, answer["code"]) == (413, "too_large")
        assert "unzipped" in answer["detail"]
        assert await fleet.stored() == 0


async def test_a_gateway_over_its_request_rate_gets_429_with_retry_after(tmp_path: Path) -> None:
    async for fleet in start_fleet(tmp_path, FleetConfig(ingest_rate_per_s=0.5, ingest_burst=2), QUICK):
        answers = [await fleet.upload(readings("hh-a", 1, start_ns=T0_NS + i)) for i in range(3)]
        assert [a[0] for a in answers] == [200, 200, 429]
        assert answers[2][1]["code"] == "rate_limited"
        assert int(answers[2][2]["Retry-After"]) >= 1
        assert await fleet.stored() == 2


async def test_a_saturated_pipeline_answers_429_until_the_store_catches_up(tmp_path: Path) -> None:
    cfg = FleetConfig(ingest_rate_per_s=0, ingest_max_pending_points=3, ingest_retry_after_s=7)
    async for fleet in start_fleet(tmp_path, cfg, QUICK):
        # Another connection holds the store's write lock: the first batch waits for it (a slow store).
        holder = sqlite3.connect(fleet.store_path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        first = asyncio.create_task(fleet.upload(readings("hh-a", 5)))
        while fleet.service.pipeline.pending_points == 0:
            await asyncio.sleep(0.01)
        status, answer, headers = await fleet.upload(readings("hh-a", 1, start_ns=T0_NS + 3))
        assert (status, answer["code"], headers["Retry-After"]) == (429, "saturated", "7")
        holder.execute("ROLLBACK")
        holder.close()
        assert (await first)[0] == 200
        status, _, _ = await fleet.upload(readings("hh-a", 1, start_ns=T0_NS + 3))
        assert status == 200
        assert await fleet.stored() == 6


async def test_a_store_outage_is_spooled_then_answered_503_beyond_the_high_water(tmp_path: Path) -> None:
    cfg = FleetConfig(ingest_rate_per_s=0, ingest_max_spooled_points=4, ingest_unavailable_retry_after_s=30)
    async for fleet in start_fleet(
        tmp_path, cfg, replace(QUICK, spool_max_bytes=2**20, spool_segment_bytes=2**16)
    ):
        away = fleet.store_path.with_suffix(".away")
        fleet.store_path.rename(away)  # the store's file is gone: writes fail as an outage
        status, answer, _ = await fleet.upload(readings("hh-a", 5))
        assert status == 200 and answer["accepted"] == 5  # durable in this replica's spool
        assert fleet.service.pipeline.spool is not None and fleet.service.pipeline.spool.depth_points == 5
        status, answer, headers = await fleet.upload(readings("hh-a", 1, start_ns=T0_NS + 3))
        assert (status, answer["code"], headers["Retry-After"]) == (503, "store_unavailable", "30")
        away.rename(fleet.store_path)
        for _ in range(200):
            if fleet.service.pipeline.spool.depth_points == 0:
                break
            await asyncio.sleep(0.05)
        assert await fleet.stored() == 5
        status, _, _ = await fleet.upload(readings("hh-a", 1, start_ns=T0_NS + 3))
        assert status == 200


async def test_readyz_and_metrics_of_an_ingest_replica(fleet: Fleet) -> None:
    resp = await fleet.client.get("/readyz")
    assert resp.status == 200
    text = await fleet.metrics()
    assert "hems_ingest_request_seconds_count" in text
    assert "hems_pipeline_spool_depth_points" in text
    resp = await fleet.client.get("/api/v1/households")
    assert resp.status == 404  # an ingest replica reads nothing


async def test_a_gateway_credential_reads_nothing_through_the_api(
    tmp_path: Path, store_path: Path, api_policy: Any
) -> None:
    async for env in start_env(tmp_path, store_path, api_policy):
        creds = GatewayCredentials(env.db)
        _, gateway = creds.issue(["h1"])
        creds.close()
        for path in ("/api/v1/me", "/api/v1/households/h1/series/electricity?purpose=x"):
            resp = await env.client.get(path, headers={"Authorization": f"Bearer {gateway}"})
            assert resp.status == 401, path
        resp = await env.client.get("/api/v1/me", headers=env.auth("alice"))
        assert resp.status == 200  # the same API answers an API token


async def test_an_ingest_replicas_metrics_are_not_served_through_a_proxy_on_this_machine(
    fleet: Fleet,
) -> None:
    """Behind a TLS proxy on the same host every client is a loopback peer; what it forwards carries
    the forwarding headers, and is not the scraper on this machine."""
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):
        resp = await fleet.client.get("/metrics", headers={header: "for=203.0.113.9"})
        assert resp.status == 403, header
    assert (await fleet.client.get("/metrics")).status == 200
