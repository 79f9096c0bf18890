"""``POST /api/v1/ingest``: where home gateways upload their households' readings to the fleet.

A request is one batch: gzip'd (or plain) InfluxDB line protocol with nanosecond timestamps
(``pipeline.lineparse``), sent with a gateway credential (``access.gateways``).  In order, cheapest
refusal first:

1. the credential (401), then its request rate (429 ``rate_limited`` with ``Retry-After``);
2. saturation, before the body is even read: points accepted but not yet durable beyond
   ``max_pending_points`` -> 429 ``saturated``; this replica's spool (the store is down) beyond
   ``max_spooled_points`` -> 503 ``store_unavailable``; both with ``Retry-After``;
3. the body: at most ``max_body_bytes`` as sent and ``max_inflated_bytes`` once unzipped (413; aiohttp
   unzips in bounded steps and stops at the limit), line protocol that parses (400 naming the line),
   at most ``max_points`` lines (413); it is read straight into the pipeline's column buffers
   (``pipeline.columns.ColumnBatch``), with no object per line, and stays in them to the store;
4. the households: a line for a household the credential is not bound to refuses the whole batch
   (403 ``household_not_bound``), nothing of it is written, and the refusal is logged (rate-limited
   per credential) and counted (``hems_ingest_requests_total{outcome="household_not_bound"}``);
5. the pipeline: every point validated again and counted (``Pipeline.submit_points``), then the answer
   waits until the batch is durable (in the store, or fsync'd in this replica's spool).

Idempotence.  A batch's id is the SHA-256 of its uncompressed body (the gateway sends it as
``Idempotency-Key``; a different value is refused).  What guarantees that a retry never duplicates a
reading is the store: a point is identified by series and timestamp, and a retry carries the same
points, so writing it again overwrites each point with itself.  The batch-id memory only saves the
work and keeps the counters true: a replica remembers the ids it committed for ``batch_memory_s``
(600 s), and answers a repeat ``{"duplicate": true}`` without writing.  600 s is enough because a
retry of a lost answer comes after the gateway's request timeout (30 s) plus its backoff (at most
30 s, or the ``Retry-After`` given, 5-30 s): about a minute while the link works.  A retry that comes
later (the link was down for longer), or through another replica (the memory is per replica: there
is no state shared between replicas but the store and the access database), or after a restart, is
written again: harmless for the data, counted as another stored batch.  The same id arriving while
the first copy is still being written waits for that write instead of writing in parallel.

The gateway ran the counters (rollover, meter replacement) before uploading: they need each series'
history in order, which only the home has; the replicas stay stateless.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from access.api.httplog import quiet_client_errors
from access.api.metrics import Families, Histogram, histogram_family
from access.api.multiproc import PUBLISH_EVERY_S, SharedMetrics
from access.api.problems import ApiProblem
from access.api.ratelimit import RateLimiter
from access.api.routes import from_this_machine
from access.gateways import GatewayCredential, GatewayCredentials, GatewayError
from pipeline.columns import ColumnBatch
from pipeline.exposition import operations_families
from pipeline.fleet_config import FleetConfig
from pipeline.lineparse import LineParseError, TooManyLines, parse_body
from pipeline.writer import Backpressure, Pipeline

log = logging.getLogger(__name__)

INGEST_ROUTE: Final = "/api/v1/ingest"
BATCH_ID_HEADER: Final = "Idempotency-Key"
_LOG_EVERY_S: Final = 60.0  # a forged household is logged at most this often per credential (all counted)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Ping = Callable[[], Awaitable[bool]]


@dataclass
class IngestMetrics:
    requests: Counter[str] = field(default_factory=Counter)  # by outcome
    points_accepted: int = 0
    points_rejected: Counter[str] = field(default_factory=Counter)  # by validation reason
    http: Counter[tuple[str, int]] = field(default_factory=Counter)  # (route, status) of every answer
    seconds: Histogram = field(default_factory=Histogram)

    shared: SharedMetrics | None = None  # with --workers: every worker's totals, as the API's

    def render(self, pipeline: Pipeline, credentials: GatewayCredentials) -> bytes:
        """The Prometheus text, written by ``prometheus_client`` as the API's is (no household named):
        this process's counters, or with ``shared`` every worker's summed."""
        registry = CollectorRegistry(auto_describe=False)
        if self.shared is None:
            registry.register(Families(lambda: self.families(pipeline, credentials)))
        else:
            self.publish(pipeline, credentials)
            registry.register(Families(self.shared.collect))
        return bytes(generate_latest(registry))

    def publish(self, pipeline: Pipeline, credentials: GatewayCredentials) -> None:
        """Write this process's totals where the other workers' scrapes read them (with ``shared``)."""
        if self.shared is not None:
            self.shared.publish(self.families(pipeline, credentials))

    def families(self, pipeline: Pipeline, credentials: GatewayCredentials) -> Iterator[Metric]:
        """This process's upload counters and its pipeline's statistics as Prometheus families."""
        m = self
        requests = CounterMetricFamily(
            "hems_ingest_requests", "Upload requests by outcome.", labels=["outcome"]
        )
        for outcome, n in sorted(m.requests.items()):
            requests.add_metric([outcome], n)
        yield requests
        yield CounterMetricFamily(
            "hems_ingest_points_accepted",
            "Points accepted (stored, or in this replica's spool).",
            value=m.points_accepted,
        )
        rejected = CounterMetricFamily(
            "hems_ingest_points_rejected", "Points the validation refused, by reason.", labels=["reason"]
        )
        for reason, n in sorted(m.points_rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        answers = CounterMetricFamily(
            "hems_ingest_http", "HTTP answers by route and status.", labels=["route", "status"]
        )
        for (route, status), n in sorted(m.http.items()):
            answers.add_metric([route, str(status)], n)
        yield answers
        yield histogram_family("hems_ingest_request_seconds", "Time to answer an upload.", m.seconds)
        yield GaugeMetricFamily(
            "hems_ingest_credentials_remembered",
            "Gateway credentials this replica has verified.",
            value=credentials.remembered,
        )
        yield CounterMetricFamily(
            "hems_ingest_credential_lookups",
            "Credential verifications that read the access database (the rest are answered from memory).",
            value=credentials.lookups,
        )
        yield from operations_families(None, pipeline.metrics)


@dataclass
class BatchMemory:
    """Committed batch ids (see the module docstring) and the ones being written right now."""

    ttl_s: float
    max_entries: int = 1_000_000
    clock: Callable[[], float] = time.monotonic
    _committed: OrderedDict[tuple[str, str], tuple[float, dict[str, object]]] = field(
        default_factory=OrderedDict
    )

    def answer(self, key: tuple[str, str]) -> dict[str, object] | None:
        t = self.clock()
        committed = self._committed
        while committed:
            oldest = next(iter(committed.values()))
            if oldest[0] > t and len(committed) <= self.max_entries:
                break
            committed.popitem(last=False)
        found = committed.get(key)
        return None if found is None else found[1]

    def remember(self, key: tuple[str, str], answer: dict[str, object]) -> None:
        self._committed[key] = (self.clock() + self.ttl_s, answer)


@dataclass
class IngestService:
    credentials: GatewayCredentials
    pipeline: Pipeline
    ping: Ping
    config: FleetConfig = field(default_factory=FleetConfig)
    metrics: IngestMetrics = field(default_factory=IngestMetrics)
    limiter: RateLimiter | None = None
    memory: BatchMemory | None = None
    _writing: dict[tuple[str, str], asyncio.Future[dict[str, object]]] = field(default_factory=dict)
    _logged: dict[str, tuple[float, int]] = field(default_factory=dict)  # credential -> (last log, since)

    def __post_init__(self) -> None:
        if self.limiter is None and self.config.ingest_rate_per_s > 0:
            self.limiter = RateLimiter(self.config.ingest_rate_per_s, self.config.ingest_burst)
        if self.memory is None:
            self.memory = BatchMemory(self.config.ingest_batch_memory_s)

    # -- the steps, cheapest first -------------------------------------------------------------------

    def authenticate(self, request: web.Request) -> GatewayCredential:
        scheme, _, text = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not text.strip():
            raise self._refuse(
                "unauthenticated",
                ApiProblem(
                    401,
                    "not_authenticated",
                    "send 'Authorization: Bearer <gateway credential>'",
                    headers={"WWW-Authenticate": "Bearer"},
                ),
            )
        try:
            return self.credentials.authenticate(text.strip())
        except GatewayError as exc:
            raise self._refuse(
                "unauthenticated",
                ApiProblem(
                    401, exc.reason, str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
                ),
            ) from None

    def check_capacity(self, credential: GatewayCredential) -> None:
        cfg = self.config
        if self.limiter is not None:
            wait = self.limiter.take(f"gateway:{credential.id}")
            if wait > 0:
                raise self._refuse(
                    "rate_limited",
                    ApiProblem(
                        429,
                        "rate_limited",
                        "too many uploads for this gateway credential; slow down",
                        headers={"Retry-After": RateLimiter.retry_after_header(wait)},
                    ),
                )
        pending = self.pipeline.pending_points
        if pending > cfg.ingest_max_pending_points:
            raise self._refuse(
                "saturated",
                ApiProblem(
                    429,
                    "saturated",
                    f"{pending} points are waiting for the store; try again later",
                    headers={"Retry-After": RateLimiter.retry_after_header(cfg.ingest_retry_after_s)},
                ),
            )
        spool = self.pipeline.spool
        if spool is not None and spool.depth_points > cfg.ingest_max_spooled_points:
            raise self._unavailable(f"the store is behind by {spool.depth_points} points")

    async def read_body(self, request: web.Request) -> tuple[bytes, str]:
        cfg = self.config
        ctype = request.headers.get("Content-Type", "")
        mime, _, params = ctype.partition(";")
        if mime.strip().lower() != "text/plain" or params.strip().lower() not in ("", "charset=utf-8"):
            raise self._refuse(
                "bad_request",
                ApiProblem(
                    415, "unsupported_media_type", "send line protocol as 'text/plain; charset=utf-8'"
                ),
            )
        if request.query.get("precision", "ns") != "ns":
            raise self._refuse(
                "bad_request", ApiProblem(400, "bad_parameter", "timestamps are in ns", field="precision")
            )
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("gzip", "deflate", "identity"):
            raise self._refuse(
                "bad_request", ApiProblem(415, "unsupported_encoding", "gzip, deflate or no Content-Encoding")
            )
        if request.content_length is not None and request.content_length > cfg.ingest_max_body_bytes:
            raise self._too_large(f"a body is at most {cfg.ingest_max_body_bytes} bytes as sent")
        # aiohttp unzips as it reads, in bounded steps, and stops at the app's client_max_size
        # (``ingest_max_inflated_bytes``): a small body cannot become a huge one in memory.
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large(
                f"a body is at most {cfg.ingest_max_inflated_bytes} bytes unzipped"
            ) from None
        except RequestPayloadError as exc:
            raise self._refuse(
                "bad_request", ApiProblem(400, "bad_body", f"the body cannot be read: {exc}")
            ) from None
        digest = hashlib.sha256(body).hexdigest()
        given = request.headers.get(BATCH_ID_HEADER)
        if given is not None and given.strip().lower() != digest:
            raise self._refuse(
                "bad_request",
                ApiProblem(
                    400,
                    "batch_id_mismatch",
                    f"{BATCH_ID_HEADER} is the hex SHA-256 of the unzipped body",
                    field=BATCH_ID_HEADER,
                ),
            )
        return body, digest

    def parse(self, body: bytes) -> ColumnBatch:
        """The upload in the pipeline's column buffers (no object per line), or a 400/413."""
        try:
            return parse_body(body, self.config.ingest_max_points)
        except TooManyLines as exc:
            raise self._too_large(str(exc)) from None
        except LineParseError as exc:
            raise self._refuse(
                "bad_request", ApiProblem(400, "bad_line_protocol", str(exc), field="body")
            ) from None

    def check_households(self, credential: GatewayCredential, points: ColumnBatch) -> None:
        allowed = credential.households
        foreign = sorted(points.households() - allowed)
        if not foreign:
            return
        self._log_forged(credential, foreign)
        raise self._refuse(
            "household_not_bound",
            ApiProblem(
                403,
                "household_not_bound",
                f"this gateway credential does not write household {foreign[0][:64]!r}; nothing of the batch "
                "was stored",
                reason="household_not_bound",
            ),
        )

    def _log_forged(self, credential: GatewayCredential, foreign: list[str]) -> None:
        t = time.monotonic()
        last, since = self._logged.get(credential.id, (-_LOG_EVERY_S, 0))
        if t - last < _LOG_EVERY_S:
            self._logged[credential.id] = (last, since + 1)
            return
        self._logged[credential.id] = (t, 0)
        log.warning(
            "gateway credential %s (%s) sent households it is not bound to: %s; batch refused%s",
            credential.id,
            credential.label or "no label",
            ", ".join(repr(h[:64]) for h in foreign[:5]),
            f" ({since} more refusals since the last line)" if since else "",
        )

    async def store(self, key: tuple[str, str], points: ColumnBatch) -> dict[str, object]:
        """Submit once per batch id: a repeat while the first is being written waits for it."""
        assert self.memory is not None
        known = self.memory.answer(key)
        if known is not None:
            self.metrics.requests["duplicate"] += 1
            return {**known, "duplicate": True}
        writing = self._writing.get(key)
        if writing is not None:
            answer = await writing
            self.metrics.requests["duplicate"] += 1
            return {**answer, "duplicate": True}
        task = asyncio.ensure_future(self._submit(key, points))
        self._writing[key] = task
        task.add_done_callback(lambda done: self._forget_writing(key, done))
        return await asyncio.shield(task)  # a caller that goes away does not stop the write

    def _forget_writing(self, key: tuple[str, str], done: asyncio.Future[dict[str, object]]) -> None:
        self._writing.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: its callers (if any are left) got it already

    async def _submit(self, key: tuple[str, str], points: ColumnBatch) -> dict[str, object]:
        assert self.memory is not None
        try:
            result = await self.pipeline.submit_points(points)
        except Backpressure as exc:
            raise self._unavailable(f"the store is down and this replica cannot hold more: {exc}") from None
        except Exception:
            log.exception("the store refused a batch of %d points", len(points))
            raise self._refuse(
                "store_refused", ApiProblem(500, "store_refused", "the store refused the batch; retry later")
            ) from None
        rejected = Counter(reason for _, reason in result.rejected)
        self.metrics.points_accepted += result.accepted
        self.metrics.points_rejected.update(rejected)
        self.metrics.requests["stored"] += 1
        answer: dict[str, object] = {"batch": key[1], "accepted": result.accepted, "rejected": dict(rejected)}
        self.memory.remember(key, answer)
        return {**answer, "duplicate": False}

    # -- refusals --------------------------------------------------------------------------------------

    def _refuse(self, outcome: str, problem: ApiProblem) -> ApiProblem:
        self.metrics.requests[outcome] += 1
        return problem

    def _too_large(self, detail: str) -> ApiProblem:
        return self._refuse("too_large", ApiProblem(413, "too_large", detail))

    def _unavailable(self, detail: str) -> ApiProblem:
        after = RateLimiter.retry_after_header(self.config.ingest_unavailable_retry_after_s)
        return self._refuse(
            "store_unavailable", ApiProblem(503, "store_unavailable", detail, headers={"Retry-After": after})
        )


