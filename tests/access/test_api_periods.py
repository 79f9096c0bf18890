"""Periods over real HTTP: the API serves only the periods a grant rests on, says which part it refused,
records the period actually served, and its page cache never hands one caller's page to another whose
periods differ."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import polars as pl
import pytest

from access.clock import to_epoch
from access.compiler import Policy
from tests.access.api_world import NOW, OWN, PV, RANGE, SERIES, Env, api_policy, start_env, store_path

__all__ = ["api_policy", "store_path"]
MOVED = "2026-06-01T12:00:00Z"  # alice moved out of h1, carol moved in
LINKED = "2026-06-01T18:00:00Z"  # a new installer took over h1


@pytest.fixture
async def env(tmp_path: Path, store_path: Path, api_policy: Policy) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, store_path, api_policy):
        rel = e.state.relationships
        rel.unlink("alice", "h1", "homeowner", at=MOVED)
        rel.add_principal("carol", "homeowner", "Carol", [OWN])
        rel.link("carol", "h1", "homeowner", since=MOVED)
        rel.add_principal("inst2", "installer", "New Installer", [PV])
        rel.link("inst2", "h1", "installer", since=LINKED)
        for who, purpose, verified in (("carol", OWN, True), ("inst2", PV, False)):
            _, text = e.state.tokens.create(
                who,
                [purpose],
                rel.principal(who).purposes,
                at=NOW - 60,
                identity_verified_at=NOW - 60 if verified else None,
                identity_method="documents" if verified else "",
            )
            e.tokens[who] = text
        yield e


async def _series(env: Env, who: str, purpose: str, **params: str) -> tuple[int, dict[str, object]]:
    r = await env.client.get(
        SERIES.format(hh="h1", cat="pv"),
        params={**RANGE, "every": "1h", "purpose": purpose, **params},
        headers=env.auth(who),
    )
    return r.status, await r.json(content_type=None)


async def test_the_new_and_the_former_occupant_each_get_their_own_period_from_the_page_cache(
    env: Env,
) -> None:
    """The same URL, three times: the page made for the former occupant is never served to the new one."""
    status, former = await _series(env, "alice", OWN)
    assert status == 200 and former["served"] == [["2026-06-01T00:00:00.000Z", "2026-06-01T12:00:00.000Z"]]
    times = former["columns"]["time"]  # type: ignore[index]
    assert len(times) == 12 and max(times) < "2026-06-01T12:00"
    status, new = await _series(env, "carol", OWN)
    assert status == 200 and new["refused"] == [["2026-06-01T00:00:00.000Z", "2026-06-01T12:00:00.000Z"]]
    times = new["columns"]["time"]  # type: ignore[index]
    assert len(times) == 12 and min(times) >= "2026-06-01T12:00"
    hits = env.state.pages.stats.hits
    status, again = await _series(env, "alice", OWN)
    assert again == former and env.state.pages.stats.hits > hits  # reused, and still only her period
    # The person's own reads are not provisions: no ledger record for either of them.
    assert env.ledger_rows() == 0


async def test_a_partial_answer_serves_and_records_only_the_period_served(env: Env) -> None:
    status, body = await _series(env, "inst2", PV)
    assert status == 200 and body["served"] == [["2026-06-01T18:00:00.000Z", "2026-06-02T00:00:00.000Z"]]
    assert len(body["columns"]["time"]) == 6  # type: ignore[index]
    (record,) = env.state.ledger.all()
    assert (record.recipient, record.period_start, record.period_end) == ("inst2", to_epoch(LINKED), NOW)
    # CSV says it in a header, and carries no row outside it.
    r = await env.client.get(
        SERIES.format(hh="h1", cat="pv"),
        params={**RANGE, "every": "1h", "purpose": PV, "format": "csv"},
        headers=env.auth("inst2"),
    )
    assert r.headers["X-Served-Periods"] == "2026-06-01T18:00:00.000Z/2026-06-02T00:00:00.000Z"
    csv = pl.read_csv(io.StringIO(await r.text()), try_parse_dates=True)
    assert csv.height == 6 and csv["time"].min() >= pl.Series([LINKED]).str.to_datetime()[0]  # type: ignore[operator]


async def test_a_window_outside_every_period_is_refused_with_the_part_and_the_reason(env: Env) -> None:
    before = env.ledger_rows()
    status, body = await _series(env, "inst2", PV, stop="2026-06-01T06:00:00Z")
    assert status == 403 and body["reason"] == "outside_period"
    assert body["refused"] == [["2026-06-01T00:00:00.000Z", "2026-06-01T06:00:00.000Z"]]
    assert "its installer link holds since 2026-06-02 03:00 JST" in body["detail"]  # type: ignore[operator]
    assert env.ledger_rows() == before


async def test_the_ledger_shows_each_occupant_only_their_own_period(env: Env) -> None:
    await _series(env, "inst1", PV)  # the old installer reads the whole day: one record across both occupants
    for who, start, stop in (
        ("carol", "2026-06-01T12:00:00.000Z", "2026-06-02T00:00:00.000Z"),
        ("alice", "2026-06-01T00:00:00.000Z", "2026-06-01T12:00:00.000Z"),
    ):
        r = await env.client.get("/api/v1/households/h1/ledger", headers=env.auth(who))
        (record,) = (await r.json())["records"]
        assert (record["recipient"], record["period_start"], record["period_end"]) == (
            "inst1",
            start,
            stop,
        ), who


async def test_the_persons_requests_need_a_verified_identity(env: Env) -> None:
    rel = env.state.relationships
    _, unverified = env.state.tokens.create("carol", [OWN], rel.principal("carol").purposes, at=NOW - 60)
    headers = {"Authorization": f"Bearer {unverified}"}
    r = await env.client.put("/api/v1/households/h1/consent", json={"suspended": True}, headers=headers)
    assert r.status == 403 and (await r.json())["reason"] == "identity_not_verified"
    r = await env.client.get(
        SERIES.format(hh="h1", cat="pv"), params={**RANGE, "purpose": OWN}, headers=headers
    )
    assert r.status == 403 and (await r.json())["reason"] == "identity_not_verified"
    r = await env.client.put(
        "/api/v1/households/h1/consent",
        json={"suspended": True, "company": "enex"},
        headers=env.auth("carol"),
    )
    assert r.status == 200 and (await r.json())["suspensions"][0]["company"] == "enex"
    r = await env.client.put(
        "/api/v1/households/h1/consent",
        json={"suspended": True, "company": "enex", "scope": "use"},
        headers=env.auth("carol"),
    )
    assert r.status == 400 and "no suspension of use" in (await r.json())["detail"]


async def _put_consent(env: Env, who: str, suspended: bool) -> int:
    r = await env.client.put(
        "/api/v1/households/h1/consent", json={"suspended": suspended}, headers=env.auth(who)
    )
    return r.status


async def test_a_new_occupant_cannot_lift_the_former_occupants_suspension(env: Env) -> None:
    """SPS 2(6): alice asked that her data be provided to no one, then moved out.  The suspension is
    hers: carol, who moved in after, may not lift it (that would resume provision of alice's history to
    her installer), nor see whom alice suspended."""
    consent = env.state.authz.consent
    hers = consent.suspend("h1", "provision", at="2026-06-01T06:00:00Z")
    assert (await _series(env, "inst1", PV, stop=MOVED))[0] == 403
    assert await _put_consent(env, "carol", False) == 200
    assert consent.suspension(hers.id).active(NOW)
    status, body = await _series(env, "inst1", PV, stop="2026-06-01T06:00:00Z")
    assert status == 403 and body["reason"] == "suspended"
    r = await env.client.get("/api/v1/households/h1/consent", headers=env.auth("carol"))
    assert hers.id not in [s["id"] for s in (await r.json())["suspensions"]]


async def test_an_occupant_lifts_their_own_suspension(env: Env) -> None:
    """The allow side: carol's own suspension is hers to lift, and she sees it."""
    consent = env.state.authz.consent
    assert await _put_consent(env, "carol", True) == 200
    (mine,) = consent.suspensions("h1")
    r = await env.client.get("/api/v1/households/h1/consent", headers=env.auth("carol"))
    assert [s["id"] for s in (await r.json())["suspensions"]] == [mine.id]
    assert await _put_consent(env, "carol", False) == 200
    assert not consent.suspension(mine.id).active(NOW)


