"""The access database: one SQLite file (the embedded default) or one PostgreSQL database (a fleet of
``hems serve`` replicas), behind one small interface so that every access store is written once.

Relationships, consent, tokens, sessions, the sign-in throttle and the ledger share one database so a
deployment has one thing to back up; each store opens its own connection through :func:`open_db`, so
they all agree on how a write transaction is taken and how other processes' writes are noticed.

How a store is written (every access store follows this; a new table ports to PostgreSQL by it):

* ``open_db(where, SCHEMA, name="<store>", counters=..., append_only=...)``.  ``where`` is the access
  database: a file path, or a ``postgresql://`` URL (:func:`is_url`).  ``SCHEMA`` is SQLite DDL, only
  ``CREATE TABLE``/``CREATE INDEX ... IF NOT EXISTS`` with the types INTEGER, REAL, TEXT and BLOB and
  ``INTEGER PRIMARY KEY AUTOINCREMENT``; on PostgreSQL it is translated (``access.db_postgres``).
  Triggers are never written by hand: ``counters`` (below) and ``append_only`` (tables refusing UPDATE
  and DELETE) make them for each database.
* Statements use ``?`` placeholders and SQL that both databases speak: ``INSERT ... ON CONFLICT DO
  NOTHING`` or ``ON CONFLICT (key) DO UPDATE SET x = excluded.x`` (not ``INSERT OR IGNORE``),
  ``db.insert_id(...)`` for a new row's id (not ``lastrowid``), ``CASE`` (not two-argument ``max`` or
  ``min``), ``ORDER BY`` a column (not ``rowid``), ``db.columns(table)`` (not ``PRAGMA table_info``).
* A write that reads first, or writes more than one statement, runs in ``write_transaction(db)``:
  ``BEGIN IMMEDIATE`` on SQLite, and on PostgreSQL a transaction holding the store's advisory lock
  (named by ``name``), so that the writers of one store queue at the start on both databases, from
  any number of processes and machines.  A single-statement write needs no transaction.
* A column added later: in ``SCHEMA`` for new databases, plus ``db.add_columns(table, {...})`` right
  after opening, for databases made before it.
* A reader that keeps what it read (the policy snapshot, remembered tokens) names its tables in
  ``counters`` and asks :class:`ChangeWatch` over ``db.change_version(counter)`` whether another
  process wrote to them (SQLite: a counter row bumped by triggers, polled; PostgreSQL: the same
  triggers also ``NOTIFY``, heard by one listening connection per process, so nothing is polled).
* The store is listed in ``access.db_migrate.STORES``, so ``hems access migrate`` copies its tables.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

URL_SCHEMES = ("postgresql://", "postgres://")
# Where the access database is: a SQLite file's path, or a PostgreSQL URL.
AccessDb = str | os.PathLike[str]
Synchronous = Literal["FULL", "NORMAL"]


class AccessDbError(ValueError):
    """The access database cannot be used as given (a password in its URL, a server that cannot be
    reached or is too old); the message says which and what to do."""


def is_url(where: AccessDb) -> bool:
    """Whether ``where`` names a PostgreSQL database rather than a SQLite file."""
    return isinstance(where, str) and where.startswith(URL_SCHEMES)


def check_location(where: AccessDb) -> AccessDb:
    """``where`` when it can name an access database; else :class:`AccessDbError` (a PostgreSQL URL with
    a password in it, or one that is not a URL), before anything is opened."""
    if is_url(where):
        from access.db_postgres import connection_settings

        connection_settings(str(where))
    return where


def describe(where: AccessDb) -> str:
    """``where`` for messages and logs: a URL as given (it never holds a password), a path resolved."""
    return str(where) if is_url(where) else str(Path(where).resolve())


class Rows(Protocol):
    """What a statement returns, on either database."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Db(Protocol):
    """One connection to the access database (:class:`SqliteDb` or ``access.db_postgres.PostgresDb``)."""

    dialect: Literal["sqlite", "postgresql"]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    def insert_id(self, sql: str, params: Sequence[Any]) -> int:
        """Run an ``INSERT`` into a table with an ``id`` column made by the database; the new id."""
        ...

    def columns(self, table: str) -> set[str]: ...

    def add_columns(self, table: str, columns: Mapping[str, str]) -> None:
        """Add the columns (name -> SQLite declaration) that ``table`` does not have yet."""
        ...

    def transaction(self) -> AbstractContextManager[Db]:
        """A write transaction (see the module docstring); committed when the block ends."""
        ...

    @property
    def in_transaction(self) -> bool: ...

    def change_version(self, counter: str) -> int:
        """Moves whenever any connection (another process too) changes the counter's tables."""
        ...

    def leads(self, job: str) -> bool:
        """Whether this connection is the one of all that runs ``job`` (a periodic job that must run
        once per deployment, such as sending alert webhooks): on PostgreSQL the holder of a session
        lock, taken over by another replica when its holder's connection ends; a SQLite file has one
        machine, whose processes decide among themselves (``hems serve`` runs such jobs in its first)."""
        ...

    def change_feed(self, counter: str) -> ChangeFeed:
        """What changed in ``counter``'s tables, by key where the database can say (:class:`ChangeFeed`)."""
        ...

    @property
    def changes_pushed(self) -> bool:
        """True when :meth:`change_version` costs no I/O (changes are pushed to this process), so a
        :class:`ChangeWatch` may read it on every request instead of every ``poll_seconds``."""
        ...

    def close(self) -> None: ...


