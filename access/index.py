"""The fast path: the served periods of a request, computed by period algebra over indexed facts.

Casbin answers one instant at a time and walks every policy line per request; the API answers every
series query.  This index is built from the very same policy lines (static, plus each approval's) and
the same facts, at one decision instant ``now``, and answers the whole window at once: for each line
matching the request's (category, action, purpose), the periods its basis rests on (link, contract,
registration, designation, approval, the approver's link; see ``access.compiler``), cut by the
"held now" rule and by the suspensions that cover the basis, intersected with the window, and unioned
over the lines that cover the items asked (for several items: intersected over the items, each the
union of the lines covering it), less what completed erasures took.  ``access.casbin_adapter``
computes the same answer with Casbin, slice by slice; the property tests hold both equal to an
independent reference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple, TypeVar

from access.compiler import (
    AGENT,
    ALLOW,
    APPROVED,
    DESIGNATED,
    IDENTITY,
    LINK,
    NAMED,
    PERSON,
    STAFF,
    WHOLE,
    WILDCARD,
    Basis,
    Rule,
)
from access.periods import ALWAYS, NEVER, Periods, contains, intersect, normalize, subtract, union
from access.request import AccessRequest
from access.world import (
    Approval,
    Contract,
    Designation,
    Erasure,
    JointUse,
    Link,
    Mandate,
    Principal,
    Suspension,
)
from seeds.vocabulary import category_items, has_items

_NO_ROLES: Mapping[str, Periods] = {}
_NO_REACH: Mapping[int, Periods] = MappingProxyType({})


class Line(NamedTuple):
    basis: Basis
    clause: str
    identity: bool  # needs a verified identity
    item: str = WHOLE  # the item it grants, or WHOLE (every item of the category)


class Grant(NamedTuple):
    """One line's contribution: its basis, clause and the periods it serves within the window."""

    basis: Basis
    clause: str
    periods: Periods


class Outcome(NamedTuple):
    served: Periods
    grants: tuple[Grant, ...]
    registered: bool
    denied_by: tuple[str, ...]  # statistics-only deny lines that matched
    suspended_by: tuple[Suspension, ...]  # suspensions that took something from a basis
    needs_identity: bool  # a person line applied but the identity was not verified
    held: bool  # some line's basis rested on anything at all, before the window
    # Items asked that no line holding in the window grants (``WHOLE`` when the whole category was asked
    # and only some of its items are granted), and the clauses of the lines that do hold there (they
    # grant other items of the category): why a request for those items is refused.
    items_refused: tuple[str, ...] = ()
    item_clauses: tuple[str, ...] = ()
    erased_by: tuple[Erasure, ...] = ()  # completed erasures that took something from the window
    by_item: bool = False  # what is served rests on item lines (the whole category is not granted)


K = TypeVar("K")


def _periods_by_key(pairs: Iterable[tuple[K, Periods]]) -> dict[K, Periods]:
    out: dict[K, Periods] = {}
    for key, ps in pairs:
        had = out.get(key)
        out[key] = ps if had is None else normalize((*had, *ps))
    return out


