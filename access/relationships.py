"""Who is tied to which household, for which company, and when: kept in the access database (SQLite or
PostgreSQL, ``access.db``) so relationships are data.

The store records the facts of ``access.world`` with their periods and hands them back whole
(:meth:`RelationshipStore.facts`), history included; the decision layer indexes them at one instant.
It refuses what the terms cannot mean, with a :class:`RelationshipError` that says why:

* a principal holds only the link role of its own kind (an analyst or a company's staff linked as an
  installer is refused: the kind decides the role, and the role decides whether provision is to a
  third party);
* a company's staff (``operator``, and an ``analyst``) belong to exactly one company, a seeds document;
* a supply point has one retailer, one grid operator and one demand-response contractor at a time
  (ENEX 5, XOOM 7 footnote *1: joint use only with the operators each purpose needs);
* a joint-use registration names a granting clause of its company that names its parties
  (``named_recipients``) and a principal of a kind that clause names;
* a designation is made by the staff of a company whose terms name designated bodies (SPS 2(2)[4]);
* an approval is made by a principal that holds an approver link (SPS 2(2)[4]).

Schema version 2 (contracts, joint uses, mandates, principals' companies, designations' companies).
A version-1 database is migrated when opened: the new columns and tables are added, existing
suspensions and designations are the SPS terms' (as they were cited), and every existing household
gets an open-ended SPS ``service`` contract from when it was added -- every household of a version-1
database was a customer of this SPS monitoring service; contracts with other companies did not exist
and must be added (``hems principals contract add``).  A version-1 ``operator`` has no company and is
given nothing until one is set (``hems principals company ID COMPANY``); :meth:`problems` lists it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import MappingProxyType

from access.clock import FOREVER, now, to_epoch
from access.db import AccessDb, ChangeFeed, Db, open_db, write_transaction
from access.world import (
    APPROVER_ROLES,
    CONTRACT_KINDS,
    LINK_ROLES,
    SINGLE_HOLDER_ROLES,
    Approval,
    Contract,
    Designation,
    Facts,
    JointUse,
    Link,
    Mandate,
    Principal,
)
from seeds.loader import Seeds
from seeds.vocabulary import CATEGORIES, COMPANY_STAFF_KINDS, PRINCIPAL_KINDS

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
DESIGNATED_ROLE = "designated_body"
APPROVED_ROLE = "approved_company"
# How a person's or an agent's identity was checked (Sobu Gas 8, SPS 2(6)[3]).
VERIFICATION_METHODS = ("documents", "callback", "registered_details", "power_of_attorney")
# Values with a meaning in the policy; a household or principal may not be called that.
RESERVED_DOMAINS = frozenset({"own", "any", "all", "*"})
RESERVED_NAMES = frozenset(PRINCIPAL_KINDS) | {"*"}

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
# No dots in principal ids (purpose ids are dotted: Casbin's g2 would chain a principal named like a
# purpose into that purpose's registrations), no ':' or '/' (basis names use them).
_PRINCIPAL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,99}")  # fullmatch: '$' allows a final newline
_PURPOSE_ID = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")  # '<document>.<purpose>' as in seeds/

# The tables of this store (its change counter covers them all).
TABLES = (
    "households",
    "principals",
    "principal_purposes",
    "links",
    "approvals",
    "designations",
    "contracts",
    "joint_uses",
    "mandates",
)
# How a change to each table is announced (``access.db``'s ``keys``): by the household or principal
# whose facts it changed, so a policy snapshot rebuilds only those.  Approvals, joint uses and mandates
# are few, reach across households, and are read again in full when they change.
CHANGE_KEYS = {
    "households": ("household", "id"),
    "links": ("household", "household"),
    "designations": ("household", "household"),
    "contracts": ("household", "household"),
    "principals": ("principal", "id"),
    "principal_purposes": ("principal", "principal"),
}
_CHUNK = 500  # ids per IN (...) list
_SCHEMA = """
CREATE TABLE IF NOT EXISTS households (
    id TEXT PRIMARY KEY, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS principals (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, display_name TEXT NOT NULL, created_at REAL NOT NULL,
    company TEXT);
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
    designated_at REAL NOT NULL, revoked_at REAL, company TEXT NOT NULL DEFAULT 'sps');
