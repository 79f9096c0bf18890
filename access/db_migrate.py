"""``hems access migrate --to postgresql://...``: move an access database from its SQLite file into
PostgreSQL, for a deployment that outgrew one machine.

Every store is opened on both sides first (:data:`STORES`): the file is brought to the current schema
by the stores' own migrations, and the target gets every table.  A target that already holds data is
refused (the command fills an empty database; it never merges).  Then every table of the file is
copied in one PostgreSQL transaction, ids kept (identity counters moved past them), and the ledger is
verified on the target with the same server key: its keyed chain must verify there exactly as in the
file, or nothing is committed.

Run it with the services stopped (or at least nothing writing to the file): rows written to the file
after the copy began are not copied.  Afterwards give every replica the same key file
(``HEMS_KEY_FILE``) and the URL (``--db`` or ``HEMS_ACCESS_DB``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from graphlib import TopologicalSorter
from pathlib import Path
from typing import Protocol

from access.alerts import WebhookStore
from access.auth import WebAuth
from access.budget import BudgetStore
from access.consent import ConsentStore
from access.db import AccessDb, AccessDbError, Db, is_url, open_db
from access.gateways import GatewayCredentials
from access.keys import key_file_for
from access.ledger import Ledger
from access.relationships import RelationshipStore
from access.signin_throttle import SignInThrottle
from access.tokens import TokenStore


class _Closable(Protocol):
    def close(self) -> None: ...


# Every store of the access database: opening one creates (or migrates) its tables.  A new store is
# added here, or ``hems access migrate`` refuses a file holding its tables (see ``copy``).
STORES: tuple[Callable[[AccessDb], _Closable], ...] = (
    RelationshipStore,
    ConsentStore,
    TokenStore,
    Ledger,
    WebAuth,
    SignInThrottle,
    WebhookStore,
    BudgetStore,
    GatewayCredentials,
)
# Kept by each database for itself: the counters readers watch, the stores' schema versions.
_OWN_TABLES = frozenset({"change_counters", "schema_versions", "hems_schema"})
_BATCH = 1000


@dataclass(frozen=True)
class Migrated:
    rows: dict[str, int]  # table -> rows copied
    ledger_records: int
    ledger_head: str


def _open_all(where: AccessDb) -> None:
    for store in STORES:
        store(where).close()


def _source_tables(conn: sqlite3.Connection) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
        if r[0] not in _OWN_TABLES
    ]


def _target_tables(db: Db) -> set[str]:
    return {
        r[0]
        for r in db.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
        )
    }


def _parents_first(db: Db, tables: list[str]) -> list[str]:
    """``tables`` ordered so that a table comes after those its foreign keys refer to."""
    refers: dict[str, set[str]] = {t: set() for t in tables}
    for child, parent in db.execute(
        "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
        "WHERE contype = 'f' AND connamespace = current_schema()::regnamespace"
    ):
        if child in refers and parent != child:
            refers[child].add(parent)
    return [t for t in TopologicalSorter(refers).static_order() if t in refers]


def _identity_columns(db: Db) -> list[tuple[str, str]]:
    return [
        (r[0], r[1])
        for r in db.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND is_identity = 'YES'"
        )
    ]


def migrate(source: Path, target: str, key_file: Path | None = None) -> Migrated:
    """Copy the access database in the SQLite file ``source`` into the empty PostgreSQL ``target``."""
    if not is_url(target):
        raise AccessDbError(f"--to {target!r}: a postgresql:// URL")
    if not source.exists():
        raise AccessDbError(f"no access database at {source}")
    key = key_file if key_file is not None else key_file_for(source)
    source_ledger = Ledger(source, key_file=key)
    try:
        before = source_ledger.verify()
        head = source_ledger.head()
    finally:
        source_ledger.close()
    if not before.ok:
        raise AccessDbError(
            f"the ledger in {source} does not verify ({before.problem}); migrating would carry that over: "
            "see 'hems ledger verify'"
        )
    _open_all(source)
    _open_all(target)
    src = sqlite3.connect(source)
    dst = open_db(target, "", name="migrate")
    try:
        tables = _source_tables(src)
        missing = sorted(set(tables) - _target_tables(dst))
        if missing:
            raise AccessDbError(
                f"tables {', '.join(missing)} of {source} have no store that makes them on PostgreSQL: "
                "add their store to access.db_migrate.STORES"
            )
        held = [t for t in tables if dst.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() is not None]
        if held:
            raise AccessDbError(
                f"{target} already holds data (in {', '.join(held)}): migrate into an empty database"
            )
        copied: dict[str, int] = {}
        with dst.transaction():
            for table in _parents_first(dst, tables):
                copied[table] = _copy_table(src, dst, table)
            for table, column in _identity_columns(dst):
                dst.execute(
                    f"SELECT setval(pg_get_serial_sequence(?, ?), max({column})) FROM {table} "
                    f"HAVING max({column}) IS NOT NULL",
                    (table, column),
                )
            # Read through the migration's own transaction (nothing is committed yet).
            after = Ledger(target, key_file=key, db=dst).verify()
            if not after.ok or after.rows != before.rows:
                raise AccessDbError(
                    f"the copied ledger does not verify ({after.problem}); nothing was copied"
                )
    finally:
        src.close()
        dst.close()
    return Migrated(copied, before.rows, head)


# PostgreSQL's limit of parameters in one statement is 65,535.
_MAX_PARAMETERS = 60_000


def _copy_table(src: sqlite3.Connection, dst: Db, table: str) -> int:
    """The rows of ``table``, many to an INSERT: the change-counting triggers run once per statement
    (a row at a time, they made copying 100,000 homes take a quarter of an hour)."""
    columns = [r[1] for r in src.execute(f"PRAGMA table_info({table})")]
    names = ", ".join(columns)
    row = f"({', '.join('?' * len(columns))})"
    per_statement = max(1, min(_BATCH, _MAX_PARAMETERS // len(columns)))
    cursor = src.execute(f"SELECT {names} FROM {table}")
    n = 0
    while batch := cursor.fetchmany(per_statement):
        insert = f"INSERT INTO {table} ({names}) VALUES {', '.join([row] * len(batch))}"
        dst.execute(insert, [value for r in batch for value in r])
        n += len(batch)
    return n
