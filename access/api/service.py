"""Decide, refuse without leaking, query, record: the path every data response takes.

Refusals are worded from the decision layer's own explanation, with one exception that keeps
households private: when the caller holds no relationship with the household and the refusal would
depend on that household (no grant, or the household's suspension), the answer is one fixed
refusal, identical for a household that does not exist and for someone else's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from access.api.problems import ApiProblem
from access.api.state import AppState
from access.auth import Caller
from access.decision import Decision
from access.relationships import INTERNAL_KINDS
from pipeline.derived import one_source
from pipeline.query import QueryError, SeriesQuery
from pipeline.store import StoreUnavailable

NO_ACCESS_DETAIL = (
    "no relationship, approval or clause gives you this household's data for this purpose "
    "(unknown households are answered the same way)"
)


def no_access() -> ApiProblem:
    """The one refusal for a household the caller holds nothing with (or that does not exist)."""
    return ApiProblem(403, "refused", NO_ACCESS_DETAIL, reason="no_grant", clause_ids=())


@dataclass(frozen=True)
class Allowed:
    decision: Decision
    third_party: bool


def tied(state: AppState, principal: str, household: str) -> bool:
    snap = state.authz.snapshot(state.clock())
    return (principal, household) in snap.links.household_roles


def households_of(state: AppState, principal: str) -> list[tuple[str, frozenset[str]]]:
    """(household, roles) the principal holds a relationship with, now."""
    snap = state.authz.snapshot(state.clock())
    return sorted((h, roles) for (p, h), roles in snap.links.household_roles.items() if p == principal)


def check_token_purpose(caller: Caller, purpose: str) -> None:
    if caller.purposes is not None and purpose not in caller.purposes:
        raise ApiProblem(
            403,
            "purpose_not_in_token",
            "this token was not issued for that purpose",
            reason="purpose_not_in_token",
            clause_ids=(),
        )


def _refusal_code(state: AppState, d: Decision, caller: Caller, purpose: str) -> str:
    snap = state.authz.snapshot(state.clock())
    if not snap.index.registered(caller.principal, purpose):
        return "purpose_not_registered"
    suspension = state.authz.policy.suspension_clause
    if suspension is not None and suspension in d.clause_ids:
        return "suspended"
    if d.clause_ids:
        clauses = {c.id: c for c in state.authz.policy.seeds.clauses}
        for cid in d.clause_ids:
            c = clauses.get(cid)
            if c is not None and (c.kind == "statistics" or c.conditions.statistics_only):
                return "statistics_only"
        return "denied_by_clause"
    return "no_grant"


def decide(
    state: AppState, caller: Caller, household: str, category: str, action: str, purpose: str
) -> Allowed:
    """Allowed, or an ``ApiProblem`` 403 that names the clause or the missing grant."""
    check_token_purpose(caller, purpose)
    t0 = time.perf_counter()
    d = state.authz.decide(caller.principal, household, category, action, purpose, at=state.clock())
    state.metrics.decision_seconds.observe(time.perf_counter() - t0)
    state.metrics.decisions["allow" if d.allowed else "deny"] += 1
    if d.allowed:
        return Allowed(d, caller.kind not in INTERNAL_KINDS)
    code = _refusal_code(state, d, caller, purpose)
    if code in ("no_grant", "suspended") and not tied(state, caller.principal, household):
        state.metrics.refusals["no_grant"] += 1
        raise no_access()
    state.metrics.refusals[code] += 1
    detail = state.authz.explain(caller.principal, household, category, action, purpose, at=state.clock())
    raise ApiProblem(403, "refused", detail, reason=code, clause_ids=d.clause_ids)


def explain_text(
    state: AppState, caller: Caller, household: str, category: str, action: str, purpose: str
) -> tuple[bool, str, str, tuple[str, ...]]:
    """(allowed, reason code, words, clause ids) with the same privacy rule as ``decide``."""
    try:
        a = decide(state, caller, household, category, action, purpose)
    except ApiProblem as p:
        if p.status != 403:
            raise
        return False, p.reason or p.code, p.detail, p.clause_ids or ()
    words = state.authz.explain(caller.principal, household, category, action, purpose, at=state.clock())
    return True, "allowed", words, a.decision.clause_ids


async def query(state: AppState, q: SeriesQuery) -> pl.DataFrame:
    t0 = time.perf_counter()
    try:
        df = await state.store.query(q)
    except StoreUnavailable:
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


async def record(
    state: AppState,
    caller: Caller,
    allowed: Allowed,
    household: str,
    category: str,
    purpose: str,
    q: SeriesQuery,
) -> None:
    """The ledger record of a provision to a third party; awaited before the response is sent."""
    if allowed.third_party:
        await state.record_provision(
            caller.principal,
            household,
            (category,),
            q.start.timestamp(),
            q.stop.timestamp(),
            purpose,
            allowed.decision.clause_ids,
        )


def fleet_statistics(df: pl.DataFrame, fields: tuple[str, ...], min_group: int) -> tuple[pl.DataFrame, int]:
    """Aggregates over households per window; windows with fewer than ``min_group`` households dropped.

    Each household counts once per window with one value per field, taken from one of its devices
    (``pipeline.derived.one_source``: an inverter and the ECHONET solar unit of one home are one
    yield, not two).  Returns the frame (no household column) and how many windows were suppressed."""
    per_home = df.select("time", "household").unique()
    for f in fields:
        per_home = per_home.join(
            one_source(df, f).select("time", "household", pl.col(f).cast(pl.Float64)),
            on=["time", "household"],
            how="left",
        )
    stats = per_home.group_by("time").agg(
        pl.col("household").n_unique().alias("households"),
        *[
            expr
            for f in fields
            for expr in (
                pl.col(f).mean().alias(f"{f}_mean"),
                pl.col(f).min().alias(f"{f}_min"),
                pl.col(f).max().alias(f"{f}_max"),
            )
        ],
    )
    kept = stats.filter(pl.col("households") >= min_group).sort("time")
    return kept, stats.height - kept.height
