"""The person's own say over their data (SPS 2(6), Sobu Gas 7, Kaluza handling 4, XOOM 9, ENEX 5).

A suspension is recorded with one company: the one whose terms the person invokes (SPS by default,
the operator of this monitoring service).  Two scopes, as in SPS 2(6): ``provision`` stops provision
to third parties under that company's suspendable clauses; ``use`` also stops the company's own staff.
Either can target one recipient, one category, or everything.  A company accepts only the scopes its
terms provide (``access.compiler.suspension_scopes``): ENEX's, say, make its joint use (2) suspendable
but not the supply operations of joint use (1).  The homeowner's own access is never suspended: it is
their right of disclosure.  How a suspension cuts the periods a decision serves is said in
``access.compiler``'s docstring and applied by ``access.decision``.

Erasure requests are recorded here and carried out by an operator (``hems erasure complete``, which
deletes from the series store through the pipeline): nothing completes silently.  Each category gets
an outcome up front, because some records must be kept by law (the seeds mark such clauses
``legal_hold``) and the person is owed that answer when they ask; a hold applies only when the household
is or was under contract with the company whose terms hold it (``access.erasure``).  A request goes
``recorded`` -> ``erasing`` (the operator began: from then on decisions refuse the erased data, what
was kept and why is recorded) -> ``done`` (what each store removed is recorded).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from access.clock import now, to_epoch
from access.compiler import suspension_scopes
from access.db import AccessDb, ChangeFeed, Db, open_db, write_transaction
from access.periods import ALWAYS, Periods, contains, normalize
from access.world import SCOPES, Erasure, Suspension
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
    categories TEXT NOT NULL, outcome TEXT NOT NULL, status TEXT NOT NULL, completed_at REAL,
    requested_by TEXT, erased TEXT, periods TEXT, kept TEXT, removed TEXT, operator TEXT);
"""
_COUNTERS = {"consent": ("suspensions", "erasure_requests")}
# Their changes are announced by household (``access.db``'s keys): a snapshot re-reads only those.
_CHANGE_KEYS = {"suspensions": ("household", "household"), "erasure_requests": ("household", "household")}
_CHUNK = 500  # ids per IN (...) list
# Columns added to erasure_requests after its first version (an older file gets them when opened): who
# asked, the categories erased and the data periods, what was kept and why, what each store removed,
# who carried it out.
# ``partly``: category -> the periods erased of a category a legal hold keeps over the rest (JSON).
_ERASURE_COLUMNS = ("requested_by", "erased", "periods", "kept", "removed", "operator", "partly")
_ERASURE_SELECT = (
    "SELECT id, household, requested_at, outcome, status, completed_at, requested_by, erased, periods, kept, "
    "removed, operator, partly FROM erasure_requests"
)
RECORDED, ERASING, DONE = "recorded", "erasing", "done"


class ConsentError(ValueError):
    """A suspension or erasure request that cannot be recorded as asked."""


@dataclass(frozen=True)
class ErasureRequest:
    id: int
    household: str
    requested_at: float
    outcome: dict[str, str]  # category -> "erase" or "keep: <clause id>" (as answered when asked)
    status: str  # RECORDED (to be carried out), ERASING (begun: decisions refuse it), DONE
    completed_at: float | None = None  # when the operator began erasing (decisions refuse from then)
    requested_by: str | None = None  # the homeowner who asked (None: recorded before this was kept)
    erased: tuple[str, ...] = ()  # the categories erased
    periods: Periods = ()  # the data periods erased
    kept: dict[str, str] | None = None  # category -> why it was kept
    removed: dict[str, str] | None = None  # category -> what the stores removed (or why nothing)
    operator: str | None = None  # who carried it out
    partly: dict[str, Periods] | None = None  # category -> the periods erased where a hold keeps the rest

    def facts(self) -> tuple[Erasure, ...]:
        """The erasure as facts decisions subtract, once begun: the categories erased over ``periods``,
        and each category a hold keeps partly over the part erased of it."""
        if self.status == RECORDED or self.completed_at is None:
            return ()
        at = self.completed_at
        whole = Erasure(self.id, self.household, frozenset(self.erased), self.periods, at)
        parts = [
            Erasure(self.id, self.household, frozenset({c}), p, at) for c, p in (self.partly or {}).items()
        ]
        return (whole, *parts)


