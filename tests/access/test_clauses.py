"""One table of requests per granting clause of the primary terms (SPS, ENEX).

``CASES`` is keyed by clause id.  ``test_every_granting_clause_has_cases`` walks the shipped seeds, so a
granting clause added to ``seeds/sps.yaml`` or ``seeds/enex.yaml`` fails the suite until someone writes
its allow and deny cases here.
"""

from __future__ import annotations

import dataclasses

import casbin
import pytest

from access.compiler import Policy, Rule, check_policy
from seeds.loader import Seeds
from tests.access.conftest import PV, T, World

# (principal, household, category, action, purpose, allowed)
Case = tuple[str, str, str, str, str, bool]

_P = "sps.service_provision"
CASES: dict[str, list[Case]] = {
    "sps-2.2.1": [
        ("op", "h1", "pv", "read", _P, True),
        (
            "op",
            "h2",
            "battery",
            "read",
            "sps.service_improvement",
            True,
        ),  # any household: the operator's own use
        ("op", "*", "electricity", "read_stats", _P, True),
        ("op", "h1", "pv", "export", _P, False),  # no clause lets the operator export
        ("op", "h1", "ev", "read", _P, False),  # ev is not among 2(2)[1] items
        ("inst1", "h1", "pv", "read", _P, False),  # partners get nothing under the operator's purposes
        ("ana", "h1", "pv", "read", _P, False),
    ],
    "sps-2.2.2": [
        ("op", "h1", "identity", "read", "sps.customer_support", True),
        ("op", "h1", "pv", "read", "sps.customer_support", False),
    ],
    "sps-2.2.3": [
        ("op", "h1", "household", "read", "sps.surveys", True),
        ("op", "h1", "electricity", "read", "sps.surveys", False),
    ],
    "sps-2.2.4": [
        ("sales1", "h1", "pv", "read", PV, True),
        ("inst1", "h1", "electricity", "read", PV, True),
        ("whole1", "h1", "identity", "read", PV, True),
        ("appr1", "h1", "battery", "read", PV, True),  # approved by sales1, which sold h1
        ("appr_narrow", "h1", "pv", "read", PV, True),
        ("body1", "h1", "household", "read", PV, True),  # designated by the operator for h1
        ("inst1", "h1", "ev", "read", PV, False),  # ev is not among the items of 2(2)[4]
        ("inst1", "h2", "pv", "read", PV, False),  # foreign household
        ("sales1", "h2", "pv", "read", PV, False),
        ("body1", "h2", "pv", "read", PV, False),
        ("appr1", "h2", "pv", "read", PV, False),
        ("inst1", "h1", "pv", "read", _P, False),  # wrong purpose (registered, but not granted)
        ("inst1", "h1", "pv", "export", PV, False),
        ("inst1", "h1", "pv", "read_stats", PV, False),
        ("inst1", "h1", "pv", "read", "enex.marketing", False),
        ("unreg", "h1", "pv", "read", PV, False),  # linked but not registered for the purpose
        ("appr_narrow", "h1", "battery", "read", PV, False),  # outside the approval's scope
        ("appr1", "h1", "ev", "read", PV, False),  # approval reaches beyond the approver's grant
        ("appr1", "h1", "pv", "read", _P, False),  # approval names a purpose the approver lacks
        ("appr_old", "h1", "pv", "read", PV, False),  # expired approval
        ("retail1", "h1", "pv", "read", PV, False),  # registered, linked, but not a 2(2)[4] recipient
        ("alice", "h1", "pv", "read", PV, False),
    ],
    "sps-2.6.2": [
        ("alice", "h1", "pv", "read", "sps.disclosure_to_person", True),
        ("alice", "h1", "identity", "export", "sps.disclosure_to_person", True),
        ("alice", "h1", "water", "read", "sps.disclosure_to_person", True),
        ("alice", "h2", "pv", "read", "sps.disclosure_to_person", False),
        ("bob", "h1", "pv", "read", "sps.disclosure_to_person", False),
        ("alice", "h1", "pv", "read", PV, False),  # not registered for the partners' purpose
        ("inst1", "h1", "pv", "read", "sps.disclosure_to_person", False),
    ],
    "enex-2.1": [
        ("op", "h1", "electricity", "read", "enex.supply_contract", True),
        ("op", "h1", "pv", "read", "enex.supply_contract", False),
    ],
    "enex-2.2": [
        ("op", "h1", "contract", "read", "enex.supply_notices", True),
        ("op", "h1", "gas", "read", "enex.supply_notices", False),
    ],
    "enex-2.3": [
        ("op", "h2", "electricity", "read", "enex.billing", True),
        ("op", "h2", "electricity", "export", "enex.billing", False),
    ],
    "enex-2.4": [
        ("op", "h1", "equipment", "read", "enex.supply_balancing", True),
        ("op", "h1", "identity", "read", "enex.supply_balancing", False),
    ],
    "enex-2.5": [
        ("op", "h1", "identity", "read", "enex.retailer_switch", True),
        ("op", "h1", "electricity", "read", "enex.retailer_switch", False),
        ("retail1", "h1", "identity", "read", "enex.retailer_switch", False),
    ],
    "enex-2.6": [
        ("op", "h1", "identity", "read", "enex.enquiries", True),
        ("op", "h1", "household", "read", "enex.enquiries", False),
    ],
    "enex-2.7": [
        ("ana", "*", "electricity", "read_stats", "enex.marketing", True),
        ("op", "*", "contract", "read_stats", "enex.marketing", True),
        ("ana", "h1", "electricity", "read", "enex.marketing", False),  # statistics only: never read
        ("op", "h1", "electricity", "read", "enex.marketing", False),
        ("op", "h1", "electricity", "export", "enex.marketing", False),
        ("ana", "*", "pv", "read_stats", "enex.marketing", False),
    ],
    "enex-2.8": [
        ("op", "h1", "electricity", "read", "enex.hems_data_service", True),
        ("op", "h1", "pv", "read", "enex.hems_data_service", False),
    ],
    "enex-2.9": [
        ("op", "h1", "identity", "read", "enex.other_business_info", True),
        ("op", "h1", "water", "read", "enex.other_business_info", False),
    ],
    "enex-2.10": [
        ("ana", "*", "contract", "read_stats", "enex.management_analysis", True),
        ("ana", "h1", "contract", "read", "enex.management_analysis", False),
        ("ana", "h1", "contract", "export", "enex.management_analysis", False),
    ],
    "enex-2.11": [
        ("op", "h1", "equipment", "read", "enex.service_development", True),
        ("op", "*", "electricity", "read_stats", "enex.service_development", True),
        ("op", "h1", "pv", "read", "enex.service_development", False),
    ],
    "enex-2.12": [
        ("op", "h1", "contract", "read", "enex.ancillary", True),
        ("op", "h1", "contract", "export", "enex.ancillary", False),
    ],
    "enex-5.1": [
        ("retail1", "h1", "identity", "read", "enex.wheeling_contract", True),
        ("grid1", "h1", "equipment", "read", "enex.grid_operations", True),
        ("grid1", "h1", "electricity", "read", "enex.grid_operations", False),  # readings are not items
        ("grid1", "h2", "equipment", "read", "enex.grid_operations", False),  # not its household
        ("retail1", "h2", "identity", "read", "enex.wheeling_contract", False),
        ("inst1", "h1", "identity", "read", "enex.wheeling_contract", False),
    ],
    "enex-5.2": [
        ("op", "h1", "equipment", "read", "enex.billing", True),
        ("op", "h1", "equipment", "read", "enex.enquiries", True),
        ("op", "h1", "pv", "read", "enex.enquiries", False),
    ],
    "enex-5.2.4": [
        ("ana", "*", "contract", "read_stats", "enex.marketing", True),
        ("ana", "h2", "contract", "read", "enex.marketing", False),
    ],
    "enex-5.2.6": [
        ("ana", "*", "electricity", "read_stats", "enex.management_analysis", True),
        ("ana", "*", "water", "read_stats", "enex.management_analysis", False),
    ],
    "enex-6": [
        ("alice", "h1", "electricity", "read", "enex.disclosure_to_person", True),
        ("alice", "h1", "contract", "export", "enex.disclosure_to_person", True),
        ("alice", "h2", "electricity", "read", "enex.disclosure_to_person", False),
        ("bob", "h1", "identity", "read", "enex.disclosure_to_person", False),
    ],
}

