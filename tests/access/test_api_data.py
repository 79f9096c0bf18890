"""The API over real HTTP and a real SQLite store: each user group, formats, pagination, ledger."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

import polars as pl
import pytest

from access.compiler import Policy
from pipeline.query import SeriesQuery
from tests.access.api_world import (
    NOW,
    OWN,
    PV,
    RANGE,
    SERIES,
    STATS,
    STATS_HOUSEHOLDS,
    Env,
    api_policy,
    move_in_carol,
    start_env,
    store_path,
)

__all__ = ["api_policy", "store_path"]


@pytest.fixture
async def env(tmp_path: Path, store_path: Path, api_policy: Policy) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, store_path, api_policy):
        yield e


async def test_homeowner_reads_own_series_without_a_ledger_record(env: Env) -> None:
    before = env.ledger_rows()
    r = await env.client.get(
        SERIES.format(hh="h1", cat="pv"),
        params={**RANGE, "every": "1h", "purpose": OWN},
        headers=env.auth("alice"),
    )
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["count"] == 24
    assert body["columns"]["time"][0] == "2026-06-01T00:00:00.000Z"
    assert set(body["columns"]) == {"time", "household", "device", "power_w", "energy_wh_total"}
    assert body["clause_ids"]
    # The person's own access is not a provision to a third party.
    assert env.ledger_rows() == before


@pytest.mark.parametrize("who", ["inst1", "sales1", "whole1", "appr1"])
async def test_each_partner_read_leaves_exactly_one_ledger_record(env: Env, who: str) -> None:
    before = env.ledger_rows()
    r = await env.client.get(
        SERIES.format(hh="h1", cat="pv"),
        params={**RANGE, "every": "15m", "purpose": PV},
        headers=env.auth(who),
    )
    assert r.status == 200, await r.text()
    assert (await r.json())["count"] == 96
    records = env.state.ledger.all()
    assert len(records) == before + 1
    rec = records[-1]
    assert (rec.recipient, rec.household, rec.categories, rec.purpose) == (who, "h1", ("pv",), PV)
    assert rec.period_start == datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    assert rec.clause_ids == tuple((await r.json())["clause_ids"])


async def test_raw_series_matches_the_store_query(env: Env) -> None:
    r = await env.client.get(
        SERIES.format(hh="h1", cat="battery"),
        params={
            "start": "2026-06-01T01:00:00Z",
            "stop": "2026-06-01T02:00:00Z",
            "every": "raw",
            "purpose": OWN,
        },
        headers=env.auth("alice"),
    )
    body = await r.json()
    direct = await env.store.query(
        SeriesQuery(
            ("h1",),
            "battery",
            ("power_w", "soc_pct"),
            datetime(2026, 6, 1, 1, tzinfo=UTC),
            datetime(2026, 6, 1, 2, tzinfo=UTC),
        )
    )
    assert body["columns"]["soc_pct"] == direct["soc_pct"].to_list()
    assert body["count"] == 12


async def test_csv_and_arrow_parse_back_to_the_same_data(env: Env) -> None:
    q = {**RANGE, "every": "1h", "purpose": OWN, "fields": "power_w,soc_pct"}
    url = SERIES.format(hh="h1", cat="battery")
    direct = (
        await env.store.query(
            SeriesQuery(
                ("h1",),
                "battery",
                ("power_w", "soc_pct"),
                datetime(2026, 6, 1, tzinfo=UTC),
                datetime(2026, 6, 2, tzinfo=UTC),
                timedelta(hours=1),
                "mean",
            )
        )
    ).sort(["time", "device"])
    r = await env.client.get(url, params={**q, "format": "arrow"}, headers=env.auth("alice"))
    assert r.status == 200
    assert r.headers["Content-Type"] == "application/vnd.apache.arrow.file"
    arrow = pl.read_ipc(io.BytesIO(await r.read()))
    assert arrow.equals(direct)
    r = await env.client.get(url, params=q, headers={**env.auth("alice"), "Accept": "text/csv"})
    assert r.headers["Content-Type"].startswith("text/csv")
    csv = pl.read_csv(io.StringIO(await r.text()), try_parse_dates=True)
    assert csv.columns == direct.columns
    assert csv["time"].to_list() == direct["time"].to_list()
    assert csv["soc_pct"].to_list() == pytest.approx(direct["soc_pct"].to_list())


async def test_pagination_walks_every_row_once_and_records_each_page(env: Env) -> None:
    url = SERIES.format(hh="h1", cat="electricity")
    params = {**RANGE, "every": "raw", "purpose": PV, "limit": "100", "fields": "power_w"}
    before = env.ledger_rows()
    seen: list[str] = []
    pages = 0
    cursor = None
    while True:
        p = dict(params) if cursor is None else {**params, "cursor": cursor}
        r = await env.client.get(url, params=p, headers=env.auth("inst1"))
        assert r.status == 200, await r.text()
        body = await r.json()
        seen += body["columns"]["time"]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            assert "X-Next-Cursor" not in r.headers
            break
        assert r.headers["X-Next-Cursor"] == cursor and 'rel="next"' in r.headers["Link"]
    assert pages == 3 and len(seen) == 288 and len(set(seen)) == 288 and seen == sorted(seen)
    assert env.ledger_rows() == before + pages
    # A cursor belongs to its query: reusing it with other parameters is a bad parameter.
    r = await env.client.get(
        url,
        params={**params, "fields": "import_wh_total", "cursor": cursor or "x"},
        headers=env.auth("inst1"),
    )
    assert r.status == 400 and (await r.json())["field"] == "cursor"


async def test_households_lists_only_related_ones(env: Env) -> None:
    r = await env.client.get("/api/v1/households", params={"purpose": PV}, headers=env.auth("appr1"))
    body = await r.json()
    assert [h["household"] for h in body["households"]] == ["h1"]
    assert body["households"][0]["categories"] == ["electricity", "pv", "battery"]
    r = await env.client.get("/api/v1/households", headers=env.auth("bob"))
    assert [h["household"] for h in (await r.json())["households"]] == ["h2"]


async def test_analyst_gets_a_private_release_without_household_ids(env: Env) -> None:
    """A statistics release: windows of the snapped range, noisy counts and means, no household or device
    column, no single household's minimum or maximum, its epsilon charged and recorded."""
    before = env.ledger_rows()
    r = await env.client.get(
        "/api/v1/stats/electricity",
        params={**RANGE, "every": "1h", "purpose": STATS, "fields": "power_w"},
        headers=env.auth("ana"),
    )
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["min_group_size"] == 10
    cols = body["columns"]
    assert set(cols) == {"time", "households", "power_w_mean"}
    assert len(cols["time"]) + body["suppressed_windows"] == 24
    assert all(n >= 10 for n in cols["households"])  # only windows whose noisy count reaches the minimum
    assert "h1" not in await r.text()
    assert env.ledger_rows() == before  # aggregates name no household: not a provision record
    assert body["epsilon"] == pytest.approx(0.5)
    assert body["budget"] == {
        "holder": "company:enex",  # ana is ENEX's analyst: ENEX's one budget
        "total": 3.0,
        "spent": pytest.approx(0.5),
        "left": pytest.approx(2.5),
    }
    # 24 windows, one field: the epsilon split between counts and sums, each household weighing 24 windows.
    assert body["noise"]["households_scale"] == pytest.approx(24 / 0.25)
    assert body["noise"]["sum_scale"] == {"power_w": pytest.approx(24 * 12_000 / 0.25)}
    (release,) = env.state.budgets.releases("ana")
    assert (release.purpose, release.category, release.fields, release.windows) == (
        STATS,
        "electricity",
        ("power_w",),
        24,
    )
    assert release.epsilon == pytest.approx(0.5) and env.state.budgets.verify() is None


