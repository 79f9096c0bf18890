"""Retention and downsampling for the embedded store, run as periodic pipeline jobs.

Raw points are kept ``raw_days`` (default 30), hourly rollups ``hourly_days`` (400), daily rollups
forever unless ``daily_days`` is set.  Rollups are recomputed from raw data over a look-back window
on every run (late data from a spool replay lands in an already rolled-up hour), and the days about
to be deleted are rolled up once more right before deletion, so no raw point is deleted without
being counted in the rollups.  Data arriving later than the raw retention is simply too late.

``SQLiteStore.query`` reads the rollups for windowed queries (``every`` a whole number of hours)
that reach below the deleted range (see ``pipeline.rollup``).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

import polars as pl

from pipeline import minute_rollup
from pipeline.config import PipelineConfig
from pipeline.query import TEXT_FIELDS, datetime_to_ns
from pipeline.rollup import DAY_NS, LEVELS, long_partials, raw_floor
from pipeline.sqlite_schema import FIELD_COLUMNS
from pipeline.store import StoreUnavailable

if TYPE_CHECKING:  # the store runs these jobs as its maintenance (``pipeline.stores``)
    from pipeline.sqlite_store import SQLiteStore

log = logging.getLogger(__name__)

_NUMERIC: Final = [c for c in FIELD_COLUMNS if c not in TEXT_FIELDS]


@dataclass(frozen=True)
class RetentionPolicy:
    raw_days: int = 30
    hourly_days: int = 400
    daily_days: int | None = None
    lookback: timedelta = timedelta(days=2)


def retention_policy(cfg: PipelineConfig) -> RetentionPolicy:
    return RetentionPolicy(raw_days=cfg.raw_days, hourly_days=cfg.hourly_days, daily_days=cfg.daily_days)


@dataclass
class RetentionReport:
    rollup_rows: dict[str, int] = field(default_factory=dict)
    raw_deleted: int = 0
    rollups_deleted: int = 0
    raw_floor_ns: int | None = None


def _floor(ns: int, step: int) -> int:
    return ns // step * step


def _meta_get(conn: sqlite3.Connection, key: str) -> int | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else int(row[0])


def _meta_set(conn: sqlite3.Connection, key: str, value: int) -> None:
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def compute_rollups(conn: sqlite3.Connection, level: str, start_ns: int, stop_ns: int) -> int:
    """(Re)compute ``level`` rollups for buckets in ``[start_ns, stop_ns)`` from raw points.

    Bounds are clipped to bucket edges and to the raw floor (below it raw data is gone and the
    existing rollups are the only record, so they are left alone).  Returns rows written."""
    bucket = LEVELS[level]
    floor = raw_floor(conn)
    start = _floor(max(start_ns, floor if floor is not None else start_ns), bucket)
    if floor is not None and start < floor:
        start += bucket
    stop = _floor(stop_ns, bucket)
    if start >= stop:
        return 0
    rows = conn.execute(
        "SELECT ts_ns, household, measurement, device, "
        + ", ".join(_NUMERIC)
        + " FROM points WHERE ts_ns >= ? AND ts_ns < ?",
        (start, stop),
    ).fetchall()
    conn.execute(
        "DELETE FROM rollups WHERE level = ? AND bucket_ns >= ? AND bucket_ns < ?", (level, start, stop)
    )
    if not rows:
        return 0
    schema: dict[str, Any] = {
        "ts_ns": pl.Int64,
        "household": pl.Utf8,
        "measurement": pl.Utf8,
        "device": pl.Utf8,
    }
    schema.update({c: pl.Float64 for c in _NUMERIC})
    raw = pl.DataFrame(rows, schema=schema, orient="row")
    written = 0
    for (measurement,), part in raw.group_by(["measurement"]):
        partials = long_partials(part.drop("measurement"), _NUMERIC, bucket)
        out = partials.select(
            "household",
            pl.lit(measurement).alias("measurement"),
            pl.lit(level).alias("level"),
            "window",
            "device",
            "field",
            "n",
            "total",
            "min",
            "max",
            "first",
            "first_ts",
            "last",
            "last_ts",
        )
        conn.executemany(
            "INSERT INTO rollups (household, measurement, level, bucket_ns, device, field, n, total, "
            "min, max, first, first_ts, last, last_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            out.rows(),
        )
        written += out.height
    return written


async def run_retention(
    store: SQLiteStore, policy: RetentionPolicy | None = None, now: datetime | None = None
) -> RetentionReport:
    """One pass: refresh recent rollups, roll up and delete expired raw days, expire old rollups."""
    policy = policy or RetentionPolicy()
    now_ns = datetime_to_ns(now or datetime.now(UTC))
    report = RetentionReport()
    cutoff = _floor(now_ns - policy.raw_days * DAY_NS, DAY_NS)

    def refresh(conn: sqlite3.Connection) -> None:
        done = _meta_get(conn, "rollup_done_ns")
        if done is None:
            earliest = conn.execute("SELECT MIN(ts_ns) FROM points").fetchone()[0]
            start = int(earliest) if earliest is not None else now_ns
        else:
            start = min(done, now_ns) - policy.lookback // timedelta(microseconds=1) * 1000
        for level in LEVELS:
            report.rollup_rows[level] = compute_rollups(conn, level, start, now_ns)
        _meta_set(conn, "rollup_done_ns", now_ns)

    def expire(conn: sqlite3.Connection) -> None:
        floor = raw_floor(conn)
        if floor is None or cutoff > floor:
            earliest = conn.execute("SELECT MIN(ts_ns) FROM points").fetchone()[0]
            if earliest is not None and earliest < cutoff:
                # last look at the days about to go: late arrivals included
                for level in LEVELS:
                    compute_rollups(conn, level, int(earliest), cutoff)
            cur = conn.execute("DELETE FROM points WHERE ts_ns < ?", (cutoff,))
            report.raw_deleted = cur.rowcount
            minute_rollup.delete_below(conn, cutoff)
            _meta_set(conn, "raw_floor_ns", cutoff)
        hourly_cut = now_ns - policy.hourly_days * DAY_NS
        deleted = conn.execute(
            "DELETE FROM rollups WHERE level = 'hour' AND bucket_ns < ?", (hourly_cut,)
        ).rowcount
        if policy.daily_days is not None:
            daily_cut = now_ns - policy.daily_days * DAY_NS
            deleted += conn.execute(
                "DELETE FROM rollups WHERE level = 'day' AND bucket_ns < ?", (daily_cut,)
            ).rowcount
        report.rollups_deleted = deleted
        report.raw_floor_ns = raw_floor(conn)

    await store.run_write(refresh)
    await store.run_write(expire)
    return report


async def retention_loop(store: SQLiteStore, policy: RetentionPolicy, interval: float = 3600.0) -> None:
    """Background job for ``hems demo``/``serve``: one pass per ``interval``.

    Outages and failures are logged and retried next time, never fatal to the host process."""
    while True:
        try:
            report = await run_retention(store, policy)
            log.info("retention: %s", report)
        except StoreUnavailable as exc:
            log.warning("retention skipped, store unavailable: %s", exc)
        except Exception:
            log.exception("retention pass failed")
        await asyncio.sleep(interval)
