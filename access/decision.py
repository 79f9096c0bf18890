"""Decide and explain: the one place that answers "may this principal have this, for which period, and
why (not)?".

A decision is taken against a snapshot: the compiled policy, each approval's lines, and the facts
(``access.world``, periods and history included) indexed at the decision instant.  The answer is the
part of the request's window that may be served -- the window intersected with every period the
grant rests on, without what suspensions keep out (``access.compiler`` states the rules) -- with the
clauses that allow it, whether it is a provision to a third party (by the basis used: a company's
own staff and the person are not), and a reason code when nothing is served.

The snapshot's facts are kept household by household (``access.slices``): a write through this
process or another (announced with the households or principals it changed on PostgreSQL, a counter
polled on SQLite) re-reads and re-indexes only what it names; a change that names nothing (approvals,
joint uses, mandates, a SQLite file's relationships) reads everything again.  A new snapshot is also
made when the decision instant passes the next instant at which any fact begins or ends, so the "held
now" rule never answers from stale facts.  The same snapshot feeds Casbin
(:meth:`Authorizer.casbin_served`), which the tests and the benchmark hold the fast path equal to.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import casbin

from access.casbin_adapter import CasbinPath
from access.clock import now
from access.compiler import (
    AGENT,
    APPROVED,
    DESIGNATED,
    LINK,
    NAMED,
    PERSON,
    STAFF,
    WHOLE,
    Basis,
    Policy,
    Rule,
    approval_bases,
)
from access.consent import ConsentStore
from access.db import ChangeFeed, Note
from access.index import Lines, Outcome, SnapshotIndex
from access.periods import ALWAYS, NEVER, Periods, show, show_instant, span, subtract
from access.relationships import RelationshipStore
from access.request import ALL_TIME, AccessRequest
from access.slices import HomeFacts, SlicedFacts, by_household
from access.world import FOREVER, Facts, Link, Principal

# Smallest group a statistic may describe when the granting clause names no size of its own.
DEFAULT_MIN_GROUP_SIZE = 10

_ACTION_WORDS = {"read": "read", "read_stats": "read statistics on", "export": "export"}
_ROLE_WORDS = {
    "homeowner": "they are the homeowner of",
    "sales_company": "it sold the system to",
    "installer": "it installed",
    "wholesaler": "it supplied the equipment installed at",
    "retailer": "it supplies electricity to",
    "grid_operator": "it operates the grid serving",
    "dr_aggregator": "it runs demand response for",
}

ALLOWED = "allowed"
NOT_REGISTERED = "purpose_not_registered"
STATISTICS_ONLY = "statistics_only"
SUSPENDED = "suspended"
IDENTITY = "identity_not_verified"
OUTSIDE_PERIOD = "outside_period"
NO_GRANT = "no_grant"
ITEMS = "item_not_granted"  # the category is granted, but only other items of it
ERASED = "erased"  # what the window holds was erased at the person's request


class Decision(NamedTuple):
    """A tuple: the API makes one per request, and a tuple is made in a fraction of a dataclass's time."""

    allowed: bool
    clause_ids: tuple[str, ...]  # the allowing clauses if allowed, else the refusing ones (may be empty)
    reason: str  # a code: ALLOWED or why nothing is served
    served: Periods = NEVER  # the part of the window that may be served
    window: tuple[float, float] = ALL_TIME
    third_party: bool = False  # the provision is to a third party (ledger record, provision suspensions)
    min_group_size: int | None = None  # set for read_stats: aggregate over at least this many households
    # The items served when the grant is of items only (the whole category is not granted for all of
    # what is served): the ledger names them.  None: the request's items are served under grants of
    # the whole category (or it asked for the whole category).
    items: tuple[str, ...] | None = None

    @property
    def refused(self) -> Periods:
        """The part of the window not served."""
        return subtract(span(*self.window), self.served)