async def _explain(env: Env, who: str, purpose: str, **params: str) -> dict[str, object]:
    r = await env.client.get(
        "/api/v1/explain",
        params={"household": "h1", "category": "pv", "purpose": purpose, **RANGE, **params},
        headers=env.auth(who),
    )
    assert r.status == 200
    body: dict[str, object] = await r.json()
    return body


async def test_a_former_occupants_suspension_does_not_refuse_the_new_occupants_data(env: Env) -> None:
    """SPS 2(6): the homeowner may suspend provision of *their* data.  Alice suspended provision while
    she lived in h1 and never lifted it; carol, who moved in after, asked for nothing.  The installer
    reads carol's half of the day (a provision, recorded with that period and SPS 2(2)[4]); alice's half
    stays suspended, and the answer says why."""
    consent = env.state.authz.consent
    hers = consent.suspend("h1", "provision", at="2026-06-01T06:00:00Z")
    status, body = await _series(env, "inst1", PV)
    assert status == 200, body
    assert body["served"] == [["2026-06-01T12:00:00.000Z", "2026-06-02T00:00:00.000Z"]]
    assert body["refused"] == [["2026-06-01T00:00:00.000Z", "2026-06-01T12:00:00.000Z"]]
    times = body["columns"]["time"]  # type: ignore[index]
    assert len(times) == 12 and min(times) >= "2026-06-01T12:00"
    (record,) = env.state.ledger.all()
    assert (record.recipient, record.period_start, record.period_end) == ("inst1", to_epoch(MOVED), NOW)
    assert record.clause_ids == ("sps-2.2.4",)
    # /explain: served for carol's time under SPS 2(2)[4]; alice's time refused by her suspension, which
    # covers only the time of the homeowner who asked for it.
    why = await _explain(env, "inst1", PV)
    assert why["allowed"] is True and why["served"] == body["served"] and why["refused"] == body["refused"]
    words = str(why["explanation"])
    assert f"suspension {hers.id}" in words and "only the time of the homeowner who asked for it" in words
    assert "2(2)[4]" in words and "2(6)" in words


