"""The relationship store: persistence, approvals that die with their approver, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from access.clock import to_epoch
from access.compiler import compile_seeds
from access.consent import ConsentStore
from access.db import is_url
from access.decision import Authorizer
from access.relationships import RelationshipError, RelationshipStore
from access.world import Facts
from seeds.loader import load_seeds
from tests.access.conftest import PV, T, World, ask, within


def test_everything_survives_a_reopen(world: World) -> None:
    before = world.rel.facts()
    world.rel.close()
    reopened = RelationshipStore(world.path)
    try:
        after = reopened.facts()
        assert after == before
        assert after.contracts and after.joint_uses and after.mandates and after.designations
        assert reopened.principal("inst1").display_name == "Roof Installers"
        authz = Authorizer(world.policy, reopened, ConsentStore(world.path))
        assert authz.decide(ask("appr1", "h1", "pv", "read", PV), at=T).allowed
        if reopened._db.dialect == "sqlite":
            assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        reopened.close()
        world.rel = RelationshipStore(world.path)  # the fixture closes it


def test_approval_expires(world: World) -> None:
    a = world.rel.approve("sales1", "appr_narrow", ["battery"], [PV], valid_from=T - 100, valid_to=T + 100)
    assert world.authz.decide(ask("appr_narrow", "h1", "battery", "read", PV), at=T).allowed
    assert not world.authz.decide(ask("appr_narrow", "h1", "battery", "read", PV), at=T + 100).allowed
    assert world.rel.approval_status(a.id, T + 100) == "expired"
    assert world.rel.approval_status(a.id, T - 200) == "not yet valid"
    assert "from PV Wholesale expired on 2026-01-01" in world.authz.explain(
        ask("appr_old", "h1", "pv", "read", PV), at=T
    )


def test_approval_dies_when_the_approver_loses_the_household(world: World) -> None:
    assert world.authz.decide(ask("appr1", "h1", "pv", "read", PV), at=T).allowed
    world.rel.unlink("sales1", "h1", "sales_company", at=T - 1)
    assert not world.authz.decide(ask("sales1", "h1", "pv", "read", PV), at=T).allowed
    assert not world.authz.decide(ask("appr1", "h1", "pv", "read", PV), at=T).allowed
    assert world.rel.approval_status(1, T).startswith("void")
    # History is kept: before the unlink both still held.
    assert world.authz.decide(ask("appr1", "h1", "pv", "read", PV), at=T - 10).allowed


def test_approval_follows_new_households_of_the_approver(world: World) -> None:
    world.rel.link("sales1", "h2", "sales_company", since=T - 5)
    assert world.authz.decide(ask("appr1", "h2", "pv", "read", PV), at=T).allowed
    assert not world.authz.decide(ask("appr1", "h2", "pv", "read", PV), at=T - 10).allowed


def test_revoked_approval_and_designation(world: World) -> None:
    world.rel.revoke_approval(2, at=T - 1)
    assert not world.authz.decide(ask("appr_narrow", "h1", "pv", "read", PV), at=T).allowed
    world.rel.revoke_designation(1, at=T - 1)
    assert not world.authz.decide(ask("body1", "h1", "pv", "read", PV), at=T).allowed


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.add_principal("x1", "wizard", "X"), "unknown kind"),
        (lambda r: r.add_principal("installer", "installer", "X"), "reserved"),
        (lambda r: r.add_principal("a.b", "installer", "X"), "principal id"),
        (lambda r: r.add_principal("inst1", "installer", "X"), "already exists"),
        (lambda r: r.add_principal("x2", "installer", "X", ["maintenance"]), "purpose"),
        (lambda r: r.register_purposes("inst1", ["DROP TABLE"]), "purpose"),
        (lambda r: r.add_household("own"), "reserved"),
        (lambda r: r.link("inst1", "h9", "installer"), "unknown household"),
        (lambda r: r.link("alice", "h2", "installer"), "homeowner"),
        (lambda r: r.link("inst1", "h2", "approved_company"), "link role"),
        (lambda r: r.approve("appr1", "appr_old", ["pv"], [PV]), "nothing to lend"),
        (lambda r: r.approve("sales1", "inst1", ["pv"], [PV]), "not an approved_company"),
        (lambda r: r.approve("sales1", "appr1", ["rain"], [PV]), "unknown categories"),
        (lambda r: r.approve("sales1", "appr1", ["pv"], [PV], valid_from=T, valid_to=T - 1), "after"),
        (lambda r: r.designate("inst1", "body1", "h2"), "not the operator"),
        (lambda r: r.designate("eop", "body1", "h2"), "name no designated bodies"),
        (lambda r: r.link("ana", "h2", "installer"), "only be linked as a analyst"),
        (lambda r: r.link("op", "h2", "sales_company"), "only be linked as a operator"),
        (lambda r: r.link("retail1", "h2", "installer"), "the kind decides the role"),
        (lambda r: r.add_principal("op2", "operator", "X"), "one company"),
        (lambda r: r.add_principal("op2", "operator", "X", company="acme"), "unknown company"),
        (lambda r: r.add_principal("i2", "installer", "X", company="sps"), "company of its own"),
        (lambda r: r.add_contract("h2", "sps", "lease"), "contract kind"),
        (lambda r: r.add_contract("h9", "sps", "service"), "unknown household"),
        (lambda r: r.register_joint_use("enex", "enex-5.1", "partner2"), "does not name its parties"),
        (lambda r: r.register_joint_use("enex", "sps-2.2.4", "partner2"), "belongs to sps"),
        (lambda r: r.register_joint_use("enex", "enex-5.2", "inst1"), "is a installer"),
        (lambda r: r.register_joint_use("enex", "enex-5.2", "eop"), "own staff"),
        (lambda r: r.add_mandate("inst1", "agent1"), "not a homeowner"),
        (lambda r: r.add_mandate("alice", "inst1"), "not an agent"),
        (lambda r: r.add_mandate("alice", "agent1", verified_at=T), "how it was verified"),
        (lambda r: r.link("inst1", "h2", "installer", since=T, until=T - 1), "after its start"),
    ],
)
def test_bad_relationships_are_refused_and_lose_nothing(world: World, call, message: str) -> None:  # type: ignore[no-untyped-def]
    before = world.rel.facts()
    with pytest.raises(RelationshipError, match=message):
        call(world.rel)
    assert world.rel.facts() == before


def test_naive_datetimes_are_refused() -> None:
    from datetime import datetime

    with pytest.raises(ValueError, match="naive"):
        to_epoch(datetime(2026, 1, 1))


def test_load_many_households_in_bulk(tmp_path: Path) -> None:
    store = RelationshipStore(tmp_path / "bulk.sqlite")
    households = [f"h{i:05d}" for i in range(2000)]
    store.add_households(households)
    store.add_principal("inst", "installer", "I", [PV])
    store.link_many(((("inst", h, "installer") for h in households)), since=0)
    assert len(store.facts().links) == 2000
    store.close()


def test_writes_by_another_process_are_noticed(world: World) -> None:
    """A second connection stands in for ``hems principals`` run while the API serves: its writes
    count within the second replicas promise (at once on SQLite, polled here every call; by NOTIFY on
    PostgreSQL, which arrives a little after the commit)."""
    authz = Authorizer(world.policy, world.rel, world.consent, poll_seconds=0.0)

    def allowed() -> bool:
        return authz.decide(ask("inst1", "h2", "pv", "read", PV), at=T).allowed

    assert not allowed()
    other = RelationshipStore(world.path)
    other.link("inst1", "h2", "installer", since=T - 10)
    other.close()
    assert within(1.0, allowed) is not None
    other_consent = ConsentStore(world.path)
    other_consent.suspend("h2", "provision", at=T - 5)
    other_consent.close()
    assert within(1.0, lambda: not allowed()) is not None


def test_a_consent_change_rebuilds_without_reading_the_relationships_again(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A suspension reaches the decisions without re-reading every household's relationships (most of
    a rebuild); a relationship change by another connection is read again: everything on a SQLite
    file (its counter does not say which household), only that household on PostgreSQL (announced)."""
    reads: list[int] = []
    read_facts = world.rel.facts

    def counted() -> Facts:
        reads.append(1)
        return read_facts()

    monkeypatch.setattr(world.rel, "facts", counted)
    authz = Authorizer(world.policy, world.rel, world.consent, poll_seconds=0.0)
    assert authz.decide(ask("inst1", "h1", "pv", "read", PV), at=T).allowed and len(reads) == 1
    world.consent.suspend("h1", "provision", at=T - 5)
    assert not authz.decide(ask("inst1", "h1", "pv", "read", PV), at=T).allowed
    assert len(reads) == 1
    other = RelationshipStore(world.path)
    other.link("inst1", "h2", "installer", since=T - 10)
    other.close()
    assert within(1.0, lambda: authz.decide(ask("inst1", "h2", "pv", "read", PV), at=T).allowed) is not None
    assert len(reads) == (1 if is_url(world.path) else 2)


