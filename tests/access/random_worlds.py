"""Random worlds for the property tests: principals of every kind and company, and periods everywhere.

A world is made from one integer seed with ``random.Random`` (cheap: tens of microseconds), in the
plain description the reference evaluator reads (``tests.access.reference``), and turned into the
``access.world.Facts`` the access layer decides over by :func:`facts_of`.  Times are small integers
(0..100) so periods overlap, touch and nest often; ``math.inf`` stands for open-ended.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from access.periods import normalize
from access.request import AccessRequest
from access.world import (
    LINK_ROLES,
    Approval,
    Contract,
    Designation,
    Erasure,
    Facts,
    JointUse,
    Link,
    Mandate,
    Principal,
    Suspension,
)
from seeds.loader import Clause, Seeds
from seeds.vocabulary import category_items, has_items
from tests.access.reference import Reference

HOUSEHOLDS = ("h1", "h2")
COMPANIES = ("sps", "enex", "kaluza", "xoom", "sobu_gas")
CATEGORIES = ("identity", "contract", "equipment", "electricity", "pv", "gas", "ev")
TIMES = (0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100)
# (id, kind, company or None)
CAST: tuple[tuple[str, str, str | None], ...] = (
    ("own1", "homeowner", None),
    ("own2", "homeowner", None),
    ("agent1", "agent", None),
    ("sales1", "sales_company", None),
    ("inst1", "installer", None),
    ("inst2", "installer", None),
    ("whole1", "wholesaler", None),
    ("appr1", "approved_company", None),
    ("body1", "designated_body", None),
    ("retail1", "retailer", None),
    ("retail2", "retailer", None),
    ("grid1", "grid_operator", None),
    ("dr1", "dr_aggregator", None),
    ("party1", "named_party", None),
    ("party2", "named_party", None),
)
STAFF = ("operator", "analyst")

World = dict[str, Any]


@dataclass(frozen=True)
class Request:
    principal: str
    household: str
    category: str
    action: str
    purpose: str
    window: tuple[float, float]
    verified: bool
    items: tuple[str, ...] | None = None


def _period(rng: random.Random) -> tuple[float, float]:
    a = rng.choice(TIMES[:-1])
    later = [t for t in TIMES if t > a]
    b = math.inf if rng.random() < 0.35 else rng.choice(later)
    return float(a), float(b)


def purposes_by_kind(seeds: Seeds) -> dict[str, set[str]]:
    """kind -> the purposes some granting clause offers that kind (so requests often matter)."""
    out: dict[str, set[str]] = {}
    for c in seeds.granting():
        for r in c.recipients:
            out.setdefault(r, set()).update(c.purposes)
    return out


def make_world(seed: int, seeds: Seeds) -> tuple[World, float, list[Request]]:
    """A random world, a decision instant and requests that exercise it."""
    rng = random.Random(seed)
    offered = purposes_by_kind(seeds)
    every_purpose = sorted(seeds.purposes)
    cast = list(CAST)
    for i in range(rng.randint(1, 3)):
        cast.append((f"staff{i}", rng.choice(STAFF), rng.choice(COMPANIES)))
    principals: dict[str, dict[str, Any]] = {}
    for pid, kind, company in cast:
        mine = sorted(offered.get(kind, set()))
        if company is not None:
            mine = [p for p in mine if p.startswith(company + ".")]
        chosen = {p for p in mine if rng.random() < 0.85}
        if rng.random() < 0.2:
            chosen.add(rng.choice(every_purpose))
        principals[pid] = {"kind": kind, "company": company, "purposes": chosen}
    links = []
    for pid, kind, _ in cast:
        if kind not in LINK_ROLES:
            continue
        for _ in range(rng.choice((0, 1, 1, 1, 2))):
            # now and then a role that is not the principal's kind (as an old database may hold): ignored
            role = kind if rng.random() < 0.93 else rng.choice(("installer", "retailer", "homeowner"))
            links.append((pid, rng.choice(HOUSEHOLDS), role, *_period(rng)))
    contracts = [
        (h, co, *_period(rng))
        for h in HOUSEHOLDS
        for co in COMPANIES
        if rng.random() < (0.9 if co == "sps" else 0.7)
    ]
    contracts += [
        (rng.choice(HOUSEHOLDS), rng.choice(COMPANIES), *_period(rng)) for _ in range(rng.randint(0, 2))
    ]
    approvals = []
    for i in range(rng.randint(0, 2)):
        approver = rng.choice(("sales1", "inst1", "inst2", "whole1", "retail1"))
        cats = {c for c in CATEGORIES if rng.random() < 0.6} or {"pv"}
        purs = {"sps.pv_after_maintenance"} if rng.random() < 0.85 else {"sps.service_provision"}
        approvals.append((i + 1, approver, "appr1", cats, purs, *_period(rng)))
    designations = [
        (rng.choice(("sps", "enex")), "body1", rng.choice(HOUSEHOLDS), *_period(rng))
        for _ in range(rng.randint(0, 2))
    ]
    named = [c for c in seeds.granting() if c.conditions.named_recipients]
    joint_uses = []
    for _ in range(rng.randint(0, 4)):
        c = rng.choice(named)
        kinds = set(c.recipients) - {"operator"}
        who = [pid for pid, kind, _ in cast if kind in kinds]
        if who:
            joint_uses.append((c.document, c.id, rng.choice(who), *_period(rng)))
    mandates = []
    for _ in range(rng.randint(0, 2)):
        cats = None if rng.random() < 0.6 else {c for c in CATEGORIES if rng.random() < 0.5}
        a, b = _period(rng)
        checked = None if rng.random() < 0.2 else float(rng.choice(TIMES[:6]))
        mandates.append((rng.choice(("own1", "own2")), "agent1", cats, a, b, checked))
    suspensions = []
    for _ in range(rng.randint(0, 3)):
        recipient = None if rng.random() < 0.5 else rng.choice([pid for pid, _, _ in cast])
        category = None if rng.random() < 0.5 else rng.choice(CATEGORIES)
        company = rng.choice(("sps", "sps", "enex", "kaluza", "xoom", "sobu_gas"))
        scope = "provision" if company == "enex" or rng.random() < 0.6 else "use"
        suspensions.append((rng.choice(HOUSEHOLDS), company, scope, recipient, category, *_period(rng)))
    erasures = []
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        cats = {c for c in CATEGORIES if rng.random() < 0.4} or {"electricity"}
        periods = [_period(rng) for _ in range(rng.randint(1, 2))]
        erasures.append((rng.choice(HOUSEHOLDS), cats, periods, float(rng.choice(TIMES))))
    world = {
        "principals": principals,
        "links": links,
        "contracts": contracts,
        "approvals": approvals,
        "designations": designations,
        "joint_uses": joint_uses,
        "mandates": mandates,
        "suspensions": suspensions,
        "erasures": erasures,
    }
    now = float(rng.choice(TIMES)) + rng.choice((0.0, 0.0, 5.0))
    requests = []
    granting = list(seeds.granting())
    for _ in range(6):
        # A demand-response contractor now and then: the one kind granted items, not categories.
        pid = "dr1" if rng.random() < 0.08 else rng.choice(list(principals))
        mine = sorted(principals[pid]["purposes"]) or every_purpose
        purpose = rng.choice(mine) if rng.random() < 0.92 else rng.choice(every_purpose)
        category = rng.choice(CATEGORIES)
        action = rng.choice(("read", "read", "read", "read_stats", "export"))
        # Mostly a request some clause could grant this principal, so allows are common.
        fitting = [c for c in granting if purpose in c.purposes and principals[pid]["kind"] in c.recipients]
        chosen: Clause | None = None
        if fitting and rng.random() < 0.8:
            chosen = rng.choice(fitting)
            category, action = rng.choice(chosen.data_categories), rng.choice(chosen.actions)
            if chosen.data_items and rng.random() < 0.7:  # mostly the category it names items of
                category = rng.choice(chosen.data_items)[0]
        a = rng.choice((-math.inf, *TIMES))
        b = rng.choice([t for t in (*TIMES, math.inf) if t > a] or [math.inf])
        mine_hh = [h for p, h, *_ in links if p == pid]
        household = rng.choice(mine_hh) if mine_hh and rng.random() < 0.8 else rng.choice(HOUSEHOLDS)
        requests.append(
            Request(
                pid,
                household,
                category,
                action,
                purpose,
                (float(a), float(b)),
                rng.random() < 0.75,
                _items(rng, category, chosen),
            )
        )
    return world, now, requests


def with_succession(world: World, seed: int) -> World:
    """``world`` where h1 changed hands: own1 was its homeowner until a move, own2 since, and a suspension
    was asked for during one of their times (sometimes lifted since).  A suspension covers only its
    requester's own time (SPS 2(6)), so whose time a data instant is decides it."""
    rng = random.Random(seed)
    moved = float(rng.choice(TIMES[1:-1]))
    first = float(rng.choice([t for t in TIMES if t < moved]))
    links = [lk for lk in world["links"] if not (lk[1] == "h1" and lk[2] == "homeowner")]
    links += [("own1", "h1", "homeowner", first, moved), ("own2", "h1", "homeowner", moved, math.inf)]
    # Partners tied to h1 and h1 a customer of every company throughout, so suspensions have grants to cut.
    links += [(pid, "h1", kind, 0.0, math.inf) for pid, kind, _ in CAST if kind in LINK_ROLES[1:]]
    contracts = [*world["contracts"], *(("h1", co, 0.0, math.inf) for co in COMPANIES)]
    principals = {**world["principals"]}
    for pid in ("own1", "own2"):
        principals[pid] = {**principals[pid], "kind": "homeowner"}
    start = float(rng.choice([t for t in TIMES if (t < moved) == (rng.random() < 0.6)] or [moved]))
    stop = math.inf if rng.random() < 0.6 else float(rng.choice([t for t in TIMES if t > start] or [100]))
    company = rng.choice(("sps", "sps", "sps", "enex", "xoom", "sobu_gas", "kaluza"))
    scope = "provision" if company == "enex" or rng.random() < 0.7 else "use"
    category = None if rng.random() < 0.6 else rng.choice(CATEGORIES)
    suspension = ("h1", company, scope, None, category, start, stop)
    changed = {"principals": principals, "links": links, "contracts": contracts, "suspensions": [suspension]}
    return {**world, **changed}


