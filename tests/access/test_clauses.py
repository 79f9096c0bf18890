"""One table of requests per granting clause of the primary terms (SPS, ENEX), with companies and periods.

``CASES`` is keyed by clause id.  ``test_every_granting_clause_has_cases`` walks the shipped seeds, so a
granting clause added to ``seeds/sps.yaml`` or ``seeds/enex.yaml`` fails the suite until someone writes
its allow and deny cases here.  Every request asks for ``WINDOW`` (the week before ``T``) with a
verified identity unless the case says otherwise; an allowed case must be served the whole window, a
refused one nothing.  ``op`` is SPS's staff, ``eop`` ENEX's, ``ana`` ENEX's analyst, ``pana`` a partner's
analyst ENEX registered for joint use (2) purpose (6), ``partner1`` an ENEX group company registered for
joint use (2) (``partner2`` is not), ``agent1`` holds Alice's verified mandate.
"""

from __future__ import annotations

import dataclasses

import pytest

from access.compiler import Policy, Rule, check_policy
from access.periods import span
from seeds.loader import Seeds
from seeds.vocabulary import item_of
from tests.access.conftest import PV, WINDOW, T, World, ask

# (principal, household, category, action, purpose, allowed[, identity verified]); a category may name
# fields after a colon, joined by '+' (the request then asks for those items).
Case = tuple[str, str, str, str, str, bool] | tuple[str, str, str, str, str, bool, bool]