def test_a_supply_point_has_one_retailer_at_a_time(world: World) -> None:
    """ENEX 5 / XOOM 7 footnote *1: only the operators each purpose needs, not every retailer."""
    world.rel.add_principal("retail2", "retailer", "Other Retail", [])
    with pytest.raises(RelationshipError, match="one retailer at a time"):
        world.rel.link("retail2", "h1", "retailer", since=T)
    world.rel.unlink("retail1", "h1", "retailer", at=T)
    world.rel.link("retail2", "h1", "retailer", since=T)  # the switch: one after the other
    assert {lk.principal for lk in world.rel.facts().links if lk.role == "retailer"} == {"retail1", "retail2"}


def test_a_version_1_database_is_migrated(tmp_path: Path) -> None:
    """An access database written before companies and periods existed opens, keeps its facts, and gives
    every household an SPS service contract from when it was added; its operator acts for nobody until
    a company is set (and says so)."""
    import sqlite3

    path = tmp_path / "v1.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.execute("INSERT INTO households VALUES ('h1', 100.0)")
    db.execute("INSERT INTO principals VALUES ('inst1', 'installer', 'Roof', 100.0)")
    db.execute("INSERT INTO principals VALUES ('op', 'operator', 'Operator', 100.0)")
    db.execute("INSERT INTO principal_purposes VALUES ('inst1', ?)", (PV,))
    db.execute("INSERT INTO links VALUES ('inst1', 'h1', 'installer', 50.0, NULL)")
    db.execute(
        "INSERT INTO suspensions (household, scope, recipient, category, requested_at) "
        "VALUES ('h1', 'use', NULL, 'gas', 60.0)"
    )
    db.commit()
    db.close()
    store, consent = RelationshipStore(path), ConsentStore(path)
    try:
        facts = store.facts()
        assert [(c.household, c.company, c.kind, c.since) for c in facts.contracts] == [
            ("h1", "sps", "service", 50.0)
        ]
        assert facts.principals["op"].company is None
        assert any("operator 'op' acts for no company" in p for p in store.problems())
        assert [(s.company, s.category) for s in consent.suspensions()] == [("sps", "gas")]
        authz = Authorizer(compile_seeds(load_seeds()), store, consent)
        assert authz.decide(ask("inst1", "h1", "pv", "read", PV), at=T).allowed
        store.set_company("op", "sps")
        assert store.facts().principals["op"].company == "sps"
    finally:
        store.close()
        consent.close()
    reopened = RelationshipStore(path)  # migrated once: reopening changes nothing
    try:
        assert len(reopened.contracts()) == 1
    finally:
        reopened.close()


