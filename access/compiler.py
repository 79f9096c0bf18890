"""Turn the seeds (the terms, clause by clause) into Casbin policy lines, each resting on a *basis*.

Nobody writes policy lines by hand: every line is computed from a clause and carries its id, so
``hems policy show`` can be read side by side with the terms.

The data model (also in README's "Access policy" and ``../shared/DESIGN.md``):

* Each seeds document belongs to one **company** (the data controller); its id is the company id
  (``sps``, ``enex``, ``kaluza``, ``xoom``, ``sobu_gas``).  A clause applies only to households under
  **contract** with its company, and only for the contract's period.
* A grant rests on a **basis**: what ties the requesting principal to the household under that clause.
  The Casbin role of a basis is its ``name``; the role snapshot (``access.casbin_adapter``) gives a
  principal that role in a household's *time slice* exactly when the basis holds then.  Kinds:

  ======== ========================================================================= ===========
  basis    the principal ...                                                          third party
  ======== ========================================================================= ===========
  staff    is the company's own staff (``operator``; an ``analyst`` of the company)   no
  link     holds the recipient's link role for the household (installer, retailer..)  yes
  named    is registered by the company for this clause (a named joint user)          yes
  person   is the homeowner (the person's own rights)                                 no
  agent    holds a verified mandate from the homeowner                                no
  designated  was designated for the household by the company's staff                 yes
  approved was approved (SPS 2(2)[4]) by a linked sales company/installer/wholesaler  yes
  ======== ========================================================================= ===========

  ``relationship: any`` means the company's customers: only its staff (and named parties when the
  clause says ``named_recipients``) reach them; ``own_households`` adds a link, designation or
  approval for the household.  A non-staff recipient without either is a compile error, so no grant
  reaches households that are not the company's customers.
* **Periods.** The data a basis serves is the intersection of the periods it rests on (link,
  registration, designation or approval, and the contract).  Those must also hold *now*, except the
  person's own rights (a former homeowner keeps the right over the period they lived there, SPS
  2(6)[2]) and ``after_contract_end`` (SPS 2(2)[1]: the company's staff keep using the contract period's
  data).  An agent's mandate must hold now; it lends the person's whole period.
* **Suspensions** belong to the company whose terms the person invokes.  ``use`` stops every basis of
  that company but the person's own; ``provision`` stops third-party bases whose clause carries
  ``suspension_overrides`` (ENEX joint use (1) does not: its supply operations go on).  A company
  accepts the scopes its terms name (``suspension_scopes``).  A suspension is its requester's (SPS
  2(6): the person suspends provision of *their* data): it covers only the data of the requester's own
  time as the household's homeowner (``access.index.suspension_reach``), never a later or earlier
  occupant's.  Rule in time, within that: a suspension in force at decision time refuses everything it
  covers; one lifted since keeps out the data recorded while it was in force (lifting reopens provision
  from then on, it does not undo the person's choice for the past).  ``access.decision`` applies it.

* **Items.** Where a clause names items of a category (``data_items`` in the seeds: XOOM's and Sobu
  Gas's negawatt items, the HEMS data of ENEX footnote *3), it yields one line per item; every other
  grant is of the whole category (item ``*``).  A request names the items it wants (the API: the
  fields asked, each a field of the field table, ``seeds.vocabulary``) or none, meaning the whole
  category; it is served where every item it wants is granted.
* **Erasures.** An erasure the operator completed takes the erased categories' data of the erased
  periods out of every decision, the person's own included: the data is gone, and what was replayed
  into a store afterwards is never served (``access.consent`` records them).

Policy line layout (``model.conf``): ``p, sub, dom, cat, act, pur, eft, clause, idc, item`` where
``sub`` is a basis name, ``dom`` says in words which households it reaches, ``idc`` is ``identity``
when the line needs a recently verified identity (SPS 2(6)[3]), and ``item`` is ``*`` (the whole
category) or one item.  Approvals add lines per approval (cut to its scope and to what the approver's
role holds) at snapshot time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType

from access.world import APPROVER_ROLES, LINK_ROLES, SCOPES, SINGLE_HOLDER_ROLES, Approval
from seeds.loader import Clause, Seeds
from seeds.vocabulary import ACTIONS, CATEGORIES

ALL = "all"  # deny lines: every requester
WILDCARD = "*"
ALLOW = "allow"
DENY = "deny"
IDENTITY = "identity"
NO_IDENTITY = "none"
WHOLE = "*"  # a line's item: the whole category
# Actions a statistics-only purpose may never reach.
ROW_LEVEL_ACTIONS = tuple(a for a in ACTIONS if a != "read_stats")

STAFF = "staff"
LINK = "link"
NAMED = "named"
PERSON = "person"
AGENT = "agent"
DESIGNATED = "designated"
APPROVED = "approved"
THIRD_PARTY_BASES = frozenset({LINK, NAMED, DESIGNATED, APPROVED})
# The households column of the policy table, per basis kind.
DOMAIN_WORDS = {
    STAFF: "customers",
    LINK: "linked",
    NAMED: "registered",
    PERSON: "own",
    AGENT: "mandated",
    DESIGNATED: "designated",
    APPROVED: "approved",
}
PERIOD_WORDS = {
    STAFF: "contract, held now",
    LINK: "link within contract, both held now",
    NAMED: "registration within contract, both held now",
    PERSON: "homeowner link within contract, also after they end",
    AGENT: "the person's period; mandate verified and held now",
    DESIGNATED: "designation within contract, both held now",
    APPROVED: "approval within the approver's link and contract, all held now",
}


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
    idc: str = NO_IDENTITY
    item: str = WHOLE  # one item of the category, or WHOLE

    def fields(self) -> list[str]:
        return [self.sub, self.dom, self.cat, self.act, self.pur, self.eft, self.clause, self.idc, self.item]

    def line(self) -> str:
        return "p, " + ", ".join(self.fields())


@dataclass(frozen=True)
class Basis:
    """What a grant rests on; ``name`` is its Casbin role."""

    name: str
    kind: str  # STAFF, LINK, NAMED, PERSON, AGENT, DESIGNATED, APPROVED
    clause: str
    company: str
    recipient: str  # the principal kind it serves
    role: str | None = None  # LINK: the link role; APPROVED: the approver's role
    registered: bool = False  # also needs the company's registration for ``clause`` (named_recipients)
    after_end: bool = False  # the contract need not hold now (after_contract_end)
    suspendable: bool = False  # a provision suspension stops it (suspension_overrides), if third party
    approval: int | None = None
    principal: str | None = None  # APPROVED from an approval: the approved company it serves alone

    @property
    def third_party(self) -> bool:
        return self.kind in THIRD_PARTY_BASES


@dataclass(frozen=True)
class Policy:
    """The static policy compiled from the seeds, plus what the compiler refused to emit and why."""

    seeds: Seeds
    rules: tuple[Rule, ...]
    notes: tuple[str, ...]
    bases: Mapping[str, Basis]
    suspension_scopes: Mapping[str, frozenset[str]]  # company -> scopes its terms accept
    suspension_clauses: Mapping[str, str]  # company -> the clause a suspension with it cites
    companies: Mapping[str, str] = field(default_factory=dict)  # company id -> name

    @cached_property
    def allow_by_basis(self) -> Mapping[str, tuple[Rule, ...]]:
        """The allow lines of each basis (approvals are cut from these at every snapshot)."""
        out: dict[str, list[Rule]] = {}
        for r in self.rules:
            if r.eft == ALLOW:
                out.setdefault(r.sub, []).append(r)
        return MappingProxyType({k: tuple(v) for k, v in out.items()})

    @property
    def suspension_clause(self) -> str | None:
        """The SPS 2(6) clause: the default company's suspension right."""
        return self.suspension_clauses.get("sps") or next(iter(self.suspension_clauses.values()), None)

    def clause_ids(self) -> set[str]:
        return {c.id for c in self.seeds.clauses}

    def clause(self, clause_id: str) -> Clause:
        return self.seeds.clause(clause_id)


