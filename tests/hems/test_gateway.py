"""A home gateway's pipeline (spool first, then ``FleetUploader``) against a real ingest endpoint.

In one process for speed and control: the ingest is the real aiohttp app on a real socket, over a
real pipeline and SQLite store; the gateway is the real writer with its spool on disk.  The
multi-process version (``hems serve`` replicas, ``hems collect``, influxd) is ``test_fleet.py``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from access.api.ingest import IngestService, make_ingest_app
from access.gateways import GatewayCredentials
from collector.reading import Reading
from hems.collect import open_uploader
from pipeline.config import PipelineConfig
from pipeline.factory import open_gateway_pipeline, open_ingest_pipeline
from pipeline.fleet_config import FleetConfig
from pipeline.query import SeriesQuery
from pipeline.sqlite_store import SQLiteStore
from pipeline.upload import FleetUploader
from pipeline.writer import Pipeline
from tests.loopback import free_port

NOW = datetime.now(UTC).replace(microsecond=0)
WINDOW = (NOW - timedelta(days=1), NOW + timedelta(days=1))
NO_LIMIT = FleetConfig(ingest_rate_per_s=0)


@dataclass
class Seen:
    """Every upload the ingest answered: (arrival, status, Retry-After in s or None)."""

    answers: list[tuple[float, int, float | None]] = field(default_factory=list)


def recorder(
    seen: Seen,
) -> Callable[
    [web.Request, Callable[[web.Request], Awaitable[web.StreamResponse]]], Awaitable[web.StreamResponse]
]:
    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        t = time.monotonic()
        response = await handler(request)
        after = response.headers.get("Retry-After")
        if request.path == "/api/v1/ingest":
            seen.answers.append((t, response.status, None if after is None else float(after)))
        return response

    return record


@dataclass
class FleetSide:
    """The ingest replica, which a test can stop and start again on the same port."""

    service: IngestService
    store: SQLiteStore
    port: int
    seen: Seen = field(default_factory=Seen)
    runner: web.AppRunner | None = None
    ssl: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = make_ingest_app(self.service)
        app.middlewares.insert(0, recorder(self.seen))
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, ssl_context=self.ssl).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def count(self, household: str = "hh-a") -> int:
        q = SeriesQuery((household,), "electricity", ("power_w",), *WINDOW)
        return (await self.store.query(q)).height


@pytest.fixture
async def fleet_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[tuple[FleetSide, str]]]]:
    made: list[tuple[FleetSide, Pipeline, GatewayCredentials]] = []

    async def make(config: FleetConfig = NO_LIMIT, skew_s: float = 300.0) -> tuple[FleetSide, str]:
        creds = GatewayCredentials(tmp_path / "access.sqlite")
        _, credential = creds.issue(["hh-a"])
        store = SQLiteStore(tmp_path / "fleet.sqlite")
        cfg = PipelineConfig(max_delay_s=0.05, max_future_skew_s=skew_s)
        pipeline = open_ingest_pipeline(cfg, store, tmp_path / "ingest-spool")
        await pipeline.start()
        side = FleetSide(IngestService(creds, pipeline, store.ping, config), store, free_port())
        await side.start()
        made.append((side, pipeline, creds))
        return side, credential

    yield make
    for side, pipeline, creds in made:
        await side.stop()
        await pipeline.close()
        await side.store.close()
        creds.close()


@dataclass
class Gateway:
    pipeline: Pipeline
    uploader: FleetUploader
    local: SQLiteStore | None

    async def close(self) -> None:
        await self.pipeline.close()
        await self.uploader.close()
        if self.local is not None:
            await self.local.close()


async def open_gateway(
    tmp_path: Path,
    url: str,
    credential: str,
    *,
    keep_local: bool = False,
    skew_s: float = 300.0,
    max_points: int = 5000,
    ca_file: Path | None = None,
) -> Gateway:
    data = tmp_path / "gateway"
    cfg = PipelineConfig(
        spool_dir=str(data / "spool"),
        counter_state_path=str(data / "counter_state.sqlite"),
        sqlite_path=str(data / "hems.sqlite"),
        max_future_skew_s=skew_s,
    )
    data.mkdir(parents=True, exist_ok=True)
    (data / "credential").write_text(credential + "\n")
    fleet = FleetConfig(
        upload_url=url,
        credential_file=str(data / "credential"),
        upload_interval_s=0.05,
        upload_timeout_s=5.0,
        upload_backoff_max_s=0.5,
        upload_max_points=max_points,
        ca_file=None if ca_file is None else str(ca_file),
    )
    uploader = open_uploader(fleet)  # as `hems collect --upload-url` builds it
    local = SQLiteStore(cfg.sqlite_path) if keep_local else None
    pipeline = open_gateway_pipeline(cfg, fleet, uploader, local)
    pipeline.replay_interval = 0.1
    await pipeline.start()
    return Gateway(pipeline, uploader, local)


def readings(n: int, start: datetime = NOW - timedelta(minutes=30), household: str = "hh-a") -> list[Reading]:
    return [
        Reading(
            household,
            "smart_meter",
            "electricity",
            start + timedelta(seconds=10 * i),
            {"power_w": 100.0 + i, "import_wh_total": 1000.0 + i},
        )
        for i in range(n)
    ]


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_readings_reach_the_fleet_from_the_spool_and_the_local_copy(
    tmp_path: Path, fleet_factory: Callable[..., Awaitable[tuple[FleetSide, str]]]
) -> None:
    fleet, credential = await fleet_factory()
    gw = await open_gateway(tmp_path, fleet.url, credential, keep_local=True)
    try:
        result = await gw.pipeline.submit(readings(20))
        assert result.accepted == 20

        async def arrived() -> bool:
            return await fleet.count() == 20

        await until(arrived)
        # the fleet counts the points before the gateway has its answer and lets go of the spool record
        await until(lambda: _eq(_depth(gw), 0))
        assert gw.pipeline.spool is not None and len(gw.pipeline.spool) == 0
        assert gw.local is not None
        local = await gw.local.query(
            SeriesQuery(("hh-a",), "electricity", ("import_wh_total", "raw_import_wh_total"), *WINDOW)
        )
        assert local.height == 20
        remote = await fleet.store.query(
            SeriesQuery(("hh-a",), "electricity", ("import_wh_total", "raw_import_wh_total"), *WINDOW)
        )
        assert remote.equals(local)  # the counters ran once, at the gateway; the fleet stores them as sent
        assert gw.uploader.stats.points == 20 and gw.uploader.stats.duplicates == 0
    finally:
        await gw.close()


async def test_a_fleet_outage_is_held_in_the_gateway_spool_then_every_reading_arrives_once(
    tmp_path: Path, fleet_factory: Callable[..., Awaitable[tuple[FleetSide, str]]]
) -> None:
    fleet, credential = await fleet_factory()
    gw = await open_gateway(tmp_path, fleet.url, credential, keep_local=True)
    try:
        await gw.pipeline.submit(readings(5))
        await until(lambda: _eq(fleet.count(), 5))
        await fleet.stop()
        for k in range(1, 4):  # three batches while the fleet is away: acknowledged by the spool
            await gw.pipeline.submit(readings(5, start=NOW - timedelta(minutes=30 - k)))
        assert gw.pipeline.spool is not None and gw.pipeline.spool.depth_points == 15
        assert gw.local is not None  # the home's own copy stays current during the outage
        assert (
            await gw.local.query(SeriesQuery(("hh-a",), "electricity", ("power_w",), *WINDOW))
        ).height == 20
        assert gw.uploader.stats.unreachable >= 1
        await fleet.start()
        await until(lambda: _eq(fleet.count(), 20))
        await until(lambda: _eq(_depth(gw), 0))
        assert gw.uploader.stats.points == 20
    finally:
        await gw.close()


@dataclass
class LinkThatLosesAnswers:
    """A real TCP relay between the gateway and the fleet that, on its first ``lose`` connections,
    passes the request on, waits until the fleet answers (the batch is stored by then) and hangs up
    on the gateway instead of relaying the answer.  The fault is the link breaking after the fleet
    committed a batch; a gateway and a fleet on one machine cannot produce it otherwise."""

    upstream_port: int
    lose: int
    lost: int = 0
    port: int = 0
    server: asyncio.Server | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        fleet_r, fleet_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        drop = self.lost < self.lose

        async def requests() -> None:
            while data := await client_r.read(65536):
                fleet_w.write(data)
                await fleet_w.drain()

        forward = asyncio.create_task(requests())
        try:
            while data := await fleet_r.read(65536):
                if drop:
                    self.lost += 1
                    break
                client_w.write(data)
                await client_w.drain()
        except ConnectionError:
            pass
        finally:
            forward.cancel()
            for w in (client_w, fleet_w):
                w.close()


async def test_an_answer_lost_on_the_link_is_retried_with_its_batch_id_and_stored_once(
    tmp_path: Path, fleet_factory: Callable[..., Awaitable[tuple[FleetSide, str]]]
) -> None:
    fleet, credential = await fleet_factory()
    link = LinkThatLosesAnswers(fleet.port, lose=1)
    await link.start()
    gw = await open_gateway(tmp_path, f"http://127.0.0.1:{link.port}", credential)
    try:
        await gw.pipeline.submit(readings(5))
        await until(lambda: _eq(_depth(gw), 0))
        assert link.lost == 1  # the fleet stored the batch, the gateway never heard it
        assert gw.uploader.stats.unreachable >= 1
        # The retry carried the same batch id: answered as a duplicate, nothing written twice.
        assert gw.uploader.stats.duplicates == 1 and gw.uploader.stats.points == 5
        assert fleet.service.metrics.requests["stored"] == 1
        assert fleet.service.metrics.requests["duplicate"] == 1
        assert await fleet.count() == 5
    finally:
        await gw.close()
        await link.stop()


async def test_a_backlog_goes_up_in_one_request_not_one_per_batch(
    tmp_path: Path, fleet_factory: Callable[..., Awaitable[tuple[FleetSide, str]]]
) -> None:
    fleet, credential = await fleet_factory()
    await fleet.stop()
    gw = await open_gateway(tmp_path, fleet.url, credential)
    try:
        for k in range(6):
            await gw.pipeline.submit(readings(4, start=NOW - timedelta(minutes=40 - k)))
        assert gw.pipeline.spool is not None and len(gw.pipeline.spool) == 6
        await fleet.start()
        await until(lambda: _eq(fleet.count(), 24))
        await until(lambda: _replayed(gw, 6))
        assert [status for _, status, _ in fleet.seen.answers] == [200]
        assert len(gw.pipeline.spool) == 0
    finally:
        await gw.close()


async def _replayed(gw: Gateway, batches: int) -> bool:
    return gw.pipeline.stats.replayed_batches == batches


async def _eq(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _depth(gw: Gateway) -> int:
    assert gw.pipeline.spool is not None
    return gw.pipeline.spool.depth_points


async def test_retry_after_is_honoured_even_when_new_batches_wake_the_replayer(
    tmp_path: Path, fleet_factory: Callable[..., Awaitable[tuple[FleetSide, str]]]
) -> None:
    fleet, credential = await fleet_factory(FleetConfig(ingest_rate_per_s=0.5, ingest_burst=1))
    gw = await open_gateway(tmp_path, fleet.url, credential)
    try:
        for k in range(6):  # six records; new ones keep arriving while the gateway is told to wait
            await gw.pipeline.submit(readings(3, start=NOW - timedelta(minutes=50 - k)))
            await asyncio.sleep(0.3)
        await until(lambda: _eq(fleet.count(), 18), timeout=40)
    finally:
        await gw.close()
    told = [(t, after) for t, status, after in fleet.seen.answers if status == 429]
    assert told, "the rate limit never answered 429: the test did not test anything"
    for t, after in told:
        assert after is not None
        later = [s for s, _, _ in fleet.seen.answers if s > t]
        if later:
            assert min(later) - t >= after - 0.05, (t, after, later[0])
    assert gw.uploader.stats.retry_after_s >= sum(after or 0 for _, after in told)


async def test_points_the_fleet_refuses_are_counted_and_logged_at_the_gateway(
    tmp_path: Path,
    fleet_factory: Callable[..., Awaitable[tuple[FleetSide, str]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.upload")
    fleet, credential = await fleet_factory(skew_s=300.0)
    # This gateway's clock tolerance is wider than the fleet's: a reading an hour ahead passes here only.
    gw = await open_gateway(tmp_path, fleet.url, credential, skew_s=86400.0)
    try:
        await gw.pipeline.submit(readings(3) + readings(1, start=NOW + timedelta(hours=1)))
        await until(lambda: _eq(_depth(gw), 0))
        assert gw.uploader.stats.refused_points == {"timestamp_in_future": 1}
        assert gw.uploader.stats.points == 3
        assert any("refused 1 of 4 points" in r.getMessage() for r in caplog.records)
        assert await fleet.count() == 3
    finally:
        await gw.close()


async def test_a_batch_too_large_for_the_fleet_is_split(
    tmp_path: Path, fleet_factory: Callable[..., Awaitable[tuple[FleetSide, str]]]
) -> None:
    fleet, credential = await fleet_factory(FleetConfig(ingest_rate_per_s=0, ingest_max_points=4))
    gw = await open_gateway(tmp_path, fleet.url, credential)
    try:
        await gw.pipeline.submit(readings(10))
        await until(lambda: _eq(fleet.count(), 10))
        assert gw.uploader.stats.statuses[413] >= 1
    finally:
        await gw.close()


async def test_a_revoked_credential_keeps_the_batches_in_the_spool(
    tmp_path: Path,
    fleet_factory: Callable[..., Awaitable[tuple[FleetSide, str]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="pipeline.upload")
    fleet, credential = await fleet_factory()
    creds = GatewayCredentials(tmp_path / "access.sqlite")
    creds.revoke(credential.split("_")[1])
    creds.close()
    gw = await open_gateway(tmp_path, fleet.url, credential)
    try:
        await gw.pipeline.submit(readings(4))
        await until(lambda: _eq(_status_count(gw, 401), 2))
        assert await _depth(gw) == 4  # kept, not quarantined: the data is fine, the credential is not
        assert gw.pipeline.spool is not None and not list(gw.pipeline.spool.dir.glob("quarantine-*"))
        assert any("kept in the spool" in r.getMessage() for r in caplog.records)
        assert await fleet.count() == 0
    finally:
        await gw.close()


async def _status_count(gw: Gateway, status: int) -> int:
    return gw.uploader.stats.statuses[status]


async def test_the_gateway_pipeline_is_spool_first_only_with_a_spool(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "x.sqlite")
    with pytest.raises(ValueError, match="spool_first needs a spool"):
        Pipeline(store, spool_first=True)
    with pytest.raises(ValueError, match="copy_to"):
        Pipeline(store, copy_to=store)
    await store.close()


async def test_a_failing_local_copy_is_counted_and_does_not_stop_the_upload(
    tmp_path: Path, fleet_factory: Callable[..., Awaitable[tuple[FleetSide, str]]]
) -> None:
    fleet, credential = await fleet_factory()
    gw = await open_gateway(tmp_path, fleet.url, credential, keep_local=True)
    try:
        await gw.pipeline.submit(readings(2))
        assert gw.local is not None
        gw.local.path.rename(gw.local.path.with_suffix(".gone"))  # the local store's file disappears
        await gw.pipeline.submit(readings(2, start=NOW - timedelta(minutes=5)))
        await until(lambda: _eq(fleet.count(), 4))
        assert gw.pipeline.stats.store_failures["local_copy"] == 1
    finally:
        await gw.close()


def _certificates(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A private CA and a certificate for 127.0.0.1 signed by it (openssl, as an operator would)."""
    d = tmp_path / "tls"
    d.mkdir()
    run = lambda *args: subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=hems test CA")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj",
        "/CN=127.0.0.1")  # fmt: skip
    (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")  # fmt: skip
    return d / "ca.pem", d / "server.pem", d / "server.key"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates")
async def test_uploads_over_https_trust_only_the_configured_ca(
    tmp_path: Path, fleet_factory: Callable[..., Awaitable[tuple[FleetSide, str]]]
) -> None:
    """The fleet behind TLS (as behind its proxy): a gateway given the fleet's CA (``ca_file``) uploads;
    one that trusts only the system CAs refuses the certificate and keeps the readings."""
    ca, cert, key = _certificates(tmp_path)
    fleet, credential = await fleet_factory()
    await fleet.stop()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    fleet.ssl = context
    await fleet.start()
    url = f"https://127.0.0.1:{fleet.port}"
    strict = await open_gateway(tmp_path / "strict", url, credential)
    try:
        await strict.pipeline.submit(readings(3))
        await until(lambda: _unreachable(strict, 1))
        assert await _depth(strict) == 3 and await fleet.count() == 0
    finally:
        await strict.close()
    trusting = await open_gateway(tmp_path / "trusting", url, credential, ca_file=ca)
    try:
        await trusting.pipeline.submit(readings(3))
        await until(lambda: _eq(fleet.count(), 3))
    finally:
        await trusting.close()


async def _unreachable(gw: Gateway, n: int) -> bool:
    return gw.uploader.stats.unreachable >= n
