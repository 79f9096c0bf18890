"""A second, deliberately simple reading of the seeds' semantics: the oracle for the property tests.

It shares no code with ``access.compiler``, ``access.index``, ``access.casbin_adapter``,
``access.decision`` or ``access.relationships``: it reads the seeds' YAML itself and a world
described as plain dictionaries and tuples, and it answers by brute force.  The window is cut at every
instant any fact of the world begins or ends; for each piece it asks, at one data instant inside it,
whether some clause grants the request given who held what then *and* at decision time; the served
periods are the pieces that pass.  Slow, obvious, and written from the rules as the README states
them, so a drift in the compiler, the index or the Casbin model shows as a disagreement.

World description (all periods are ``(start, stop)`` in seconds, ``math.inf`` for open-ended)::

    principals:  {id: {"kind": str, "company": str | None, "purposes": set[str]}}
    links:       [(principal, household, role, start, stop)]
    contracts:   [(household, company, start, stop)]
    approvals:   [(id, approver, approved, categories, purposes, start, stop)]
    designations:[(company, principal, household, start, stop)]
    joint_uses:  [(company, clause, principal, start, stop)]
    mandates:    [(person, agent, categories | None, start, stop, verified_at | None)]
    suspensions: [(household, company, scope, recipient | None, category | None, start, stop)]
                 (a suspension covers only its requester's own time: the instants at which someone
                 who was the homeowner when it was asked for is the homeowner)
    erasures:    [(household, categories, [(start, stop), ...], completed_at)]

A request may name items of its category (fields of the field table): served where every item has a
clause granting it (one that names it in ``data_items``, or grants the category without naming any);
a request naming none asks for the whole category, which only clauses naming no items grant.  An
erasure completed by decision time takes its categories' data of its periods from every request.
"""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path
from typing import Any

import yaml

SEEDS = Path(__file__).resolve().parents[2] / "seeds"
APPROVERS = ("sales_company", "installer", "wholesaler")
LINKED = ("sales_company", "installer", "wholesaler", "retailer", "grid_operator", "dr_aggregator")

World = dict[str, Any]


