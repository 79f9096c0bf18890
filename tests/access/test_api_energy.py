"""The energy report over real HTTP, against an emulated home's readings in a real SQLite store.

Every total is held to the store's own counters, the home's consumption (which no meter reads) to the
emulated home's true use, the balance to 1 %, and the cost to the tariff applied by hand.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from access.api.energy import period_of
from access.api.state import STATE
from access.app import make_app
from access.compiler import Policy
from access.relationships import RelationshipStore
from access.tariff import Band, Tariff
from access.tokens import TokenStore
from pipeline.query import SeriesQuery
from pipeline.sqlite_store import SQLiteStore
from tests.access.api_world import OWN, PV, SINCE, api_policy, populate
from tests.access.home_world import EmulatedHome, emulated_home

__all__ = ["api_policy"]
EV_OWN = "kaluza.disclosure_to_person"
START = datetime(2026, 5, 29, 15, tzinfo=UTC)  # 2026-05-30 00:00 JST
NOW = datetime(2026, 6, 1, 15, 30, tzinfo=UTC)  # 2026-06-02 00:30 JST
DAY = "2026-06-01"
DAY_START = datetime(2026, 5, 31, 15, tzinfo=UTC)
DAY_STOP = datetime(2026, 6, 1, 15, tzinfo=UTC)
URL = "/api/v1/households/h1/energy"
TARIFF = Tariff(
    feed_in_yen_per_kwh=10.0,
    bands=(
        Band("night", 22, 8, 20.0),
        Band("day", 8, 22, 50.0, "weekday"),
        Band("we", 8, 22, 30.0, "weekend"),
    ),
)
COUNTERS = {
    "pv": ("pv", "energy_wh_total"),
    "fuel_cell": ("external_generation", "energy_wh_total"),
    "grid_import": ("electricity", "import_wh_total"),
    "grid_export": ("electricity", "export_wh_total"),
    "battery_charge": ("battery", "charge_wh_total"),
    "battery_discharge": ("battery", "discharge_wh_total"),
    "ev_charge": ("ev", "charge_wh_total"),
    "ev_discharge": ("ev", "discharge_wh_total"),
}


@pytest.fixture(scope="module")
def home() -> EmulatedHome:
    return emulated_home("h1", START, NOW, timedelta(minutes=5))


@pytest.fixture(scope="module")
def series_path(tmp_path_factory: pytest.TempPathFactory, home: EmulatedHome) -> Path:
    path = tmp_path_factory.mktemp("energy") / "series.sqlite"

    async def fill() -> None:
        store = SQLiteStore(path)
        await store.write(home.points)
        await store.close()

    asyncio.run(fill())
    return path


class World:
    def __init__(self, client: TestClient[Any, Any], tokens: dict[str, str], store: SQLiteStore) -> None:
        self.client, self.tokens, self.store = client, tokens, store

    async def get(self, who: str, **params: str) -> tuple[int, Any]:
        r = await self.client.get(URL, params=params, headers={"Authorization": f"Bearer {self.tokens[who]}"})
        body = await (
            r.json() if r.content_type == "application/json" or "problem" in r.content_type else r.text()
        )
        return r.status, body

    def ledger(self) -> list[Any]:
        app = self.client.app
        assert app is not None
        return app[STATE].ledger.all()


@pytest.fixture
async def world(tmp_path: Path, series_path: Path, api_policy: Policy) -> AsyncIterator[World]:
    db = tmp_path / "access.sqlite"
    rel = RelationshipStore(db)
    populate(rel)
    rel.add_principal("hana", "homeowner", "Hana", [OWN, EV_OWN])
    rel.link("hana", "h1", "homeowner", since=SINCE)
    rel.add_contract("h1", "kaluza", "app", since=SINCE)  # the car's app, under the EV terms
    tokens = TokenStore(db)
    issued = {}
    for who, purposes in {"alice": [OWN], "hana": [OWN, EV_OWN], "inst1": [PV], "bob": [OWN]}.items():
        person = rel.principal(who).kind == "homeowner"  # the person's rights need a checked identity
        _, issued[who] = tokens.create(
            who,
            purposes,
            rel.principal(who).purposes,
            at=NOW.timestamp() - 60,
            identity_verified_at=NOW.timestamp() - 60 if person else None,
            identity_method="documents" if person else "",
        )
    tokens.close()
    rel.close()
    store = SQLiteStore(series_path)
    app = make_app(store, db, policy=api_policy, now=NOW.timestamp, secure_cookies=False, tariff=TARIFF)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield World(client, issued, store)
    finally:
        await client.close()
        await store.close()


async def _rise(store: SQLiteStore, category: str, field: str, start: datetime, stop: datetime) -> float:
    """The counter's rise between its last sample before ``start`` and its last before ``stop``."""
    df = await store.query(SeriesQuery(("h1",), category, (field,), start - timedelta(hours=2), stop))
    before = df.filter(df["time"] < start)[field].to_list()
    until = df.filter(df["time"] < stop)[field].to_list()
    return float(until[-1] - before[-1])