INGEST: web.AppKey[IngestService] = web.AppKey("hems_ingest", IngestService)


async def ingest(request: web.Request) -> web.Response:
    service = request.app[INGEST]
    credential = service.authenticate(request)
    service.check_capacity(credential)
    body, digest = await service.read_body(request)
    points = service.parse(body)
    service.check_households(credential, points)
    answer = await service.store((credential.id, digest), points)
    return web.json_response(answer)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    service = request.app[INGEST]
    try:
        ok = await service.ping()
    except Exception:
        ok = False
    if not ok:
        raise ApiProblem(503, "store_unavailable", "the data store does not answer")
    return web.json_response({"status": "ready"})


async def _metrics(request: web.Request) -> web.Response:
    """For a scraper on this machine only: an ingest replica knows gateway credentials, not operators."""
    if not from_this_machine(request):
        raise ApiProblem(403, "refused", "metrics are served to this machine only", reason="not_local")
    service = request.app[INGEST]
    body = service.metrics.render(service.pipeline, service.credentials)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _publish_metrics(app: web.Application) -> AsyncIterator[None]:
    """Every PUBLISH_EVERY_S, at start and at the end: this worker's totals into the shared directory."""
    service = app[INGEST]

    def publish() -> None:
        service.metrics.publish(service.pipeline, service.credentials)

    async def loop() -> None:
        while True:
            await asyncio.sleep(PUBLISH_EVERY_S)
            publish()

    publish()
    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    publish()