def _items(rng: random.Random, category: str, clause: Clause | None) -> tuple[str, ...] | None:
    """None (the whole category) half the time; else some items: mostly those the chosen clause names
    (when it names any), else any of the category's."""
    if not has_items(category) or rng.random() < 0.5:
        return None
    named = clause.items_of(category) if clause is not None else None
    pool = named if named and rng.random() < 0.7 else category_items(category)
    return tuple(rng.sample(pool, k=rng.randint(1, min(3, len(pool)))))


def access_request(r: Request) -> AccessRequest:
    """The request as the access layer takes it."""
    return AccessRequest(
        r.principal,
        r.household,
        r.category,
        r.action,
        r.purpose,
        r.window,
        identity_verified=r.verified,
        items=r.items,
    )


def reference_served(
    reference: Reference, world: World, r: Request, now: float
) -> tuple[tuple[float, float], ...]:
    """What the independent reference serves ``r`` in ``world`` at ``now``."""
    return tuple(
        reference.served(
            world,
            r.principal,
            r.household,
            r.category,
            r.action,
            r.purpose,
            r.window,
            now,
            r.verified,
            r.items,
        )
    )


def facts_of(world: World) -> Facts:
    """The description as the access layer's facts."""
    principals = {
        pid: Principal(pid, p["kind"], pid, frozenset(p["purposes"]), p["company"])
        for pid, p in world["principals"].items()
    }
    return Facts(
        principals=MappingProxyType(principals),
        households=HOUSEHOLDS,
        links=tuple(Link(p, h, r, a, b) for p, h, r, a, b in world["links"]),
        contracts=tuple(
            Contract(i, h, co, "service", a, b) for i, (h, co, a, b) in enumerate(world["contracts"])
        ),
        approvals=tuple(
            Approval(i, x, y, frozenset(cats), frozenset(purs), a, b)
            for i, x, y, cats, purs, a, b in world["approvals"]
        ),
        designations=tuple(
            Designation(i, "staff0", co, p, h, a, b)
            for i, (co, p, h, a, b) in enumerate(world["designations"])
        ),
        joint_uses=tuple(
            JointUse(i, co, cl, p, a, b) for i, (co, cl, p, a, b) in enumerate(world["joint_uses"])
        ),
        mandates=tuple(
            Mandate(i, person, agent, None if cats is None else frozenset(cats), a, b, checked, "documents")
            for i, (person, agent, cats, a, b, checked) in enumerate(world["mandates"])
        ),
        suspensions=tuple(
            Suspension(i, h, scope, rec, cat, a, None if math.isinf(b) else b, co)
            for i, (h, co, scope, rec, cat, a, b) in enumerate(world["suspensions"])
        ),
        erasures=tuple(
            Erasure(i, h, frozenset(cats), normalize(periods), completed)
            for i, (h, cats, periods, completed) in enumerate(world["erasures"])
        ),
    )
