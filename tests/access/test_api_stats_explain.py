"""A statistics grant is explained from the policy alone, never for one household.

ENEX footnote *2 gives the analyst statistics that identify no individual.  ``/api/v1/explain`` with
``action=read_stats`` decided the grant for the household named and told the result: whether it is a
customer and since when, and the periods served and refused, so a suspension for part of the window or
an erasure showed as that household's refused part.  That is one household's record, told to a principal
that may only ever learn about groups.  Now the answer is the same for every household (or none), and
says what the policy grants: the clauses and the minimum group.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from access.compiler import Policy
from tests.access.api_world import NOW, PV, RANGE, STATS, Env, api_policy, start_env, store_path

__all__ = ["api_policy", "store_path"]


@pytest.fixture
async def env(tmp_path: Path, store_path: Path, api_policy: Policy) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, store_path, api_policy):
        yield e


async def _explain(env: Env, who: str, household: str, purpose: str = STATS) -> tuple[int, dict[str, Any]]:
    r = await env.client.get(
        "/api/v1/explain",
        params={
            **RANGE,
            "household": household,
            "category": "electricity",
            "action": "read_stats",
            "purpose": purpose,
        },
        headers=env.auth(who),
    )
    return r.status, await r.json()


async def test_a_statistics_grant_is_explained_the_same_for_every_household(env: Env) -> None:
    state = env.state
    # s01: ENEX's contract ended half-way through the window; s02: part of the window erased.
    rel = state.relationships
    (enex,) = [c for c in rel.contracts("s01") if c.company == "enex"]
    rel.end_contract(enex.id, at=NOW - 12 * 3600)
    seeds = state.authz.policy.seeds
    request = state.authz.consent.request_erasure("s02", seeds, ["electricity"], at=NOW - 7200)
    state.authz.consent.begin_erasure(
        request.id,
        erased=["electricity"],
        periods=((NOW - 6 * 3600, NOW - 3 * 3600),),
        kept={},
        operator="ops",
        at=NOW - 3600,
    )
    answers = [await _explain(env, "ana", h) for h in ("s00", "s01", "s02", "zz99")]
    # Allow: the grant, its clauses and its minimum group, identical whatever the household.
    status, body = answers[0]
    assert status == 200 and body["allowed"] is True, body
    assert body["clause_ids"] == ["enex-2.10", "enex-5.2.6"]
    assert "at least 10 households" in body["explanation"]
    for _, other in answers[1:]:
        assert other == body
    for word in ("s00", "contract", "since", "erased", "suspen"):
        assert word not in body["explanation"], word
    assert body["served"] == [] and body["refused"] == []


async def test_a_principal_without_a_statistics_grant_is_refused_the_same_way(env: Env) -> None:
    # Deny: the installer holds no read_stats line; h1 is its own installation, h2 is not.
    one, two = await _explain(env, "inst1", "h1", PV), await _explain(env, "inst1", "h2", PV)
    assert one == two and one[1]["allowed"] is False and one[1]["reason"] == "no_grant", one
