"""The person's own say over their data (SPS 2(6), Sobu Gas, Kaluza).

Suspensions are compiled into deny lines (``access.compiler.suspension_rules``), so under Casbin's
deny-overrides effect they beat every third-party allow whatever clause grants it.  Two scopes, as in
SPS 2(6): ``provision`` stops provision to third parties; ``use`` also stops the operator's own use.
Either can target one recipient, one category, or everything.  The homeowner's own access is never
suspended: it is their right of disclosure.

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
from access.compiler import Suspension
from access.db import change_counter, open_db, read_change_counter, write_transaction
from seeds.loader import Seeds
from seeds.vocabulary import CATEGORIES

SCOPES = ("provision", "use")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS suspensions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, household TEXT NOT NULL, scope TEXT NOT NULL,
    recipient TEXT, category TEXT, requested_at REAL NOT NULL, lifted_at REAL, note TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS suspensions_by_household ON suspensions(household);
CREATE TABLE IF NOT EXISTS erasure_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT, household TEXT NOT NULL, requested_at REAL NOT NULL,
    categories TEXT NOT NULL, outcome TEXT NOT NULL, status TEXT NOT NULL, completed_at REAL);
""" + change_counter("consent", ("suspensions", "erasure_requests"))


class ConsentError(ValueError):
    """A suspension or erasure request that cannot be recorded as asked."""


@dataclass(frozen=True)
class SuspensionRecord:
    id: int
    household: str
    scope: str
    recipient: str | None
    category: str | None
    requested_at: float
    lifted_at: float | None

    def as_rule_input(self) -> Suspension:
        return Suspension(self.id, self.household, self.scope, self.recipient, self.category)

    def active(self, at: float) -> bool:
        return self.requested_at <= at and (self.lifted_at is None or self.lifted_at > at)

    def describe(self) -> str:
        what = "third-party provision" if self.scope == "provision" else "use"
        to = f" to {self.recipient}" if self.recipient else ""
        cat = f" of {self.category} data" if self.category else ""
        return f"suspension {self.id}: the household suspended {what}{cat}{to}"


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
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db = open_db(self.path, _SCHEMA, synchronous="NORMAL")
        self.generation = 0

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
    ) -> SuspensionRecord:
        if scope not in SCOPES:
            raise ConsentError(f"suspension scope {scope!r}: must be one of {', '.join(SCOPES)}")
        if category is not None and category not in CATEGORIES:
            raise ConsentError(f"unknown category {category!r}")
        t = now() if at is None else to_epoch(at)
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO suspensions (household, scope, recipient, category, requested_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (household, scope, recipient, category, t),
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

    def suspension(self, suspension_id: int) -> SuspensionRecord:
        row = self._db.execute(
            "SELECT id, household, scope, recipient, category, requested_at, lifted_at FROM suspensions "
            "WHERE id = ?",
            (suspension_id,),
        ).fetchone()
        if row is None:
            raise ConsentError(f"unknown suspension {suspension_id}")
        return SuspensionRecord(*row)

    def suspensions(self, household: str | None = None) -> list[SuspensionRecord]:
        sql = "SELECT id, household, scope, recipient, category, requested_at, lifted_at FROM suspensions"
        args: tuple[str, ...] = ()
        if household is not None:
            sql += " WHERE household = ?"
            args = (household,)
        return [SuspensionRecord(*r) for r in self._db.execute(sql + " ORDER BY id", args)]

    def active_suspensions(self, at: float) -> list[SuspensionRecord]:
        return [s for s in self.suspensions() if s.active(at)]

    def next_change(self, at: float) -> float:
        row = self._db.execute(
            "SELECT min(x) FROM (SELECT requested_at AS x FROM suspensions WHERE requested_at > :t "
            "UNION ALL SELECT lifted_at FROM suspensions WHERE lifted_at > :t)",
            {"t": at},
        ).fetchone()
        return float("inf") if row[0] is None else float(row[0])

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
