"""Who is linked to which household, kept in SQLite so relationships are data, not code.

The store answers one question for the policy layer: at instant *t*, which roles does each principal
hold for each household (:meth:`RelationshipStore.role_links`)?  Casbin's ``g`` links and the fast
index are both built from that one snapshot, so they cannot disagree about who is linked to what.

Approvals follow Smart Power System 2(2)[4]: a sales company, installer or wholesaler may approve
another company.  An approval lends the approved company the approver's households, so it lives and
dies with the approver's own links: when the approver loses a household, the approved company loses
it too, and when the approval expires it lends nothing.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from access.clock import FOREVER, now, to_epoch
from access.db import change_counter, open_db, read_change_counter, write_transaction
from seeds.vocabulary import CATEGORIES, PRINCIPAL_KINDS

# Roles a principal can hold for one household through a recorded relationship.
# Approved companies and designated bodies get theirs through approvals and designations instead.
LINK_ROLES = (
    "homeowner",
    "sales_company",
    "installer",
    "wholesaler",
    "retailer",
    "grid_operator",
    "dr_aggregator",
)
# SPS 2(2)[4]: the companies those three approve receive the same items.
APPROVER_ROLES = frozenset({"sales_company", "installer", "wholesaler"})
# Pseudo-roles every principal of a kind holds globally, targeted by consent deny rules.
THIRD_PARTY = "third_party"  # anyone who is neither the person nor the operator's own staff
NON_OWNER = "non_owner"  # anyone but the person: suspension of use stops the operator too
INTERNAL_KINDS = frozenset({"homeowner", "operator", "analyst"})
APPROVAL_ROLE_PREFIX = "approval:"
DESIGNATED_ROLE = "designated_body"
APPROVED_ROLE = "approved_company"
# Values with a meaning in the policy's domain column; a household may not be called that.
RESERVED_DOMAINS = frozenset({"own", "any", "all", "*"})
RESERVED_NAMES = frozenset(PRINCIPAL_KINDS) | {THIRD_PARTY, NON_OWNER, "*"}

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
# No dots in principal ids: purpose ids are dotted, and Casbin's g2 would chain a principal named
# like a purpose into that purpose's registrations.
_PRINCIPAL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,99}$")
_PURPOSE_ID = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")  # '<document>.<purpose>' as in seeds/

_SCHEMA = """
CREATE TABLE IF NOT EXISTS households (
    id TEXT PRIMARY KEY, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS principals (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, display_name TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS principal_purposes (
    principal TEXT NOT NULL REFERENCES principals(id), purpose TEXT NOT NULL,
    PRIMARY KEY (principal, purpose));
CREATE TABLE IF NOT EXISTS links (
    principal TEXT NOT NULL REFERENCES principals(id), household TEXT NOT NULL REFERENCES households(id),
    role TEXT NOT NULL, since REAL NOT NULL, until REAL,
    PRIMARY KEY (principal, household, role, since));
CREATE INDEX IF NOT EXISTS links_by_household ON links(household);
CREATE TABLE IF NOT EXISTS approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT, approver TEXT NOT NULL REFERENCES principals(id),
    approved TEXT NOT NULL REFERENCES principals(id), categories TEXT NOT NULL, purposes TEXT NOT NULL,
    valid_from REAL NOT NULL, valid_to REAL NOT NULL, created_at REAL NOT NULL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS designations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, operator TEXT NOT NULL REFERENCES principals(id),
    principal TEXT NOT NULL REFERENCES principals(id), household TEXT NOT NULL REFERENCES households(id),
    designated_at REAL NOT NULL, revoked_at REAL);
""" + change_counter(
    "relationships", ("households", "principals", "principal_purposes", "links", "approvals", "designations")
)


class RelationshipError(ValueError):
    """A relationship that cannot be recorded (unknown party, wrong kind, bad window)."""


@dataclass(frozen=True)
class Principal:
    id: str
    kind: str
    display_name: str
    purposes: frozenset[str]


@dataclass(frozen=True)
class Approval:
    id: int
    approver: str
    approved: str
    categories: frozenset[str]
    purposes: frozenset[str]
    valid_from: float
    valid_to: float
    revoked_at: float | None

    @property
    def role(self) -> str:
        return f"{APPROVAL_ROLE_PREFIX}{self.id}"


@dataclass(frozen=True)
class ActiveApproval:
    """An approval as it stands at one instant: what it lends, and through which roles of the approver."""

    approval: Approval
    approver_roles: frozenset[str]
    households: frozenset[str]


@dataclass
class RoleLinks:
    """Everything Casbin's ``g``/``g2`` need, as of ``at``; ``valid_until`` is when it next changes."""

    at: float
    household_roles: dict[tuple[str, str], frozenset[str]]
    global_roles: dict[str, frozenset[str]]
    registered: dict[str, frozenset[str]]
    approvals: tuple[ActiveApproval, ...]
    valid_until: float
    kinds: dict[str, str] = field(default_factory=dict)

    def household_lines(self) -> Iterator[tuple[str, str, str]]:
        """``g`` lines: (principal, role, household)."""
        for (principal, household), roles in self.household_roles.items():
            for role in roles:
                yield principal, role, household

    def global_lines(self) -> Iterator[tuple[str, str]]:
        """``g3`` lines: (principal, role held everywhere)."""
        for principal, roles in self.global_roles.items():
            for role in roles:
                yield principal, role

    def purpose_lines(self) -> Iterator[tuple[str, str]]:
        """``g2`` lines: (principal, purpose) for every registered purpose."""
        for principal, purposes in self.registered.items():
            for purpose in purposes:
                yield principal, purpose


def _check_id(what: str, value: str) -> None:
    if not isinstance(value, str) or not _ID.match(value):
        raise RelationshipError(f"{what} id {value!r}: use 1-100 letters, digits, '.', '_' or '-'")


def _purposes(pid: str, purposes: Iterable[str]) -> list[tuple[str, str]]:
    rows = []
    for purpose in purposes:
        if not isinstance(purpose, str) or not _PURPOSE_ID.match(purpose):
            raise RelationshipError(
                f"principal {pid!r}: purpose {purpose!r} is not a '<document>.<purpose>' id"
            )
        rows.append((pid, purpose))
    return rows


def _when(value: datetime | float | int | str | None, default: float) -> float:
    return default if value is None else to_epoch(value)


class RelationshipStore:
    """SQLite (WAL) store of households, principals, links, approvals and designations."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db = open_db(self.path, _SCHEMA, synchronous="NORMAL", foreign_keys=True)
        # Bumped on every write made through this object; the decision layer rebuilds when it moves.
        self.generation = 0

    def close(self) -> None:
        self._db.close()

    def data_version(self) -> int:
        """Changes when any connection (another process too) changes these tables (``change_counter``)."""
        return read_change_counter(self._db, "relationships")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with write_transaction(self._db) as db:
            yield db
        self.generation += 1

    # -- households and principals ---------------------------------------------------------------
    def add_households(self, ids: Iterable[str]) -> None:
        rows = []
        for hid in ids:
            _check_id("household", hid)
            if hid in RESERVED_DOMAINS:
                raise RelationshipError(f"household id {hid!r} is reserved by the policy")
            rows.append((hid, now()))
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO households VALUES (?, ?)", rows)

    def add_household(self, hid: str) -> None:
        self.add_households([hid])

    def households(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT id FROM households ORDER BY id")]

    def add_principal(
        self, pid: str, kind: str, display_name: str, purposes: Iterable[str] = ()
    ) -> Principal:
        if not isinstance(pid, str) or not _PRINCIPAL_ID.match(pid):
            raise RelationshipError(f"principal id {pid!r}: use 1-100 letters, digits, '_' or '-'")
        if pid in RESERVED_NAMES or pid.startswith(APPROVAL_ROLE_PREFIX):
            raise RelationshipError(f"principal id {pid!r} is reserved by the policy (a kind or role name)")
        if kind not in PRINCIPAL_KINDS:
            raise RelationshipError(
                f"principal {pid!r}: unknown kind {kind!r}; known: {', '.join(PRINCIPAL_KINDS)}"
            )
        if not display_name.strip():
            raise RelationshipError(f"principal {pid!r}: a display name is required")
        with self._tx() as db:
            if db.execute("SELECT 1 FROM principals WHERE id = ?", (pid,)).fetchone():
                raise RelationshipError(f"principal {pid!r} already exists")
            rows = _purposes(pid, purposes)
            db.execute("INSERT INTO principals VALUES (?, ?, ?, ?)", (pid, kind, display_name, now()))
            db.executemany("INSERT OR IGNORE INTO principal_purposes VALUES (?, ?)", rows)
        return self.principal(pid)

    def register_purposes(self, pid: str, purposes: Iterable[str]) -> None:
        self.principal(pid)
        rows = _purposes(pid, purposes)
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO principal_purposes VALUES (?, ?)", rows)

    def principal(self, pid: str) -> Principal:
        row = self._db.execute(
            "SELECT id, kind, display_name FROM principals WHERE id = ?", (pid,)
        ).fetchone()
        if row is None:
            raise RelationshipError(f"unknown principal {pid!r}")
        purposes = frozenset(
            r[0]
            for r in self._db.execute("SELECT purpose FROM principal_purposes WHERE principal = ?", (pid,))
        )
        return Principal(row[0], row[1], row[2], purposes)

    def find_principal(self, pid: str) -> Principal | None:
        try:
            return self.principal(pid)
        except RelationshipError:
            return None

    def principals(self) -> list[Principal]:
        ids = [r[0] for r in self._db.execute("SELECT id FROM principals ORDER BY id")]
        return [self.principal(i) for i in ids]

    # -- links -------------------------------------------------------------------------------------
    def link(
        self,
        principal: str,
        household: str,
        role: str,
        since: datetime | float | str | None = None,
    ) -> None:
        """Record that ``principal`` holds ``role`` for ``household`` (sold, installed, supplied, owns)."""
        self.link_many([(principal, household, role)], since=since)

    def link_many(
        self, rows: Iterable[tuple[str, str, str]], since: datetime | float | str | None = None
    ) -> None:
        start = _when(since, now())
        kinds = dict(self._db.execute("SELECT id, kind FROM principals"))
        households = {r[0] for r in self._db.execute("SELECT id FROM households")}
        batch = []
        for principal, household, role in rows:
            if role not in LINK_ROLES:
                raise RelationshipError(f"link role {role!r}: must be one of {', '.join(LINK_ROLES)}")
            if principal not in kinds:
                raise RelationshipError(f"unknown principal {principal!r}")
            if household not in households:
                raise RelationshipError(f"unknown household {household!r}")
            if (role == "homeowner") != (kinds[principal] == "homeowner"):
                raise RelationshipError(
                    f"{principal!r} is a {kinds[principal]}: only homeowners hold the homeowner role, "
                    "and homeowners hold no partner role"
                )
            batch.append((principal, household, role, start))
        with self._tx() as db:
            db.executemany("INSERT OR IGNORE INTO links VALUES (?, ?, ?, ?, NULL)", batch)

    def unlink(
        self, principal: str, household: str, role: str, at: datetime | float | str | None = None
    ) -> None:
        """End a relationship (kept as history); approvals lent through it end with it."""
        end = _when(at, now())
        with self._tx() as db:
            cur = db.execute(
                "UPDATE links SET until = ? "
                "WHERE principal = ? AND household = ? AND role = ? AND until IS NULL",
                (end, principal, household, role),
            )
            if cur.rowcount == 0:
                raise RelationshipError(f"{principal!r} holds no current {role!r} link to {household!r}")

    # -- approvals and designations -----------------------------------------------------------------
    def approve(
        self,
        approver: str,
        approved: str,
        categories: Iterable[str],
        purposes: Iterable[str],
        valid_from: datetime | float | str | None = None,
        valid_to: datetime | float | str | None = None,
    ) -> Approval:
        """Record an approval; what it actually lends is cut to the approver's grant when compiled."""
        cats = frozenset(categories)
        purs = frozenset(purposes)
        bad = sorted(cats - set(CATEGORIES))
        if bad:
            raise RelationshipError(f"approval: unknown categories {bad}")
        if not cats or not purs:
            raise RelationshipError("approval: name at least one category and one purpose")
        start = _when(valid_from, now())
        end = _when(valid_to, FOREVER)
        if end <= start:
            raise RelationshipError("approval: valid_to must be after valid_from")
        if self.principal(approved).kind != APPROVED_ROLE:
            raise RelationshipError(f"approval: {approved!r} is not an approved_company principal")
        self.principal(approver)
        roles = {
            r[0] for r in self._db.execute("SELECT DISTINCT role FROM links WHERE principal = ?", (approver,))
        }
        if not roles & APPROVER_ROLES:
            raise RelationshipError(
                f"approval: {approver!r} holds no sales/installer/wholesaler link, so it has nothing to lend "
                "(SPS 2(2)[4] lets only those approve)"
            )
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO approvals (approver, approved, categories, purposes, valid_from, valid_to, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (approver, approved, json.dumps(sorted(cats)), json.dumps(sorted(purs)), start, end, now()),
            )
            aid = cur.lastrowid
        assert aid is not None
        return self.approval(aid)

    def revoke_approval(self, aid: int, at: datetime | float | str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE approvals SET revoked_at = ? WHERE id = ?", (_when(at, now()), aid))

    def approval(self, aid: int) -> Approval:
        row = self._db.execute("SELECT * FROM approvals WHERE id = ?", (aid,)).fetchone()
        if row is None:
            raise RelationshipError(f"unknown approval {aid}")
        return _approval(row)

    def approvals(self) -> list[Approval]:
        return [_approval(r) for r in self._db.execute("SELECT * FROM approvals ORDER BY id")]

    def designate(
        self, operator: str, principal: str, household: str, at: datetime | float | str | None = None
    ) -> int:
        """The operator names a body it deems necessary (SPS 2(2)[4]) for one household."""
        if self.principal(operator).kind != "operator":
            raise RelationshipError(f"designation: {operator!r} is not the operator")
        if self.principal(principal).kind != DESIGNATED_ROLE:
            raise RelationshipError(f"designation: {principal!r} is not a designated_body principal")
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO designations (operator, principal, household, designated_at) "
                "VALUES (?, ?, ?, ?)",
                (operator, principal, household, _when(at, now())),
            )
        assert cur.lastrowid is not None
        return cur.lastrowid

    def designate_many(self, operator: str, rows: Iterable[tuple[str, str]]) -> None:
        if self.principal(operator).kind != "operator":
            raise RelationshipError(f"designation: {operator!r} is not the operator")
        t = now()
        with self._tx() as db:
            db.executemany(
                "INSERT INTO designations (operator, principal, household, designated_at) "
                "VALUES (?, ?, ?, ?)",
                [(operator, p, h, t) for p, h in rows],
            )

    def revoke_designation(self, did: int, at: datetime | float | str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE designations SET revoked_at = ? WHERE id = ?", (_when(at, now()), did))

    # -- the snapshot the policy is built from -------------------------------------------------------
    def approval_status(self, aid: int, at: datetime | float | str | None = None) -> str:
        """In words: whether an approval lends anything at ``at``, and if not, why."""
        t = _when(at, now())
        a = self.approval(aid)
        if a.revoked_at is not None and a.revoked_at <= t:
            return "revoked"
        if t < a.valid_from:
            return "not yet valid"
        if t >= a.valid_to:
            return "expired"
        if not self._approver_households(a.approver, t):
            return "void: the approver no longer holds any household"
        return "active"

    def _approver_households(self, approver: str, t: float) -> dict[str, frozenset[str]]:
        out: dict[str, set[str]] = defaultdict(set)
        for household, role in self._db.execute(
            "SELECT household, role FROM links "
            "WHERE principal = ? AND since <= ? AND (until IS NULL OR until > ?)",
            (approver, t, t),
        ):
            if role in APPROVER_ROLES:
                out[household].add(role)
        return {h: frozenset(r) for h, r in out.items()}

    def role_links(self, at: datetime | float | str | None = None) -> RoleLinks:
        t = _when(at, now())
        roles: dict[tuple[str, str], frozenset[str]] = {}
        rows = self._db.execute(
            """SELECT principal, household, role FROM links
                WHERE since <= :t AND (until IS NULL OR until > :t)
               UNION ALL
               SELECT principal, household, :designated FROM designations
                WHERE designated_at <= :t AND (revoked_at IS NULL OR revoked_at > :t)""",
            {"t": t, "designated": DESIGNATED_ROLE},
        )
        for principal, household, role in rows:
            key = (principal, household)
            old = roles.get(key)
            roles[key] = frozenset((role,)) if old is None else old | {role}
        active: list[ActiveApproval] = []
        for a in self.approvals():
            if (a.revoked_at is not None and a.revoked_at <= t) or not (a.valid_from <= t < a.valid_to):
                continue
            lent = self._approver_households(a.approver, t)
            if not lent:
                continue  # void: the approver holds nothing to lend
            approver_roles = frozenset().union(*lent.values())
            for household in lent:
                key = (a.approved, household)
                roles[key] = roles.get(key, frozenset()) | {a.role}
            active.append(ActiveApproval(a, approver_roles, frozenset(lent)))
        kinds = dict(self._db.execute("SELECT id, kind FROM principals"))
        by_kind = {kind: frozenset(_global_roles(kind)) for kind in set(kinds.values())}
        registered: dict[str, set[str]] = defaultdict(set)
        for principal, purpose in self._db.execute("SELECT principal, purpose FROM principal_purposes"):
            registered[principal].add(purpose)
        return RoleLinks(
            at=t,
            household_roles=roles,
            global_roles={pid: by_kind[kind] for pid, kind in kinds.items()},
            registered={k: frozenset(v) for k, v in registered.items()},
            approvals=tuple(active),
            valid_until=self._next_change(t),
            kinds=kinds,
        )

    def _next_change(self, t: float) -> float:
        """The first instant after ``t`` at which some window opens or closes."""
        row = self._db.execute(
            """SELECT min(x) FROM (
                 SELECT since AS x FROM links WHERE since > :t UNION ALL
                 SELECT until FROM links WHERE until > :t UNION ALL
                 SELECT valid_from FROM approvals WHERE valid_from > :t UNION ALL
                 SELECT valid_to FROM approvals WHERE valid_to > :t UNION ALL
                 SELECT revoked_at FROM approvals WHERE revoked_at > :t UNION ALL
                 SELECT designated_at FROM designations WHERE designated_at > :t UNION ALL
                 SELECT revoked_at FROM designations WHERE revoked_at > :t)""",
            {"t": t},
        ).fetchone()
        return FOREVER if row[0] is None else float(row[0])

    def relation_words(self, roles: Iterable[str], household: str) -> list[str]:
        """How a principal holding ``roles`` is tied to ``household``, for explanations."""
        out = []
        for role in sorted(roles):
            if role.startswith(APPROVAL_ROLE_PREFIX):
                a = self.approval(int(role.removeprefix(APPROVAL_ROLE_PREFIX)))
                approver = self.principal(a.approver)
                out.append(
                    f"it was approved by {approver.display_name} (approval {a.id}), which serves {household}"
                )
            else:
                out.append(_ROLE_WORDS.get(role, f"it holds the role {role} for") + f" {household}")
        return out


_ROLE_WORDS = {
    "homeowner": "they are the homeowner of",
    "sales_company": "it sold the system to",
    "installer": "it installed",
    "wholesaler": "it supplied the equipment installed at",
    "retailer": "it supplies electricity to",
    "grid_operator": "it operates the grid serving",
    "dr_aggregator": "it runs demand response for",
    DESIGNATED_ROLE: "the operator designated it for",
}


def _global_roles(kind: str) -> set[str]:
    out = {kind}
    if kind != "homeowner":
        out.add(NON_OWNER)
    if kind not in INTERNAL_KINDS:
        out.add(THIRD_PARTY)
    return out


def _approval(row: tuple[object, ...]) -> Approval:
    aid, approver, approved, cats, purs, vf, vt, _created, revoked = row
    return Approval(
        id=int(str(aid)),
        approver=str(approver),
        approved=str(approved),
        categories=frozenset(json.loads(str(cats))),
        purposes=frozenset(json.loads(str(purs))),
        valid_from=float(str(vf)),
        valid_to=float(str(vt)),
        revoked_at=None if revoked is None else float(str(revoked)),
    )
