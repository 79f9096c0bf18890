"""What every handler needs (``AppState``), and the calling principal within its rate limit.

Who a request comes from is decided in ``access.auth`` (tokens, sessions, CSRF, sign-in); the
provision ledger's group commit is ``access.ledger.LedgerWriter``.

The person's rights need an identity verified recently (SPS 2(6)[3], Sobu Gas 8): a session counts for
``identity_max_age_s`` after its password was checked (sign in again to renew it); a token counts only
if the person's identity was checked when it was issued to them (documents or a call-back, recorded
with the token by ``hems principals token create --identity-verified``), and then for
``identity_token_max_age_s``.  Why a token can count at all: the check the terms ask for is of the
person at the time of the request; an operator who checks the person and hands them a credential that
only their requests carry has checked the person behind those requests, for as long as the credential
is fresh -- the same argument a session rests on, with the operator's check in place of the password.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable
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
from access.budget import BudgetStore
from access.decision import Authorizer, Decision
from access.ledger import HouseholdHead, Ledger, LedgerWriter, ProvisionRecord, checked_entry
from access.relationships import RelationshipStore
from access.request import AccessRequest
from access.tokens import TokenStore
from pipeline.losses import Losses
from pipeline.store import Store

if TYPE_CHECKING:
    from access.api.series import ChartKind, LiveAsk, SeriesAsk

DEFAULT_PAGE_CACHE_BYTES = 64 * 2**20
DECISION_MEMO_SIZE = 8192

log = logging.getLogger(__name__)


@dataclass
class DecisionMemo:
    """The policy's decisions of the current snapshot, by request.

    ``Authorizer.snapshot`` returns one snapshot for as long as every decision made with it stands: it
    is rebuilt when a fact begins or ends, when this process changes relationships or consent, and
    when another process does (a suspension, a revocation, an erasure).  So a decision is reused only
    with the very snapshot it was made with; the next snapshot starts an empty memo.  A dashboard asks
    the same question for a minute at a time; this saves the policy's evaluation, never the request's
    authentication, its rate limit or its ledger record."""

    snapshot: object = None
    decisions: dict[AccessRequest, Decision] = field(default_factory=dict)

    def decide(self, authz: Authorizer, req: AccessRequest, at: float) -> Decision:
        snap = authz.snapshot(at)
        if snap is not self.snapshot:
            self.snapshot = snap
            self.decisions = {}
        d = self.decisions.get(req)
        if d is None:
            if len(self.decisions) >= DECISION_MEMO_SIZE:
                self.decisions.clear()
            d = self.decisions[req] = authz.decide(req, at=at)
        return d


IDENTITY_MAX_AGE_S = 15 * 60.0  # a sign-in this recent counts as a verified identity
IDENTITY_TOKEN_MAX_AGE_S = 24 * 3600.0  # a token issued this soon after an identity check counts


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
    identity_max_age_s: float = IDENTITY_MAX_AGE_S
    identity_token_max_age_s: float = IDENTITY_TOKEN_MAX_AGE_S
    collector_health: CollectorHealth | None = None
    pipeline_stats: PipelineStats | None = None
    # Parsed series requests by (target, X-Purpose, Accept): see ``access.api.series.ask_of``.
    series_asks: dict[tuple[str, str | None, str | None], SeriesAsk] = field(default_factory=dict)
    # Households whose live chart was asked lately, by kind of chart, with when and what each read
    # (``access.api.series._others``: one store query makes their pieces; and ``prepare_next_windows``).
    live_charts: dict[ChartKind, dict[str, LiveAsk]] = field(default_factory=dict)
    # The next window of each kind of live chart being made ready, and when each household's was made
    # or last checked (``access.api.series.prepare_next_windows``).
    live_ahead: dict[ChartKind, tuple[float, dict[str, float]]] = field(default_factory=dict)
    # Pieces of live charts being made by another chart's query, by page key: done when it is.
    live_batches: dict[Hashable, asyncio.Future[None]] = field(default_factory=dict)
    signin: SignIn = field(kw_only=True)
    cursors: CursorCodec = field(kw_only=True)  # signs and checks pagination cursors
    budgets: BudgetStore = field(kw_only=True)  # privacy budgets and the release ledger (statistics)
    # X-Forwarded-For/-Proto are set by our own proxy in front (hems serve --trust-forwarded).
    trust_forwarded: bool = False
    ledger_writer: LedgerWriter = field(init=False)  # group commit over ``ledger``
    decisions: DecisionMemo = field(default_factory=DecisionMemo)  # see ``DecisionMemo``
    # Queries the store failed (503 store_unavailable): the operator gets the store's own reason, the
    # first at once, then one line a minute with the count (an outage fails every request).
    store_outage: Losses = field(
        default_factory=lambda: Losses(log, what="queries answered 503", level=logging.WARNING)
    )
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
        p = self.authz.snapshot(self.clock() if at is None else at).principals.get(principal)
        return None if p is None else p.kind

    def identity_verified(self, caller: Caller) -> bool:
        """Whether the caller's identity was verified recently enough for the person's rights."""
        if caller.verified_at is None:
            return False
        limit = self.identity_max_age_s if caller.via == "session" else self.identity_token_max_age_s
        return self.clock() - caller.verified_at <= limit

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
        entry = checked_entry(
            recipient, household, categories, float(start), float(stop), purpose, clause_ids, self.clock()
        )
        record = await self.ledger_writer.record(entry)
        self.metrics.ledger_records += 1
        self.metrics.ledger_commits = self.ledger_writer.commits
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