def legal_holds(seeds: Seeds, companies: Iterable[str] | None = None) -> dict[str, list[str]]:
    """category -> ids of clauses saying it must be kept (retention / legal hold): of every company, or
    only of ``companies`` (those a household is or was under contract with: a company's terms hold its
    own customers' records, not everybody's)."""
    only = None if companies is None else set(companies)
    holds: dict[str, list[str]] = {}
    for clause in seeds.clauses:
        if clause.conditions.legal_hold and (only is None or clause.document in only):
            for category in clause.data_categories:
                holds.setdefault(category, []).append(clause.id)
    return holds


def _period_json(periods: Periods) -> str:
    return json.dumps([[a, b if b != float("inf") else None] for a, b in periods])


def _periods_of(text: str | None) -> Periods:
    if not text:
        return ()
    return normalize((float(a), float("inf") if b is None else float(b)) for a, b in json.loads(text))


class ConsentStore:
    def __init__(self, where: AccessDb, seeds: Seeds | None = None) -> None:
        self.where = where
        self._db = open_db(
            where, _SCHEMA, name="consent", counters=_COUNTERS, keys=_CHANGE_KEYS, synchronous="NORMAL"
        )
        # Schema 1 had no company: every suspension was made under SPS 2(6).
        self._db.add_columns("suspensions", {"company": "TEXT NOT NULL DEFAULT 'sps'"})
        # A request recorded before erasure was carried out has none of the later columns.
        self._db.add_columns("erasure_requests", dict.fromkeys(_ERASURE_COLUMNS, "TEXT"))
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
        """Changes when any connection (another process too) changes these tables (``Db.change_version``)."""
        return self._db.change_version("consent")

    @property
    def changes_pushed(self) -> bool:
        return self._db.changes_pushed

    def change_feed(self) -> ChangeFeed:
        """Changes to suspensions and erasures, by household where announced."""
        return self._db.change_feed("consent")

    def facts_of(self, households: Collection[str]) -> tuple[list[Suspension], list[Erasure]]:
        """The suspensions and completed erasures of these households only (a snapshot's re-read)."""
        ids = sorted(households)
        suspensions: list[Suspension] = []
        erasures: list[Erasure] = []
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            suspensions += [
                Suspension(*r)
                for r in self._db.execute(
                    f"SELECT {_COLUMNS} FROM suspensions WHERE household IN ({marks})", chunk
                )
            ]
            rows = self._db.execute(
                f"{_ERASURE_SELECT} WHERE status IN (?, ?) AND household IN ({marks})",
                (ERASING, DONE, *chunk),
            )
            erasures += [f for r in rows for f in _erasure_row(r).facts()]
        return sorted(suspensions, key=lambda s: s.id), sorted(erasures, key=lambda e: e.id)

    @contextmanager
    def _tx(self) -> Iterator[Db]:
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
            sid = db.insert_id(
                "INSERT INTO suspensions (household, scope, recipient, category, requested_at, company) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (household, scope, recipient, category, t, company),
            )
        return self.suspension(sid)

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
        requested_within: Periods = ALWAYS,
    ) -> None:
        """What the homeowner's switches and the consent API do: suspend, unless a suspension of
        exactly this scope, recipient, category and company is already active; or lift every active
        one of exactly that.  Only suspensions requested within ``requested_within`` count (the
        caller's own time as the homeowner): a suspension is the request of the person who made it
        (SPS 2(6)), so a later occupant never lifts a former one's, which keeps that person's data from
        being provided again."""
        t = now() if at is None else to_epoch(at)
        matching = [
            s
            for s in self.suspensions(household)
            if s.active(t)
            and contains(requested_within, s.requested_at)
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
        *,
        requested_by: str | None = None,
        companies: Iterable[str] = (),
    ) -> ErasureRequest:
        """Record the person's request, with the answer owed now: per category, erased or kept and why.
        ``companies``: those the household is or was under contract with (their holds apply)."""
        cats = list(CATEGORIES if categories is None else categories)
        unknown = sorted(set(cats) - set(CATEGORIES))
        if unknown:
            raise ConsentError(f"erasure: unknown categories {unknown}")
        holds = legal_holds(seeds, companies)
        outcome = {c: (f"keep: {', '.join(holds[c])}" if c in holds else "erase") for c in cats}
        t = now() if at is None else to_epoch(at)
        with self._tx() as db:
            rid = db.insert_id(
                "INSERT INTO erasure_requests (household, requested_at, categories, outcome, status, "
                "requested_by) VALUES (?, ?, ?, ?, ?, ?)",
                (household, t, json.dumps(cats), json.dumps(outcome), RECORDED, requested_by),
            )
        return self.erasure(rid)

    def categories_asked(self, request_id: int) -> list[str]:
        row = self._db.execute(
            "SELECT categories FROM erasure_requests WHERE id = ?", (request_id,)
        ).fetchone()
        if row is None:
            raise ConsentError(f"unknown erasure request {request_id}")
        return list(json.loads(row[0]))

    def begin_erasure(
        self,
        request_id: int,
        *,
        erased: Iterable[str],
        periods: Periods,
        kept: dict[str, str],
        operator: str,
        at: datetime | float | str | None = None,
        partly: Mapping[str, Periods] | None = None,
    ) -> ErasureRequest:
        """The operator begins: from ``at`` on, decisions refuse ``erased`` over ``periods`` and each
        category of ``partly`` over its periods; what is kept is recorded with its reason.  A request
        begun before (interrupted) keeps its first record."""
        t = now() if at is None else to_epoch(at)
        with self._tx() as db:
            cur = db.execute(
                "UPDATE erasure_requests SET status = ?, completed_at = ?, erased = ?, periods = ?, "
                "kept = ?, operator = ?, partly = ? WHERE id = ? AND status = ?",
                (
                    ERASING,
                    t,
                    json.dumps(sorted(set(erased))),
                    _period_json(periods),
                    json.dumps(kept, sort_keys=True),
                    operator,
                    json.dumps({c: _period_json(p) for c, p in sorted((partly or {}).items())}),
                    request_id,
                    RECORDED,
                ),
            )
            if cur.rowcount == 0:
                status = db.execute(
                    "SELECT status FROM erasure_requests WHERE id = ?", (request_id,)
                ).fetchone()
                if status is None:
                    raise ConsentError(f"unknown erasure request {request_id}")
                if status[0] != ERASING:
                    raise ConsentError(f"erasure request {request_id} is {status[0]}, not pending")
        return self.erasure(request_id)

    def reopen_erasure(self, request_id: int) -> None:
        """A request marked done before erasure was carried out (nothing was erased then) is pending
        again, so the operator can carry it out."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE erasure_requests SET status = ?, completed_at = NULL WHERE id = ? AND status = ? "
                "AND removed IS NULL",
                (RECORDED, request_id, DONE),
            )
            if cur.rowcount == 0:
                raise ConsentError(
                    f"erasure request {request_id} is not a request marked done without erasing"
                )

    def finish_erasure(self, request_id: int, removed: dict[str, str]) -> ErasureRequest:
        """Every store step succeeded: record what each removed."""
        with self._tx() as db:
            cur = db.execute(
                "UPDATE erasure_requests SET status = ?, removed = ? WHERE id = ? AND status = ?",
                (DONE, json.dumps(removed, sort_keys=True), request_id, ERASING),
            )
            if cur.rowcount == 0:
                raise ConsentError(f"erasure request {request_id} was not begun")
        return self.erasure(request_id)

    def erasure(self, request_id: int) -> ErasureRequest:
        row = self._db.execute(f"{_ERASURE_SELECT} WHERE id = ?", (request_id,)).fetchone()
        if row is None:
            raise ConsentError(f"unknown erasure request {request_id}")
        return _erasure_row(row)

    def erasures(self, household: str | None = None, status: str | None = None) -> list[ErasureRequest]:
        """Requests (of one household, in one status), oldest first."""
        where, args = [], []
        if household is not None:
            where.append("household = ?")
            args.append(household)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        sql = _ERASURE_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id"
        return [_erasure_row(r) for r in self._db.execute(sql, args)]

    def completed_erasures(self) -> list[Erasure]:
        """The erasures decisions subtract: every request an operator has begun or finished."""
        rows = self._db.execute(f"{_ERASURE_SELECT} WHERE status IN (?, ?) ORDER BY id", (ERASING, DONE))
        return [f for r in rows for f in _erasure_row(r).facts()]


def _erasure_row(row: tuple[object, ...]) -> ErasureRequest:
    rid, household, requested_at, outcome, status, completed, by, erased, periods, kept, removed, operator = (
        row[:12]
    )
    partly = row[12] if len(row) > 12 else None
    return ErasureRequest(
        int(str(rid)),
        str(household),
        float(str(requested_at)),
        json.loads(str(outcome)),
        str(status),
        None if completed is None else float(str(completed)),
        None if by is None else str(by),
        tuple(json.loads(str(erased))) if erased else (),
        _periods_of(None if periods is None else str(periods)),
        json.loads(str(kept)) if kept else None,
        json.loads(str(removed)) if removed else None,
        None if operator is None else str(operator),
        {c: _periods_of(p) for c, p in json.loads(str(partly)).items()} if partly else None,
    )
