"""Taking the write lock of the access database while another connection holds it (real SQLite file,
two connections standing in for two ``hems serve`` workers)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from access.db import begin_immediate, open_db

SCHEMA = "CREATE TABLE IF NOT EXISTS t (x INTEGER);"


def test_waits_for_the_other_writer_then_takes_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    holder, waiter = open_db(path, SCHEMA), open_db(path, SCHEMA)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO t VALUES (1)")
    started, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def take() -> None:
        started.set()
        try:
            begin_immediate(waiter, timeout_s=30)
            waiter.execute("INSERT INTO t VALUES (2)")
            waiter.execute("COMMIT")
        except BaseException as exc:  # reported below
            errors.append(exc)
        done.set()

    thread = threading.Thread(target=take)
    thread.start()
    started.wait()
    assert not done.wait(0.2)  # still waiting while the lock is held
    holder.execute("COMMIT")
    thread.join(timeout=30)
    assert done.is_set() and not errors
    assert [r[0] for r in holder.execute("SELECT x FROM t ORDER BY x")] == [1, 2]


def test_gives_up_with_sqlites_own_error_and_restores_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    holder, waiter = open_db(path, SCHEMA), open_db(path, SCHEMA)
    waiter.execute("PRAGMA busy_timeout = 1234")
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        begin_immediate(waiter, timeout_s=0.05)
    assert waiter.execute("PRAGMA busy_timeout").fetchone()[0] == 1234
    assert not waiter.in_transaction
    holder.execute("ROLLBACK")
    begin_immediate(waiter)
    assert waiter.in_transaction
    waiter.execute("ROLLBACK")
