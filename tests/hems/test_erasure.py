"""Erasure that erases, against the real stores: a real InfluxDB 2.x (raw and rollup buckets) and the
embedded SQLite store (points and rollups), with the access database on SQLite.

Household h1 changed hands: ``prev`` lived there until ``MOVED``, ``alice`` since.  h2 is ``bob``'s,
and h2 is also a Sobu Gas customer, whose terms keep contract and equipment records.  Alice and Bob ask
for everything to be erased; the operator completes both.  Then: Alice's period of h1 is gone from the
store (readings, derived negawatt items, rollups), the previous occupant's is not; h2's equipment
status is kept (Sobu Gas 7's hold, recorded with its reason) while its electricity is gone; every
decision refuses the erased data, Alice's own included; data recorded later is served again; a point
replayed into an erased period is never served, and a sweep deletes it.

On main an erasure request only changed its own status (``complete_erasure``): no data was deleted and
no decision changed, and the hold was answered for every household; this test fails there (no
``hems erasure`` exists to carry it out).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from access.compiler import compile_seeds
from access.consent import ConsentStore
from access.decision import Authorizer
from access.relationships import RelationshipStore
from access.request import AccessRequest
from hems.cli import main as hems
from hems.erasure import complete, sweep
from pipeline import stores
from pipeline.config import PipelineConfig
from pipeline.influx_store import InfluxStore
from pipeline.points import Point
from pipeline.query import SeriesQuery
from pipeline.retention import RetentionPolicy, run_retention
from pipeline.sqlite_store import SQLiteStore
from pipeline.store import Store
from seeds.loader import Seeds, load_seeds

SINCE = datetime(2026, 5, 25, tzinfo=UTC)
MOVED = datetime(2026, 5, 28, tzinfo=UTC)
T = datetime(2026, 6, 1, tzinfo=UTC)  # the operator completes the requests
LATER = T + timedelta(hours=6)  # decisions after it
STEP = timedelta(minutes=30)
SPS = "sps.service_provision"
OWN = "sps.disclosure_to_person"


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000


def _points(start: datetime, stop: datetime) -> list[Point]:
    out = []
    t = start
    while t < stop:
        for hh in ("h1", "h2"):
            out.append(Point("electricity", hh, "meter", "echonet", _ns(t), {"power_w": 400.0}))
            out.append(
                Point("equipment", hh, "meter", "echonet", _ns(t), {"health": "ok", "health_since_s": 1.0})
            )
        out.append(Point("pv", "h1", "inverter", "modbus", _ns(t), {"power_w": 900.0}))
        out.append(
            Point(
                "electricity",
                "h1",
                "negawatt",
                "derived",
                _ns(t),
                {"demand_procured_w": 400.0, "baseline_w": 500.0},
            )
        )
        t += STEP
    return out


@dataclass
class World:
    db: Path
    seeds: Seeds
    rel: RelationshipStore
    consent: ConsentStore
    authz: Authorizer


@pytest.fixture
def world(tmp_path: Path) -> World:
    seeds = load_seeds()
    db = tmp_path / "access.sqlite"
    rel, consent = RelationshipStore(db, seeds), ConsentStore(db, seeds)
    rel.add_households(["h1", "h2"])
    rel.add_contracts([(h, "sps", "service") for h in ("h1", "h2")], since=SINCE - timedelta(days=30))
    rel.add_contract("h2", "sobu_gas", "supply", since=SINCE - timedelta(days=30))
    rel.add_principal("prev", "homeowner", "Previous occupant", [OWN])
    rel.add_principal("alice", "homeowner", "Alice", [OWN])
    rel.add_principal("bob", "homeowner", "Bob", [OWN])
    rel.add_principal("op", "operator", "SPS Operations", [SPS], company="sps")
    rel.link("prev", "h1", "homeowner", since=SINCE - timedelta(days=30), until=MOVED)
    rel.link("alice", "h1", "homeowner", since=MOVED)
    rel.link("bob", "h2", "homeowner", since=SINCE - timedelta(days=30))
    return World(db, seeds, rel, consent, Authorizer(compile_seeds(seeds), rel, consent))


def _param(name: str) -> Any:
    registration = next(r for r in stores.registered() if r.name == name)
    marks = () if registration.service is None else (getattr(pytest.mark, registration.service),)
    return pytest.param(registration, marks=marks, id=name)


@pytest.fixture(params=[_param("sqlite"), _param("influx")])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    registration = request.param
    settings: dict[str, Any] = {"store": registration.name, "sqlite_path": str(tmp_path / "hems.sqlite")}
    if registration.service is not None:
        settings.update(request.getfixturevalue(f"{registration.service}_settings"))
    s = stores.open_store(PipelineConfig.from_mapping(settings, env={}))
    await s.open()
    await s.write(_points(SINCE, T))
    yield s
    await s.close()


async def _times(
    store: Store, household: str, category: str, field: str, device: str | None = None
) -> list[datetime]:
    q = SeriesQuery(
        (household,),
        category,
        (field,),
        SINCE - timedelta(days=1),
        LATER + timedelta(days=1),
        devices=None if device is None else (device,),
    )
    return list((await store.query(q))["time"])


def _served(world: World, who: str, household: str, category: str, purpose: str, at: datetime) -> tuple:
    req = AccessRequest(
        who,
        household,
        category,
        "read",
        purpose,
        (SINCE.timestamp(), LATER.timestamp()),
        identity_verified=True,
    )
    d = world.authz.decide(req, at=at.timestamp())
    assert world.authz.casbin_served(req, at=at.timestamp()) == d.served
    return d.served


async def test_erasure_deletes_from_the_store_keeps_the_held_and_decisions_refuse(
    world: World, store: Store
) -> None:
    every_h1 = await _times(store, "h1", "electricity", "power_w")
    assert every_h1[0] == SINCE and every_h1[-1] == T - STEP
    # Before: the SPS staff and the person are served their whole periods.
    assert _served(world, "op", "h1", "pv", SPS, at=T) == ((SINCE.timestamp(), LATER.timestamp()),)
    assert _served(world, "alice", "h1", "pv", OWN, at=T) == ((MOVED.timestamp(), LATER.timestamp()),)
    mine = world.consent.request_erasure(
        "h1", world.seeds, at=T - timedelta(days=1), requested_by="alice", companies={"sps"}
    )
    bobs = world.consent.request_erasure(
        "h2", world.seeds, at=T - timedelta(days=1), requested_by="bob", companies={"sps", "sobu_gas"}
    )
    assert bobs.outcome["equipment"] == "keep: sobu_gas-7.legal_hold" and mine.outcome["equipment"] == "erase"

    done = await complete(world.consent, world.rel, world.seeds, store, mine.id, "ops", at=T.timestamp())
    assert done.status == "done" and done.operator == "ops"
    assert done.periods == ((MOVED.timestamp(), T.timestamp()),)  # Alice's time there, up to completion
    assert "pv" in done.erased and "identity" in done.erased and done.kept == {}
    assert done.removed is not None and "not held" in done.removed["identity"]
    # The store: Alice's period is gone (readings, derived items, status), the previous occupant's stays.
    for category, field, device in (
        ("electricity", "power_w", "meter"),
        ("electricity", "baseline_w", "negawatt"),
        ("equipment", "health", None),
        ("pv", "power_w", None),
    ):
        left = await _times(store, "h1", category, field, device)
        assert left and max(left) < MOVED, (category, field, left[-3:])
        assert len(left) == (MOVED - SINCE) // STEP
    assert len(await _times(store, "h2", "electricity", "power_w")) == (T - SINCE) // STEP  # not h2

    held = await complete(world.consent, world.rel, world.seeds, store, bobs.id, "ops", at=T.timestamp())
    assert held.kept is not None and set(held.kept) == {"contract", "equipment"}
    assert "sobu_gas-7.legal_hold" in held.kept["equipment"] and "Sobu Gas" in held.kept["equipment"]
    assert "equipment" not in held.erased
    assert await _times(store, "h2", "electricity", "power_w") == []
    assert len(await _times(store, "h2", "equipment", "health")) == (T - SINCE) // STEP  # kept by law

    # Decisions: nobody is served what was erased, the person included; the previous occupant's period
    # and the held category are served as before.
    assert _served(world, "op", "h1", "pv", SPS, at=LATER) == (
        (SINCE.timestamp(), MOVED.timestamp()),
        (T.timestamp(), LATER.timestamp()),
    )
    assert _served(world, "alice", "h1", "pv", OWN, at=LATER) == ((T.timestamp(), LATER.timestamp()),)
    assert _served(world, "prev", "h1", "pv", OWN, at=LATER) == ((SINCE.timestamp(), MOVED.timestamp()),)
    assert _served(world, "op", "h2", "equipment", SPS, at=LATER) == ((SINCE.timestamp(), LATER.timestamp()),)
    refused = world.authz.decide(
        AccessRequest(
            "alice", "h1", "pv", "read", OWN, (MOVED.timestamp(), T.timestamp()), identity_verified=True
        ),
        at=LATER.timestamp(),
    )
    assert refused.reason == "erased" and "sobu_gas-7" in refused.clause_ids

    # New data is the household's own again; a point of the erased period replayed from a spool after
    # the completion lands in the store, is never served, and a sweep removes it.
    await store.write(
        [
            Point("pv", "h1", "inverter", "modbus", _ns(T + STEP), {"power_w": 700.0}),
            Point("pv", "h1", "inverter", "modbus", _ns(MOVED + STEP), {"power_w": 800.0}),
        ]
    )
    assert MOVED + STEP in await _times(store, "h1", "pv", "power_w")
    assert await sweep(world.consent, store) == 2
    left = await _times(store, "h1", "pv", "power_w")
    assert MOVED + STEP not in left and T + STEP in left


async def test_sqlite_rollups_of_the_erased_range_go_too(world: World, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "rolled.sqlite")
    try:
        await store.write(_points(SINCE, T))
        # Hourly and daily rollups exist for every day (retention keeps raw points 30 days).
        await run_retention(store, RetentionPolicy(raw_days=30), now=T)
        hourly = SeriesQuery(("h1",), "pv", ("power_w",), SINCE, T, every=timedelta(hours=1))
        assert (await store.query(hourly)).height == (T - SINCE) // timedelta(hours=1)
        mine = world.consent.request_erasure(
            "h1", world.seeds, ["pv"], at=T, requested_by="alice", companies={"sps"}
        )
        await complete(world.consent, world.rel, world.seeds, store, mine.id, "ops", at=T.timestamp())

        def rollups(conn: Any) -> list[tuple[str, int]]:
            sql = "SELECT level, bucket_ns FROM rollups WHERE household = 'h1' AND measurement = 'pv'"
            return conn.execute(sql + " ORDER BY 2").fetchall()

        left = await store.run_write(rollups)
        assert left and all(bucket < _ns(MOVED) for _, bucket in left), left[-3:]
        assert sum(1 for level, _ in left if level == "hour") == (MOVED - SINCE) // timedelta(hours=1)
        assert sum(1 for level, _ in left if level == "day") == (MOVED - SINCE).days
    finally:
        await store.close()


@pytest.mark.influxdb
async def test_influx_rollup_buckets_are_erased_too(world: World, influxdb: Any, influx_bucket: str) -> None:
    """The rollup tasks copy hourly and daily aggregates into their own buckets
    (``pipeline.influx_retention``); an erasure deletes there too, from the start of the window holding
    the erased range's start (a rollup point is stamped at its window's start)."""
    hourly_id = influxdb.create_bucket(f"{influx_bucket}_hourly")
    raw = InfluxStore(influxdb.url, influxdb.org, influx_bucket, influxdb.token)
    hourly = InfluxStore(influxdb.url, influxdb.org, f"{influx_bucket}_hourly", influxdb.token)
    try:
        rolled = [
            Point("pv", "h1", "inverter", "modbus", _ns(SINCE + k * timedelta(hours=1)), {"power_w": 900.0})
            for k in range((T - SINCE) // timedelta(hours=1))
        ]
        await hourly.write(rolled)
        await raw.write(_points(SINCE, T))
        # Dave, a co-owner since 10:15 of the day Alice moved in, asks: the 10:00 rollup holds a quarter
        # hour of his period, so it goes too.
        world.rel.add_principal("dave", "homeowner", "Dave", [OWN])
        world.rel.link("dave", "h1", "homeowner", since=MOVED + timedelta(hours=10, minutes=15))
        mine = world.consent.request_erasure(
            "h1", world.seeds, ["pv"], at=T, requested_by="dave", companies={"sps"}
        )
        await complete(world.consent, world.rel, world.seeds, raw, mine.id, "ops", at=T.timestamp())
        left = await _times(hourly, "h1", "pv", "power_w")
        assert max(left) == MOVED + timedelta(hours=9)
        assert len(left) == (MOVED - SINCE) // timedelta(hours=1) + 10
    finally:
        await raw.close()
        await hourly.close()
        influxdb.delete_bucket(hourly_id)


def test_the_operator_lists_and_completes_requests_with_the_command(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing completes by itself: the request waits for the operator's command, which says what it
    erased and kept."""
    import asyncio

    async def fill() -> None:
        s = SQLiteStore(tmp_path / "hems.sqlite")
        await s.write(_points(SINCE, T))
        await s.close()

    asyncio.run(fill())
    request = world.consent.request_erasure(
        "h2",
        world.seeds,
        ["electricity", "equipment"],
        at=T,
        requested_by="bob",
        companies={"sps", "sobu_gas"},
    )
    common = ["--db", str(world.db), "--data-dir", str(tmp_path)]
    assert hems(["erasure", "list", *common]) == 0
    out = capsys.readouterr().out
    assert f"#{request.id} h2" in out and "recorded" in out and "1 pending requests" in out
    assert hems(["erasure", "complete", str(request.id), "--operator", "ops", *common]) == 0
    out = capsys.readouterr().out
    assert "done" in out and "kept: equipment: kept by law (sobu_gas-7.legal_hold)" in out
    assert "removed: electricity:" in out and "points deleted" in out
    assert f"erasure {request.id}: electricity of h2 over" in caplog.text  # the loss is logged too
    assert world.consent.erasure(request.id).status == "done"
    assert hems(["erasure", "list", *common]) == 0
    assert "0 pending requests" in capsys.readouterr().out
    assert hems(["erasure", "complete", "999", "--operator", "ops", *common]) == 1


