"""``GET /api/v1/stats/{category}``: statistics about many households that identify none of them.

The release itself is ``access.privacy`` (differential privacy through OpenDP, the household as the
unit); the budget it is charged to is ``access.budget``.  This handler decides who is in the group
(each household whose whole, snapped window is served for ``read_stats``), reads their data in
chunks, charges the release and answers.  Everything in the answer is either noisy or public:
the clauses and the minimum group come from the policy's lines for the caller (not from which
households happened to qualify), and nothing says how many households were left out.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl
from aiohttp import web

from access.api import models, params
from access.api.params import DEFAULT_FIELDS
from access.api.problems import ApiProblem, bad_param
from access.api.render import frame_columns, iso, json_response
from access.api.service import (
    access_request,
    check_token_purpose,
    decide,
    no_access,
    query,
    series_query,
    served_reach,
)
from access.api.state import AppState, caller_of
from access.auth import Caller
from access.budget import BudgetExhausted, budget_holder
from access.periods import span
from access.privacy import (
    DEFAULT_RELEASE_EPSILON,
    RELEASE_AGGS,
    Grid,
    ReleaseError,
    check_epsilon,
    check_fields,
    clamped_aggregates,
    mechanism,
    release,
)
from pipeline.derived import one_source
from seeds.vocabulary import STATS_RANGES, item_of, reach_of

STATS_CHUNK = 500  # households per store query when aggregating a fleet
EXHAUSTED = "privacy_budget_exhausted"


def default_fields(category: str) -> tuple[str, ...]:
    """The category's default fields that are released as statistics."""
    return tuple(f for f in DEFAULT_FIELDS[category] if f in STATS_RANGES)


def per_household(df: pl.DataFrame, fields: tuple[str, ...]) -> pl.DataFrame:
    """One row per household and window, each field from one device (``one_source``: an inverter and
    the ECHONET solar unit of one home are one yield, not two)."""
    out = df.select("time", "household").unique()
    for f in fields:
        out = out.join(
            one_source(df, f).select("time", "household", pl.col(f).cast(pl.Float64)),
            on=["time", "household"],
            how="left",
        )
    return out


def _epsilon(value: str | None) -> float:
    eps = params.epsilon(value, DEFAULT_RELEASE_EPSILON)
    try:
        check_epsilon(eps)
    except ReleaseError as exc:
        raise bad_param("epsilon", str(exc)) from None
    return eps


def group_of(
    state: AppState, caller: Caller, category: str, purpose: str, items: tuple[str, ...], grid: Grid
) -> list[str]:
    """The households whose whole window is served to the caller for ``read_stats`` (a household served
    only part of it is left out: its weight in a window must not depend on the window's edges).  Every
    household is decided on its own, with no cap: a cap would let one household's arrival push another
    out, and the release's sensitivity counts one household, not two.  A derived item (a baseline) also
    needs all it is made of served (``served_reach``): an erased day is in no later release."""
    at = state.clock()
    whole = span(grid.start.timestamp(), grid.stop.timestamp())
    reaching = reach_of(items) != (0.0, 0.0)
    out = []
    for household in state.relationships.households():
        req = access_request(state, caller, household, category, "read_stats", purpose, grid.start, grid.stop)
        d = state.authz.decide(req._replace(items=items), at=at)
        if d.allowed and d.served == whole and (not reaching or served_reach(state, req, items) == whole):
            out.append(household)
    return out


async def stats(request: web.Request) -> web.Response:
    state, caller = caller_of(request)
    q = request.query
    category = params.category(request.match_info["category"])
    purpose = params.declared_purpose(q, request.headers)
    if "household" in q:
        raise bad_param("household", "statistics describe groups of households, never one")
    fields = params.fields_asked(q.get("fields")) or default_fields(category)
    if not fields:
        raise bad_param("fields", f"no field of {category} is released as a statistic")
    try:
        check_fields(fields)
    except ReleaseError as exc:
        raise bad_param("fields", str(exc)) from None
    win = params.window(q, state.now_dt(), timedelta(hours=1))
    if win.every is None:
        raise bad_param("every", "statistics need a resolution (e.g. 1h)")
    agg = params.agg(q.get("agg"))
    if agg not in RELEASE_AGGS:
        raise bad_param("agg", f"per household and window, one of {', '.join(RELEASE_AGGS)}")
    epsilon = _epsilon(q.get("epsilon"))
    grid = Grid.snapped(win.start, win.stop, win.every)
    if grid.count > params.MAX_WINDOWS:
        raise bad_param("every", f"the range holds more than {params.MAX_WINDOWS} windows at this resolution")
    check_token_purpose(caller, purpose)
    items = tuple(dict.fromkeys(item_of(f) for f in fields))
    at = state.clock()
    granted = state.authz.statistics_grant(caller.principal, category, purpose, items, at=at)
    if granted is None:  # the policy grants this principal nothing of the kind: say why
        households = state.relationships.households()
        if households:
            req = access_request(
                state, caller, households[0], category, "read_stats", purpose, grid.start, grid.stop
            )
            decide(state, caller, req._replace(items=items))
        raise no_access()
    clause_ids, min_group = granted
    group = group_of(state, caller, category, purpose, items, grid)
    frames = []
    for i in range(0, len(group), STATS_CHUNK):
        chunk = tuple(group[i : i + STATS_CHUNK])
        sq = series_query(chunk, category, fields, grid.start, grid.stop, grid.every, agg)
        frames.append(per_household(await query(state, sq), fields))
    per_home = (
        pl.concat(frames)
        if frames
        else pl.DataFrame(
            {"time": [], "household": [], **{f: [] for f in fields}},
            schema={
                "time": pl.Datetime("us", "UTC"),
                "household": pl.Utf8,
                **{f: pl.Float64 for f in fields},
            },
        )
    )
    exact = clamped_aggregates(per_home, fields, grid)
    mech = mechanism(grid.count, fields, epsilon)
    try:
        _, budget = state.budgets.spend(
            caller.principal,
            purpose,
            category,
            fields,
            (grid.start.timestamp(), grid.stop.timestamp()),
            grid.every.total_seconds(),
            grid.count,
            mech.noise.epsilon,
            clause_ids,
            at=at,
            holder=budget_holder(state.relationships.principal(caller.principal)),
        )
    except BudgetExhausted as exc:
        state.metrics.refusals[EXHAUSTED] += 1
        raise ApiProblem(
            403, EXHAUSTED, f"{exc}; an operator may raise it (hems principals budget)", reason=EXHAUSTED
        ) from None
    out, suppressed = release(exact, mech, min_group)
    noise = mech.noise
    state.metrics.decisions["allow"] += 1
    body: models.Stats = {
        "category": category,
        "purpose": purpose,
        "clause_ids": list(clause_ids),
        "start": iso(grid.start),
        "stop": iso(grid.stop),
        "every": int(grid.every.total_seconds()),
        "agg": agg,
        "fields": list(fields),
        "min_group_size": min_group,
        "suppressed_windows": suppressed,
        "epsilon": noise.epsilon,
        "budget": {
            "holder": budget.holder,
            "total": budget.total,
            "spent": budget.spent,
            "left": budget.left,
        },
        "noise": {
            "households_scale": noise.count_scale,
            "households_error95": noise.error95(noise.count_scale),
            "sum_scale": dict(noise.sum_scales),
            "sum_error95": {f: noise.error95(b) for f, b in noise.sum_scales.items()},
        },
        "columns": frame_columns(out),
    }
    return json_response(body)