CREATE TABLE IF NOT EXISTS contracts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, household TEXT NOT NULL REFERENCES households(id),
    company TEXT NOT NULL, kind TEXT NOT NULL, since REAL NOT NULL, until REAL);
CREATE INDEX IF NOT EXISTS contracts_by_household ON contracts(household);
CREATE TABLE IF NOT EXISTS joint_uses (
    id INTEGER PRIMARY KEY AUTOINCREMENT, company TEXT NOT NULL, clause TEXT NOT NULL,
    principal TEXT NOT NULL REFERENCES principals(id), since REAL NOT NULL, until REAL);
CREATE TABLE IF NOT EXISTS mandates (
    id INTEGER PRIMARY KEY AUTOINCREMENT, person TEXT NOT NULL REFERENCES principals(id),
    agent TEXT NOT NULL REFERENCES principals(id), categories TEXT, since REAL NOT NULL, until REAL,
    verified_at REAL, method TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS schema_versions (name TEXT PRIMARY KEY, version INTEGER NOT NULL);
"""


def is_principal_id(text: object) -> bool:
    """Whether ``text`` could name a principal: what is not may be refused before any database sees it
    (PostgreSQL cannot even hold a NUL in text)."""
    return isinstance(text, str) and _PRINCIPAL_ID.fullmatch(text) is not None


class RelationshipError(ValueError):
    """A relationship that cannot be recorded (unknown party, wrong kind, bad period)."""


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


When = datetime | float | int | str | None


def _when(value: When, default: float) -> float:
    return default if value is None else to_epoch(value)


def _period(since: When, until: When, what: str) -> tuple[float, float]:
    start = _when(since, now())
    end = _when(until, FOREVER)
    if end <= start:
        raise RelationshipError(f"{what}: the end of the period must be after its start")
    return start, end


def _end(value: float | None) -> float:
    return FOREVER if value is None else float(value)


def _db_end(value: float) -> float | None:
    return None if value == FOREVER else value


def _overlaps(a0: float, a1: float, b0: float, b1: float) -> bool:
    return a0 < b1 and b0 < a1


class RelationshipStore:
    """Households, principals and their periods in the access database (see the module docstring)."""

    def __init__(self, where: AccessDb, seeds: Seeds | None = None) -> None:
        self.where = where
        self._seeds = seeds
        self._db = open_db(
            where,
            _SCHEMA,
            name="relationships",
            counters={"relationships": TABLES},
            keys=CHANGE_KEYS,
            synchronous="NORMAL",
            foreign_keys=True,
        )
        _migrate(self._db)
        # Bumped on every write made through this object; the decision layer rebuilds when it moves.
        self.generation = 0

    def close(self) -> None:
        self._db.close()

    @property
    def seeds(self) -> Seeds:
        """The terms the store checks companies and clauses against (the packaged seeds by default)."""
        if self._seeds is None:
            from seeds.loader import load_seeds

            self._seeds = load_seeds()
        return self._seeds

    def data_version(self) -> int:
        """Changes when any connection (another process too) changes these tables (``Db.change_version``)."""
        return self._db.change_version("relationships")

    @property
    def changes_pushed(self) -> bool:
        return self._db.changes_pushed

    def change_feed(self) -> ChangeFeed:
        """Changes to these tables, by household or principal where announced (``CHANGE_KEYS``)."""
        return self._db.change_feed("relationships")

    @contextmanager
    def _tx(self) -> Iterator[Db]:
        with write_transaction(self._db) as db:
            yield db
        self.generation += 1

    def _company(self, company: str) -> str:
        known = {d.id for d in self.seeds.documents}
        if company not in known:
            raise RelationshipError(f"unknown company {company!r}: one of {', '.join(sorted(known))}")
        return company

    # -- households and principals ---------------------------------------------------------------
    def add_households(self, ids: Iterable[str]) -> None:
        rows = []
        for hid in ids:
            _check_id("household", hid)
            if hid in RESERVED_DOMAINS or "@" in hid:
                raise RelationshipError(f"household id {hid!r} is reserved by the policy")
            rows.append((hid, now()))
        with self._tx() as db:
            db.executemany("INSERT INTO households VALUES (?, ?) ON CONFLICT DO NOTHING", rows)

    def add_household(self, hid: str) -> None:
        self.add_households([hid])

    def households(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT id FROM households ORDER BY id")]

    def add_principal(
        self,
        pid: str,
        kind: str,
        display_name: str,
        purposes: Iterable[str] = (),
        company: str | None = None,
    ) -> Principal:
        if not is_principal_id(pid):
            raise RelationshipError(f"principal id {pid!r}: use 1-100 letters, digits, '_' or '-'")
        if pid in RESERVED_NAMES:
            raise RelationshipError(f"principal id {pid!r} is reserved by the policy (a kind or role name)")
        if kind not in PRINCIPAL_KINDS:
            raise RelationshipError(
                f"principal {pid!r}: unknown kind {kind!r}; known: {', '.join(PRINCIPAL_KINDS)}"
            )
        self._check_company(pid, kind, company)
        if not display_name.strip():
            raise RelationshipError(f"principal {pid!r}: a display name is required")
        with self._tx() as db:
            if db.execute("SELECT 1 FROM principals WHERE id = ?", (pid,)).fetchone():
                raise RelationshipError(f"principal {pid!r} already exists")
            rows = _purposes(pid, purposes)
            db.execute(
                "INSERT INTO principals (id, kind, display_name, created_at, company) VALUES (?, ?, ?, ?, ?)",
                (pid, kind, display_name, now(), company),
            )
            db.executemany("INSERT INTO principal_purposes VALUES (?, ?) ON CONFLICT DO NOTHING", rows)
        return self.principal(pid)

    def _check_company(self, pid: str, kind: str, company: str | None) -> None:
        if company is not None:
            if kind not in COMPANY_STAFF_KINDS:
                raise RelationshipError(
                    f"principal {pid!r}: only a company's staff ({', '.join(COMPANY_STAFF_KINDS)}) act for a "
                    f"company; a {kind} is a company of its own"
                )
            self._company(company)
        elif kind == "operator":
            raise RelationshipError(
                f"principal {pid!r}: an operator is the staff of one company; give its company "
                f"(one of {', '.join(sorted(d.id for d in self.seeds.documents))})"
            )

    def set_company(self, pid: str, company: str) -> Principal:
        """Say which company a staff principal acts for (e.g. an operator of a version-1 database)."""
        p = self.principal(pid)
        self._check_company(pid, p.kind, company)
        with self._tx() as db:
            db.execute("UPDATE principals SET company = ? WHERE id = ?", (company, pid))
        return self.principal(pid)

    def register_purposes(self, pid: str, purposes: Iterable[str]) -> None:
        self.principal(pid)
        rows = _purposes(pid, purposes)
        with self._tx() as db:
            db.executemany("INSERT INTO principal_purposes VALUES (?, ?) ON CONFLICT DO NOTHING", rows)

    def principal(self, pid: str) -> Principal:
        row = self._db.execute(
            "SELECT id, kind, display_name, company FROM principals WHERE id = ?", (pid,)
        ).fetchone()
        if row is None:
            raise RelationshipError(f"unknown principal {pid!r}")
        purposes = frozenset(
            r[0]
            for r in self._db.execute("SELECT purpose FROM principal_purposes WHERE principal = ?", (pid,))
        )
        return Principal(row[0], row[1], row[2], purposes, row[3])

    def find_principal(self, pid: str) -> Principal | None:
        try:
            return self.principal(pid)
        except RelationshipError:
            return None

    def principals(self) -> list[Principal]:
        return list(self._principals().values())

    def _principals(self) -> dict[str, Principal]:
        purposes: dict[str, set[str]] = {}
        for principal, purpose in self._db.execute("SELECT principal, purpose FROM principal_purposes"):
            purposes.setdefault(principal, set()).add(purpose)
        return {
            pid: Principal(pid, kind, name, frozenset(purposes.get(pid, ())), company)
            for pid, kind, name, company in self._db.execute(
                "SELECT id, kind, display_name, company FROM principals ORDER BY id"
            )
        }

    # -- links -------------------------------------------------------------------------------------
    def link(self, principal: str, household: str, role: str, since: When = None, until: When = None) -> None:
        """Record that ``principal`` holds ``role`` for ``household`` (sold, installed, supplies, owns)."""
        self.link_many([(principal, household, role)], since=since, until=until)

    def link_many(self, rows: Iterable[tuple[str, str, str]], since: When = None, until: When = None) -> None:
        start, end = _period(since, until, "link")
        rows = list(rows)
        kinds: dict[str, str] = {}
        for pid in {r[0] for r in rows}:
            found = self._db.execute("SELECT kind FROM principals WHERE id = ?", (pid,)).fetchone()
            if found is not None:
                kinds[pid] = found[0]
        households = {
            h
            for h in {r[1] for r in rows}
            if self._db.execute("SELECT 1 FROM households WHERE id = ?", (h,)).fetchone()
        }
        batch = []
        for principal, household, role in rows:
            if role not in LINK_ROLES:
                raise RelationshipError(f"link role {role!r}: must be one of {', '.join(LINK_ROLES)}")
            if principal not in kinds:
                raise RelationshipError(f"unknown principal {principal!r}")
            if household not in households:
                raise RelationshipError(f"unknown household {household!r}")
            if kinds[principal] != role:
                raise RelationshipError(
                    f"{principal!r} is a {kinds[principal]}: it can only be linked as a {kinds[principal]}, "
                    f"not as a {role} (the kind decides the role)"
                )
            batch.append((principal, household, role, start, _db_end(end)))
        with self._tx() as db:
            for principal, household, role, _, _ in batch:
                if role in SINGLE_HOLDER_ROLES:
                    self._one_holder(db, principal, household, role, start, end)
            db.executemany("INSERT INTO links VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING", batch)

    @staticmethod
    def _one_holder(db: Db, principal: str, household: str, role: str, start: float, end: float) -> None:
        for other, since, until in db.execute(
            "SELECT principal, since, until FROM links WHERE household = ? AND role = ? AND principal != ?",
            (household, role, principal),
        ):
            if _overlaps(start, end, since, _end(until)):
                raise RelationshipError(
                    f"{household!r} already has {other!r} as its {role} in that period: a supply point has "
                    f"one {role} at a time (end that link first)"
                )

    def unlink(self, principal: str, household: str, role: str, at: When = None) -> None:
        """End a relationship (kept as history); approvals lent through it end with it."""
        end = _when(at, now())
        with self._tx() as db:
            cur = db.execute(
                "UPDATE links SET until = ? "
                "WHERE principal = ? AND household = ? AND role = ? AND since < ? "
                "AND (until IS NULL OR until > ?)",
                (end, principal, household, role, end, end),
            )
            if cur.rowcount == 0:
                raise RelationshipError(f"{principal!r} holds no current {role!r} link to {household!r}")

    def _end(self, table: str, row_id: int, at: When, what: str) -> None:
        """End a running dated row (a contract, a registration, a mandate) at ``at`` (default now);
        ``table`` is one of this module's own table names, never caller input."""
        end = _when(at, now())
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE {table} SET until = ? WHERE id = ? AND since < ? AND (until IS NULL OR until > ?)",
                (end, row_id, end, end),
            )
            if cur.rowcount == 0:
                raise RelationshipError(f"no {what} {row_id} running at that time")

    # -- contracts ---------------------------------------------------------------------------------
    def add_contract(
        self, household: str, company: str, kind: str, since: When = None, until: When = None
    ) -> Contract:
        """The household becomes a customer of ``company`` (service, supply or app) for the period."""
        if kind not in CONTRACT_KINDS:
            raise RelationshipError(f"contract kind {kind!r}: one of {', '.join(CONTRACT_KINDS)}")
        self._company(company)
        start, end = _period(since, until, "contract")
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM households WHERE id = ?", (household,)).fetchone():
                raise RelationshipError(f"unknown household {household!r}")
            cid = db.insert_id(
                "INSERT INTO contracts (household, company, kind, since, until) VALUES (?, ?, ?, ?, ?)",
                (household, company, kind, start, _db_end(end)),
            )
        return self.contract(cid)

    def add_contracts(self, rows: Iterable[tuple[str, str, str]], since: When = None) -> None:
        """Many (household, company, kind) contracts from one instant, in one transaction."""
        start, _ = _period(since, None, "contract")
        batch = []
        for household, company, kind in rows:
            if kind not in CONTRACT_KINDS:
                raise RelationshipError(f"contract kind {kind!r}: one of {', '.join(CONTRACT_KINDS)}")
            batch.append((household, self._company(company), kind, start))
        with self._tx() as db:
            db.executemany(
                "INSERT INTO contracts (household, company, kind, since) VALUES (?, ?, ?, ?)", batch
            )

    def end_contract(self, cid: int, at: When = None) -> None:
        self._end("contracts", cid, at, "contract")

    def contract(self, cid: int) -> Contract:
        row = self._db.execute("SELECT * FROM contracts WHERE id = ?", (cid,)).fetchone()
        if row is None:
            raise RelationshipError(f"unknown contract {cid}")
        return _contract(row)

    def contracts(self, household: str | None = None) -> list[Contract]:
        sql, args = "SELECT * FROM contracts", ()
        if household is not None:
            sql, args = sql + " WHERE household = ?", (household,)  # type: ignore[assignment]
        return [_contract(r) for r in self._db.execute(sql + " ORDER BY id", args)]

    # -- named joint users and recipients ----------------------------------------------------------
    def register_joint_use(
        self, company: str, clause: str, principal: str, since: When = None, until: When = None
    ) -> JointUse:
        """``company`` names ``principal`` as the party of its clause ``clause`` for the period."""
        self._company(company)
        try:
            c = self.seeds.clause(clause)
        except KeyError:
            raise RelationshipError(f"unknown clause {clause!r}") from None
        if c.document != company:
            raise RelationshipError(f"clause {clause} belongs to {c.document}, not {company}")
        if not (c.grants and c.conditions.named_recipients):
            raise RelationshipError(f"clause {clause} does not name its parties (no named_recipients grant)")
        p = self.principal(principal)
        if p.kind not in c.recipients:
            raise RelationshipError(
                f"clause {clause} names {', '.join(c.recipients)}; {principal!r} is a {p.kind}"
            )
        if p.company == company:
            raise RelationshipError(f"{principal!r} is {company}'s own staff: it needs no registration")
        start, end = _period(since, until, "joint use")
        with self._tx() as db:
            jid = db.insert_id(
                "INSERT INTO joint_uses (company, clause, principal, since, until) VALUES (?, ?, ?, ?, ?)",
                (company, clause, principal, start, _db_end(end)),
            )
        return self.joint_use(jid)

    def end_joint_use(self, jid: int, at: When = None) -> None:
        self._end("joint_uses", jid, at, "joint use")

    def joint_use(self, jid: int) -> JointUse:
        row = self._db.execute("SELECT * FROM joint_uses WHERE id = ?", (jid,)).fetchone()
        if row is None:
            raise RelationshipError(f"unknown joint use {jid}")
        return _joint_use(row)

    def joint_uses(self) -> list[JointUse]:
        return [_joint_use(r) for r in self._db.execute("SELECT * FROM joint_uses ORDER BY id")]

    # -- agents --------------------------------------------------------------------------------------
    def add_mandate(
        self,
        person: str,
        agent: str,
        categories: Iterable[str] | None = None,
        since: When = None,
        until: When = None,
        verified_at: When = None,
        method: str = "",
    ) -> Mandate:
        """``agent`` may act for ``person`` (a homeowner) once the mandate is verified."""
        if self.principal(person).kind != "homeowner":
            raise RelationshipError(f"mandate: {person!r} is not a homeowner")
        if self.principal(agent).kind != "agent":
            raise RelationshipError(f"mandate: {agent!r} is not an agent principal")
        cats = None if categories is None else sorted(set(categories))
        if cats is not None and (not cats or set(cats) - set(CATEGORIES)):
            raise RelationshipError(f"mandate: categories {cats} must be known categories (or all)")
        start, end = _period(since, until, "mandate")
        verified = None if verified_at is None else to_epoch(verified_at)
        if verified is not None and method not in VERIFICATION_METHODS:
            raise RelationshipError(f"mandate: say how it was verified ({', '.join(VERIFICATION_METHODS)})")
        with self._tx() as db:
            mid = db.insert_id(
                "INSERT INTO mandates (person, agent, categories, since, until, verified_at, method) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    person,
                    agent,
                    None if cats is None else json.dumps(cats),
                    start,
                    _db_end(end),
                    verified,
                    method,
                ),
            )
        return self.mandate(mid)

    def verify_mandate(self, mid: int, method: str, at: When = None) -> Mandate:
        """Record that the mandate was checked (e.g. a power of attorney and a call to the person)."""
        if method not in VERIFICATION_METHODS:
            raise RelationshipError(f"mandate: method {method!r}: one of {', '.join(VERIFICATION_METHODS)}")
        with self._tx() as db:
            cur = db.execute(
                "UPDATE mandates SET verified_at = ?, method = ? WHERE id = ?",
                (_when(at, now()), method, mid),
            )
            if cur.rowcount == 0:
                raise RelationshipError(f"unknown mandate {mid}")
        return self.mandate(mid)

    def end_mandate(self, mid: int, at: When = None) -> None:
        self._end("mandates", mid, at, "mandate")

    def mandate(self, mid: int) -> Mandate:
        row = self._db.execute("SELECT * FROM mandates WHERE id = ?", (mid,)).fetchone()
        if row is None:
            raise RelationshipError(f"unknown mandate {mid}")
        return _mandate(row)

    def mandates(self) -> list[Mandate]:
        return [_mandate(r) for r in self._db.execute("SELECT * FROM mandates ORDER BY id")]

    # -- approvals and designations -----------------------------------------------------------------
    def approve(
        self,
        approver: str,
        approved: str,
        categories: Iterable[str],
        purposes: Iterable[str],
        valid_from: When = None,
        valid_to: When = None,
    ) -> Approval:
        """Record an approval; what it lends is cut, at each decision, to what the approver holds."""
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
            aid = db.insert_id(
                "INSERT INTO approvals (approver, approved, categories, purposes, valid_from, valid_to, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (approver, approved, json.dumps(sorted(cats)), json.dumps(sorted(purs)), start, end, now()),
            )
        return self.approval(aid)

    def revoke_approval(self, aid: int, at: When = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE approvals SET revoked_at = ? WHERE id = ?", (_when(at, now()), aid))

    def approval(self, aid: int) -> Approval:
        row = self._db.execute("SELECT * FROM approvals WHERE id = ?", (aid,)).fetchone()
        if row is None:
            raise RelationshipError(f"unknown approval {aid}")
        return _approval(row)

    def approvals(self) -> list[Approval]:
        return [_approval(r) for r in self._db.execute("SELECT * FROM approvals ORDER BY id")]

    def _designator(self, operator: str) -> str:
        p = self.principal(operator)
        if p.kind != "operator" or p.company is None:
            raise RelationshipError(f"designation: {operator!r} is not the operator (a company's staff)")
        if not any(c.grants and DESIGNATED_ROLE in c.recipients for c in self.seeds.clauses_of(p.company)):
            raise RelationshipError(
                f"designation: {p.company}'s terms name no designated bodies, so its staff cannot designate"
            )
        return p.company

    def designate(
        self, operator: str, principal: str, household: str, at: When = None, until: When = None
    ) -> int:
        """The company (through its staff member) names a body it deems necessary for one household."""
        company = self._designator(operator)
        if self.principal(principal).kind != DESIGNATED_ROLE:
            raise RelationshipError(f"designation: {principal!r} is not a designated_body principal")
        start, end = _period(at, until, "designation")
        with self._tx() as db:
            return db.insert_id(
                "INSERT INTO designations "
                "(operator, principal, household, designated_at, revoked_at, company) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (operator, principal, household, start, _db_end(end), company),
            )

    def designate_many(self, operator: str, rows: Iterable[tuple[str, str]], at: When = None) -> None:
        company = self._designator(operator)
        t = _when(at, now())
        with self._tx() as db:
            db.executemany(
                "INSERT INTO designations (operator, principal, household, designated_at, company) "
                "VALUES (?, ?, ?, ?, ?)",
                [(operator, p, h, t, company) for p, h in rows],
            )

    def revoke_designation(self, did: int, at: When = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE designations SET revoked_at = ? WHERE id = ?", (_when(at, now()), did))

    # -- what the decisions are built from -----------------------------------------------------------
    def facts(self) -> Facts:
        """Every recorded fact with its period, history included (suspensions come from ``consent``)."""
        db = self._db
        links = tuple(
            Link(p, h, role, since, _end(until))
            for p, h, role, since, until in db.execute(
                "SELECT principal, household, role, since, until FROM links "
                "ORDER BY principal, household, role, since"
            )
        )
        designations = tuple(
            Designation(i, op, company, p, h, since, _end(until))
            for i, op, p, h, since, until, company in db.execute(
                "SELECT id, operator, principal, household, designated_at, revoked_at, company "
                "FROM designations ORDER BY id"
            )
        )
        return Facts(
            principals=MappingProxyType(self._principals()),
            households=tuple(self.households()),
            links=links,
            contracts=tuple(self.contracts()),
            approvals=tuple(self.approvals()),
            designations=designations,
            joint_uses=tuple(self.joint_uses()),
            mandates=tuple(self.mandates()),
        )

    def household_facts(self, households: Collection[str]) -> Facts:
        """The facts of these households only (their links, contracts and designations, and which of
        them are recorded), no principals: what a snapshot re-reads when they changed."""
        db = self._db
        listed: list[str] = []
        links: list[Link] = []
        contracts: list[Contract] = []
        designations: list[Designation] = []
        for ids in _chunks(sorted(households)):
            marks = ", ".join("?" * len(ids))
            listed += [r[0] for r in db.execute(f"SELECT id FROM households WHERE id IN ({marks})", ids)]
            links += [
                Link(p, h, role, since, _end(until))
                for p, h, role, since, until in db.execute(
                    "SELECT principal, household, role, since, until FROM links "
                    f"WHERE household IN ({marks})",
                    ids,
                )
            ]
            contracts += [
                _contract(r) for r in db.execute(f"SELECT * FROM contracts WHERE household IN ({marks})", ids)
            ]
            designations += [
                Designation(i, op, company, p, h, since, _end(until))
                for i, op, p, h, since, until, company in db.execute(
                    "SELECT id, operator, principal, household, designated_at, revoked_at, company "
                    f"FROM designations WHERE household IN ({marks})",
                    ids,
                )
            ]
        return Facts(
            principals=MappingProxyType({}),
            households=tuple(sorted(listed)),
            links=tuple(sorted(links, key=lambda k: (k.principal, k.household, k.role, k.since))),
            contracts=tuple(sorted(contracts, key=lambda c: c.id)),
            designations=tuple(sorted(designations, key=lambda d: d.id)),
        )

    def principals_of(self, ids: Collection[str]) -> dict[str, Principal | None]:
        """These principals as recorded now (None: not recorded)."""
        out: dict[str, Principal | None] = dict.fromkeys(ids)
        for chunk in _chunks(sorted(ids)):
            marks = ", ".join("?" * len(chunk))
            purposes: dict[str, set[str]] = {}
            for principal, purpose in self._db.execute(
                f"SELECT principal, purpose FROM principal_purposes WHERE principal IN ({marks})", chunk
            ):
                purposes.setdefault(principal, set()).add(purpose)
            for pid, kind, name, company in self._db.execute(
                f"SELECT id, kind, display_name, company FROM principals WHERE id IN ({marks})", chunk
            ):
                out[pid] = Principal(pid, kind, name, frozenset(purposes.get(pid, ())), company)
        return out

    def problems(self) -> list[str]:
        """What the store holds but no decision will honour, in words (after a migration, say)."""
        out = []
        for p in self._principals().values():
            if p.kind == "operator" and p.company is None:
                out.append(
                    f"operator {p.id!r} acts for no company, so it is given nothing: "
                    f"hems principals company {p.id} <company>"
                )
        kinds = {p.id: p.kind for p in self._principals().values()}
        for principal, household, role in self._db.execute(
            "SELECT principal, household, role FROM links ORDER BY principal, household, role, since"
        ):
            if kinds.get(principal) != role:
                out.append(
                    f"link of {principal!r} ({kinds.get(principal)}) to {household!r} as {role} is ignored: "
                    "a principal holds only its own kind's role"
                )
        return out

    def approval_status(self, aid: int, at: When = None) -> str:
        """In words: whether an approval lends anything at ``at``, and if not, why."""
        t = _when(at, now())
        a = self.approval(aid)
        if a.revoked_at is not None and a.revoked_at <= t:
            return "revoked"
        if t < a.valid_from:
            return "not yet valid"
        if t >= a.valid_to:
            return "expired"
        held = self._db.execute(
            "SELECT 1 FROM links WHERE principal = ? AND since <= ? AND (until IS NULL OR until > ?) "
            f"AND role IN ({', '.join('?' * len(APPROVER_ROLES))})",
            (a.approver, t, t, *sorted(APPROVER_ROLES)),
        ).fetchone()
        if held is None:
            return "void: the approver no longer holds any household"
        return "active"


def _migrate(db: Db) -> None:
    """Bring a version-1 database to version 2 (see the module docstring); a newer one is refused."""
    row = db.execute("SELECT version FROM schema_versions WHERE name = 'relationships'").fetchone()
    if row is not None:
        if row[0] > SCHEMA_VERSION:
            raise RelationshipError(
                f"the access database is at relationships schema {row[0]}; "
                f"this version knows {SCHEMA_VERSION}: "
                "upgrade the software, not the database"
            )
        return
    columns = db.columns("principals")
    with write_transaction(db):
        if "company" not in columns:  # version 1: created before companies and contracts existed
            db.execute("ALTER TABLE principals ADD COLUMN company TEXT")
            designation_columns = db.columns("designations")
            if "company" not in designation_columns:
                db.execute("ALTER TABLE designations ADD COLUMN company TEXT NOT NULL DEFAULT 'sps'")
            migrated = db.execute(
                "INSERT INTO contracts (household, company, kind, since) "
                "SELECT h.id, 'sps', 'service', "
                "CASE WHEN min(l.since) < h.created_at THEN min(l.since) ELSE h.created_at END "
                "FROM households h LEFT JOIN links l ON l.household = h.id GROUP BY h.id"
            ).rowcount
            log.warning(
                "access database migrated to schema %d: %d households given an SPS service contract from "
                "when they were added; add other companies' contracts with 'hems principals contract add'",
                SCHEMA_VERSION,
                migrated,
            )
        db.execute(
            "INSERT INTO schema_versions VALUES ('relationships', ?) ON CONFLICT DO NOTHING",
            (SCHEMA_VERSION,),
        )


def _chunks(ids: Sequence[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), _CHUNK):
        yield list(ids[i : i + _CHUNK])


def _contract(row: tuple[object, ...]) -> Contract:
    cid, household, company, kind, since, until = row
    return Contract(int(str(cid)), str(household), str(company), str(kind), float(str(since)), _end(until))  # type: ignore[arg-type]


def _joint_use(row: tuple[object, ...]) -> JointUse:
    jid, company, clause, principal, since, until = row
    return JointUse(int(str(jid)), str(company), str(clause), str(principal), float(str(since)), _end(until))  # type: ignore[arg-type]


def _mandate(row: tuple[object, ...]) -> Mandate:
    mid, person, agent, cats, since, until, verified, method = row
    return Mandate(
        int(str(mid)),
        str(person),
        str(agent),
        None if cats is None else frozenset(json.loads(str(cats))),
        float(str(since)),
        _end(until),  # type: ignore[arg-type]
        None if verified is None else float(str(verified)),
        str(method),
    )


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
