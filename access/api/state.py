"""What every handler needs (``AppState``), and the calling principal within its rate limit.

Who a request comes from is decided in ``access.auth`` (tokens, sessions, CSRF, sign-in); the
provision ledger's group commit is ``access.ledger.LedgerWriter``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web

from access.api.cursor import CursorCodec
from access.api.metrics import CollectorHealth, Metrics, PipelineStats
from access.api.pagecache import PageCache
from access.api.problems import ApiProblem
from access.api.ratelimit import RateLimiter
from access.auth import INVALID_TOKEN_BURST, INVALID_TOKEN_RATE_PER_S, Caller, SignIn, WebAuth, authenticate
from access.decision import Authorizer
from access.ledger import HouseholdHead, Ledger, LedgerWriter, ProvisionEntry, ProvisionRecord
from access.relationships import RelationshipStore
from access.tokens import TokenStore
from pipeline.store import Store

if TYPE_CHECKING:
    from access.api.series import SeriesAsk

DEFAULT_PAGE_CACHE_BYTES = 64 * 2**20


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
    signin: SignIn = field(kw_only=True)
    cursors: CursorCodec = field(kw_only=True)  # signs and checks pagination cursors
    # X-Forwarded-For/-Proto are set by our own proxy in front (hems serve --trust-forwarded).
    trust_forwarded: bool = False
    ledger_writer: LedgerWriter = field(init=False)  # group commit over ``ledger``
    # Requests whose token fails, per client address (``access.auth``); on even without ``limiter``.
    invalid_tokens: RateLimiter = field(
        default_factory=lambda: RateLimiter(INVALID_TOKEN_RATE_PER_S, INVALID_TOKEN_BURST)
    )

    def __post_init__(self) -> None:
        self.ledger_writer = LedgerWriter(self.ledger)

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
        """Record one provision to a third party durably (group commit: ``LedgerWriter``); the caller
        sends nothing until this returns.  An entry the ledger would refuse fails here, in its caller."""
        entry = ProvisionEntry(
            recipient, household, categories, start, stop, purpose, clause_ids, self.clock()
        ).check()
        record = await self.ledger_writer.record(entry)
        self.metrics.ledger_records += 1
        return record

    async def ledger_for(self, household: str) -> HouseholdHead:
        """The household's provision records and the head of their chain (``access.ledger_anchor``)."""
        return await self.ledger_writer.household_head(household)


STATE: web.AppKey[AppState] = web.AppKey("hems_state", AppState)


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