async def test_statistics_groups_below_the_minimum_are_suppressed(env: Env) -> None:
    # Six homes left ENEX before the day asked: 8 remain that ENEX's analyst may aggregate over, below the
    # minimum of 10.  (ENEX's terms give no suspension of use, so its customers are the lever.)  Which
    # windows are suppressed depends on the noisy count, so only what must hold is asserted.
    rel = env.state.relationships
    for c in rel.contracts():
        if c.company == "enex" and c.household in STATS_HOUSEHOLDS[:6]:
            rel.end_contract(c.id, at="2026-05-01T00:00:00Z")
    r = await env.client.get(
        "/api/v1/stats/electricity",
        params={**RANGE, "every": "1h", "purpose": STATS},
        headers=env.auth("ana"),
    )
    body = await r.json()
    assert r.status == 200, body
    assert body["fields"] == ["power_w"]  # the default fields a statistic can be made of
    assert len(body["columns"]["time"]) + body["suppressed_windows"] == 24
    assert all(n >= 10 for n in body["columns"]["households"])


async def test_statistics_refuse_what_no_statistic_can_be_made_of(env: Env) -> None:
    for extra, field in (
        ({"fields": "import_wh_total"}, "fields"),  # a cumulative total
        ({"agg": "sum"}, "agg"),  # grows with the sampling rate: no public bound per household
        ({"epsilon": "2.0"}, "epsilon"),  # more than one release may spend
        ({"epsilon": "nan"}, "epsilon"),
    ):
        r = await env.client.get(
            "/api/v1/stats/electricity",
            params={**RANGE, "every": "1h", "purpose": STATS, **extra},
            headers=env.auth("ana"),
        )
        assert r.status == 400 and (await r.json())["field"] == field, extra
    assert env.state.budgets.budget("ana").spent == 0.0  # nothing charged for a refused request