def _bases_of(clause: Clause, recipient: str) -> list[Basis]:
    cond = clause.conditions
    own = cond.relationship == "own_households"
    named = cond.named_recipients
    suspendable = "suspension_overrides" in clause.limits
    name = f"{clause.id}/{recipient}"

    def basis(kind: str, suffix: str = "", **flags: bool | str | None) -> Basis:
        return Basis(name + suffix, kind, clause.id, clause.document, recipient, **flags)  # type: ignore[arg-type]

    if recipient == "operator":
        return [basis(STAFF, after_end=cond.after_contract_end)]
    if recipient == "analyst":
        out = [basis(STAFF, after_end=cond.after_contract_end)]
        if named:
            out.append(basis(NAMED, ":named", registered=True, suspendable=suspendable))
        return out
    if recipient == "homeowner":
        if not own:
            raise CompileError(f"clause {clause.id}: the homeowner's rights need relationship own_households")
        return [basis(PERSON)]
    if recipient == "agent":
        return [basis(AGENT)]
    if recipient in ("designated_body", "approved_company"):
        if not own:
            raise CompileError(
                f"clause {clause.id}: {recipient} reaches households one by one (own_households)"
            )
        return [basis(DESIGNATED if recipient == "designated_body" else APPROVED, suspendable=suspendable)]
    if recipient in LINK_ROLES and own:
        return [basis(LINK, role=recipient, registered=named, suspendable=suspendable)]
    if named and not own:
        return [basis(NAMED, registered=True, suspendable=suspendable)]
    raise CompileError(
        f"clause {clause.id}: recipient {recipient!r} is not the company's staff, so it needs a link to "
        "the household (relationship own_households) or a registration (named_recipients)"
    )


