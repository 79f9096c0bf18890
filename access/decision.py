"""Decide and explain: the one place the API asks "may this principal do this, and why (not)?".

A decision is taken against a snapshot: the compiled policy plus the approvals and suspensions in
force at that instant, and the relationship links of that instant.  The snapshot is rebuilt when
either store is written through this process or when a validity window opens or closes, so the fast
index never answers from stale relationships.  The same snapshot feeds a plain Casbin enforcer
(:meth:`Authorizer.enforcer`), which the tests and the benchmark hold the fast path equal to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import casbin

from access.casbin_adapter import build_enforcer
from access.clock import now, show
from access.compiler import OWN, Policy, Rule, approval_rules, suspension_rules
from access.consent import ConsentStore, SuspensionRecord
from access.db import ChangeWatch
from access.index import Match, PolicyIndex
from access.relationships import APPROVED_ROLE, INTERNAL_KINDS, RelationshipStore, RoleLinks

# Smallest group a statistic may describe when the granting clause names no size of its own.
DEFAULT_MIN_GROUP_SIZE = 10

_ACTION_WORDS = {"read": "read", "read_stats": "read statistics on", "export": "export"}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    clause_ids: tuple[str, ...]  # the allowing clauses if allowed, else the denying ones (may be empty)
    reason: str
    min_group_size: int | None = None  # set for read_stats: aggregate over at least this many households


@dataclass
class Snapshot:
    at: float
    valid_until: float
    rules: tuple[Rule, ...]
    links: RoleLinks
    index: PolicyIndex
    suspensions: tuple[SuspensionRecord, ...]
    generations: tuple[int, int]


class Authorizer:
    """Decisions over one policy and the two stores.

    Writes made through the stores this object holds are seen at once (their ``generation`` moves).
    Writes by another process (``hems principals`` while ``hems serve`` runs) are noticed by polling
    the stores' change counters (``access.db.change_counter``) at most every ``poll_seconds``, which
    keeps the fast path free of I/O; ledger writes to the same file do not count as changes.
    """

    def __init__(
        self,
        policy: Policy,
        relationships: RelationshipStore,
        consent: ConsentStore,
        poll_seconds: float = 1.0,
    ) -> None:
        self.policy = policy
        self.relationships = relationships
        self.consent = consent
        self.poll_seconds = poll_seconds
        self._external = ChangeWatch(lambda: (relationships.data_version(), consent.data_version()))
        self._snap: Snapshot | None = None
        self._clauses = {c.id: c for c in policy.seeds.clauses}
        self._documents = {d.id: d for d in getattr(policy.seeds, "documents", ())}

    # -- snapshots -------------------------------------------------------------------------------
    def _generations(self) -> tuple[int, int]:
        return (self.relationships.generation, self.consent.generation)

    def snapshot(self, at: float | None = None) -> Snapshot:
        """The snapshot valid at ``at``, rebuilt when it expires, when this process wrote to the stores,
        or when another process did (polled at most every ``poll_seconds``)."""
        t = now() if at is None else at
        if self._external.changed(self.poll_seconds):
            self._snap = None
        snap = self._snap
        if snap is not None and snap.at <= t < snap.valid_until and snap.generations == self._generations():
            return snap
        snap = self._build(t)
        self._snap = snap
        return snap

    def _build(self, t: float) -> Snapshot:
        generations = self._generations()
        links = self.relationships.role_links(t)
        suspensions = tuple(self.consent.active_suspensions(t))
        rules = (
            *self.policy.rules,
            *approval_rules(self.policy, links.approvals),
            *suspension_rules(self.policy, (s.as_rule_input() for s in suspensions)),
        )
        return Snapshot(
            at=t,
            valid_until=min(links.valid_until, self.consent.next_change(t)),
            rules=rules,
            links=links,
            index=PolicyIndex(rules, links),
            suspensions=suspensions,
            generations=generations,
        )

    def rules(self, at: float | None = None) -> tuple[Rule, ...]:
        return self.snapshot(at).rules

    def enforcer(self, at: float | None = None) -> casbin.Enforcer:
        """A plain Casbin enforcer over exactly the snapshot the fast path uses."""
        snap = self.snapshot(at)
        return build_enforcer(snap.rules, snap.links)

    # -- deciding ----------------------------------------------------------------------------------
    def decide(
        self,
        principal: str,
        household: str,
        category: str,
        action: str,
        purpose: str,
        at: float | None = None,
    ) -> Decision:
        snap = self.snapshot(now() if at is None else at)
        m = snap.index.match(principal, household, category, action, purpose)
        if m.allowed:
            size = self._group_size(m.allow) if action == "read_stats" else None
            return Decision(True, m.allow, "allowed by " + ", ".join(m.allow), size)
        if not m.registered:
            return Decision(False, (), f"{principal} is not registered for purpose {purpose}")
        if m.deny:
            return Decision(False, m.deny, "refused by " + ", ".join(m.deny))
        return Decision(False, (), f"no clause grants {action} of {category} for {purpose} to {principal}")

    def _group_size(self, clause_ids: Sequence[str]) -> int:
        sizes = [self._clauses[c].conditions.min_group_size for c in clause_ids if c in self._clauses]
        given = [s for s in sizes if s is not None]
        return max(given) if given else DEFAULT_MIN_GROUP_SIZE

    def explain(
        self,
        principal: str,
        household: str,
        category: str,
        action: str,
        purpose: str,
        at: float | None = None,
    ) -> str:
        """The decision in words a person can check against the terms."""
        t = now() if at is None else at
        snap = self.snapshot(t)
        d = self.decide(principal, household, category, action, purpose, at=t)
        who = self.relationships.find_principal(principal)
        if who is None:
            return f"Refused: {principal!r} is not a known principal, so no clause can grant it anything."
        name = f"{who.display_name} ({who.kind.replace('_', ' ')})"
        verb = _ACTION_WORDS.get(action, action)
        target = (
            f"the {category} data of household {household}" if action != "read_stats" else f"{category} data"
        )
        purpose_words = self._purpose_words(purpose)
        m = snap.index.match(principal, household, category, action, purpose)
        if d.allowed:
            because = self._because(snap, m, principal, household)
            text = f"{name} may {verb} {target} {purpose_words} because {because}."
            if d.min_group_size is not None:
                text += (
                    f" Only aggregates over at least {d.min_group_size} households, with no household ids, "
                    "may be returned."
                )
            return text
        head = f"{name} may not {verb} {target} {purpose_words}: refused"
        if not m.registered:
            registered = ", ".join(sorted(who.purposes)) or "none"
            return f"{head}: it is not registered for that purpose (registered: {registered})."
        if m.deny:
            words = self._deny_words(snap, m, who.id, who.kind, household, category, action, purpose)
            return f"{head}: {words}."
        return (
            f"{head}: {self._no_grant_words(snap, who.id, who.kind, household, category, action, purpose)}."
        )

    # -- wording helpers ---------------------------------------------------------------------------
    def cite(self, clause_id: str) -> str:
        c = self._clauses.get(clause_id)
        if c is None:
            return clause_id
        doc = self._documents.get(c.document)
        company = doc.company if doc is not None else c.document.upper()
        short = "SPS" if c.document == "sps" else company if len(company) <= 12 else c.document.upper()
        return f"{short} {c.section} [{clause_id}]"

    def _purpose_words(self, purpose: str) -> str:
        p = self.policy.seeds.purposes.get(purpose)
        return f"for purpose {purpose}" if p is None else f"for {purpose} ({p.summary.rstrip('.')})"

    def _because(self, snap: Snapshot, m: Match, principal: str, household: str) -> str:
        roles = snap.links.household_roles.get((principal, household), frozenset())
        citations = ", ".join(self.cite(c) for c in m.allow)
        tied = self.relationships.relation_words(roles, household) if roles else []
        rights = [c for c in m.allow if c in self._clauses and self._clauses[c].kind == "right_of_person"]
        if tied and rights:
            return f"{' and '.join(tied)}: the person's own right of disclosure ({citations})"
        if tied:
            return f"{' and '.join(tied)} ({citations})"
        kind = snap.links.kinds.get(principal, "principal").replace("_", " ")
        return f"the terms let the {kind} do so whatever the household ({citations})"

    def _deny_words(
        self,
        snap: Snapshot,
        m: Match,
        principal: str,
        kind: str,
        household: str,
        category: str,
        action: str,
        purpose: str,
    ) -> str:
        parts = []
        if self.policy.suspension_clause in m.deny:
            for s in snap.suspensions:
                if s.household != household or (s.category not in (None, category)):
                    continue
                if s.recipient not in (None, principal):
                    continue
                if s.recipient is None and s.scope == "provision" and kind in INTERNAL_KINDS:
                    continue
                what = "third-party provision" if s.scope == "provision" else "use"
                scope = f" of {s.category} data" if s.category else ""
                to = f" to {s.recipient}" if s.recipient else ""
                parts.append(
                    f"the household suspended {what}{scope}{to} on {show(s.requested_at)} "
                    f"(suspension {s.id}, {self.cite(self.policy.suspension_clause or '')})"
                )
        for c in m.deny:
            if c == self.policy.suspension_clause:
                continue
            clause = self._clauses.get(c)
            if clause is not None and (clause.kind == "statistics" or clause.conditions.statistics_only):
                parts.append(
                    f"purpose {purpose} is statistics-only ({self.cite(c)}), so it can reach read_stats "
                    f"but never {action}"
                )
            else:
                parts.append(f"{self.cite(c)} forbids it")
        return "; ".join(parts)

    def _no_grant_words(
        self,
        snap: Snapshot,
        principal: str,
        kind: str,
        household: str,
        category: str,
        action: str,
        purpose: str,
    ) -> str:
        key = (category, action, purpose)
        kinds_with_grant = [r for r in snap.rules if r.eft == "allow" and (r.cat, r.act, r.pur) == key]
        own_for_kind = [r for r in kinds_with_grant if r.dom == OWN and r.sub == kind]
        plural = kind.replace("_", " ") + ("es" if kind.endswith("s") else "s")
        if kind == APPROVED_ROLE:
            notes = []
            for a in self.relationships.approvals():
                if a.approved != principal:
                    continue
                status = self.relationships.approval_status(a.id, snap.at)
                in_scope = category in a.categories and purpose in a.purposes
                approver = self.relationships.principal(a.approver).display_name
                if status == "expired":
                    notes.append(f"approval {a.id} from {approver} expired on {show(a.valid_to)}")
                elif status != "active":
                    notes.append(f"approval {a.id} from {approver} is {status}")
                elif not in_scope:
                    notes.append(
                        f"approval {a.id} covers {', '.join(sorted(a.categories))} for "
                        f"{', '.join(sorted(a.purposes))} only"
                    )
                elif household not in _approval_households(snap, a.id):
                    notes.append(f"the approver of approval {a.id} holds no link to household {household}")
                else:
                    notes.append(f"approval {a.id} reaches beyond what its approver itself may do")
            if notes:
                return "; ".join(notes)
            return f"{principal} holds no approval (SPS 2(2)[4] reaches approved companies only through one)"
        if own_for_kind:
            citation = ", ".join(dict.fromkeys(self.cite(r.clause) for r in own_for_kind))
            return (
                f"{citation} lets {plural} do this only for their own households, and {principal} holds "
                f"no relationship with household {household}"
            )
        return f"no clause grants {plural} {action} of {category} data for purpose {purpose}"


def _approval_households(snap: Snapshot, approval_id: int) -> frozenset[str]:
    for a in snap.links.approvals:
        if a.approval.id == approval_id:
            return a.households
    return frozenset()
