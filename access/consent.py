"""The person's own say over their data (SPS 2(6), Sobu Gas 7, Kaluza handling 4, XOOM 9, ENEX 5).

A suspension is recorded with one company: the one whose terms the person invokes (SPS by default,
the operator of this monitoring service).  Two scopes, as in SPS 2(6): ``provision`` stops provision
to third parties under that company's suspendable clauses; ``use`` also stops the company's own staff.
Either can target one recipient, one category, or everything.  A company accepts only the scopes its
terms provide (``access.compiler.suspension_scopes``): ENEX's, say, make its joint use (2) suspendable
but not the supply operations of joint use (1).  The homeowner's own access is never suspended: it is
their right of disclosure.  How a suspension cuts the periods a decision serves is said in
``access.compiler``'s docstring and applied by ``access.decision``.

Erasure requests are recorded, not executed here: the store owner erases.  Each category gets an
outcome up front, because some records must be kept by law (the seeds mark such clauses ``legal_hold``)
and the person is owed that answer when they ask, not after the fact.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from access.clock import now, to_epoch
from access.compiler import suspension_scopes
from access.db import change_counter, open_db, read_change_counter, write_transaction
from access.world import SCOPES, Suspension
from seeds.loader import Seeds
from seeds.vocabulary import CATEGORIES

DEFAULT_COMPANY = "sps"
_COLUMNS = "id, household, scope, recipient, category, requested_at, lifted_at, company"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS suspensions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, household TEXT NOT NULL, scope TEXT NOT NULL,
    recipient TEXT, category TEXT, requested_at REAL NOT NULL, lifted_at REAL, note TEXT NOT NULL DEFAULT '',
    company TEXT NOT NULL DEFAULT 'sps');
CREATE INDEX IF NOT EXISTS suspensions_by_household ON suspensions(household);
CREATE TABLE IF NOT EXISTS erasure_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, household TEXT NOT NULL, requested_at REAL NOT NULL,
    categories TEXT NOT NULL, outcome TEXT NOT NULL, status TEXT NOT NULL, completed_at REAL);
""" + change_counter("consent", ("suspensions", "erasure_requests"))


class ConsentError(ValueError):
    """A suspension or erasure request that cannot be recorded as asked."""


@dataclass(frozen=True)
class ErasureRequest:
    id: int
    household: str
    requested_at: float
    outcome: dict[str, str]  # category -> "erase" or "keep: <clause id>"
    status: str  # "recorded" (to be carried out) or "done"


def legal_holds(seeds: Seeds) -> dict[str, list[str]]:
    """category -> ids of clauses saying it must be kept (retention / legal hold)."""
    holds: dict[str, list[str]] = {}
    for clause in seeds.clauses:
        if clause.conditions.legal_hold:
            for category in clause.data_categories:
                holds.setdefault(category, []).append(clause.id)
    return holds