async def test_totals_equal_the_store_and_the_flows_balance(world: World, home: EmulatedHome) -> None:
    status, body = await world.get("hana", purpose=f"{OWN},{EV_OWN}", date=DAY)
    assert status == 200, body
    assert body["refused"] == {} and body["purposes"]["ev"] == EV_OWN and body["purposes"]["pv"] == OWN
    assert (body["start"], body["stop"]) == ("2026-05-31T15:00:00.000Z", "2026-06-01T15:00:00.000Z")
    totals = body["totals"]
    for quantity, (category, field) in COUNTERS.items():
        want = await _rise(world.store, category, field, DAY_START, DAY_STOP)
        assert totals[f"{quantity}_wh"] == pytest.approx(want, abs=0.002), quantity
    water = await _rise(world.store, "water", "volume_l_total", DAY_START, DAY_STOP)
    assert totals["water_m3"] == pytest.approx(water / 1000.0, abs=1e-6)
    assert totals["pv_wh"] > 1000 and totals["fuel_cell_wh"] > 100
    assert totals["ev_charge_wh"] + totals["ev_discharge_wh"] > 100  # the car took part
    # The balance: PV + grid import + battery discharge + fuel cell (+ the car's V2H) = home + export
    # + battery charge (+ the car's charge), within 1 %.
    sources = sum(
        totals[f"{q}_wh"] for q in ("pv", "grid_import", "battery_discharge", "fuel_cell", "ev_discharge")
    )
    sinks = sum(totals[f"{q}_wh"] for q in ("home", "grid_export", "battery_charge", "ev_charge"))
    assert abs(sources - sinks) <= 0.01 * sources
    assert body["balance"]["sources_wh"] == pytest.approx(sources, abs=0.01)
    # ...and the home's consumption is what the home really used (no meter reads it).
    assert totals["home_wh"] == pytest.approx(home.true_load_wh(DAY_START, DAY_STOP), rel=0.01)
    # Every flow out of a source adds up to that source, every flow into a sink to that sink.
    for q in ("pv", "grid_import", "battery_discharge", "fuel_cell", "ev_discharge"):
        out = sum(f["wh"] for f in body["flows"] if f["from"] == q)
        assert out == pytest.approx(totals[f"{q}_wh"], abs=0.05), q
    for q in ("home", "grid_export", "battery_charge", "ev_charge"):
        into = sum(f["wh"] for f in body["flows"] if f["to"] == q)
        assert into == pytest.approx(totals[f"{q}_wh"], abs=0.05), q
    assert not any(f["from"] == "grid_import" and f["to"] == "grid_export" for f in body["flows"])
    pv_out = sum(f["wh"] for f in body["flows"] if f["from"] == "pv" and f["to"] == "grid_export")
    assert body["self_consumption"] == pytest.approx(1 - pv_out / totals["pv_wh"], abs=1e-4)
    use = totals["home_wh"] + totals["ev_charge_wh"]
    assert body["self_sufficiency"] == pytest.approx((use - totals["grid_import_wh"]) / use, abs=1e-4)
    # The day before, the same way.
    prev = body["previous"]
    assert (prev["first_day"], prev["last_day"]) == ("2026-05-31", "2026-05-31")
    want = await _rise(world.store, "pv", "energy_wh_total", DAY_START - timedelta(days=1), DAY_START)
    assert prev["totals"]["pv_wh"] == pytest.approx(want, abs=0.002)
    # The last state of charge: the store's last reading before the day's end.
    soc = await world.store.query(
        SeriesQuery(("h1",), "battery", ("soc_pct",), DAY_STOP - timedelta(hours=1), DAY_STOP)
    )
    assert body["last_state"]["battery"]["soc_pct"] == pytest.approx(soc["soc_pct"][-1], abs=0.05)
    assert body["last_state"]["ev"]["connected"] in (True, False)
    assert len(body["hourly"]["time"]) == 24


