"""InfluxDB line protocol for ``Point``s: fast, lossless, and impossible to inject into.

Speed comes from doing the expensive part once per *series* instead of once per point (the escaped
``measurement,device=..,household=..,source=..`` prefix and every escaped ``field=`` key are validated
and cached) and once per *column* instead of once per value: a batch is kept as columns from the
collector's output on (``pipeline.columns.ColumnBatch``, one buffer per measurement and field names):
the batch's numbers, flags and timestamps are turned to text by kind, one polars cast each for the
whole batch, and one ``pl.format`` per buffer writes its lines.  The client library's ``Point``
object re-escapes and re-sorts everything on every call, which is what the ingest benchmark compares
against.

The column path writes exactly the bytes of the line-by-line path (``lines``): polars' shortest
round-trip text of a float is ``repr``'s for 1e-4 <= |x| < 1e16, and a column with a value outside that
range (rare) is written by ``repr`` itself, as is anything else unusual in a column (mixed or exotic
types: ``field_value``, for that column only); a batch with something line protocol must refuse (NaN, a
bad name, an out-of-range timestamp) goes line by line, which names the offending part.

Safety: a name or tag value that line protocol cannot carry unambiguously (control characters such as
a newline, a backslash that could swallow the following separator, an empty tag that InfluxDB would
silently drop and so change the series identity) is refused with ``LineProtocolError`` instead of being
"escaped" into a different value.  Whatever passes is escaped per the spec (comma and space in the
measurement; comma, equals sign and space in tag keys, tag values and field keys; backslash and double
quote inside string values), so one field can never end a line or start another.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Final, TypeAlias

import numpy as np
import polars as pl

from pipeline.columns import DEVICE, HOUSEHOLD, POSITION, SOURCE, TS, VALUES, ColumnBatch, Shape
from pipeline.errors import PipelineError
from pipeline.points import Point, PointValue

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
# Control characters (C0, DEL, C1) and backslash are refused in names and tag values; NUL-like and
# line-breaking characters are refused in string values too (Unicode line/paragraph separators included
# because some tools split lines on them).
_BAD_NAME: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\\\u2028\u2029]")
_BAD_STRING: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u2028\u2029]")
# A lone surrogate is a Python ``str`` but not text: it has no UTF-8 form, so a write body cannot hold it.
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")
# A tag value the column path writes as it is: none of ``_BAD_NAME``'s characters, no lone surrogate,
# nothing to escape (anything else goes through ``series_prefix``, which refuses or escapes it).
_NOT_PLAIN_TAG: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\\\u2028\u2029\ud800-\udfff,= ]")
_RESERVED_KEYS: Final = frozenset({"time"})
_MAX_SERIES_CACHE: Final = 100_000
_VECTOR_MIN: Final = 256  # below this, polars' fixed cost outweighs what it saves

_KINDS: Final[dict[type, str]] = {float: "f", int: "i", bool: "b"}  # a column's kind by its one type

_ESC_MEASUREMENT: Final = str.maketrans({",": r"\,", " ": r"\ "})
_ESC_KEY: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_ESC_STRING: Final = str.maketrans({"\\": "\\\\", '"': '\\"'})

SeriesKey: TypeAlias = tuple[str, str, str, str]


class LineProtocolError(PipelineError, ValueError):
    """A point cannot be written as line protocol without changing its meaning; ``what`` names the part."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(f"{what}: {message}")
        self.what = what
        self.message = message


def _check_name(what: str, value: object, *, reserved_prefix: bool) -> str:
    if not isinstance(value, str):
        raise LineProtocolError(what, f"must be a string, got {type(value).__name__}")
    if not value:
        raise LineProtocolError(what, "must not be empty")
    if _BAD_NAME.search(value):
        raise LineProtocolError(what, f"control character or backslash in {value!r}")
    if reserved_prefix and value.startswith("_"):
        raise LineProtocolError(what, f"{value!r}: names starting with '_' are reserved by InfluxDB")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LineProtocolError(what, f"{value!r} is not valid UTF-8") from exc
    return value


def series_prefix(measurement: str, household: str, device: str, source: str) -> str:
    """Escaped ``measurement,device=..,household=..,source=..`` (tags in key order, as InfluxDB prefers)."""
    tags = (("device", device), ("household", household), ("source", source))
    return ",".join([_measurement_text(measurement), *(_tag_text(key, value) for key, value in tags)])


def _measurement_text(measurement: str) -> str:
    _check_name("measurement", measurement, reserved_prefix=True)
    if measurement.startswith("#"):
        raise LineProtocolError("measurement", f"{measurement!r}: a leading '#' makes the line a comment")
    return measurement.translate(_ESC_MEASUREMENT)