def load(directory: Path = SEEDS) -> tuple[list[dict[str, Any]], dict[str, bool]]:
    """(clauses with their document added, purpose id -> statistics only) straight from the YAML."""
    clauses: list[dict[str, Any]] = []
    stats_only: dict[str, bool] = {}
    for path in sorted(directory.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        company = doc["document"]["id"]
        for p in doc["purposes"]:
            stats_only[p["id"]] = bool(p["statistics_only"])
        for c in doc["clauses"]:
            clauses.append({**c, "company": company, "conditions": c.get("conditions") or {}})
    return clauses, stats_only


def _in(start: float, stop: float, t: float) -> bool:
    return start <= t < stop


class Reference:
    def __init__(self, directory: Path = SEEDS) -> None:
        self.clauses, self.stats_only = load(directory)

    def served(
        self,
        world: World,
        principal: str,
        household: str,
        category: str,
        action: str,
        purpose: str,
        window: tuple[float, float],
        now: float,
        verified: bool = False,
        items: tuple[str, ...] | None = None,
    ) -> list[tuple[float, float]]:
        who = world["principals"].get(principal)
        if who is None or purpose not in who["purposes"]:
            return []
        if self.stats_only.get(purpose) and action != "read_stats":
            return []
        cuts = {window[0], window[1]}
        for key in ("links", "contracts", "designations", "joint_uses", "suspensions"):
            for row in world[key]:
                cuts.update(row[-2:])
        for row in world["approvals"]:
            cuts.update(row[-2:])
        for _, _, periods, _ in world.get("erasures", ()):
            for a, b in periods:
                cuts.update((a, b))
        points = sorted(t for t in cuts if window[0] <= t <= window[1] and not math.isinf(t))
        if not math.isinf(window[0]) and (not points or points[0] != window[0]):
            points.insert(0, window[0])
        edges = (
            ([window[0]] if math.isinf(window[0]) else [])
            + points
            + ([window[1]] if math.isinf(window[1]) else [])
        )
        out: list[tuple[float, float]] = []
        for a, b in pairwise(edges):
            if a >= b:
                continue
            t = a if not math.isinf(a) else (b - 1.0 if not math.isinf(b) else 0.0)
            if self._erased(world, household, category, t, now):
                continue
            wanted: tuple[str | None, ...] = (None,) if items is None else items
            if all(
                self._allowed_at(
                    world, principal, household, category, action, purpose, t, now, verified, item
                )
                for item in wanted
            ):
                if out and out[-1][1] == a:
                    out[-1] = (out[-1][0], b)
                else:
                    out.append((a, b))
        return out

    # -- one data instant ------------------------------------------------------------------------------
    @staticmethod
    def _erased(w: World, h: str, cat: str, t: float, now: float) -> bool:
        for hh, cats, periods, completed in w.get("erasures", ()):
            if hh == h and cat in cats and completed <= now and any(_in(a, b, t) for a, b in periods):
                return True
        return False

    def _allowed_at(
        self,
        w: World,
        p: str,
        h: str,
        cat: str,
        act: str,
        pur: str,
        t: float,
        now: float,
        verified: bool,
        item: str | None,
    ) -> bool:
        """Whether ``item`` of ``cat`` (None: the whole category) may be served at data instant ``t``."""
        for c in self.clauses:
            if not c["grants"] or pur not in c["purposes"] or act not in c["actions"]:
                continue
            if cat not in c["data_categories"]:
                continue
            named = (c.get("data_items") or {}).get(cat)
            if named is not None and (item is None or item not in named):
                continue
            for r in c["recipients"]:
                if self._recipient_holds(w, c, r, p, h, cat, pur, t, now, verified):
                    return True
        return False

    def _contract(self, w: World, h: str, company: str, t: float) -> bool:
        return any(hh == h and co == company and _in(a, b, t) for hh, co, a, b in w["contracts"])

    def _link(self, w: World, p: str, h: str, role: str, t: float) -> bool:
        if w["principals"].get(p, {}).get("kind") != role:
            return False
        return any(pp == p and hh == h and rr == role and _in(a, b, t) for pp, hh, rr, a, b in w["links"])

    def _registered(self, w: World, p: str, clause: str, t: float) -> bool:
        return any(pp == p and cl == clause and _in(a, b, t) for _, cl, pp, a, b in w["joint_uses"])

    def _suspended(
        self, w: World, c: dict[str, Any], who: str, h: str, cat: str, third_party: bool, t: float, now: float
    ) -> bool:
        suspendable = "suspension_overrides" in (c.get("limits") or [])
        for hh, company, scope, recipient, category, a, b in w["suspensions"]:
            if hh != h or company != c["company"]:
                continue
            if category is not None and category != cat:
                continue
            if recipient is not None and recipient != who:
                continue
            if scope == "provision" and not (third_party and suspendable):
                continue
            if not self._requesters_time(w, h, a, t):
                continue
            if _in(a, b, now) or _in(a, b, t):
                return True
        return False

    def _requesters_time(self, w: World, h: str, asked: float, t: float) -> bool:
        """Whether data instant ``t`` is the own time of the person who asked at ``asked`` for a
        suspension: one who was the homeowner then is the homeowner at ``t`` too (SPS 2(6): a person
        suspends provision of their own data).  Nobody was the homeowner then: every instant is."""
        requesters = [
            pp for pp, hh, rr, _, _ in w["links"] if hh == h and self._link(w, pp, h, "homeowner", asked)
        ]
        return not requesters or any(self._link(w, pp, h, "homeowner", t) for pp in requesters)

    def _recipient_holds(
        self,
        w: World,
        c: dict[str, Any],
        r: str,
        p: str,
        h: str,
        cat: str,
        pur: str,
        t: float,
        now: float,
        verified: bool,
    ) -> bool:
        company = c["company"]
        cond = c["conditions"]
        me = w["principals"][p]
        in_contract = self._contract(w, h, company, t)
        if not in_contract:
            return False
        contract_now = self._contract(w, h, company, now)
        staff = r in ("operator", "analyst") and me["kind"] == r and me["company"] == company
        if staff and (cond.get("after_contract_end") or contract_now):
            return not self._suspended(w, c, p, h, cat, False, t, now)
        if r == "homeowner":
            if cond.get("identity_check") and not verified:
                return False
            return self._link(w, p, h, "homeowner", t)
        if r == "agent":
            for person, agent, cats, a, b, checked in w["mandates"]:
                if (
                    agent != p
                    or me["kind"] != "agent"
                    or checked is None
                    or checked > now
                    or not _in(a, b, now)
                ):
                    continue
                if cats is not None and cat not in cats:
                    continue
                if self._link(w, person, h, "homeowner", t):
                    return True
            return False
        if not contract_now:
            return False
        own = cond.get("relationship") == "own_households"
        named = bool(cond.get("named_recipients"))
        if r in LINKED and own and me["kind"] == r:
            if not (self._link(w, p, h, r, t) and self._link(w, p, h, r, now)):
                return False
            if named and not (self._registered(w, p, c["id"], t) and self._registered(w, p, c["id"], now)):
                return False
            return not self._suspended(w, c, p, h, cat, True, t, now)
        if named and not own and me["kind"] == r:
            if self._registered(w, p, c["id"], t) and self._registered(w, p, c["id"], now):
                return not self._suspended(w, c, p, h, cat, True, t, now)
            return False
        if r == "designated_body" and me["kind"] == r:
            mine = [(a, b) for co, pp, hh, a, b in w["designations"] if co == company and pp == p and hh == h]
            if any(_in(a, b, t) for a, b in mine) and any(_in(a, b, now) for a, b in mine):
                return not self._suspended(w, c, p, h, cat, True, t, now)
            return False
        if r == "approved_company" and me["kind"] == r:
            for _, approver, approved, cats, purs, a, b in w["approvals"]:
                if (
                    approved != p
                    or cat not in cats
                    or pur not in purs
                    or not (_in(a, b, t) and _in(a, b, now))
                ):
                    continue
                for role in APPROVERS:
                    if role not in c["recipients"]:
                        continue
                    held = self._link(w, approver, h, role, t) and self._link(w, approver, h, role, now)
                    if held and not (
                        self._suspended(w, c, approver, h, cat, True, t, now)
                        or self._suspended(w, c, p, h, cat, True, t, now)
                    ):
                        return True
            return False
        return False
