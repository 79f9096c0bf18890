"""Decide, refuse without leaking, query what is served, record: the path every data response takes.

The API's handlers and the web views both come through here, so a chart on a page and a partner's
script get the same decision, the same clipping to the served periods and the same ledger record.

* :func:`decide` asks the decision layer for the part of the window that may be served.  Nothing
  served is a 403 problem that names the cause and the clause; a partial answer goes ahead.
* :func:`series_queries` turns the served periods into store queries, one per period, so no window
  of an aggregate and no counter difference ever spans data outside them.
* :func:`record` writes one ledger record per period actually served (not the window asked), for
  provisions to a third party (by the basis the grant used), before anything is sent.

Refusals are worded from the decision layer's own explanation, with one exception that keeps
households private: when the caller holds nothing with the household and the refusal would depend on
it (no grant, or the household's suspension), the answer is one fixed refusal, identical for a
household that does not exist and for someone else's.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import polars as pl

from access.api.params import DEFAULT_FIELDS, MAX_FIELDS
from access.api.problems import ApiProblem
from access.api.render import iso
from access.api.state import AppState
from access.auth import Caller
from access.decision import ITEMS, NO_GRANT, SUSPENDED, Decision
from access.ledger import ProvisionRecord
from access.periods import Periods, contains, intersect, normalize, show, shrink, span
from access.request import AccessRequest
from access.world import APPROVER_ROLES, Suspension
from pipeline.frames import empty_result
from pipeline.query import QueryError, SeriesQuery
from pipeline.store import StoreUnavailable
from seeds.vocabulary import item_of, reach_of

log = logging.getLogger(__name__)

NO_ACCESS_DETAIL = (
    "no relationship, approval or clause gives you this household's data for this purpose "
    "(unknown households are answered the same way)"
)


def no_access() -> ApiProblem:
    """The one refusal for a household the caller holds nothing with (or that does not exist)."""
    return ApiProblem(403, "refused", NO_ACCESS_DETAIL, reason="no_grant", clause_ids=())


def periods_json(periods: Periods) -> list[list[str | None]]:
    """``[[start, stop], ...]`` as ISO 8601 UTC; ``None`` for an open end."""
    return [
        [None if a == float("-inf") else iso(a), None if b == float("inf") else iso(b)] for a, b in periods
    ]


@functools.lru_cache(maxsize=4096)
def header_periods(periods: Periods) -> str:
    """``start/stop`` pairs (ISO 8601 intervals), comma-separated: the served periods for CSV and Arrow
    clients (``X-Served-Periods``).  Remembered: a dashboard's window repeats for a minute at a time,
    and formatting the instants costs more than the rest of a cached page's headers."""
    return ",".join(f"{a or '..'}/{b or '..'}" for a, b in periods_json(periods))


def tied(state: AppState, principal: str, household: str) -> bool:
    return state.authz.tied(principal, household, state.clock())


def households_of(state: AppState, principal: str) -> list[tuple[str, frozenset[str]]]:
    """(household, roles) the principal is tied to now -- by a link, an approval (through its approver's
    links), a designation or a mandate -- and a homeowner's former homes too (their period stays theirs)."""
    snap = state.authz.snapshot(state.clock())
    t = snap.at
    facts = snap.facts
    out: dict[str, set[str]] = {}
    for link in facts.links:
        if link.principal == principal and (link.role == "homeowner" or link.since <= t < link.until):
            out.setdefault(link.household, set()).add(link.role)
    for d in facts.designations:
        if d.principal == principal and d.since <= t < d.until:
            out.setdefault(d.household, set()).add("designated_body")
    for a in facts.approvals:
        if a.approved != principal or not a.valid_from <= t < a.until:
            continue
        for link in facts.links:
            if link.principal == a.approver and link.role in APPROVER_ROLES and link.since <= t < link.until:
                out.setdefault(link.household, set()).add(f"approval:{a.id}")
    for m in facts.mandates:
        if m.agent == principal and m.verified_at is not None and m.since <= t < m.until:
            for link in facts.links:
                if link.principal == m.person and link.role == "homeowner":
                    out.setdefault(link.household, set()).add(f"mandate:{m.id}")
    return sorted((h, frozenset(r)) for h, r in out.items())


def homeowner_periods(state: AppState, principal: str, household: str) -> Periods:
    """When ``principal`` was (or is) the homeowner of ``household``."""
    snap = state.authz.snapshot(state.clock())
    return normalize(
        p
        for link in snap.links_of(household)
        if link.principal == principal and link.role == "homeowner"
        for p in link.period
    )


def own_suspensions(state: AppState, principal: str, household: str) -> list[Suspension]:
    """The household's suspensions ``principal`` asked for: those requested while they were its
    homeowner.  A suspension is its requester's (SPS 2(6)): another occupant neither sees whom they
    suspended nor lifts it."""
    mine = homeowner_periods(state, principal, household)
    return [s for s in state.authz.consent.suspensions(household) if contains(mine, s.requested_at)]


