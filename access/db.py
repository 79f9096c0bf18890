"""One way to open the access database file: WAL, autocommit, explicit transactions.

Relationships, consent, tokens, sessions and the ledger share one SQLite file so a deployment has one
thing to back up; each opens its own connection through here so they all agree on the journal mode
and on how a write transaction is taken.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def open_db(
    path: Path, schema: str, *, synchronous: str = "FULL", foreign_keys: bool = False
) -> sqlite3.Connection:
    """Open (creating the directory and tables) with WAL.

    ``synchronous`` FULL is SQLite's default and what the ledger keeps; NORMAL still never corrupts on a
    crash but may lose the last commits on a power cut, acceptable for configuration an operator can
    re-enter (relationships, consent).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={'NORMAL' if synchronous == 'NORMAL' else 'FULL'}")
    if foreign_keys:
        db.execute("PRAGMA foreign_keys=ON")
    db.executescript(schema)
    return db


def change_counter(name: str, tables: tuple[str, ...]) -> str:
    """Schema for a counter that every insert, update or delete on ``tables`` bumps, by any connection.

    Long-running readers (the policy snapshots, remembered tokens) poll it to learn that *their*
    tables changed.  ``PRAGMA data_version`` cannot tell them: it moves on any commit to the file, and
    the ledger commits to this file for every third-party response."""
    sql = [
        "CREATE TABLE IF NOT EXISTS change_counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL);",
        f"INSERT OR IGNORE INTO change_counters VALUES ('{name}', 0);",
    ]
    for table in tables:
        for op in ("INSERT", "UPDATE", "DELETE"):
            sql.append(
                f"CREATE TRIGGER IF NOT EXISTS {table}_{op.lower()}_counted AFTER {op} ON {table} "
                f"BEGIN UPDATE change_counters SET n = n + 1 WHERE name = '{name}'; END;"
            )
    return "\n".join(sql)


def read_change_counter(db: sqlite3.Connection, name: str) -> int:
    """The counter made by ``change_counter`` (one indexed read)."""
    row = db.execute("SELECT n FROM change_counters WHERE name = ?", (name,)).fetchone()
    return int(row[0]) if row is not None else 0


class ChangeWatch:
    """Whether ``read()`` (change counters) moved, asking at most every ``every_s`` seconds: how a
    long-running reader notices another process's writes without I/O on its fast path."""

    def __init__(self, read: Callable[[], object]) -> None:
        self._read = read
        self._seen = read()
        self._polled = time.monotonic()

    def changed(self, every_s: float) -> bool:
        t = time.monotonic()
        if t - self._polled < every_s:
            return False
        self._polled = t
        seen, self._seen = self._seen, self._read()
        return self._seen != seen


BUSY_TIMEOUT_S = 30.0


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


@contextmanager
def write_transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE so concurrent writers queue at the start instead of failing at commit."""
    begin_immediate(db)
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        # Also when COMMIT itself failed: a transaction left open would refuse every later BEGIN.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