async def test_cost_follows_the_configured_tariff(world: World) -> None:
    status, body = await world.get("alice", purpose=OWN, date=DAY)  # Monday 2026-06-01
    assert status == 200
    want_import = want_export = 0.0
    for hour in range(24):
        start = DAY_START + timedelta(hours=hour)
        bought = await _rise(world.store, "electricity", "import_wh_total", start, start + timedelta(hours=1))
        sold = await _rise(world.store, "electricity", "export_wh_total", start, start + timedelta(hours=1))
        local = (hour + 0) % 24  # DAY_START is 00:00 in Tokyo
        price = 20.0 if local >= 22 or local < 8 else 50.0
        want_import += bought / 1000 * price
        want_export += sold / 1000 * 10.0
    cost = body["cost"]
    assert cost["import_yen"] == pytest.approx(want_import, abs=0.05)
    assert cost["export_yen"] == pytest.approx(want_export, abs=0.05)
    assert cost["net_yen"] == pytest.approx(want_import - want_export, abs=0.05)
    assert {b["band"] for b in cost["bands"]} <= {"night", "day"}
    assert body["tariff"]["feed_in_yen_per_kwh"] == 10.0
    assert sum(body["hourly"]["import_yen"]) == pytest.approx(want_import, abs=0.1)


async def test_one_purpose_leaves_the_car_out_and_says_so(world: World) -> None:
    status, body = await world.get("alice", purpose=OWN, date=DAY)
    assert status == 200 and body["refused"] == {"ev": "no_grant"}
    assert body["totals"]["ev_charge_wh"] == 0.0 and body["last_state"]["ev"] is None


async def test_csv_download_is_the_hourly_rows(world: World) -> None:
    r = await world.client.get(
        URL,
        params={"purpose": f"{OWN},{EV_OWN}", "date": DAY, "format": "csv"},
        headers={"Authorization": f"Bearer {world.tokens['hana']}"},
    )
    assert r.status == 200 and r.content_type == "text/csv"
    assert r.headers["Content-Disposition"] == 'attachment; filename="hems-h1-day-2026-06-01.csv"'
    rows = list(csv.DictReader(io.StringIO(await r.text())))
    assert len(rows) == 24
    assert (
        rows[0]["hour_start_jst"] == "2026-06-01 00:00"
        and rows[0]["hour_start_utc"] == "2026-05-31T15:00:00Z"
    )
    _status, body = await world.get("hana", purpose=f"{OWN},{EV_OWN}", date=DAY)
    for q in ("pv", "home", "grid_import"):
        assert sum(float(r[f"{q}_wh"]) for r in rows) == pytest.approx(body["totals"][f"{q}_wh"], abs=0.05)
    assert sum(float(r["gas_m3"]) for r in rows) == pytest.approx(body["totals"]["gas_m3"], abs=1e-5)


