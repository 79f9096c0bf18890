"""Parsed series requests are remembered by target, and never instead of authentication, the policy,
the ledger or the clock: real HTTP against a real app, store and access database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from access.api import series
from access.compiler import Policy
from tests.access.api_world import NOW, OWN, PV, RANGE, SERIES, Env, api_policy, start_env, store_path

__all__ = ["api_policy", "store_path"]

URL = SERIES.format(hh="h1", cat="pv")
Q = {**RANGE, "every": "1h", "fields": "power_w"}


@pytest.fixture
async def env(tmp_path: Path, store_path: Path, api_policy: Policy) -> AsyncIterator[Env]:
    clock = {"t": NOW}
    async for e in start_env(tmp_path, store_path, api_policy, now=lambda: clock["t"], rate_per_s=None):
        e.extra["clock"] = clock
        yield e


async def test_an_absolute_window_is_parsed_once_and_answers_the_same(env: Env) -> None:
    r1 = await env.client.get(URL, params={**Q, "purpose": PV}, headers=env.auth("inst1"))
    assert r1.status == 200 and len(env.state.series_asks) == 1
    r2 = await env.client.get(URL, params={**Q, "purpose": PV}, headers=env.auth("inst1"))
    assert r2.status == 200 and len(env.state.series_asks) == 1
    assert await r1.json() == await r2.json()


async def test_a_remembered_ask_is_still_decided_and_recorded_per_caller(env: Env) -> None:
    params = {**Q, "purpose": PV}
    rows = env.ledger_rows()
    assert (await env.client.get(URL, params=params, headers=env.auth("inst1"))).status == 200
    assert env.ledger_rows() == rows + 1
    # Same target: bob has no tie to h1 and no token for that purpose; appr_old's approval has lapsed.
    for who in ("bob", "appr_old"):
        r = await env.client.get(URL, params=params, headers=env.auth(who))
        assert r.status == 403, who
    r = await env.client.get(URL, params=params)
    assert r.status == 401
    r = await env.client.get(URL, params=params, headers={"Authorization": "Bearer hems_forged_token"})
    assert r.status == 401
    assert env.ledger_rows() == rows + 1
    env.state.authz.consent.suspend("h1", "provision", at=env.state.clock() - 10)
    r = await env.client.get(URL, params=params, headers=env.auth("inst1"))
    assert r.status == 403 and (await r.json())["reason"] == "suspended"
    assert env.ledger_rows() == rows + 1


async def test_the_purpose_header_and_the_accept_header_are_part_of_the_ask(env: Env) -> None:
    target = {**Q}
    own = await env.client.get(URL, params=target, headers={**env.auth("alice"), "X-Purpose": OWN})
    assert own.status == 200 and (await own.json())["purpose"] == OWN
    # The same target with another declared purpose is another ask: alice's token is not for PV.
    other = await env.client.get(URL, params=target, headers={**env.auth("alice"), "X-Purpose": PV})
    assert other.status == 403 and (await other.json())["reason"] == "purpose_not_in_token"
    csv = await env.client.get(
        URL, params=target, headers={**env.auth("alice"), "X-Purpose": OWN, "Accept": "text/csv"}
    )
    assert csv.status == 200 and csv.content_type == "text/csv"
    assert len(env.state.series_asks) == 3


async def test_a_window_relative_to_now_is_parsed_for_each_request(env: Env) -> None:
    params = {"every": "1h", "fields": "power_w", "purpose": OWN}  # no start or stop: the last 24 h
    first = await (await env.client.get(URL, params=params, headers=env.auth("alice"))).json()
    env.extra["clock"]["t"] = NOW - 6 * 3600
    later = await (await env.client.get(URL, params=params, headers=env.auth("alice"))).json()
    assert (first["stop"], later["stop"]) == ("2026-06-02T00:00:00.000Z", "2026-06-01T18:00:00.000Z")
    assert len(env.state.series_asks) == 0


async def test_malformed_targets_are_refused_and_not_remembered(env: Env) -> None:
    for bad in ({**Q, "every": "7x"}, {**Q, "start": "2026-06-01T00:00:00' OR 1=1--"}, {**Q, "fields": "x"}):
        r = await env.client.get(URL, params={**bad, "purpose": OWN}, headers=env.auth("alice"))
        assert r.status == 400
    assert len(env.state.series_asks) == 0


async def test_the_memory_is_bounded(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(series, "ASK_MEMO_SIZE", 3)
    for hours in range(1, 6):
        r = await env.client.get(
            URL, params={**Q, "every": f"{hours}h", "purpose": OWN}, headers=env.auth("alice")
        )
        assert r.status == 200
    assert 1 <= len(env.state.series_asks) <= 3
