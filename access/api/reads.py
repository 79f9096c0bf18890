"""Reading several categories of one household for a page: the one place that asks for the decisions,
the one place that queries, and the one place that records what was served.

Pages (the installer's maintenance view, the homeowner's energy view) and the alerts need many
categories at once; each category is decided on its own (a refusal of one never hides the others),
and what was served to a third party is recorded once, as one provision listing the categories.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import polars as pl

from access.api.problems import ApiProblem
from access.api.service import Allowed, decide, query, series_query
from access.api.state import AppState, Caller


@dataclass
class Decided:
    """Per category: allowed (with its clauses) or the refusal the caller would get for it alone."""

    allowed: dict[str, Allowed] = field(default_factory=dict)
    refused: dict[str, ApiProblem] = field(default_factory=dict)

    @property
    def clause_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c for a in self.allowed.values() for c in a.decision.clause_ids))

    @property
    def third_party(self) -> bool:
        return any(a.third_party for a in self.allowed.values())


def decide_categories(
    state: AppState, caller: Caller, household: str, categories: Iterable[str], purpose: str
) -> Decided:
    """The decisions for ``categories`` of ``household`` (action ``read``)."""
    out = Decided()
    for category in categories:
        try:
            out.allowed[category] = decide(state, caller, household, category, "read", purpose)
        except ApiProblem as p:
            if p.status != 403:
                raise
            out.refused[category] = p
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


async def read_all(state: AppState, household: str, asks: Sequence[Ask]) -> list[pl.DataFrame]:
    """Run the queries concurrently; only ever called with categories already decided."""
    queries = [
        series_query((household,), a.category, a.fields, a.start, a.stop, a.every, a.agg) for a in asks
    ]
    return list(await asyncio.gather(*(query(state, q) for q in queries)))


async def record_served(
    state: AppState,
    caller: Caller,
    household: str,
    decided: Decided,
    categories: Iterable[str],
    start: datetime,
    stop: datetime,
    purpose: str,
) -> None:
    """One ledger record for what a page served a third party (nothing for the person themselves)."""
    served = tuple(c for c in categories if c in decided.allowed)
    if not served or not any(decided.allowed[c].third_party for c in served):
        return
    clauses = tuple(dict.fromkeys(c for cat in served for c in decided.allowed[cat].decision.clause_ids))
    await state.record_provision(
        caller.principal, household, served, start.timestamp(), stop.timestamp(), purpose, clauses
    )
