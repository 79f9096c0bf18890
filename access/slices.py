"""A policy snapshot's facts kept household by household, so that a change rebuilds only its households.

Indexing every household's facts again took about 1.8 s at 20,000 homes on the 2-core test machine
(most of it making the periods of every link and contract), so past ~15,000 homes a suspension made
through one replica no longer reached the others' decisions within the second the terms' suspension
promises are held to.  Here each household's facts (links, contracts, designations, suspensions,
erasures) and their :class:`access.index.HomeIndex` form one :class:`Home`; a change announced for some
households (``access.db.ChangeFeed``) re-reads and re-indexes those and shares every other
:class:`Home` with the previous snapshot.  The facts that reach across households (principals,
approvals, registered joint users, agent mandates) form the shared part: a principal announced as
changed is re-read alone; approvals, joint uses and mandates are few and their changes read all facts
again.

:meth:`SlicedFacts.facts` gives the whole :class:`access.world.Facts` back (for explanations, Casbin,
the home pages), made on first use: decisions never need it.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from itertools import chain
from types import MappingProxyType
from typing import Any, NamedTuple

from access.index import HomeIndex, SharedIndex
from access.world import (
    APPROVER_ROLES,
    FOREVER,
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
    instants_of,
)


class Home(NamedTuple):
    """One household's facts, their index and the instants at which one of them begins or ends (a
    tuple, not a dataclass: a whole rebuild makes one per household of the fleet)."""

    listed: bool  # recorded in the households table
    links: tuple[Link, ...]
    contracts: tuple[Contract, ...]
    designations: tuple[Designation, ...]
    suspensions: tuple[Suspension, ...]
    erasures: tuple[Erasure, ...]
    indexed: HomeIndex
    instants: tuple[float, ...]  # in no order


class HomeFacts(NamedTuple):
    """One household's facts as the stores hold them (``listed``: recorded in the households table)."""

    listed: bool
    links: tuple[Link, ...] = ()
    contracts: tuple[Contract, ...] = ()
    designations: tuple[Designation, ...] = ()
    suspensions: tuple[Suspension, ...] = ()
    erasures: tuple[Erasure, ...] = ()


def home_of(principals: Mapping[str, Principal], part: HomeFacts) -> Home:
    listed, links, contracts, designations, suspensions, erasures = part
    index = HomeIndex.of(principals, links, contracts, designations, suspensions, erasures)
    instants = instants_of(
        links, contracts, designations=designations, suspensions=suspensions, erasures=erasures
    )
    return Home(listed, links, contracts, designations, suspensions, erasures, index, tuple(instants))


def _shared_instants(
    approvals: Iterable[Approval], joint_uses: Iterable[JointUse], mandates: Iterable[Mandate]
) -> list[float]:
    return sorted(instants_of(approvals=approvals, joint_uses=joint_uses, mandates=mandates))


_PER_HOUSEHOLD = ("links", "contracts", "designations", "suspensions", "erasures")


def by_household(facts: Facts, households: Iterable[str] = ()) -> dict[str, HomeFacts]:
    """``facts``' household facts split by household, with an empty one for each of ``households`` that
    has none."""
    grouped: dict[str, dict[str, list[object]]] = {h: {} for h in chain(facts.households, households)}
    for what in _PER_HOUSEHOLD:
        for fact in getattr(facts, what):
            grouped.setdefault(fact.household, {}).setdefault(what, []).append(fact)
    listed = set(facts.households)
    return {
        h: HomeFacts(h in listed, *(tuple(by_kind.get(what, ())) for what in _PER_HOUSEHOLD))  # type: ignore[arg-type]
        for h, by_kind in grouped.items()
    }


def _home_facts(home: Home) -> HomeFacts:
    """A home's own facts as the stores would read them again."""
    return HomeFacts(
        home.listed, home.links, home.contracts, home.designations, home.suspensions, home.erasures
    )