def person_view(record: ProvisionRecord, periods: Periods) -> ProvisionRecord | None:
    """A provision record as a person whose own ``periods`` they are may see it: shown within them, or
    None when it served nothing of their time (a new occupant does not learn who received the previous
    occupant's data)."""
    seen = intersect(span(record.period_start, record.period_end), periods)
    if seen:
        return record._replace(period_start=seen[0][0], period_end=seen[-1][1])
    if record.period_start == record.period_end and contains(periods, record.period_start):
        return record
    return None


async def ledger_for_person(state: AppState, periods: Periods, household: str) -> list[ProvisionRecord]:
    """The household's provision records the person of ``periods`` may see (``person_view``)."""
    shown = (person_view(r, periods) for r in (await state.ledger_for(household)).records)
    return [r for r in shown if r is not None]


def check_token_purpose(caller: Caller, purpose: str) -> None:
    if caller.purposes is not None and purpose not in caller.purposes:
        raise ApiProblem(
            403,
            "purpose_not_in_token",
            "this token was not issued for that purpose",
            reason="purpose_not_in_token",
            clause_ids=(),
        )


def access_request(
    state: AppState,
    caller: Caller,
    household: str,
    category: str,
    action: str,
    purpose: str,
    start: datetime | float,
    stop: datetime | float,
) -> AccessRequest:
    """The request as the decision layer takes it, with the caller's identity check."""
    a = start.timestamp() if isinstance(start, datetime) else start
    b = stop.timestamp() if isinstance(stop, datetime) else stop
    return AccessRequest(
        caller.principal,
        household,
        category,
        action,
        purpose,
        (a, b),
        identity_verified=state.identity_verified(caller),
    )


def decide(state: AppState, caller: Caller, req: AccessRequest) -> Decision:
    """The decision if anything of the window is served, else an ``ApiProblem`` 403 that names the
    clause or the missing grant and the refused period."""
    check_token_purpose(caller, req.purpose)
    t0 = time.perf_counter()
    d = state.decisions.decide(state.authz, req, state.clock())
    state.metrics.decision_seconds.observe(time.perf_counter() - t0)
    state.metrics.decisions["allow" if d.allowed else "deny"] += 1
    if d.allowed:
        return d
    if d.reason in (NO_GRANT, SUSPENDED) and not tied(state, caller.principal, req.household):
        state.metrics.refusals[NO_GRANT] += 1
        raise no_access()
    state.metrics.refusals[d.reason] += 1
    detail = state.authz.explain(req, at=state.clock())
    raise ApiProblem(
        403,
        "refused",
        detail,
        reason=d.reason,
        clause_ids=d.clause_ids,
        extra={"refused": periods_json(d.refused)},
    )


DERIVED_OUTSIDE = "derived_outside_served"


def served_reach(state: AppState, req: AccessRequest, fields: Sequence[str]) -> Periods:
    """The instants of ``req``'s window at which a point of ``fields`` may be served: where everything
    the point is made of (``reach_of``: a negawatt slot's next 30 minutes, a baseline's earlier days) is
    served to the same caller under the same request.  Otherwise a decision serving an instant would give
    away the readings of a period it does not serve: the previous occupant's days in a new occupant's
    baseline, the new occupant's minutes in the slot of a move, an erased day in the days after it."""
    before, after = reach_of(fields)
    a, b = req.window
    items = tuple(dict.fromkeys(item_of(f) for f in fields))
    wide = state.decisions.decide(
        state.authz, req._replace(window=(a - before, b + after), items=items), state.clock()
    )
    return intersect(shrink(wide.served, before, after), span(a, b))


def within_reach(state: AppState, req: AccessRequest, d: Decision, fields: Sequence[str]) -> Decision:
    """``d`` narrowed to ``served_reach``; a 403 when that leaves nothing of the window."""
    if reach_of(fields) == (0.0, 0.0):
        return d
    served = intersect(d.served, served_reach(state, req, fields))
    if served:
        return d._replace(served=served)
    before, after = reach_of(fields)
    state.metrics.refusals[DERIVED_OUTSIDE] += 1
    raise ApiProblem(
        403,
        "refused",
        f"{', '.join(fields)} at an instant are made of the readings from {timedelta(seconds=before)} "
        f"before it to {timedelta(seconds=after)} after it, and for no instant of "
        f"{show(span(*req.window))} are all of those served to you (served: {show(d.served)})",
        reason=DERIVED_OUTSIDE,
        clause_ids=d.clause_ids,
        extra={"refused": periods_json(span(*req.window))},
    )


