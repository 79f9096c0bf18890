"""A small world in a real access database: one principal of every kind around household h1, none around h2.

Every world is made twice, on a SQLite file and on a fresh database of a real PostgreSQL server
(``tests.pg_server``), so the tests that use ``world``, ``ro_world`` or ``access_db`` are the one
conformance suite both databases must pass.

Both households have been customers of SPS (service) and ENEX (supply) since ``SINCE``; every link
holds since then too, so requests over ``WINDOW`` (the week before ``T``) see whole grants.  ``op`` is
SPS's staff and ``eop`` ENEX's; ``ana`` is an ENEX analyst."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from access.clock import to_epoch
from access.compiler import Policy, compile_seeds
from access.consent import ConsentStore
from access.db import AccessDb
from access.decision import Authorizer
from access.ledger import Ledger
from access.relationships import RelationshipStore
from access.request import AccessRequest
from seeds.loader import Seeds, load_seeds
from tests.pg_server import PgServer, database_name

T = to_epoch("2026-06-01T00:00:00Z")  # the instant the tests decide at
SINCE = to_epoch("2025-01-01T00:00:00Z")
WINDOW = (T - 7 * 86400, T)  # the data window most tests ask for


def ask(
    principal: str,
    household: str,
    category: str,
    action: str,
    purpose: str,
    window: tuple[float, float] = WINDOW,
    verified: bool = True,
) -> AccessRequest:
    """A request over ``window`` (by a caller whose identity was verified, unless ``verified`` is False)."""
    return AccessRequest(principal, household, category, action, purpose, window, identity_verified=verified)


PV = "sps.pv_after_maintenance"
SPS_PURPOSES = ("sps.service_provision", "sps.service_improvement", "sps.customer_support", "sps.surveys")


def settle(seconds: float = 0.3) -> None:
    """Let changes reach other connections: at once on SQLite (read when polled), by NOTIFY on
    PostgreSQL (milliseconds; this waits long enough for a refusal to be meaningful)."""
    time.sleep(seconds)


def within(seconds: float, condition: Callable[[], bool]) -> float | None:
    """How long ``condition`` took to hold, asked every 5 ms for at most ``seconds``; None if it never did."""
    t0 = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - t0
        if time.monotonic() - t0 > seconds:
            return None
        time.sleep(0.005)


# The two access databases every conformance case runs on.
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
]


@pytest.fixture(params=BACKENDS)
def access_db(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AccessDb:
    """One test's empty access database: a SQLite file, or a fresh PostgreSQL database (whose server
    key, having no directory to sit beside, is put in the test's own directory: ``HEMS_KEY_FILE``)."""
    if request.param == "sqlite":
        return tmp_path / "access.sqlite"
    monkeypatch.setenv("HEMS_KEY_FILE", str(tmp_path / "hems.key"))
    url: str = request.getfixturevalue("pg_url")
    return url


@dataclass
class World:
    path: AccessDb  # the access database: a SQLite file's path or a PostgreSQL URL
    seeds: Seeds
    policy: Policy
    rel: RelationshipStore
    consent: ConsentStore
    ledger: Ledger
    authz: Authorizer


@pytest.fixture(scope="session")
def seeds() -> Seeds:
    return load_seeds()


@pytest.fixture(scope="session")
def policy(seeds: Seeds) -> Policy:
    return compile_seeds(seeds)


