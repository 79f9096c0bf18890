"""Reading several categories of one household for a page: the one place that asks for the decisions,
the one place that queries, and the one place that records what was served.

Pages (the installer's maintenance view, the homeowner's energy view) and the alerts need many
categories at once; each category is decided on its own over the page's window (a refusal of one
never hides the others), each query reads only within the periods its category is served (one store
query per period, as the series endpoint does), and what was served to a third party is recorded as
provisions listing the categories, one per purpose and period actually served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from access.api.problems import ApiProblem
from access.api.service import (
    access_request,
    decide,
    empty_series,
    query_served,
    record_periods,
    series_queries,
)
from access.api.state import AppState, Caller
from access.decision import Decision
from access.periods import Periods, intersect, span


@dataclass
class Decided:
    """Per category: the decision (with its served periods) or the refusal the caller would get for it."""

    allowed: dict[str, Decision] = field(default_factory=dict)
    refused: dict[str, ApiProblem] = field(default_factory=dict)
    purposes: dict[str, str] = field(default_factory=dict)  # category -> the purpose that allowed it

    @property
    def clause_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for d in self.allowed.values() for c in d.clause_ids))

    @property
    def third_party(self) -> bool:
        return any(d.third_party for d in self.allowed.values())


def decide_categories(
    state: AppState,
    caller: Caller,
    household: str,
    categories: Iterable[str],
    purposes: str | Sequence[str],
    start: datetime,
    stop: datetime,
) -> Decided:
    """The decisions for ``categories`` of ``household`` (action ``read``) over ``[start, stop)``.
    Given several purposes, each category is allowed under the first that allows it (a person reading
    their own home under the disclosure right of each company whose terms cover a part of it: the PV
    under one, the car under another); a category none allows carries the refusal of the first."""
    wanted = (purposes,) if isinstance(purposes, str) else tuple(purposes)
    out = Decided()
    for category in categories:
        first: ApiProblem | None = None
        for purpose in wanted:
            try:
                req = access_request(state, caller, household, category, "read", purpose, start, stop)
                out.allowed[category] = decide(state, caller, req)
            except ApiProblem as p:
                if p.status != 403:
                    raise
                first = first or p
                continue
            out.purposes[category] = purpose
            break
        else:
            assert first is not None
            out.refused[category] = first
    return out


@dataclass(frozen=True)
class Ask:
    """One series query of a page: what and how (``every`` None: raw points)."""

    category: str
    fields: tuple[str, ...]
    start: datetime
    stop: datetime
    every: timedelta | None = None
    agg: str = "mean"


async def read_all(
    state: AppState, household: str, asks: Sequence[Ask], decided: Decided
) -> list[pl.DataFrame]:
    """Run the queries concurrently, each only within its category's served periods; only ever called
    with categories ``decided`` allowed."""

    async def one(a: Ask) -> pl.DataFrame:
        periods = intersect(decided.allowed[a.category].served, span(a.start.timestamp(), a.stop.timestamp()))
        queries = series_queries(household, a.category, a.fields, periods, a.every, a.agg)
        if not queries:
            return empty_series(a.category, a.fields, a.every, a.agg)
        return await query_served(state, queries)

    return list(await asyncio.gather(*(one(a) for a in asks)))


async def read_pieces(state: AppState, household: str, ask: Ask, decided: Decided) -> pl.DataFrame:
    """``ask``'s rows read one served period at a time, with a ``piece`` column numbering the period each
    row came from: for figures made from consecutive readings (a counter's rise), which must never pair
    a reading before a refused gap with one after it, since their difference is what the gap held."""
    periods = intersect(
        decided.allowed[ask.category].served, span(ask.start.timestamp(), ask.stop.timestamp())
    )
    queries = series_queries(household, ask.category, ask.fields, periods, ask.every, ask.agg)
    if not queries:
        return empty_series(ask.category, ask.fields, ask.every, ask.agg).with_columns(
            pl.lit(0, dtype=pl.Int32).alias("piece")
        )
    frames = [
        (await query_served(state, [q])).with_columns(pl.lit(i, dtype=pl.Int32).alias("piece"))
        for i, q in enumerate(queries)
    ]
    return pl.concat(frames, how="vertical_relaxed")


async def record_served(
    state: AppState,
    caller: Caller,
    household: str,
    decided: Decided,
    categories: Iterable[str],
    start: datetime,
    stop: datetime,
) -> None:
    """The ledger records of what a page served a third party (nothing for the person themselves): one
    per purpose and period served, listing the categories served under it (usually one record)."""
    window = span(start.timestamp(), stop.timestamp())
    groups: dict[tuple[str, Periods], list[str]] = {}
    for c in categories:
        d = decided.allowed.get(c)
        if d is not None and d.third_party:
            periods = intersect(d.served, window)
            if periods:
                groups.setdefault((decided.purposes[c], periods), []).append(c)
    for (purpose, periods), served in groups.items():
        clauses = tuple(dict.fromkeys(cl for cat in served for cl in decided.allowed[cat].clause_ids))
        await record_periods(state, caller, household, tuple(served), purpose, periods, clauses)