def compile_seeds(seeds: Seeds) -> Policy:
    rules: list[Rule] = []
    notes: list[str] = []
    bases: dict[str, Basis] = {}
    purposes = seeds.purposes
    for clause in seeds.clauses:
        if not clause.grants:
            continue
        for purpose in clause.purposes:
            if purpose not in purposes:
                raise CompileError(f"clause {clause.id}: purpose {purpose!r} is not declared in the seeds")
            if purposes[purpose].document != clause.document:
                raise CompileError(
                    f"clause {clause.id}: purpose {purpose!r} belongs to another company's document"
                )
        categories = list(clause.data_categories)
        for category in categories:
            if category not in CATEGORIES:
                raise CompileError(f"clause {clause.id}: unknown category {category!r}")
        for recipient in clause.recipients:
            for basis in _bases_of(clause, recipient):
                bases[basis.name] = basis
                idc = IDENTITY if basis.kind == PERSON and clause.conditions.identity_check else NO_IDENTITY
                for purpose in clause.purposes:
                    stats_only = purposes[purpose].statistics_only or clause.conditions.statistics_only
                    for action in clause.actions:
                        if stats_only and action != "read_stats":
                            notes.append(
                                f"{clause.id}: {action} for statistics-only purpose {purpose} not compiled "
                                "(only read_stats)"
                            )
                            continue
                        for category in categories:
                            for item in clause.items_of(category) or (WHOLE,):
                                rules.append(
                                    Rule(
                                        basis.name,
                                        DOMAIN_WORDS[basis.kind],
                                        category,
                                        action,
                                        purpose,
                                        ALLOW,
                                        clause.id,
                                        idc,
                                        item,
                                    )
                                )
    rules.extend(_statistics_denials(seeds))
    return Policy(
        seeds=seeds,
        rules=tuple(sorted(set(rules))),
        notes=tuple(dict.fromkeys(notes)),
        bases=MappingProxyType(bases),
        suspension_scopes=MappingProxyType(suspension_scopes(seeds)),
        suspension_clauses=MappingProxyType(_suspension_clauses(seeds)),
        companies=MappingProxyType({d.id: d.company for d in seeds.documents}),
    )


def _statistics_denials(seeds: Seeds) -> list[Rule]:
    """A statistics-only purpose denies row-level actions to everyone, citing the limiting clause.

    One line per category rather than one with a wildcard: every line then names its category, action
    and purpose, so Casbin can look lines up by all three (``access.casbin_adapter.FILTER_FIELDS``)."""
    out: list[Rule] = []
    for purpose in seeds.purposes.values():
        if not purpose.statistics_only:
            continue
        clause = _limiting_clause(seeds, purpose.id)
        for action in ROW_LEVEL_ACTIONS:
            out.extend(
                Rule(WILDCARD, ALL, category, action, purpose.id, DENY, clause) for category in CATEGORIES
            )
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


