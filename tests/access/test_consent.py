"""The person's suspensions beat every third-party allow; erasure honours legal holds."""

from __future__ import annotations

import pytest

from access.consent import ConsentError, legal_holds
from tests.access.conftest import PV, T, World, ask

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


def test_erasure_keeps_what_the_law_requires(world: World) -> None:
    holds = legal_holds(world.seeds)
    assert holds, "the seeds mark some data as kept by law (retention / legal_hold)"
    request = world.consent.request_erasure("h1", world.seeds, at=T)
    assert request.status == "recorded"
    for category, outcome in request.outcome.items():
        if category in holds:
            assert outcome.startswith("keep: ") and holds[category][0] in outcome
        else:
            assert outcome == "erase"
    assert request.outcome["pv"] == "erase"
    world.consent.complete_erasure(request.id)
    assert world.consent.erasures("h1")[0].status == "done"
    with pytest.raises(ConsentError):
        world.consent.request_erasure("h1", world.seeds, categories=["nonsense"])
