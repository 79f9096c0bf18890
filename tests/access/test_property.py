"""Random worlds: the fast path and Casbin serve exactly the periods the reference evaluator serves.

Each hypothesis example draws a seed and makes two random worlds from it (``tests.access.random_worlds``:
every principal kind, companies,
contracts, links, approvals, designations, registered joint users, agent mandates, suspensions and
completed erasures, all with periods, a decision instant among them) and six requests over random
windows, half of them naming items of their category.  The reference
(``tests.access.reference``) reads the seeds' YAML itself and shares no code with the compiler, the
index or the Casbin model.  The fast path answers all six; Casbin (one request per time slice of the
window) the first three, which keeps the default run near a minute for 10,000 worlds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from access.compiler import Policy
from access.decision import Authorizer
from seeds.loader import Seeds
from tests.access.random_worlds import access_request, facts_of, make_world, reference_served, with_succession
from tests.access.reference import Reference, World

WORLDS = 10_000
WORLDS_PER_EXAMPLE = 2  # hypothesis's own cost per example is about that of a world
CASBIN_REQUESTS = 3  # of the six per world
SUCCESSION_WORLDS = 1_000


def test_fast_path_and_casbin_serve_what_the_reference_serves(seeds: Seeds, policy: Policy) -> None:
    reference = Reference()
    seen: set[int] = set()
    tally: Counter[str] = Counter()

    @settings(
        max_examples=(WORLDS + WORLDS // 50) // WORLDS_PER_EXAMPLE,  # hypothesis may repeat a seed
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(drawn=st.integers(min_value=0, max_value=2**62 - 1))
    def some_worlds(drawn: int) -> None:
        for k in range(WORLDS_PER_EXAMPLE):
            one_world(drawn * WORLDS_PER_EXAMPLE + k)

    def one_world(seed: int) -> None:
        seen.add(seed)
        world, now, requests = make_world(seed, seeds)
        authz = Authorizer.over(policy, facts_of(world))
        for i, r in enumerate(requests):
            req = access_request(r)
            want = reference_served(reference, world, r, now)
            d = authz.decide(req, at=now)
            assert d.served == want, (seed, r, now, authz.explain(req, at=now))
            if i < CASBIN_REQUESTS:
                assert authz.casbin_served(req, at=now) == want, (seed, r, now)
                tally["casbin"] += 1
            tally["requests"] += 1
            tally[d.reason] += 1
            if d.allowed and d.refused:
                tally["partial"] += 1
            if d.allowed and r.items is not None:
                tally["items_allowed"] += 1

    some_worlds()
    assert len(seen) >= WORLDS, f"only {len(seen)} distinct worlds"
    # Not vacuous: every kind of answer occurs often.
    assert tally["allowed"] > 0.04 * tally["requests"] and tally["partial"] > 500, tally
    reasons = (
        "no_grant",
        "outside_period",
        "suspended",
        "identity_not_verified",
        "statistics_only",
        "item_not_granted",
        "erased",
    )
    for reason in reasons:
        assert tally[reason] > 50, (reason, tally)
    assert tally["items_allowed"] > 300, tally


class _EveryonesTime(Reference):
    """The reference as it read suspensions before: one covers the household's whole time, whoever asked
    for it.  Only to show the test below is not vacuous."""

    def _requesters_time(self, w: World, h: str, asked: float, t: float) -> bool:
        return True


def test_a_suspension_covers_only_its_requesters_time(seeds: Seeds, policy: Policy) -> None:
    """SPS 2(6): worlds where h1 changed hands and one occupant asked for a suspension; every request is
    about h1.  The fast path and Casbin serve what the reference serves, and the requester's time decides
    the answer in dozens of requests (where it differs from a suspension over the whole household).
    Casbin answers the first three requests of each world, as in the test above."""
    reference, everyones = Reference(), _EveryonesTime()
    tally: Counter[str] = Counter()
    for seed in range(SUCCESSION_WORLDS):
        world, now, requests = make_world(seed, seeds)
        world = with_succession(world, seed)
        authz = Authorizer.over(policy, facts_of(world))
        for i, r in enumerate(replace(r, household="h1") for r in requests):
            req = access_request(r)
            want = reference_served(reference, world, r, now)
            assert authz.decide(req, at=now).served == want, (seed, r, now, authz.explain(req, at=now))
            if i < CASBIN_REQUESTS:
                assert authz.casbin_served(req, at=now) == want, (seed, r, now)
                tally["casbin"] += 1
            if want != reference_served(everyones, world, r, now):
                tally["requester_time_decides"] += 1
    assert tally["requester_time_decides"] > 30, tally
