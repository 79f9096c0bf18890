"""Each principal's privacy budget, and the release ledger that spends it.

Every statistics release (``access.privacy``) is charged its epsilon against the principal's budget
in one write transaction with its ledger row: the row *is* the spending, so the budget left is the
budget less the sum of the principal's rows, and a release that would overdraw it is refused before
anything is computed from its noise.  The budget is for the principal's whole life: a budget that
renewed would let a patient principal learn everything in the end.  An operator may raise it
(``hems principals budget``); each change is recorded with who made it, so the bound that holds is
always visible.

The release ledger is append-only (triggers refuse UPDATE and DELETE) and hash-chained like the
provision ledger's rows before their key (``access.ledger_anchor.plain_hash``): it records who released
which statistic, over which windows, for which purpose, under which clauses and with which epsilon.
It names no household: a release is about many.  Plain SQL, in the access database beside the ledger
(SQLite or PostgreSQL, ``access.db``): a release's charge and its row are written under the store's
write lock, so replicas on one PostgreSQL database spend one budget and extend one chain.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

from access.clock import now
from access.db import AccessDb, Db, open_db, write_transaction
from access.ledger_anchor import GENESIS, plain_hash
from access.privacy import DEFAULT_BUDGET_EPSILON

_SCHEMA = """
CREATE TABLE IF NOT EXISTS privacy_budgets (
    principal TEXT PRIMARY KEY, epsilon REAL NOT NULL, set_at REAL NOT NULL, set_by TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS release_ledger (
    seq INTEGER PRIMARY KEY, principal TEXT NOT NULL, purpose TEXT NOT NULL, category TEXT NOT NULL,
    fields TEXT NOT NULL, start REAL NOT NULL, stop REAL NOT NULL, every_s REAL NOT NULL,
    windows INTEGER NOT NULL, epsilon REAL NOT NULL, clause_ids TEXT NOT NULL, at REAL NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS release_ledger_by_principal ON release_ledger(principal);
"""
_COLUMNS = (
    "seq, principal, purpose, category, fields, start, stop, every_s, windows, epsilon, clause_ids, at, "
    "prev_hash, hash"
)


class BudgetExhausted(Exception):
    """The release would spend more than the principal has left."""

    def __init__(self, principal: str, asked: float, left: float, total: float) -> None:
        self.principal, self.asked, self.left, self.total = principal, asked, left, total
        super().__init__(
            f"privacy budget exhausted: this release needs epsilon {asked:g}, {principal} has {left:g} left "
            f"of {total:g}"
        )


@dataclass(frozen=True)
class Release:
    """One row of the release ledger."""

    seq: int
    principal: str
    purpose: str
    category: str
    fields: tuple[str, ...]
    start: float
    stop: float
    every_s: float
    windows: int
    epsilon: float
    clause_ids: tuple[str, ...]
    at: float
    prev_hash: str
    hash: str

    def canonical(self) -> str:
        body = {
            "at": repr(self.at),
            "category": self.category,
            "clause_ids": list(self.clause_ids),
            "epsilon": repr(self.epsilon),
            "every_s": repr(self.every_s),
            "fields": list(self.fields),
            "principal": self.principal,
            "purpose": self.purpose,
            "seq": self.seq,
            "start": repr(self.start),
            "stop": repr(self.stop),
            "windows": self.windows,
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Budget:
    principal: str
    total: float
    spent: float

    @property
    def left(self) -> float:
        return max(0.0, self.total - self.spent)


class BudgetStore:
    def __init__(self, where: AccessDb, default_epsilon: float = DEFAULT_BUDGET_EPSILON) -> None:
        self.where = where
        self.default_epsilon = default_epsilon
        self._db = open_db(where, _SCHEMA, name="budget", append_only=("release_ledger",))

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[Db]:
        with write_transaction(self._db) as db:
            yield db

    def _budget(self, db: Db, principal: str) -> Budget:
        row = db.execute("SELECT epsilon FROM privacy_budgets WHERE principal = ?", (principal,)).fetchone()
        total = self.default_epsilon if row is None else float(row[0])
        (spent,) = db.execute(
            "SELECT COALESCE(SUM(epsilon), 0) FROM release_ledger WHERE principal = ?", (principal,)
        ).fetchone()
        return Budget(principal, total, float(spent))

    def budget(self, principal: str) -> Budget:
        return self._budget(self._db, principal)

    def set_budget(self, principal: str, epsilon: float, by: str, at: float | None = None) -> Budget:
        """The principal's lifetime budget becomes ``epsilon`` (what was spent stays spent)."""
        if not epsilon >= 0:
            raise ValueError("a privacy budget is a non-negative epsilon")
        with self._tx() as db:
            db.execute(
                "INSERT INTO privacy_budgets (principal, epsilon, set_at, set_by) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (principal) DO UPDATE SET epsilon = excluded.epsilon, set_at = excluded.set_at, "
                "set_by = excluded.set_by",
                (principal, epsilon, now() if at is None else at, by),
            )
            return self._budget(db, principal)

    def spend(
        self,
        principal: str,
        purpose: str,
        category: str,
        fields: Sequence[str],
        window: tuple[float, float],
        every_s: float,
        windows: int,
        epsilon: float,
        clause_ids: Sequence[str],
        at: float | None = None,
    ) -> tuple[Release, Budget]:
        """Charge one release to the principal's budget and record it, in one transaction; raises
        :class:`BudgetExhausted` (and records nothing) when it would overdraw."""
        with self._tx() as db:
            budget = self._budget(db, principal)
            if epsilon > budget.left + 1e-12:
                raise BudgetExhausted(principal, epsilon, budget.left, budget.total)
            last = db.execute("SELECT seq, hash FROM release_ledger ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (1, GENESIS) if last is None else (int(last[0]) + 1, str(last[1]))
            draft = Release(
                seq,
                principal,
                purpose,
                category,
                tuple(fields),
                window[0],
                window[1],
                every_s,
                windows,
                epsilon,
                tuple(clause_ids),
                now() if at is None else at,
                prev,
                "",
            )
            release = replace(draft, hash=plain_hash(prev, draft.canonical()))
            db.execute(
                f"INSERT INTO release_ledger ({_COLUMNS}) VALUES ({', '.join('?' * 14)})",
                (
                    release.seq,
                    release.principal,
                    release.purpose,
                    release.category,
                    json.dumps(list(release.fields)),
                    release.start,
                    release.stop,
                    release.every_s,
                    release.windows,
                    release.epsilon,
                    json.dumps(list(release.clause_ids)),
                    release.at,
                    release.prev_hash,
                    release.hash,
                ),
            )
            return release, Budget(principal, budget.total, budget.spent + epsilon)

    def releases(self, principal: str | None = None) -> list[Release]:
        sql = f"SELECT {_COLUMNS} FROM release_ledger"
        args: tuple[str, ...] = ()
        if principal is not None:
            sql += " WHERE principal = ?"
            args = (principal,)
        return [_release(r) for r in self._db.execute(sql + " ORDER BY seq", args)]

    def verify(self) -> int | None:
        """The first release whose chain link or hash is wrong, or None when the chain holds."""
        prev = GENESIS
        for r in self.releases():
            if r.prev_hash != prev or plain_hash(prev, r.canonical()) != r.hash:
                return r.seq
            prev = r.hash
        return None


def _release(row: tuple[object, ...]) -> Release:
    seq, principal, purpose, category, fields, start, stop, every_s, windows, eps, clauses, at, prev, h = row
    return Release(
        int(str(seq)),
        str(principal),
        str(purpose),
        str(category),
        tuple(json.loads(str(fields))),
        float(str(start)),
        float(str(stop)),
        float(str(every_s)),
        int(str(windows)),
        float(str(eps)),
        tuple(json.loads(str(clauses))),
        float(str(at)),
        str(prev),
        str(h),
    )
