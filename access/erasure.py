"""What completing an erasure request erases and keeps, decided from the facts and the seeds.

The person's right of erasure (Sobu Gas 7 names it; SPS 2(6) lets the person have their data handled)
reaches *their* data: the data recorded while they were the homeowner, never a previous or later
occupant's.  So the erased periods are the requester's homeowner periods for the household, up to the
instant the operator carries the request out.  A legal hold keeps a category only over the periods the
household was under contract with the company whose terms hold it (a gas supplier keeps its own
customers' contract and safety records, not those of a household it never supplied, nor those of a
later occupant who never was its customer): the rest of the category is erased.

``plan`` is pure (facts in, plan out) so the API can answer the person with the same words the
operator's command (``hems erasure``) records; the command carries the plan out: it records the
beginning (decisions refuse from then), deletes from the series store through the pipeline, and
records what each store removed (``access.consent``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from access.consent import ErasureRequest, legal_holds
from access.periods import NEVER, Periods, intersect, normalize, show, span, subtract
from access.world import Facts
from seeds.loader import Seeds
from seeds.vocabulary import STORED_CATEGORIES

# What a record category (identity, contract, household) is, in this product: the relationships its
# decisions rest on, kept in the access database, never in the series stores.
NOT_STORED = "not held in the series store (this product keeps only the relationships its decisions rest on)"


@dataclass(frozen=True)
class ErasurePlan:
    request: ErasureRequest
    erase: tuple[str, ...]  # the categories erased (decisions refuse them over ``periods``)
    kept: Mapping[str, str]  # category -> why it is kept
    periods: Periods  # the data periods erased: the requester's time as homeowner, up to ``at``
    at: float
    # category -> the part of ``periods`` erased of a category a hold keeps only partly (the rest of
    # ``periods`` is kept: the household was then a customer of the holding company)
    partly: Mapping[str, Periods] = field(default_factory=dict)

    @property
    def series(self) -> tuple[str, ...]:
        """The erased categories a series store holds (the others are records, ``NOT_STORED``)."""
        return tuple(c for c in self.erase if c in STORED_CATEGORIES)

    def erased(self) -> list[tuple[str, Periods]]:
        """Each category erased, wholly or partly, with the data periods erased of it."""
        return [(c, self.periods) for c in self.erase] + list(self.partly.items())


def holds_for(seeds: Seeds, facts: Facts, household: str) -> dict[str, list[str]]:
    """category -> the legal-hold clauses that keep it for this household (its own contracts' companies)."""
    companies = {c.company for c in facts.contracts if c.household == household}
    return legal_holds(seeds, companies)


def held_periods(seeds: Seeds, facts: Facts, household: str) -> dict[str, Periods]:
    """category -> the periods a legal hold keeps it over: those the household was under contract with
    a company whose terms hold it (a company's duty to keep records reaches its own customers' time)."""
    out: dict[str, Periods] = {}
    for category, clauses in holds_for(seeds, facts, household).items():
        documents = {seeds.clause(c).document for c in clauses}
        out[category] = normalize(
            p
            for c in facts.contracts
            if c.household == household and c.company in documents
            for p in c.period
        )
    return out


def kept_reasons(seeds: Seeds, facts: Facts, household: str, categories: Iterable[str]) -> dict[str, str]:
    """category -> why it is kept, for the asked categories a hold keeps."""
    holds = holds_for(seeds, facts, household)
    names = {d.id: d.company for d in seeds.documents}
    out = {}
    for category in categories:
        if category in holds:
            clauses = holds[category]
            companies = sorted({names.get(seeds.clause(c).document, c) for c in clauses})
            out[category] = (
                f"kept by law ({', '.join(clauses)}): the household is or was a customer of "
                f"{', '.join(companies)}, whose terms keep it"
            )
    return out


def requester_periods(request: ErasureRequest, facts: Facts) -> Periods:
    """The periods the requester was the homeowner of the household.  A request recorded before the
    requester was kept is the homeowner's of the time it was made."""
    links = [lk for lk in facts.links if lk.household == request.household and lk.role == "homeowner"]
    if request.requested_by is not None:
        mine = [lk for lk in links if lk.principal == request.requested_by]
    else:
        t = request.requested_at
        holders = {lk.principal for lk in links if lk.since <= t < lk.until}
        mine = [lk for lk in links if lk.principal in holders]
    return normalize(p for lk in mine for p in lk.period)


def requests_of(requests: Iterable[ErasureRequest], principal: str, periods: Periods) -> list[ErasureRequest]:
    """The requests a person made (``periods``: their time as the household's homeowner): theirs by name,
    or, for a request recorded before the requester was kept, made while they lived there.  Another
    occupant's requests, and what they asked to have erased, are that occupant's business."""
    return [
        r
        for r in requests
        if r.requested_by == principal
        or (r.requested_by is None and any(a <= r.requested_at < b for a, b in periods))
    ]


def plan(request: ErasureRequest, asked: Iterable[str], facts: Facts, seeds: Seeds, at: float) -> ErasurePlan:
    """What completing ``request`` at ``at`` erases, keeps and why.  A category a hold keeps is kept only
    over the requester's time that the household was a customer of the holding company, and erased over
    the rest of it (``partly``)."""
    categories = list(dict.fromkeys(asked))
    periods = intersect(requester_periods(request, facts), span(float("-inf"), at))
    reasons = kept_reasons(seeds, facts, request.household, categories)
    held = held_periods(seeds, facts, request.household)
    erase: list[str] = []
    kept: dict[str, str] = {}
    partly: dict[str, Periods] = {}
    for category in categories:
        keep = intersect(periods, held.get(category, NEVER)) if category in reasons else NEVER
        if not keep:
            erase.append(category)
            continue
        rest = subtract(periods, keep)
        if rest:
            partly[category] = rest
            kept[category] = f"{reasons[category]}; kept over {show(keep)}, erased over {show(rest)}"
        else:
            kept[category] = reasons[category]
    return ErasurePlan(request, tuple(erase), kept, periods, at, partly)
