"""The five over-grants and four under-grants of the access issue, one test each, named after it (and
the demand-response contractor's equipment over-grant found by a later audit).

Each over-grant test shows the request now refused (or cut to the period the grant rests on) and the
clause-backed request beside it still served; each under-grant test shows the request now served with
its clause and the nearby request still refused.  The world is ``conftest``'s (SPS and ENEX customers
since 2025, one principal of every kind around ``h1``); each test adds what its case needs.
"""

from __future__ import annotations

import pytest

from access.decision import NO_GRANT
from access.periods import span
from access.relationships import RelationshipError
from seeds.vocabulary import NEGAWATT_ITEMS
from tests.access.conftest import PV, SINCE, WINDOW, T, World, ask

DAY = 86400.0
OWN = "sps.disclosure_to_person"


# -- over-grants ------------------------------------------------------------------------------------------
def test_overgrant_time_new_occupant_reads_no_previous_history(world: World) -> None:
    """A homeowner who moved in yesterday reads from then on; the previous occupant's week is not theirs."""
    moved = T - DAY
    world.rel.unlink("alice", "h1", "homeowner", at=moved)
    world.rel.add_principal("carol", "homeowner", "Carol", [OWN])
    world.rel.link("carol", "h1", "homeowner", since=moved)
    d = world.authz.decide(ask("carol", "h1", "pv", "read", OWN), at=T)
    assert d.allowed and d.served == span(moved, T) and d.refused == span(WINDOW[0], moved)
    assert world.authz.casbin_served(ask("carol", "h1", "pv", "read", OWN), at=T) == d.served
    before = world.authz.decide(ask("carol", "h1", "pv", "read", OWN, window=(WINDOW[0], moved)), at=T)
    assert not before.allowed and before.reason == "outside_period"
    assert "its homeowner link holds since" in world.authz.explain(
        ask("carol", "h1", "pv", "read", OWN, window=(WINDOW[0], moved)), at=T
    )


def test_overgrant_time_partner_linked_today_reads_no_past_data(world: World) -> None:
    world.rel.add_principal("inst9", "installer", "New Installer", [PV])
    world.rel.link("inst9", "h1", "installer", since=T - 3600)
    d = world.authz.decide(ask("inst9", "h1", "pv", "read", PV), at=T)
    assert d.served == span(T - 3600, T) and d.clause_ids == ("sps-2.2.4",)
    # And a partner whose link ended keeps nothing, not even the period it held.
    world.rel.unlink("inst1", "h1", "installer", at=T - 60)
    assert not world.authz.decide(ask("inst1", "h1", "pv", "read", PV), at=T).allowed


def test_overgrant_kind_internal_principal_linked_as_partner_is_refused(world: World) -> None:
    """An analyst or a company's staff cannot be recorded as an installer or sales company (the kind
    decides the role, and the role decides third-party status); a link of that shape left in an older
    database grants nothing."""
    for who, role in (("ana", "installer"), ("op", "sales_company"), ("eop", "installer")):
        with pytest.raises(RelationshipError, match="the kind decides the role"):
            world.rel.link(who, "h2", role, since=SINCE)
    world.rel._db.execute("INSERT INTO links VALUES ('ana', 'h2', 'installer', ?, NULL)", (SINCE,))
    world.rel.register_purposes("ana", [PV])
    world.rel.generation += 1
    assert not world.authz.decide(ask("ana", "h2", "pv", "read", PV), at=T).allowed
    assert any("ana" in p and "ignored" in p for p in world.rel.problems())
    # The real installer is a third party: its provision is suspendable and recorded.
    d = world.authz.decide(ask("inst1", "h1", "pv", "read", PV), at=T)
    assert d.third_party
    world.consent.suspend("h1", "provision", at=T - 10)
    assert world.authz.decide(ask("inst1", "h1", "pv", "read", PV), at=T).reason == "suspended"


