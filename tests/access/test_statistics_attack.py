"""The differencing attack of issue 14, scripted against ``/api/v1/stats`` on a 12-home world.

ENEX's analyst may read statistics of ENEX's customers; of the API world's homes, ``h1`` and ``h2`` left
ENEX before the day asked, so the group is the twelve ``s00``..``s11``.  On main the attack worked
exactly: a start moved by 250 ms changed the windows while the group stayed at 12, ``min``/``max`` were
single homes' values, and the same past hour asked before and after one home left the group (its
contract ended, or it suspended use) gave ``12 * mean - 11 * mean'``: that home's hourly mean power,
i.e. its meter's energy for the hour.  Now:

* the 250 ms shift asks for the same snapped window: two independent noisy releases of one statistic;
* no minimum or maximum is released;
* every release is differentially private (``access.privacy``): the two groups differ by one home, and
  the attacker's estimate of that home's hourly energy carries the difference of two Laplace draws.
  At the default release (epsilon 0.5, one field, one window) each sum's noise has scale 48 kW, so the
  estimate's 95 % interval is +-197 kWh for an hour whose true value is within +-12 kWh (the clamp);
  what the whole default budget (3.0) can teach about one home is bounded by a likelihood ratio of e^3.
* the budget runs out, and the API says so.

The SPS staff variant uses a use-suspension as the lever (ENEX's terms offer its customers none).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from access.api.stats import group_of
from access.auth import Caller
from access.compiler import Policy
from access.privacy import Grid, attack_interval
from access.tokens import TokenStore
from pipeline.query import SeriesQuery
from tests.access.api_world import NOW, STATS, STATS_HOUSEHOLDS, Env, api_policy, start_env, store_path

__all__ = ["api_policy", "store_path"]

HOUR = {"start": "2026-06-01T12:00:00Z", "stop": "2026-06-01T13:00:00Z", "every": "1h", "fields": "power_w"}
TARGET = "s05"
CLAMP_W = 12_000.0  # one home's power for statistics (seeds.vocabulary: power_w's stats_range)


@pytest.fixture
async def env(tmp_path: Path, store_path: Path, api_policy: Policy) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, store_path, api_policy):
        rel = e.state.relationships
        for c in rel.contracts():
            if c.company == "enex" and c.household in ("h1", "h2"):
                rel.end_contract(c.id, at="2026-05-01T00:00:00Z")  # twelve ENEX customers remain
        rel.add_principal("sop", "operator", "SPS Operations", ["sps.service_provision"], company="sps")
        tokens = TokenStore(e.db)
        _, e.tokens["sop"] = tokens.create(
            "sop", ["sps.service_provision"], frozenset({"sps.service_provision"}), at=NOW - 3600
        )
        tokens.close()
        yield e


async def _release(env: Env, who: str, purpose: str, **extra: str) -> dict:
    r = await env.client.get(
        "/api/v1/stats/electricity", params={**HOUR, "purpose": purpose, **extra}, headers=env.auth(who)
    )
    body = await r.json()
    assert r.status == 200, body
    return body


async def _true_hourly_mean(env: Env, household: str) -> float:
    """The target's own hourly mean power: what the attack is after (its meter's Wh for the hour)."""
    start = datetime(2026, 6, 1, 12, tzinfo=UTC)
    q = SeriesQuery(
        (household,), "electricity", ("power_w",), start, start + timedelta(hours=1), timedelta(hours=1)
    )
    df = await env.store.query(q)
    return float(df["power_w"][0])


def _group_now(env: Env, who: str, purpose: str) -> list[str]:
    """The exact group a release over ``HOUR`` aggregates (never released: only its noisy count is)."""
    start = datetime(2026, 6, 1, 12, tzinfo=UTC)
    kind = env.state.relationships.principal(who).kind
    caller = Caller(who, kind, "token", frozenset({purpose}), who)
    grid = Grid.snapped(start, start + timedelta(hours=1), timedelta(hours=1))
    return group_of(env.state, caller, "electricity", purpose, ("power_w",), grid)


def _estimate(before: dict, after: dict) -> float | None:
    """The attacker's estimate of the home that left: n * mean before less n' * mean after (the centre of
    power_w's range is 0, so n * mean is the noisy sum).  None when a release withheld the window."""
    a, b = before["columns"], after["columns"]
    if not a["time"] or not b["time"]:
        return None
    return a["households"][0] * a["power_w_mean"][0] - b["households"][0] * b["power_w_mean"][0]


async def test_the_250ms_shift_asks_for_the_same_snapped_window_and_no_extreme_is_released(env: Env) -> None:
    first = await _release(env, "ana", STATS)
    shifted = await _release(
        env, "ana", STATS, start="2026-06-01T12:00:00.250Z", stop="2026-06-01T12:59:59.750Z"
    )
    assert first["start"] == shifted["start"] == "2026-06-01T12:00:00.000Z"
    assert first["stop"] == shifted["stop"] == "2026-06-01T13:00:00.000Z"
    for body in (first, shifted):
        assert set(body["columns"]) == {"time", "households", "power_w_mean"}  # no min, no max
    assert shifted["budget"]["spent"] == pytest.approx(1.0)  # the repeat cost as much as the first


@pytest.mark.parametrize("lever", ["contract_end", "use_suspension"])
async def test_a_group_change_differences_out_nothing_useful(env: Env, lever: str) -> None:
    who, purpose = ("ana", STATS) if lever == "contract_end" else ("sop", "sps.service_provision")
    if lever == "use_suspension":  # SPS staff: h1 and h2 suspended use long ago, so the group is 12 too
        for hh in ("h1", "h2"):
            env.state.authz.consent.suspend(hh, "use", at="2026-05-01T00:00:00Z", company="sps")
    assert len(_group_now(env, who, purpose)) == 12
    before = await _release(env, who, purpose)
    if lever == "contract_end":
        (c,) = [c for c in env.state.relationships.contracts(TARGET) if c.company == "enex"]
        env.state.relationships.end_contract(c.id, at=NOW - 60)
    else:
        env.state.authz.consent.suspend(TARGET, "use", at=NOW - 60, company="sps")
    assert sorted(set(_group_now(env, "ana" if lever == "contract_end" else "sop", purpose))) == sorted(
        set(STATS_HOUSEHOLDS) - {TARGET}
    )
    after = await _release(env, who, purpose)
    truth = await _true_hourly_mean(env, TARGET)
    assert abs(truth) <= CLAMP_W
    # What the attacker can learn, in numbers: its estimate's error is the difference of two independent
    # Laplace draws of the released scale; the 95 % interval is ~4.1 scales wide either way.
    scale = before["noise"]["sum_scale"]["power_w"]
    assert scale == after["noise"]["sum_scale"]["power_w"] == pytest.approx(CLAMP_W / (0.5 / 2))
    interval_wh = attack_interval(scale)  # one hour: W of hourly mean = Wh of the hour's energy
    assert interval_wh == pytest.approx(197_424, rel=1e-3)
    assert interval_wh > 16 * CLAMP_W  # sixteen times wider than every value the home could have had
    estimate = _estimate(before, after)
    print(
        f"\n{lever}: true hourly energy of {TARGET} {truth:.0f} Wh, the attacker's estimate "
        f"{'withheld' if estimate is None else f'{estimate:.0f} Wh'}; the attacker's 95% interval "
        f"+-{interval_wh:.0f} Wh (two releases at epsilon {before['epsilon']:g}, Laplace scale {scale:.0f}); "
        f"budget spent on this {before['epsilon'] + after['epsilon']:g} of {after['budget']['total']:g}; any "
        f"sequence of this principal's releases moves the odds about one home by at most "
        f"e^{after['budget']['total']:g} = {math.exp(after['budget']['total']):.1f}"
    )
    if estimate is not None:  # (a window whose noisy count fell below the minimum is withheld: nothing)
        assert abs(estimate - truth) > 1.0, (estimate, truth)  # on main: exact


async def test_the_budget_runs_out_with_a_clear_refusal(env: Env) -> None:
    for _ in range(3):
        await _release(env, "ana", STATS, epsilon="1.0")
    r = await env.client.get(
        "/api/v1/stats/electricity",
        params={**HOUR, "purpose": STATS, "epsilon": "0.01"},
        headers=env.auth("ana"),
    )
    body = await r.json()
    assert r.status == 403 and body["code"] == "privacy_budget_exhausted", body
    assert "0 left of 3" in body["detail"] and "hems principals budget" in body["detail"]
    releases = env.state.budgets.releases("ana")
    assert [r.epsilon for r in releases] == [pytest.approx(1.0)] * 3
    env.state.budgets.set_budget("company:enex", 3.5, by="ops")  # ana is ENEX's: ENEX's budget
    assert (await _release(env, "ana", STATS, epsilon="0.5"))["budget"]["left"] == pytest.approx(0.0)


async def test_a_second_account_of_the_same_company_spends_the_same_budget(env: Env) -> None:
    """The Sybil lever: a company that asks for another analyst account must not get a fresh budget,
    or it could repeat the differencing attack once per account.  Another company's staff keep theirs."""
    for _ in range(3):
        await _release(env, "ana", STATS, epsilon="1.0")
    rel = env.state.relationships
    rel.add_principal("ana2", "analyst", "Second Analyst", [STATS], company="enex")
    tokens = TokenStore(env.db)
    _, env.tokens["ana2"] = tokens.create("ana2", [STATS], frozenset({STATS}), at=NOW - 3600)
    tokens.close()
    r = await env.client.get(
        "/api/v1/stats/electricity", params={**HOUR, "purpose": STATS}, headers=env.auth("ana2")
    )
    body = await r.json()
    assert r.status == 403 and body["code"] == "privacy_budget_exhausted", body  # deny: ENEX's is spent
    assert "company enex" in body["detail"] and "0 left of 3" in body["detail"]
    other = await _release(env, "sop", "sps.service_provision")  # allow: SPS's staff spend SPS's budget
    assert other["budget"] == {
        "holder": "company:sps",
        "total": pytest.approx(3.0),
        "spent": pytest.approx(0.5),
        "left": pytest.approx(2.5),
    }
    assert [x.principal for x in env.state.budgets.releases(holder="company:enex")] == ["ana"] * 3