async def test_a_partner_gets_what_its_clause_allows_recorded_once_and_a_stranger_nothing(
    world: World,
) -> None:
    before = len(world.ledger())
    status, body = await world.get("inst1", purpose=PV, date=DAY)
    assert status == 200 and body["refused"]  # maintenance does not reach every category
    served = set(body["purposes"])
    assert "pv" in served
    records = world.ledger()[before:]
    assert len(records) == 1
    rec = records[0]
    assert rec.recipient == "inst1" and set(rec.categories) == served and rec.purpose == PV
    # Both periods were served: the record covers the day before too, from its baseline hour.
    assert (
        rec.period_start == (DAY_START - timedelta(days=1, hours=1)).timestamp()
        and rec.period_end == DAY_STOP.timestamp()
    )
    status, body = await world.get("bob", purpose=OWN, date=DAY)
    assert status == 403 and body["reason"] == "no_grant"
    assert len(world.ledger()) == before + 1
    # The homeowner's own reading is no provision.
    await world.get("alice", purpose=OWN, date=DAY)
    assert len(world.ledger()) == before + 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"span": "year"}, "span"),
        ({"date": "2026-13-01"}, "date"),
        ({"date": "02/06/2026"}, "date"),
        ({"format": "arrow"}, "format"),
        ({"purpose": ",".join([OWN] * 1 + [f"x.p{i}" for i in range(5)])}, "purpose"),
    ],
)
async def test_bad_parameters_name_themselves(world: World, params: dict[str, str], field: str) -> None:
    status, body = await world.get("alice", **({"purpose": OWN} | params))
    assert status == 400 and body["field"] == field


def test_periods_are_tokyo_days_weeks_and_months() -> None:
    now = datetime(2026, 3, 31, 16, tzinfo=UTC)  # 2026-04-01 01:00 in Tokyo
    p = period_of({}, now)
    assert (p.span, p.first_day, p.last_day) == ("day", date(2026, 4, 1), date(2026, 4, 1))
    assert p.start == datetime(2026, 3, 31, 15, tzinfo=UTC)
    assert p.previous().first_day == date(2026, 3, 31)
    w = period_of({"span": "week", "date": "2026-03-03"}, now)
    assert (w.first_day, w.last_day) == (date(2026, 2, 25), date(2026, 3, 3))
    assert (w.previous().first_day, w.previous().last_day) == (date(2026, 2, 18), date(2026, 2, 24))
    m = period_of({"span": "month", "date": "2026-03-17"}, now)
    assert (m.first_day, m.last_day) == (date(2026, 3, 1), date(2026, 3, 31))
    assert (m.previous().first_day, m.previous().last_day) == (date(2026, 2, 1), date(2026, 2, 28))
    assert m.stop == datetime(2026, 3, 31, 15, tzinfo=UTC)


async def test_an_erasure_takes_its_period_out_of_every_report(world: World) -> None:
    """Once the operator begins an erasure (``hems erasure complete``), no report carries anything of the
    erased day, to anyone, the person included; a day outside the erased period is reported as before."""
    status, before = await world.get("alice", purpose=OWN, date="2026-05-31")
    assert status == 200
    assert (await world.get("inst1", purpose=PV, date=DAY))[0] == 200
    app = world.client.app
    assert app is not None
    consent = app[STATE].authz.consent
    request = consent.request_erasure("h1", app[STATE].authz.policy.seeds, at=NOW, requested_by="alice")
    consent.begin_erasure(
        request.id,
        erased=[c for c, o in request.outcome.items() if o == "erase"],
        periods=((DAY_START.timestamp(), DAY_STOP.timestamp()),),
        kept={},
        operator="ops",
        at=NOW.timestamp(),
    )
    for who, purpose in (("alice", OWN), ("inst1", PV)):
        status, body = await world.get(who, purpose=purpose, date=DAY)
        # Only the periods served are read: nothing of the erased day, the day before as it was.
        assert status == 200 and body["hours"] == 0 and body["flows"] == [], who
        assert set(body["totals"].values()) == {0.0}, (who, body["totals"])
        assert body["previous"]["totals"] == before["totals"]
    status, after = await world.get("alice", purpose=OWN, date="2026-05-31")
    assert status == 200 and after["totals"] == before["totals"]