def _tag_text(key: str, value: str) -> str:
    _check_name(key, value, reserved_prefix=False)
    return f"{key}={value.translate(_ESC_KEY)}"


def field_key(name: str) -> str:
    """Escaped field key followed by ``=``."""
    _check_name("field", name, reserved_prefix=True)
    if name in _RESERVED_KEYS:
        raise LineProtocolError("field", f"{name!r} is reserved by InfluxDB")
    return name.translate(_ESC_KEY) + "="


def field_value(name: str, value: PointValue, *, ints_as_floats: bool = False) -> str:
    """One value in line protocol syntax; ``repr`` of a float is the shortest text that round-trips."""
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise LineProtocolError(name, f"{value!r} cannot be stored (InfluxDB has no NaN/inf)")
        return repr(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        if not _INT64_MIN <= value <= _INT64_MAX:  # type: ignore[operator]
            raise LineProtocolError(name, f"{value!r} does not fit in a signed 64-bit integer")
        return f"{value}.0" if ints_as_floats else f"{value}i"
    if kind is str:
        if _BAD_STRING.search(value):  # type: ignore[arg-type]
            raise LineProtocolError(name, f"control character or line break in {value!r}")
        if _SURROGATE.search(value):  # type: ignore[arg-type]
            raise LineProtocolError(name, f"{value!r} is not valid UTF-8 (a lone surrogate)")
        return '"' + value.translate(_ESC_STRING) + '"'  # type: ignore[union-attr]
    # Subclasses (numpy scalars, IntEnum, ...) are normalized explicitly rather than trusted.
    if isinstance(value, bool):
        return field_value(name, bool(value), ints_as_floats=ints_as_floats)
    if isinstance(value, int):
        return field_value(name, int(value), ints_as_floats=ints_as_floats)
    if isinstance(value, float):
        return field_value(name, float(value), ints_as_floats=ints_as_floats)
    if isinstance(value, str):
        return field_value(name, str(value), ints_as_floats=ints_as_floats)
    raise LineProtocolError(name, f"unsupported value type {kind.__name__}")


class _Prefixes(dict[tuple[str, str, str], str]):
    """(household, device, source) -> the validated, escaped series prefix of one measurement."""

    __slots__ = ("measurement",)

    def __init__(self, measurement: str) -> None:
        super().__init__()
        self.measurement = measurement

    def __missing__(self, series: tuple[str, str, str]) -> str:
        if len(self) >= _MAX_SERIES_CACHE:
            self.clear()
        prefix = self[series] = series_prefix(self.measurement, *series)
        return prefix


def _floats_fit(column: pl.Series) -> bool:
    """True when every value of a float column is finite and polars writes it as ``repr`` does: 0, or
    1e-4 <= |x| < 1e16 (outside that, ``repr`` writes an exponent and polars does not).  By numpy on
    the column's own buffer: a polars expression costs ~50 us of planning, numpy ~2 us a call."""
    size = np.abs(column.to_numpy())
    if not size.max() < 1e16:  # (False for a NaN too)
        return False
    return bool(size.min(where=size > 0.0, initial=1.0) >= 1e-4)


def _literal(text: str) -> str:
    """``text`` as literal text of a ``pl.format`` template (braces doubled, as in ``str.format``)."""
    return text.replace("{", "{{").replace("}", "}}")


_UNFIT: Final = object()  # (``LineEncoder._gather``: a float column must be checked on its own)


@dataclass(slots=True)
class _Plan:
    """Where one shape's lines come from: its rows' places in the batch, the text around the household
    (``LineEncoder._lead``) or None, its escaped field keys, and each field's (kind, offset in that
    kind's block)."""

    positions: list[int]
    lead: tuple[str, str] | None
    keys: list[str]
    columns: list[tuple[str, int]]


class _Blocks:
    """A batch's values gathered by kind, end to end, across its shapes and columns (``_Plan`` says
    where each column starts): series tags, timestamps, then floats, ints, flags and ready text."""

    __slots__ = ("stamps", "tags", "values")

    def __init__(self) -> None:
        self.tags: list[str] = []
        self.stamps: list[int] = []
        self.values: dict[str, list[PointValue]] = {"f": [], "i": [], "b": [], "s": []}

    def texts(self) -> dict[str, pl.Series] | object | None:
        """Each block as one column of text: ``p`` (tags), ``t`` (timestamps) and each kind; None when a
        value must be refused (an int or a timestamp past 64 bits), ``_UNFIT`` when the floats hold one
        polars would write otherwise than ``repr`` (or a NaN)."""
        values = self.values
        out = {"p": pl.Series(self.tags, dtype=pl.Utf8)}
        if values["f"]:
            floats = pl.Series(values["f"], dtype=pl.Float64)
            if not _floats_fit(floats):
                return _UNFIT
            out["f"] = floats.cast(pl.Utf8)
        try:
            out["t"] = pl.Series(self.stamps, dtype=pl.Int64).cast(pl.Utf8)
            if values["i"]:
                out["i"] = pl.Series(values["i"], dtype=pl.Int64).cast(pl.Utf8)
        except (OverflowError, TypeError):  # past int64 (polars' error depends on its version)
            return None
        if values["b"]:
            out["b"] = pl.Series(values["b"], dtype=pl.Boolean).cast(pl.Utf8)
        if values["s"]:
            out["s"] = pl.Series(values["s"], dtype=pl.Utf8)
        return out


class LineEncoder:
    """Serializes points, caching validated series prefixes, field keys and whole line templates.

    ``lines`` formats an all-float point with a single ``%`` on a cached template such as
    ``"electricity,device=m1,household=h1,source=echonet power_w=%r %d"``; anything else (bools,
    ints, strings, NaN) takes the general path, which checks and formats value by value.  ``encode``
    writes batches of ``vector_min`` points or more column by column (see ``_encode_batch``).

    ``ints_as_floats`` writes Python ints as floats: InfluxDB fixes a field's type on first write, so
    a store that promises Float64 for every number must not let an ``int`` sneak in and make every
    later float write of that field fail with a type conflict.
    """

    __slots__ = (
        "_keys",
        "_leads",
        "_line_expr_cache",
        "_prefixes",
        "_series",
        "_templates",
        "ints_as_floats",
        "vector_min",
    )

    def __init__(self, *, ints_as_floats: bool = False, vector_min: int = _VECTOR_MIN) -> None:
        self.ints_as_floats = ints_as_floats
        self.vector_min = vector_min
        self._series: dict[SeriesKey, str] = {}
        self._keys: dict[str, str] = {}
        self._templates: dict[tuple[str, ...], str] = {}
        # Column path: series prefixes per measurement, and the polars expression writing each line
        # shape (keys and value suffixes), built once.
        self._prefixes: dict[str, _Prefixes] = {}
        self._leads: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._line_expr_cache: dict[tuple[object, ...], pl.Expr] = {}

    def _prefix(self, point: Point) -> str:
        return self._prefix_of((point.measurement, point.household, point.device, point.source))

    def _key(self, name: str) -> str:
        ekey = self._keys.get(name)
        if ekey is None:
            ekey = self._keys[name] = field_key(name)
        return ekey

    def _template(self, point: Point, tkey: tuple[str, ...]) -> str:
        if not point.fields:
            raise LineProtocolError("fields", "a point needs at least one field")
        body = ",".join(self._key(name).replace("%", "%%") + "%r" for name in point.fields)
        template = self._prefix(point).replace("%", "%%") + " " + body + " %d"
        if len(self._templates) >= _MAX_SERIES_CACHE:
            self._templates.clear()
        self._templates[tkey] = template
        return template

    def _general(self, point: Point) -> str:
        parts = [
            self._key(name) + field_value(name, value, ints_as_floats=self.ints_as_floats)
            for name, value in point.fields.items()
        ]
        if not parts:
            raise LineProtocolError("fields", "a point needs at least one field")
        return f"{self._prefix(point)} {','.join(parts)} {point.ts_ns}"

    def lines(self, points: Iterable[Point]) -> list[str]:
        """One string per point, without newlines."""
        out: list[str] = []
        append = out.append
        templates = self._templates
        for p in points:
            ts = p.ts_ns
            if type(ts) is not int or not _INT64_MIN <= ts <= _INT64_MAX:
                raise LineProtocolError("ts_ns", f"{ts!r} is not a 64-bit integer nanosecond timestamp")
            fields = p.fields
            values = tuple(fields.values())
            for v in values:
                # ``v - v`` is 0.0 for every finite float and NaN for NaN/inf.
                if type(v) is not float or v - v != 0.0:
                    append(self._general(p))
                    break
            else:
                tkey = (p.measurement, p.household, p.device, p.source, *fields)
                template = templates.get(tkey)
                if template is None:
                    template = self._template(p, tkey)
                append(template % (*values, ts))
        return out

    def line(self, point: Point) -> str:
        """One line without the trailing newline."""
        return self.lines((point,))[0]

    def encode(self, points: Iterable[Point]) -> bytes:
        """A write body: lines joined by ``\\n``, UTF-8; exactly ``"\\n".join(self.lines(points))``.

        A ``ColumnBatch`` of ``vector_min`` points or more (a sequence of points is put in one first)
        is written column by column; smaller batches, and any batch with something line protocol must
        refuse, go line by line (which also reports what is wrong)."""
        batch = points if isinstance(points, ColumnBatch) else None
        pts: Sequence[Point] = (
            batch if batch is not None else (points if isinstance(points, list | tuple) else list(points))
        )
        if len(pts) >= self.vector_min:
            body = self._encode_batch(batch if batch is not None else ColumnBatch(pts))
            if body is not None:
                return body
        return "\n".join(self.lines(pts)).encode("utf-8")

    def _encode_batch(self, batch: ColumnBatch) -> bytes | None:
        """Each shape's lines by one polars expression over its columns, then all lines back in the
        batch's order; ``None`` when a column holds something the line path must refuse.

        polars costs mostly by the call (a Series made from a list, a cast, a ``select``: 5-50 us
        each whatever the size; a fleet batch of 3 shapes spent a third of its time so), so the values
        of the whole batch are gathered by kind first, across its shapes and columns: one Series and
        one cast to text each for all its floats, ints, flags, timestamps and series tags, of which
        each shape's columns are slices (no copy).  Only the ``select`` that writes the lines runs
        once per shape.  (Casting here rather than in the ``select`` keeps the work in this thread:
        polars ran the casts on its thread pool, and on a busy 2-core machine handing them out and
        waiting for them cost more CPU than the casts themselves.)"""
        shapes = batch.shapes()
        found = self._gather(shapes, careful=False)
        if found is _UNFIT:
            # A float column ``repr`` writes otherwise than polars (rare): found column by column.
            found = self._gather(shapes, careful=True)
        if not isinstance(found, tuple):
            return None
        plans, texts = found
        if not plans:
            return b""  # (an empty batch, as the line path writes it)
        parts: list[pl.Series] = []
        row = 0
        for plan in plans:
            rows = len(plan.positions)
            data = [texts["p"].slice(row, rows).alias("p"), texts["t"].slice(row, rows).alias("t")]
            data += [texts[kind].slice(at, rows).alias(f"v{i}") for i, (kind, at) in enumerate(plan.columns)]
            row += rows
            kinds = [kind for kind, _ in plan.columns]
            parts.append(pl.DataFrame(data).select(self._line_expr(plan.lead, plan.keys, kinds)).to_series())
        if len(parts) == 1:
            return b"\n".join(parts[0].cast(pl.Binary).to_list())
        # Each shape's rows are in batch order already; the shapes' lines are put back in the batch's
        # order by their positions (distinct and consecutive: the smallest is the batch's first), as
        # Python objects: a gather by polars over the shapes' chunks cost twice as much.
        lines = pl.concat(parts, rechunk=False).cast(pl.Binary).to_list()
        out: list[bytes] = [b""] * len(lines)
        base = min(plan.positions[0] for plan in plans)
        for at, line in zip(chain.from_iterable(plan.positions for plan in plans), lines, strict=True):
            out[at - base] = line
        return b"\n".join(out)

    def _gather(
        self, shapes: list[Shape], *, careful: bool
    ) -> tuple[list[_Plan], dict[str, pl.Series]] | object:
        """Every shape's plan and the batch's blocks of text by kind (``_Blocks.texts``); ``None`` when
        something must be refused, ``_UNFIT`` when a float column needs ``careful`` checking."""
        blocks = _Blocks()
        plans: list[_Plan] = []
        for shape in shapes:
            plan = self._plan(shape, blocks, careful=careful)
            if plan is None:
                return None
            plans.append(plan)
        texts = blocks.texts()
        return texts if texts is None or texts is _UNFIT else (plans, texts)

    def _plan(self, shape: Shape, blocks: _Blocks, *, careful: bool) -> _Plan | None:
        """Add the shape's tags, timestamps and values to ``blocks`` and say where they are, or None
        (see ``_encode_batch``).  A shape of one device and source (fleet traffic: a shape is one
        kind of device) whose households need no escaping gets their column as it is, the rest of its
        series' prefix being the same text for every line; any other, each row's cached
        ``series_prefix``.  Each field's kind is its column's: ``f``loat, ``i``nt, ``b``ool, or ``s``:
        text written by ``field_value`` (strings, mixed or exotic types; with ``careful``, floats
        polars would write otherwise than ``repr``: rare)."""
        names = shape.names
        if not names:
            return None
        columns = shape.columns()
        ts = columns[TS]
        if list(map(type, ts)).count(int) != len(ts):  # (a bool is an int to polars)
            return None
        try:
            keys = [self._key(name) for name in names]
            lead = self._lead(shape.measurement, columns[HOUSEHOLD], columns[DEVICE], columns[SOURCE])
            if lead is None:
                prefixes = self._prefixes.get(shape.measurement)
                if prefixes is None:
                    if len(self._prefixes) >= _MAX_SERIES_CACHE:
                        self._prefixes.clear()
                    prefixes = self._prefixes[shape.measurement] = _Prefixes(shape.measurement)
                series = zip(columns[HOUSEHOLD], columns[DEVICE], columns[SOURCE], strict=True)
                blocks.tags += map(prefixes.__getitem__, series)
            else:
                blocks.tags += columns[HOUSEHOLD]
        except (LineProtocolError, TypeError):
            return None
        blocks.stamps += ts
        where: list[tuple[str, int]] = []
        for name, column in zip(names, columns[VALUES:], strict=True):
            # One type for the whole column (a list of them counted: a third cheaper than a set).
            types = list(map(type, column))
            kind = _KINDS.get(types[0], "s") if types.count(types[0]) == len(types) else "s"
            if kind == "f" and careful and not _floats_fit(pl.Series(column, dtype=pl.Float64)):
                kind = "s"  # a NaN or an infinity (refused), or a float ``repr`` writes with an exponent
            if kind == "s":
                try:
                    column = [field_value(name, v, ints_as_floats=self.ints_as_floats) for v in column]
                except LineProtocolError:
                    return None
            block = blocks.values[kind]
            where.append((kind, len(block)))
            block += column
        return _Plan(columns[POSITION], lead, keys, where)

    def _lead(
        self, measurement: str, households: list[str], devices: list[str], sources: list[str]
    ) -> tuple[str, str] | None:
        """The text before and after the household in every line of the shape, when all its rows have
        one device and source and no household needs escaping or refusing; else None."""
        device, source = devices[0], sources[0]
        count = len(devices)
        if devices.count(device) != count or sources.count(source) != count or "" in households:
            return None
        try:
            plain = _NOT_PLAIN_TAG.search("".join(households)) is None
        except TypeError:  # (not all strings)
            return None
        if not plain:
            return None
        key = (measurement, device, source)
        lead = self._leads.get(key)
        if lead is None:
            head = f"{_measurement_text(measurement)},{_tag_text('device', device)},household="
            lead = (head, "," + _tag_text("source", source))  # may raise LineProtocolError
            if len(self._leads) >= _MAX_SERIES_CACHE:
                self._leads.clear()
            self._leads[key] = lead
        return lead

    def _line_expr(self, lead: tuple[str, str] | None, keys: list[str], kinds: list[str]) -> pl.Expr:
        """The expression writing a line from the columns ``p`` (the series' prefixes, or with ``lead``
        the households), ``v0``.. and ``t``; built once per lead, field keys and kinds.  ``pl.format``
        rather than ``concat_str`` of literals and columns: it copies its literal text into each line
        without making a column of it (a third less time)."""
        shape_key = (lead, *keys, *kinds)
        expr = self._line_expr_cache.get(shape_key)
        if expr is None:
            int_suffix = ".0" if self.ints_as_floats else "i"
            head, tail = lead or ("", "")
            template = [_literal(head), "{}", _literal(tail), " "]
            for i, (key, kind) in enumerate(zip(keys, kinds, strict=True)):
                template += [_literal(("," if i else "") + key), "{}", int_suffix if kind == "i" else ""]
            template.append(" {}")
            values = [pl.col(f"v{i}") for i in range(len(keys))]
            if len(self._line_expr_cache) >= _MAX_SERIES_CACHE:
                self._line_expr_cache.clear()
            expr = pl.format("".join(template), pl.col("p"), *values, pl.col("t"))
            self._line_expr_cache[shape_key] = expr
        return expr

    def _prefix_of(self, key: SeriesKey) -> str:
        """The cached, validated ``measurement,device=..,household=..,source=..`` of a series."""
        prefix = self._series.get(key)
        if prefix is not None:
            return prefix
        prefix = series_prefix(*key)
        if len(self._series) >= _MAX_SERIES_CACHE:
            self._series.clear()
        self._series[key] = prefix
        return prefix


def to_line(point: Point) -> str:
    """Convenience for one point (uncached; use ``LineEncoder`` for volume)."""
    return LineEncoder().line(point)