V1_SCHEMA = """
CREATE TABLE households (id TEXT PRIMARY KEY, created_at REAL NOT NULL);
CREATE TABLE principals (id TEXT PRIMARY KEY, kind TEXT NOT NULL, display_name TEXT NOT NULL,
    created_at REAL NOT NULL);
CREATE TABLE principal_purposes (principal TEXT NOT NULL, purpose TEXT NOT NULL,
    PRIMARY KEY (principal, purpose));
CREATE TABLE links (principal TEXT NOT NULL, household TEXT NOT NULL, role TEXT NOT NULL, since REAL NOT NULL,
    until REAL, PRIMARY KEY (principal, household, role, since));
CREATE TABLE approvals (id INTEGER PRIMARY KEY AUTOINCREMENT, approver TEXT NOT NULL, approved TEXT NOT NULL,
    categories TEXT NOT NULL, purposes TEXT NOT NULL, valid_from REAL NOT NULL, valid_to REAL NOT NULL,
    created_at REAL NOT NULL, revoked_at REAL);
CREATE TABLE designations (id INTEGER PRIMARY KEY AUTOINCREMENT, operator TEXT NOT NULL,
    principal TEXT NOT NULL, household TEXT NOT NULL, designated_at REAL NOT NULL, revoked_at REAL);
CREATE TABLE suspensions (id INTEGER PRIMARY KEY AUTOINCREMENT, household TEXT NOT NULL, scope TEXT NOT NULL,
    recipient TEXT, category TEXT, requested_at REAL NOT NULL, lifted_at REAL, note TEXT NOT NULL DEFAULT '');
"""
