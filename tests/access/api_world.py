"""Shared setting for the API tests: a real SQLite series store with readings and a real access DB
(a SQLite file; or, for the tests that give ``db``, the database of ``access_db``: SQLite or PostgreSQL).

The store is filled once per session (it is only read); each test gets a fresh access database, so
tests that suspend, revoke or write the ledger never see each other.  Imported by the
``test_api_*`` modules (pytest puts this directory on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from access.api.state import STATE, AppState
from access.app import make_app
from access.clock import to_epoch
from access.compiler import Policy, compile_seeds
from access.db import AccessDb
from access.relationships import RelationshipStore
from access.tokens import TokenStore
from pipeline.points import Point
from pipeline.sqlite_store import SQLiteStore
from seeds.loader import load_seeds

DAY = datetime(2026, 6, 1, tzinfo=UTC)
# ``DAY`` as a series request's window
DAY_WINDOW = {"start": "2026-06-01T00:00:00Z", "stop": "2026-06-02T00:00:00Z"}
NOW = to_epoch("2026-06-02T00:00:00Z")
SINCE = to_epoch("2025-01-01T00:00:00Z")
STEP = timedelta(minutes=5)
PV = "sps.pv_after_maintenance"
OWN = "sps.disclosure_to_person"
STATS = "enex.management_analysis"
STATS_HOUSEHOLDS = tuple(f"s{i:02d}" for i in range(12))
HOUSEHOLDS = ("h1", "h2", *STATS_HOUSEHOLDS)


def readings(household: str, n: int) -> list[Point]:
    """A day of 5-minute points: pv, electricity, battery, water; values a function of time and home."""
    out: list[Point] = []
    k = HOUSEHOLDS.index(household) + 1
    for i in range(n):
        ts = DAY + i * STEP
        ns = int(ts.timestamp()) * 1_000_000_000
        hour = i * 5 / 60
        pv = max(0.0, math.sin((hour - 6) / 12 * math.pi)) * 1000.0 * k if 6 <= hour <= 18 else 0.0
        out.append(
            Point(
                "pv",
                household,
                "inv1",
                "modbus",
                ns,
                {"power_w": pv, "energy_wh_total": 1000.0 * k + i * 10.0, "fault": i == 7},
            )
        )
        out.append(
            Point(
                "electricity",
                household,
                "meter",
                "echonet",
                ns,
                {"power_w": 500.0 - pv, "import_wh_total": 5000.0 + i * 3.0, "export_wh_total": 100.0 + i},
            )
        )
        out.append(
            Point(
                "battery",
                household,
                "bat1",
                "echonet",
                ns,
                {"power_w": float(i % 7 - 3) * 100, "soc_pct": 50.0 + (i % 20)},
            )
        )
        out.append(Point("water", household, "wm", "echonet", ns, {"volume_l_total": 100.0 + i * 0.5}))
    return out


@pytest.fixture(scope="session")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("series") / "series.sqlite"

    async def fill() -> None:
        store = SQLiteStore(path)
        for hh in HOUSEHOLDS:
            await store.write(readings(hh, 288))
        await store.close()

    asyncio.run(fill())
    return path


@pytest.fixture(scope="session")
def api_policy() -> Policy:
    return compile_seeds(load_seeds())


def populate(rel: RelationshipStore) -> None:
    """Every household has been a customer of SPS (the monitoring service) and ENEX (electricity) since
    ``SINCE``, and every link holds since then."""
    rel.add_households(HOUSEHOLDS)
    rel.add_contracts([(h, "sps", "service") for h in HOUSEHOLDS], since=SINCE)
    rel.add_contracts([(h, "enex", "supply") for h in HOUSEHOLDS], since=SINCE)
    partner = [PV, "sps.service_provision"]
    rel.add_principal("alice", "homeowner", "Alice", [OWN])
    rel.add_principal("bob", "homeowner", "Bob", [OWN])
    rel.add_principal("sales1", "sales_company", "Sun Sales", partner)
    rel.add_principal("inst1", "installer", "Roof Installers", partner)
    rel.add_principal("whole1", "wholesaler", "PV Wholesale", partner)
    rel.add_principal("appr1", "approved_company", "Approved Care", partner)
    rel.add_principal("appr_old", "approved_company", "Old Care", partner)
    rel.add_principal("ana", "analyst", "Analyst", [STATS, "sps.service_provision"], company="enex")
    rel.link_many(
        [
            ("alice", "h1", "homeowner"),
            ("bob", "h2", "homeowner"),
            ("sales1", "h1", "sales_company"),
            ("inst1", "h1", "installer"),
            ("whole1", "h1", "wholesaler"),
        ],
        since=SINCE,
    )
    rel.approve("sales1", "appr1", ["pv", "electricity", "battery"], [PV], valid_from=SINCE)
    rel.approve("whole1", "appr_old", ["pv"], [PV], valid_from=SINCE, valid_to="2026-01-01T00:00:00Z")


TOKEN_PURPOSES = {
    "alice": [OWN],
    "bob": [OWN],
    "sales1": [PV],
    "inst1": [PV],
    "whole1": [PV],
    "appr1": [PV],
    "appr_old": [PV],
    "ana": [STATS],
}


def issue_token(tokens: TokenStore, rel: RelationshipStore, who: str, at: float) -> str:
    """A token for ``who`` with its ``TOKEN_PURPOSES``; a homeowner's is issued after their identity was
    checked (the person's rights need that), at ``at``."""
    person = rel.principal(who).kind == "homeowner"
    _, text = tokens.create(
        who,
        TOKEN_PURPOSES[who],
        rel.principal(who).purposes,
        at=at,
        identity_verified_at=at if person else None,
        identity_method="documents" if person else "",
    )
    return text


@dataclass
class Env:
    client: TestClient[Any, Any]
    state: AppState
    tokens: dict[str, str]
    db: AccessDb
    store: SQLiteStore
    extra: dict[str, Any] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def ledger_rows(self) -> int:
        return len(self.state.ledger.all())


async def start_env(
    tmp_path: Path, store_path: Path, policy: Policy, db: AccessDb | None = None, **app_kwargs: Any
) -> AsyncIterator[Env]:
    db = tmp_path / "access.sqlite" if db is None else db
    rel = RelationshipStore(db)
    populate(rel)
    tokens = TokenStore(db)
    issued = {}
    for who in TOKEN_PURPOSES:
        issued[who] = issue_token(tokens, rel, who, NOW - 3600)
    tokens.close()
    rel.close()
    store = SQLiteStore(store_path)
    kwargs: dict[str, Any] = {"policy": policy, "now": lambda: NOW, "secure_cookies": False}
    kwargs.update(app_kwargs)
    app = make_app(store, db, **kwargs)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield Env(client, app[STATE], issued, db, store)
    finally:
        await client.close()
        await store.close()


SERIES = "/api/v1/households/{hh}/series/{cat}"
RANGE = {"start": "2026-06-01T00:00:00Z", "stop": "2026-06-02T00:00:00Z"}


NEGAWATT = "xoom.negawatt"


def move_in_carol(env: Env, at: float) -> None:
    """Alice moves out of h1 at ``at`` and carol, a homeowner with a verified identity and a token for her
    own data, moves in."""
    rel = env.state.relationships
    rel.unlink("alice", "h1", "homeowner", at=at)
    rel.add_principal("carol", "homeowner", "Carol", [OWN])
    rel.link("carol", "h1", "homeowner", since=at)
    _, env.tokens["carol"] = env.state.tokens.create(
        "carol",
        [OWN],
        frozenset({OWN}),
        at=NOW - 60,
        identity_verified_at=NOW - 60,
        identity_method="documents",
    )


def add_dr_contractor(env: Env) -> None:
    """dr1 runs demand response for h1 under XOOM's joint use (1), with a token for it."""
    rel = RelationshipStore(env.db)
    rel.add_contract("h1", "xoom", "supply", since=SINCE)
    rel.add_principal("dr1", "dr_aggregator", "Negawatt Co", [NEGAWATT])
    rel.link("dr1", "h1", "dr_aggregator", since=SINCE)
    rel.close()
    tokens = TokenStore(env.db)
    _, env.tokens["dr1"] = tokens.create("dr1", [NEGAWATT], frozenset({NEGAWATT}), at=DAY.timestamp())
    tokens.close()