def populate(rel: RelationshipStore, seeds: Seeds) -> None:
    enex = [p for p in seeds.purposes if p.startswith("enex.") and not seeds.purposes[p].statistics_only]
    stats = [p for p in seeds.purposes if seeds.purposes[p].statistics_only]
    rel.add_households(["h1", "h2"])
    rel.add_contracts([(h, "sps", "service") for h in ("h1", "h2")], since=SINCE)
    rel.add_contracts([(h, "enex", "supply") for h in ("h1", "h2")], since=SINCE)
    # Partners are also registered for a purpose that is not theirs, so a wrong-purpose request is
    # refused by the policy, not merely by the registration check.
    partner_purposes = [PV, "sps.service_provision", "enex.marketing"]
    rel.add_principal(
        "alice", "homeowner", "Alice", ["sps.disclosure_to_person", "enex.disclosure_to_person"]
    )
    rel.add_principal("bob", "homeowner", "Bob", ["sps.disclosure_to_person", "enex.disclosure_to_person"])
    rel.add_principal("sales1", "sales_company", "Sun Sales", partner_purposes)
    rel.add_principal("inst1", "installer", "Roof Installers", partner_purposes)
    rel.add_principal("whole1", "wholesaler", "PV Wholesale", partner_purposes)
    rel.add_principal("appr1", "approved_company", "Approved Care", partner_purposes)
    rel.add_principal("appr_narrow", "approved_company", "Narrow Care", partner_purposes)
    rel.add_principal("appr_old", "approved_company", "Old Care", partner_purposes)
    rel.add_principal("body1", "designated_body", "Safety Body", partner_purposes)
    rel.add_principal("op", "operator", "SPS Operations", [*SPS_PURPOSES, *enex, *stats], company="sps")
    rel.add_principal("eop", "operator", "ENEX Operations", [*SPS_PURPOSES, *enex, *stats], company="enex")
    rel.add_principal("ana", "analyst", "Analyst", [*stats, "sps.service_provision"], company="enex")
    rel.add_principal(
        "retail1", "retailer", "Retail Power", [*[p for p in enex if p.startswith("enex.")], PV]
    )
    rel.add_principal("grid1", "grid_operator", "Grid Co", [*enex, PV])
    rel.add_principal("unreg", "installer", "Unregistered Installer", [])
    # ENEX joint use (2): a group company ENEX registered, one it did not, and a partner's analyst.
    group = ["enex.billing", "enex.enquiries", "enex.supply_notices", PV]
    rel.add_principal("partner1", "named_party", "ENEX Group Card Co", group)
    rel.add_principal("partner2", "named_party", "Unregistered Partner", group)
    rel.add_principal("pana", "analyst", "Partner Analytics", stats)
    rel.add_principal(
        "agent1", "agent", "Alice's Lawyer", ["sps.disclosure_to_person", "enex.disclosure_to_person"]
    )
    rel.link_many(
        [
            ("alice", "h1", "homeowner"),
            ("bob", "h2", "homeowner"),
            ("sales1", "h1", "sales_company"),
            ("inst1", "h1", "installer"),
            ("whole1", "h1", "wholesaler"),
            ("retail1", "h1", "retailer"),
            ("grid1", "h1", "grid_operator"),
            ("unreg", "h1", "installer"),
        ],
        since=SINCE,
    )
    all_sps = ["identity", "contract", "equipment", "electricity", "pv", "battery", "water", "gas"]
    all_sps += ["external_generation", "household", "ev"]
    rel.approve("sales1", "appr1", all_sps, [PV, "sps.service_provision"], valid_from=SINCE)
    rel.approve("inst1", "appr_narrow", ["pv"], [PV], valid_from=SINCE)
    rel.approve("whole1", "appr_old", all_sps, [PV], valid_from=SINCE, valid_to="2026-01-01T00:00:00Z")
    rel.designate("op", "body1", "h1", at=SINCE)
    rel.register_joint_use("enex", "enex-5.2", "partner1", since=SINCE)
    rel.register_joint_use("enex", "enex-5.2.6", "pana", since=SINCE)
    rel.add_mandate("alice", "agent1", since=SINCE, verified_at=SINCE, method="power_of_attorney")


def _world(path: AccessDb, seeds: Seeds, policy: Policy, key_file: Path | None = None) -> Iterator[World]:
    rel, consent = RelationshipStore(path, seeds), ConsentStore(path, seeds)
    ledger = Ledger(path, key_file=key_file)
    populate(rel, seeds)
    yield World(path, seeds, policy, rel, consent, ledger, Authorizer(policy, rel, consent))
    rel.close()
    consent.close()
    ledger.close()


@pytest.fixture
def world(access_db: AccessDb, seeds: Seeds, policy: Policy) -> Iterator[World]:
    """A fresh world each test may change."""
    yield from _world(access_db, seeds, policy)


@pytest.fixture
def sqlite_world(tmp_path: Path, seeds: Seeds, policy: Policy) -> Iterator[World]:
    """A fresh world in a SQLite file, for what only a file has (a directory, a file name)."""
    yield from _world(tmp_path / "access.sqlite", seeds, policy)


@pytest.fixture(scope="session", params=BACKENDS)
def ro_world(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, seeds: Seeds, policy: Policy
) -> Iterator[World]:
    """One shared world for tests that only ask questions (never write to it)."""
    directory = tmp_path_factory.mktemp("ro")
    if request.param == "sqlite":
        yield from _world(directory / "access.sqlite", seeds, policy)
        return
    server: PgServer = request.getfixturevalue("postgres")
    name = database_name("ro_world")
    try:
        yield from _world(server.create_database(name), seeds, policy, key_file=directory / "hems.key")
    finally:
        server.drop_database(name)
