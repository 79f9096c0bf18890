"""The aiohttp application: JSON API, web views and operational endpoints over one policy.

The app never opens a time-series store: it is handed a ``pipeline.store.Store`` and reads only
through ``SeriesQuery``.  It opens the access database (relationships, consent, ledger, tokens, web
sessions: one SQLite file or one PostgreSQL database, ``access.db``) unless the caller hands over a
ledger it already holds, and the server key file (``access.keys``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from access.alerts import WebhookStore
from access.api.cursor import CursorCodec
from access.api.energy import TARIFF
from access.api.httplog import quiet_client_errors
from access.api.maintenance import RULES, WEBHOOKS, alert_loop
from access.api.metrics import CollectorHealth, Metrics, PipelineStats
from access.api.multiproc import PUBLISH_EVERY_S, SharedMetrics
from access.api.pagecache import PageCache, SharedPages
from access.api.problems import ApiProblem
from access.api.ratelimit import RateLimiter
from access.api.routes import add_routes
from access.api.series import keep_next_windows_ready
from access.api.state import (
    DEFAULT_PAGE_CACHE_BYTES,
    IDENTITY_MAX_AGE_S,
    IDENTITY_TOKEN_MAX_AGE_S,
    STATE,
    AppState,
)
from access.auth import SignIn, WebAuth, last_forwarded
from access.budget import BudgetStore
from access.clock import now as wall_now
from access.compiler import Policy, compile_seeds
from access.consent import ConsentStore
from access.db import AccessDb, is_url
from access.decision import Authorizer
from access.keys import derive, key_file_for, load_key
from access.ledger import Ledger
from access.maintenance import Rules
from access.relationships import RelationshipStore
from access.signin_throttle import SignInLimits, SignInThrottle
from access.tariff import Tariff
from access.tokens import TokenStore
from access.web.errors import error_page, wants_page
from pipeline.store import Store, change_log_position, change_oracle

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_BODY = 64 * 1024
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
_KEPT_ERROR_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")
WEB_PAGES: web.AppKey[bool] = web.AppKey("hems_web_pages", bool)


@web.middleware
async def _respond(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What every response gets: an ``ApiProblem`` (or an error under ``/api/``) as problem+json, the
    security headers (redirects and aiohttp's own error pages too), and its count and duration in the
    metrics.  One middleware rather than one per concern, since each layer costs every request a
    wrapper call."""
    state = request.app[STATE]
    t0 = time.perf_counter()
    status = 500
    try:
        page = request.app[WEB_PAGES] and wants_page(request)
        try:
            response = await handler(request)
        except ApiProblem as p:
            response = error_page(request, p) if page else p.response()
        except web.HTTPException as exc:
            status = exc.status
            if exc.status < 400 or not (page or request.path.startswith("/api/")):
                # A redirect or aiohttp's own 404/405 page: aiohttp sends the exception itself.
                _security_headers(request, state.trust_forwarded, exc)
                raise
            # Headers aiohttp's exception must carry, such as a 405's Allow (RFC 9110 15.5.6).
            kept = {name: exc.headers[name] for name in _KEPT_ERROR_HEADERS if name in exc.headers}
            problem = ApiProblem(
                exc.status, _HTTP_CODES.get(exc.status, "http_error"), exc.reason, headers=kept
            )
            response = error_page(request, problem) if page else problem.response()
        except RequestPayloadError:
            # The client's body broke while read: a Content-Encoding it does not have, bad chunking.
            problem = ApiProblem(400, "bad_body", "the body cannot be read (broken encoding or framing)")
            response = error_page(request, problem) if page else problem.response()
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            problem = ApiProblem(500, "internal_error", "the server failed; nothing was provided")
            response = error_page(request, problem) if page else problem.response()
        status = response.status
        _security_headers(request, state.trust_forwarded, response)
        return response
    finally:
        route = request.match_info.route.resource
        name = route.canonical if route is not None else "unmatched"
        state.metrics.requests[(name, request.method, status)] += 1
        state.metrics.request_seconds.observe(time.perf_counter() - t0)


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'"
)
HSTS = "max-age=31536000"  # a year; no includeSubDomains: other hosts of the domain may not have TLS
# Public and the same for everyone: the only responses an HTTP cache may keep.
_CACHEABLE_PREFIXES = ("/static/", "/api/v1/openapi.json", "/api/v1/docs")


def served_over_tls(request: web.Request, trust_forwarded: bool) -> bool:
    """TLS to us (``hems serve --tls-cert``), or to our proxy when it says so and we trust it."""
    if request.secure:
        return True
    if not trust_forwarded:
        return False
    return last_forwarded(request, "X-Forwarded-Proto").lower() == "https"