@dataclass(frozen=True)
class Lines:
    """Policy lines by what a request asks and who asks: allow lines by (category, action, purpose,
    principal kind), an approval's lines by (category, action, purpose, approved principal), every allow
    line by (category, action, purpose) for explanations, and the clauses of deny lines by (category,
    action, purpose).  Keyed so a decision walks only the lines that can match its principal."""

    allow: Mapping[tuple[str, str, str, str], tuple[Line, ...]]
    approved: Mapping[tuple[str, str, str, str], tuple[Line, ...]]
    by_request: Mapping[tuple[str, str, str], tuple[Line, ...]]
    deny: Mapping[tuple[str, str, str], tuple[str, ...]]

    @classmethod
    def of(cls, rules: Iterable[Rule], bases: Mapping[str, Basis], base: Lines | None = None) -> Lines:
        """The lines of ``rules`` (added to ``base``'s, e.g. the static policy's, when given)."""
        allow: dict[tuple[str, str, str, str], list[Line]] = {}
        approved: dict[tuple[str, str, str, str], list[Line]] = {}
        by_request: dict[tuple[str, str, str], list[Line]] = {}
        deny: dict[tuple[str, str, str], list[str]] = {}
        if base is not None:
            allow = {k: list(v) for k, v in base.allow.items()}
            approved = {k: list(v) for k, v in base.approved.items()}
            by_request = {k: list(v) for k, v in base.by_request.items()}
            deny = {k: list(v) for k, v in base.deny.items()}
        for r in rules:
            if r.eft == ALLOW:
                basis = bases.get(r.sub)
                if basis is None:
                    continue
                line = Line(basis, r.clause, r.idc == IDENTITY, r.item)
                if basis.principal is not None:
                    approved.setdefault((r.cat, r.act, r.pur, basis.principal), []).append(line)
                else:
                    allow.setdefault((r.cat, r.act, r.pur, basis.recipient), []).append(line)
                by_request.setdefault((r.cat, r.act, r.pur), []).append(line)
            elif r.sub == WILDCARD:
                deny.setdefault((r.cat, r.act, r.pur), []).append(r.clause)
        return cls(
            {k: tuple(v) for k, v in allow.items()},
            {k: tuple(v) for k, v in approved.items()},
            {k: tuple(v) for k, v in by_request.items()},
            {k: tuple(dict.fromkeys(v)) for k, v in deny.items()},
        )


class HomeIndex(NamedTuple):
    """One household's facts indexed: a change to the household replaces this, nothing else.

    ``links``: principal -> role -> periods (a principal holds only its own kind's role: links of
    another kind, older databases may hold them, are left out, and their principals named in
    ``skipped``); ``contracts``: company -> periods; ``designations``: (principal, company) -> periods;
    ``reach``: suspension id -> the data periods it may cover (:func:`suspension_reach`).
    A tuple, not a dataclass: a whole rebuild makes one per household of the fleet."""

    links: Mapping[str, Mapping[str, Periods]]
    contracts: Mapping[str, Periods]
    designations: Mapping[tuple[str, str], Periods]
    suspensions: tuple[Suspension, ...]
    erasures: tuple[Erasure, ...]
    skipped: frozenset[str]
    reach: Mapping[int, Periods] = _NO_REACH

    @classmethod
    def of(
        cls,
        principals: Mapping[str, Principal],
        links: Iterable[Link],
        contracts: Iterable[Contract],
        designations: Iterable[Designation],
        suspensions: tuple[Suspension, ...],
        erasures: tuple[Erasure, ...],
    ) -> HomeIndex:
        held: dict[str, dict[str, Periods]] = {}
        skipped: set[str] = set()
        for link in links:
            p = principals.get(link.principal)
            if p is None or p.kind != link.role:
                skipped.add(link.principal)
                continue
            roles = held.get(link.principal)
            if roles is None:
                held[link.principal] = {link.role: link.period}
            else:
                roles[link.role] = normalize((*roles.get(link.role, NEVER), *link.period))
        return cls(
            held,
            _periods_by_key([(c.company, c.period) for c in contracts]),
            _periods_by_key([((d.principal, d.company), d.period) for d in designations]),
            suspensions,
            erasures,
            frozenset(skipped) if skipped else _NOBODY,
            {s.id: suspension_reach(s, held) for s in suspensions} if suspensions else _NO_REACH,
        )


def suspension_reach(s: Suspension, links: Mapping[str, Mapping[str, Periods]]) -> Periods:
    """The data periods suspension ``s`` may cover: its requester's own time as the household's homeowner
    (SPS 2(6): the person suspends provision of *their* data).  The requester is whoever held the
    homeowner link when it was asked for (the rule by which the consent API shows a person, and lets them
    lift, only their own suspensions: ``access.api.service.own_suspensions``), over every period they held
    it.  A suspension recorded while no homeowner held the household has no known requester: it keeps
    covering the household's whole time, as it always did (refusing more, never less)."""
    reach: Periods = NEVER
    for roles in links.values():
        held = roles.get("homeowner", NEVER)
        if contains(held, s.requested_at):
            reach = union(reach, held)
    return reach or ALWAYS


_NOBODY: frozenset[str] = frozenset()
_NO_HOME = HomeIndex({}, {}, {}, (), (), frozenset())