@dataclass
class Snapshot:
    at: float
    valid_until: float
    sliced: SlicedFacts
    rules: tuple[Rule, ...]
    bases: dict[str, Basis]
    index: SnapshotIndex
    _casbin: CasbinPath | None = field(default=None, repr=False)

    @property
    def facts(self) -> Facts:
        """Every fact as one value, made on first use after a change (it walks every household):
        decisions read ``index``, requests about one principal or household the two below."""
        return self.sliced.facts()

    @property
    def principals(self) -> Mapping[str, Principal]:
        return self.sliced.principals

    def links_of(self, household: str) -> tuple[Link, ...]:
        """The household's links, history included."""
        home = self.sliced.homes.get(household)
        return home.links if home is not None else ()

    def casbin(self) -> CasbinPath:
        if self._casbin is None:
            self._casbin = CasbinPath(self.rules, self.bases, self.facts, self.at)
        return self._casbin


_STATIC_LINES: dict[int, tuple[Policy, Lines]] = {}


def _static_lines(policy: Policy) -> Lines:
    """The static policy's lines, indexed once per policy (the property tests make thousands of
    Authorizers over one policy); the policy is kept with them so its id is never reused."""
    found = _STATIC_LINES.get(id(policy))
    if found is None:
        found = _STATIC_LINES[id(policy)] = (policy, Lines.of(policy.rules, policy.bases))
    return found[1]


@dataclass(frozen=True)
class _Approvals:
    """The approvals' bases and lines over one :class:`SlicedFacts` (they depend on its approvals and
    on which roles the approvers' links name)."""

    sliced: SlicedFacts
    rules: tuple[Rule, ...]
    bases: dict[str, Basis]
    lines: Lines