def suspension_scopes(seeds: Seeds) -> dict[str, frozenset[str]]:
    """company -> the suspension scopes its own terms accept: ``use`` where a clause names the suspension
    of use, ``provision`` where one names the suspension of provision or makes a grant suspendable."""
    out: dict[str, set[str]] = {}
    for c in seeds.clauses:
        if "suspension_of_use" in c.limits:
            out.setdefault(c.document, set()).add("use")
        if {"suspension_of_provision", "suspension_overrides"} & set(c.limits):
            out.setdefault(c.document, set()).add("provision")
    return {k: frozenset(v) for k, v in out.items()}


def _suspension_clauses(seeds: Seeds) -> dict[str, str]:
    """company -> the clause a suspension recorded with it cites: its right_of_person clause naming
    suspensions, else the clause that makes a grant suspendable."""
    words = {"suspension_overrides", "suspension_of_use", "suspension_of_provision"}
    out: dict[str, str] = {}
    for doc in seeds.documents:
        mine = [c for c in seeds.clauses_of(doc.id) if words & set(c.limits)]
        mine.sort(key=lambda c: (c.kind != "right_of_person", "suspension_overrides" not in c.limits))
        if mine:
            out[doc.id] = mine[0].id
    return out


def approval_bases(
    policy: Policy, approvals: Iterable[Approval], roles_held: Mapping[str, frozenset[str]]
) -> tuple[list[Basis], list[Rule]]:
    """For each approval, one basis per (clause naming approved companies, role its approver ever held,
    from ``roles_held``) and its lines: never wider than the clause's grant to approved companies, the
    approval's scope, or the approver's own grant under that role (an approval cannot lend what the
    approver does not hold)."""
    by_basis = policy.allow_by_basis
    templates = [b for b in policy.bases.values() if b.kind == APPROVED]
    out_bases: list[Basis] = []
    out_rules: list[Rule] = []
    for a in approvals:
        for t in templates:
            for role in sorted(APPROVER_ROLES & roles_held.get(a.approver, frozenset())):
                holder = f"{t.clause}/{role}"
                if holder not in policy.bases:
                    continue
                held = _held_items(by_basis.get(holder, ()))
                name = f"{t.clause}/approval:{a.id}/{role}"
                basis = Basis(
                    name,
                    APPROVED,
                    t.clause,
                    t.company,
                    t.recipient,
                    role=role,
                    suspendable=t.suspendable,
                    approval=a.id,
                    principal=a.approved,
                )
                lines = [
                    Rule(name, r.dom, r.cat, r.act, r.pur, ALLOW, r.clause, r.idc, item)
                    for r in by_basis.get(t.name, ())
                    if r.cat in a.categories and r.pur in a.purposes
                    for item in _within_held(r, held)
                ]
                if lines:
                    out_bases.append(basis)
                    out_rules.extend(lines)
    return out_bases, out_rules


def _held_items(rules: Iterable[Rule]) -> dict[tuple[str, str, str], set[str]]:
    """(category, action, purpose) -> the items an approver's lines hold (``WHOLE`` for all)."""
    out: dict[tuple[str, str, str], set[str]] = {}
    for r in rules:
        out.setdefault((r.cat, r.act, r.pur), set()).add(r.item)
    return out


def _within_held(r: Rule, held: Mapping[tuple[str, str, str], set[str]]) -> list[str]:
    """The items of ``r`` (a line of the approved companies' grant) that the approver also holds: all of
    them when it holds the whole category, else those of its items ``r`` covers."""
    items = held.get((r.cat, r.act, r.pur), set())
    if WHOLE in items:
        return [r.item]
    if r.item == WHOLE:
        return sorted(items)
    return [r.item] if r.item in items else []