@dataclass(frozen=True)
class SharedIndex:
    """The facts that reach across households, indexed: principals (and what each is registered for),
    registered joint users, approvals and agent mandates."""

    principals: Mapping[str, Principal]
    registered: Mapping[str, frozenset[str]]
    joint: Mapping[tuple[str, str], Periods]
    approvals: Mapping[int, Approval]
    mandates: Mapping[str, tuple[Mandate, ...]]

    @classmethod
    def of(
        cls,
        principals: Mapping[str, Principal],
        joint_uses: Iterable[JointUse],
        approvals: Iterable[Approval],
        mandates: Iterable[Mandate],
    ) -> SharedIndex:
        joint: dict[tuple[str, str], Periods] = {}
        for j in joint_uses:
            key = (j.principal, j.clause)
            joint[key] = normalize((*joint.get(key, NEVER), *j.period))
        by_agent: dict[str, list[Mandate]] = {}
        for m in mandates:
            by_agent.setdefault(m.agent, []).append(m)
        return cls(
            principals,
            {pid: p.purposes for pid, p in principals.items()},
            joint,
            {a.id: a for a in approvals},
            {agent: tuple(ms) for agent, ms in by_agent.items()},
        )


class SnapshotIndex:
    """The facts indexed for decisions taken at ``now``: the shared part and one :class:`HomeIndex` per
    household (``access.slices`` keeps them, replacing only the households a change touched)."""

    def __init__(self, lines: Lines, shared: SharedIndex, homes: Mapping[str, HomeIndex], now: float) -> None:
        self.now = now
        self.principals = shared.principals
        self.registered = shared.registered
        self.allow = lines.allow
        self.approved = lines.approved
        self.lines = lines.by_request  # every line of a request, whoever asks (explanations)
        self.deny = lines.deny
        self.joint = shared.joint
        self.approvals = shared.approvals
        self.mandates = shared.mandates
        self.homes = homes

    def registered_for(self, principal: str, purpose: str) -> bool:
        return purpose in self.registered.get(principal, ())

    def evaluate(self, req: AccessRequest) -> Outcome:
        principal, household, category, action, purpose = (
            req.principal,
            req.household,
            req.category,
            req.action,
            req.purpose,
        )
        if purpose not in self.registered.get(principal, ()):
            return Outcome(NEVER, (), False, (), (), False, False)
        denied = self.deny.get((category, action, purpose))
        if denied:
            return Outcome(NEVER, (), True, denied, (), False, False)
        who = self.principals[principal]
        lines = self.allow.get((category, action, purpose, who.kind), ())
        if who.kind == "approved_company":
            lines += self.approved.get((category, action, purpose, principal), ())
        if not lines:
            return Outcome(NEVER, (), True, (), (), False, False)
        window = (req.window,)
        held_lines: list[tuple[str, Grant]] = []  # (the line's item, its grant within the window)
        suspended: list[Suspension] = []
        needs_identity = held = False
        for line in lines:
            if line.identity and not req.identity_verified:
                if self.basis_periods(line.basis, principal, household, category, []):
                    needs_identity = held = True
                continue
            periods = self.basis_periods(line.basis, principal, household, category, suspended)
            if not periods:
                continue
            held = True
            periods = intersect(periods, window)
            if periods:
                held_lines.append((line.item, Grant(line.basis, line.clause, periods)))
        served, grants, refused_items, by_item = _cover(held_lines, req.items)
        erased: list[Erasure] = []
        if served:
            served = self._unerased(served, household, category, erased)
            if not served:
                grants = []
        item_clauses: tuple[str, ...] = ()
        if refused_items:
            item_clauses = tuple(dict.fromkeys(g.clause for _, g in held_lines))
        return Outcome(
            served,
            tuple(grants),
            True,
            (),
            tuple(suspended),
            needs_identity,
            held,
            refused_items,
            item_clauses,
            tuple(erased),
            by_item,
        )

    def items_served(self, req: AccessRequest) -> dict[str, Periods]:
        """Each item of the request's category that something of the window may be served of, with its
        periods: what a request that names no items is given (``access.api``)."""
        if not has_items(req.category):
            return {}
        out: dict[str, Periods] = {}
        for item in category_items(req.category):
            served = self.evaluate(req._replace(items=(item,))).served
            if served:
                out[item] = served
        return out

    def _unerased(self, periods: Periods, household: str, category: str, erased: list[Erasure]) -> Periods:
        """``periods`` without the data periods completed erasures took from ``category``."""
        for e in self.homes.get(household, _NO_HOME).erasures:
            if e.covers(category, self.now):
                before = periods
                periods = subtract(periods, e.periods)
                if periods != before:
                    erased.append(e)
        return periods

    # -- one basis -----------------------------------------------------------------------------------
    def basis_periods(
        self, basis: Basis, principal: str, household: str, category: str, suspended: list[Suspension]
    ) -> Periods:
        """The data periods ``basis`` serves ``principal`` for ``household`` (any window), after the
        "held now" rule and the suspensions that cover it; each suspension that took something is
        appended to ``suspended``."""
        now = self.now
        kind = basis.kind
        home = self.homes.get(household, _NO_HOME)
        contract = home.contracts.get(basis.company, NEVER)
        if not contract:
            return NEVER
        if kind == LINK:
            held = home.links.get(principal, _NO_ROLES).get(basis.role or "", NEVER)
            if not held or not contains(held, now) or not contains(contract, now):
                return NEVER
            periods = intersect(held, contract)
            if basis.registered:
                joint = self.joint.get((principal, basis.clause), NEVER)
                if not contains(joint, now):
                    return NEVER
                periods = intersect(periods, joint)
        elif kind == STAFF:
            p = self.principals.get(principal)
            if p is None or p.company != basis.company or p.kind != basis.recipient:
                return NEVER
            if not basis.after_end and not contains(contract, now):
                return NEVER
            periods = contract
        elif kind == PERSON:
            held = home.links.get(principal, _NO_ROLES).get("homeowner", NEVER)
            return intersect(held, contract)  # the person's own right: never suspended, kept after the end
        elif kind == AGENT:
            return self._agent_periods(principal, household, category, contract)
        elif kind == NAMED:
            p = self.principals.get(principal)
            joint = self.joint.get((principal, basis.clause), NEVER)
            if (
                p is None
                or p.kind != basis.recipient
                or not contains(joint, now)
                or not contains(contract, now)
            ):
                return NEVER
            periods = intersect(joint, contract)
        elif kind == DESIGNATED:
            designated = home.designations.get((principal, basis.company), NEVER)
            if not contains(designated, now) or not contains(contract, now):
                return NEVER
            periods = intersect(designated, contract)
        elif kind == APPROVED:
            periods = self._approved_periods(basis, principal, household, category, contract, suspended)
        else:
            return NEVER
        if periods:
            periods = self._unsuspended(periods, basis, principal, household, category, suspended)
        return periods

    def _agent_periods(self, agent: str, household: str, category: str, contract: Periods) -> Periods:
        """A verified mandate held now lends the person's whole period (their right, used by the agent)."""
        now = self.now
        out: Periods = NEVER
        links = self.homes.get(household, _NO_HOME).links
        for m in self.mandates.get(agent, ()):
            if m.verified_at is None or m.verified_at > now or not (m.since <= now < m.until):
                continue
            if m.categories is not None and category not in m.categories:
                continue
            held = links.get(m.person, _NO_ROLES).get("homeowner", NEVER)
            out = union(out, intersect(held, contract))
        return out

    def _approved_periods(
        self,
        basis: Basis,
        principal: str,
        household: str,
        category: str,
        contract: Periods,
        suspended: list[Suspension],
    ) -> Periods:
        """Approval within the approver's link and contract, never beyond what the approver itself is
        served now: the approver's suspensions cut the approval too."""
        a = self.approvals.get(basis.approval or -1)
        now = self.now
        if a is None or a.approved != principal or not (a.valid_from <= now < a.until):
            return NEVER
        held = (
            self.homes.get(household, _NO_HOME).links.get(a.approver, _NO_ROLES).get(basis.role or "", NEVER)
        )
        if not contains(held, now) or not contains(contract, now):
            return NEVER
        periods = intersect(intersect(a.period, held), contract)
        return self._unsuspended(periods, basis, a.approver, household, category, suspended)

    def _unsuspended(
        self,
        periods: Periods,
        basis: Basis,
        principal: str,
        household: str,
        category: str,
        suspended: list[Suspension],
    ) -> Periods:
        """``periods`` without what the household's suspensions with the basis's company take, each within
        its requester's own time (``HomeIndex.reach``): all of that when one covering suspension is in
        force now, else the data of that time recorded while one was."""
        home = self.homes.get(household, _NO_HOME)
        rows = home.suspensions
        if not rows:
            return periods
        provision_covered = basis.third_party and basis.suspendable
        for s in rows:
            if s.company != basis.company:
                continue
            if s.category is not None and s.category != category:
                continue
            if s.recipient is not None and s.recipient != principal:
                continue
            if s.scope == "provision" and not provision_covered:
                continue
            before = periods
            # In force now: all of its requester's time; lifted (or not yet begun): the data of that time
            # recorded while in force.
            reach = home.reach.get(s.id, ALWAYS)
            taken = reach if s.requested_at <= self.now < s.until else intersect(reach, s.period)
            periods = subtract(periods, taken)
            if periods != before:
                suspended.append(s)
            if not periods:
                break
        return periods

    def suspension_reach(self, household: str, s: Suspension) -> Periods:
        """The data periods suspension ``s`` of ``household`` may cover (its requester's own time)."""
        return self.homes.get(household, _NO_HOME).reach.get(s.id, ALWAYS)

    def tied(self, principal: str, household: str) -> bool:
        """Whether ``principal`` holds anything with ``household`` at any time (its refusals may then say
        why; to anyone else a refusal is one fixed answer, as for a household that does not exist)."""
        home = self.homes.get(household, _NO_HOME)
        if principal in home.links:
            return True
        if any(p == principal for p, _ in home.designations):
            return True
        for a in self.approvals.values():
            if a.approved == principal and a.approver in home.links:
                return True
        for m in self.mandates.get(principal, ()):
            if m.person in home.links:
                return True
        p = self.principals.get(principal)
        if p is None:
            return False
        if p.company is not None and p.company in home.contracts:
            return True
        companies = {clause.split("-", 1)[0] for pid, clause in self.joint if pid == principal}
        return any(company in home.contracts for company in companies)


