"""The homeowner's pages over real HTTP (no browser): language, words for the terms, grouping by Tokyo
day, paging, and the plain-form switches that work without a script."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from access.clock import to_epoch
from access.compiler import Policy
from access.db import AccessDb
from access.ledger import ProvisionRecord
from access.request import AccessRequest
from access.web.home import GROUPS_PER_PAGE, group_records
from access.web.terms_words import PURPOSES_JA, clause_citation, purpose_words
from seeds.loader import load_seeds
from tests.access.api_world import NOW, PV, Env, api_policy, start_env, store_path

__all__ = ["api_policy", "store_path"]
PASSWORD = "correct horse battery"


@pytest.fixture
async def env(
    tmp_path: Path, store_path: Path, api_policy: Policy, access_db: AccessDb
) -> AsyncIterator[Env]:
    """On a SQLite file and on PostgreSQL (``access_db``): the same answers from both."""
    async for e in start_env(tmp_path, store_path, api_policy, db=access_db):
        for who in ("alice", "bob", "inst1"):
            e.state.web.set_password(who, PASSWORD)
        yield e


async def _sign_in(env: Env, who: str) -> str:
    r = await env.client.post("/login", data={"principal": who, "password": PASSWORD}, allow_redirects=False)
    assert r.status == 303
    page = await (await env.client.get("/ledger" if who != "inst1" else "/installer")).text()
    m = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert m is not None
    return m.group(1)


def test_every_purpose_of_the_seeds_has_words_in_both_languages() -> None:
    seeds = load_seeds()
    assert set(PURPOSES_JA) == set(seeds.purposes)
    for purpose in seeds.purposes:
        en = purpose_words(seeds, "en", purpose)
        assert en and purpose not in en and not en.endswith((".", "(")), purpose
        assert purpose_words(seeds, "ja", purpose) == PURPOSES_JA[purpose]
    assert purpose_words(seeds, "en", "sps.pv_after_maintenance").startswith("After-sales maintenance")
    assert clause_citation(seeds, "sps-2.2.4") == "Smart Power System 2(2)[4]"


def _record(seq: int, recipient: str, at: str) -> ProvisionRecord:
    t = to_epoch(at)
    return ProvisionRecord(seq, recipient, "h1", ("pv",), t - 3600, t, PV, ("sps-2.2.4",), t, "", "")


def test_records_are_grouped_by_recipient_and_tokyo_day() -> None:
    groups = group_records(
        [
            _record(1, "inst1", "2026-06-01T14:30:00Z"),  # 23:30 on June 1 in Tokyo
            _record(2, "inst1", "2026-06-01T15:30:00Z"),  # 00:30 on June 2 in Tokyo
            _record(3, "inst1", "2026-06-01T16:00:00Z"),
            _record(4, "sales1", "2026-06-01T15:45:00Z"),
        ]
    )
    assert [(g.recipient, g.day.isoformat(), len(g.records)) for g in groups] == [
        ("inst1", "2026-06-02", 2),
        ("sales1", "2026-06-02", 1),
        ("inst1", "2026-06-01", 1),
    ]


async def test_japanese_for_a_japanese_browser_and_a_switch_to_english(env: Env) -> None:
    await _sign_in(env, "alice")
    page = await (await env.client.get("/", headers={"Accept-Language": "ja-JP,ja;q=0.9,en;q=0.5"})).text()
    assert '<html lang="ja">' in page and "電気の出どころと行き先" in page and "料金の内訳" in page
    assert 'hreflang="en"' in page  # the language switch
    page = await (await env.client.get("/?lang=en", headers={"Accept-Language": "ja"})).text()
    assert '<html lang="en">' in page and "Where the electricity came from" in page
    page = await (await env.client.get("/", headers={"Accept-Language": "fr, en-GB;q=0.8"})).text()
    assert '<html lang="en">' in page
    # The day the page opens on is today in Tokyo (NOW is 2026-06-02 00:00 UTC = 09:00 JST).
    assert 'data-today="2026-06-02"' in page
    assert 'data-purpose="sps.disclosure_to_person"' in page


async def test_ledger_pages_and_times_in_tokyo(env: Env) -> None:
    for i in range(GROUPS_PER_PAGE + 3):
        at = NOW - 86400 * i
        env.state.ledger.record("inst1", "h1", ["pv"], at - 3600, at, PV, ["sps-2.2.4"], at=at)
    env.state.ledger.record("inst1", "h2", ["pv"], NOW - 60, NOW, PV, ["sps-2.2.4"], at=NOW)
    await _sign_in(env, "alice")
    first = await (await env.client.get("/ledger")).text()
    assert first.count('class="provision"') == GROUPS_PER_PAGE and "Page 1 of 2" in first
    assert "2026-06-02 (Tue)" in first and "09:00 JST" in first and "UTC" not in first
    second = await (await env.client.get("/ledger?page=2")).text()
    assert second.count('class="provision"') == 3 and "Page 2 of 2" in second
    # A page number that is no number, or too large, shows a page that exists.
    assert "Page 1 of 2" in await (await env.client.get("/ledger?page=abc")).text()
    assert "Page 2 of 2" in await (await env.client.get("/ledger?page=99")).text()
    # Bob (signing in replaces the session) sees h2 only, whatever he asks for.
    await _sign_in(env, "bob")
    page = await (await env.client.get("/ledger?household=h1")).text()
    assert page.count('class="provision"') == 1 and 'data-household="h2"' in page


async def test_per_recipient_switch_without_a_script(env: Env) -> None:
    csrf = await _sign_in(env, "alice")
    consent = env.state.authz.consent
    r = await env.client.post(
        "/household/h1/provision",
        data={"csrf": csrf, "recipient": "inst1", "suspended": "true"},
        allow_redirects=False,
    )
    assert r.status == 303 and r.headers["Location"].startswith("/ledger?household=h1")
    (s,) = [s for s in consent.suspensions("h1") if s.active(NOW)]
    assert (s.recipient, s.scope, s.category) == ("inst1", "provision", None)
    assert not env.state.authz.decide(
        AccessRequest("inst1", "h1", "pv", "read", PV, (NOW - 3600, NOW)), at=NOW
    ).allowed
    assert env.state.authz.decide(
        AccessRequest("sales1", "h1", "pv", "read", PV, (NOW - 3600, NOW)), at=NOW
    ).allowed
    page = await (await env.client.get("/ledger")).text()
    assert re.search(r'class="recipient suspended" data-recipient="inst1"', page)
    assert "Resume provision to Roof Installers (installer)" in page
    # Twice is once; then resume.
    await env.client.post(
        "/household/h1/provision", data={"csrf": csrf, "recipient": "inst1", "suspended": "true"}
    )
    assert len([s for s in consent.suspensions("h1") if s.active(NOW)]) == 1
    await env.client.post(
        "/household/h1/provision", data={"csrf": csrf, "recipient": "inst1", "suspended": "false"}
    )
    assert not [s for s in consent.suspensions("h1") if s.active(NOW)]
    # Refused: an unknown recipient, someone else's household, no CSRF token.
    r = await env.client.post(
        "/household/h1/provision", data={"csrf": csrf, "recipient": "nobody", "suspended": "true"}
    )
    assert r.status == 400 and r.content_type == "text/html"
    r = await env.client.post("/household/h2/provision", data={"csrf": csrf, "suspended": "true"})
    assert r.status == 403
    r = await env.client.post("/household/h1/provision", data={"recipient": "inst1", "suspended": "true"})
    assert r.status == 403
    assert consent.suspensions("h2") == [] and not [s for s in consent.suspensions("h1") if s.active(NOW)]


async def test_homeowner_pages_are_for_homeowners(env: Env) -> None:
    await _sign_in(env, "inst1")
    for path in ("/ledger", "/erasure"):
        r = await env.client.get(path)
        assert r.status == 403 and r.content_type == "text/html", path
    r = await env.client.get("/", allow_redirects=False)
    assert r.status == 303 and r.headers["Location"] == "/installer"


async def test_erasure_page_lists_requests_with_their_status(env: Env) -> None:
    await _sign_in(env, "alice")
    assert "No erasure has been requested." in await (await env.client.get("/erasure")).text()
    seeds = env.state.authz.policy.seeds
    consent, rel = env.state.authz.consent, env.state.relationships
    # h1 has no Sobu Gas contract: its contract records are erased too (Sobu Gas 7 holds only its own
    # customers' records); once it has one, they are kept by law, and the page says under which clause.
    unheld = consent.request_erasure("h1", seeds, ["contract"], at=NOW - 120, requested_by="alice")
    assert unheld.outcome == {"contract": "erase"}
    rel.add_contract("h1", "sobu_gas", "supply", since=NOW - 86400)
    companies = {c.company for c in rel.contracts("h1")}
    req = consent.request_erasure(
        "h1", seeds, ["water", "contract"], at=NOW - 60, requested_by="alice", companies=companies
    )
    page = await (await env.client.get("/erasure?lang=ja")).text()
    assert (
        "受付済み（実施待ち）" in page
        and "水道: 削除" in page
        and "電力契約: 法令により保存（sobu_gas-7.legal_hold）" in page
    )
    assert "2026-06-02 (火) 08:59 JST" in page
    # The operator's steps (hems erasure complete): begun, then finished with what the store removed.
    consent.begin_erasure(
        req.id,
        erased=["water"],
        periods=((NOW - 86400, NOW),),
        kept={"contract": "kept by law (sobu_gas-7.legal_hold): the household is a Sobu Gas customer"},
        operator="ops",
        at=NOW,
    )
    page = await (await env.client.get("/erasure")).text()
    assert "being carried out" in page and "water: being erased" in page
    consent.finish_erasure(req.id, {"water": "12 points deleted"})
    page = await (await env.client.get("/erasure")).text()
    assert "carried out" in page and "water: erased" in page
    assert "power contract: kept by law (sobu_gas-7.legal_hold)" in page