async def test_a_demand_response_contractor_gets_no_meter_totals(world: World) -> None:
    """XOOM's negawatt clause grants items of electricity (generation sold, demand procured, demand
    reduction, baseline), not the meter's totals a report is made of: refused, naming the clause."""
    app = world.client.app
    assert app is not None
    state = app[STATE]
    state.relationships.add_contract("h1", "xoom", "supply", since=SINCE)
    state.relationships.add_principal("dr1", "dr_aggregator", "Negawatt Co", ["xoom.negawatt"])
    state.relationships.link("dr1", "h1", "dr_aggregator", since=SINCE)
    _, world.tokens["dr1"] = state.tokens.create(
        "dr1", ["xoom.negawatt"], frozenset({"xoom.negawatt"}), at=NOW.timestamp() - 60
    )
    status, body = await world.get("dr1", purpose="xoom.negawatt", date=DAY)
    assert status == 403 and body["reason"] == "item_not_granted", body
    assert body["clause_ids"] == ["xoom-7.1.negawatt"] and "baseline_w" in body["detail"]


GAP = (datetime(2026, 6, 1, 3, tzinfo=UTC), datetime(2026, 6, 1, 6, 30, tzinfo=UTC))  # noon to 15:30 JST


async def _suspend_for_gap(world: World, recipient: str) -> None:
    """The homeowner suspended provision to ``recipient`` at noon and lifted it at 15:30 (Tokyo)."""
    app = world.client.app
    assert app is not None
    consent = app[STATE].authz.consent
    s = consent.suspend("h1", "provision", recipient=recipient, at=GAP[0].timestamp())
    consent.lift(s.id, at=GAP[1].timestamp())


async def test_no_counter_rise_spans_a_refused_gap(world: World) -> None:
    """SPS 2(6): while provision to the installer was suspended it may receive nothing recorded then, not
    even as part of a total.  A meter's rise from the last reading before the gap to the first hour after
    it is the gap's energy, so the day's PV total is the rises inside each served period only."""
    status, body = await world.get("inst1", purpose=PV, date=DAY)
    assert status == 200 and body["totals"]["pv_wh"] > 0
    await _suspend_for_gap(world, "inst1")
    status, body = await world.get("inst1", purpose=PV, date=DAY)
    assert status == 200, body
    # Served: [day start - 1 h, noon) and [15:30, day end); the first served hour after the gap (15:00,
    # read from 15:30) is the second period's baseline.
    expected = await _rise(world.store, "pv", "energy_wh_total", DAY_START, GAP[0]) + await _rise(
        world.store, "pv", "energy_wh_total", GAP[1].replace(minute=0) + timedelta(hours=1), DAY_STOP
    )
    assert body["totals"]["pv_wh"] == pytest.approx(expected, abs=1e-3)


async def test_a_suspension_of_another_recipient_leaves_the_rises_whole(world: World) -> None:
    """The allow side: a gap in another company's provision changes nothing of this one's totals."""
    status, before = await world.get("inst1", purpose=PV, date=DAY)
    await _suspend_for_gap(world, "sales1")
    status, after = await world.get("inst1", purpose=PV, date=DAY)
    assert status == 200 and after["totals"] == before["totals"]
    expected = await _rise(world.store, "pv", "energy_wh_total", DAY_START, DAY_STOP)
    assert after["totals"]["pv_wh"] == pytest.approx(expected, abs=1e-3)


async def test_the_ledger_covers_the_baseline_hour_a_report_reads(world: World) -> None:
    """A report's first hour is the rise from the last reading of the hour before it: that reading is
    provided too, so the record of a partner's report (JSON: both periods; CSV: the period) starts an
    hour before the first day, as the daily endpoint's record starts a window before its range."""
    before = len(world.ledger())
    assert (await world.get("inst1", purpose=PV, date=DAY))[0] == 200
    assert (await world.get("inst1", purpose=PV, date=DAY, format="csv"))[0] == 200
    json_record, csv_record = world.ledger()[before:]
    first_day = DAY_START - timedelta(days=1)
    assert (json_record.period_start, json_record.period_end) == (
        (first_day - timedelta(hours=1)).timestamp(),
        DAY_STOP.timestamp(),
    )
    assert (csv_record.period_start, csv_record.period_end) == (
        (DAY_START - timedelta(hours=1)).timestamp(),
        DAY_STOP.timestamp(),
    )