async def test_daily_totals_per_tokyo_day(env: Env) -> None:
    r = await env.client.get(
        "/api/v1/households/h1/daily/water",
        params={**RANGE, "field": "volume_l_total", "purpose": OWN},
        headers=env.auth("alice"),
    )
    body = await r.json()
    assert r.status == 200, body
    # Data runs 00:00-24:00 UTC = 09:00 JST on two local days; 0.5 L per 5 minutes.
    assert body["columns"]["day"] == ["2026-06-01", "2026-06-02"]
    assert sum(body["columns"]["delta"]) == pytest.approx(287 * 0.5 - 11 * 0.5)


async def test_homeowner_ledger_consent_and_erasure(env: Env) -> None:
    await env.client.get(
        SERIES.format(hh="h1", cat="pv"),
        params={**RANGE, "purpose": PV, "every": "1h"},
        headers=env.auth("inst1"),
    )
    r = await env.client.get("/api/v1/households/h1/ledger", headers=env.auth("alice"))
    records = (await r.json())["records"]
    assert [(x["recipient"], x["categories"]) for x in records] == [("inst1", ["pv"])]
    r = await env.client.put(
        "/api/v1/households/h1/consent", json={"suspended": True}, headers=env.auth("alice")
    )
    assert r.status == 200 and (await r.json())["provision_suspended"] is True
    r = await env.client.get(
        SERIES.format(hh="h1", cat="pv"),
        params={**RANGE, "purpose": PV, "every": "1h"},
        headers=env.auth("inst1"),
    )
    assert r.status == 403 and (await r.json())["reason"] == "suspended"
    r = await env.client.put(
        "/api/v1/households/h1/consent", json={"suspended": False}, headers=env.auth("alice")
    )
    assert (await r.json())["provision_suspended"] is False
    r = await env.client.post(
        "/api/v1/households/h1/erasure", json={"categories": ["pv"]}, headers=env.auth("alice")
    )
    assert r.status == 202 and (await r.json())["status"] == "recorded"
    r = await env.client.get("/api/v1/households/h1/erasure", headers=env.auth("alice"))
    assert len((await r.json())["requests"]) == 1


async def test_legal_holds_answer_for_the_households_own_contracts_only(env: Env) -> None:
    """Issue 14: the hold of Sobu Gas 7 (contract and equipment records) was answered for every household.
    h1 has no Sobu Gas contract: everything it asks for is erased (deny the hold); once it is a Sobu Gas
    customer, the same request is answered 'kept by law' under that clause (allow the hold)."""
    ask = {"categories": ["contract", "equipment", "water"]}
    r = await env.client.post("/api/v1/households/h1/erasure", json=ask, headers=env.auth("alice"))
    assert r.status == 202, await r.text()
    assert (await r.json())["outcome"] == {"contract": "erase", "equipment": "erase", "water": "erase"}
    env.state.relationships.add_contract("h1", "sobu_gas", "supply", since="2026-05-01T00:00:00Z")
    r = await env.client.post("/api/v1/households/h1/erasure", json=ask, headers=env.auth("alice"))
    assert (await r.json())["outcome"] == {
        "contract": "keep: sobu_gas-7.legal_hold",
        "equipment": "keep: sobu_gas-7.legal_hold",
        "water": "erase",
    }


