"""The person's suspensions beat every third-party allow; erasure takes what it erased from every
decision and honours the legal holds of the household's own contracts."""

from __future__ import annotations

import pytest

from access.consent import ConsentError, legal_holds
from access.erasure import kept_reasons, plan
from access.periods import span
from tests.access.conftest import PV, SINCE, WINDOW, T, World, ask

WINDOW_SPAN = span(*WINDOW)

EARLIER = T - 86_400


def _can(world: World, who: str, category: str = "pv", purpose: str = PV, household: str = "h1") -> bool:
    return world.authz.decide(ask(who, household, category, "read", purpose), at=T).allowed


def test_suspension_of_one_recipient(world: World) -> None:
    assert _can(world, "inst1") and _can(world, "sales1")
    s = world.consent.suspend("h1", "provision", recipient="inst1", at=EARLIER)
    assert not _can(world, "inst1") and not _can(world, "inst1", "battery")
    assert _can(world, "sales1")
    d = world.authz.decide(ask("inst1", "h1", "pv", "read", PV), at=T)
    assert d.clause_ids == (world.policy.suspension_clause,)
    text = world.authz.explain(ask("inst1", "h1", "pv", "read", PV), at=T)
    assert f"suspension {s.id}" in text and "suspended third-party provision" in text and "2(6)" in text
    assert "to inst1" in text


def test_suspension_of_one_category(world: World) -> None:
    world.consent.suspend("h1", "provision", category="pv", at=EARLIER)
    for who in ("sales1", "inst1", "whole1", "appr1", "body1"):
        assert not _can(world, who), who
        assert _can(world, who, "battery"), who
    assert "of pv data" in world.authz.explain(ask("body1", "h1", "pv", "read", PV), at=T)


def test_suspension_of_all_provision_spares_the_person_and_the_operator(world: World) -> None:
    world.consent.suspend("h1", "provision", at=EARLIER)
    for who in ("sales1", "inst1", "whole1", "appr1", "appr_narrow", "body1"):
        assert not _can(world, who), who
    # ENEX joint use (1) runs under ENEX's terms, whose supply operations are not suspendable.
    assert _can(world, "retail1", "identity", "enex.wheeling_contract")
    assert _can(world, "alice", purpose="sps.disclosure_to_person")
    assert _can(world, "op", purpose="sps.service_provision")  # SPS's own staff: not a third party
    assert _can(world, "inst1", household="h2") is False  # unrelated anyway
    assert world.authz.casbin_served(ask("inst1", "h1", "pv", "read", PV), at=T) == ()


def test_suspension_of_use_also_stops_the_operator_but_not_the_person(world: World) -> None:
    world.consent.suspend("h1", "use", at=EARLIER)
    assert not _can(world, "op", purpose="sps.service_provision")
    assert not _can(world, "inst1")
    assert _can(world, "alice", purpose="sps.disclosure_to_person")
    assert "suspended use" in world.authz.explain(
        ask("op", "h1", "pv", "read", "sps.service_provision"), at=T
    )
    # Other households are untouched, and so are other companies' uses of this one.
    assert world.authz.decide(ask("op", "h2", "pv", "read", "sps.service_provision"), at=T).allowed
    assert _can(world, "eop", "electricity", "enex.billing")


def test_lifting_a_suspension_restores_access_and_the_decision_follows_the_store(world: World) -> None:
    s = world.consent.suspend("h1", "provision", recipient="sales1", at=EARLIER)
    assert not _can(world, "sales1")
    world.consent.lift(s.id, at=T - 10)
    assert _can(world, "sales1")
    with pytest.raises(ConsentError):
        world.consent.lift(s.id)


def test_suspension_takes_effect_at_its_time(world: World) -> None:
    world.consent.suspend("h1", "provision", recipient="sales1", at=T + 60)
    assert world.authz.decide(ask("sales1", "h1", "pv", "read", PV), at=T).allowed
    assert not world.authz.decide(ask("sales1", "h1", "pv", "read", PV), at=T + 61).allowed


def test_bad_suspensions_are_refused(world: World) -> None:
    with pytest.raises(ConsentError):
        world.consent.suspend("h1", "everything")
    with pytest.raises(ConsentError):
        world.consent.suspend("h1", "provision", category="telepathy")
    with pytest.raises(ConsentError, match="enex's terms provide no suspension of use"):
        world.consent.suspend("h1", "use", company="enex")
    with pytest.raises(ConsentError, match="accepts no suspensions"):
        world.consent.suspend("h1", "use", company="acme")
    assert world.consent.suspensions("h1") == []


def test_a_suspension_with_enex_stops_its_joint_use_2_but_not_its_supply_operations(world: World) -> None:
    """ENEX 5: joint use (2) with the group and partners is suspendable (suspension_overrides), the
    supply operations of joint use (1) are not; the refusal cites ENEX's clause, not SPS's."""
    world.consent.suspend("h1", "provision", at=EARLIER, company="enex")
    assert not _can(world, "partner1", "identity", "enex.billing")
    assert _can(world, "partner1", "identity", "enex.billing", household="h2")
    assert _can(world, "retail1", "identity", "enex.wheeling_contract")
    assert _can(world, "eop", "identity", "enex.billing")  # ENEX's own staff: not a provision
    assert _can(world, "inst1")  # an ENEX suspension says nothing about SPS's terms
    d = world.authz.decide(ask("partner1", "h1", "identity", "read", "enex.billing"), at=T)
    assert d.reason == "suspended" and d.clause_ids == ("enex-5.2",)
    assert "ENEX 5 joint use (2)" in world.authz.explain(
        ask("partner1", "h1", "identity", "read", "enex.billing"), at=T
    )