def open_db(
    where: AccessDb,
    schema: str,
    *,
    name: str,
    counters: Mapping[str, Sequence[str]] | None = None,
    append_only: Sequence[str] = (),
    synchronous: Synchronous = "FULL",
    foreign_keys: bool = False,
    keys: Mapping[str, tuple[str, str]] | None = None,
) -> Db:
    """Open the access database (creating what ``schema`` describes), SQLite or PostgreSQL by ``where``.

    ``name``: the store's name, which names its write lock and its schema on PostgreSQL.
    ``counters``: counter name -> tables whose every change moves it (``Db.change_version``).
    ``append_only``: tables that refuse UPDATE and DELETE (the provision ledger).
    ``keys``: table -> (kind, column): a change to the table is announced with the values of ``column``
    among the rows it changed, as keys of ``kind`` (``ChangeFeed``; PostgreSQL only, where changes are
    pushed: a SQLite reader learns only that the counter moved).
    ``synchronous`` FULL survives a power cut; NORMAL never corrupts on a crash but may lose the last
    commits on a power cut, acceptable for configuration an operator can re-enter (relationships,
    consent) and for counts that only hand back a few sign-in attempts (SQLite's ``synchronous``,
    PostgreSQL's ``synchronous_commit``)."""
    if is_url(where):
        from access.db_postgres import PostgresDb

        return PostgresDb.open(
            str(where),
            schema,
            name=name,
            counters=counters or {},
            append_only=append_only,
            synchronous=synchronous,
            keys=keys or {},
        )
    return SqliteDb.open(
        Path(where),
        schema,
        counters=counters or {},
        append_only=append_only,
        synchronous=synchronous,
        foreign_keys=foreign_keys,
    )


def write_transaction(db: Db) -> AbstractContextManager[Db]:
    """The store's write transaction: writers queue at its start instead of failing at commit."""
    return db.transaction()


class ChangeWatch:
    """Whether ``read()`` (change versions) moved, asking at most every ``every_s`` seconds: how a
    long-running reader notices another process's writes without I/O on its fast path.  With
    ``pushed`` (``Db.changes_pushed``) reading costs nothing, so every call reads."""

    def __init__(self, read: Callable[[], object], pushed: bool = False) -> None:
        self._read = read
        self._pushed = pushed
        self._seen = read()
        self._polled = time.monotonic()

    def changed(self, every_s: float) -> bool:
        if not self._pushed:
            t = time.monotonic()
            if t - self._polled < every_s:
                return False
            self._polled = t
        seen, self._seen = self._seen, self._read()
        return self._seen != seen


class Note(NamedTuple):
    """One change a :class:`ChangeFeed` reports: of ``counter``'s tables, the rows of ``keys`` (of
    ``kind``, e.g. "household" or "principal") changed; ``kind`` "" when it is not known which rows (a
    reader reads the counter's tables again in full)."""

    counter: str
    kind: str
    keys: tuple[str, ...]


class ChangeFeed(Protocol):
    """The changes to one counter's tables since the last :meth:`read`, by key where the database says
    which rows (PostgreSQL's announcements, ``access.db_postgres``): how the policy snapshot rebuilds
    only the households a suspension or a link touched instead of every household of a fleet."""

    def read(self, every_s: float) -> list[Note]:
        """The changes since the last read (empty: none), looked for at most every ``every_s`` seconds
        where that costs I/O (a SQLite file's counter)."""
        ...

    def catch_up(self) -> bool:
        """Wait until the feed has heard of every write this process committed, so the next
        :meth:`read` reports them (True), or say that it cannot (False: the reader must treat its own
        writes as changes of unknown rows)."""
        ...


