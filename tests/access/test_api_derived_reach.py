"""Derived items reach outside their own instant: served only where everything they are made of is.

A negawatt point stamped at a slot's start is the mean of the readings of the next 30 minutes, and a
slot's baseline (and the demand reduction made from it) is the mean of that slot over earlier days, up to
21 days before its local day (``pipeline.negawatt``).  So a point at ``t`` carries data from outside
``t``: a decision that serves ``t`` without serving what the point is made of gives away data of a
period nobody granted.  Three ways that happened, each with the real app over a real SQLite store:

* a homeowner who moved in read baselines made of the previous occupant's days (the time over-grant of
  the access issue, through a derived item);
* the occupant who moved out read the slot of the move, half made of the new occupant's readings;
* after the previous occupant's erasure, baselines made of the erased days were still served.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from access.api.stats import group_of
from access.auth import Caller
from access.compiler import Policy
from access.privacy import Grid
from hems.erasure import complete
from tests.access.api_world import (
    DAY,
    DAY_WINDOW,
    NEGAWATT,
    NOW,
    OWN,
    SERIES,
    STATS,
    Env,
    add_dr_contractor,
    api_policy,
    move_in_carol,
    start_env,
)
from tests.access.test_api_items import negawatt_store

__all__ = ["api_policy", "negawatt_store"]
MOVED = DAY + timedelta(minutes=10)  # alice moved out of h1 ten minutes into the day, carol moved in


@pytest.fixture
async def env(tmp_path: Path, negawatt_store: Path, api_policy: Policy) -> AsyncIterator[Env]:
    """h1's eight days of readings and negawatt items (a copy: the erasure test deletes from it); carol
    moved in at ``MOVED``; dr1 runs demand response for h1."""
    store = tmp_path / "series.sqlite"
    shutil.copy(negawatt_store, store)
    async for e in start_env(tmp_path, store, api_policy):
        add_dr_contractor(e)
        move_in_carol(e, MOVED.timestamp())
        yield e


async def _electricity(env: Env, who: str, purpose: str, **query: str) -> tuple[int, dict]:
    r = await env.client.get(
        SERIES.format(hh="h1", cat="electricity"),
        params={**DAY_WINDOW, "every": "30m", "purpose": purpose, **query},
        headers=env.auth(who),
    )
    return r.status, await r.json(content_type=None)


def _times(body: dict) -> list[str]:
    return list(body["columns"]["time"])


async def test_a_new_occupant_gets_no_baseline_made_of_the_former_occupants_days(env: Env) -> None:
    # Deny: every baseline of carol's first day is made of alice's days.
    for fields in ("baseline_w", "demand_reduction_w", "baseline_w,demand_procured_w"):
        status, body = await _electricity(env, "carol", OWN, fields=fields)
        assert status == 403, (fields, body)
        assert body["reason"] == "derived_outside_served", body
    # Allow: the slots of her own time, each made of her readings only (the slot of the move is not).
    status, body = await _electricity(env, "carol", OWN, fields="demand_procured_w")
    assert status == 200, body
    times = _times(body)
    assert times[0] == "2026-06-01T00:30:00.000Z" and len(times) == 47
    assert body["served"] == [["2026-06-01T00:10:00.000Z", "2026-06-02T00:00:00.000Z"]]
    # Allow: alice's baselines of her last day (1 June in Tokyo, 15:00 UTC on), whose lookback lies
    # within her own time, with values.
    status, body = await _electricity(
        env, "alice", OWN, fields="baseline_w", start="2026-05-31T15:00:00Z", stop="2026-06-01T00:00:00Z"
    )
    assert status == 200, body
    assert len(_times(body)) == 18 and all(v is not None for v in body["columns"]["baseline_w"])


async def test_the_slot_of_the_move_goes_to_neither_occupant(env: Env) -> None:
    """The 00:00 slot is 10 minutes of alice's readings and 20 of carol's."""
    window = {"start": "2026-05-31T23:00:00Z", "stop": "2026-06-01T01:00:00Z"}
    status, body = await _electricity(env, "alice", OWN, fields="demand_procured_w", **window)
    assert status == 200, body
    assert _times(body) == ["2026-05-31T23:00:00.000Z", "2026-05-31T23:30:00.000Z"]
    # Stamps are served up to 30 minutes before she moved out: each slot's readings are all hers.
    assert body["served"] == [["2026-05-31T23:00:00.000Z", "2026-05-31T23:40:00.000Z"]]
    # The raw readings of her ten minutes are hers: a field made of nothing else is served as before.
    status, body = await _electricity(env, "alice", OWN, fields="power_w", every="5m", **window)
    assert status == 200 and _times(body)[-1] == "2026-06-01T00:05:00.000Z", body
    status, body = await _electricity(env, "carol", OWN, fields="generation_sold_w", **window)
    assert status == 200 and _times(body) == ["2026-06-01T00:30:00.000Z"], body


async def test_no_baseline_made_of_erased_days_is_served_after_the_erasure(env: Env) -> None:
    status, body = await _electricity(env, "dr1", NEGAWATT, fields="baseline_w")
    assert status == 200 and all(v is not None for v in body["columns"]["baseline_w"])  # before: served
    state = env.state
    seeds = state.authz.policy.seeds
    request = state.authz.consent.request_erasure(
        "h1", seeds, ["electricity"], at=NOW - 120, requested_by="alice"
    )
    done = await complete(
        state.authz.consent, state.relationships, seeds, env.store, request.id, "ops", at=NOW - 60
    )
    assert done.erased == ("electricity",)
    # Deny: the day's baselines are the erased days' means.
    status, body = await _electricity(env, "dr1", NEGAWATT, fields="baseline_w")
    assert status == 403 and body["reason"] == "derived_outside_served", body
    # Allow: the slots made of what was not erased (carol's readings) are still served.
    status, body = await _electricity(env, "dr1", NEGAWATT, fields="demand_procured_w")
    assert status == 200 and len(_times(body)) == 47, body


async def test_a_statistic_of_baselines_leaves_out_a_home_whose_baselines_hold_erased_days(env: Env) -> None:
    """The group of a release (``group_of``): a home is in it only where all its values are made of
    served data, so no release after an erasure is made of the erased days."""
    state = env.state
    analyst = Caller("ana", "analyst", "token", frozenset({STATS}), "ana")
    grid = Grid.snapped(DAY + timedelta(hours=1), DAY + timedelta(hours=2), timedelta(hours=1))
    # Allow, before the erasure: h1's baselines are made of days the analyst is served.
    assert "h1" in group_of(state, analyst, "electricity", STATS, ("baseline_w",), grid)
    seeds = state.authz.policy.seeds
    request = state.authz.consent.request_erasure(
        "h1", seeds, ["electricity"], at=NOW - 120, requested_by="alice"
    )
    await complete(state.authz.consent, state.relationships, seeds, env.store, request.id, "ops", at=NOW - 60)
    # Deny: the same hour's baselines are the erased days' means; its readings are not erased.
    assert "h1" not in group_of(state, analyst, "electricity", STATS, ("baseline_w",), grid)
    assert "h1" in group_of(state, analyst, "electricity", STATS, ("power_w",), grid)
