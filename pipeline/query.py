"""The one way to ask for series data, shared by every store and by the API.

A ``SeriesQuery`` is validated when it is built, so a store never sees a malformed request and the
API can turn ``QueryError`` straight into a 400 naming the offending parameter.

Result contract (both stores, identical frames; ``pipeline.frames`` implements it once):

* columns ``time`` (Datetime("us", "UTC")), ``household`` (Utf8), ``device`` (Utf8), then each
  requested field in request order; sorted by household, device, time.
* dtypes of field columns: see ``output_dtype`` -- Float64 for numbers, Boolean for the status
  flags (``fault``, ``running``, ``connected``), Utf8 for ``state``; ``count`` is Int64 and ``mean``/
  ``sum`` of a flag is Float64 (fraction / number of true samples).
* without ``every``: the raw points with ``start <= ts < stop`` that carry at least one requested
  field; a field absent at a point is null.
* with ``every``: one row per household/device/window holding at least one such point; ``time`` is
  the window start aligned to the Unix epoch (``floor(ts / every) * every``); ``agg`` applies to each
  field over its non-null samples (``first``/``last`` by time; a field with no sample in the window
  is null, except ``count`` which is 0).
* an empty result still has every column with its dtype.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import polars as pl

from pipeline.errors import PipelineError

# Re-exported: the query vocabulary is the one field table's.
from seeds.vocabulary import BOOL_FIELDS as BOOL_FIELDS
from seeds.vocabulary import COUNTER_FIELDS as COUNTER_FIELDS
from seeds.vocabulary import QUERYABLE_FIELDS as QUERYABLE_FIELDS
from seeds.vocabulary import RAW_FIELDS as RAW_FIELDS
from seeds.vocabulary import STORED_CATEGORIES
from seeds.vocabulary import TEXT_FIELDS as TEXT_FIELDS

Agg = Literal["mean", "min", "max", "sum", "first", "last", "count"]
AGGS: Final[tuple[str, ...]] = ("mean", "min", "max", "sum", "first", "last", "count")

_ID_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class QueryError(PipelineError, ValueError):
    """A query parameter is invalid; ``field`` names the parameter so the API can say which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def output_dtype(field: str, agg: str | None) -> pl.DataType:
    """Column dtype of ``field`` in a result, given the aggregation (``None`` for raw points)."""
    if agg == "count":
        return pl.Int64()
    if field in BOOL_FIELDS:
        return pl.Float64() if agg in ("mean", "sum") else pl.Boolean()
    if field in TEXT_FIELDS:
        return pl.Utf8()
    return pl.Float64()


def valid_id(value: str) -> bool:
    """Household and device ids are opaque tokens; anything else is refused before reaching a store."""
    return isinstance(value, str) and _ID_RE.fullmatch(value) is not None


def check_range(start: datetime, stop: datetime) -> None:
    """A query's or a deletion's ``[start, stop)``: timezone-aware and not empty."""
    for label, ts in (("start", start), ("stop", stop)):
        if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
            raise QueryError(label, "must be a timezone-aware datetime")
    if not start < stop:
        raise QueryError("stop", "stop must be after start")


@dataclass(frozen=True)
class SeriesQuery:
    households: tuple[str, ...]
    category: str
    fields: tuple[str, ...]
    start: datetime
    stop: datetime
    every: timedelta | None = None
    agg: Agg = "mean"
    devices: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.households, tuple) or not self.households:
            raise QueryError("households", "at least one household id is required (as a tuple)")
        for hh in self.households:
            if not valid_id(hh):
                raise QueryError("households", f"malformed household id {hh!r}")
        if len(set(self.households)) != len(self.households):
            raise QueryError("households", "duplicate household id")
        if self.category not in STORED_CATEGORIES:
            raise QueryError("category", f"unknown series category {self.category!r}")
        if not isinstance(self.fields, tuple) or not self.fields:
            raise QueryError("fields", "at least one field is required (as a tuple)")
        for name in self.fields:
            if name not in QUERYABLE_FIELDS:
                raise QueryError("fields", f"unknown field {name!r}")
        if len(set(self.fields)) != len(self.fields):
            raise QueryError("fields", "duplicate field")
        check_range(self.start, self.stop)
        if self.every is not None:
            if not isinstance(self.every, timedelta) or self.every <= timedelta(0):
                raise QueryError("every", "must be a positive duration")
            if self.every % timedelta(microseconds=1) != timedelta(0):
                raise QueryError("every", "must be a whole number of microseconds")
        if self.agg not in AGGS:
            raise QueryError("agg", f"unknown aggregation {self.agg!r}")
        if self.every is not None:
            for name in self.fields:
                if name in TEXT_FIELDS and self.agg not in ("first", "last", "count"):
                    raise QueryError("agg", f"{self.agg!r} is undefined for text field {name!r}")
        if self.devices is not None:
            if not isinstance(self.devices, tuple) or not self.devices:
                raise QueryError("devices", "when given, at least one device id (as a tuple)")
            for dev in self.devices:
                if not valid_id(dev):
                    raise QueryError("devices", f"malformed device id {dev!r}")

    @property
    def start_ns(self) -> int:
        return datetime_to_ns(self.start)

    @property
    def stop_ns(self) -> int:
        return datetime_to_ns(self.stop)

    @property
    def every_ns(self) -> int | None:
        if self.every is None:
            return None
        return self.every // timedelta(microseconds=1) * 1000


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_to_ns(ts: datetime) -> int:
    """Exact (integer) nanoseconds since the epoch; float timestamps would lose microseconds.  (Runs
    per reading: the timedelta's parts are cheaper than dividing timedeltas.)"""
    d = ts - _EPOCH
    return (d.days * 86_400 + d.seconds) * 1_000_000_000 + d.microseconds * 1000


@dataclass(frozen=True)
class Deletion:
    """What an erasure removes from a store: one household's points of one measurement in
    ``[start, stop)``.  Validated when built, like a query: the stores put the household and the
    measurement into a delete statement (SQLite as parameters; InfluxDB's delete API takes only a
    predicate text, so there they must be a well-formed id and a known measurement)."""

    household: str
    measurement: str
    start: datetime
    stop: datetime

    def __post_init__(self) -> None:
        if not valid_id(self.household):
            raise QueryError("household", f"malformed household id {self.household!r}")
        if self.measurement not in STORED_CATEGORIES:
            raise QueryError("measurement", f"unknown series category {self.measurement!r}")
        check_range(self.start, self.stop)