async def test_a_legal_hold_keeps_only_the_time_the_household_was_the_holding_companys_customer(
    world: World, store: Store
) -> None:
    """Sobu Gas 7 keeps what the law makes Sobu Gas keep: its own customers' records, so only the data
    recorded while the household was its customer.  h2's Sobu Gas supply ended at ``MOVED`` (bob stayed):
    bob's equipment data after it is erased, before it kept.  h1's Sobu Gas supply was the previous
    occupant's only: alice's equipment data is erased whole (both were kept whole before)."""
    (gas,) = [c for c in world.rel.contracts("h2") if c.company == "sobu_gas"]
    world.rel.end_contract(gas.id, at=MOVED.timestamp())
    world.rel.add_contract("h1", "sobu_gas", "supply", since=SINCE - timedelta(days=30))
    (prev_gas,) = [c for c in world.rel.contracts("h1") if c.company == "sobu_gas"]
    world.rel.end_contract(prev_gas.id, at=MOVED.timestamp())
    companies = {"sps", "sobu_gas"}
    bobs = world.consent.request_erasure("h2", world.seeds, at=T, requested_by="bob", companies=companies)
    mine = world.consent.request_erasure("h1", world.seeds, at=T, requested_by="alice", companies=companies)

    held = await complete(world.consent, world.rel, world.seeds, store, bobs.id, "ops", at=T.timestamp())
    assert held.kept is not None and "equipment" in held.kept and "erased over" in held.kept["equipment"]
    after = ((MOVED.timestamp(), T.timestamp()),)
    assert held.partly == {"contract": after, "equipment": after}
    # Kept: the time h2 was a Sobu Gas customer; erased: bob's time after it, from the store and decisions.
    left = await _times(store, "h2", "equipment", "health")
    assert left and max(left) < MOVED and len(left) == (MOVED - SINCE) // STEP
    assert _served(world, "op", "h2", "equipment", SPS, at=LATER) == (
        (SINCE.timestamp(), MOVED.timestamp()),
        (T.timestamp(), LATER.timestamp()),
    )

    done = await complete(world.consent, world.rel, world.seeds, store, mine.id, "ops", at=T.timestamp())
    assert "equipment" in done.erased and "equipment" not in (done.kept or {})
    left = await _times(store, "h1", "equipment", "health")
    assert left and max(left) < MOVED  # the previous occupant's (Sobu Gas's customer's) stays
    assert _served(world, "op", "h1", "equipment", SPS, at=LATER) == (
        (SINCE.timestamp(), MOVED.timestamp()),
        (T.timestamp(), LATER.timestamp()),
    )
