"""Where the access database and the server key are: one rule for every ``hems`` command.

* Data directory: ``--data-dir``, else ``$HEMS_DATA_DIR``, else ``./var``.  In it: ``access.sqlite``
  (principals, consent, ledger), ``hems.sqlite`` (the embedded series store), ``spool/``,
  ``counter_state.sqlite`` and the server key ``hems.key``.
* Access database: ``--db`` (a SQLite file, or a ``postgresql://`` URL: ``access.db``), else
  ``$HEMS_ACCESS_DB``, else ``access.sqlite`` in the data directory.
* Server key (``access.keys``): ``$HEMS_KEY_FILE``, else ``hems.key`` beside a SQLite access
  database, else (PostgreSQL, which has no directory) ``hems.key`` in the data directory.  Every
  replica on one PostgreSQL database must read the same key: give them all the same ``HEMS_KEY_FILE``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from access.db import AccessDb, describe, is_url

DB_NAME = "access.sqlite"
DATA_DIR_ENV = "HEMS_DATA_DIR"
ACCESS_DB_ENV = "HEMS_ACCESS_DB"
DEFAULT_DATA_DIR = "./var"


def data_dir(given: str | os.PathLike[str] | None = None) -> Path:
    """``--data-dir`` when given, else ``$HEMS_DATA_DIR``, else ``./var``."""
    return Path(given or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def access_db(given: AccessDb | None = None, data: str | os.PathLike[str] | None = None) -> AccessDb:
    """``--db`` when given, else ``$HEMS_ACCESS_DB``, else ``access.sqlite`` in the data directory."""
    chosen: AccessDb | None = given or os.environ.get(ACCESS_DB_ENV) or None
    if chosen is None:
        return data_dir(data) / DB_NAME
    return chosen if is_url(chosen) else Path(chosen)


def default_db() -> AccessDb:
    return access_db()


def exists(db: AccessDb) -> bool:
    """Whether there is an access database to read: a PostgreSQL database is made by its operator (our
    tables are made when first opened), so a URL always counts; a file must be there."""
    return is_url(db) or Path(db).exists()


def existing_db(db: AccessDb, command: str) -> AccessDb | None:
    """``db`` if it exists; otherwise say which file was looked for and why, and return None (a
    command that reads the access database never creates an empty one in the wrong place)."""
    if exists(db):
        return db
    print(
        f"hems {command}: no access database at {describe(db)} (give --db, or --data-dir / "
        f"${DATA_DIR_ENV} as for 'hems demo' and 'hems serve', or ${ACCESS_DB_ENV})",
        file=sys.stderr,
    )
    return None