class PolledFeed:
    """A counter read at most every ``every_s`` seconds: a move is a change of unknown rows."""

    def __init__(self, db: Db, counter: str) -> None:
        self._counter = counter
        self._watch = ChangeWatch(lambda: db.change_version(counter))

    def read(self, every_s: float) -> list[Note]:
        return [Note(self._counter, "", ())] if self._watch.changed(every_s) else []

    def catch_up(self) -> bool:
        return False


# -- SQLite -----------------------------------------------------------------------------------------
BUSY_TIMEOUT_S = 30.0


def sqlite_change_counters(counters: Mapping[str, Sequence[str]]) -> str:
    """Schema for counters that every insert, update or delete on their tables bumps, by any connection.

    Long-running readers (the policy snapshots, remembered tokens) poll them to learn that *their*
    tables changed.  ``PRAGMA data_version`` cannot tell them: it moves on any commit to the file, and
    the ledger commits to this file for every third-party response."""
    if not counters:
        return ""
    sql = ["CREATE TABLE IF NOT EXISTS change_counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL);"]
    for name, tables in counters.items():
        sql.append(f"INSERT OR IGNORE INTO change_counters VALUES ('{name}', 0);")
        for table in tables:
            for op in ("INSERT", "UPDATE", "DELETE"):
                sql.append(
                    f"CREATE TRIGGER IF NOT EXISTS {table}_{op.lower()}_counted AFTER {op} ON {table} "
                    f"BEGIN UPDATE change_counters SET n = n + 1 WHERE name = '{name}'; END;"
                )
    return "\n".join(sql)


def append_only_message(table: str) -> str:
    return f"{table.replace('_', ' ')} is append-only"


def sqlite_append_only(tables: Sequence[str]) -> str:
    return "\n".join(
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{append_only_message(table)}'); END;"
        for table in tables
        for op in ("UPDATE", "DELETE")
    )


def begin_immediate(db: sqlite3.Connection, timeout_s: float = BUSY_TIMEOUT_S) -> None:
    """``BEGIN IMMEDIATE``, waiting for another writer (another ``hems serve`` worker, the CLI) in
    steps of at most 2 ms.

    SQLite's own busy handler sleeps 1, 2, 5, 10, 20, 25, 50 then 100 ms between tries, so a
    worker's ledger flush that found another worker's transaction open waited tens of milliseconds
    after the lock was free: the slowest responses under load were exactly those."""
    (saved,) = db.execute("PRAGMA busy_timeout").fetchone()
    db.execute("PRAGMA busy_timeout = 0")
    try:
        deadline = time.monotonic() + timeout_s
        pause = 0.0002
        while True:
            try:
                db.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.002)
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(saved)}")


class SqliteDb:
    """The access database as one SQLite file (WAL, autocommit, explicit ``BEGIN IMMEDIATE``)."""

    dialect: Literal["sqlite", "postgresql"] = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open(
        cls,
        path: Path,
        schema: str,
        *,
        counters: Mapping[str, Sequence[str]],
        append_only: Sequence[str],
        synchronous: Synchronous,
        foreign_keys: bool,
    ) -> SqliteDb:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'NORMAL' if synchronous == 'NORMAL' else 'FULL'}")
        if foreign_keys:
            conn.execute("PRAGMA foreign_keys=ON")
        conn.executescript(
            "\n".join([schema, sqlite_append_only(append_only), sqlite_change_counters(counters)])
        )
        return cls(conn)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def insert_id(self, sql: str, params: Sequence[Any]) -> int:
        # fetchall: a RETURNING statement left unfinished would keep its implicit transaction open.
        return int(self.conn.execute(sql + " RETURNING id", params).fetchall()[0][0])

    def columns(self, table: str) -> set[str]:
        return {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}

    def add_columns(self, table: str, columns: Mapping[str, str]) -> None:
        have = self.columns(table)
        for column, decl in columns.items():
            if column not in have:
                self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")

    @contextmanager
    def transaction(self) -> Iterator[SqliteDb]:
        """BEGIN IMMEDIATE so concurrent writers queue at the start instead of failing at commit."""
        begin_immediate(self.conn)
        try:
            yield self
            self.conn.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself failed: a transaction left open would refuse every later BEGIN.
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def change_version(self, counter: str) -> int:
        """The counter made by ``sqlite_change_counters`` (one indexed read)."""
        row = self.conn.execute("SELECT n FROM change_counters WHERE name = ?", (counter,)).fetchone()
        return int(row[0]) if row is not None else 0

    def change_feed(self, counter: str) -> ChangeFeed:
        return PolledFeed(self, counter)

    @property
    def changes_pushed(self) -> bool:
        return False

    def leads(self, job: str) -> bool:
        return True

    def close(self) -> None:
        self.conn.close()