def test_overgrant_named_joint_user_any_linked_retailer_reads_no_ev_under_kaluza(world: World) -> None:
    """Kaluza's joint use names one retailer: a retailer merely linked to a Kaluza customer reads
    nothing until Kaluza registers it; SPS 2(2)[4] gives EV data to nobody."""
    world.rel.add_contract("h1", "kaluza", "app", since=SINCE)
    world.rel.register_purposes("retail1", ["kaluza.app_service", "kaluza.customer_support"])
    req = ask("retail1", "h1", "ev", "read", "kaluza.app_service")
    refused = world.authz.decide(req, at=T)
    assert not refused.allowed
    assert "only the parties Kaluza Japan registered" in world.authz.explain(req, at=T)
    world.rel.register_joint_use("kaluza", "kaluza-3.1", "retail1", since=T - 2 * DAY)
    d = world.authz.decide(req, at=T)
    assert d.clause_ids == ("kaluza-3.1",) and d.served == span(T - 2 * DAY, T) and d.third_party
    assert world.authz.casbin_served(req, at=T) == d.served
    for who in ("inst1", "sales1", "appr1", "body1"):
        assert not world.authz.decide(ask(who, "h1", "ev", "read", PV), at=T).allowed


def test_overgrant_approval_stops_with_the_approvers_suspension(world: World) -> None:
    """The homeowner suspends provision to the sales company: the company it approved stops too (an
    approval never exceeds what the approver holds now, suspensions included)."""
    assert world.authz.decide(ask("appr1", "h1", "pv", "read", PV), at=T).allowed
    s = world.consent.suspend("h1", "provision", recipient="sales1", at=T - 10)
    for who in ("sales1", "appr1"):
        d = world.authz.decide(ask(who, "h1", "pv", "read", PV), at=T)
        assert not d.allowed and d.reason == "suspended", who
        assert world.authz.casbin_served(ask(who, "h1", "pv", "read", PV), at=T) == ()
    assert "to sales1" in world.authz.explain(ask("appr1", "h1", "pv", "read", PV), at=T)
    # The installer's approval (appr_narrow) is untouched, and lifting restores the approved company.
    assert world.authz.decide(ask("appr_narrow", "h1", "pv", "read", PV), at=T).allowed
    world.consent.lift(s.id, at=T - 5)
    d = world.authz.decide(ask("appr1", "h1", "pv", "read", PV), at=T)
    assert d.served == (*span(WINDOW[0], T - 10), *span(T - 5, T))  # the suspended stretch stays out


def test_overgrant_one_operator_enex_group_gets_no_sps_rights(world: World) -> None:
    """ENEX's staff and group companies get nothing under SPS's terms (not 2(2)[1], no designations),
    ENEX's group companies are third parties (suspendable, recorded), and no company's grant reaches a
    household that is not its customer."""
    world.rel.register_purposes("partner1", ["sps.service_provision"])
    for who in ("eop", "partner1", "ana"):
        assert not world.authz.decide(ask(who, "h1", "pv", "read", "sps.service_provision"), at=T).allowed, (
            who
        )
    with pytest.raises(RelationshipError, match="name no designated bodies"):
        world.rel.designate("eop", "body1", "h2", at=SINCE)
    d = world.authz.decide(ask("partner1", "h1", "identity", "read", "enex.billing"), at=T)
    assert d.allowed and d.third_party and d.clause_ids == ("enex-5.2",)
    world.consent.suspend("h1", "provision", at=T - 10, company="enex")
    assert not world.authz.decide(ask("partner1", "h1", "identity", "read", "enex.billing"), at=T).allowed
    # relationship: any no longer reaches non-customers.
    world.rel.add_household("h3")
    world.rel.add_principal("xop", "operator", "XOOM Operations", ["xoom.customer_service"], company="xoom")
    for who, purpose, category in (
        ("eop", "enex.billing", "electricity"),
        ("op", "sps.service_provision", "pv"),
        ("xop", "xoom.customer_service", "identity"),
        ("partner1", "enex.billing", "identity"),
    ):
        d = world.authz.decide(ask(who, "h3", category, "read", purpose), at=T)
        assert not d.allowed and d.reason == "no_grant", (who, d)
    world.rel.add_contract("h3", "xoom", "supply", since=T - DAY)
    assert world.authz.decide(
        ask("xop", "h3", "identity", "read", "xoom.customer_service"), at=T
    ).served == span(T - DAY, T)


