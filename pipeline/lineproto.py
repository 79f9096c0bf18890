"""InfluxDB line protocol for ``Point``s: fast, lossless, and impossible to inject into.

Speed comes from doing the expensive part once per *series* instead of once per point: the escaped
``measurement,device=..,household=..,source=..`` prefix and every escaped ``field=`` key are validated
and cached, and big batches are formatted column-wise by polars rather than value by value.  The
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
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain
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
_IS_FLOAT: Final = float.__instancecheck__  # False for bools, which are not floats
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

    __slots__ = ("_keys", "_series", "_templates", "ints_as_floats", "vector_min")

    def __init__(self, *, ints_as_floats: bool = False, vector_min: int = _VECTOR_MIN) -> None:
        self.ints_as_floats = ints_as_floats
        self.vector_min = vector_min
        self._series: dict[tuple[str, str, str, str], str] = {}
        self._keys: dict[str, str] = {}
        self._templates: dict[tuple[str, ...], str] = {}

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

        Large batches of floats and bools are formatted column-wise by polars (the shortest text that
        round-trips, though not always spelled like ``repr``: ``0.0001`` vs ``1e-04``); float
        formatting is where per-point Python spends most of its time.  Any other batch (ints,
        strings, NaN, a bad name) goes line by line, which also reports what is wrong."""
        pts = points if isinstance(points, list | tuple) else list(points)
        if len(pts) >= self.vector_min:
            body = self._encode_floats(pts)
            if body is not None:
                return body
        return "\n".join(self.lines(pts)).encode("utf-8")

    def _encode_floats(self, pts: Sequence[Point]) -> bytes | None:
        """Column-wise fast path; ``None`` when the batch needs the general path (which also reports
        what is wrong with it).

        Python only pulls columns out of the points, with C-level ``map``s where it can (a Python
        loop per point and per value is what this path exists to avoid); polars formats the numbers
        and glues the text."""
        fields = list(map(_FIELDS, pts))
        counts = list(map(len, fields))
        if 0 in counts:
            return None
        # Points with the same number of fields can be laid out with a fixed stride, so a mixed batch
        # is processed grouped by width (a stable sort: batch order kept within a width) and put
        # back in batch order at the end -- order matters when a batch holds the same point twice.
        order: list[int] | None = None
        width = counts[0]
        if counts.count(width) != len(counts):
            order = sorted(range(len(pts)), key=counts.__getitem__)
            pts = [pts[i] for i in order]
            fields = [fields[i] for i in order]
            counts = [counts[i] for i in order]
        values = list(chain.from_iterable(map(_VALUES, fields)))
        kinds = set(map(type, values))
        stamps = list(map(_TS, pts))
        if not kinds <= {float, bool} or set(map(type, stamps)) != {int}:
            return None
        floats = pl.Series(values, dtype=pl.Float64, strict=False)  # bools become 1.0 / 0.0
        if not floats.is_finite().all():
            return None
        text = floats.cast(pl.Utf8)
        if bool in kinds:
            is_float = pl.Series(list(map(_IS_FLOAT, values)), dtype=pl.Boolean)
            text = text.zip_with(is_float, floats.cast(pl.Boolean).cast(pl.Utf8))  # "true" / "false"
        try:
            ts_text = pl.Series(stamps, dtype=pl.Int64).cast(pl.Utf8)
        except (OverflowError, pl.exceptions.PolarsError):
            return None
        try:
            ekeys = list(map(self._keys.__getitem__, chain.from_iterable(fields)))
        except KeyError:
            ekeys = [self._key(k) for k in chain.from_iterable(fields)]  # validates new names (may raise)
        kv = pl.Series(ekeys, dtype=pl.Utf8) + text
        prefix_list = list(map(self._series.get, map(_SERIES, pts)))
        if None in prefix_list:
            prefix_list = [pre or self._prefix(p) for pre, p in zip(prefix_list, pts, strict=True)]
        prefixes = pl.Series(prefix_list, dtype=pl.Utf8)
        if order is None:
            field_text = _join_strided(kv, width)
        else:
            parts, start = [], 0
            for count, n_points in sorted(Counter(counts).items()):
                parts.append(_join_strided(kv.slice(start, n_points * count), count))
                start += n_points * count
            field_text = pl.concat(parts)
        lines = prefixes + " " + field_text + " " + ts_text
        if order is not None:
            lines = lines.gather(pl.Series(order, dtype=pl.Int64).arg_sort())
        return "\n".join(lines.to_list()).encode("utf-8")

    def _prefix_of(self, key: tuple[str, str, str, str]) -> str:
        prefix = series_prefix(*key)
        if len(self._series) >= _MAX_SERIES_CACHE:
            self._series.clear()
        self._series[key] = prefix
        return prefix


def _join_strided(kv: pl.Series, width: int) -> pl.Series:
    """``kv`` holds ``width`` consecutive ``key=value`` rows per point; join each point's rows."""
    if width == 1:
        return kv
    out = kv.gather_every(width, offset=0)
    for j in range(1, width):
        out = out + "," + kv.gather_every(width, offset=j)
    return out


def to_line(point: Point) -> str:
    """Convenience for one point (uncached; use ``LineEncoder`` for volume)."""
    return LineEncoder().line(point)