def decide_fields(
    state: AppState, caller: Caller, req: AccessRequest, fields: tuple[str, ...] | None
) -> tuple[Decision, tuple[str, ...]]:
    """The decision for the fields asked (each is an item; a ``raw_*`` twin is its counter's), and the
    fields to serve.  Without fields: the category's default fields where the whole category is granted;
    where only items of it are (a demand-response contractor's negawatt items), those items: a request
    without fields gets the granted ones only.  A field not granted is a 403 naming the clause.  Fields
    made of more than their own instant are served only where all they are made of is (``within_reach``)."""
    d, served = _decide_fields(state, caller, req, fields)
    return within_reach(state, req, d, served), served


def _decide_fields(
    state: AppState, caller: Caller, req: AccessRequest, fields: tuple[str, ...] | None
) -> tuple[Decision, tuple[str, ...]]:
    if fields is not None:
        items = tuple(dict.fromkeys(item_of(f) for f in fields))
        return decide(state, caller, req._replace(items=items)), fields
    try:
        return decide(state, caller, req), DEFAULT_FIELDS[req.category]
    except ApiProblem as p:
        if p.reason != ITEMS:
            raise
        granted = tuple(state.authz.items_served(req, at=state.clock()))[:MAX_FIELDS]
        if not granted:
            raise
    return decide(state, caller, req._replace(items=granted)), granted


def explain_text(
    state: AppState, caller: Caller, req: AccessRequest
) -> tuple[Decision | None, str, str, tuple[str, ...]]:
    """(decision if allowed, reason code, words, clause ids) with the same privacy rule as ``decide``."""
    try:
        d = decide(state, caller, req)
    except ApiProblem as p:
        if p.status != 403:
            raise
        return None, p.reason or p.code, p.detail, p.clause_ids or ()
    return d, "allowed", state.authz.explain(req, at=state.clock()), d.clause_ids


async def query(state: AppState, q: SeriesQuery) -> pl.DataFrame:
    t0 = time.perf_counter()
    try:
        df = await state.store.query(q)
    except StoreUnavailable as exc:
        # The caller is told only "retry later"; the operator gets the reason (``AppState.store_outage``).
        state.store_outage.add("store_unavailable", 1, f"a query of {q.category}: {exc}")
        raise ApiProblem(503, "store_unavailable", "the data store is unavailable; retry later") from None
    state.metrics.store_seconds.observe(time.perf_counter() - t0)
    return df


def series_query(
    households: tuple[str, ...],
    category: str,
    fields: tuple[str, ...],
    start: datetime,
    stop: datetime,
    every: timedelta | None,
    agg: str,
) -> SeriesQuery:
    try:
        return SeriesQuery(households, category, fields, start, stop, every, agg)  # type: ignore[arg-type]
    except QueryError as exc:
        raise ApiProblem(400, "bad_parameter", exc.message, field=exc.field) from None


def utc(t: float) -> datetime:
    """Epoch seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(t, UTC)


def served_within(d: Decision, start: datetime, stop: datetime) -> Periods:
    """The served periods clipped to ``[start, stop)``."""
    return intersect(d.served, span(start.timestamp(), stop.timestamp()))


def series_queries(
    household: str,
    category: str,
    fields: tuple[str, ...],
    periods: Periods,
    every: timedelta | None,
    agg: str,
) -> list[SeriesQuery]:
    """One store query per served period (finite: clipped to a window first)."""
    return [series_query((household,), category, fields, utc(a), utc(b), every, agg) for a, b in periods]


def empty_series(category: str, fields: tuple[str, ...], every: timedelta | None, agg: str) -> pl.DataFrame:
    """The frame a query over no period answers: every column, no row."""
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    return empty_result(
        series_query(("none",), category, fields, epoch, epoch + timedelta(days=1), every, agg)
    )


async def query_served(state: AppState, queries: Sequence[SeriesQuery]) -> pl.DataFrame:
    """The rows of every served period, as one frame.  A window of an aggregate that straddles a refused
    gap shorter than the resolution appears once per period, each aggregating only served data."""
    frames = [await query(state, q) for q in queries]
    non_empty = [f for f in frames if f.height]
    if len(non_empty) > 1:
        return pl.concat(non_empty, how="vertical_relaxed")
    return non_empty[0] if non_empty else frames[0]


async def record(
    state: AppState,
    caller: Caller,
    d: Decision,
    household: str,
    category: str,
    purpose: str,
    periods: Periods,
) -> None:
    """The ledger records of a provision to a third party: one per period actually served, naming the
    items provided when the grant is of items (``<category>.<item>``), else the category; awaited before
    the response is sent."""
    if d.third_party:
        what = (category,) if d.items is None else tuple(f"{category}.{i}" for i in d.items)
        await record_periods(state, caller, household, what, purpose, periods, d.clause_ids)


async def record_periods(
    state: AppState,
    caller: Caller,
    household: str,
    categories: tuple[str, ...],
    purpose: str,
    periods: Periods,
    clause_ids: tuple[str, ...],
) -> None:
    """The one writer of provision records, for the API and the pages alike: one per period served."""
    for a, b in periods:
        await state.record_provision(caller.principal, household, categories, a, b, purpose, clause_ids)
