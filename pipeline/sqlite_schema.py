"""The embedded store's schema: derived from the field table, versioned, migrated when a file opens.

Why: a field added to ``seeds.vocabulary.FIELDS`` used to make every write to an existing
``hems.sqlite`` fail ("table points has no column named ..."), and the writer took that for an
outage and spooled forever.  Now the file says which schema it has (``PRAGMA user_version``) and
opening it brings it up to this code's:

* version 0 (files made before versioning) and older versions run the numbered steps in
  ``_STEPS``; a file from a *newer* release is refused with ``SchemaError`` (its layout may mean
  something this code does not know), never written to;
* at every version, a field of the table without its column gets one (``ALTER TABLE ... ADD
  COLUMN``: a nullable column costs nothing for existing rows).  So adding a field needs no step;
  a step is for what changes meaning (a new table, a key, a conversion), and bumps ``SCHEMA_VERSION``.

Everything runs in one ``BEGIN IMMEDIATE`` transaction, so two processes opening one file at once
migrate it once, and a crash leaves the old schema intact.  Column and table names come only from the
field table, never from a caller.  ``schema_problem`` tells a schema error (a bug to fix) from an
I/O-level failure (an outage to wait out) for the store's error handling.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Final

from pipeline import minute_rollup, series_changes
from pipeline.errors import SchemaError
from seeds.vocabulary import STORED_FIELDS, field_type

SCHEMA_VERSION: Final = 3

# Column order is fixed for a fresh file (the field table's order); files made earlier get new columns
# appended, which is why nothing may rely on column positions.
FIELD_COLUMNS: Final = STORED_FIELDS
KEY_COLUMNS: Final = ("household", "measurement", "ts_ns", "device", "source")
_SQL_TYPES: Final = {"float": "REAL", "bool": "INTEGER", "text": "TEXT"}


def sql_type(name: str) -> str:
    return _SQL_TYPES[field_type(name)]


POINTS_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS points ("
    "household TEXT NOT NULL, measurement TEXT NOT NULL, ts_ns INTEGER NOT NULL, "
    "device TEXT NOT NULL, source TEXT NOT NULL, "
    + ", ".join(f"{c} {sql_type(c)}" for c in FIELD_COLUMNS)
    + ", PRIMARY KEY (household, measurement, ts_ns, device)) WITHOUT ROWID"
)
ROLLUP_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS rollups ("
    "household TEXT NOT NULL, measurement TEXT NOT NULL, level TEXT NOT NULL, bucket_ns INTEGER NOT NULL, "
    "device TEXT NOT NULL, field TEXT NOT NULL, n INTEGER NOT NULL, total REAL, min REAL, max REAL, "
    "first REAL, first_ts INTEGER, last REAL, last_ts INTEGER, "
    "PRIMARY KEY (household, measurement, level, bucket_ns, device, field)) WITHOUT ROWID"
)
META_SCHEMA: Final = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)"


def _v1_tables(conn: sqlite3.Connection) -> None:
    """0 -> 1: the three tables of the unversioned layout (a new file gets them here; an old one has
    them already), from then on stamped with a version."""
    for ddl in (POINTS_SCHEMA, ROLLUP_SCHEMA, META_SCHEMA):
        conn.execute(ddl)


def _v2_minute_rollups(conn: sqlite3.Connection) -> None:
    """1 -> 2: minute rollups kept at ingest (summarising every point already stored) and the per-series
    change log (``pipeline.minute_rollup``, ``pipeline.series_changes``)."""
    conn.execute(minute_rollup.SCHEMA)
    conn.execute(series_changes.SCHEMA)
    present = _columns(conn)
    if set(KEY_COLUMNS) <= set(present):  # else not a hems store: ``ensure_schema`` says so next
        minute_rollup.MinuteRollups(FIELD_COLUMNS).backfill(conn, present)
    series_changes.record_everything(conn)


def _v3_minute_rollups_by_rowid(conn: sqlite3.Connection) -> None:
    """2 -> 3: the minute rollups as a rowid table with a unique key (``minute_rollup.SCHEMA`` says
    why), their rows copied over as they are.  A file made by this release has that table already."""
    (ddl,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'minute_rollups'"
    ).fetchone()
    if "WITHOUT ROWID" not in ddl.upper():
        return
    columns = ", ".join(minute_rollup.COLUMNS)
    conn.execute("ALTER TABLE minute_rollups RENAME TO minute_rollups_v2")
    conn.execute(minute_rollup.SCHEMA)
    conn.execute(f"INSERT INTO minute_rollups ({columns}) SELECT {columns} FROM minute_rollups_v2")
    conn.execute("DROP TABLE minute_rollups_v2")


# Step n brings a file from version n - 1 to n.
_STEPS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {
    1: _v1_tables,
    2: _v2_minute_rollups,
    3: _v3_minute_rollups_by_rowid,
}


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _columns(conn: sqlite3.Connection) -> list[str]:
    return [row[1] for row in conn.execute("PRAGMA table_info(points)").fetchall()]


def refuse_newer(conn: sqlite3.Connection, path: Path) -> None:
    """``SchemaError`` for a file from a newer release; call before changing anything about the file
    (even its journal mode), so such a file is left exactly as it was."""
    _refuse_newer(schema_version(conn), path)


def _refuse_newer(version: int, path: Path) -> None:
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"SQLite database {path} has schema version {version}, newer than this hems understands "
            f"({SCHEMA_VERSION}): upgrade hems, or point sqlite_path at another file"
        )


def _is_current(conn: sqlite3.Connection) -> bool:
    return schema_version(conn) == SCHEMA_VERSION and set(FIELD_COLUMNS) <= set(_columns(conn))


def ensure_schema(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the file behind ``conn`` to ``SCHEMA_VERSION`` and the field table's columns; return the
    version it had.  Cheap when nothing is to do (two PRAGMAs), so every new connection calls it.

    Raises ``SchemaError`` for a file from a newer release or one whose ``points`` table is not ours;
    SQLite's own errors (busy, I/O) pass through for the caller to treat as an outage."""
    found = schema_version(conn)
    _refuse_newer(found, path)
    if _is_current(conn):
        return found
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = schema_version(conn)  # another process may have migrated while we waited
        _refuse_newer(found, path)
        for step in range(found + 1, SCHEMA_VERSION + 1):
            _STEPS[step](conn)
        present = _columns(conn)
        missing_keys = [c for c in KEY_COLUMNS if c not in present]
        if missing_keys:
            raise SchemaError(f"SQLite database {path}: table points lacks {missing_keys}; not a hems store")
        for name in FIELD_COLUMNS:
            if name not in present:
                conn.execute(f"ALTER TABLE points ADD COLUMN {name} {sql_type(name)}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found


# SQLite's primary result code for "SQL error or missing database": no such table/column, a column the
# table lacks.  Busy, locked, I/O, full, read-only and not-a-database have codes of their own.
_SQLITE_ERROR: Final = 1


def schema_problem(exc: BaseException) -> bool:
    """True when ``exc`` says the SQL does not fit the file (a schema error), not that the file cannot
    be used right now."""
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.OperationalError) and code is not None and code & 0xFF == _SQLITE_ERROR


def contended(exc: BaseException) -> bool:
    """True when ``exc`` only says another connection holds the file right now (SQLite's busy or locked
    codes, extended ones included): trying later may work, nothing is wrong with the file."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.OperationalError)
        and code is not None
        and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    )