async def test_operational_endpoints(env: Env) -> None:
    assert (await env.client.get("/healthz")).status == 200
    assert (await env.client.get("/readyz")).status == 200
    await env.client.get(SERIES.format(hh="h2", cat="pv"), params={"purpose": PV}, headers=env.auth("inst1"))
    text = await (await env.client.get("/metrics")).text()
    assert 'hems_policy_refusals_total{reason="no_grant"} 1.0' in text
    assert "hems_policy_decision_seconds_count 1.0" in text
    assert "hems_store_up 1.0" in text
    assert 'method="GET",route="/api/v1/households/{household}/series/{category}",status="403"' in text


async def test_metrics_include_collector_and_pipeline_providers(
    tmp_path: Path, store_path: Path, api_policy: Policy
) -> None:
    async for env in start_env(
        tmp_path,
        store_path,
        api_policy,
        collector_health=lambda: {"h1/inv1": "ok", "h1/meter": "timeout", "h1/solar": "ok"},
        # What Pipeline.metrics() gives: nested counters (these made the hand-written text fail).
        pipeline_stats=lambda: {
            "spool_depth": 7,
            "validation": {"accepted": 3, "rejected": {"bad_type": 2}},
            "store_failures": {},
            "note": "text is left out",
        },
    ):
        r = await env.client.get("/metrics")
        assert r.status == 200
        text = await r.text()
        assert 'hems_collector_devices{state="ok"} 2.0' in text
        assert 'hems_collector_devices{state="timeout"} 1.0' in text
        assert "hems_pipeline_spool_depth 7.0" in text
        assert 'hems_pipeline_validation{key="accepted"} 3.0' in text
        assert 'hems_pipeline_validation_rejected{key="bad_type"} 2.0' in text
        assert "h1" not in text  # no series is labelled with a household


async def test_metrics_are_for_this_machine_or_the_operator(env: Env) -> None:
    from access.api.routes import from_this_machine

    class Remote:
        remote = "192.0.2.7"
        headers: Mapping[str, str] = MappingProxyType({})

    class Local:
        remote = "127.0.0.1"
        headers: Mapping[str, str] = MappingProxyType({})

    class Proxied:  # a client of a reverse proxy on this machine
        remote = "127.0.0.1"
        headers: Mapping[str, str] = MappingProxyType({"X-Forwarded-For": "192.0.2.7"})

    assert not from_this_machine(Remote())  # type: ignore[arg-type]
    assert from_this_machine(Local())  # type: ignore[arg-type]
    assert not from_this_machine(Proxied())  # type: ignore[arg-type]


