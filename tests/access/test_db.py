"""Taking the write lock of the access database while another connection holds it (a real SQLite file
or PostgreSQL database, two connections standing in for two ``hems serve`` workers or replicas), and
what every store relies on answering the same on both databases."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from access.db import (
    AccessDb,
    AccessDbError,
    Db,
    SqliteDb,
    begin_immediate,
    check_location,
    open_db,
    write_transaction,
)
from tests.access.conftest import within
from tests.pg_server import PgServer

SCHEMA = """
CREATE TABLE IF NOT EXISTS t (x INTEGER);
CREATE TABLE IF NOT EXISTS named (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    at REAL, blob BLOB);
"""


def _open(where: AccessDb) -> Db:
    return open_db(where, SCHEMA, name="test", counters={"named": ("named",)})


def test_waits_for_the_other_writer_then_takes_the_lock(access_db: AccessDb) -> None:
    holder, waiter = _open(access_db), _open(access_db)
    started, done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def take() -> None:
        started.set()
        try:
            with write_transaction(waiter) as db:
                db.execute("INSERT INTO t VALUES (2)")
        except BaseException as exc:  # reported below
            errors.append(exc)
        done.set()

    with write_transaction(holder) as db:
        db.execute("INSERT INTO t VALUES (1)")
        thread = threading.Thread(target=take)
        thread.start()
        started.wait()
        assert not done.wait(0.3)  # still waiting while the lock is held
    thread.join(timeout=30)
    assert done.is_set() and not errors
    assert [r[0] for r in holder.execute("SELECT x FROM t ORDER BY x")] == [1, 2]
    holder.close()
    waiter.close()


def test_a_failed_transaction_leaves_nothing_and_the_connection_usable(access_db: AccessDb) -> None:
    db = _open(access_db)
    with pytest.raises(ZeroDivisionError), write_transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
        raise ZeroDivisionError
    assert not db.in_transaction
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    with write_transaction(db):
        db.execute("INSERT INTO t VALUES (3)")
    assert db.execute("SELECT x FROM t").fetchall() == [(3,)]
    db.close()


def test_both_databases_answer_alike(access_db: AccessDb) -> None:
    """Ids made by the database, text ordered bytewise (as SQLite compares, whatever the server's
    locale), floats and bytes round-tripped exactly, upserts and columns."""
    db = _open(access_db)
    names = ["b", "B", "a", "_x", "Z1", "z", "é", "0"]
    ids = [
        db.insert_id("INSERT INTO named (name, at) VALUES (?, ?)", (n, 0.1 + i)) for i, n in enumerate(names)
    ]
    assert ids == list(range(1, len(names) + 1))
    assert [r[0] for r in db.execute("SELECT name FROM named ORDER BY name")] == sorted(names, key=str.encode)
    t = 1_780_000_000.123456789
    db.execute("UPDATE named SET at = ?, blob = ? WHERE name = ?", (t, b"\x00\xff", "a"))
    at, blob = db.execute("SELECT at, blob FROM named WHERE name = 'a'").fetchone()
    assert repr(at) == repr(t) and bytes(blob) == b"\x00\xff"
    db.execute("UPDATE named SET at = ? WHERE name = 'b'", (float("inf"),))
    assert db.execute("SELECT at FROM named WHERE name = 'b'").fetchone()[0] == float("inf")
    db.executemany("INSERT INTO named (name) VALUES (?) ON CONFLICT DO NOTHING", [("a",), ("new",)])
    assert db.execute("SELECT count(*) FROM named").fetchone()[0] == len(names) + 1
    assert db.columns("named") == {"id", "name", "at", "blob"}
    db.add_columns("named", {"note": "TEXT NOT NULL DEFAULT ''", "n": "INTEGER"})
    db.add_columns("named", {"note": "TEXT NOT NULL DEFAULT ''"})  # again: nothing to do
    assert db.execute("SELECT note, n FROM named WHERE name = 'a'").fetchone() == ("", None)
    assert db.execute("SELECT count(*) FROM named WHERE name LIKE '%a%'").fetchone()[0] == 1
    db.close()


def test_change_versions_move_for_changed_rows_only(access_db: AccessDb) -> None:
    reader, writer = _open(access_db), _open(access_db)
    v0 = reader.change_version("named")
    writer.execute("UPDATE named SET at = 1 WHERE name = 'nobody'")  # touches no row: no change
    writer.execute("INSERT INTO t VALUES (1)")  # a table the counter does not name
    assert _settled(reader, "named") == v0
    writer.execute("INSERT INTO named (name) VALUES ('x')")
    assert _settled(reader, "named") != v0
    reader.close()
    writer.close()


def _settled(db: Db, counter: str) -> int:
    """The version once changes have had time to arrive (at once on SQLite, by NOTIFY on PostgreSQL)."""
    if db.changes_pushed:
        import time

        time.sleep(0.3)
    return db.change_version(counter)


def test_sqlite_gives_up_with_its_own_error_and_restores_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite"
    holder, waiter = _open(path), _open(path)
    assert isinstance(holder, SqliteDb) and isinstance(waiter, SqliteDb)
    waiter.execute("PRAGMA busy_timeout = 1234")
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        begin_immediate(waiter.conn, timeout_s=0.05)
    assert waiter.execute("PRAGMA busy_timeout").fetchone()[0] == 1234
    assert not waiter.in_transaction
    holder.execute("ROLLBACK")
    begin_immediate(waiter.conn)
    assert waiter.in_transaction
    waiter.execute("ROLLBACK")


# -- PostgreSQL only ----------------------------------------------------------------------------------
def test_a_password_in_the_url_is_refused_before_connecting() -> None:
    with pytest.raises(AccessDbError, match="PGPASSWORD") as exc:
        check_location("postgresql://hems:hunter2@db.invalid/hems")
    assert "hunter2" not in str(exc.value)
    assert check_location("postgresql://hems@db.invalid/hems") == "postgresql://hems@db.invalid/hems"


def test_a_stores_schema_is_translated_and_may_not_hide_triggers() -> None:
    from access.db_postgres import translate_ddl

    (table,) = translate_ddl(
        "CREATE TABLE IF NOT EXISTS x (id INTEGER PRIMARY KEY AUTOINCREMENT, t TEXT NOT NULL, r REAL, "
        "b BLOB, n INTEGER) WITHOUT ROWID;"
    )
    assert table == (
        "CREATE TABLE IF NOT EXISTS x (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
        't TEXT COLLATE "C" NOT NULL, r DOUBLE PRECISION, b BYTEA, n BIGINT)'
    )
    with pytest.raises(AccessDbError, match="only create tables and indexes"):
        translate_ddl("CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END;")


def _backend_pid(db: Db) -> int:
    return int(db.execute("SELECT pg_backend_pid()").fetchone()[0])


@pytest.mark.postgresql
def test_a_connection_the_server_ended_is_replaced_at_the_next_statement(
    pg_url: str, postgres: PgServer
) -> None:
    """A restart or failover ends the connection: the statement that meets the break fails (as any
    request during an outage), the next one runs on a new connection."""
    import psycopg

    db = _open(pg_url)
    with postgres.admin() as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (_backend_pid(db),))
    with pytest.raises(psycopg.OperationalError):
        db.execute("SELECT 1")
    assert db.execute("SELECT count(*) FROM t").fetchone()[0] == 0
    with write_transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
    db.close()


@pytest.mark.postgresql
def test_the_change_listener_reconnects_and_says_everything_may_have_changed(
    pg_url: str, postgres: PgServer
) -> None:
    """While the listening connection is down nothing is heard, so every version moves when it is back
    (readers re-read); afterwards changes are heard again."""
    reader, writer = _open(pg_url), _open(pg_url)
    v0 = reader.change_version("named")
    with postgres.admin() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'LISTEN%%' AND datname = %s",
            (pg_url.rsplit("/", 1)[1],),
        )
    assert within(5.0, lambda: reader.change_version("named") != v0) is not None
    v1 = reader.change_version("named")
    writer.execute("INSERT INTO named (name) VALUES ('after')")
    assert within(5.0, lambda: reader.change_version("named") != v1) is not None
    reader.close()
    writer.close()


def test_one_connection_of_all_leads_a_job_and_another_takes_over_when_it_ends(access_db: AccessDb) -> None:
    first, second = _open(access_db), _open(access_db)
    assert first.leads("job") and first.leads("job")
    if first.dialect == "sqlite":  # one machine: its processes decide among themselves
        assert second.leads("job")
        return
    assert not second.leads("job") and second.leads("another job")
    first.close()
    assert second.leads("job")
    second.close()