# -- what `hems policy check` holds the seeds to ----------------------------------------------------
# Conditions: where each is enforced, and on which clauses it means something.
ENFORCED_CONDITIONS: Mapping[str, str] = MappingProxyType(
    {
        "relationship": "granting clauses: the basis of each grant (access.compiler._bases_of)",
        "named_recipients": "granting clauses: a registration for the clause (joint_uses) is in the basis",
        "after_contract_end": "granting clauses: the contract need not hold at decision time",
        "identity_check": (
            "granting clauses: person lines need a recently verified identity or a verified mandate; "
            "right_of_person clauses: the person's suspension and erasure requests need one too"
        ),
        "statistics_only": "deny lines for read/export (compiler) and read_stats grants only (loader)",
        "min_group_size": (
            "the statistics endpoint drops windows whose noisy group count is below it (access.privacy)"
        ),
        "legal_hold": (
            "erasure keeps the held categories for households under contract with the holding company "
            "(access.consent)"
        ),
    }
)
_GRANTING_ONLY = frozenset({"relationship", "named_recipients", "after_contract_end", "min_group_size"})

ENFORCED_LIMITS: Mapping[str, str] = MappingProxyType(
    {
        "suspension_overrides": "a provision suspension with the company stops its third-party bases",
        "suspension_of_use": "the company accepts use suspensions, which stop all its bases but the person's",
        "suspension_of_provision": "the company accepts provision suspensions",
        "only_operators_needed": (
            "the recipient must hold the household's link, and a supply point has one retailer, one grid "
            "operator and one demand-response contractor at a time (access.relationships)"
        ),
        "statistics_only": "deny lines for read/export of the clause's purposes",
        "no_household_ids": (
            "statistics responses carry no household or device column, no single household's extreme, and "
            "are released with differential privacy against a per-principal budget (access.privacy)"
        ),
        "negawatt_items_only": (
            "the clause grants electricity as the negawatt items only (seeds.loader refuses any other "
            "electricity item; access.compiler makes one line per item)"
        ),
        "identity_check": "person lines need a verified identity (see the identity_check condition)",
        "partial_refusal_with_reasons": "decisions serve the allowed periods and say why the rest is refused",
        "provision_records_disclosed": "the homeowner reads the provision ledger (GET .../ledger)",
        "agent_disclosure_limited": "a mandate may name the categories its agent may see",
        "agent_power_of_attorney": "a mandate counts only once verified, with the method recorded",
        "identity_documents_or_callback": "verifications record their method (documents, callback, ...)",
        "erasure": (
            "erasure requests are recorded with an outcome per category, completed by the operator "
            "(hems erasure complete: both stores), and decisions refuse what was erased (access.consent)"
        ),
        "legal_hold_exception": (
            "erasure keeps the categories a retention clause of a company the household has a contract "
            "with holds, and records which and why"
        ),
        "purpose_bound_use": "every request declares a purpose the principal is registered for",
        "access_control": "deny by default: only compiled grants allow, per principal and purpose",
        "access_management": "deny by default: only compiled grants allow, per principal and purpose",
        "scope_per_staff": "staff act for one company and reach only its customers",
        "prevent_unauthorised_access": "every request is authenticated (tokens, sessions) and decided",
        "joint_users_not_named": "the clause grants nothing; joint users come through clauses naming them",
    }
)
INFORMATIONAL_LIMITS: Mapping[str, str] = MappingProxyType(
    {
        "no_independent_grant": "contractors act for the company (as its staff): no grant of their own",
        "contractor_supervision": "an organisational duty of the company towards its contractors",
        "contractor_confidentiality": "a contract term between the company and its contractors",
        "legal_provision_only": "provision the law requires happens outside this product; no grant here",
        "legal_process_only": "answers to legal process happen outside this product; no grant here",
        "consent_or_law_only": "deny by default already: nothing is provided without a compiled grant",
        "emergency_protection_of_life": "emergencies are handled by people outside this product; no grant",
        "encrypt_sensitive_input": "transport security of the company's web forms (TLS at the proxy)",
        "encrypted_input": "transport security of the company's web forms (TLS at the proxy)",
        "no_sale_of_data": "no grant sells data; a commitment of the company",
        "no_sensitive_data_by_email": "a rule for the company's e-mail, outside this product",
        "no_identifiable_data_for_third_party_marketing": "no clause grants third-party marketing",
        "correction_after_investigation": "corrections are investigated by people; no edit path here",
        "fee_for_written_answer": "a fee for written answers, handled by the company's counter",
        "responsible_person": "an organisational duty (a responsible person per unit)",
        "staff_training": "an organisational duty (staff training)",
        "audit": "an organisational duty (self-checks and audits)",
        "restrict_takeout": "an organisational measure on devices and media",
        "prevent_leaks": "an organisational commitment; access decisions are the part this product enforces",
        "foreign_regime_assessed": "an organisational duty before handling data abroad",
        "handled_abroad": "recorded so a registration of the parent is a conscious act; no technical rule",
    }
)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    problems: tuple[str, ...]
    notes: tuple[str, ...]


