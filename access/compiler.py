"""Turn the seeds (the terms, clause by clause) into Casbin policy lines.

Nobody writes policy lines by hand: every line here is computed from a clause and carries its id, so
``hems policy show`` can be read side by side with the terms, and a clause edited in ``seeds/`` changes
the policy on the next start.  Three sources of lines:

* static: each granting clause x recipient kind x category x action x purpose -> one allow line.
  ``relationship: own_households`` becomes domain ``own`` (the recipient must hold a role for the
  household); ``any``/``none`` becomes ``any`` (the kind alone suffices).  A statistics-only purpose
  (ENEX footnote *2) additionally gets deny lines for ``read`` and ``export`` that no allow can outvote.
* approvals (from the relationship store): an approved company gets the allow lines of
  ``approved_company`` cut to the approval's scope and to what the approver itself holds.
* suspensions (from the consent store): deny lines on one household citing the person's right.

Policy line layout (``model.conf``): ``p, sub, dom, cat, act, pur, eft, clause``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from access.relationships import (
    APPROVED_ROLE,
    NON_OWNER,
    THIRD_PARTY,
    ActiveApproval,
)
from seeds.loader import Clause, Seeds
from seeds.vocabulary import ACTIONS, CATEGORIES

OWN = "own"  # the requester must hold the role for the requested household
ANY = "any"  # the requester's kind suffices (household-independent)
ALL = "all"  # applies to every requester
WILDCARD = "*"
ALLOW = "allow"
DENY = "deny"
# Actions a statistics-only purpose may never reach.
ROW_LEVEL_ACTIONS = tuple(a for a in ACTIONS if a != "read_stats")


class CompileError(ValueError):
    """The seeds cannot be turned into a coherent policy (the message names the clause)."""


@dataclass(frozen=True, order=True)
class Rule:
    """One Casbin ``p`` line."""

    sub: str
    dom: str
    cat: str
    act: str
    pur: str
    eft: str
    clause: str

    def fields(self) -> list[str]:
        return [self.sub, self.dom, self.cat, self.act, self.pur, self.eft, self.clause]

    def line(self) -> str:
        return "p, " + ", ".join(self.fields())


@dataclass(frozen=True)
class Suspension:
    """What the compiler needs of a consent suspension (see ``access.consent``)."""

    id: int
    household: str
    scope: str  # "provision" or "use"
    recipient: str | None
    category: str | None


@dataclass(frozen=True)
class Policy:
    """The static policy compiled from the seeds, plus what the compiler refused to emit and why."""

    seeds: Seeds
    rules: tuple[Rule, ...]
    notes: tuple[str, ...]
    suspension_clause: str | None

    def clause_ids(self) -> set[str]:
        return {c.id for c in self.seeds.clauses}

    def clause(self, clause_id: str) -> Clause:
        for c in self.seeds.clauses:
            if c.id == clause_id:
                return c
        raise KeyError(clause_id)


def compile_seeds(seeds: Seeds) -> Policy:
    rules: list[Rule] = []
    notes: list[str] = []
    purposes = seeds.purposes
    for clause in seeds.clauses:
        if not clause.grants:
            continue
        dom = OWN if clause.conditions.relationship == "own_households" else ANY
        for purpose in clause.purposes:
            if purpose not in purposes:
                raise CompileError(f"clause {clause.id}: purpose {purpose!r} is not declared in the seeds")
            stats_only = purposes[purpose].statistics_only or clause.conditions.statistics_only
            for action in clause.actions:
                if action not in ACTIONS:
                    raise CompileError(f"clause {clause.id}: unknown action {action!r}")
                if stats_only and action != "read_stats":
                    notes.append(
                        f"{clause.id}: {action} for statistics-only purpose {purpose} not compiled "
                        "(only read_stats)"
                    )
                    continue
                for recipient in clause.recipients:
                    for category in clause.data_categories:
                        if category not in CATEGORIES:
                            raise CompileError(f"clause {clause.id}: unknown category {category!r}")
                        rules.append(Rule(recipient, dom, category, action, purpose, ALLOW, clause.id))
    rules.extend(_statistics_denials(seeds))
    return Policy(
        seeds=seeds,
        rules=tuple(sorted(set(rules))),
        notes=tuple(notes),
        suspension_clause=_suspension_clause(seeds),
    )


def _statistics_denials(seeds: Seeds) -> list[Rule]:
    """A statistics-only purpose denies row-level actions to everyone, citing the limiting clause."""
    out = []
    for purpose in seeds.purposes.values():
        if not purpose.statistics_only:
            continue
        clause = _limiting_clause(seeds, purpose.id)
        for action in ROW_LEVEL_ACTIONS:
            out.append(Rule(WILDCARD, ALL, WILDCARD, action, purpose.id, DENY, clause))
    return out


def _limiting_clause(seeds: Seeds, purpose: str) -> str:
    """The clause that makes ``purpose`` statistics-only; else the first clause naming it."""
    naming = [c for c in seeds.clauses if purpose in c.purposes]
    limiting = [c for c in naming if c.kind == "statistics" or c.conditions.statistics_only]
    # Prefer the clause that only limits (e.g. ENEX footnote *2) over one that also grants.
    limiting.sort(key=lambda c: c.grants)
    if limiting:
        return limiting[0].id
    if naming:
        return naming[0].id
    raise CompileError(
        f"statistics-only purpose {purpose!r} is named by no clause, so no clause can limit it"
    )


def _suspension_clause(seeds: Seeds) -> str | None:
    """The person's right to suspend use/provision (SPS 2(6)): the clause a consent denial cites."""
    candidates = [
        c for c in seeds.clauses if c.kind == "right_of_person" and "suspension_overrides" in c.limits
    ]
    candidates.sort(key=lambda c: (c.document != "sps", c.id))
    return candidates[0].id if candidates else None


