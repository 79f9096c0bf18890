"""What every handler needs, and who is calling.

A caller is a principal reached through a token (bound to the purposes it registered) or through a
web session (any purpose the principal registered; the policy still checks).  Session requests that
change state must carry the session's CSRF token and, when the browser sends one, a same-origin
``Origin``: a page on another site can make the browser send the cookie, but can read neither.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from aiohttp import web

from access.api.metrics import CollectorHealth, Metrics, PipelineStats
from access.api.problems import ApiProblem
from access.api.ratelimit import RateLimiter
from access.auth import WebAuth
from access.decision import Authorizer
from access.ledger import Ledger, ProvisionRecord
from access.relationships import RelationshipStore
from access.tokens import TokenError, TokenStore
from pipeline.store import Store

SESSION_COOKIE = "hems_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Caller:
    principal: str
    kind: str
    via: str  # "token" or "session"
    purposes: frozenset[str] | None  # a token's purposes; None: whatever the principal registered
    rate_key: str
    csrf: str | None = None


@dataclass
class AppState:
    store: Store
    authz: Authorizer
    relationships: RelationshipStore
    ledger: Ledger
    tokens: TokenStore
    web: WebAuth
    clock: Callable[[], float]
    metrics: Metrics
    limiter: RateLimiter | None
    secure_cookies: bool
    collector_health: CollectorHealth | None = None
    pipeline_stats: PipelineStats | None = None
    # The ledger's one SQLite connection is written from one thread only, off the event loop.
    ledger_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
    )

    def now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def kind_of(self, principal: str) -> str | None:
        kind = self.authz.snapshot(self.clock()).links.kinds.get(principal)
        return kind

    async def record_provision(
        self,
        recipient: str,
        household: str,
        categories: tuple[str, ...],
        start: float,
        stop: float,
        purpose: str,
        clause_ids: tuple[str, ...],
    ) -> None:
        loop = asyncio.get_running_loop()
        at = self.clock()
        await loop.run_in_executor(
            self.ledger_pool,
            lambda: self.ledger.record(
                recipient, household, categories, start, stop, purpose, clause_ids, at
            ),
        )
        self.metrics.ledger_records += 1

    async def ledger_for(self, household: str) -> list[ProvisionRecord]:
        """Read on the ledger's own thread: its one connection is never used from two threads at once."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.ledger_pool, self.ledger.for_household, household)


STATE: web.AppKey[AppState] = web.AppKey("hems_state", AppState)


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # non-browser clients and same-origin GET navigations send none
    if origin == "null":
        return False
    parts = urlsplit(origin)
    return parts.netloc == request.host and parts.scheme in ("http", "https")


def authenticate(
    request: web.Request, state: AppState, *, required: bool = True, form_csrf: bool = False
) -> Caller | None:
    """The caller, or a 401 problem; for session callers also the CSRF check on unsafe methods
    (from the ``X-CSRF-Token`` header, unless ``form_csrf``: then the form handler checks its field)."""
    t = state.clock()
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, credential = header.partition(" ")
        if scheme.lower() != "bearer" or not credential:
            raise ApiProblem(401, "invalid_token", "use 'Authorization: Bearer <token>'")
        try:
            info = state.tokens.authenticate(credential.strip(), at=t)
        except TokenError as exc:
            raise ApiProblem(
                401, exc.reason, str(exc), headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
            ) from None
        kind = state.kind_of(info.principal)
        if kind is None:
            raise ApiProblem(401, "invalid_token", "the token is not valid")
        return Caller(info.principal, kind, "token", info.purposes, f"token:{info.id}")
    sid = request.cookies.get(SESSION_COOKIE)
    session = state.web.session(sid, at=t) if sid else None
    if session is None:
        if not required:
            return None
        raise ApiProblem(
            401, "not_authenticated", "sign in, or send an API token", headers={"WWW-Authenticate": "Bearer"}
        )
    kind = state.kind_of(session.principal)
    if kind is None:
        raise ApiProblem(401, "not_authenticated", "sign in again")
    if request.method not in SAFE_METHODS and not form_csrf:
        check_csrf(request, session.csrf, None)
    return Caller(session.principal, kind, "session", None, f"session:{session.principal}", session.csrf)


def check_csrf(request: web.Request, expected: str, form_value: str | None) -> None:
    if not _same_origin(request):
        raise ApiProblem(403, "csrf_refused", "cross-site request refused (Origin does not match)")
    given = form_value if form_value is not None else request.headers.get(CSRF_HEADER, "")
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiProblem(403, "csrf_refused", "missing or wrong CSRF token")


def rate_limit(state: AppState, caller: Caller) -> None:
    if state.limiter is None:
        return
    wait = state.limiter.take(caller.rate_key)
    if wait > 0:
        raise ApiProblem(
            429,
            "rate_limited",
            "too many requests for this credential; slow down",
            headers={"Retry-After": RateLimiter.retry_after_header(wait)},
        )