def test_a_lifted_suspension_keeps_out_the_data_recorded_while_it_was_in_force(world: World) -> None:
    """The rule in time: lifting reopens provision from then on; the data of the suspended stretch stays
    out (the person's choice for that time stands)."""
    s = world.consent.suspend("h1", "provision", recipient="inst1", at=T - 5 * 86400)
    world.consent.lift(s.id, at=T - 3 * 86400)
    d = world.authz.decide(ask("inst1", "h1", "pv", "read", PV), at=T)
    assert d.served == ((T - 7 * 86400, T - 5 * 86400), (T - 3 * 86400, T))
    assert world.authz.casbin_served(ask("inst1", "h1", "pv", "read", PV), at=T) == d.served
    assert "stays out" in world.authz.explain(
        ask("inst1", "h1", "pv", "read", PV, window=(T - 5 * 86400, T - 4 * 86400)), at=T
    )


def test_legal_holds_are_those_of_the_households_own_contracts(world: World) -> None:
    """Sobu Gas's terms keep its customers' contract and safety records; a household that never had a
    Sobu Gas contract is owed the erasure of those too (on main, every household was told 'keep')."""
    holds = legal_holds(world.seeds)
    assert set(holds) == {"contract", "equipment"}, "the seeds mark some data as kept by law"
    world.rel.add_contract("h2", "sobu_gas", "supply", since=SINCE)
    companies = {h: {c.company for c in world.rel.contracts(h)} for h in ("h1", "h2")}
    mine = world.consent.request_erasure(
        "h1", world.seeds, at=T, requested_by="alice", companies=companies["h1"]
    )
    theirs = world.consent.request_erasure(
        "h2", world.seeds, at=T, requested_by="bob", companies=companies["h2"]
    )
    assert mine.status == "recorded" and set(mine.outcome.values()) == {"erase"}
    for category, outcome in theirs.outcome.items():
        if category in holds:
            assert outcome == "keep: sobu_gas-7.legal_hold", category
        else:
            assert outcome == "erase"
    assert kept_reasons(world.seeds, world.rel.facts(), "h1", ["contract"]) == {}
    assert "Sobu Gas" in kept_reasons(world.seeds, world.rel.facts(), "h2", ["contract"])["contract"]
    with pytest.raises(ConsentError):
        world.consent.request_erasure("h1", world.seeds, categories=["nonsense"])


def test_an_erasure_begun_takes_its_period_from_every_decision(world: World) -> None:
    """Once the operator begins, nobody is served the erased categories over the requester's period --
    the person included, since the data is gone -- and the rest stays as it was."""
    world.rel.unlink("alice", "h1", "homeowner", at=T - 3 * 86400)  # alice left h1 three days ago
    world.rel.add_principal("carol", "homeowner", "Carol", ["sps.disclosure_to_person"])
    world.rel.link("carol", "h1", "homeowner", since=T - 3 * 86400)
    request = world.consent.request_erasure(
        "h1", world.seeds, ["pv", "contract"], at=T - 86400, requested_by="alice"
    )
    facts = world.rel.facts()
    p = plan(request, world.consent.categories_asked(request.id), facts, world.seeds, T - 3600)
    assert p.erase == ("pv", "contract") and p.kept == {}
    assert p.periods == ((SINCE, T - 3 * 86400),)  # alice's own time there, not carol's
    assert world.authz.decide(ask("op", "h1", "pv", "read", "sps.service_provision"), at=T).allowed
    world.consent.begin_erasure(
        request.id, erased=p.erase, periods=p.periods, kept={}, operator="ops", at=T - 3600
    )
    for who, purpose in (
        ("op", "sps.service_provision"),
        ("inst1", PV),
        ("alice", "sps.disclosure_to_person"),
    ):
        req = ask(who, "h1", "pv", "read", purpose)
        d = world.authz.decide(req, at=T)
        assert d.served == ((T - 3 * 86400, T),) if who != "alice" else not d.allowed, (who, d)
        assert world.authz.casbin_served(req, at=T) == d.served
    refused = world.authz.decide(ask("alice", "h1", "pv", "read", "sps.disclosure_to_person"), at=T)
    assert refused.reason == "erased" and set(refused.clause_ids) == {"kaluza-2.4.correction", "sobu_gas-7"}
    words = world.authz.explain(ask("alice", "h1", "pv", "read", "sps.disclosure_to_person"), at=T)
    assert f"erasure {request.id}" in words and "was erased" in words
    # Other categories, and decisions taken before the erasure began, are untouched.
    assert (
        world.authz.decide(ask("op", "h1", "battery", "read", "sps.service_provision"), at=T).served
        == WINDOW_SPAN
    )
    assert world.authz.decide(ask("op", "h1", "pv", "read", "sps.service_provision"), at=T - 7200).allowed
    done = world.consent.finish_erasure(request.id, {"pv": "12 points deleted", "contract": "not held"})
    assert done.status == "done" and done.removed == {"pv": "12 points deleted", "contract": "not held"}
