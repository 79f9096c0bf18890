"""Minute rollups kept at ingest, and windowed queries answered from them.

A dashboard's "last 24 h at 1 minute" over 10-second readings would otherwise aggregate 8,640 raw
rows per series on every request.  With this table it reads 25 rows.

Layout: one row per (household, measurement, field, hour, device) holding, for each of the hour's 60
minutes, the partial aggregates every ``SeriesQuery`` aggregation is rebuilt from: count, sum, min, max,
first and last value.  Each is a BLOB of 60 little-endian float64 (count 0: no sample that minute).
Packed by the hour because turning SQLite rows into Python objects costs about a microsecond a value
on the machines this runs on: 1,440 minute rows would cost more than the rest of an API request.

Ingest (``MinuteRollups.refresh``, in the same transaction as the points): every minute a write
touched is *recomputed* by SQLite from the stored points and its slots are overwritten, never added
to, so a replayed or re-written point (same series and timestamp, fields merged) counts once, exactly
as the points table holds it.

Queries (``windows``) whose resolution is a whole number of minutes: whole minutes inside
``[start, stop)`` come from the rollups, the partial minutes at either end from raw points, and
polars merges them into epoch-aligned windows (every partial covers its own minute, so minute order is
time order for ``first``/``last``).  Results equal the raw path's (``pipeline.frames.shape_result``)
up to the order of floating-point summation.  Text fields (``state``) are not rolled up; a query
naming one takes the raw path.
"""

from __future__ import annotations

import sqlite3
from array import array
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Final

import numpy as np
import polars as pl
from numpy.typing import NDArray

from pipeline.frames import empty_result, result_schema
from pipeline.query import TEXT_FIELDS, SeriesQuery
from pipeline.rollup import RAW_FLOOR_SQL, raw_floor

MINUTE_NS: Final = 60 * 1_000_000_000
HOUR_NS: Final = 60 * MINUTE_NS
SLOTS: Final = 60
PARTS: Final = ("n", "total", "min", "max", "first", "last")

# A rowid table with its key as a unique index, not a WITHOUT ROWID table keyed by it: an hour row
# (six blobs of 60 floats, about 3 KB) is larger than a quarter of a page, and a WITHOUT ROWID table
# keeps whole rows in its inner nodes too, so a few rows filled each node, spilled onto overflow pages,
# and every look-up walked a deep tree: reading the open hour of 100 homes cost 2.3 ms, against
# 0.46 ms for this layout (the key's index is small and shallow; each row sits whole in one page).
COLUMNS: Final = (
    "household",
    "measurement",
    "field",
    "hour_ns",
    "device",
    *("n", "total", "min", "max", "first", "last"),
)
_KEY: Final = "household, measurement, field, hour_ns, device"
SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS minute_rollups ("
    "household TEXT NOT NULL, measurement TEXT NOT NULL, field TEXT NOT NULL, hour_ns INTEGER NOT NULL, "
    "device TEXT NOT NULL, n BLOB NOT NULL, total BLOB NOT NULL, min BLOB NOT NULL, max BLOB NOT NULL, "
    f"first BLOB NOT NULL, last BLOB NOT NULL, UNIQUE ({_KEY}))"
)
_TOUCHED: Final = (
    "CREATE TEMP TABLE IF NOT EXISTS touched_minutes ("
    "household TEXT NOT NULL, measurement TEXT NOT NULL, minute_ns INTEGER NOT NULL, mask INTEGER NOT NULL)"
)
_TOUCHED_HOURS: Final = (
    "CREATE TEMP TABLE IF NOT EXISTS touched_hours ("
    "household TEXT NOT NULL, measurement TEXT NOT NULL, field TEXT NOT NULL, hour_ns INTEGER NOT NULL, "
    "device TEXT NOT NULL)"
)
# Updated in place (a row keeps its size), where a REPLACE would delete it and insert it anew.
_UPSERT: Final = (
    f"INSERT INTO minute_rollups ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)}) "
    f"ON CONFLICT ({_KEY}) DO UPDATE SET "
    "n = excluded.n, total = excluded.total, min = excluded.min, max = excluded.max, "
    "first = excluded.first, last = excluded.last"
)
_EXISTING: Final = (
    "SELECT r.household, r.measurement, r.field, r.hour_ns, r.device, r.n, r.total, r.min, r.max, "
    "r.first, r.last FROM temp.touched_hours t CROSS JOIN minute_rollups r ON r.household = t.household "
    "AND r.measurement = t.measurement AND r.field = t.field AND r.hour_ns = t.hour_ns "
    "AND r.device = t.device"
)
_EMPTY: Final = array("d", [0.0] * SLOTS).tobytes()