def _security_headers(request: web.Request, trust_forwarded: bool, response: web.StreamResponse) -> None:
    """Set on every response, whatever made it.  ``no-store`` keeps personal data (JSON, CSV, Arrow,
    the pages) out of browser and proxy caches; the server's own page cache is another matter."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    if not request.path.startswith(_CACHEABLE_PREFIXES):
        headers.setdefault("Cache-Control", "no-store")
    if headers.get("Content-Type", "").startswith("text/html"):
        headers.setdefault("Content-Security-Policy", CSP)
    if served_over_tls(request, trust_forwarded):
        headers.setdefault("Strict-Transport-Security", HSTS)


def make_app(
    store: Store,
    access_db_path: AccessDb,
    ledger: Ledger | None = None,
    *,
    policy: Policy | None = None,
    now: Callable[[], float] = wall_now,
    rate_per_s: float | None = 20.0,
    burst: float = 60.0,
    secure_cookies: bool = True,
    collector_health: CollectorHealth | None = None,
    pipeline_stats: PipelineStats | None = None,
    web_views: bool = True,
    page_cache_bytes: int = DEFAULT_PAGE_CACHE_BYTES,
    maintenance_rules: Rules | None = None,
    alert_every_s: float | None = None,
    trust_forwarded: bool = False,
    signin_limits: SignInLimits | None = None,
    identity_max_age_s: float = IDENTITY_MAX_AGE_S,
    identity_token_max_age_s: float = IDENTITY_TOKEN_MAX_AGE_S,
    tariff: Tariff | None = None,
    metrics_dir: Path | None = None,
    key_file: Path | None = None,
    shared_pages: Path | None = None,
    live_ahead: bool = False,
) -> web.Application:
    """Build the app.  ``now`` decides at which instant policies, tokens and sessions are judged
    (tests pass a fixed clock); ``rate_per_s=None`` turns rate limiting off (benchmarks);
    ``page_cache_bytes=0`` renders every data page afresh (see ``access.api.pagecache``);
    ``alert_every_s`` runs the alert webhooks' sender in this process (run it in one process only);
    ``trust_forwarded``: a proxy of ours in front sets ``X-Forwarded-For`` and ``X-Forwarded-Proto``.
    ``identity_max_age_s``: how recent a sign-in must be for the person's rights (SPS 2(6)[3]), and
    ``identity_token_max_age_s`` how long after its identity check a person's token counts.
    ``access_db_path``: the access database, a SQLite file or a PostgreSQL URL (``access.db``);
    ``key_file``: the server key (default ``access.keys.key_file_for``).
    The ledger is sealed here (``Ledger.seal``), so a ledger that fails its check stops the start, and
    so does a key other than the one the ledger was sealed with.
    ``tariff`` prices the homeowner's energy (``[tariff]`` of the configuration; default: its defaults);
    ``metrics_dir``: the directory the workers of one service share, so ``/metrics`` sees them all
    (``access.api.multiproc``; ``hems serve --workers N`` makes it);
    ``shared_pages``: a file through which the processes of one server hand each other pages;
    ``live_ahead``: make the closed part of live charts' next windows before they begin
    (``access.api.series.keep_next_windows_ready``; off in tests, whose clocks stand still)."""
    if policy is None:
        from seeds.loader import load_seeds

        policy = compile_seeds(load_seeds())
    path = access_db_path if is_url(access_db_path) else Path(access_db_path)
    key = key_file or key_file_for(path)
    relationships = RelationshipStore(path, policy.seeds)
    consent = ConsentStore(path, policy.seeds)
    own_ledger = ledger is None
    the_ledger = ledger if ledger is not None else Ledger(path, key_file=key)
    the_ledger.seal()
    server_key = load_key(key)
    web_auth = WebAuth(path)
    last_change = change_log_position(store)
    shared = SharedPages(shared_pages) if shared_pages is not None and last_change is not None else None
    state = AppState(
        store=store,
        authz=Authorizer(policy, relationships, consent),
        relationships=relationships,
        ledger=the_ledger,
        tokens=TokenStore(path),
        web=web_auth,
        clock=now,
        metrics=Metrics(),
        limiter=None if rate_per_s is None else RateLimiter(rate_per_s, burst),
        secure_cookies=secure_cookies,
        collector_health=collector_health,
        pipeline_stats=pipeline_stats,
        pages=PageCache(page_cache_bytes, change_oracle(store), shared, last_change),
        signin=SignIn(
            web_auth,
            SignInThrottle(path, signin_limits),
            derive(server_key, "signin-name"),
            derive(server_key, "signin-device"),
        ),
        cursors=CursorCodec(server_key),
        trust_forwarded=trust_forwarded,
        identity_max_age_s=identity_max_age_s,
        identity_token_max_age_s=identity_token_max_age_s,
        budgets=BudgetStore(path),
    )
    if metrics_dir is not None:
        state.metrics.shared = SharedMetrics(metrics_dir)

        async def _publish(app: web.Application) -> AsyncIterator[None]:
            async def loop() -> None:
                while True:
                    await asyncio.sleep(PUBLISH_EVERY_S)
                    state.metrics.publish(state.pages)

            state.metrics.publish(state.pages)  # this worker is in the next scrape from the start
            task = asyncio.create_task(loop())
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            state.metrics.publish(state.pages)  # its last counts stay in the sums

    quiet_client_errors()
    app = web.Application(middlewares=[_respond], client_max_size=MAX_BODY)
    app[STATE] = state
    app[WEB_PAGES] = web_views
    app[RULES] = maintenance_rules or Rules()
    app[TARIFF] = tariff or Tariff()
    if metrics_dir is not None:
        app.cleanup_ctx.append(_publish)
    hooks = app[WEBHOOKS] = WebhookStore(path)
    add_routes(app)
    if web_views:
        from access.web.views import add_web_routes

        add_web_routes(app)

    if live_ahead and page_cache_bytes:

        async def _ahead(app: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(keep_next_windows_ready(state))
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        app.cleanup_ctx.append(_ahead)

    if alert_every_s is not None:

        async def _alerts(app: web.Application) -> AsyncIterator[None]:
            task = asyncio.create_task(alert_loop(state, app[RULES], hooks, alert_every_s))
            yield
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        app.cleanup_ctx.append(_alerts)

    async def _close(app: web.Application) -> None:
        await state.ledger_writer.close()  # provisions already queued are written before its thread stops
        state.signin.close()
        relationships.close()
        consent.close()
        state.tokens.close()
        state.web.close()
        state.budgets.close()
        hooks.close()
        if shared is not None:
            shared.close()
        if own_ledger:
            the_ledger.close()

    app.on_cleanup.append(_close)
    return app
