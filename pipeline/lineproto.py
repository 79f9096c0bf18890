"""InfluxDB line protocol for ``Point``s: fast, lossless, and impossible to inject into.

Speed comes from doing the expensive part once per *series* instead of once per point: the escaped
``measurement,device=..,household=..,source=..`` prefix and every escaped ``field=`` key are validated
and cached, and big batches are assembled column-wise (numbers formatted by polars, text joined by
C-level ``map``/``join`` over columns) rather than point by point.  For those batches each series'
field names are cached too, as an ``itemgetter`` plus the text around each value, because a device
sends the same fields point after point (``LineEncoder._columns_by_series``).  The
client library's ``Point`` object re-escapes and re-sorts everything on every call, which is what the
ingest benchmark compares against.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from itertools import chain
from operator import attrgetter, call, contains, itemgetter, methodcaller
from typing import Any, Final, TypeAlias

import polars as pl

from pipeline.errors import PipelineError
from pipeline.points import Point, PointValue

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
# Control characters (C0, DEL, C1) and backslash are refused in names and tag values; NUL-like and
# line-breaking characters are refused in string values too (Unicode line/paragraph separators included
# because some tools split lines on them).
_BAD_NAME: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\\\u2028\u2029]")
_BAD_STRING: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\u2028\u2029]")
_RESERVED_KEYS: Final = frozenset({"time"})
_MAX_SERIES_CACHE: Final = 100_000
_VECTOR_MIN: Final = 256  # below this, polars' fixed cost outweighs what it saves

_FIELDS: Final = attrgetter("fields")
_TS: Final = attrgetter("ts_ns")
_SERIES: Final = attrgetter("measurement", "household", "device", "source")
_VALUES: Final = methodcaller("values")
_DICT_VALUES: Final[Callable[[Any], Iterable[PointValue]]] = dict.values
_FLOAT_BOOL: Final = frozenset((float, bool))
# Every line but the first starts with the previous line's timestamp slot; see ``_encode_columns``.
_TS_SLOT: Final = b" %d\n"
# Parts of a ``_SeriesShapes`` entry, for C-level ``map`` over a batch's entries.
_GETTER: Final = itemgetter(0)
_PIECES: Final = itemgetter(1)
_FIRST_NAME: Final = itemgetter(2)
_WIDTH: Final = itemgetter(3)
# After a point did not match its series' shape, this many batches go straight to ``_columns_by_shape``.
_SHAPE_RETRY: Final = 8

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
    _check_name("measurement", measurement, reserved_prefix=True)
    if measurement.startswith("#"):
        raise LineProtocolError("measurement", f"{measurement!r}: a leading '#' makes the line a comment")
    parts = [measurement.translate(_ESC_MEASUREMENT)]
    for key, value in (("device", device), ("household", household), ("source", source)):
        _check_name(key, value, reserved_prefix=False)
        parts.append(f"{key}={value.translate(_ESC_KEY)}")
    return ",".join(parts)


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


class _NothingToLearn(Exception):
    """A point of a series not seen before has no fields to learn the series' shape from."""


class _SeriesShapes(dict[SeriesKey, list[Any]]):
    """The fields each series sent last (see ``LineEncoder._columns_by_series``), as
    ``[values getter, text pieces, first field name, number of fields]``.

    A series not seen before gets a placeholder whose getter learns the shape from the first point
    it is applied to and then replaces itself in place, so a batch that brings new series (a home
    joining, a restart) costs no second pass over the batch."""

    __slots__ = ("pieces", "single_field")

    def __init__(self, pieces: Callable[[SeriesKey, tuple[str, ...]], tuple[bytes, ...]]) -> None:
        super().__init__()
        self.pieces = pieces  # validates and escapes the names (may raise ``LineProtocolError``)
        self.single_field = 0  # how many shapes have a single field (their getter is ``values()``)

    def __missing__(self, key: SeriesKey) -> list[Any]:
        shape: list[Any] = [None, (), "", 0]
        shape[0] = partial(self._learn, key, shape)
        self[key] = shape
        return shape

    def _learn(self, key: SeriesKey, shape: list[Any], fields: Mapping[str, PointValue]) -> Any:
        names = tuple(fields)
        if not names:
            raise _NothingToLearn
        # A lone ``itemgetter`` returns the value itself, not a 1-tuple: one-field series take
        # ``values()``, which does not check the name, so ``_columns_by_series`` does.
        getter = itemgetter(*names) if len(names) > 1 else _VALUES
        shape[:] = (getter, self.pieces(key, names), names[0], len(names))
        self.single_field += len(names) == 1
        return getter(fields)

    def forget(self, keys: Iterable[SeriesKey]) -> None:
        for key in keys:
            shape = self.pop(key, None)
            if shape is not None and shape[3] == 1:
                self.single_field -= 1

    def clear(self) -> None:
        super().clear()
        self.single_field = 0