HourKey = tuple[str, str, str, int, str]  # household, measurement, field, hour_ns, device
MinuteSpans = Mapping[tuple[str, str], tuple[set[int], frozenset[str]]]


def rolled_up(columns: Sequence[str]) -> tuple[str, ...]:
    """The field columns that get minute rollups: every one but text."""
    return tuple(c for c in columns if c not in TEXT_FIELDS)


def _partials_sql(column: str) -> str:
    """Per (household, measurement, device, minute) listed in ``temp.touched_minutes`` whose mask has the
    column's bit: the minute's partial aggregates of ``column``, recomputed from the points.  ``column``
    is a whitelisted column name (the SQL text never holds a value)."""
    c = column
    point = "p.household = g.household AND p.measurement = g.measurement AND p.device = g.device"
    return (
        "SELECT g.household, g.measurement, g.device, g.b, g.n, g.total, g.mn, g.mx, "
        f"(SELECT p.{c} FROM points p WHERE {point} AND p.ts_ns = g.ft), "
        f"(SELECT p.{c} FROM points p WHERE {point} AND p.ts_ns = g.lt) "
        "FROM (SELECT p.household, p.measurement, p.device, t.minute_ns AS b, count(*) AS n, "
        f"sum(p.{c}) AS total, min(p.{c}) AS mn, max(p.{c}) AS mx, min(p.ts_ns) AS ft, max(p.ts_ns) AS lt "
        "FROM temp.touched_minutes t CROSS JOIN points p "
        "ON p.household = t.household AND p.measurement = t.measurement "
        f"AND p.ts_ns >= t.minute_ns AND p.ts_ns < t.minute_ns + {MINUTE_NS} "
        f"WHERE t.mask & :bit AND p.{c} IS NOT NULL "
        "GROUP BY p.household, p.measurement, p.device, t.minute_ns) g"
    )