_P = "sps.service_provision"
_OWN = "sps.disclosure_to_person"
CASES: dict[str, list[Case]] = {
    "sps-2.2.1": [
        ("op", "h1", "pv", "read", _P, True),
        ("op", "h2", "battery", "read", "sps.service_improvement", True),  # any SPS customer: its own use
        ("op", "h1", "electricity", "read_stats", _P, True),
        ("op", "h1", "pv", "export", _P, False),  # no clause lets the operator export
        ("op", "h1", "ev", "read", _P, False),  # ev is not among 2(2)[1] items
        ("eop", "h1", "pv", "read", _P, False),  # ENEX's staff are not SPS's (one operator per company)
        ("inst1", "h1", "pv", "read", _P, False),  # partners get nothing under the operator's purposes
        ("ana", "h1", "pv", "read", _P, False),
    ],
    "sps-2.2.2": [
        ("op", "h1", "identity", "read", "sps.customer_support", True),
        ("op", "h1", "pv", "read", "sps.customer_support", False),
        ("eop", "h1", "identity", "read", "sps.customer_support", False),
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
        ("body1", "h1", "household", "read", PV, True),  # designated by SPS's staff for h1
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
        ("partner1", "h1", "pv", "read", PV, False),  # an ENEX group company is nobody under SPS
        ("alice", "h1", "pv", "read", PV, False),
    ],
    "sps-2.6.2": [
        ("alice", "h1", "pv", "read", _OWN, True),
        ("alice", "h1", "identity", "export", _OWN, True),
        ("alice", "h1", "water", "read", _OWN, True),
        ("agent1", "h1", "pv", "read", _OWN, True),  # 2(6)[3]: the person's agent, mandate verified
        ("alice", "h1", "pv", "read", _OWN, False, False),  # identity not verified recently
        ("agent1", "h2", "pv", "read", _OWN, False),  # the mandate lends Alice's households only
        ("alice", "h2", "pv", "read", _OWN, False),
        ("bob", "h1", "pv", "read", _OWN, False),
        ("alice", "h1", "pv", "read", PV, False),  # not registered for the partners' purpose
        ("inst1", "h1", "pv", "read", _OWN, False),
    ],
    "enex-2.1": [
        ("eop", "h1", "electricity", "read", "enex.supply_contract", True),
        ("eop", "h1", "pv", "read", "enex.supply_contract", False),
        ("op", "h1", "electricity", "read", "enex.supply_contract", False),  # SPS's staff are not ENEX's
    ],
    "enex-2.2": [
        ("eop", "h1", "contract", "read", "enex.supply_notices", True),
        ("eop", "h1", "gas", "read", "enex.supply_notices", False),
    ],
    "enex-2.3": [
        ("eop", "h2", "electricity", "read", "enex.billing", True),
        ("eop", "h2", "electricity", "export", "enex.billing", False),
    ],
    "enex-2.4": [
        ("eop", "h1", "equipment", "read", "enex.supply_balancing", True),
        ("eop", "h1", "identity", "read", "enex.supply_balancing", False),
    ],
    "enex-2.5": [
        ("eop", "h1", "identity", "read", "enex.retailer_switch", True),
        ("eop", "h1", "electricity", "read", "enex.retailer_switch", False),
        ("retail1", "h1", "identity", "read", "enex.retailer_switch", False),
    ],
    "enex-2.6": [
        ("eop", "h1", "identity", "read", "enex.enquiries", True),
        ("eop", "h1", "household", "read", "enex.enquiries", False),
    ],
    "enex-2.7": [
        ("ana", "h1", "electricity", "read_stats", "enex.marketing", True),
        ("eop", "h1", "contract", "read_stats", "enex.marketing", True),
        ("ana", "h1", "electricity", "read", "enex.marketing", False),  # statistics only: never read
        ("eop", "h1", "electricity", "read", "enex.marketing", False),
        ("eop", "h1", "electricity", "export", "enex.marketing", False),
        ("ana", "h1", "pv", "read_stats", "enex.marketing", False),
        ("op", "h1", "contract", "read_stats", "enex.marketing", False),
    ],
    "enex-2.8": [
        # HEMS data as footnote *3 defines it: the amount used and the time of use, not the whole meter.
        ("eop", "h1", "electricity:power_w+import_wh_total", "read", "enex.hems_data_service", True),
        ("eop", "h1", "electricity:raw_import_wh_total", "read", "enex.hems_data_service", True),
        ("eop", "h1", "electricity", "read", "enex.hems_data_service", False),
        ("eop", "h1", "electricity:voltage_v", "read", "enex.hems_data_service", False),
        ("eop", "h1", "electricity:power_w+export_wh_total", "read", "enex.hems_data_service", False),
        ("eop", "h1", "pv", "read", "enex.hems_data_service", False),
    ],
    "enex-2.9": [
        ("eop", "h1", "identity", "read", "enex.other_business_info", True),
        ("eop", "h1", "water", "read", "enex.other_business_info", False),
    ],
    "enex-2.10": [
        ("ana", "h1", "contract", "read_stats", "enex.management_analysis", True),
        ("ana", "h1", "contract", "read", "enex.management_analysis", False),
        ("ana", "h1", "contract", "export", "enex.management_analysis", False),
    ],
    "enex-2.11": [
        ("eop", "h1", "equipment", "read", "enex.service_development", True),
        ("eop", "h1", "electricity", "read_stats", "enex.service_development", True),
        ("eop", "h1", "pv", "read", "enex.service_development", False),
    ],
    "enex-2.12": [
        ("eop", "h1", "contract", "read", "enex.ancillary", True),
        ("eop", "h1", "contract", "export", "enex.ancillary", False),
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
        ("eop", "h1", "equipment", "read", "enex.billing", True),
        ("eop", "h1", "equipment", "read", "enex.enquiries", True),
        ("partner1", "h2", "identity", "read", "enex.billing", True),  # a registered group company
        ("partner2", "h2", "identity", "read", "enex.billing", False),  # one ENEX did not register
        ("partner1", "h1", "identity", "read", "enex.marketing", False),
        ("eop", "h1", "pv", "read", "enex.enquiries", False),
    ],
    "enex-5.2.4": [
        ("ana", "h1", "contract", "read_stats", "enex.marketing", True),
        ("ana", "h2", "contract", "read", "enex.marketing", False),
        ("pana", "h1", "contract", "read_stats", "enex.marketing", False),  # registered for (6), not (4)
    ],
    "enex-5.2.6": [
        ("ana", "h1", "electricity", "read_stats", "enex.management_analysis", True),
        ("pana", "h1", "electricity", "read_stats", "enex.management_analysis", True),
        ("ana", "h1", "water", "read_stats", "enex.management_analysis", False),
    ],
    "enex-6": [
        ("alice", "h1", "electricity", "read", "enex.disclosure_to_person", True),
        ("alice", "h1", "contract", "export", "enex.disclosure_to_person", True),
        ("alice", "h2", "electricity", "read", "enex.disclosure_to_person", False),
        ("bob", "h1", "identity", "read", "enex.disclosure_to_person", False),
        ("agent1", "h1", "identity", "read", "enex.disclosure_to_person", False),  # ENEX 6: the person only
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
    dangling = Rule("sps-2.2.4/installer", "linked", "pv", "read", PV, "allow", "sps-9.9")
    result = check_policy(dataclasses.replace(policy, rules=(*policy.rules, dangling)))
    assert not result.ok and any("sps-9.9" in p for p in result.problems)


@pytest.mark.parametrize(
    ("clause_id", "case"),
    [(cid, case) for cid, cases in CASES.items() for case in cases],
    ids=lambda v: v if isinstance(v, str) else "-".join(str(x) for x in v),
)
def test_clause_case(ro_world: World, clause_id: str, case: Case) -> None:
    world = ro_world
    principal, household, category, action, purpose, allowed = case[:6]
    verified = case[6] if len(case) > 6 else True
    category, _, named = category.partition(":")  # "electricity:power_w+import_wh_total": those items
    items = tuple(dict.fromkeys(item_of(f) for f in named.split("+"))) if named else None
    req = ask(principal, household, category, action, purpose, verified=bool(verified))._replace(items=items)
    decision = world.authz.decide(req, at=T)
    words = world.authz.explain(req, at=T)
    assert decision.allowed is allowed, words
    if allowed:
        assert clause_id in decision.clause_ids
        assert decision.served == span(*WINDOW), words
        assert world.seeds.clause(clause_id).section in words
    else:
        assert decision.served == ()
    # Casbin over the same snapshot agrees, slice by slice.
    assert world.authz.casbin_served(req, at=T) == decision.served


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
    req = ask("ana", "h1", "electricity", "read_stats", "enex.marketing")
    d = world.authz.decide(req, at=T)
    assert d.allowed and d.min_group_size is not None and d.min_group_size >= 2
    assert "no household ids" in world.authz.explain(req, at=T)
