"""Casbin, the policy engine of record, fed from the compiled policy and a time-sliced role snapshot.

Casbin decides one instant: does the principal hold a role the policy grants, in a domain?  Periods are
brought to it by slicing time, not by teaching the model to compute with intervals: each household's
time is cut at every instant where something its grants rest on begins or ends (a link, a contract, a
designation, a suspension; approvals and joint-use registrations, which reach many households, cut
every household's time).  Within one slice every fact either holds throughout or not at all, so the
question "may P read H's data of this slice" is one Casbin request on the domain ``H@k``, and the
role snapshot gives P the basis role in ``H@k`` exactly when the basis holds in that slice *and* at
decision time (or is kept after the end), and no suspension in force then or now covers it (a
suspension covers only its requester's own time as the homeowner: SPS 2(6)).  The
served periods are the slices of the window Casbin allows.  This keeps every rule in the model file
and the policy lines, and keeps the model a plain RBAC-with-domains one that any Casbin port reads.

Items: a request for several items of a category is one Casbin request per item and slice (served
where all are allowed); a request for the whole category asks with item ``*``, which only
whole-category lines match.  Erasures: the erased periods cut the household's time too, and in a
slice an erasure took, no basis holds the erased categories.

The role snapshot is computed here with point-in-time checks, independently of the fast path's period
algebra (``access.index``): the property tests hold the two equal, and both equal to a reference.

The adapter appends to the model's lists directly, as Casbin's own file adapter does:
``Model.add_policies`` checks each new line against every existing one, which is quadratic and takes
minutes at 10k households.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import casbin
from casbin.model import FastModel, Model
from casbin.model.policy_fast import FastPolicy
from casbin.persist.adapter import Adapter

from access.compiler import AGENT, ALLOW, APPROVED, DESIGNATED, LINK, NAMED, PERSON, STAFF, WHOLE, Basis, Rule
from access.periods import Periods, contains, normalize
from access.request import AccessRequest
from access.world import FOREVER, Designation, Erasure, Facts, Link, Suspension
from seeds.vocabulary import CATEGORIES

MODEL_PATH = Path(__file__).with_name("model.conf")
FILTER_FIELDS = (2, 3, 4)  # cat, act, pur: the same positions in the request and in a policy line
_ALL = frozenset(CATEGORIES)
Span = tuple[float, float]


@dataclass(frozen=True)
class Candidate:
    """A basis ``principal`` may hold for one household: it holds at data instant t when each of
    ``at_data`` has a row containing t, and each of ``at_now`` has one containing the decision instant."""

    principal: str
    basis: Basis
    at_data: list[list[Span]]
    at_now: list[list[Span]]
    categories: frozenset[str] | None = None  # a mandate's categories: only these
    approver: str | None = None  # an approval's approver, whose suspensions cut it too


def slice_domain(household: str, k: int) -> str:
    return f"{household}@{k}"


def _within(rows: Iterable[Span], t: float) -> bool:
    return any(a <= t < b for a, b in rows)


class RoleSnapshot:
    """``g``/``g2`` lines for decisions taken at ``now``, per household time slice, and the category-
    qualified copies of policy lines they need."""

    def __init__(self, rules: Sequence[Rule], bases: Mapping[str, Basis], facts: Facts, now: float) -> None:
        self.now = now
        self.rules = list(rules)
        self.purpose_lines = [(p.id, pur) for p in facts.principals.values() for pur in sorted(p.purposes)]
        global_bounds: set[float] = set()
        for a in facts.approvals:
            global_bounds.update((a.valid_from, a.until))
        for j in facts.joint_uses:
            global_bounds.update((j.since, j.until))
        self._global = global_bounds
        local: dict[str, set[float]] = {}
        links_on: dict[str, list[Link]] = {}
        for link in facts.links:
            local.setdefault(link.household, set()).update((link.since, link.until))
            links_on.setdefault(link.household, []).append(link)
        contracts: dict[str, dict[str, list[Span]]] = {}
        for c in facts.contracts:
            local.setdefault(c.household, set()).update((c.since, c.until))
            contracts.setdefault(c.household, {}).setdefault(c.company, []).append((c.since, c.until))
        designations_on: dict[str, list[Designation]] = {}
        for d in facts.designations:
            local.setdefault(d.household, set()).update((d.since, d.until))
            designations_on.setdefault(d.household, []).append(d)
        suspensions: dict[str, list[Suspension]] = {}
        for s in facts.suspensions:
            local.setdefault(s.household, set()).update((s.requested_at, s.until))
            suspensions.setdefault(s.household, []).append(s)
        erasures: dict[str, list[Erasure]] = {}
        for e in facts.erasures:
            if e.completed_at <= now:
                local.setdefault(e.household, set()).update(t for p in e.periods for t in p)
                erasures.setdefault(e.household, []).append(e)
        self._erasures = erasures
        self.bounds: dict[str, list[float]] = {}
        households = set(facts.households) | set(local)
        for h in households:
            self.bounds[h] = sorted((global_bounds | local.get(h, set())) - {FOREVER, -FOREVER})
        self._default_bounds = sorted(global_bounds - {FOREVER, -FOREVER})
        self.g: set[tuple[str, str, str]] = set()
        self._qualified: set[str] = set()
        self._build(rules, bases, facts, households, links_on, contracts, designations_on, suspensions)

    # -- the slices ----------------------------------------------------------------------------------
    def slices(self, household: str) -> list[tuple[float, float]]:
        edges = [-FOREVER, *self.bounds.get(household, self._default_bounds), FOREVER]
        return list(pairwise(edges))

    @staticmethod
    def instant(lo: float, hi: float) -> float:
        """A moment inside ``[lo, hi)``: every fact that holds there holds in the whole slice."""
        if lo != -FOREVER:
            return lo
        return hi - 1.0 if hi != FOREVER else 0.0

    # -- g lines -------------------------------------------------------------------------------------
    def _build(
        self,
        rules: Sequence[Rule],
        bases: Mapping[str, Basis],
        facts: Facts,
        households: Iterable[str],
        links_on: dict[str, list[Link]],
        contracts: dict[str, dict[str, list[Span]]],
        designations_on: dict[str, list[Designation]],
        suspensions: dict[str, list[Suspension]],
    ) -> None:
        now = self.now
        principals = facts.principals
        by_kind: dict[str, list[Basis]] = {}
        for b in bases.values():
            by_kind.setdefault(b.kind, []).append(b)
        staff = [p for p in principals.values() if p.company is not None]
        joint: dict[tuple[str, str], list[Span]] = {}
        for j in facts.joint_uses:
            joint.setdefault((j.principal, j.clause), []).append((j.since, j.until))
        mandates = [
            m
            for m in facts.mandates
            if m.verified_at is not None and m.verified_at <= now and m.since <= now < m.until
        ]
        approvals = {a.id: a for a in facts.approvals}
        for h in households:
            hc = contracts.get(h, {})
            held: dict[tuple[str, str], list[Span]] = {}
            for lk in links_on.get(h, []):
                p = principals.get(lk.principal)
                if p is not None and p.kind == lk.role:  # a principal holds only its own kind's role
                    held.setdefault((lk.principal, lk.role), []).append((lk.since, lk.until))
            candidates: list[Candidate] = []
            for b in by_kind.get(STAFF, ()):
                rows = hc.get(b.company, [])
                for sp in staff:
                    if sp.company == b.company and sp.kind == b.recipient:
                        candidates.append(Candidate(sp.id, b, [rows], [] if b.after_end else [rows]))
            for (pid, role), rows in held.items():
                for b in by_kind.get(LINK, ()):
                    if b.role == role:
                        needs = [rows, hc.get(b.company, [])]
                        if b.registered:
                            needs.append(joint.get((pid, b.clause), []))
                        candidates.append(Candidate(pid, b, needs, needs))
                if role != "homeowner":
                    continue
                for b in by_kind.get(PERSON, ()):  # the person's own right: kept after the end
                    candidates.append(Candidate(pid, b, [rows, hc.get(b.company, [])], []))
                for m in mandates:  # a verified mandate held now lends the person's whole period
                    if m.person == pid:
                        for b in by_kind.get(AGENT, ()):
                            candidates.append(
                                Candidate(m.agent, b, [rows, hc.get(b.company, [])], [], m.categories)
                            )
            for (pid, clause), rows in joint.items():
                named = principals.get(pid)
                for b in by_kind.get(NAMED, ()):
                    if b.clause == clause and named is not None and named.kind == b.recipient:
                        needs = [rows, hc.get(b.company, [])]
                        candidates.append(Candidate(pid, b, needs, needs))
            designated: dict[tuple[str, str], list[Span]] = {}
            for d in designations_on.get(h, ()):
                designated.setdefault((d.principal, d.company), []).append((d.since, d.until))
            for (pid, company), rows in designated.items():
                for b in by_kind.get(DESIGNATED, ()):
                    if b.company == company:
                        needs = [rows, hc.get(b.company, [])]
                        candidates.append(Candidate(pid, b, needs, needs))
            for b in by_kind.get(APPROVED, ()):
                a = approvals.get(b.approval or -1)
                rows = held.get((a.approver, b.role or ""), []) if a is not None else []
                if a is not None and rows:
                    needs = [[(a.valid_from, a.until)], rows, hc.get(b.company, [])]
                    candidates.append(Candidate(a.approved, b, needs, needs, None, a.approver))
            if not candidates:
                continue
            hs = suspensions.get(h, [])
            owners = _requesters(hs, held)
            for k, (lo, hi) in enumerate(self.slices(h)):
                t = self.instant(lo, hi)
                dom = slice_domain(h, k)
                erased = frozenset(
                    cat for e in self._erasures.get(h, ()) if contains(e.periods, t) for cat in e.categories
                )
                for c in candidates:
                    if not all(_within(rows, t) for rows in c.at_data) or not all(
                        _within(rows, now) for rows in c.at_now
                    ):
                        continue
                    blocked = self._blocked(hs, owners, c.basis, c.principal, t) | erased
                    if c.approver is not None:  # never beyond the approver: its suspensions count too
                        blocked |= self._blocked(hs, owners, c.basis, c.approver, t)
                    if blocked == _ALL:
                        continue
                    if c.categories is None and not blocked:
                        self.g.add((c.principal, c.basis.name, dom))
                        continue
                    for cat in sorted((c.categories if c.categories is not None else _ALL) - blocked):
                        name = f"{c.basis.name}|{cat}"
                        self._qualified.add(name)
                        self.g.add((c.principal, name, dom))
        self.qualified_rules = [
            Rule(f"{r.sub}|{r.cat}", r.dom, r.cat, r.act, r.pur, r.eft, r.clause, r.idc, r.item)
            for r in rules
            if r.eft == ALLOW and f"{r.sub}|{r.cat}" in self._qualified
        ]

    def _blocked(
        self, rows: list[Suspension], owners: Mapping[int, list[Span] | None], b: Basis, who: str, t: float
    ) -> frozenset[str]:
        """Categories the household's suspensions take from ``who``'s basis ``b`` at data instant ``t``:
        only a suspension whose requester was the homeowner at ``t`` (``owners``) counts there."""
        if b.kind in (PERSON, AGENT):
            return frozenset()
        out: set[str] = set()
        for s in rows:
            if s.company != b.company or (s.recipient is not None and s.recipient != who):
                continue
            mine = owners.get(s.id)
            if mine is not None and not _within(mine, t):
                continue
            if s.scope == "provision" and not (b.third_party and b.suspendable):
                continue
            if s.active(self.now) or s.requested_at <= t < s.until:
                if s.category is None:
                    return _ALL
                out.add(s.category)
        return frozenset(out)


def _requesters(
    suspensions: list[Suspension], held: Mapping[tuple[str, str], list[Span]]
) -> dict[int, list[Span] | None]:
    """suspension id -> the homeowner spans of whoever held the household's homeowner link when it was
    asked for (its requester's own time, SPS 2(6)); None when nobody did (it covers all the time)."""
    homeowners = [spans for (_, role), spans in held.items() if role == "homeowner"]
    out: dict[int, list[Span] | None] = {}
    for s in suspensions:
        mine = [sp for spans in homeowners if _within(spans, s.requested_at) for sp in spans]
        out[s.id] = mine or None
    return out


class SnapshotAdapter(Adapter):
    """Read-only adapter: the truth lives in seeds/ and the SQLite stores, not in Casbin."""

    def __init__(self, rules: Sequence[Rule], roles: RoleSnapshot) -> None:
        self.rules = rules
        self.roles = roles

    def load_policy(self, model: Any) -> None:
        policy = model["p"]["p"].policy
        for r in (*self.rules, *self.roles.qualified_rules):
            policy.append(r.fields())
        model["g"]["g"].policy.extend([p, b, d] for p, b, d in sorted(self.roles.g))
        model["g"]["g2"].policy.extend([p, pur] for p, pur in self.roles.purpose_lines)

    def save_policy(self, model: Any) -> bool:
        raise ReadOnlyPolicyError("policy is compiled from seeds/; edit the seeds, not Casbin")


class ReadOnlyPolicyError(RuntimeError):
    """Raised when something tries to write the compiled policy back through Casbin."""


class _FastModel(FastModel):
    """pycasbin 1.43's ``FastModel.add_def`` returns None where ``Model.add_def`` returns True, and the
    model loader stops at the first definition of a section that returns falsy: ``g2`` was never read.
    The same class with the return value passed on."""

    def add_def(self, sec: str, key: str, value: Any) -> Any:
        added = Model.add_def(self, sec, key, value)
        if sec == "p" and key == "p":
            self.model[sec][key].policy = FastPolicy(self._cache_key_order)
        return added


class _FastEnforcer(casbin.FastEnforcer):
    """Casbin's FastEnforcer with the g2 fix above; it also compiles the matcher once per enforcer
    rather than once per request (Casbin parses it on every ``enforce``), and loads without a copy:
    the policy and the role links never change while an enforcer lives."""

    _matcher: tuple[str, Any] | None = None

    def _get_expression(self, expr: str, functions: Any = None) -> Any:
        if self._matcher is None or self._matcher[0] != expr:
            self._matcher = (expr, casbin.Enforcer._get_expression(expr, functions))
        return self._matcher[1]

    def load_policy(self) -> None:
        """Load straight into the model just parsed: Casbin's own ``load_policy`` first deep-copies the
        model so a failed reload keeps the old policy, and this enforcer is loaded once, from memory."""
        self.model.clear_policy()
        self.adapter.load_policy(self.model)
        for rm in self.rm_map.values():
            rm.clear()
        self.model.build_role_links(self.rm_map)

    def new_model(self, path: str = "", text: str = "") -> Model:
        m = _FastModel(self._cache_key_order)
        if path:
            m.load_model(path)
        else:
            m.load_model_from_text(text)
        return m


class CasbinPath:
    """A plain Casbin enforcer over one snapshot, asked once per time slice of the window."""

    def __init__(self, rules: Sequence[Rule], bases: Mapping[str, Basis], facts: Facts, now: float) -> None:
        self.roles = RoleSnapshot(rules, bases, facts, now)
        # Casbin's own FastEnforcer: it narrows the lines to those naming the request's category, action
        # and purpose (fields 2-4 of both r and p) before matching.  Every line names all three (no
        # wildcard: deny lines come one per category), so the answer is the plain Enforcer's, found in
        # the few lines that can match.
        self.enforcer = _FastEnforcer(
            str(MODEL_PATH), SnapshotAdapter(rules, self.roles), cache_key_order=FILTER_FIELDS
        )

    def served(self, req: AccessRequest) -> Periods:
        start, stop = req.window
        idv = "verified" if req.identity_verified else "unverified"
        out = []
        for k, (lo, hi) in enumerate(self.roles.slices(req.household)):
            a, b = max(lo, start), min(hi, stop)
            if a >= b:
                continue
            dom = slice_domain(req.household, k)
            items = (WHOLE,) if req.items is None else req.items
            if items and all(
                self.enforcer.enforce(req.principal, dom, req.category, req.action, req.purpose, idv, item)
                for item in items
            ):
                out.append((a, b))
        return normalize(out)