def approval_rules(policy: Policy, approvals: Iterable[ActiveApproval]) -> list[Rule]:
    """Allow lines for each active approval: never wider than the approved kind's grant, the approval's
    scope, or the approver's own grant (an approval cannot lend what the approver does not hold)."""
    approved_grants = [r for r in policy.rules if r.eft == ALLOW and r.dom == OWN and r.sub == APPROVED_ROLE]
    held: dict[str, set[tuple[str, str, str]]] = {}
    for r in policy.rules:
        if r.eft == ALLOW and r.dom == OWN:
            held.setdefault(r.sub, set()).add((r.cat, r.act, r.pur))
    out = []
    for active in approvals:
        a = active.approval
        approver_holds: set[tuple[str, str, str]] = set()
        for role in active.approver_roles:
            approver_holds |= held.get(role, set())
        for r in approved_grants:
            if r.cat in a.categories and r.pur in a.purposes and (r.cat, r.act, r.pur) in approver_holds:
                out.append(Rule(a.role, OWN, r.cat, r.act, r.pur, ALLOW, r.clause))
    return out


def suspension_rules(policy: Policy, suspensions: Iterable[Suspension]) -> list[Rule]:
    """Deny lines for the household's suspensions; they outvote every allow (deny-overrides)."""
    out = []
    for s in suspensions:
        if policy.suspension_clause is None:
            raise CompileError(
                "a suspension is recorded but the seeds have no right_of_person clause to cite"
            )
        sub = s.recipient if s.recipient is not None else THIRD_PARTY if s.scope == "provision" else NON_OWNER
        cat = s.category or WILDCARD
        out.append(Rule(sub, s.household, cat, WILDCARD, WILDCARD, DENY, policy.suspension_clause))
    return out


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    problems: tuple[str, ...]
    notes: tuple[str, ...]


PRIMARY_DOCUMENTS = ("sps", "enex")


def check_policy(policy: Policy, documents: Iterable[str] = PRIMARY_DOCUMENTS) -> CheckResult:
    """Traceability both ways: each granting clause of the primary terms yields a rule, and each rule
    cites a clause that exists."""
    problems = []
    docs = set(documents)
    cited = {r.clause for r in policy.rules}
    known = policy.clause_ids()
    for clause in policy.seeds.clauses:
        if clause.grants and clause.document in docs and clause.id not in cited:
            problems.append(
                f"granting clause {clause.id} ({clause.document} {clause.section}) yields no rule"
            )
    for clause_id in sorted(cited - known):
        problems.append(f"rule cites clause {clause_id}, which does not exist in the seeds")
    for r in policy.rules:
        if r.eft == ALLOW and WILDCARD in (r.cat, r.act, r.pur):
            problems.append(f"allow rule with a wildcard: {r.line()}")
    return CheckResult(ok=not problems, problems=tuple(problems), notes=policy.notes)
