"""Random requests: nothing is allowed that the seeds do not grant, and the fast path equals Casbin.

The oracle below is written from the seeds and the store's records directly, in the plainest way,
without the compiler, the Casbin model or the index: if any of those drifts from what the clauses say,
the two answers part.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import casbin
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access.compiler import Policy
from access.relationships import APPROVER_ROLES
from seeds.loader import Seeds
from seeds.vocabulary import CATEGORIES
from tests.access.conftest import T as AT
from tests.access.conftest import World, _world

PRINCIPALS: tuple[str, ...] = ("alice", "bob", "sales1", "inst1", "whole1", "appr1", "appr_narrow")
PRINCIPALS = (*PRINCIPALS, "appr_old", "body1", "op", "ana", "retail1", "grid1", "unreg", "nobody")
HOUSEHOLDS = ("h1", "h1", "h2", "h2", "*", "own", "any", "all")


def oracle(world: World, principal: str, household: str, category: str, action: str, purpose: str) -> bool:
    seeds: Seeds = world.seeds
    rel = world.rel
    who = rel.find_principal(principal)
    if who is None or purpose not in who.purposes:
        return False
    declared = seeds.purposes.get(purpose)
    if declared is not None and declared.statistics_only and action != "read_stats":
        return False
    for s in world.consent.suspensions(household):
        if not s.active(AT) or s.category not in (None, category):
            continue
        if s.recipient == principal:
            return False
        third_party = who.kind not in ("homeowner", "operator", "analyst")
        if s.recipient is None and who.kind != "homeowner" and (s.scope == "use" or third_party):
            return False
    # Roles the principal holds for this household, straight from the records.
    roles: set[str] = set()
    approvals = []
    rows = rel._db.execute(
        "SELECT role FROM links WHERE principal = ? AND household = ? "
        "AND since <= ? AND (until IS NULL OR until > ?)",
        (principal, household, AT, AT),
    )
    roles |= {r[0] for r in rows}
    rows = rel._db.execute(
        "SELECT 1 FROM designations WHERE principal = ? AND household = ? AND designated_at <= ? "
        "AND (revoked_at IS NULL OR revoked_at > ?)",
        (principal, household, AT, AT),
    )
    if rows.fetchone():
        roles.add("designated_body")
    for a in rel.approvals():
        if a.approved != principal or not (a.valid_from <= AT < a.valid_to):
            continue
        if a.revoked_at is not None and a.revoked_at <= AT:
            continue
        approver_roles = {
            r[0]
            for r in rel._db.execute(
                "SELECT role FROM links WHERE principal = ? AND household = ? AND since <= ? "
                "AND (until IS NULL OR until > ?)",
                (a.approver, household, AT, AT),
            )
        } & APPROVER_ROLES
        if approver_roles:
            approvals.append((a, approver_roles))
    for clause in seeds.clauses:
        if not clause.grants or purpose not in clause.purposes:
            continue
        if category not in clause.data_categories or action not in clause.actions:
            continue
        if clause.conditions.relationship != "own_households":
            if who.kind in clause.recipients:
                return True
            continue
        if roles & set(clause.recipients):
            return True
        if "approved_company" in clause.recipients:
            for a, approver_roles in approvals:
                if (
                    category in a.categories
                    and purpose in a.purposes
                    and approver_roles & set(clause.recipients)
                ):
                    return True
    return False


@pytest.fixture(scope="module")
def prop_world(tmp_path_factory: pytest.TempPathFactory, seeds: Seeds, policy: Policy) -> Iterator[World]:
    path: Path = tmp_path_factory.mktemp("prop") / "access.sqlite"
    for w in _world(path, seeds, policy):
        # Enough suspensions that random requests often meet a deny overriding an allow.
        w.consent.suspend("h1", "provision", recipient="whole1", at=AT - 5)
        w.consent.suspend("h1", "use", recipient="op", at=AT - 5)
        w.consent.suspend("h1", "provision", category="battery", at=AT - 5)
        w.consent.suspend("h1", "provision", category="identity", at=AT - 5)
        w.consent.suspend("h2", "use", category="water", at=AT - 5)
        w.consent.suspend("h2", "provision", category="pv", at=AT - 5)
        w.consent.suspend("h2", "provision", category="electricity", at=AT + 5)  # not yet in force
        w.rel.link_many(
            [("inst1", "h2", "installer"), ("sales1", "h2", "sales_company"), ("retail1", "h2", "retailer")],
            since=AT - 1000,
        )
        yield w


def _purposes(seeds: Seeds) -> list[str]:
    return [*sorted(seeds.purposes), "made.up"]


@pytest.fixture(scope="module")
def enforcer(prop_world: World) -> casbin.Enforcer:
    return prop_world.authz.enforcer(AT)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fast_path_equals_casbin_and_the_seeds(
    prop_world: World, enforcer: casbin.Enforcer, data: st.DataObject
) -> None:
    world = prop_world
    principal = data.draw(st.sampled_from(PRINCIPALS))
    # Bias towards requests that can matter: mostly purposes the principal is registered for and the
    # households it is (or is not) linked to, so allows and the denies that override them both occur.
    who = world.rel.find_principal(principal)
    registered = sorted(who.purposes) if who is not None and who.purposes else ["made.up"]
    purpose = data.draw(
        st.one_of(
            st.sampled_from(registered), st.sampled_from(registered), st.sampled_from(_purposes(world.seeds))
        )
    )
    household = data.draw(st.sampled_from(HOUSEHOLDS))
    category = data.draw(st.sampled_from([*CATEGORIES, "*"]))
    action = data.draw(st.sampled_from(["read", "read", "read_stats", "export", "*"]))
    fast = world.authz.decide(principal, household, category, action, purpose, at=AT).allowed
    slow = enforcer.enforce(principal, household, category, action, purpose)
    assert fast == slow, (principal, household, category, action, purpose)
    assert fast == oracle(world, principal, household, category, action, purpose), world.authz.explain(
        principal, household, category, action, purpose, at=AT
    )


def test_the_property_test_sees_both_answers(prop_world: World) -> None:
    """Guard against a vacuous property: the sampled space contains allows and denies of each kind."""
    w = prop_world
    assert w.authz.decide("inst1", "h2", "battery", "read", "sps.pv_after_maintenance", at=AT).allowed
    assert not w.authz.decide("inst1", "h2", "pv", "read", "sps.pv_after_maintenance", at=AT).allowed
    assert not w.authz.decide("whole1", "h1", "pv", "read", "sps.pv_after_maintenance", at=AT).allowed
    assert not w.authz.decide("inst1", "h1", "battery", "read", "sps.pv_after_maintenance", at=AT).allowed
    assert not w.authz.decide("op", "h2", "water", "read", "sps.service_provision", at=AT).allowed
    assert w.authz.decide("op", "h2", "pv", "read", "sps.service_provision", at=AT).allowed
