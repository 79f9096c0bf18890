"""Privacy budgets, and the release ledger that spends them.

Every statistics release (``access.privacy``) is charged its epsilon against a budget in one write
transaction with its ledger row: the row *is* the spending, so the budget left is the budget less the
sum of its rows, and a release that would overdraw it is refused before anything is computed from its
noise.  A budget is for its holder's whole life: a budget that renewed would let a patient holder learn
everything in the end.  An operator may raise it (``hems principals budget``); each change is recorded
with who made it, so the bound that holds is always visible.

The holder is the *company* for a company's staff (an analyst, an operator: ``budget_holder``), so
every principal a company has spends one budget: otherwise a company could multiply its budget, and
what its releases together reveal, by asking for more analyst accounts.  A principal of no company
holds its own.  Rows written before budgets were held by companies have no holder: their principal is.

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
from access.world import Principal

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
# Added with company budgets: whose budget a release spent (NULL on older rows: their principal's).
_ADDED = {"holder": "TEXT"}
_HOLDER_INDEX = "CREATE INDEX IF NOT EXISTS release_ledger_by_holder ON release_ledger(holder)"
_HOLDER = "COALESCE(holder, principal)"
COMPANY_PREFIX = "company:"
_COLUMNS = (
    "seq, principal, purpose, category, fields, start, stop, every_s, windows, epsilon, clause_ids, at, "
    "prev_hash, hash, holder"
)


def budget_holder(principal: Principal) -> str:
    """Whose budget ``principal``'s releases spend: its company's when it is a company's staff."""
    return principal.id if principal.company is None else COMPANY_PREFIX + principal.company


def describe_holder(holder: str) -> str:
    if holder.startswith(COMPANY_PREFIX):
        return f"company {holder.removeprefix(COMPANY_PREFIX)} (one budget for all its staff)"
    return holder


class BudgetExhausted(Exception):
    """The release would spend more than its budget's holder has left."""

    def __init__(self, holder: str, asked: float, left: float, total: float) -> None:
        self.holder, self.asked, self.left, self.total = holder, asked, left, total
        super().__init__(
            f"privacy budget exhausted: this release needs epsilon {asked:g}, {describe_holder(holder)} has "
            f"{left:g} left of {total:g}"
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
    holder: str = ""  # whose budget it spent; "" (older rows): the principal's

    @property
    def budget_holder(self) -> str:
        return self.holder or self.principal

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
        if self.holder and self.holder != self.principal:  # older rows hash as they always did
            body["holder"] = self.holder
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Budget:
    holder: str  # a principal id, or ``company:<id>`` (``budget_holder``)
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
        self._db.add_columns("release_ledger", _ADDED)
        self._db.execute(_HOLDER_INDEX)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[Db]:
        with write_transaction(self._db) as db:
            yield db

    def _budget(self, db: Db, holder: str) -> Budget:
        # privacy_budgets.principal names the holder (a principal, or ``company:<id>``).
        row = db.execute("SELECT epsilon FROM privacy_budgets WHERE principal = ?", (holder,)).fetchone()
        total = self.default_epsilon if row is None else float(row[0])
        (spent,) = db.execute(
            f"SELECT COALESCE(SUM(epsilon), 0) FROM release_ledger WHERE {_HOLDER} = ?", (holder,)
        ).fetchone()
        return Budget(holder, total, float(spent))

    def budget(self, holder: str) -> Budget:
        return self._budget(self._db, holder)

    def set_budget(self, holder: str, epsilon: float, by: str, at: float | None = None) -> Budget:
        """The holder's lifetime budget becomes ``epsilon`` (what was spent stays spent)."""
        if not epsilon >= 0:
            raise ValueError("a privacy budget is a non-negative epsilon")
        with self._tx() as db:
            db.execute(
                "INSERT INTO privacy_budgets (principal, epsilon, set_at, set_by) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (principal) DO UPDATE SET epsilon = excluded.epsilon, set_at = excluded.set_at, "
                "set_by = excluded.set_by",
                (holder, epsilon, now() if at is None else at, by),
            )
            return self._budget(db, holder)

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
        holder: str | None = None,
    ) -> tuple[Release, Budget]:
        """Charge one release by ``principal`` to ``holder``'s budget (``budget_holder``; the principal's
        own by default) and record it, in one transaction; raises :class:`BudgetExhausted` (and records
        nothing) when it would overdraw."""
        holder = principal if holder is None else holder
        with self._tx() as db:
            budget = self._budget(db, holder)
            if epsilon > budget.left + 1e-12:
                raise BudgetExhausted(holder, epsilon, budget.left, budget.total)
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
                holder,
            )
            release = replace(draft, hash=plain_hash(prev, draft.canonical()))
            db.execute(
                f"INSERT INTO release_ledger ({_COLUMNS}) VALUES ({', '.join('?' * 15)})",
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
                    release.holder,
                ),
            )
            return release, Budget(holder, budget.total, budget.spent + epsilon)

    def releases(self, principal: str | None = None, holder: str | None = None) -> list[Release]:
        """Every release, or those made by ``principal``, or charged to ``holder``."""
        sql = f"SELECT {_COLUMNS} FROM release_ledger"
        args: tuple[str, ...] = ()
        if principal is not None:
            sql += " WHERE principal = ?"
            args = (principal,)
        elif holder is not None:
            sql += f" WHERE {_HOLDER} = ?"
            args = (holder,)
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
    (
        seq,
        principal,
        purpose,
        category,
        fields,
        start,
        stop,
        every_s,
        windows,
        eps,
        clauses,
        at,
        prev,
        h,
        holder,
    ) = row
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
        "" if holder is None else str(holder),
    )