async def test_pagination_with_windows_and_an_unaligned_start_matches_one_page(env: Env) -> None:
    url = SERIES.format(hh="h1", cat="pv")
    params = {"start": "2026-06-01T00:02:00Z", "stop": "2026-06-01T01:00:00Z", "every": "15m", "purpose": OWN}
    whole = await (await env.client.get(url, params=params, headers=env.auth("alice"))).json()
    rows: list[float] = []
    cursor = None
    for _ in range(20):
        p = {**params, "limit": "1"} if cursor is None else {**params, "limit": "1", "cursor": cursor}
        body = await (await env.client.get(url, params=p, headers=env.auth("alice"))).json()
        rows += body["columns"]["energy_wh_total"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert whole["columns"]["time"][0] == "2026-06-01T00:00:00.000Z"  # the window holding the start
    assert rows == whole["columns"]["energy_wh_total"] and len(rows) == 4


async def test_daily_totals_as_csv_without_float_noise(env: Env) -> None:
    params = {**RANGE, "field": "volume_l_total", "purpose": OWN, "format": "csv"}
    r = await env.client.get("/api/v1/households/h1/daily/water", params=params, headers=env.auth("alice"))
    assert r.status == 200 and r.content_type == "text/csv"
    lines = (await r.text()).strip().splitlines()
    assert lines[0] == "day,delta"
    assert lines[1:] == ["2026-06-01,84.0", "2026-06-02,54.0"]  # half-litre steps, no 1e-13 tails


async def test_next_link_works_when_stop_defaults_to_now_and_start_is_relative(
    tmp_path: Path, store_path: Path, api_policy: Policy
) -> None:
    """The clock moves between the two requests (as it does for a real client): the Link of the first
    page must still lead to the second."""
    tick = [NOW]

    def moving() -> float:
        tick[0] += 7.0
        return tick[0]

    async for env in start_env(tmp_path, store_path, api_policy, now=moving):
        url = SERIES.format(hh="h1", cat="pv")
        r = await env.client.get(
            url, params={"start": "-20h", "limit": "5", "purpose": OWN}, headers=env.auth("alice")
        )
        first = await r.json()
        assert r.status == 200 and first["count"] == 5, first
        assert first["start"].startswith("2026-06-01T04:00")  # 20 h before the (moving) now
        link = r.headers["Link"]
        target = link[link.index("<") + 1 : link.index(">")]
        r2 = await env.client.get(target, headers=env.auth("alice"))
        second = await r2.json()
        assert r2.status == 200, second
        assert second["columns"]["time"][0] > first["columns"]["time"][-1]


async def test_a_former_homeowner_asks_for_erasure_of_their_time_and_only_they_see_it(env: Env) -> None:
    """The right reaches the person's own data (access.erasure): Alice, who moved out of h1, may still
    ask (on main: refused, only the current homeowner could); Carol, who lives there now, does not see
    Alice's request, nor Alice hers."""
    move_in_carol(env, NOW - 7200)
    url = "/api/v1/households/h1/erasure"
    r = await env.client.post(url, json={"categories": ["pv"]}, headers=env.auth("alice"))
    assert r.status == 202, await r.text()
    alices = (await r.json())["id"]
    r = await env.client.post(url, json={"categories": ["water"]}, headers=env.auth("carol"))
    carols = (await r.json())["id"]
    for who, theirs in (("alice", alices), ("carol", carols)):
        r = await env.client.get(url, headers=env.auth(who))
        assert r.status == 200 and [e["id"] for e in (await r.json())["requests"]] == [theirs], who
    (request,) = [e for e in env.state.authz.consent.erasures("h1") if e.id == alices]
    assert request.requested_by == "alice"
    # Bob never lived there: refused either way.
    assert (await env.client.post(url, json={"categories": ["pv"]}, headers=env.auth("bob"))).status == 403
    assert (await env.client.get(url, headers=env.auth("bob"))).status == 403


async def test_the_answer_to_an_erasure_request_keeps_only_what_a_contract_of_the_persons_time_holds(
    env: Env,
) -> None:
    """Sobu Gas 7 keeps its customers' records: h1's Sobu Gas supply was Alice's only (it ended when she
    moved out), so Carol, who moved in after it, is told her equipment data will be erased (on main:
    kept, because the household had once been a Sobu Gas customer); Alice is told hers is kept."""
    rel = env.state.relationships
    moved = NOW - 7200
    rel.add_contract("h1", "sobu_gas", "supply", since=NOW - 86400 * 30)
    (gas,) = [c for c in rel.contracts("h1") if c.company == "sobu_gas"]
    rel.end_contract(gas.id, at=moved)
    move_in_carol(env, moved)
    url = "/api/v1/households/h1/erasure"
    answers = {}
    for who in ("carol", "alice"):
        r = await env.client.post(url, json={"categories": ["equipment", "pv"]}, headers=env.auth(who))
        assert r.status == 202, await r.text()
        answers[who] = (await r.json())["outcome"]
    assert answers["carol"] == {"equipment": "erase", "pv": "erase"}  # deny the hold: not her time
    assert answers["alice"] == {"equipment": "keep: sobu_gas-7.legal_hold", "pv": "erase"}  # allow it
