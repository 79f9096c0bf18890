"""An insider's hand on the access database: plain SQL through the database's own driver (sqlite3, or
psycopg for PostgreSQL), past our code, with the ledger's append-only triggers dropped when asked.
The tamper tests use it on both databases: what they prove is what the chain catches, whoever edits."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from access.db import AccessDb, is_url
from access.db_postgres import pg_sql

# What refusing an UPDATE or DELETE raises, on either database.
DATABASE_ERRORS: tuple[type[Exception], ...] = (sqlite3.DatabaseError,)
try:
    import psycopg

    DATABASE_ERRORS = (sqlite3.DatabaseError, psycopg.Error)
except ImportError:  # pragma: no cover - psycopg is a dependency
    pass


class Raw:
    """One transaction on a raw connection: ``?`` placeholders on both databases."""

    def __init__(self, where: AccessDb, conn: Any) -> None:
        self.postgres = is_url(where)
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if self.postgres:
            return self.conn.execute(pg_sql(sql), tuple(params))
        return self.conn.execute(sql, params)

    def drop_append_only(self) -> None:
        """What an insider does first: remove the triggers that refuse UPDATE and DELETE."""
        if self.postgres:
            self.execute("DROP TRIGGER IF EXISTS provision_ledger_append_only ON provision_ledger")
        else:
            self.execute("DROP TRIGGER IF EXISTS provision_ledger_no_update")
            self.execute("DROP TRIGGER IF EXISTS provision_ledger_no_delete")


@contextmanager
def raw(where: AccessDb) -> Iterator[Raw]:
    """Committed when the block ends, rolled back if it raises."""
    if is_url(where):
        import psycopg

        with psycopg.connect(str(where)) as conn:  # commits on a clean exit, rolls back on an error
            yield Raw(where, conn)
        return
    conn = sqlite3.connect(Path(where))
    try:
        yield Raw(where, conn)
        conn.commit()
    finally:
        conn.close()


def tamper(where: AccessDb, *sql: str) -> None:
    """Edit the ledger the way an insider would: triggers dropped first."""
    with raw(where) as db:
        db.drop_append_only()
        for statement in sql:
            db.execute(statement)


def rows(where: AccessDb, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with raw(where) as db:
        return [tuple(r) for r in db.execute(sql, params).fetchall()]