@dataclass(frozen=True)
class SlicedFacts:
    """Every fact, the households' ones by household (see the module docstring)."""

    principals: Mapping[str, Principal]
    approvals: tuple[Approval, ...]
    joint_uses: tuple[JointUse, ...]
    mandates: tuple[Mandate, ...]
    homes: Mapping[str, Home]
    shared: SharedIndex
    indexes: Mapping[str, HomeIndex]  # household -> its index (what ``SnapshotIndex`` reads)
    instants: list[float]  # sorted, with repeats: the shared facts' and every home's
    role_links: Mapping[tuple[str, str], int]  # (principal, role) -> links recorded, any household
    linked: Mapping[str, int]  # principal -> links recorded, any household
    skipped: Mapping[str, frozenset[str]]  # principal -> households whose index left its links out
    _facts: list[Facts] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, facts: Facts) -> SlicedFacts:
        """All of ``facts``, sliced (a whole rebuild)."""
        empty = cls(
            MappingProxyType({}),
            facts.approvals,
            facts.joint_uses,
            facts.mandates,
            MappingProxyType({}),
            SharedIndex.of({}, (), (), ()),
            MappingProxyType({}),
            _shared_instants(facts.approvals, facts.joint_uses, facts.mandates),
            MappingProxyType({}),
            MappingProxyType({}),
            MappingProxyType({}),
        )
        role_links = Counter((link.principal, link.role) for link in facts.links)
        linked = Counter(link.principal for link in facts.links)
        sliced = empty._apply(
            by_household(facts), dict(facts.principals), principals_changed=True, counted=(role_links, linked)
        )
        assert sliced is not None  # no principal had a previous kind
        return sliced

    def replace(
        self, households: Mapping[str, HomeFacts], principals: Mapping[str, Principal | None]
    ) -> SlicedFacts | None:
        """These facts with ``households``' facts and ``principals`` read again (None: no longer
        recorded); every other home is shared.  None when the change reaches beyond them, so all must
        be read again: a principal whose kind changed, or that disappeared, while links name it (the
        stores never do either)."""
        people: dict[str, Principal] | Mapping[str, Principal] = self.principals
        parts = dict(households)
        if principals:
            people = dict(self.principals)
            for pid, p in principals.items():
                old = people.get(pid)
                if old is not None and (p is None or p.kind != old.kind) and self.linked.get(pid):
                    return None
                if p is None:
                    people.pop(pid, None)
                else:
                    people[pid] = p
                for h in self.skipped.get(pid, ()):  # left out for this principal: indexed again
                    if h not in parts:
                        parts[h] = _home_facts(self.homes[h])
        return self._apply(parts, people, principals_changed=bool(principals), changed=principals)

    def _apply(
        self,
        parts: Mapping[str, HomeFacts],
        people: Mapping[str, Principal],
        *,
        principals_changed: bool,
        changed: Iterable[str] = (),
        counted: tuple[Mapping[tuple[str, str], int], Mapping[str, int]] | None = None,
    ) -> SlicedFacts | None:
        """``counted``: the links by (principal, role) and by principal of a whole build (counted at
        once, instead of link by link as a change of a few households is)."""
        # Plain dicts, copied (a C copy: ~1 ms per 100,000 entries; through a MappingProxyType it is a
        # Python-level walk) and never changed once built: a snapshot in use keeps its own.
        homes = dict(self.homes)
        indexes = dict(self.indexes)
        # Copied only when a change reaches them (a suspension changes none of them).
        instants: list[float] = self.instants
        role_links: Mapping[tuple[str, str], int] = self.role_links if counted is None else counted[0]
        linked: Mapping[str, int] = self.linked if counted is None else counted[1]
        skipped: Mapping[str, frozenset[str]] = self.skipped
        copied: set[str] = set()

        def mine(name: str, value: Any) -> Any:
            if name not in copied:
                copied.add(name)
                return value.copy()
            return value

        fresh: list[float] = []
        for h, part in parts.items():
            old = homes.pop(h, None)
            indexes.pop(h, None)
            new = home_of(people, part)
            kept = new.listed or any(
                (new.links, new.contracts, new.designations, new.suspensions, new.erasures)
            )
            if old is not None and kept and set(old.instants) == set(new.instants):
                old_instants: tuple[float, ...] = ()
                new_instants: tuple[float, ...] = ()
            else:
                old_instants = old.instants if old is not None else ()
                new_instants = new.instants if kept else ()
            if old_instants:
                instants = mine("instants", instants)
                for t in old_instants:
                    del instants[bisect.bisect_left(instants, t)]
            fresh.extend(new_instants)
            old_links = old.links if old is not None else ()
            new_links = new.links if kept else ()
            if counted is None and old_links != new_links:
                role_links = counts = mine("role_links", role_links)
                linked = by_principal = mine("linked", linked)
                for link in old_links:
                    key = (link.principal, link.role)
                    counts[key] -= 1
                    by_principal[link.principal] -= 1
                    if not counts[key]:
                        del counts[key]
                    if not by_principal[link.principal]:
                        del by_principal[link.principal]
                for link in new_links:
                    key = (link.principal, link.role)
                    counts[key] = counts.get(key, 0) + 1
                    by_principal[link.principal] = by_principal.get(link.principal, 0) + 1
            old_skipped = old.indexed.skipped if old is not None else frozenset()
            new_skipped = new.indexed.skipped if kept else frozenset()
            if old_skipped != new_skipped:
                skipped = left_out = mine("skipped", skipped)
                for pid in old_skipped:
                    rest = left_out[pid] - {h}
                    if rest:
                        left_out[pid] = rest
                    else:
                        del left_out[pid]
                for pid in new_skipped:
                    left_out[pid] = left_out.get(pid, frozenset()) | {h}
            if kept:
                homes[h] = new
                indexes[h] = new.indexed
        if fresh:
            instants = mine("instants", instants)
        if len(fresh) > len(instants):  # a whole build: one sort
            instants = sorted(chain(instants, fresh))
        else:
            for t in fresh:
                bisect.insort(instants, t)
        shared = self.shared
        if counted is not None:  # a whole build
            shared = SharedIndex.of(people, self.joint_uses, self.approvals, self.mandates)
        elif principals_changed:  # only what each changed principal is registered for
            registered = dict(shared.registered)
            for pid in changed:
                p = people.get(pid)
                if p is None:
                    registered.pop(pid, None)
                else:
                    registered[pid] = p.purposes
            shared = replace(shared, principals=people, registered=registered)
        return SlicedFacts(
            people,
            self.approvals,
            self.joint_uses,
            self.mandates,
            homes,
            shared,
            indexes,
            instants,
            role_links,
            linked,
            skipped,
        )

    def next_instant(self, t: float) -> float:
        """The first instant after ``t`` at which a fact begins or ends (FOREVER: none)."""
        i = bisect.bisect_right(self.instants, t)
        return self.instants[i] if i < len(self.instants) else FOREVER

    def roles_held(self) -> dict[str, frozenset[str]]:
        """approver -> the approver roles its links (any household, any time) name: what the approvals'
        bases are made from (``access.compiler.approval_bases``)."""
        out: dict[str, frozenset[str]] = {}
        for approver in {a.approver for a in self.approvals}:
            roles = frozenset(r for r in APPROVER_ROLES if (approver, r) in self.role_links)
            if roles:
                out[approver] = roles
        return out

    def facts(self) -> Facts:
        """Every fact as one :class:`Facts`, made on first use."""
        if not self._facts:
            homes = sorted(self.homes.items())
            self._facts.append(
                Facts(
                    self.principals,
                    tuple(h for h, home in homes if home.listed),
                    tuple(
                        sorted(
                            chain.from_iterable(home.links for _, home in homes),
                            key=lambda k: (k.principal, k.household, k.role, k.since),
                        )
                    ),
                    tuple(
                        sorted(chain.from_iterable(home.contracts for _, home in homes), key=lambda c: c.id)
                    ),
                    self.approvals,
                    tuple(
                        sorted(
                            chain.from_iterable(home.designations for _, home in homes), key=lambda d: d.id
                        )
                    ),
                    self.joint_uses,
                    self.mandates,
                    tuple(
                        sorted(chain.from_iterable(home.suspensions for _, home in homes), key=lambda s: s.id)
                    ),
                    tuple(
                        sorted(chain.from_iterable(home.erasures for _, home in homes), key=lambda e: e.id)
                    ),
                )
            )
        return self._facts[0]