def _cover(
    held: list[tuple[str, Grant]], items: tuple[str, ...] | None
) -> tuple[Periods, list[Grant], tuple[str, ...], bool]:
    """(served, the grants that serve it, the items asked that nothing held grants, whether an item line
    serves part of it).

    ``items`` None asks for the whole category: only whole-category lines serve it.  Otherwise each item
    is served by the lines of that item or of the whole category, and the request where every item is."""
    if items is None:
        grants = [g for item, g in held if item == WHOLE]
        served: Periods = NEVER
        for g in grants:
            served = union(served, g.periods)
        if not served and len(grants) < len(held):  # only items of the category are granted
            return NEVER, [], (WHOLE,), False
        return served, grants, (), False
    if all(item == WHOLE for item, _ in held):  # the common case: whole-category grants only
        served = NEVER
        for _, g in held:
            served = union(served, g.periods)
        return served, [g for _, g in held], (), False
    per_item: dict[str, Periods] = {}
    for want in items:
        covering: Periods = NEVER
        for item, g in held:
            if item in (WHOLE, want):
                covering = union(covering, g.periods)
        per_item[want] = covering
    missing = tuple(i for i, ps in per_item.items() if not ps)
    if missing:
        return NEVER, [], missing, False
    served = NEVER
    for k, ps in enumerate(per_item.values()):
        served = ps if k == 0 else intersect(served, ps)
    wanted = set(items)
    used = [
        (item, Grant(g.basis, g.clause, cut))
        for item, g in held
        if (item == WHOLE or item in wanted) and (cut := intersect(g.periods, served))
    ]
    whole: Periods = NEVER
    for item, g in used:
        if item == WHOLE:
            whole = union(whole, g.periods)
    return served, [g for _, g in used], (), whole != served
