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
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from aiohttp import web

from access.api.metrics import CollectorHealth, Metrics, PipelineStats
from access.api.pagecache import PageCache
from access.api.problems import ApiProblem
from access.api.ratelimit import RateLimiter
from access.auth import WebAuth
from access.decision import Authorizer
from access.ledger import CheckedEntry, Ledger, ProvisionEntry, ProvisionRecord
from access.relationships import RelationshipStore
from access.tokens import TokenError, TokenStore
from pipeline.store import Store

if TYPE_CHECKING:
    from access.api.series import SeriesAsk

SESSION_COOKIE = "hems_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PAGE_CACHE_BYTES = 64 * 2**20


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
    pages: PageCache
    collector_health: CollectorHealth | None = None
    pipeline_stats: PipelineStats | None = None
    # Parsed series requests by (target, X-Purpose, Accept): see ``access.api.series.ask_of``.
    series_asks: dict[tuple[str, str | None, str | None], SeriesAsk] = field(default_factory=dict)
    # The ledger's one SQLite connection is written from one thread only, off the event loop.
    ledger_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
    )
    # Group commit (record_provision): entries waiting for the next ledger transaction, each with the
    # future its caller awaits, and the one task that writes them while any are waiting.
    _ledger_queue: list[tuple[CheckedEntry, asyncio.Future[ProvisionRecord]]] = field(
        default_factory=list, init=False, repr=False
    )
    _ledger_flusher: asyncio.Task[None] | None = field(default=None, init=False, repr=False)

    def now_dt(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def kind_of(self, principal: str, at: float | None = None) -> str | None:
        """The principal's kind at ``at`` (default: now), or None for no such principal."""
        return self.authz.snapshot(self.clock() if at is None else at).links.kinds.get(principal)

    async def record_provision(
        self,
        recipient: str,
        household: str,
        categories: tuple[str, ...],
        start: float,
        stop: float,
        purpose: str,
        clause_ids: tuple[str, ...],
    ) -> ProvisionRecord:
        """Record one provision to a third party durably; the caller sends nothing until this returns.

        Group commit: each caller queues its entry and awaits its own future; one flusher task writes
        everything queued so far in one ledger transaction (one fsync) on the ledger's thread, while later
        arrivals queue for the next.  An entry the ledger would refuse fails here, in its own caller,
        before it joins a batch.  A failed write fails every caller of that batch (none of it was
        recorded) and the next batch is tried afresh.
        """
        entry = ProvisionEntry(
            recipient, household, categories, start, stop, purpose, clause_ids, self.clock()
        ).check()
        loop = asyncio.get_running_loop()
        written: asyncio.Future[ProvisionRecord] = loop.create_future()
        self._ledger_queue.append((entry, written))
        if self._ledger_flusher is None:
            self._ledger_flusher = loop.create_task(self._flush_ledger())
        return await written

    async def _flush_ledger(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._ledger_queue:
                batch, self._ledger_queue = self._ledger_queue, []
                entries = [entry for entry, _ in batch]
                try:
                    records = await loop.run_in_executor(self.ledger_pool, self.ledger.write_checked, entries)
                except Exception as exc:
                    for _, written in batch:
                        if not written.done():  # a caller that gave up is not waiting
                            written.set_exception(exc)
                    continue
                except BaseException:
                    for _, written in batch:
                        written.cancel()
                    raise
                self.metrics.ledger_records += len(records)
                for (_, written), record in zip(batch, records, strict=True):
                    if not written.done():
                        written.set_result(record)
        finally:
            self._ledger_flusher = None
            # Entries are left only when this task was cancelled (the loop is closing): nobody waits forever.
            stranded, self._ledger_queue = self._ledger_queue, []
            for _, written in stranded:
                written.cancel()

    async def drain_ledger(self) -> None:
        """Wait until every queued provision record is written or has failed (shutdown, before the
        ledger's thread goes away)."""
        while (flusher := self._ledger_flusher) is not None:
            await asyncio.wait({flusher})

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
        kind = state.kind_of(info.principal, at=t)
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
    kind = state.kind_of(session.principal, at=t)
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


def caller_of(request: web.Request) -> tuple[AppState, Caller]:
    """The state and the authenticated caller of an API request, within the caller's rate limit."""
    state = request.app[STATE]
    caller = authenticate(request, state)
    assert caller is not None
    rate_limit(state, caller.rate_key)
    return state, caller


def rate_limit(
    state: AppState, key: str, detail: str = "too many requests for this credential; slow down"
) -> None:
    """A 429 with ``Retry-After`` when ``key``'s bucket is empty (no limiter: nothing to do)."""
    if state.limiter is None:
        return
    wait = state.limiter.take(key)
    if wait > 0:
        raise ApiProblem(
            429, "rate_limited", detail, headers={"Retry-After": RateLimiter.retry_after_header(wait)}
        )