PRIMARY_DOCUMENTS = ("sps", "enex")


def check_policy(policy: Policy, documents: Iterable[str] = PRIMARY_DOCUMENTS) -> CheckResult:
    """Traceability both ways (each granting clause of the primary terms yields a rule, each rule cites a
    clause that exists), and every condition and limit the loader accepted is enforced somewhere or
    listed as informational with a reason."""
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
    problems += _unenforced(policy.seeds)
    return CheckResult(ok=not problems, problems=tuple(problems), notes=policy.notes)


def _set_conditions(clause: Clause) -> list[str]:
    c = clause.conditions
    out = []
    if clause.grants or c.relationship != "any":  # "any" is the default a non-granting clause carries
        out.append("relationship")
    for name in ("statistics_only", "identity_check", "after_contract_end", "legal_hold", "named_recipients"):
        if getattr(c, name):
            out.append(name)
    if c.min_group_size is not None:
        out.append("min_group_size")
    return out


def _unenforced(seeds: Seeds) -> list[str]:
    problems = []
    for clause in seeds.clauses:
        for name in _set_conditions(clause):
            if name not in ENFORCED_CONDITIONS:
                problems.append(f"clause {clause.id}: condition {name} is enforced nowhere")
            elif name in _GRANTING_ONLY and not clause.grants:
                problems.append(
                    f"clause {clause.id}: condition {name} means nothing on a clause that grants nothing"
                )
            elif name == "identity_check" and not clause.grants and clause.kind != "right_of_person":
                problems.append(
                    f"clause {clause.id}: identity_check is enforced on grants and the person's requests only"
                )
        for limit in clause.limits:
            if limit not in ENFORCED_LIMITS and limit not in INFORMATIONAL_LIMITS:
                problems.append(
                    f"clause {clause.id}: limit {limit} is neither enforced nor listed as informational"
                )
        if "only_operators_needed" in clause.limits:
            problems += _operators_needed(seeds, clause)
    return problems


def _operators_needed(seeds: Seeds, clause: Clause) -> list[str]:
    """Granting: only link roles held one at a time per household.  A section-level statement: each
    granting clause of the section carries the limit or names its parties (named_recipients)."""
    if clause.grants:
        wide = sorted(set(clause.recipients) - SINGLE_HOLDER_ROLES)
        if clause.conditions.relationship != "own_households" or wide:
            return [
                f"clause {clause.id}: only_operators_needed needs own_households links of "
                f"{sorted(SINGLE_HOLDER_ROLES)}"
            ]
        return []
    out = []
    for sub in seeds.clauses:
        in_section = sub.grants and sub.document == clause.document and sub.id.startswith(clause.id + ".")
        if in_section and "only_operators_needed" not in sub.limits and not sub.conditions.named_recipients:
            out.append(f"clause {sub.id}: its section {clause.id} limits joint use to the operators needed")
    return out


def valid_scope(policy: Policy, company: str, scope: str) -> str | None:
    """None if ``company`` accepts suspensions of ``scope``; else why not (in words)."""
    if scope not in SCOPES:
        return f"scope {scope!r}: must be one of {', '.join(SCOPES)}"
    if company not in policy.companies:
        return f"unknown company {company!r} (one of {', '.join(sorted(policy.companies))})"
    accepted = policy.suspension_scopes.get(company, frozenset())
    if scope not in accepted:
        words = ", ".join(sorted(accepted)) or "none"
        name = policy.companies[company]
        return f"{name}'s terms do not provide a suspension of {scope} (they accept: {words})"
    return None
