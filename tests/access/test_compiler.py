"""The compiler on small seed files written for the test (not the shipped ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from access.compiler import ALL, CompileError, Rule, check_policy, compile_seeds
from access.consent import ConsentStore
from access.decision import Authorizer
from access.relationships import RelationshipStore
from seeds.loader import SeedError, load_seeds
from seeds.vocabulary import CATEGORIES

MINI = """
document:
  id: sps
  company: Mini Power
  source_file: 001_4ecf3d1ab9fe8c23.txt
  title: A two-clause test document
purposes:
  - id: sps.care
    summary: Looking after the equipment.
    statistics_only: false
  - id: sps.trends
    summary: Statistics only.
    statistics_only: true
clauses:
  - id: sps-1
    section: "1"
    kind: provision_to_third_parties
    summary: Installers read pv and battery of their own households for care.
    data_categories: [pv, battery]
    recipients: [installer]
    purposes: [sps.care]
    actions: [read]
    grants: true
    conditions: {relationship: own_households}
    limits: []
    requirement: null
  - id: sps-2
    section: "2"
    kind: statistics
    summary: Analysts see trends across households.
    data_categories: [pv]
    recipients: [analyst]
    purposes: [sps.trends]
    actions: [read_stats]
    grants: true
    conditions: {relationship: any, statistics_only: true, min_group_size: 25}
    limits: [no_household_ids]
    requirement: null
  - id: sps-3
    section: "3"
    kind: right_of_person
    summary: The person may suspend provision.
    data_categories: []
    recipients: []
    purposes: []
    actions: []
    grants: false
    conditions: {}
    limits: [suspension_overrides]
    requirement: null
"""


def test_compiles_exactly_the_granted_lines(tmp_path: Path) -> None:
    (tmp_path / "sps.yaml").write_text(MINI)
    policy = compile_seeds(load_seeds(tmp_path))
    assert set(policy.rules) == {
        Rule("sps-1/installer", "linked", "pv", "read", "sps.care", "allow", "sps-1"),
        Rule("sps-1/installer", "linked", "battery", "read", "sps.care", "allow", "sps-1"),
        Rule("sps-2/analyst", "customers", "pv", "read_stats", "sps.trends", "allow", "sps-2"),
        *(
            Rule("*", ALL, c, a, "sps.trends", "deny", "sps-2")
            for c in CATEGORIES
            for a in ("read", "export")
        ),
    }
    assert policy.bases["sps-1/installer"].third_party and not policy.bases["sps-2/analyst"].third_party
    assert policy.suspension_clause == "sps-3"
    assert all(r.line().startswith("p, ") and r.fields()[6] == r.clause for r in policy.rules)


def test_a_seed_change_changes_the_policy(tmp_path: Path) -> None:
    (tmp_path / "sps.yaml").write_text(MINI.replace("[pv, battery]", "[pv, battery, water]"))
    policy = compile_seeds(load_seeds(tmp_path))
    assert Rule("sps-1/installer", "linked", "water", "read", "sps.care", "allow", "sps-1") in policy.rules


def test_statistics_only_purpose_cannot_be_granted_read(tmp_path: Path) -> None:
    (tmp_path / "sps.yaml").write_text(MINI.replace("actions: [read_stats]", "actions: [read, read_stats]"))
    with pytest.raises(SeedError, match="read_stats"):
        compile_seeds(load_seeds(tmp_path))


def test_a_partner_cannot_reach_non_customers_by_kind_alone(tmp_path: Path) -> None:
    """``relationship: any`` reaches the company's customers through its own staff only: an installer
    with neither a link nor a registration is a compile error, not a grant over every household."""
    (tmp_path / "sps.yaml").write_text(
        MINI.replace("conditions: {relationship: own_households}", "conditions: {}")
    )
    with pytest.raises(CompileError, match=r"sps-1.*own_households"):
        compile_seeds(load_seeds(tmp_path))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            ("limits: [no_household_ids]", "limits: [no_household_ids, moonlight_only]"),
            "limit moonlight_only",
        ),
        (
            (
                "conditions: {}\n    limits: [suspension_overrides]",
                "conditions: {after_contract_end: true}\n    limits: [suspension_overrides]",
            ),
            "after_contract_end means nothing",
        ),
        (
            (
                "conditions: {}\n    limits: [suspension_overrides]",
                "conditions: {relationship: own_households}\n    limits: [suspension_overrides]",
            ),
            "relationship means nothing",
        ),
    ],
)
def test_check_fails_on_a_condition_or_limit_nothing_enforces(
    tmp_path: Path, change: tuple[str, str], problem: str
) -> None:
    text = MINI.replace(*change)
    assert text != MINI
    (tmp_path / "sps.yaml").write_text(text)
    result = check_policy(compile_seeds(load_seeds(tmp_path)), documents=())
    assert not result.ok and any(problem in p for p in result.problems), result.problems
    (tmp_path / "sps.yaml").write_text(MINI)
    assert check_policy(compile_seeds(load_seeds(tmp_path)), documents=()).ok


@pytest.mark.parametrize("size", [25, 3])
def test_the_statistics_minimum_group_comes_from_the_granting_clause(tmp_path: Path, size: int) -> None:
    """Issue 14: ``min_group_size`` is each clause's, not one number for every release; and a category
    the clause does not name gives no statistics at all (deny)."""
    (tmp_path / "sps.yaml").write_text(MINI.replace("min_group_size: 25", f"min_group_size: {size}"))
    seeds = load_seeds(tmp_path)
    db = tmp_path / "access.sqlite"
    rel, consent = RelationshipStore(db, seeds), ConsentStore(db, seeds)
    try:
        rel.add_principal("ana", "analyst", "Analyst", ["sps.trends"], company="sps")
        authz = Authorizer(compile_seeds(seeds), rel, consent)
        assert authz.statistics_grant("ana", "pv", "sps.trends", ("power_w",)) == (("sps-2",), size)
        assert authz.statistics_grant("ana", "battery", "sps.trends", ("power_w",)) is None
    finally:
        rel.close()
        consent.close()