class MinuteRollups:
    """The rollups of one schema's columns (the SQL is built once)."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = rolled_up(columns)
        self._bit = {c: 1 << i for i, c in enumerate(self.columns)}
        self._partials = {c: _partials_sql(c) for c in self.columns}

    def create(self, conn: sqlite3.Connection) -> None:
        conn.execute(SCHEMA)

    def refresh(self, conn: sqlite3.Connection, touched: MinuteSpans) -> None:
        """Recompute the minutes a write touched: ``touched`` maps (household, measurement) to the minutes
        (ns, floored) it wrote points in and the fields those carried (a re-write changes only the fields
        it carries).  Call inside the write's transaction, after the points are written."""
        conn.execute(_TOUCHED)
        conn.execute("DELETE FROM temp.touched_minutes")
        bit = self._bit
        rows: list[tuple[str, str, int, int]] = []
        carried: set[str] = set()
        for (household, measurement), (minutes, names) in touched.items():
            mask = 0
            for name in names:
                mask |= bit.get(name, 0)
            if mask:
                carried.update(names)
                rows.extend((household, measurement, minute, mask) for minute in minutes)
        if not rows:
            return
        conn.executemany("INSERT INTO temp.touched_minutes VALUES (?, ?, ?, ?)", rows)
        # (hour key) -> [(slot, n, total, min, max, first, last), ...]
        updates: dict[HourKey, list[tuple[Any, ...]]] = {}
        for column in self.columns:
            if column not in carried:
                continue
            for household, measurement, device, minute, *parts in conn.execute(
                self._partials[column], {"bit": bit[column]}
            ):
                offset = minute % HOUR_NS
                key = (household, measurement, column, minute - offset, device)
                slot = (offset // MINUTE_NS, *parts)
                found = updates.get(key)
                if found is None:
                    updates[key] = [slot]
                else:
                    found.append(slot)
        if updates:
            self._patch(conn, updates)

    def _patch(self, conn: sqlite3.Connection, updates: Mapping[HourKey, list[tuple[Any, ...]]]) -> None:
        """Overwrite the recomputed slots of each hour row (created empty where there is none yet)."""
        conn.execute(_TOUCHED_HOURS)
        conn.execute("DELETE FROM temp.touched_hours")
        conn.executemany("INSERT INTO temp.touched_hours VALUES (?, ?, ?, ?, ?)", updates)
        stored: dict[HourKey, list[array[float]]] = {
            tuple(row[:5]): [array("d", blob) for blob in row[5:]] for row in conn.execute(_EXISTING)
        }
        out = []
        for key, slots in updates.items():
            parts = stored.get(key)
            if parts is None:
                parts = [array("d", _EMPTY) for _ in PARTS]
            n, total, low, high, first, last = parts
            for i, count, s, lo, hi, f, la in slots:
                n[i] = count
                total[i] = s
                low[i] = lo
                high[i] = hi
                first[i] = f
                last[i] = la
            out.append((*key, *(p.tobytes() for p in parts)))
        conn.executemany(_UPSERT, out)

    def backfill(self, conn: sqlite3.Connection, present: Collection[str]) -> None:
        """Summarise every stored point (once, for a database written before this table existed);
        ``present``: the columns the file's points table has (an old file may lack newer fields)."""
        every_field = frozenset(c for c in self.columns if c in present)
        series = conn.execute("SELECT DISTINCT household, measurement FROM points").fetchall()
        for household, measurement in series:
            minutes = {
                int(m)
                for (m,) in conn.execute(
                    f"SELECT DISTINCT ts_ns - ((ts_ns % {MINUTE_NS}) + {MINUTE_NS}) % {MINUTE_NS} "
                    "FROM points WHERE household = ? AND measurement = ?",
                    (household, measurement),
                )
            }
            self.refresh(conn, {(household, measurement): (minutes, every_field)})

    def erase(
        self, conn: sqlite3.Connection, household: str, measurement: str, start_ns: int, stop_ns: int
    ) -> int:
        """Erasure of ``[start_ns, stop_ns)`` of one series: every hour row overlapping it goes (its
        slots mix erased samples with others), and the minutes of the two edge hours that still hold
        points are summarised again from them.  Call after the points are deleted, in the same
        transaction.  Returns the hour rows removed."""
        first = start_ns - start_ns % HOUR_NS
        last = (stop_ns - 1) - (stop_ns - 1) % HOUR_NS
        removed: int = conn.execute(
            "DELETE FROM minute_rollups WHERE household = ? AND measurement = ? AND hour_ns >= ? "
            "AND hour_ns <= ?",
            (household, measurement, first, last),
        ).rowcount
        minutes: set[int] = set()
        for edge in {first, last}:
            minutes.update(
                int(m)
                for (m,) in conn.execute(
                    f"SELECT DISTINCT ts_ns - ((ts_ns % {MINUTE_NS}) + {MINUTE_NS}) % {MINUTE_NS} "
                    "FROM points WHERE household = ? AND measurement = ? AND ts_ns >= ? AND ts_ns < ?",
                    (household, measurement, edge, edge + HOUR_NS),
                )
            )
        if minutes:
            self.refresh(conn, {(household, measurement): (minutes, frozenset(self.columns))})
        return removed


def serves(q: SeriesQuery) -> bool:
    """Whether ``windows`` can answer ``q`` (the caller also checks that no raw data below ``start``
    was deleted by retention)."""
    every = q.every_ns
    return every is not None and every % MINUTE_NS == 0 and not any(f in TEXT_FIELDS for f in q.fields)


SMALL_NS: Final = 48 * HOUR_NS


def small(q: SeriesQuery) -> bool:
    """Answered from rollups and at most two days of one home (or one day of two): a few dozen rows,
    cheap enough to run on the caller's thread."""
    return serves(q) and (q.stop_ns - q.start_ns) * len(q.households) <= SMALL_NS


# The partials each aggregation needs (``n`` always: it tells which minutes have samples).
_NEEDS: Final[Mapping[str, tuple[str, ...]]] = {
    "mean": ("total",),
    "sum": ("total",),
    "min": ("min",),
    "max": ("max",),
    "count": (),
    "first": ("first",),
    "last": ("last",),
}


def _in(column: str, prefix: str, values: Sequence[str], params: dict[str, Any]) -> str:
    if len(values) == 1:
        params[prefix] = values[0]
        return f"{column} = :{prefix}"
    names = []
    for i, value in enumerate(values):
        params[f"{prefix}{i}"] = value
        names.append(f":{prefix}{i}")
    return f"{column} IN ({', '.join(names)})"


def _inner(q: SeriesQuery) -> tuple[int, int]:
    """The whole minutes inside ``[start, stop)``: ``[ceil(start), floor(stop))``."""
    start, stop = q.start_ns, q.stop_ns
    return -(-start // MINUTE_NS) * MINUTE_NS, stop // MINUTE_NS * MINUTE_NS


def _edges(q: SeriesQuery) -> list[tuple[int, int]]:
    lo, hi = _inner(q)
    if lo >= hi:  # no whole minute inside: every point comes from the raw table
        return [(q.start_ns, q.stop_ns)]
    return [(a, b) for a, b in ((q.start_ns, lo), (hi, q.stop_ns)) if a < b]


_KEYS: Final = ["household", "device", "time"]
Floats = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class _Minutes:
    """Partial aggregates, one entry per minute (or window), in household, device, time order: the
    labels as polars Series, the numbers as numpy arrays (``t``: the start in us; ``n``: the samples;
    ``parts``: the aggregation's partials by name, see ``PARTS``)."""

    household: pl.Series
    device: pl.Series
    t: NDArray[np.int64]
    n: Floats
    parts: dict[str, Floats]

    def frame(self) -> pl.DataFrame:
        return pl.DataFrame(
            [
                self.household.alias("household"),
                self.device.alias("device"),
                pl.Series("t", self.t, dtype=pl.Int64),
                pl.Series("n", self.n, dtype=pl.Float64),
                *(pl.Series(name, v, dtype=pl.Float64) for name, v in self.parts.items()),
            ]
        )

    @staticmethod
    def of(frame: pl.DataFrame, parts: Sequence[str]) -> _Minutes:
        return _Minutes(
            frame.get_column("household"),
            frame.get_column("device"),
            frame.get_column("t").to_numpy(),
            frame.get_column("n").to_numpy(),
            {p: frame.get_column(p).to_numpy() for p in parts},
        )


def windows(conn: sqlite3.Connection, q: SeriesQuery) -> pl.DataFrame | None:
    """The result frame of a windowed query (see ``serves``), or None when retention deleted raw
    points after ``q.start`` (their minutes are gone too: the hourly and daily rollups answer).

    A day of minutes is small, and each polars call through its expression engine costs tens of
    microseconds, so the common path (whole minutes, one field) uses only Series operations."""
    schema = result_schema(q)
    frames = []
    for column in q.fields:
        rows, floor = _hour_rows(conn, q, column)
        if floor is not None and floor > q.start_ns:
            return None
        frame = _field_windows(conn, q, column, schema, rows)
        if frame is not None:
            frames.append(frame)
    if not frames:
        return empty_result(q)
    if len(frames) == 1 and len(q.fields) == 1:
        return frames[0]
    out = frames[0]
    for more in frames[1:]:
        out = out.join(more, on=_KEYS, how="full", coalesce=True)
    out = out.sort(_KEYS)
    missing = [c for c in q.fields if c not in out.columns]
    if missing:
        out = out.with_columns(pl.lit(None, dtype=schema[c]).alias(c) for c in missing)
    if q.agg == "count":
        out = out.with_columns(pl.col(c).fill_null(0) for c in q.fields)
    return out.select(list(schema)).cast(schema)  # type: ignore[arg-type]


def _series_where(q: SeriesQuery, params: dict[str, Any]) -> str:
    """The SQL condition selecting ``q``'s households, category and devices (values in ``params``)."""
    where = _in("household", "h", q.households, params) + " AND measurement = :measurement"
    params["measurement"] = q.category
    if q.devices is not None:
        where += " AND " + _in("device", "d", q.devices, params)
    return where


def _hour_rows(
    conn: sqlite3.Connection, q: SeriesQuery, column: str
) -> tuple[list[tuple[Any, ...]], int | None]:
    """The hour rows of ``column`` under ``q`` (household, device, hour_ns, n, then the agg's parts, in
    that order) and retention's raw floor, read by the same statement: each statement costs the
    event loop a hand-over of the GIL and a read transaction of its own.

    SQLite reads them in its key's order (household, hour, device), which needs no sort of its own; a
    home with several devices of the category has its rows put in device order here (a stable sort
    of a few dozen rows costs less than SQLite's temporary B-tree)."""
    lo, hi = _inner(q)
    params: dict[str, Any] = {"field": column, "lo": lo - lo % HOUR_NS, "hi": hi}
    rows = conn.execute(
        f"SELECT household, device, hour_ns, n{''.join(', ' + p for p in _NEEDS[q.agg])}, "
        f"({RAW_FLOOR_SQL}) FROM minute_rollups "
        f"WHERE {_series_where(q, params)} AND field = :field AND hour_ns >= :lo AND hour_ns < :hi "
        "ORDER BY household, hour_ns, device",
        params,
    ).fetchall()
    if rows:
        device = rows[0][1]
        if any(row[1] != device for row in rows):
            rows.sort(key=_HOUSEHOLD_DEVICE)
    floor = rows[0][-1] if rows else raw_floor(conn)
    return rows, floor


_HOUSEHOLD_DEVICE: Final = itemgetter(0, 1)


def _field_windows(
    conn: sqlite3.Connection,
    q: SeriesQuery,
    column: str,
    schema: Mapping[str, pl.DataType],
    rows: list[tuple[Any, ...]],
) -> pl.DataFrame | None:
    """One field's windows from its hour ``rows`` and the raw points of the partial minutes at the
    ends: time, household, device, ``column`` (None: no sample at all)."""
    parts = _NEEDS[q.agg]
    lo, hi = _inner(q)
    pieces = [_unpack(rows, parts, lo, hi)] if rows else []
    edges = _edges(q)
    if edges:
        params: dict[str, Any] = {}
        series = _series_where(q, params)
        ranges = []
        for i, (a, b) in enumerate(edges):
            params[f"a{i}"], params[f"b{i}"] = a, b
            ranges.append(f"(ts_ns >= :a{i} AND ts_ns < :b{i})")
        # ``column`` is a whitelisted name; every value is a parameter.
        raw = conn.execute(
            f"SELECT household, device, ts_ns, {column} FROM points "
            f"WHERE {series} AND ({' OR '.join(ranges)}) AND {column} IS NOT NULL "
            "ORDER BY household, device, ts_ns",
            params,
        ).fetchall()
        if raw:
            pieces.append(_raw_minutes(raw, parts))
    pieces = [p for p in pieces if len(p.t)]
    if not pieces:
        return None
    every = q.every_ns
    assert every is not None
    if len(pieces) == 1 and every == MINUTE_NS:
        minutes = pieces[0]  # already one row per window, in household, device, time order
    else:
        frame = pl.concat([p.frame() for p in pieces]).sort("household", "device", "t")
        minutes = _Minutes.of(_combine(frame, every // 1000), parts)
    dtype = schema[column]
    value = pl.Series(column, _value(q.agg, minutes))
    if dtype != pl.Float64:
        value = (value != 0) if dtype == pl.Boolean else value.cast(dtype)
    return pl.DataFrame(
        [
            pl.Series("time", minutes.t, dtype=_TIME),
            minutes.household.alias("household"),
            minutes.device.alias("device"),
            value,
        ]
    )


_SLOT_US: Final = np.arange(SLOTS, dtype=np.int64) * (MINUTE_NS // 1000)
_TIME: Final = pl.Datetime("us", "UTC")


def _unpack(rows: list[tuple[Any, ...]], parts: Sequence[str], lo: int, hi: int) -> _Minutes:
    """Hour rows -> the minutes in ``[lo, hi)`` that have samples, in row order.

    The blobs are read by numpy in place (``frombuffer``), and polars takes numpy arrays without a
    copy: a polars Series built from an ``array`` or a list converts every value on its own, which
    cost more than the query itself (a day of minutes is 1,440 values per column)."""
    cols = list(zip(*rows, strict=True))
    hours = np.fromiter(cols[2], dtype=np.int64, count=len(rows))
    t = ((hours // 1000)[:, None] + _SLOT_US).ravel()
    n = np.frombuffer(b"".join(cols[3]), dtype="<f8")
    values = {part: np.frombuffer(b"".join(cols[i]), dtype="<f8") for i, part in enumerate(parts, start=4)}
    # Minutes outside the range (in the hours at its ends) and minutes without a sample (gaps) go.
    keep = (n > 0) & (t >= lo // 1000) & (t < hi // 1000)
    row_of = np.repeat(np.arange(len(rows)), SLOTS)
    if not keep.all():
        t, n, row_of = t[keep], n[keep], row_of[keep]
        values = {part: v[keep] for part, v in values.items()}
    return _Minutes(_labels(cols[0], row_of), _labels(cols[1], row_of), t, n, values)


class _OneLabel(dict[str, pl.Series]):
    """Text -> a one-value Series of it: ``new_from_index`` repeats it for a page in about a
    microsecond, while building a Series from a Python list costs several (a page needs two)."""

    def __missing__(self, text: str) -> pl.Series:
        if len(self) >= 4096:
            self.clear()
        one = self[text] = pl.Series([text], dtype=pl.Utf8)
        return one


_ONE_LABEL: Final = _OneLabel()


def _labels(per_row: Sequence[str], row_of: NDArray[np.int64]) -> pl.Series:
    """The text of each minute's row (one value repeated costs no Python list)."""
    first = per_row[0]
    if per_row.count(first) == len(per_row):
        return _ONE_LABEL[first].new_from_index(0, len(row_of))
    return pl.Series(per_row, dtype=pl.Utf8).gather(row_of)


def _raw_minutes(raw: list[tuple[Any, ...]], parts: Sequence[str]) -> _Minutes:
    """Raw points (household, device, ts_ns, value), ordered by household, device, time: the partials
    of the (partial) minutes they fall in.  Only the ends of a window come this way: a few points."""
    acc: dict[tuple[str, str, int], list[float]] = {}
    for household, device, ts, v in raw:
        key = (household, device, (ts - ts % MINUTE_NS) // 1000)
        a = acc.get(key)
        if a is None:
            acc[key] = [1.0, v, v, v, v, v]
        else:
            a[0] += 1
            a[1] += v
            a[2] = min(a[2], v)
            a[3] = max(a[3], v)
            a[5] = v
    keys = list(acc)
    values = np.array(list(acc.values()), dtype=np.float64)
    return _Minutes(
        pl.Series([k[0] for k in keys], dtype=pl.Utf8),
        pl.Series([k[1] for k in keys], dtype=pl.Utf8),
        np.array([k[2] for k in keys], dtype=np.int64),
        values[:, 0],
        {part: values[:, PARTS.index(part)] for part in parts},
    )


_MERGE: Final[Mapping[str, pl.Expr]] = {
    "total": pl.col("total").sum(),
    "min": pl.col("min").min(),
    "max": pl.col("max").max(),
    "first": pl.col("first").first(),
    "last": pl.col("last").last(),
}


def _combine(partials: pl.DataFrame, every_us: int) -> pl.DataFrame:
    """Partials (sorted by household, device, t) merged into epoch-aligned windows of ``every_us``."""
    merge = [pl.col("n").sum(), *(_MERGE[c] for c in partials.columns if c in _MERGE)]
    return (
        partials.with_columns((pl.col("t") // every_us * every_us).alias("t"))
        .group_by("household", "device", "t", maintain_order=True)
        .agg(merge)
    )


def _value(agg: str, m: _Minutes) -> Floats:
    if agg == "mean":
        return m.parts["total"] / m.n
    if agg == "count":
        return m.n
    return m.parts[{"sum": "total"}.get(agg, agg)]


def delete_below(conn: sqlite3.Connection, cutoff_ns: int) -> int:
    """Retention: the rollups of hours whose raw points were deleted go with them (``cutoff_ns`` is a
    whole day, so no hour row straddles it)."""
    return conn.execute("DELETE FROM minute_rollups WHERE hour_ns < ?", (cutoff_ns,)).rowcount