class Authorizer:
    """Decisions over one policy and the facts of the two stores (or of a fixed :class:`Facts`).

    Writes made through the stores this object holds are seen at once (their ``generation`` moves; on
    PostgreSQL the snapshot then waits, a round trip, until their announcements arrived, and re-reads
    only what they name).  Writes by another process (``hems principals`` while ``hems serve`` runs,
    another replica) reach it through the stores' change feeds: pushed on PostgreSQL (LISTEN/NOTIFY,
    looked at on every snapshot without I/O), polled at most every ``poll_seconds`` on SQLite; ledger
    writes to the same database do not count as changes.  ``builds`` counts the rebuilds by kind:
    ``whole`` (every fact read and indexed), ``households`` (only those a change named).
    """

    def __init__(
        self,
        policy: Policy,
        relationships: RelationshipStore | None,
        consent: ConsentStore | None,
        poll_seconds: float = 1.0,
        facts: Facts | None = None,
    ) -> None:
        if facts is None and (relationships is None or consent is None):
            raise ValueError("an Authorizer reads the two stores, or is given fixed facts")
        self.policy = policy
        self._relationships = relationships
        self._consent = consent
        self._fixed = facts
        self.poll_seconds = poll_seconds
        self._feeds: tuple[ChangeFeed, ...] = ()
        if relationships is not None and consent is not None:
            self._feeds = (relationships.change_feed(), consent.change_feed())
        self._generations_seen = self._generations()
        self._sliced: SlicedFacts | None = None
        self._approvals: _Approvals | None = None
        self._snap: Snapshot | None = None
        self.builds: Counter[str] = Counter()
        self._clauses = {c.id: c for c in policy.seeds.clauses}
        self._static_lines = _static_lines(policy)

    @classmethod
    def over(cls, policy: Policy, facts: Facts) -> Authorizer:
        """Decisions over fixed facts (the property tests' random worlds)."""
        return cls(policy, None, None, facts=facts)

    @property
    def relationships(self) -> RelationshipStore:
        if self._relationships is None:
            raise RuntimeError("this Authorizer decides over fixed facts, not a relationship store")
        return self._relationships

    @property
    def consent(self) -> ConsentStore:
        if self._consent is None:
            raise RuntimeError("this Authorizer decides over fixed facts, not a consent store")
        return self._consent

    # -- snapshots -------------------------------------------------------------------------------
    def _generations(self) -> tuple[int, int]:
        if self._relationships is None or self._consent is None:
            return (0, 0)
        return (self._relationships.generation, self._consent.generation)

    def facts(self) -> Facts:
        """Every fact as the stores hold them now (the snapshot's, brought up to date)."""
        return self._current().facts()

    def _read_all(self) -> SlicedFacts:
        """Every fact read and indexed.  The cyclic garbage collector is paused meanwhile: the build
        makes about ten small objects per household, all kept, none in a cycle, and each collection
        it would trigger scans the growing heap again (two thirds of a 20,000-home build's time)."""
        self.builds["whole"] += 1
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            if self._fixed is not None:
                return SlicedFacts.of(self._fixed)
            self._changes()  # what the stores announced up to now is in what is read next
            consent = self.consent
            facts = self.relationships.facts().with_consent(
                tuple(consent.suspensions()), tuple(consent.completed_erasures())
            )
            return SlicedFacts.of(facts)
        finally:
            if was_enabled:
                gc.enable()

    def _changes(self) -> list[Note]:
        """What changed since the last look: this process's writes and the feeds' news."""
        notes: list[Note] = []
        generations = self._generations()
        if generations != self._generations_seen:
            seen, self._generations_seen = self._generations_seen, generations
            if not all([feed.catch_up() for feed in self._feeds]):  # SQLite: which rows is not known
                for counter, before, after in zip(
                    ("relationships", "consent"), seen, generations, strict=True
                ):
                    if before != after:
                        notes.append(Note(counter, "", ()))
        for feed in self._feeds:
            notes.extend(feed.read(self.poll_seconds))
        return notes

    def _current(self) -> SlicedFacts:
        """The facts, with what changed since the last look applied (only the households and principals
        a change names, when it names them)."""
        sliced = self._sliced
        if sliced is None:
            sliced = self._sliced = self._read_all()
            return sliced
        if self._fixed is not None:
            return sliced
        notes = self._changes()
        if not notes:
            return sliced
        updated = self._apply(sliced, notes)
        self._sliced = updated if updated is not None else self._read_all()
        return self._sliced

    def _apply(self, sliced: SlicedFacts, notes: list[Note]) -> SlicedFacts | None:
        """``sliced`` with the households and principals the notes name read again; None when a note
        names no rows of the relationships (everything is read again)."""
        households: set[str] = set()
        principals: set[str] = set()
        consent_unknown = False
        for note in notes:
            if not note.kind:
                if note.counter != "consent":
                    return None
                consent_unknown = True
            elif note.kind == "household":
                households.update(note.keys)
            elif note.kind == "principal":
                principals.update(note.keys)
            else:
                return None
        consent = self.consent
        if consent_unknown:  # few rows: read them all and keep the households whose rows differ
            suspensions, erasures = consent.suspensions(), consent.completed_erasures()
            now_held = by_household(Facts({}, suspensions=tuple(suspensions), erasures=tuple(erasures)))
            for h in set(now_held) | {
                h for h, home in sliced.homes.items() if home.suspensions or home.erasures
            }:
                home = sliced.homes.get(h)
                part = now_held.get(h)
                had = (home.suspensions, home.erasures) if home is not None else ((), ())
                has = (part.suspensions, part.erasures) if part is not None else ((), ())
                if had != has:
                    households.add(h)
        if len(households) > len(sliced.homes) // 4 + 64:  # most of them: a whole read is cheaper
            return None
        parts = by_household(self.relationships.household_facts(households), households)
        suspensions, erasures = consent.facts_of(households)
        held = by_household(Facts({}, suspensions=tuple(suspensions), erasures=tuple(erasures)))
        for h, part in held.items():
            parts[h] = parts[h]._replace(suspensions=part.suspensions, erasures=part.erasures)
        read: dict[str, Principal | None] = {}
        if principals:
            read = dict(self.relationships.principals_of(principals))
        updated = sliced.replace(parts, read)
        if updated is not None:
            self.builds["households"] += 1
        return updated

    def change_fixed(
        self, households: Mapping[str, HomeFacts], principals: Mapping[str, Principal | None]
    ) -> None:
        """Over fixed facts: apply a change as a change feed's would be (each of ``households`` with its
        facts as now recorded, each of ``principals`` as now recorded, None for gone), rebuilding only
        those; what the tests compare with a whole rebuild."""
        if self._fixed is None:
            raise RuntimeError("an Authorizer over the stores learns their changes from them")
        updated = self._current().replace(households, principals)
        self._sliced = updated if updated is not None else self._read_all()
        if updated is not None:
            self.builds["households"] += 1

    def snapshot(self, at: float | None = None) -> Snapshot:
        """The snapshot valid at ``at``: its facts brought up to date (see the class docstring), and made
        again when ``at`` leaves the span in which no fact begins or ends."""
        t = now() if at is None else at
        sliced = self._current()
        snap = self._snap
        if snap is not None and snap.sliced is sliced and snap.at <= t < snap.valid_until:
            return snap
        snap = self._snap = self._build(sliced, t)
        return snap

    def _approval_lines(self, sliced: SlicedFacts) -> _Approvals:
        kept = self._approvals
        if kept is not None and kept.sliced is sliced:
            return kept
        roles_held = sliced.roles_held()
        if (
            kept is not None
            and kept.sliced.approvals is sliced.approvals
            and kept.sliced.roles_held() == roles_held
        ):
            kept = _Approvals(sliced, kept.rules, kept.bases, kept.lines)
        else:
            extra_bases, extra_rules = approval_bases(self.policy, sliced.approvals, roles_held)
            bases = dict(self.policy.bases)
            bases.update((b.name, b) for b in extra_bases)
            rules = (*self.policy.rules, *extra_rules)
            lines = Lines.of(extra_rules, bases, self._static_lines) if extra_rules else self._static_lines
            kept = _Approvals(sliced, rules, bases, lines)
        self._approvals = kept
        return kept

    def _build(self, sliced: SlicedFacts, t: float) -> Snapshot:
        approvals = self._approval_lines(sliced)
        # Valid until the next instant at which a fact begins or ends: until then "held now" answers the same.
        until = sliced.next_instant(t)
        index = SnapshotIndex(approvals.lines, sliced.shared, sliced.indexes, t)
        return Snapshot(t, until, sliced, approvals.rules, approvals.bases, index)

    def rules(self, at: float | None = None) -> tuple[Rule, ...]:
        return self.snapshot(at).rules

    def enforcer(self, at: float | None = None) -> casbin.Enforcer:
        """The plain Casbin enforcer over exactly the snapshot the fast path uses."""
        return self.snapshot(at).casbin().enforcer

    def casbin_served(self, req: AccessRequest, at: float | None = None) -> Periods:
        """The served periods as Casbin answers them, one request per time slice of the window."""
        return self.snapshot(at).casbin().served(req)

    # -- deciding ----------------------------------------------------------------------------------
    def decide(self, req: AccessRequest, at: float | None = None) -> Decision:
        snap = self.snapshot(now() if at is None else at)
        o = snap.index.evaluate(req)
        if o.served:
            clauses = tuple(dict.fromkeys(g.clause for g in o.grants))
            third = any(g.basis.third_party for g in o.grants)
            size = self._group_size(clauses) if req.action == "read_stats" else None
            items = req.items if o.by_item else None
            return Decision(True, clauses, ALLOWED, o.served, req.window, third, size, items)
        code, clauses = self._refusal(o, req)
        return Decision(False, clauses, code, NEVER, req.window)

    def items_served(self, req: AccessRequest, at: float | None = None) -> dict[str, Periods]:
        """The items of the category something of the window may be served of (with their periods): a
        request that names no items is given these (the granted ones only)."""
        return self.snapshot(now() if at is None else at).index.items_served(req)

    def _refusal(self, o: Outcome, req: AccessRequest) -> tuple[str, tuple[str, ...]]:
        if not o.registered:
            return NOT_REGISTERED, ()
        if o.denied_by:
            return STATISTICS_ONLY, o.denied_by
        if o.suspended_by:
            cited = (self.policy.suspension_clauses.get(s.company) for s in o.suspended_by)
            return SUSPENDED, tuple(dict.fromkeys(c for c in cited if c is not None))
        if o.needs_identity:
            return IDENTITY, ()
        if o.items_refused:
            return ITEMS, o.item_clauses
        if o.erased_by:
            return ERASED, self._erasure_clauses()
        if o.held:
            return OUTSIDE_PERIOD, ()
        return NO_GRANT, ()

    def statistics_grant(
        self, principal: str, category: str, purpose: str, items: tuple[str, ...], at: float | None = None
    ) -> tuple[tuple[str, ...], int] | None:
        """(the clauses, the minimum group size) of the policy lines that could give ``principal``
        statistics of ``items`` of ``category`` for ``purpose``, from the policy and the principal alone,
        never from any household's facts: what a statistics release cites, and the group it needs.
        None when no line could (not registered, a deny line, no line for its kind and items)."""
        snap = self.snapshot(now() if at is None else at)
        idx = snap.index
        who = idx.principals.get(principal)
        key = (category, "read_stats", purpose)
        if who is None or not idx.registered_for(principal, purpose) or idx.deny.get(key):
            return None
        lines = idx.allow.get((*key, who.kind), ()) + idx.approved.get((*key, principal), ())
        lines = tuple(
            line for line in lines if not (line.basis.kind == STAFF and line.basis.company != who.company)
        )
        covered = {line.item for line in lines}
        if not lines or (WHOLE not in covered and not set(items) <= covered):
            return None
        clauses = tuple(
            dict.fromkeys(line.clause for line in lines if line.item == WHOLE or line.item in items)
        )
        return clauses, self._group_size(clauses)

    def _erasure_clauses(self) -> tuple[str, ...]:
        """The clauses an erasure cites: those of the terms that give the person the right to have their
        data erased (Kaluza's handling 4, Sobu Gas 7)."""
        return tuple(c.id for c in self.policy.seeds.clauses if "erasure" in c.limits)

    def _group_size(self, clause_ids: Sequence[str]) -> int:
        sizes = [self._clauses[c].conditions.min_group_size for c in clause_ids if c in self._clauses]
        given = [s for s in sizes if s is not None]
        return max(given) if given else DEFAULT_MIN_GROUP_SIZE

    def tied(self, principal: str, household: str, at: float | None = None) -> bool:
        return self.snapshot(at).index.tied(principal, household)

    # -- explaining --------------------------------------------------------------------------------
    def explain(self, req: AccessRequest, at: float | None = None) -> str:
        """The decision in words a person can check against the terms: companies, periods, clauses."""
        t = now() if at is None else at
        snap = self.snapshot(t)
        d = self.decide(req, at=t)
        who = snap.facts.principals.get(req.principal)
        if who is None:
            return f"Refused: {req.principal!r} is not a known principal, so no clause can grant it anything."
        of = f" of {self.company_name(who.company)}" if who.company else ""
        name = f"{who.display_name} ({who.kind.replace('_', ' ')}{of})"
        verb = _ACTION_WORDS.get(req.action, req.action)
        what = req.category if req.items is None else f"{req.category} ({', '.join(req.items)})"
        target = (
            f"the {what} data of household {req.household}" if req.action != "read_stats" else f"{what} data"
        )
        purpose_words = self._purpose_words(req.purpose)
        window = "" if req.window == ALL_TIME else f" over {show(span(*req.window))}"
        o = snap.index.evaluate(req)
        if d.allowed:
            because = "; and ".join(self._grant_words(snap, g.basis, req, g.periods) for g in o.grants)
            text = (
                f"{name} may {verb} {target}{window} {purpose_words} for {show(d.served)} because {because}."
            )
            if d.refused:
                text += f" Not {show(d.refused)}: {self._period_words(snap, req)}."
            if d.min_group_size is not None:
                text += (
                    f" Only aggregates over at least {d.min_group_size} households, with no household ids, "
                    "may be returned."
                )
            return text
        head = f"{name} may not {verb} {target}{window} {purpose_words}: refused"
        if d.reason == NOT_REGISTERED:
            registered = ", ".join(sorted(who.purposes)) or "none"
            return f"{head}: it is not registered for that purpose (registered: {registered})."
        if d.reason == STATISTICS_ONLY:
            return "{}: {}.".format(
                head,
                "; ".join(
                    f"purpose {req.purpose} is statistics-only ({self.cite(c)}), so it can reach read_stats "
                    f"but never {req.action}"
                    for c in d.clause_ids
                ),
            )
        if d.reason == SUSPENDED:
            return f"{head}: {self._suspension_words(snap, req, o)}."
        if d.reason == IDENTITY:
            return (
                f"{head}: the person's rights need an identity verified recently "
                f"({self._identity_cites(req)}): "
                "sign in again, or use a token issued after an identity check."
            )
        if d.reason == ITEMS:
            return f"{head}: {self._item_words(snap, req, o)}."
        if d.reason == ERASED:
            return f"{head}: {self._erasure_words(o)}."
        if d.reason == OUTSIDE_PERIOD:
            return f"{head}: {self._period_words(snap, req)}."
        return f"{head}: {self._no_grant_words(snap, who.kind, req)}."

    def _item_words(self, snap: Snapshot, req: AccessRequest, o: Outcome) -> str:
        """Which items of the category the clauses that hold grant, and which asked for they do not."""
        granted = list(snap.index.items_served(req._replace(items=None)))
        cites = ", ".join(self.cite(c) for c in o.item_clauses)
        asked = (
            f"the whole {req.category} category"
            if o.items_refused == (WHOLE,)
            else ", ".join(i for i in o.items_refused)
        )
        return (
            f"{cites} grants only these items of {req.category}: "
            f"{', '.join(granted) or 'none in this window'}"
            f"; not {asked} (ask for the granted items by name, or without naming any)"
        )

    def _erasure_words(self, o: Outcome) -> str:
        parts = []
        for e in dict.fromkeys(o.erased_by):
            parts.append(
                f"the household's {', '.join(sorted(e.categories))} data of {show(e.periods)} was erased on "
                f"{show_instant(e.completed_at)} at the person's request (erasure {e.id}; "
                f"{', '.join(self.cite(c) for c in self._erasure_clauses())})"
            )
        return "; ".join(parts)

    def company_name(self, company: str | None) -> str:
        return self.policy.companies.get(company or "", company or "no company")

    def cite(self, clause_id: str) -> str:
        c = self._clauses.get(clause_id)
        if c is None:
            return clause_id
        company = self.policy.companies.get(c.document, c.document.upper())
        short = "SPS" if c.document == "sps" else company if len(company) <= 12 else c.document.upper()
        return f"{short} {c.section} [{clause_id}]"

    def _purpose_words(self, purpose: str) -> str:
        p = self.policy.seeds.purposes.get(purpose)
        return f"for purpose {purpose}" if p is None else f"for {purpose} ({p.summary.rstrip('.')})"

    def _identity_cites(self, req: AccessRequest) -> str:
        docs = {purpose.split(".", 1)[0] for purpose in (req.purpose,)}
        cites = [
            self.cite(c.id)
            for c in self.policy.seeds.clauses
            if c.document in docs and c.kind == "right_of_person" and c.conditions.identity_check and c.grants
        ]
        return ", ".join(cites) or "the person's right"

    def _contract_words(self, snap: Snapshot, household: str, company: str) -> str:
        contracts = [c for c in snap.facts.contracts if c.household == household and c.company == company]
        if not contracts:
            return f"{household} has no contract with {self.company_name(company)}"
        periods = show(tuple((c.since, c.until) for c in sorted(contracts, key=lambda c: c.since)))
        return f"{household} is under contract with {self.company_name(company)} ({periods})"

    def _grant_words(self, snap: Snapshot, basis: Basis, req: AccessRequest, periods: Periods) -> str:
        h = req.household
        facts = snap.facts
        cite = self.cite(basis.clause)
        contract = self._contract_words(snap, h, basis.company)
        if basis.kind == STAFF:
            tail = (
                "; the terms let its staff keep using the contract period's data after the contract ends"
                if basis.after_end
                else ""
            )
            return f"it is {self.company_name(basis.company)}'s own staff and {contract}{tail} ({cite})"
        if basis.kind == LINK:
            links = [
                lk
                for lk in facts.links
                if lk.principal == req.principal and lk.household == h and lk.role == basis.role
            ]
            held = show(tuple(sorted((lk.since, lk.until) for lk in links)))
            words = f"{_ROLE_WORDS.get(basis.role or '', 'it is tied to')} {h} ({held}) and {contract}"
            if basis.registered:
                words += f", and {self.company_name(basis.company)} registered it for this clause"
            return f"{words} ({cite})"
        if basis.kind == NAMED:
            company = self.company_name(basis.company)
            return f"{company} registered it as the party this clause names and {contract} ({cite})"
        if basis.kind == PERSON:
            links = [
                lk
                for lk in facts.links
                if lk.principal == req.principal and lk.household == h and lk.role == "homeowner"
            ]
            held = show(tuple(sorted((lk.since, lk.until) for lk in links)))
            was = (
                "they are the homeowner of"
                if any(lk.until == FOREVER for lk in links)
                else "they were the homeowner of"
            )
            return f"{was} {h} ({held}) and {contract}: the person's own right of disclosure ({cite})"
        if basis.kind == AGENT:
            mandates = [m for m in facts.mandates if m.agent == req.principal]
            people = ", ".join(sorted({m.person for m in mandates}))
            return (
                f"it holds a verified mandate from {people}, the homeowner of {h}, to exercise their rights "
                f"({cite})"
            )
        if basis.kind == DESIGNATED:
            return f"{self.company_name(basis.company)} designated it for {h} and {contract} ({cite})"
        if basis.kind == APPROVED:
            a = snap.index.approvals.get(basis.approval or -1)
            approver = facts.principals.get(a.approver) if a is not None else None
            approver_name = approver.display_name if approver is not None else "its approver"
            return (
                f"it was approved by {approver_name} "
                f"(approval {basis.approval}, {show(a.period) if a else ''}), "
                f"which serves {h}, and {contract} ({cite})"
            )
        return cite

    def _suspension_words(self, snap: Snapshot, req: AccessRequest, o: Outcome) -> str:
        parts = []
        for s in dict.fromkeys(o.suspended_by):
            reach = snap.index.suspension_reach(req.household, s)
            own = (
                ""
                if reach == ALWAYS
                else f"; it covers only the time of the homeowner who asked for it ({show(reach)})"
            )
            what = "third-party provision" if s.scope == "provision" else "use"
            scope = f" of {s.category} data" if s.category else ""
            to = f" to {s.recipient}" if s.recipient else ""
            cited = self.policy.suspension_clauses.get(s.company, "")
            lifted = (
                f", lifted on {show_instant(s.lifted_at)}: the data recorded while it was in force stays out"
                if s.lifted_at is not None
                else ""
            )
            parts.append(
                f"the household suspended {what}{scope}{to} with {self.company_name(s.company)} on "
                f"{show_instant(s.requested_at)}{lifted} (suspension {s.id}, {self.cite(cited)}){own}"
            )
        return "; ".join(parts)

    def _period_words(self, snap: Snapshot, req: AccessRequest) -> str:
        """Why (part of) the window is not served: the periods the relevant facts hold, and the rule."""
        facts = snap.facts
        h, p = req.household, req.principal
        parts = []
        for lk in facts.links:
            if lk.principal == p and lk.household == h:
                role = "homeowner link" if lk.role == "homeowner" else f"{lk.role} link"
                parts.append(f"its {role} holds {show(lk.period)}")
        companies = {b.company for b in self._lines_bases(snap, req)}
        for company in sorted(companies):
            parts.append(self._contract_words(snap, h, company))
        o = snap.index.evaluate(req)
        if o.suspended_by:
            parts.append(self._suspension_words(snap, req, o))
        if o.erased_by:
            parts.append(self._erasure_words(o))
        rule = (
            "data is served only for the periods a grant rests on (link, registration, approval, "
            "contract), and a partner's ties must also hold now"
        )
        return "; ".join([*parts, rule])

    def _lines_bases(self, snap: Snapshot, req: AccessRequest) -> list[Basis]:
        return [line.basis for line in snap.index.lines.get((req.category, req.action, req.purpose), ())]

    def _no_grant_words(self, snap: Snapshot, kind: str, req: AccessRequest) -> str:
        principal, household, category, action, purpose = req.key()
        key = (category, action, purpose)
        lines = snap.index.lines.get(key, ())
        plural = kind.replace("_", " ") + ("es" if kind.endswith("s") else "s")
        if kind == "approved_company":
            notes = []
            for a in snap.facts.approvals:
                if a.approved != principal:
                    continue
                approver = snap.facts.principals.get(a.approver)
                approver_name = approver.display_name if approver is not None else a.approver
                t = snap.at
                in_scope = category in a.categories and purpose in a.purposes
                if a.revoked_at is not None and a.revoked_at <= t:
                    notes.append(
                        f"approval {a.id} from {approver_name} was revoked on {show_instant(a.revoked_at)}"
                    )
                elif t >= a.valid_to:
                    notes.append(
                        f"approval {a.id} from {approver_name} expired on {show_instant(a.valid_to)}"
                    )
                elif t < a.valid_from:
                    notes.append(f"approval {a.id} from {approver_name} is not yet valid")
                elif not in_scope:
                    notes.append(
                        f"approval {a.id} covers {', '.join(sorted(a.categories))} for "
                        f"{', '.join(sorted(a.purposes))} only"
                    )
                elif not any(
                    lk.principal == a.approver and lk.household == household for lk in snap.facts.links
                ):
                    notes.append(f"the approver of approval {a.id} holds no link to household {household}")
                else:
                    notes.append(f"approval {a.id} reaches beyond what its approver itself may do now")
            if notes:
                return "; ".join(notes)
            return f"{principal} holds no approval (SPS 2(2)[4] reaches approved companies only through one)"
        mine = [line for line in lines if line.basis.recipient == kind]
        if mine:
            citation = ", ".join(dict.fromkeys(self.cite(line.clause) for line in mine))
            b = mine[0].basis
            if b.kind == STAFF:
                who = snap.facts.principals.get(principal)
                if who is None or who.company != b.company:
                    return f"{citation} is {self.company_name(b.company)}'s; {principal} is not its staff"
                contract = self._contract_words(snap, household, b.company)
                return f"{citation} reaches {self.company_name(b.company)}'s customers, and {contract}"
            if b.kind == NAMED or (b.kind == LINK and b.registered and snap.index.tied(principal, household)):
                return (
                    f"{citation} reaches only the parties {self.company_name(b.company)} registered for it, "
                    f"and it has not registered {principal}"
                )
            return (
                f"{citation} lets {plural} do this only for their own households, and {principal} holds "
                f"no relationship with household {household}"
            )
        return f"no clause grants {plural} {action} of {category} data for purpose {purpose}"