class ConsentStore:
    def __init__(self, path: Path | str, seeds: Seeds | None = None) -> None:
        self.path = Path(path)
        self._db = open_db(self.path, _SCHEMA, synchronous="NORMAL")
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(suspensions)")}
        if "company" not in columns:  # schema 1: every suspension was made under SPS 2(6)
            self._db.execute("ALTER TABLE suspensions ADD COLUMN company TEXT NOT NULL DEFAULT 'sps'")
        self._seeds = seeds
        self._scopes: dict[str, frozenset[str]] | None = None
        self.generation = 0

    def _accepted(self) -> dict[str, frozenset[str]]:
        """company -> the scopes its terms accept (from the seeds, the packaged ones by default)."""
        if self._scopes is None:
            if self._seeds is None:
                from seeds.loader import load_seeds

                self._seeds = load_seeds()
            self._scopes = suspension_scopes(self._seeds)
        return self._scopes

    def close(self) -> None:
        self._db.close()

    def data_version(self) -> int:
        """Changes when any connection (another process too) changes these tables (``change_counter``)."""
        return read_change_counter(self._db, "consent")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with write_transaction(self._db) as db:
            yield db
        self.generation += 1

    def suspend(
        self,
        household: str,
        scope: str = "provision",
        recipient: str | None = None,
        category: str | None = None,
        at: datetime | float | str | None = None,
        company: str = DEFAULT_COMPANY,
    ) -> Suspension:
        if scope not in SCOPES:
            raise ConsentError(f"suspension scope {scope!r}: must be one of {', '.join(SCOPES)}")
        if category is not None and category not in CATEGORIES:
            raise ConsentError(f"unknown category {category!r}")
        accepted = self._accepted()
        if company not in accepted:
            raise ConsentError(
                f"company {company!r} accepts no suspensions (those that do: {', '.join(sorted(accepted))})"
            )
        if scope not in accepted[company]:
            raise ConsentError(
                f"{company}'s terms provide no suspension of {scope} "
                f"(they accept: {', '.join(sorted(accepted[company]))})"
            )
        t = now() if at is None else to_epoch(at)
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO suspensions (household, scope, recipient, category, requested_at, company) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (household, scope, recipient, category, t, company),
            )
        assert cur.lastrowid is not None
        return self.suspension(cur.lastrowid)

    def lift(self, suspension_id: int, at: datetime | float | str | None = None) -> None:
        t = now() if at is None else to_epoch(at)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE suspensions SET lifted_at = ? WHERE id = ? AND lifted_at IS NULL", (t, suspension_id)
            )
            if cur.rowcount == 0:
                raise ConsentError(f"no active suspension {suspension_id}")

    def set_suspended(
        self,
        household: str,
        suspended: bool,
        scope: str = "provision",
        recipient: str | None = None,
        category: str | None = None,
        at: datetime | float | str | None = None,
        company: str = DEFAULT_COMPANY,
    ) -> None:
        """What the homeowner's switches and the consent API do: suspend, unless a suspension of
        exactly this scope, recipient, category and company is already active; or lift every active
        one of exactly that."""
        t = now() if at is None else to_epoch(at)
        matching = [
            s
            for s in self.suspensions(household)
            if s.active(t)
            and s.scope == scope
            and s.recipient == recipient
            and s.category == category
            and s.company == company
        ]
        if suspended and not matching:
            self.suspend(household, scope, recipient, category, at=t, company=company)
        elif not suspended:
            for s in matching:
                self.lift(s.id, at=t)

    def suspension(self, suspension_id: int) -> Suspension:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM suspensions WHERE id = ?", (suspension_id,)
        ).fetchone()
        if row is None:
            raise ConsentError(f"unknown suspension {suspension_id}")
        return Suspension(*row)

    def suspensions(self, household: str | None = None) -> list[Suspension]:
        """Every suspension, lifted ones included: a lifted one still keeps out the data recorded while
        it was in force (see ``access.compiler``)."""
        sql = f"SELECT {_COLUMNS} FROM suspensions"
        args: tuple[str, ...] = ()
        if household is not None:
            sql += " WHERE household = ?"
            args = (household,)
        return [Suspension(*r) for r in self._db.execute(sql + " ORDER BY id", args)]

    def active_suspensions(self, at: float) -> list[Suspension]:
        return [s for s in self.suspensions() if s.active(at)]

    # -- erasure ---------------------------------------------------------------------------------
    def request_erasure(
        self,
        household: str,
        seeds: Seeds,
        categories: Iterable[str] | None = None,
        at: datetime | float | str | None = None,
    ) -> ErasureRequest:
        cats = list(CATEGORIES if categories is None else categories)
        unknown = sorted(set(cats) - set(CATEGORIES))
        if unknown:
            raise ConsentError(f"erasure: unknown categories {unknown}")
        holds = legal_holds(seeds)
        outcome = {c: (f"keep: {', '.join(holds[c])}" if c in holds else "erase") for c in cats}
        t = now() if at is None else to_epoch(at)
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO erasure_requests (household, requested_at, categories, outcome, status) "
                "VALUES (?, ?, ?, ?, 'recorded')",
                (household, t, json.dumps(cats), json.dumps(outcome)),
            )
        assert cur.lastrowid is not None
        return self.erasure(cur.lastrowid)

    def complete_erasure(self, request_id: int, at: datetime | float | str | None = None) -> None:
        t = now() if at is None else to_epoch(at)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE erasure_requests SET status = 'done', completed_at = ? "
                "WHERE id = ? AND status = 'recorded'",
                (t, request_id),
            )
            if cur.rowcount == 0:
                raise ConsentError(f"no pending erasure request {request_id}")

    def erasure(self, request_id: int) -> ErasureRequest:
        row = self._db.execute(
            "SELECT id, household, requested_at, outcome, status FROM erasure_requests WHERE id = ?",
            (request_id,),
        ).fetchone()
        if row is None:
            raise ConsentError(f"unknown erasure request {request_id}")
        return ErasureRequest(row[0], row[1], row[2], json.loads(row[3]), row[4])

    def erasures(self, household: str) -> list[ErasureRequest]:
        ids = [
            r[0]
            for r in self._db.execute("SELECT id FROM erasure_requests WHERE household = ?", (household,))
        ]
        return [self.erasure(i) for i in ids]