@web.middleware
async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Problems as problem+json, every answer counted by route and status, uploads timed."""
    service = request.app[INGEST]
    t0 = time.perf_counter()
    try:
        response = await handler(request)
    except ApiProblem as problem:
        response = problem.response()
    except web.HTTPException as exc:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "http_error")
        response = ApiProblem(exc.status, code, exc.reason).response()
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = ApiProblem(500, "internal_error", "the server failed; retry later").response()
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    service.metrics.http[(route, response.status)] += 1
    if route == INGEST_ROUTE:
        service.metrics.seconds.observe(time.perf_counter() - t0)
    return response


def make_ingest_app(service: IngestService, metrics_dir: Path | None = None) -> web.Application:
    """An ingest replica's whole app: the upload route and the operational endpoints, nothing that
    reads data (``hems serve --role ingest``).  ``metrics_dir``: the directory the workers of one
    replica share (``--workers``), so ``/metrics`` sums them all, as the API's does."""
    quiet_client_errors()
    app = web.Application(middlewares=[_answer], client_max_size=service.config.ingest_max_inflated_bytes)
    app[INGEST] = service
    if metrics_dir is not None:
        service.metrics.shared = SharedMetrics(metrics_dir)
        app.cleanup_ctx.append(_publish_metrics)
    app.router.add_route("POST", INGEST_ROUTE, ingest, name="ingest")
    app.router.add_route("GET", "/healthz", _healthz, name="healthz")
    app.router.add_route("GET", "/readyz", _readyz, name="readyz")
    app.router.add_route("GET", "/metrics", _metrics, name="metrics")
    return app
