"""The refusal matrix over real HTTP: every refusal is a problem+json naming its cause, leaks nothing,
and writes nothing to the ledger."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from access.compiler import Policy
from tests.access.api_world import (
    NOW,
    OWN,
    PV,
    RANGE,
    SERIES,
    STATS,
    Env,
    api_policy,
    start_env,
    store_path,
)

__all__ = ["api_policy", "store_path"]
Q = {**RANGE, "every": "1h", "purpose": PV}


@pytest.fixture
async def env(tmp_path: Path, store_path: Path, api_policy: Policy) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, store_path, api_policy):
        yield e


@pytest.fixture
async def free_env(tmp_path: Path, store_path: Path, api_policy: Policy) -> AsyncIterator[Env]:
    """No rate limit: for tests that send hundreds of requests with one token."""
    async for e in start_env(tmp_path, store_path, api_policy, rate_per_s=None):
        yield e


async def _get(
    env: Env, who: str | None, hh: str, cat: str = "pv", **params: str
) -> tuple[int, dict[str, Any]]:
    headers = env.auth(who) if who else {}
    r = await env.client.get(SERIES.format(hh=hh, cat=cat), params={**Q, **params}, headers=headers)
    body = await r.json(content_type=None)
    if r.status != 200:
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert {"type", "title", "status", "detail", "code"} <= set(body)
    return r.status, body


async def test_foreign_and_unknown_households_answer_identically(env: Env) -> None:
    before = env.ledger_rows()
    # bob's h2 has also suspended provision: that must not show through to a stranger either.
    env.state.authz.consent.suspend("h2", "provision", at=NOW - 10)
    for who, purpose in (("alice", OWN), ("inst1", PV), ("appr1", PV)):
        foreign = await _get(env, who, "h2", purpose=purpose)
        unknown = await _get(env, who, "no-such-home", purpose=purpose)
        assert foreign[0] == unknown[0] == 403
        assert foreign[1] == unknown[1]
        assert foreign[1]["reason"] == "no_grant" and foreign[1]["clause_ids"] == []
    assert env.ledger_rows() == before


async def test_purpose_not_in_token(env: Env) -> None:
    status, body = await _get(env, "inst1", "h1", purpose="sps.service_provision")
    assert status == 403 and body["reason"] == "purpose_not_in_token"


async def test_missing_purpose_is_a_bad_parameter(env: Env) -> None:
    r = await env.client.get(SERIES.format(hh="h1", cat="pv"), params=RANGE, headers=env.auth("inst1"))
    assert r.status == 400 and (await r.json())["field"] == "purpose"
    # The header works as well as the query parameter.
    r = await env.client.get(
        SERIES.format(hh="h1", cat="pv"), params=RANGE, headers={**env.auth("inst1"), "X-Purpose": PV}
    )
    assert r.status == 200


async def test_expired_revoked_and_forged_tokens(env: Env) -> None:
    rel = env.state.relationships
    _, expired = env.state.tokens.create(
        "inst1", [PV], rel.principal("inst1").purposes, ttl_s=60, at=NOW - 120
    )
    r = await env.client.get(
        SERIES.format(hh="h1", cat="pv"), params=Q, headers={"Authorization": f"Bearer {expired}"}
    )
    assert r.status == 401 and (await r.json())["code"] == "token_expired"
    tid = env.tokens["inst1"].split("_")[1]
    env.state.tokens.revoke(tid, at=NOW - 1)
    status, body = await _get(env, "inst1", "h1")
    assert status == 401 and body["code"] == "token_revoked"
    forged_secret = env.tokens["sales1"][:-4] + "AAAA"
    unknown_id = "hems_0123456789abcdef_" + env.tokens["sales1"].split("_", 2)[2]
    bodies = []
    for text in (forged_secret, unknown_id, "hems_x", "' OR 1=1 --"):
        r = await env.client.get(
            SERIES.format(hh="h1", cat="pv"), params=Q, headers={"Authorization": f"Bearer {text}"}
        )
        assert r.status == 401
        bodies.append(await r.json())
    assert all(b == bodies[0] for b in bodies) and bodies[0]["code"] == "invalid_token"
    r = await env.client.get(SERIES.format(hh="h1", cat="pv"), params=Q)
    assert r.status == 401 and (await r.json())["code"] == "not_authenticated"


async def test_expired_approval_reaches_nothing(env: Env) -> None:
    status, body = await _get(env, "appr_old", "h1")
    assert status == 403 and body["clause_ids"] == []
    status, _ = await _get(env, "appr1", "h1")
    assert status == 200


async def test_suspended_household_refused_with_the_suspension_clause(env: Env) -> None:
    env.state.authz.consent.suspend("h1", "provision", at=NOW - 10)
    before = env.ledger_rows()
    for who in ("inst1", "sales1", "whole1", "appr1"):
        status, body = await _get(env, who, "h1")
        assert status == 403 and body["reason"] == "suspended", body
        assert env.state.authz.policy.suspension_clause in body["clause_ids"]
        assert "suspended" in body["detail"]
    assert env.ledger_rows() == before
    # The homeowner's own access is never suspended.
    status, _ = await _get(env, "alice", "h1", purpose=OWN)
    assert status == 200


async def test_refusal_texts_tell_the_time_in_tokyo(env: Env) -> None:
    """23:30 UTC on June 1 is 08:30 on June 2 in Tokyo: the refusal and the explanation name the
    Tokyo day and say JST (they said "2026-06-01 23:30 UTC", the wrong day for the person)."""
    env.state.authz.consent.suspend("h1", "provision", at=NOW - 1800)
    status, body = await _get(env, "inst1", "h1")
    assert status == 403 and "on 2026-06-02 08:30 JST" in body["detail"], body
    assert "UTC" not in body["detail"]
    r = await env.client.get(
        "/api/v1/explain",
        params={"household": "h1", "category": "pv", "purpose": PV},
        headers=env.auth("inst1"),
    )
    words = (await r.json())["explanation"]
    assert "on 2026-06-02 08:30 JST" in words and "UTC" not in words


async def test_statistics_only_principal_cannot_read_rows(env: Env) -> None:
    status, body = await _get(env, "ana", "h1", cat="electricity", purpose=STATS)
    assert status == 403 and body["reason"] == "statistics_only" and body["clause_ids"]
    r = await env.client.get(
        "/api/v1/stats/electricity",
        params={**RANGE, "every": "1h", "purpose": STATS, "household": "h1"},
        headers=env.auth("ana"),
    )
    assert r.status == 400 and (await r.json())["field"] == "household"


async def test_partner_cannot_read_statistics_or_owner_settings(env: Env) -> None:
    r = await env.client.get(
        "/api/v1/stats/electricity", params={**RANGE, "purpose": PV}, headers=env.auth("inst1")
    )
    assert r.status == 403
    for path in ("ledger", "consent", "erasure"):
        r = await env.client.get(f"/api/v1/households/h1/{path}", headers=env.auth("inst1"))
        assert r.status == 403 and (await r.json())["reason"] == "no_grant"
        r = await env.client.get(f"/api/v1/households/h2/{path}", headers=env.auth("alice"))
        assert r.status == 403
    r = await env.client.put(
        "/api/v1/households/h2/consent", json={"suspended": False}, headers=env.auth("alice")
    )
    assert r.status == 403


async def test_explain_names_the_cause_without_leaking(env: Env) -> None:
    env.state.authz.consent.suspend("h1", "provision", at=NOW - 10)
    r = await env.client.get(
        "/api/v1/explain",
        params={"household": "h1", "category": "pv", "purpose": PV},
        headers=env.auth("inst1"),
    )
    body = await r.json()
    assert body["allowed"] is False and body["reason"] == "suspended" and "suspended" in body["explanation"]
    a = await (
        await env.client.get(
            "/api/v1/explain",
            params={"household": "h2", "category": "pv", "purpose": PV},
            headers=env.auth("inst1"),
        )
    ).json()
    b = await (
        await env.client.get(
            "/api/v1/explain",
            params={"household": "zz", "category": "pv", "purpose": PV},
            headers=env.auth("inst1"),
        )
    ).json()
    assert a == b and a["reason"] == "no_grant"


INJECTIONS = [
    "h1' OR '1'='1",
    "h1; DROP TABLE points; --",
    'h1") |> drop() //',
    "../../etc/passwd",
    "..%2f..%2fetc",
    "h1\u202e",
    "\u30db\u30fc\u30e0",
    "x" * 5000,
    "1e309",
    "-1",
    "%00",
]


PARAMS = (
    "household",
    "category",
    "start",
    "stop",
    "every",
    "agg",
    "fields",
    "format",
    "limit",
    "cursor",
    "purpose",
)


async def test_injection_in_every_parameter(free_env: Env) -> None:
    """One server for all 121 cases: each must be a 4xx problem with no data and no ledger row."""
    env = free_env
    before = env.ledger_rows()
    for param in PARAMS:
        for bad in INJECTIONS:
            hh, cat = "h1", "pv"
            params = dict(Q)
            if param == "household":
                hh = bad
            elif param == "category":
                cat = bad
            else:
                params[param] = bad
            r = await env.client.get(
                f"/api/v1/households/{_quote(hh)}/series/{_quote(cat)}",
                params=params,
                headers=env.auth("inst1"),
            )
            text = await r.text()
            case = f"{param}={bad[:40]!r}: {r.status} {text[:200]}"
            assert r.status in (400, 403, 404, 414), case
            if r.status == 400:
                body = await r.json()
                assert body["code"] == "bad_parameter", case
                assert body["field"] in (param, "household", "stop", "start"), case
            assert "power_w" not in text and "energy_wh_total" not in text, case
    assert env.ledger_rows() == before


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


BAD_PARAMS: list[tuple[dict[str, str], str]] = [
    ({"every": "7x"}, "every"),
    ({"every": "0m"}, "every"),
    ({"every": "raw", "start": "2026-01-01T00:00:00Z"}, "every"),
    ({"start": "2020-01-01T00:00:00Z"}, "start"),
    ({"start": "2026-06-01T00:00:00"}, "start"),
    ({"stop": "yesterday"}, "stop"),
    ({"start": "2026-06-02T00:00:00Z", "stop": "2026-06-01T00:00:00Z"}, "stop"),
    ({"every": "1s", "start": "2026-05-01T00:00:00Z"}, "every"),
    ({"agg": "median"}, "agg"),
    ({"fields": "power_w,power_w"}, "fields"),
    ({"format": "xml"}, "format"),
    ({"limit": "0"}, "limit"),
    ({"limit": "1000000"}, "limit"),
    ({"cursor": "eyJ0IjoxfQ"}, "cursor"),
]


async def test_bad_parameters_name_the_field(free_env: Env) -> None:
    env = free_env
    for params, field in BAD_PARAMS:
        r = await env.client.get(
            SERIES.format(hh="h1", cat="pv"), params={**Q, **params}, headers=env.auth("inst1")
        )
        body = await r.json()
        assert r.status == 400 and body["field"] == field, (params, body)


async def test_unknown_category_is_400(env: Env) -> None:
    r = await env.client.get(SERIES.format(hh="h1", cat="identity"), params=Q, headers=env.auth("inst1"))
    assert r.status == 400 and (await r.json())["field"] == "category"


async def test_rate_limit_answers_429_with_retry_after(
    tmp_path: Path, store_path: Path, api_policy: Policy
) -> None:
    async for env in start_env(tmp_path, store_path, api_policy, rate_per_s=0.5, burst=3):
        statuses = []
        for _ in range(5):
            r = await env.client.get("/api/v1/me", headers=env.auth("inst1"))
            statuses.append(r.status)
            last = r
        assert statuses == [200, 200, 200, 429, 429]
        assert int(last.headers["Retry-After"]) >= 1 and (await last.json())["code"] == "rate_limited"
        # Buckets are per credential: another token is unaffected.
        assert (await env.client.get("/api/v1/me", headers=env.auth("sales1"))).status == 200
