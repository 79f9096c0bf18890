"""InfluxDB line protocol for ``Point``s: fast, lossless, and impossible to inject into.

Speed comes from doing the expensive part once per *series* instead of once per point: the escaped
``measurement,device=..,household=..,source=..`` prefix and every escaped ``field=`` key are validated
and cached, and big batches are assembled column-wise (numbers formatted by polars, text joined by
C-level ``map``/``join`` over columns) rather than point by point.  The
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
from collections import deque
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain, islice
from operator import attrgetter, methodcaller
from typing import Final

import polars as pl

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
_FIELDS: Final = attrgetter("fields")
_TS: Final = attrgetter("ts_ns")
_SERIES: Final = attrgetter("measurement", "household", "device", "source")
_VALUES: Final = methodcaller("values")
_DICT_VALUES: Final = dict.values
_BOOL_TEXT: Final = {True: "true", False: "false"}
_VECTOR_MIN: Final = 256  # below this, polars' fixed cost outweighs what it saves

_ESC_MEASUREMENT: Final = str.maketrans({",": r"\,", " ": r"\ "})
_ESC_KEY: Final = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ "})
_ESC_STRING: Final = str.maketrans({"\\": "\\\\", '"': '\\"'})


class LineProtocolError(ValueError):
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


def _positions(items: list[type], wanted: type) -> list[int]:
    """Indexes of ``wanted`` in ``items``: ``list.index`` scans in C, so the Python loop runs once
    per hit rather than once per item (bools are a minority of values)."""
    out: list[int] = []
    find = items.index
    i = -1
    try:
        while True:
            i = find(wanted, i + 1)
            out.append(i)
    except ValueError:
        return out


class LineEncoder:
    """Serializes points, caching validated series prefixes, field keys and whole line templates.

    ``lines`` formats an all-float point with a single ``%`` on a cached template such as
    ``"electricity,device=m1,household=h1,source=echonet power_w=%r %d"``; anything else (bools,
    ints, strings, NaN) takes the general path, which checks and formats value by value.  ``encode``
    formats large float/bool batches column-wise (see there).

    ``ints_as_floats`` writes Python ints as floats: InfluxDB fixes a field's type on first write, so
    a store that promises Float64 for every number must not let an ``int`` sneak in and make every
    later float write of that field fail with a type conflict.
    """

    __slots__ = (
        "_comma_keys",
        "_heads",
        "_keys",
        "_series",
        "_templates",
        "ints_as_floats",
        "vector_min",
    )

    def __init__(self, *, ints_as_floats: bool = False, vector_min: int = _VECTOR_MIN) -> None:
        self.ints_as_floats = ints_as_floats
        self.vector_min = vector_min
        self._series: dict[tuple[str, str, str, str], str] = {}
        self._keys: dict[str, str] = {}
        self._templates: dict[tuple[str, ...], str] = {}
        # Column-wise path: ",key=" per field name, "\n<series> key=" per series and first field.
        self._comma_keys: dict[str, str] = {}
        self._heads: dict[tuple[str, str, str, str], str] = {}

    def _prefix(self, point: Point) -> str:
        key = (point.measurement, point.household, point.device, point.source)
        return self._series.get(key) or self._prefix_of(key)

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
        ``1e-04``).  Any other batch (ints, strings, NaN, a bad name) goes line by line, which also
        reports what is wrong."""
        pts = points if isinstance(points, list | tuple) else list(points)
        if len(pts) >= self.vector_min:
            body = self._encode_floats(pts)
            if body is not None:
                return body
        return "\n".join(self.lines(pts)).encode("utf-8")

    def _encode_floats(self, pts: Sequence[Point]) -> bytes | None:
        """Column-wise fast path; ``None`` when the batch needs the general path (which also reports
        what is wrong with it).

        Every per-point step is a C-level ``map``/``zip``/``join`` over a column pulled out of the
        points (a Python statement per point or per value is what this path exists to avoid), and
        polars formats the numbers.  The body is one ``str.join`` over ``(key, value)`` pairs, one
        per field, in batch order: ``key`` is the cached, validated ``,name=``, except for a point's
        first field, where it is the "junction" `` <previous timestamp>\\n<series> name=``.
        """
        n = len(pts)
        fields = list(map(_FIELDS, pts))
        counts = list(map(len, fields))
        if 0 in counts:
            return None
        keys = list(chain.from_iterable(fields))
        try:
            values = list(chain.from_iterable(map(_DICT_VALUES, fields)))
        except TypeError:  # a Mapping that is not a dict
            values = list(chain.from_iterable(map(_VALUES, fields)))
        types = list(map(type, values))
        kinds = set(types)
        stamps = list(map(_TS, pts))
        if not kinds <= {float, bool} or set(map(type, stamps)) != {int}:
            return None
        starts = list(accumulate(counts, initial=0))
        try:
            key_text = list(map(self._comma_keys.__getitem__, keys))
        except KeyError:
            key_text = [self._comma_key(k) for k in keys]  # validates new names (may raise)
        try:
            heads = list(map(self._heads.__getitem__, map(_SERIES, pts)))
        except KeyError:
            heads = [self._head(p) for p in pts]  # validates (may raise)
        # NaN and infinities survive a sum (an overflow to inf merely sends the batch the slow way).
        if not math.isfinite(sum(values)):
            return None
        floats = pl.Series(values, dtype=pl.Float64, strict=False)  # bools become 1.0 / 0.0
        value_text = floats.cast(pl.Utf8).to_list()
        if bool in kinds:
            # A bool became 1.0 or 0.0 above; find those rows by type (``types``) and fix their text.
            flags = _positions(types, bool)
            flag_text = map(_BOOL_TEXT.__getitem__, map(values.__getitem__, flags))
            deque(map(value_text.__setitem__, flags, flag_text), 0)
        try:
            ts_text = pl.Series(stamps, dtype=pl.Int64).cast(pl.Utf8).to_list()
        except (TypeError, OverflowError, pl.exceptions.PolarsError):
            return None  # outside int64: the general path says which point
        # One "\x00 <ts of point p-1>\n<series of p> <first key of p>=" per point, split on NUL
        # (which validated names and digits never contain); the first one loses its timestamp and
        # newline, the last timestamp goes after the last field.  Lists are interleaved by strided
        # slice assignment, a C loop far cheaper per item than zip + chain.
        pieces: list[str] = [""] * (4 * n)
        pieces[0::4] = ["\x00 "] * n
        pieces[5::4] = ts_text[:-1]
        pieces[2::4] = heads
        pieces[3::4] = list(map(self._keys.__getitem__, map(keys.__getitem__, islice(starts, n))))
        junctions = "".join(pieces).split("\x00")
        junctions[1] = junctions[1][2:]  # the first line starts with its head
        deque(map(key_text.__setitem__, starts, islice(junctions, 1, None)), 0)
        body: list[str] = [""] * (2 * len(key_text) + 2)
        body[0:-2:2] = key_text
        body[1:-2:2] = value_text
        body[-2:] = (" ", ts_text[-1])
        return "".join(body).encode("utf-8")

    def _comma_key(self, name: str) -> str:
        text = self._comma_keys.get(name)
        if text is None:
            if len(self._comma_keys) >= _MAX_SERIES_CACHE:
                self._comma_keys.clear()
            text = self._comma_keys[name] = "," + self._key(name)
        return text

    def _head(self, point: Point) -> str:
        """Newline, series prefix and space, validated; cached by series (the key ``_SERIES`` makes)."""
        tkey = (point.measurement, point.household, point.device, point.source)
        head = self._heads.get(tkey)
        if head is None:
            head = "\n" + self._prefix(point) + " "
            if len(self._heads) >= _MAX_SERIES_CACHE:
                self._heads.clear()
            self._heads[tkey] = head
        return head

    def _prefix_of(self, key: tuple[str, str, str, str]) -> str:
        prefix = series_prefix(*key)
        if len(self._series) >= _MAX_SERIES_CACHE:
            self._series.clear()
        self._series[key] = prefix
        return prefix


def to_line(point: Point) -> str:
    """Convenience for one point (uncached; use ``LineEncoder`` for volume)."""
    return LineEncoder().line(point)