async def test_a_former_occupants_own_period_stays_suspended(env: Env) -> None:
    """The deny side: over alice's own time her suspension refuses the installer, whoever lives there now,
    and nothing is recorded as provided."""
    consent = env.state.authz.consent
    hers = consent.suspend("h1", "provision", at="2026-06-01T06:00:00Z")
    status, body = await _series(env, "inst1", PV, stop=MOVED)
    assert status == 403 and body["reason"] == "suspended", body
    assert body["refused"] == [["2026-06-01T00:00:00.000Z", "2026-06-01T12:00:00.000Z"]]
    assert env.ledger_rows() == 0
    why = await _explain(env, "inst1", PV, stop=MOVED)
    assert why["allowed"] is False and why["reason"] == "suspended"
    assert f"suspension {hers.id}" in str(why["explanation"])


async def test_a_new_occupants_suspension_covers_only_her_own_time(env: Env) -> None:
    """Conversely, carol's suspension is hers: it refuses provision of her own time, not alice's (alice
    asked for nothing, and her data of the time she lived there goes on being provided as before)."""
    assert await _put_consent(env, "carol", True) == 200
    status, body = await _series(env, "inst1", PV)
    assert status == 200, body
    assert body["served"] == [["2026-06-01T00:00:00.000Z", "2026-06-01T12:00:00.000Z"]]
    assert body["refused"] == [["2026-06-01T12:00:00.000Z", "2026-06-02T00:00:00.000Z"]]
    (record,) = env.state.ledger.all()
    assert (record.period_start, record.period_end) == (to_epoch("2026-06-01T00:00:00Z"), to_epoch(MOVED))
    status, body = await _series(env, "inst1", PV, start=MOVED)
    assert status == 403 and body["reason"] == "suspended"
