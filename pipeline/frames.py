"""Shape raw points into the result frame ``SeriesQuery`` promises, once for every store.

Stores only have to fetch the raw points of a query (``start <= ts < stop``, the requested
households/devices, at least one requested field present) into a frame with ``ts_ns``, ``household``,
``device`` and one column per field; ``shape_result`` does the rest (dtypes, epoch-aligned windows,
aggregation, order).  Doing this in one place is what makes the two stores return identical frames.
"""

from __future__ import annotations

from datetime import timedelta

import polars as pl

from pipeline.query import SeriesQuery, output_dtype

_WIN = "__window_us"


def result_schema(q: SeriesQuery) -> dict[str, pl.DataType]:
    agg = q.agg if q.every is not None else None
    schema: dict[str, pl.DataType] = {
        "time": pl.Datetime("us", "UTC"),
        "household": pl.Utf8(),
        "device": pl.Utf8(),
    }
    for name in q.fields:
        schema[name] = output_dtype(name, agg)
    return schema


def empty_result(q: SeriesQuery) -> pl.DataFrame:
    return pl.DataFrame(schema=result_schema(q))


def shape_result(raw: pl.DataFrame, q: SeriesQuery) -> pl.DataFrame:
    """``raw``: columns ``ts_ns`` (int, ns since epoch), ``household``, ``device`` and each field of
    ``q`` (missing columns are treated as all-null).  Rows outside the query are filtered here too,
    so a store may over-fetch safely."""
    if raw.height == 0:
        return empty_result(q)
    cols: list[pl.Expr] = [
        pl.col("ts_ns").cast(pl.Int64),
        pl.col("household").cast(pl.Utf8),
        pl.col("device").cast(pl.Utf8),
    ]
    for name in q.fields:
        dtype = output_dtype(name, None)
        if name in raw.columns:
            cols.append(pl.col(name).cast(dtype, strict=False).alias(name))
        else:
            cols.append(pl.lit(None, dtype=dtype).alias(name))
    frame = raw.select(cols)
    keep = (pl.col("ts_ns") >= q.start_ns) & (pl.col("ts_ns") < q.stop_ns)
    keep = keep & pl.col("household").is_in(list(q.households))
    if q.devices is not None:
        keep = keep & pl.col("device").is_in(list(q.devices))
    keep = keep & pl.any_horizontal([pl.col(n).is_not_null() for n in q.fields])
    frame = frame.filter(keep)
    if frame.height == 0:
        return empty_result(q)
    # Floor to microseconds (the result resolution); floor division keeps pre-1970 stamps correct too.
    frame = frame.with_columns((pl.col("ts_ns") // 1000).alias("ts_us")).drop("ts_ns")
    if q.every is None:
        out = frame.sort(["household", "device", "ts_us"]).select(
            pl.col("ts_us").cast(pl.Datetime("us", "UTC")).alias("time"),
            "household",
            "device",
            *q.fields,
        )
        return out.cast(result_schema(q))  # type: ignore[arg-type]
    every_us = q.every // timedelta(microseconds=1)
    frame = frame.with_columns(((pl.col("ts_us") // every_us) * every_us).alias(_WIN)).sort(
        ["household", "device", "ts_us"]
    )
    aggs = [_agg_expr(name, q.agg) for name in q.fields]
    out = frame.group_by(["household", "device", _WIN], maintain_order=True).agg(aggs)
    out = out.sort(["household", "device", _WIN]).select(
        pl.col(_WIN).cast(pl.Datetime("us", "UTC")).alias("time"),
        "household",
        "device",
        *q.fields,
    )
    return out.cast(result_schema(q))  # type: ignore[arg-type]


def _agg_expr(name: str, agg: str) -> pl.Expr:
    col = pl.col(name)
    present = col.drop_nulls()
    if agg == "count":
        return col.count().cast(pl.Int64).alias(name)
    if agg == "first":
        return present.first().alias(name)
    if agg == "last":
        return present.last().alias(name)
    num = col.cast(pl.Float64)
    if agg == "mean":
        return num.mean().alias(name)
    if agg == "sum":
        return pl.when(col.count() > 0).then(num.sum()).otherwise(None).alias(name)
    if agg == "min":
        return col.min().alias(name)
    if agg == "max":
        return col.max().alias(name)
    raise ValueError(f"unknown aggregation {agg!r}")


def raw_result_from_rows(rows: list[tuple[object, ...]], q: SeriesQuery) -> pl.DataFrame:
    """Fast path for raw queries: ``rows`` are ``(ts_ns, household, device, *fields)`` already
    filtered to the query and ordered by household, device, ts_ns (the store's SQL does that), so
    only the column types remain to be set.  Same output as ``shape_result``."""
    if not rows:
        return empty_result(q)
    schema = result_schema(q)
    columns = list(zip(*rows, strict=True))
    data: dict[str, pl.Series] = {
        "time": (pl.Series("time", columns[0], dtype=pl.Int64) // 1000).cast(pl.Datetime("us", "UTC")),
        "household": pl.Series("household", columns[1], dtype=pl.Utf8),
        "device": pl.Series("device", columns[2], dtype=pl.Utf8),
    }
    for i, name in enumerate(q.fields, start=3):
        dtype = schema[name]
        if dtype == pl.Boolean:
            data[name] = pl.Series(name, columns[i], dtype=pl.Int64).cast(pl.Boolean)
        else:
            data[name] = pl.Series(name, columns[i], dtype=dtype)
    return pl.DataFrame(data)