PRIMARY = ("sps", "enex")


def _granting(seeds: Seeds) -> list[str]:
    return [c.id for c in seeds.clauses if c.grants and c.document in PRIMARY]


def test_every_granting_clause_has_cases(seeds: Seeds) -> None:
    missing = [cid for cid in _granting(seeds) if cid not in CASES]
    assert not missing, f"granting clauses without test cases: {missing}"
    stale = sorted(set(CASES) - {c.id for c in seeds.clauses})
    assert not stale, f"test cases for clauses that no longer exist: {stale}"
    for cid, cases in CASES.items():
        assert any(c[-1] for c in cases) and any(not c[-1] for c in cases), (
            f"{cid} needs allow and deny cases"
        )


def test_every_granting_clause_yields_rules_and_every_rule_cites_a_clause(
    seeds: Seeds, policy: Policy
) -> None:
    cited = {r.clause for r in policy.rules}
    assert set(_granting(seeds)) <= cited
    assert cited <= {c.id for c in seeds.clauses}
    assert check_policy(policy).ok


def test_check_policy_reports_a_silent_clause_and_a_dangling_rule(policy: Policy) -> None:
    without = dataclasses.replace(policy, rules=tuple(r for r in policy.rules if r.clause != "sps-2.2.4"))
    result = check_policy(without)
    assert not result.ok and any("sps-2.2.4" in p for p in result.problems)
    dangling = Rule("installer", "own", "pv", "read", PV, "allow", "sps-9.9")
    result = check_policy(dataclasses.replace(policy, rules=(*policy.rules, dangling)))
    assert not result.ok and any("sps-9.9" in p for p in result.problems)