# -- under-grants -----------------------------------------------------------------------------------------
def test_undergrant_former_homeowner_discloses_their_own_period(world: World) -> None:
    """SPS 2(6)[2]: a former homeowner may still see the data of the period they lived there; SPS's staff
    keep using the contract period's data after the contract ends (2(2)[1]), but not for 2(2)[2]."""
    left = T - 2 * DAY
    world.rel.unlink("alice", "h1", "homeowner", at=left)
    d = world.authz.decide(ask("alice", "h1", "pv", "read", OWN), at=T)
    assert d.clause_ids == ("sps-2.6.2",) and d.served == span(WINDOW[0], left)
    assert "they were the homeowner of h1" in world.authz.explain(ask("alice", "h1", "pv", "read", OWN), at=T)
    assert world.authz.casbin_served(ask("alice", "h1", "pv", "read", OWN), at=T) == d.served
    ended = T - 3 * DAY
    for c in world.rel.contracts("h2"):
        if c.company == "sps":
            world.rel.end_contract(c.id, at=ended)
    kept = world.authz.decide(ask("op", "h2", "pv", "read", "sps.service_provision"), at=T)
    assert kept.clause_ids == ("sps-2.2.1",) and kept.served == span(WINDOW[0], ended)
    assert not world.authz.decide(ask("op", "h2", "identity", "read", "sps.customer_support"), at=T).allowed


def test_undergrant_gas_safety_alarms_reach_sobu_gas_staff(world: World) -> None:
    """Sobu Gas 2(4): leak/fire alarms and remote shut-off, run by Sobu Gas's own staff (a contractor
    doing it is registered as its staff, section 2's entrustment), for Sobu Gas's gas customers."""
    world.rel.add_principal(
        "gas-staff", "operator", "Sobu Gas Safety", ["sobu_gas.alarms_and_shutoff"], company="sobu_gas"
    )
    world.rel.add_contract("h1", "sobu_gas", "supply", since=SINCE)
    d = world.authz.decide(ask("gas-staff", "h1", "gas", "read", "sobu_gas.alarms_and_shutoff"), at=T)
    assert (
        d.allowed
        and set(d.clause_ids) == {"sobu_gas-2.4", "sobu_gas-2.4.remote_shutoff"}
        and not d.third_party
    )
    assert "Sobu Gas 2(4)" in world.authz.explain(
        ask("gas-staff", "h1", "gas", "read", "sobu_gas.alarms_and_shutoff"), at=T
    )
    assert not world.authz.decide(
        ask("gas-staff", "h2", "gas", "read", "sobu_gas.alarms_and_shutoff"), at=T
    ).allowed
    assert not world.authz.decide(
        ask("gas-staff", "h1", "pv", "read", "sobu_gas.alarms_and_shutoff"), at=T
    ).allowed
    world.rel.register_purposes("op", ["sobu_gas.alarms_and_shutoff"])
    assert not world.authz.decide(ask("op", "h1", "gas", "read", "sobu_gas.alarms_and_shutoff"), at=T).allowed


