"""The fast path: Casbin's matcher (``model.conf``) evaluated over dicts and sets.

Casbin walks every policy line per request and resolves roles through its role manager; with the
SPS rules and 50k household links that is far too slow for an API answering every series query.  This
index is built from the very same lines and the same relationship snapshot and answers the same
question by a handful of dict lookups.  It mirrors the matcher term by term (including Casbin's
quirk that ``g(a, a)`` holds for any ``a``) so that a property test can hold the two equal.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from access.compiler import ALL, ALLOW, ANY, OWN, WILDCARD, Rule
from access.relationships import RoleLinks

_EMPTY: frozenset[str] = frozenset()


@dataclass
class _Bucket:
    """Lines sharing one (category, action, purpose) pattern and one effect, grouped by how they match."""

    own: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    any: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    all: list[str] = field(default_factory=list)
    household: dict[str, dict[str, list[str]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )


@dataclass(frozen=True)
class Match:
    allowed: bool
    registered: bool
    allow: tuple[str, ...]  # clause ids of matching allow lines
    deny: tuple[str, ...]  # clause ids of matching deny lines


def _shape(rule: Rule) -> tuple[bool, bool, bool]:
    return (rule.cat == WILDCARD, rule.act == WILDCARD, rule.pur == WILDCARD)


class PolicyIndex:
    def __init__(self, rules: Iterable[Rule], links: RoleLinks) -> None:
        self.links = links
        self._registered = links.registered
        self._household_roles = links.household_roles
        self._global_roles = links.global_roles
        buckets: dict[str, dict[tuple[str, str, str], _Bucket]] = {ALLOW: {}, "deny": {}}
        shapes: dict[str, set[tuple[bool, bool, bool]]] = {ALLOW: set(), "deny": set()}
        for r in rules:
            eft = ALLOW if r.eft == ALLOW else "deny"
            shapes[eft].add(_shape(r))
            b = buckets[eft].setdefault((r.cat, r.act, r.pur), _Bucket())
            if r.dom == OWN:
                b.own[r.sub].append(r.clause)
            elif r.dom == ANY:
                b.any[r.sub].append(r.clause)
            elif r.dom == ALL:
                b.all.append(r.clause)
            # The matcher's household branch admits deny lines only, and compares p.dom with r.dom
            # literally, so a deny line's domain is also a household name as far as it is concerned.
            if eft == "deny" and r.dom != ALL:
                b.household[r.dom][r.sub].append(r.clause)
        self._allow = {k: _freeze(v) for k, v in buckets[ALLOW].items()}
        self._deny = {k: _freeze(v) for k, v in buckets["deny"].items()}
        self._allow_shapes = tuple(sorted(shapes[ALLOW]))
        self._deny_shapes = tuple(sorted(shapes["deny"]))

    def registered(self, sub: str, pur: str) -> bool:
        return pur == sub or pur in self._registered.get(sub, _EMPTY)

    def match(self, sub: str, dom: str, cat: str, act: str, pur: str) -> Match:
        if not (pur == sub or pur in self._registered.get(sub, _EMPTY)):
            return Match(False, False, (), ())
        household_roles = self._household_roles.get((sub, dom), _EMPTY)
        global_roles = self._global_roles.get(sub, _EMPTY)
        allow = self._collect(
            self._allow, self._allow_shapes, sub, dom, cat, act, pur, household_roles, global_roles
        )
        deny = self._collect(
            self._deny, self._deny_shapes, sub, dom, cat, act, pur, household_roles, global_roles
        )
        return Match(bool(allow) and not deny, True, allow, deny)

    def enforce(self, sub: str, dom: str, cat: str, act: str, pur: str) -> bool:
        return self.match(sub, dom, cat, act, pur).allowed

    @staticmethod
    def _collect(
        buckets: dict[tuple[str, str, str], _Bucket],
        shapes: tuple[tuple[bool, bool, bool], ...],
        sub: str,
        dom: str,
        cat: str,
        act: str,
        pur: str,
        household_roles: frozenset[str],
        global_roles: frozenset[str],
    ) -> tuple[str, ...]:
        found: list[str] = []
        for wc, wa, wp in shapes:
            b = buckets.get((WILDCARD if wc else cat, WILDCARD if wa else act, WILDCARD if wp else pur))
            if b is None:
                continue
            if b.own:
                own = b.own
                if sub in own:
                    found += own[sub]
                for role in household_roles:
                    if role in own:
                        found += own[role]
            if b.any:
                any_ = b.any
                if sub in any_:
                    found += any_[sub]
                for role in global_roles:
                    if role in any_:
                        found += any_[role]
            if b.all:
                found += b.all
            if b.household:
                rows = b.household.get(dom)
                if rows:
                    if sub in rows:
                        found += rows[sub]
                    for role in global_roles:
                        if role in rows:
                            found += rows[role]
        if not found:
            return ()
        return tuple(dict.fromkeys(found))


def _freeze(b: _Bucket) -> _Bucket:
    """Plain dicts (no defaultdict side effects on lookup) and de-duplicated clause lists."""
    return _Bucket(
        own={k: list(dict.fromkeys(v)) for k, v in b.own.items()},
        any={k: list(dict.fromkeys(v)) for k, v in b.any.items()},
        all=list(dict.fromkeys(b.all)),
        household={
            h: {k: list(dict.fromkeys(v)) for k, v in rows.items()} for h, rows in b.household.items()
        },
    )
