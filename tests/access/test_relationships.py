"""The relationship store: persistence, approvals that die with their approver, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from access.clock import to_epoch
from access.consent import ConsentStore
from access.decision import Authorizer
from access.relationships import RelationshipError, RelationshipStore
from tests.access.conftest import PV, T, World


def test_everything_survives_a_reopen(world: World) -> None:
    before = world.rel.role_links(T)
    world.rel.close()
    reopened = RelationshipStore(world.path)
    try:
        after = reopened.role_links(T)
        assert after.household_roles == before.household_roles
        assert after.registered == before.registered
        assert [a.approval for a in after.approvals] == [a.approval for a in before.approvals]
        assert reopened.principal("inst1").display_name == "Roof Installers"
        authz = Authorizer(world.policy, reopened, ConsentStore(world.path))
        assert authz.decide("appr1", "h1", "pv", "read", PV, at=T).allowed
        assert reopened._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        reopened.close()
        world.rel = RelationshipStore(world.path)  # the fixture closes it


def test_approval_expires(world: World) -> None:
    a = world.rel.approve("sales1", "appr_narrow", ["battery"], [PV], valid_from=T - 100, valid_to=T + 100)
    assert world.authz.decide("appr_narrow", "h1", "battery", "read", PV, at=T).allowed
    assert not world.authz.decide("appr_narrow", "h1", "battery", "read", PV, at=T + 100).allowed
    assert world.rel.approval_status(a.id, T + 100) == "expired"
    assert world.rel.approval_status(a.id, T - 200) == "not yet valid"
    assert "from PV Wholesale expired on 2026-01-01" in world.authz.explain(
        "appr_old", "h1", "pv", "read", PV, at=T
    )


def test_approval_dies_when_the_approver_loses_the_household(world: World) -> None:
    assert world.authz.decide("appr1", "h1", "pv", "read", PV, at=T).allowed
    world.rel.unlink("sales1", "h1", "sales_company", at=T - 1)
    assert not world.authz.decide("sales1", "h1", "pv", "read", PV, at=T).allowed
    assert not world.authz.decide("appr1", "h1", "pv", "read", PV, at=T).allowed
    assert world.rel.approval_status(1, T).startswith("void")
    # History is kept: before the unlink both still held.
    assert world.authz.decide("appr1", "h1", "pv", "read", PV, at=T - 10).allowed


def test_approval_follows_new_households_of_the_approver(world: World) -> None:
    world.rel.link("sales1", "h2", "sales_company", since=T - 5)
    assert world.authz.decide("appr1", "h2", "pv", "read", PV, at=T).allowed
    assert not world.authz.decide("appr1", "h2", "pv", "read", PV, at=T - 10).allowed


def test_revoked_approval_and_designation(world: World) -> None:
    world.rel.revoke_approval(2, at=T - 1)
    assert not world.authz.decide("appr_narrow", "h1", "pv", "read", PV, at=T).allowed
    world.rel.revoke_designation(1, at=T - 1)
    assert not world.authz.decide("body1", "h1", "pv", "read", PV, at=T).allowed


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
    ],
)
def test_bad_relationships_are_refused_and_lose_nothing(world: World, call, message: str) -> None:  # type: ignore[no-untyped-def]
    before = world.rel.role_links(T)
    with pytest.raises(RelationshipError, match=message):
        call(world.rel)
    after = world.rel.role_links(T)
    assert after.household_roles == before.household_roles and after.registered == before.registered


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
    links = store.role_links(T)
    assert sum(1 for _ in links.household_lines()) == 2000
    store.close()


def test_writes_by_another_process_are_noticed(world: World) -> None:
    """A second connection stands in for ``hems principals`` run while the API serves."""
    authz = Authorizer(world.policy, world.rel, world.consent, poll_seconds=0.0)
    assert not authz.decide("inst1", "h2", "pv", "read", PV, at=T).allowed
    other = RelationshipStore(world.path)
    other.link("inst1", "h2", "installer", since=T - 10)
    other.close()
    assert authz.decide("inst1", "h2", "pv", "read", PV, at=T).allowed
    other_consent = ConsentStore(world.path)
    other_consent.suspend("h2", "provision", at=T - 5)
    other_consent.close()
    assert not authz.decide("inst1", "h2", "pv", "read", PV, at=T).allowed