def test_undergrant_sps_suspension_does_not_stop_enex_supply_operations(world: World) -> None:
    """An SPS 2(6) suspension of all provision leaves ENEX joint use (1) running (switching, meter reading,
    outages: ENEX's terms make none of them suspendable), and the grant cites ENEX's clause."""
    world.consent.suspend("h1", "provision", at=T - 10)
    assert not world.authz.decide(ask("inst1", "h1", "pv", "read", PV), at=T).allowed
    for who, category, purpose in (
        ("retail1", "identity", "enex.switching_cancellation"),
        ("grid1", "equipment", "enex.grid_operations"),
    ):
        req = ask(who, "h1", category, "read", purpose)
        d = world.authz.decide(req, at=T)
        assert d.allowed and d.clause_ids == ("enex-5.1",), who
        words = world.authz.explain(req, at=T)
        assert "ENEX 5 joint use (1)" in words and "SPS" not in words
    # Nor can the person stop them with ENEX: its terms offer no such suspension.
    world.consent.suspend("h1", "provision", at=T - 10, company="enex")
    assert world.authz.decide(ask("grid1", "h1", "equipment", "read", "enex.grid_operations"), at=T).allowed


def test_undergrant_verified_agent_exercises_the_persons_rights(world: World) -> None:
    """SPS 2(6)[3]: the person's agent, once the mandate is verified, sees what the person may see, for
    the person's period; not before verification, not after the mandate ends, not beyond its categories."""
    world.rel.add_principal("agent2", "agent", "Bob's Lawyer", [OWN])
    m = world.rel.add_mandate("bob", "agent2", categories=["pv", "battery"], since=T - DAY)
    req = ask("agent2", "h2", "pv", "read", OWN)
    assert not world.authz.decide(req, at=T).allowed  # not verified yet
    world.rel.verify_mandate(m.id, "power_of_attorney", at=T - 60)
    d = world.authz.decide(req, at=T)
    assert d.allowed and d.clause_ids == ("sps-2.6.2",) and d.served == span(*WINDOW) and not d.third_party
    assert world.authz.casbin_served(req, at=T) == d.served
    assert not world.authz.decide(ask("agent2", "h2", "identity", "read", OWN), at=T).allowed  # not in scope
    assert not world.authz.decide(ask("agent2", "h1", "pv", "read", OWN), at=T).allowed  # not bob's home
    world.rel.end_mandate(m.id, at=T - 1)
    assert not world.authz.decide(req, at=T).allowed


@pytest.mark.parametrize(
    ("company", "purpose", "clause"),
    [
        ("xoom", "xoom.negawatt", "xoom-7.1.negawatt"),
        ("sobu_gas", "sobu_gas.negawatt", "sobu_gas-4.2.negawatt"),
    ],
)
def test_overgrant_dr_contractor_reads_no_equipment_health_history(
    sqlite_world: World, company: str, purpose: str, clause: str
) -> None:
    """XOOM joint use (1) and Sobu Gas 4 joint use (2) list the items demand-reduction contractors jointly
    use: basic data, supply-point data (of equipment, only the meter information and whether grid-connected
    equipment exists) and the negawatt items.  The device health history (the ``equipment`` category) is
    none of them.  Allowed: basic and supply-point data and the negawatt items, citing the clause; refused:
    equipment, whole or any item of it."""
    world = sqlite_world
    world.rel.add_contract("h1", company, "supply", since=SINCE)
    world.rel.add_principal("dr1", "dr_aggregator", "Negawatt Co", [purpose])
    world.rel.link("dr1", "h1", "dr_aggregator", since=SINCE)
    for category, items in (("identity", None), ("contract", None), ("electricity", NEGAWATT_ITEMS)):
        req = ask("dr1", "h1", category, "read", purpose)._replace(items=items)
        d = world.authz.decide(req, at=T)
        assert d.allowed and d.clause_ids == (clause,), (category, d)
    for items in (None, ("health",), ("health_since_s",)):
        req = ask("dr1", "h1", "equipment", "read", purpose)._replace(items=items)
        d = world.authz.decide(req, at=T)
        assert not d.allowed and d.reason == NO_GRANT, (items, d)
        assert world.authz.casbin_served(req, at=T) == ()