def _write_bools(types: list[type], values: list[PointValue], text: list[bytes]) -> None:
    """Overwrite the text of every bool (polars formatted it as ``1.0``/``0.0``) with ``true``/``false``.

    ``list.index`` scans ``types`` in C, so the Python loop runs once per bool rather than once per
    value (bools are a minority of values)."""
    find = types.index
    try:
        i = find(bool)
        while True:
            text[i] = b"true" if values[i] else b"false"
            i = find(bool, i + 1)
    except ValueError:
        return


class LineEncoder:
    """Serializes points, caching validated series prefixes, field keys and whole line templates.

    ``lines`` formats an all-float point with a single ``%`` on a cached template such as
    ``"electricity,device=m1,household=h1,source=echonet power_w=%r %d"``; anything else (bools,
    ints, strings, NaN) takes the general path, which checks and formats value by value.  ``encode``
    formats large float/bool batches column-wise (see ``_encode_columns``).

    ``ints_as_floats`` writes Python ints as floats: InfluxDB fixes a field's type on first write, so
    a store that promises Float64 for every number must not let an ``int`` sneak in and make every
    later float write of that field fail with a type conflict.
    """

    __slots__ = (
        "_keys",
        "_series",
        "_series_shapes",
        "_shape_pieces",
        "_skip_series_shapes",
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
        # Column-wise path: the last shape of each series, and the pieces of every (series, field
        # names) pair seen (see ``_columns_by_series`` and ``_columns_by_shape``).
        self._series_shapes = _SeriesShapes(self._pieces)
        self._shape_pieces: dict[tuple[SeriesKey, tuple[str, ...]], tuple[bytes, ...]] = {}
        self._skip_series_shapes = 0

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
        """A write body: lines joined by ``\\n``, UTF-8.

        Large batches of floats and bools are assembled column-wise (numbers formatted by polars:
        the shortest text that round-trips, though not always spelled like ``repr``: ``0.0001`` vs
        ``1e-04``; a point's fields may come out in the order its series first sent them, which
        line protocol does not care about).  Any other batch (ints, strings, NaN, a bad name) goes
        line by line, which also reports what is wrong."""
        pts = points if isinstance(points, list | tuple) else list(points)
        if len(pts) >= self.vector_min:
            body = self._encode_columns(pts)
            if body is not None:
                return body
        return "\n".join(self.lines(pts)).encode("utf-8")

    def _encode_columns(self, pts: Sequence[Point]) -> bytes | None:
        """Column-wise fast path; ``None`` when the batch needs the general path (which also reports
        what is wrong with it).

        Every per-point step is a C-level ``map``/``chain``/``join`` over a column pulled out of the
        points (a Python statement per point or per value is what this path exists to avoid; on the
        benchmark machine even one such pass costs ~50 ns a point), and polars formats the numbers.

        The body is one ``bytes.join`` over ``(piece, value)`` pairs, one per field in batch order,
        where ``piece`` is the cached, validated ``,name=``, or for a point's first field
        `` %d\\n<series> name=``: the ``%d`` slots are then filled with every point's timestamp by a
        single ``bytes % tuple`` (cheaper than building a per-point "previous timestamp + next head"
        string), and the first line's slot is cut off and one added after the last field.  Names
        are escaped ``%`` -> ``%%`` in the pieces; numbers and ``true``/``false`` contain no ``%``.
        """
        fields = list(map(_FIELDS, pts))
        stamps = list(map(_TS, pts))
        columns = None
        if self._skip_series_shapes:
            self._skip_series_shapes -= 1
        else:
            columns = self._columns_by_series(pts, fields)
        if columns is None:
            columns = self._columns_by_shape(pts, fields)
            if columns is None:
                return None
        values, pieces = columns
        types = list(map(type, values))
        if not set(types) <= _FLOAT_BOOL:
            return None
        if set(map(type, stamps)) != {int}:
            return None  # the general path says which point
        try:
            pl.Series(stamps, dtype=pl.Int64)  # cheaper than min() and max() for the range check
        except (TypeError, OverflowError, pl.exceptions.PolarsError):
            return None
        floats = pl.Series(values, dtype=pl.Float64)  # bools become 1.0 / 0.0, fixed below
        # NaN and infinities survive a sum (an overflow to inf merely sends the batch the slow way).
        if not math.isfinite(floats.sum()):
            return None
        text: list[bytes] = floats.cast(pl.Utf8).cast(pl.Binary).to_list()
        _write_bools(types, values, text)
        body: list[bytes] = [b""] * (2 * len(text) + 1)
        body[0:-1:2] = pieces
        body[1::2] = text
        body[0] = body[0][len(_TS_SLOT) :]
        body[-1] = b" %d"
        return b"".join(body) % tuple(stamps)

    def _columns_by_series(
        self, pts: Sequence[Point], fields: list[Mapping[str, PointValue]]
    ) -> tuple[list[PointValue], list[bytes]] | None:
        """Values and pieces for a batch whose points all have the fields their series had last time.

        A series (a meter, an inverter) sends the same fields point after point, so its shape is
        cached by series: an ``itemgetter`` of its field names and their pieces.  Applying the getters
        (``operator.call`` over the batch) both pulls the values out in the cached order and proves
        every cached name is present (else ``KeyError``); equal field counts then prove there is no
        other name.  This is much cheaper than building and hashing every point's tuple of names
        (``_columns_by_shape``).  A series with one field caches ``values()`` as its getter (a lone
        ``itemgetter`` returns the value itself, not a 1-tuple), so its name is checked separately.

        ``None`` when a point does not match; the series' shapes are then learnt again from a later
        batch (one that changed its fields for good is back on this path after that).
        """
        shapes = self._series_shapes
        if len(shapes) >= _MAX_SERIES_CACHE:
            shapes.clear()
        entries = list(map(shapes.__getitem__, map(_SERIES, pts)))
        try:
            values = list(chain.from_iterable(map(call, map(_GETTER, entries), fields)))
        except KeyError:
            self._series_shapes_missed(pts)
            return None
        except _NothingToLearn:
            return None
        # Each getter found all its names; equal totals leave no room for another name anywhere.
        # ``values()`` getters (one-field series) yield whatever there is: those points need their
        # own count and name checked.
        if sum(map(len, fields)) != len(values) or (
            shapes.single_field
            and (
                list(map(len, fields)) != list(map(_WIDTH, entries))
                or not all(map(contains, fields, map(_FIRST_NAME, entries)))
            )
        ):
            self._series_shapes_missed(pts)
            return None
        return values, list(chain.from_iterable(map(_PIECES, entries)))

    def _series_shapes_missed(self, pts: Sequence[Point]) -> None:
        """Forget the shapes of the batch's series (they are learnt again from the next batch, so a
        series that changed its fields for good is soon back on the fast path) and use
        ``_columns_by_shape`` for the next few batches, so one that alternates between field sets
        does not pay for a failed attempt every time."""
        self._series_shapes.forget(dict.fromkeys(map(_SERIES, pts)))
        self._skip_series_shapes = _SHAPE_RETRY

    def _columns_by_shape(
        self, pts: Sequence[Point], fields: list[Mapping[str, PointValue]]
    ) -> tuple[list[PointValue], list[bytes]] | None:
        """Values and pieces for any batch (``None`` if a point has no fields): pieces are cached by
        (series, field names in order), values taken in each point's own order."""
        cache = self._shape_pieces
        try:
            # Keys are built lazily here: a list of them would keep a batch's worth of tuples alive
            # (and wake the cyclic GC), which on a hit costs more than building them again on a miss.
            keyed = map(cache.__getitem__, zip(map(_SERIES, pts), map(tuple, fields), strict=True))
            pieces = list(chain.from_iterable(keyed))
        except KeyError:
            keys = list(zip(map(_SERIES, pts), map(tuple, fields), strict=True))
            wanted = dict.fromkeys(keys)
            if len(cache) + len(wanted) > _MAX_SERIES_CACHE:
                cache.clear()
            for key in wanted.keys() - cache.keys():
                series, names = key
                if not names:
                    return None
                cache[key] = self._pieces(series, names)
            pieces = list(chain.from_iterable(map(cache.__getitem__, keys)))
        try:
            values = list(chain.from_iterable(map(_DICT_VALUES, fields)))
        except TypeError:  # a Mapping that is not a dict
            values = list(chain.from_iterable(map(_VALUES, fields)))
        return values, pieces

    def _pieces(self, series: SeriesKey, names: tuple[str, ...]) -> tuple[bytes, ...]:
        """Validated, escaped text before each field's value (see ``_encode_columns``)."""
        prefix = self._prefix_of(series)
        first = f"{prefix} {self._key(names[0])}".replace("%", "%%").encode()
        rest = [("," + self._key(name)).replace("%", "%%").encode() for name in names[1:]]
        return (_TS_SLOT + first, *rest)

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
