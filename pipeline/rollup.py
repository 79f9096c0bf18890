"""Hourly and daily rollups in the SQLite store, and answering windowed queries from them.

A rollup row keeps, per (household, category, device, field, bucket), the partial aggregates every
``SeriesQuery`` aggregation can be rebuilt from: count, sum, min, max, first and last (with their
timestamps).  Buckets are aligned to the Unix epoch like query windows, so a window that is a whole
multiple of the bucket is exactly a union of buckets and ``mean`` is ``sum(total) / sum(n)``.

A window whose ends fall inside a bucket is answered from the whole buckets inside it only
(``whole_buckets``): a bucket's partials mix the readings on both sides of the end, and once retention
deleted the raw points nothing can split it.  The window may be a served period that begins or ends
mid-day (a new occupant, a link that ended), so counting a straddling bucket would serve readings from
outside it.  Limits (documented, not hidden): in the rolled-up part a partial hour at either end is
therefore left out; text fields (``state``) are not rolled up and read as missing there.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Final

import polars as pl

from pipeline.frames import empty_result, result_schema
from pipeline.query import TEXT_FIELDS, SeriesQuery

HOUR_NS: Final = 3600 * 1_000_000_000
DAY_NS: Final = 24 * HOUR_NS
LEVELS: Final[dict[str, int]] = {"hour": HOUR_NS, "day": DAY_NS}

_PARTIAL_KEYS: Final = ["household", "device", "window", "field"]


RAW_FLOOR_SQL: Final = "SELECT value FROM meta WHERE key = 'raw_floor_ns'"


def raw_floor(conn: sqlite3.Connection) -> int | None:
    """Timestamp below which raw points were deleted by retention (None: never)."""
    row = conn.execute(RAW_FLOOR_SQL).fetchone()
    return None if row is None else int(row[0])


def level_for(every_ns: int) -> str | None:
    if every_ns % DAY_NS == 0:
        return "day"
    if every_ns % HOUR_NS == 0:
        return "hour"
    return None


def whole_buckets(start_ns: int, stop_ns: int, level: str) -> list[tuple[str, int, int]]:
    """The rollup reads ``(level, from, to)`` that cover only whole buckets inside ``[start, stop)``:
    ``level``'s buckets, and for a partial day at either end its whole hours.  Each ``[from, to)`` is on
    its level's boundaries, so every bucket starting in it also ends in it."""
    size = LEVELS[level]
    lo = -(-start_ns // size) * size  # the first boundary at or after start
    hi = stop_ns // size * size
    if lo >= hi:  # no whole bucket of this level inside: the whole hours, if any
        return [] if level == "hour" else whole_buckets(start_ns, stop_ns, "hour")
    out = [(level, lo, hi)]
    if level != "hour":
        out = whole_buckets(start_ns, lo, "hour") + out + whole_buckets(hi, stop_ns, "hour")
    return out


def long_partials(raw: pl.DataFrame, fields: list[str], bucket_ns: int) -> pl.DataFrame:
    """Raw wide points (``ts_ns``, ``household``, ``device``, fields) -> partial aggregates per
    (household, device, window, field) in long form."""
    numeric = [f for f in fields if f not in TEXT_FIELDS and f in raw.columns]
    if raw.height == 0 or not numeric:
        return empty_partials()
    long = (
        raw.select("ts_ns", "household", "device", *[pl.col(f).cast(pl.Float64) for f in numeric])
        .unpivot(index=["ts_ns", "household", "device"], on=numeric, variable_name="field", value_name="v")
        .drop_nulls("v")
        .with_columns((pl.col("ts_ns") // bucket_ns * bucket_ns).alias("window"))
        .sort("ts_ns")
    )
    return long.group_by(_PARTIAL_KEYS).agg(
        pl.len().cast(pl.Int64).alias("n"),
        pl.col("v").sum().alias("total"),
        pl.col("v").min().alias("min"),
        pl.col("v").max().alias("max"),
        pl.col("v").first().alias("first"),
        pl.col("ts_ns").first().alias("first_ts"),
        pl.col("v").last().alias("last"),
        pl.col("ts_ns").last().alias("last_ts"),
    )


def empty_partials() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "household": pl.Utf8,
            "device": pl.Utf8,
            "window": pl.Int64,
            "field": pl.Utf8,
            "n": pl.Int64,
            "total": pl.Float64,
            "min": pl.Float64,
            "max": pl.Float64,
            "first": pl.Float64,
            "first_ts": pl.Int64,
            "last": pl.Float64,
            "last_ts": pl.Int64,
        }
    )


def combine(partials: pl.DataFrame, window_ns: int) -> pl.DataFrame:
    """Merge partial aggregates into coarser epoch-aligned windows."""
    return (
        partials.with_columns((pl.col("window") // window_ns * window_ns).alias("window"))
        .sort("first_ts")
        .group_by(_PARTIAL_KEYS)
        .agg(
            pl.col("n").sum(),
            pl.col("total").sum(),
            pl.col("min").min(),
            pl.col("max").max(),
            pl.col("first").first(),
            pl.col("first_ts").first(),
            pl.col("last").sort_by("last_ts").last(),
            pl.col("last_ts").max(),
        )
    )


def read_rollups(
    conn: sqlite3.Connection, q: SeriesQuery, level: str, start_ns: int, stop_ns: int
) -> pl.DataFrame:
    """Partials from the rollup table for buckets starting in ``[start_ns, stop_ns)``."""
    fields = [f for f in q.fields if f not in TEXT_FIELDS]
    if not fields:
        return empty_partials()
    params: list[Any] = [*q.households, q.category, level, start_ns, stop_ns, *fields]
    sql = (
        "SELECT household, device, bucket_ns, field, n, total, min, max, first, first_ts, last, last_ts "
        "FROM rollups WHERE household IN (" + ", ".join("?" for _ in q.households) + ") "
        "AND measurement = ? AND level = ? AND bucket_ns >= ? AND bucket_ns < ? "
        "AND field IN (" + ", ".join("?" for _ in fields) + ")"
    )
    if q.devices is not None:
        sql += " AND device IN (" + ", ".join("?" for _ in q.devices) + ")"
        params.extend(q.devices)
    rows = conn.execute(sql, params).fetchall()
    if not rows:
        return empty_partials()
    return pl.DataFrame(rows, schema=empty_partials().schema, orient="row")


def finish(partials: pl.DataFrame, q: SeriesQuery) -> pl.DataFrame:
    """Partials already combined to the query's windows -> the contract's result frame."""
    if partials.height == 0:
        return empty_result(q)
    agg = q.agg
    value = {
        "mean": pl.col("total") / pl.col("n"),
        "sum": pl.col("total"),
        "min": pl.col("min"),
        "max": pl.col("max"),
        "first": pl.col("first"),
        "last": pl.col("last"),
        "count": pl.col("n").cast(pl.Float64),
    }[agg]
    wide = (
        partials.with_columns(value.alias("value"))
        .pivot(on="field", index=["household", "device", "window"], values="value")
        .sort(["household", "device", "window"])
    )
    schema = result_schema(q)
    cols: list[pl.Expr] = [
        pl.col("window").cast(pl.Datetime("ns", "UTC")).cast(pl.Datetime("us", "UTC")).alias("time"),
        pl.col("household"),
        pl.col("device"),
    ]
    for name in q.fields:
        dtype = schema[name]
        if name in wide.columns:
            expr = pl.col(name)
            if agg == "count":
                expr = expr.fill_null(0)
            cols.append(expr.cast(dtype).alias(name))
        else:
            cols.append(pl.lit(0 if agg == "count" else None).cast(dtype).alias(name))
    return wide.select(cols)
