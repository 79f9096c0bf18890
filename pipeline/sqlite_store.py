"""Embedded time-series store on SQLite (WAL): the default when no InfluxDB is configured.

Layout: one wide row per point with a typed column per known field.  A home's query touches few
rows and wants all their fields, and the primary key ``(household, measurement, ts_ns, device)``
puts one home's time range in one contiguous B-tree range (the same identity as the contract's
``(measurement, household, device, ts_ns)``, ordered for the range scan).  Re-writing a point merges
field by field (a field the new point lacks keeps its old value), which is what InfluxDB does, so the
two stores agree after partial re-writes too.

All blocking SQLite work runs on dedicated threads: one writer thread (SQLite has one writer anyway)
and a small reader pool, each with its own connection, so the event loop never waits on disk.

Outage semantics: the database is created on first open only.  After that, if the file vanishes or
is replaced (volume unmounted, directory moved or deleted) or SQLite reports an I/O-level error,
writes raise ``StoreUnavailable`` instead of silently writing into an orphaned inode or a fresh
empty file; when the same file is back, writes resume.

Schema: derived from the field table, versioned and migrated on open (``pipeline.sqlite_schema``).
SQL that does not fit the file (no such column or table) raises ``SchemaError``: a bug or a file
this code must not use, which waiting will not fix, so it is never reported as an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from pathlib import Path
from typing import Any, Final, TypeVar

import polars as pl

from pipeline import minute_rollup, series_changes
from pipeline.columns import DEVICE, HOUSEHOLD, SOURCE, TS, VALUES, ColumnBatch
from pipeline.config import PipelineConfig
from pipeline.errors import PipelineError, SchemaError
from pipeline.frames import raw_result_from_rows, shape_result
from pipeline.losses import Losses
from pipeline.minute_rollup import MINUTE_NS
from pipeline.points import Point
from pipeline.query import BOOL_FIELDS, TEXT_FIELDS, Deletion, SeriesQuery, datetime_to_ns
from pipeline.retention import compute_rollups, retention_loop, retention_policy
from pipeline.rollup import (
    LEVELS,
    combine,
    finish,
    level_for,
    long_partials,
    raw_floor,
    read_rollups,
)
from pipeline.series_changes import ChangeLog
from pipeline.sqlite_schema import FIELD_COLUMNS as FIELD_COLUMNS  # re-exported: the store's columns
from pipeline.sqlite_schema import ensure_schema, refuse_newer, schema_problem
from pipeline.store import Store, StoreUnavailable
from pipeline.stores import StorePlugin

log = logging.getLogger(__name__)

# Names come only from this whitelist, so the SQL text never contains a caller-supplied string.
_FIELD_SET: Final = frozenset(FIELD_COLUMNS)
T = TypeVar("T")
_KEY_ORDER: Final = itemgetter(0, 1, 2, 3)
_KEY_SQL: Final = "household, measurement, ts_ns, device"
_COL_INDEX: Final = {name: i for i, name in enumerate(FIELD_COLUMNS)}
# Errors that mean "the database cannot be used right now" rather than "this data is wrong".
_OUTAGE_ERRORS: Final = (sqlite3.OperationalError, sqlite3.DatabaseError, OSError)


class UnknownFieldError(PipelineError, ValueError):
    """A point carries a field the schema does not know; validation should have dropped it."""


@lru_cache(maxsize=512)
def _upsert_sql(cols: tuple[str, ...]) -> str:
    """Upsert naming only the fields a group of points carries: binding 3-5 values instead of every
    column is most of the ingest cost.  ``cols`` are whitelisted names in schema order."""
    merge = "".join(f", {c} = COALESCE(excluded.{c}, points.{c})" for c in cols)
    return (
        f"INSERT INTO points ({_KEY_SQL}, source{''.join(', ' + c for c in cols)}) "
        f"VALUES ({', '.join('?' for _ in range(5 + len(cols)))}) "
        f"ON CONFLICT ({_KEY_SQL}) DO UPDATE SET source = excluded.source{merge}"
    )


Groups = dict[tuple[str, ...], list[tuple[Any, ...]]]


@dataclass
class _Touched:
    """What one write did to one series (household, measurement): for the change log and rollups."""

    lo: int
    hi: int
    fields: set[str]
    minutes: set[int]


def _touch(
    touched: dict[tuple[str, str], _Touched], series: tuple[str, str], ts: int, cols: tuple[str, ...]
) -> None:
    t = touched.get(series)
    if t is None:
        touched[series] = _Touched(ts, ts, set(cols), {ts - ts % MINUTE_NS})
    else:
        t.lo = min(t.lo, ts)
        t.hi = max(t.hi, ts)
        t.fields.update(cols)
        t.minutes.add(ts - ts % MINUTE_NS)


def _group_batch(batch: ColumnBatch) -> tuple[Groups, dict[tuple[str, str], _Touched]]:
    """``_group_rows`` for a batch already kept by shape: no ``Point`` is made."""
    groups: Groups = {}
    touched: dict[tuple[str, str], _Touched] = {}
    for shape in batch.shapes():
        names = shape.names
        for name in names:
            if name not in _COL_INDEX:
                raise UnknownFieldError(f"a {shape.measurement} point has unknown field {name!r}")
        cols = tuple(sorted(names, key=_COL_INDEX.__getitem__))
        at = [VALUES + names.index(c) for c in cols]
        m = shape.measurement
        bucket = groups.setdefault(cols, [])
        for r in shape.rows:
            ts = r[TS]
            bucket.append((r[HOUSEHOLD], m, ts, r[DEVICE], r[SOURCE], *[r[i] for i in at]))
            _touch(touched, (r[HOUSEHOLD], m), ts, cols)
    for rows in groups.values():
        rows.sort(key=_KEY_ORDER)
    return groups, touched


def _group_rows(points: Sequence[Point]) -> tuple[Groups, dict[tuple[str, str], _Touched]]:
    """Rows grouped by the fields they carry (one upsert statement each), and per series what the
    write touches (time range, fields, minutes)."""
    if isinstance(points, ColumnBatch):
        return _group_batch(points)
    groups: Groups = {}
    touched: dict[tuple[str, str], _Touched] = {}
    for p in points:
        names = tuple(p.fields)
        for name in names:
            if name not in _COL_INDEX:
                raise UnknownFieldError(f"point {p.key} has unknown field {name!r}")
        cols = tuple(sorted(names, key=_COL_INDEX.__getitem__))
        vals = [p.fields[c] for c in cols]
        ts = p.ts_ns
        row = (p.household, p.measurement, ts, p.device, p.source, *vals)
        bucket = groups.get(cols)
        if bucket is None:
            groups[cols] = [row]
        else:
            bucket.append(row)
        _touch(touched, (p.household, p.measurement), ts, cols)
    for rows in groups.values():
        rows.sort(key=_KEY_ORDER)  # B-tree inserts in key order touch each page once
    return groups, touched


class SQLiteStore:
    """``Store`` implementation backed by one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        readers: int = 2,
        version_poll_s: float = 0.05,
    ) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"bad synchronous mode {synchronous!r}")
        self.path = Path(path)
        # NORMAL in WAL mode survives a process crash (kill -9) but may lose the last commits on power
        # loss; FULL also survives power loss at some ingest cost.
        self._synchronous = synchronous.upper()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-writer")
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._identity: tuple[int, int] | None = None
        self._id_lock = threading.Lock()
        self._all_conns: list[sqlite3.Connection] = []
        self._version_conn: sqlite3.Connection | None = None
        self.version_poll_s = version_poll_s
        self.changes = ChangeLog()  # see data_version
        self._pragma: int | None = None
        self._version_polled = -math.inf
        self._minutes = minute_rollup.MinuteRollups(FIELD_COLUMNS)
        self._writes = 0
        self._closed = False
        # A lasting outage fails every read: its first failure is logged at once, later ones as one
        # line a minute with their count, not one line per query.
        self._failed_reads = Losses(
            log, what="SQLite reads failed, trying once more on a new connection", level=logging.WARNING
        )

    # -- connection handling (runs on the store's threads) -------------------------------------------

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_dev, st.st_ino)

    def _check_file(self) -> None:
        with self._id_lock:
            expected = self._identity
        if expected is None:
            return
        current = self._file_identity()
        if current != expected:
            self._drop_conn()
            why = "missing" if current is None else "replaced by another file"
            raise StoreUnavailable(f"SQLite database {self.path} is {why}")

    def _drop_conn(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        with self._id_lock:
            first_open = self._identity is None
        if not first_open and self._file_identity() is None:
            raise StoreUnavailable(f"SQLite database {self.path} is missing")
        try:
            if first_open:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            uri = self.path.resolve().as_uri() + ("?mode=rwc" if first_open else "?mode=rw")
            conn = sqlite3.connect(uri, uri=True, timeout=30.0, check_same_thread=False, isolation_level=None)
            refuse_newer(conn, self.path)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=30000")
            ensure_schema(conn, self.path)
        except (SchemaError, *_OUTAGE_ERRORS) as exc:
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            if isinstance(exc, SchemaError):
                raise
            raise self._failure(f"cannot open SQLite database {self.path}", exc) from exc
        with self._id_lock:
            ident = self._file_identity()
            if self._identity is None:
                self._identity = ident
            elif ident != self._identity:
                conn.close()
                raise StoreUnavailable(f"SQLite database {self.path} was replaced by another file")
            self._all_conns.append(conn)
        self._local.conn = conn
        return conn

    def _failure(self, what: str, exc: BaseException) -> PipelineError:
        """The error to raise for a SQLite failure: ``SchemaError`` when the SQL does not fit the file
        (waiting cannot fix it), else ``StoreUnavailable`` (the connection is dropped and reopened)."""
        if schema_problem(exc):
            return SchemaError(f"{what}: {exc} (schema of {self.path})")
        self._drop_conn()
        return StoreUnavailable(f"{what}: {exc}")

    def _write_sync(self, groups: Groups, touched: dict[tuple[str, str], _Touched]) -> None:
        self._check_file()
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for cols, rows in groups.items():
                    conn.executemany(_upsert_sql(cols), rows)
                # Same transaction: a reader never sees points without their rollups and change rows.
                self._minutes.refresh(conn, {k: (t.minutes, frozenset(t.fields)) for k, t in touched.items()})
                series_changes.record(conn, ((h, m, t.lo, t.hi) for (h, m), t in touched.items()))
                self._writes += 1
                if self._writes % series_changes.PRUNE_EVERY == 0:
                    series_changes.prune(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except _OUTAGE_ERRORS as exc:
            raise self._failure("SQLite write failed", exc) from exc

    def _raw_sql(self, q: SeriesQuery, start_ns: int, stop_ns: int) -> tuple[str, list[Any]]:
        fields = q.fields  # validated against the whitelist by SeriesQuery
        for name in fields:
            if name not in _FIELD_SET:
                raise UnknownFieldError(f"unknown field {name!r}")
        params: list[Any] = [*q.households, q.category, start_ns, stop_ns]
        sql = (
            "SELECT ts_ns, household, device, "
            + ", ".join(fields)
            + " FROM points WHERE household IN ("
            + ", ".join("?" for _ in q.households)
            + ") AND measurement = ? AND ts_ns >= ? AND ts_ns < ?"
        )
        if q.devices is not None:
            sql += " AND device IN (" + ", ".join("?" for _ in q.devices) + ")"
            params.extend(q.devices)
        sql += " AND (" + " OR ".join(f"{f} IS NOT NULL" for f in fields) + ")"
        return sql, params

    def _fetch_raw(
        self, conn: sqlite3.Connection, q: SeriesQuery, start_ns: int, stop_ns: int
    ) -> pl.DataFrame:
        sql, params = self._raw_sql(q, start_ns, stop_ns)
        rows = conn.execute(sql, params).fetchall()
        schema: dict[str, pl.DataType] = {
            "ts_ns": pl.Int64(),
            "household": pl.Utf8(),
            "device": pl.Utf8(),
        }
        for name in q.fields:
            schema[name] = (
                pl.Int64() if name in BOOL_FIELDS else pl.Utf8() if name in TEXT_FIELDS else pl.Float64()
            )
        return pl.DataFrame(rows, schema=schema, orient="row")

    def _query_sync(self, q: SeriesQuery) -> pl.DataFrame:
        """``_query_once``, tried again once on a fresh connection when it fails as an outage.

        A read changes nothing, so trying again is safe; one transient SQLite error (an interrupted
        statement, a connection left unusable) should not reach a user as a 503.  A lasting outage (the
        file gone or replaced) fails the second try too."""
        try:
            return self._query_once(q)
        except StoreUnavailable as first:
            if self._closed:
                raise
            self._failed_reads.add("read_failed", 1, str(first))
            return self._query_once(q)

    def _query_once(self, q: SeriesQuery) -> pl.DataFrame:
        conn = self._conn()
        try:
            every_ns = q.every_ns
            if minute_rollup.serves(q):
                answer = minute_rollup.windows(conn, q)  # None: retention deleted raw points after start
                if answer is not None:
                    return answer
            floor = raw_floor(conn) if every_ns is not None else None
            level = level_for(every_ns) if every_ns is not None else None
            if every_ns is not None and level is not None and floor is not None and floor > q.start_ns:
                return self._query_with_rollups(conn, q, every_ns, level, floor)
            if every_ns is None:
                # Raw points: let SQLite order them so only dtypes remain to be set in Python.
                sql, params = self._raw_sql(q, q.start_ns, q.stop_ns)
                rows = conn.execute(sql + " ORDER BY household, device, ts_ns", params).fetchall()
                return raw_result_from_rows(rows, q)
            raw = self._fetch_raw(conn, q, q.start_ns, q.stop_ns)
        except _OUTAGE_ERRORS as exc:
            raise self._failure("SQLite query failed", exc) from exc
        return shape_result(raw, q)

    def _query_with_rollups(
        self, conn: sqlite3.Connection, q: SeriesQuery, every_ns: int, level: str, floor: int
    ) -> pl.DataFrame:
        """Raw data below ``floor`` was deleted by retention: read those windows from the rollups and
        the rest from raw points, merging partial aggregates so a window spanning both is exact.

        Only the buckets wholly within ``[start, stop)`` are read: one that straddles an end also holds
        readings outside the range, and with its raw points gone its part inside cannot be told apart.
        The range is what a decision served (a move, a link, an erasure ends it mid-hour), so reading the
        whole bucket gave away the minutes, or with ``every=1d`` the day, of another period."""
        bucket = LEVELS[level]
        first = -(-q.start_ns // bucket) * bucket
        last = min(floor, q.stop_ns // bucket * bucket)
        parts = [read_rollups(conn, q, level, first, last)]  # nothing when first >= last
        if q.stop_ns > floor:
            raw = self._fetch_raw(conn, q, floor, q.stop_ns)
            parts.append(long_partials(raw, list(q.fields), every_ns))
        return finish(combine(pl.concat(parts), every_ns), q)

    # -- Store protocol -------------------------------------------------------------------------------

    async def write(self, points: Sequence[Point]) -> None:
        if self._closed:
            raise StoreUnavailable("store is closed")
        if not points:
            return
        groups, touched = _group_rows(points)
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._writer, self._write_sync, groups, touched)
        finally:
            self._version_polled = -math.inf  # own commit: next data_version() asks SQLite at once

    async def query(self, q: SeriesQuery) -> pl.DataFrame:
        if self._closed:
            raise StoreUnavailable("store is closed")
        if minute_rollup.small(q):
            # About a millisecond: handing it to a reader thread costs as much again in GIL hand-offs
            # with the event loop (polars and SQLite release the GIL on every call), and blocks nothing.
            return self._query_sync(q)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._query_sync, q)

    def data_version(self) -> int | None:
        """A number that moves whenever the stored data changes: at once for writes through this object,
        and within ``version_poll_s`` for commits by any other connection or process.  What changed, per
        series, is then told by ``changed_since``.

        It lets the API reuse a rendered answer as long as the data under it is unchanged.  Called on
        the event loop for every data request, so SQLite (``PRAGMA data_version`` and the change log,
        a lock round trip on the shared-memory index, and a wait for the GIL after it) is asked at most
        every ``version_poll_s``.  ``None`` (nothing to key a cache on) before the file exists or when
        it cannot be read; callers then simply do not reuse anything."""
        if self._closed:
            return None
        now = time.monotonic()
        if now - self._version_polled < self.version_poll_s:
            return self.changes.version
        conn = self._version_conn
        try:
            if conn is None:
                if not self.path.exists():
                    return None  # nothing written yet; the first query or write creates the file
                uri = self.path.resolve().as_uri() + "?mode=ro"
                conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
                with self._id_lock:
                    self._all_conns.append(conn)
                self._version_conn = conn
            self._pragma = self.changes.poll(conn, self._pragma, self._commits)
        except sqlite3.Error:
            self._pragma = None  # the next successful poll treats everything as changed
            with contextlib.suppress(sqlite3.Error):
                if conn is not None and conn.in_transaction:
                    conn.execute("ROLLBACK")
            return None
        self._version_polled = now
        return self.changes.version

    def _commits(self) -> int | None:
        return series_changes.commits_counted(self.path)

    def changed_since(self, version: int, q: SeriesQuery) -> bool:
        """Whether the answer to ``q`` may differ from the one read at ``data_version() == version``
        (as of the last ``data_version()`` call): a write touched one of its households' series of its
        category within ``[start, stop)``, or the store cannot tell."""
        return self.changes.changed_since(version, q.households, q.category, q.start_ns, q.stop_ns)

    def last_change(self, q: SeriesQuery) -> int | None:
        """The change log's row of the last write under ``q``'s footprint, as of the last
        ``data_version()`` call (see ``pipeline.series_changes.ChangeLog``); None before the first."""
        if self.changes.seen_seq is None:
            return None
        return self.changes.last_change(q.households, q.category, q.start_ns, q.stop_ns)

    async def open(self) -> None:
        """Create or migrate the file now (``SchemaError`` for one from a newer release)."""
        if self._closed:
            raise StoreUnavailable("store is closed")

        def connect() -> None:
            self._check_file()
            self._conn()

        await asyncio.get_running_loop().run_in_executor(self._writer, connect)

    async def delete(self, d: Deletion) -> int:
        """Points in the range (their number is returned), and the rollups of every bucket that overlaps
        it (a bucket's partial aggregates mix erased points with others; minute rollups likewise, see
        ``MinuteRollups.erase``).  Where raw points remain (above
        retention's floor), the edge buckets are rolled up again from what is left; below it they are
        gone for good, which is logged."""
        start, stop = datetime_to_ns(d.start), datetime_to_ns(d.stop)

        def erase(conn: sqlite3.Connection) -> int:
            removed = conn.execute(
                "DELETE FROM points WHERE household = ? AND measurement = ? AND ts_ns >= ? AND ts_ns < ?",
                (d.household, d.measurement, start, stop),
            ).rowcount
            self._minutes.erase(conn, d.household, d.measurement, start, stop)
            floor = raw_floor(conn)
            for level, size in LEVELS.items():
                first, last = start // size * size, (stop - 1) // size * size
                rolled = conn.execute(
                    "DELETE FROM rollups WHERE household = ? AND measurement = ? AND level = ? "
                    "AND bucket_ns >= ? AND bucket_ns <= ?",
                    (d.household, d.measurement, level, first, last),
                ).rowcount
                if not rolled:
                    continue
                log.info(
                    "erasure of %s/%s: %d %s rollup rows removed", d.household, d.measurement, rolled, level
                )
                for edge in {first, last}:  # what is left of the edge buckets, where raw data remains
                    if floor is not None and edge < floor and (edge < start or edge + size > stop):
                        log.warning(
                            "erasure of %s/%s: the %s rollup from %d also held data outside the erased "
                            "range, whose raw points retention already removed; it is gone with it",
                            d.household,
                            d.measurement,
                            level,
                            edge,
                        )
                    compute_rollups(conn, level, edge, edge + size)
            return removed

        if self._closed:
            raise StoreUnavailable("store is closed")
        return await self.run_write(erase)

    async def ping(self) -> bool:
        if self._closed:
            return False
        loop = asyncio.get_running_loop()

        def probe() -> bool:
            try:
                self._check_file()
                self._conn().execute("SELECT 1").fetchone()
            except (StoreUnavailable, SchemaError, *_OUTAGE_ERRORS):
                return False
            return True

        return await loop.run_in_executor(self._writer, probe)

    async def run_write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer thread, serialized with writes, inside a transaction
        (maintenance jobs such as retention).  Outage errors become ``StoreUnavailable``."""

        def job() -> T:
            self._check_file()
            conn = self._conn()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                    series_changes.record_everything(conn)  # ``fn`` may have changed any answer
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            except _OUTAGE_ERRORS as exc:
                raise self._failure("SQLite maintenance failed", exc) from exc

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._writer, job)
        finally:
            # Whatever happened, answers rendered before may no longer hold: the next data_version()
            # asks SQLite at once.
            self._version_polled = -math.inf

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._shutdown)

    def _shutdown(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        with self._id_lock:
            conns, self._all_conns = self._all_conns, []
        for conn in conns:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


async def _retention(store: Store, cfg: PipelineConfig) -> None:
    if not isinstance(store, SQLiteStore):
        raise TypeError(f"SQLite retention needs a SQLiteStore, got {type(store).__name__}")
    await retention_loop(store, retention_policy(cfg))


STORE: Final = StorePlugin(
    open=lambda cfg: SQLiteStore(cfg.sqlite_path, synchronous=cfg.sqlite_synchronous),
    maintain=_retention,
    describe=lambda cfg: cfg.sqlite_path,
)