@pytest.mark.parametrize(
    ("clause_id", "case"),
    [(cid, case) for cid, cases in CASES.items() for case in cases],
    ids=lambda v: v if isinstance(v, str) else "-".join(str(x) for x in v),
)
def test_clause_case(ro_world: World, clause_id: str, case: Case) -> None:
    world = ro_world
    principal, household, category, action, purpose, allowed = case
    decision = world.authz.decide(principal, household, category, action, purpose, at=T)
    assert decision.allowed is allowed, world.authz.explain(
        principal, household, category, action, purpose, at=T
    )
    if allowed:
        assert clause_id in decision.clause_ids
        assert world.seeds.clause(clause_id).section in world.authz.explain(
            principal, household, category, action, purpose, at=T
        )
    # Casbin over the same snapshot agrees.
    assert _enforcer(world).enforce(principal, household, category, action, purpose) is allowed


_ENFORCERS: dict[int, casbin.Enforcer] = {}


def _enforcer(world: World) -> casbin.Enforcer:
    if id(world) not in _ENFORCERS:
        _ENFORCERS[id(world)] = world.authz.enforcer(T)
    return _ENFORCERS[id(world)]


def test_statistics_only_purposes_never_reach_row_level(seeds: Seeds, policy: Policy) -> None:
    stats = {p for p, v in seeds.purposes.items() if v.statistics_only}
    assert stats, "the ENEX terms declare statistics-only purposes"
    for r in policy.rules:
        if r.eft == "allow" and r.pur in stats:
            assert r.act == "read_stats", r
    for p in stats:
        for act in ("read", "export"):
            assert any(r.eft == "deny" and r.pur == p and r.act == act for r in policy.rules)


def test_read_stats_carries_a_minimum_group_size(ro_world: World) -> None:
    world = ro_world
    d = world.authz.decide("ana", "*", "electricity", "read_stats", "enex.marketing", at=T)
    assert d.allowed and d.min_group_size is not None and d.min_group_size >= 2
    assert "no household ids" in world.authz.explain(
        "ana", "*", "electricity", "read_stats", "enex.marketing", at=T
    )
