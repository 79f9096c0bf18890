"""The facts every access decision rests on, as plain data with periods.

Who the principals are (and, for a company's staff, which company they act for), which household each
is tied to and when, which companies each household is under contract with and when, which approvals,
designations, registered joint uses and agent mandates exist and when, and which suspensions the
person recorded with which company.  Every fact carries its period ``[from, until)`` (epoch seconds,
``inf`` for open-ended), and history is kept: a link that ended still says when it held, because a
decision about last year's data depends on who held what last year.

The stores (``access.relationships``, ``access.consent``) write these facts to SQLite and read them
back as a :class:`Facts`; the decision layer (``access.decision``) indexes one :class:`Facts` at one
instant.  Keeping them as plain values lets the property tests build random worlds without a database
and hand the very same description to the independent reference evaluator.

Erasures join them as one more kind of fact: what an operator erased (which categories of which
household, over which data periods) and when; a decision subtracts the erased periods from whatever it
would serve, to anyone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from itertools import chain

from access.periods import Periods, span

FOREVER = float("inf")

# Roles a principal holds for one household through a recorded link; a principal holds only the role of
# its own kind (an analyst or a company's staff is never an installer).
LINK_ROLES = (
    "homeowner",
    "sales_company",
    "installer",
    "wholesaler",
    "retailer",
    "grid_operator",
    "dr_aggregator",
)
# SPS 2(2)[4]: the companies these approve receive the same items.
APPROVER_ROLES = frozenset({"sales_company", "installer", "wholesaler"})
# The parties that serve one supply point: one at a time per household (ENEX 5, XOOM 7 footnote *1:
# only the operators each purpose needs, not every retailer or grid operator).
SINGLE_HOLDER_ROLES = frozenset({"retailer", "grid_operator", "dr_aggregator"})


class Dated:
    """A fact that holds for ``[since, until)``."""

    __slots__ = ()
    since: float
    until: float

    @property
    def period(self) -> Periods:
        return span(self.since, self.until)


@dataclass(frozen=True, slots=True)
class Principal:
    id: str
    kind: str
    display_name: str
    purposes: frozenset[str]
    company: str | None = None  # the company whose staff it is (operator, analyst); None for the others


@dataclass(frozen=True, slots=True)
class Link(Dated):
    """``principal`` holds ``role`` (its own kind) for ``household``: sold, installed, supplied, owns."""

    principal: str
    household: str
    role: str
    since: float
    until: float = FOREVER


CONTRACT_KINDS = ("service", "supply", "app")


@dataclass(frozen=True, slots=True)
class Contract(Dated):
    """The household is a customer of ``company`` (a seeds document id) for ``[since, until)``."""

    id: int
    household: str
    company: str
    kind: str  # one of CONTRACT_KINDS
    since: float
    until: float = FOREVER


@dataclass(frozen=True, slots=True)
class Approval:
    """SPS 2(2)[4]: a sales company, installer or wholesaler approves another company."""

    id: int
    approver: str
    approved: str
    categories: frozenset[str]
    purposes: frozenset[str]
    valid_from: float
    valid_to: float = FOREVER
    revoked_at: float | None = None

    @property
    def until(self) -> float:
        return self.valid_to if self.revoked_at is None else min(self.valid_to, self.revoked_at)

    @property
    def period(self) -> Periods:
        return span(self.valid_from, self.until)


@dataclass(frozen=True, slots=True)
class Designation(Dated):
    """A body the company (``company``, through its staff member ``designator``) deems necessary for one
    household (SPS 2(2)[4])."""

    id: int
    designator: str
    company: str
    principal: str
    household: str
    since: float
    until: float = FOREVER


@dataclass(frozen=True, slots=True)
class JointUse(Dated):
    """``company`` registered ``principal`` as the party its clause ``clause`` names (a joint user or a
    named recipient), for ``[since, until)``."""

    id: int
    company: str
    clause: str
    principal: str
    since: float
    until: float = FOREVER


@dataclass(frozen=True, slots=True)
class Mandate(Dated):
    """``agent`` may exercise the rights of ``person`` (a homeowner principal) while the mandate holds,
    once verified (a power of attorney checked and the person called back, Sobu Gas 8), and only for
    ``categories`` when given (what the company would not disclose to an agent is left out, SPS 2(6)[2])."""

    id: int
    person: str
    agent: str
    categories: frozenset[str] | None
    since: float
    until: float = FOREVER
    verified_at: float | None = None
    method: str = ""


SCOPES = ("provision", "use")


@dataclass(frozen=True, slots=True)
class Suspension:
    """The person asked ``company`` to suspend use, or provision to third parties, of the household's
    data (to one recipient and/or of one category, or all), from ``requested_at`` until ``lifted_at``."""

    id: int
    household: str
    scope: str  # "provision" or "use"
    recipient: str | None
    category: str | None
    requested_at: float
    lifted_at: float | None = None
    company: str = "sps"

    @property
    def until(self) -> float:
        return FOREVER if self.lifted_at is None else self.lifted_at

    @property
    def period(self) -> Periods:
        return span(self.requested_at, self.until)

    def active(self, at: float) -> bool:
        return self.requested_at <= at and (self.lifted_at is None or self.lifted_at > at)

    def describe(self) -> str:
        what = "third-party provision" if self.scope == "provision" else "use"
        to = f" to {self.recipient}" if self.recipient else ""
        cat = f" of {self.category} data" if self.category else ""
        return f"suspension {self.id}: the household suspended {what}{cat}{to} (with {self.company})"


@dataclass(frozen=True, slots=True)
class Erasure:
    """The household's data of ``categories`` recorded within ``periods`` was erased from the stores at
    ``completed_at`` (an operator completed the person's request; ``access.consent``).  Categories a legal
    hold kept are not among ``categories``."""

    id: int
    household: str
    categories: frozenset[str]
    periods: Periods
    completed_at: float

    def covers(self, category: str, at: float) -> bool:
        """Whether this erasure takes ``category``'s data from decisions taken at ``at``."""
        return category in self.categories and self.completed_at <= at


@dataclass(frozen=True)
class Facts:
    """Everything recorded, history included."""

    principals: Mapping[str, Principal]
    households: tuple[str, ...] = ()
    links: tuple[Link, ...] = ()
    contracts: tuple[Contract, ...] = ()
    approvals: tuple[Approval, ...] = ()
    designations: tuple[Designation, ...] = ()
    joint_uses: tuple[JointUse, ...] = ()
    mandates: tuple[Mandate, ...] = ()
    suspensions: tuple[Suspension, ...] = field(default=())
    erasures: tuple[Erasure, ...] = field(default=())

    def with_consent(self, suspensions: tuple[Suspension, ...], erasures: tuple[Erasure, ...] = ()) -> Facts:
        """These facts with the person's suspensions and completed erasures (``access.consent``)."""
        return replace(self, suspensions=suspensions, erasures=erasures)

    def instants(self) -> set[float]:
        """Every instant at which some fact begins or ends (a decision's snapshot is valid between two)."""
        return instants_of(
            self.links,
            self.contracts,
            self.approvals,
            self.designations,
            self.joint_uses,
            self.mandates,
            self.suspensions,
            self.erasures,
        )


def instants_of(
    links: Iterable[Link] = (),
    contracts: Iterable[Contract] = (),
    approvals: Iterable[Approval] = (),
    designations: Iterable[Designation] = (),
    joint_uses: Iterable[JointUse] = (),
    mandates: Iterable[Mandate] = (),
    suspensions: Iterable[Suspension] = (),
    erasures: Iterable[Erasure] = (),
) -> set[float]:
    """Every instant at which one of these facts begins or ends (FOREVER left out)."""
    out: set[float] = set()
    for dated in chain(links, contracts, designations, joint_uses):
        out.update((dated.since, dated.until))
    for a in approvals:
        out.update((a.valid_from, a.until))
    for m in mandates:
        out.update((m.since, m.until))
        if m.verified_at is not None:
            out.add(m.verified_at)
    for s in suspensions:
        out.update((s.requested_at, s.until))
    for e in erasures:
        out.add(e.completed_at)
    out.discard(FOREVER)
    return out
