"""Read InfluxDB line protocol back into points: what the fleet's ingest endpoint receives.

The ingest takes the format InfluxDB's own write API takes (so our gateways, and any gateway that
speaks to InfluxDB, can upload) and hands the points to the pipeline, which validates every value
again.  An upload is read straight into the pipeline's column buffers (``ColumnBatch``): each line
is split and appended as one row, with no ``Point`` object per line (``parse_line`` makes one for a
line that needs the general parser: escapes or string values).  This parser only checks structure,
strictly, because a lenient parser is how a line comes to mean something other than what was sent:

* every line names the three tags of a series (``device``, ``household``, ``source``) and no other
  (another tag would make another series that no query reads);
* every line carries its timestamp, in nanoseconds: a line without one would be stamped by the
  server on arrival, so a retried upload would store the same reading twice;
* numbers are spelled as line protocol spells them (``1.5``, ``-2e3``, ``5i``, ``5u``); Python's own
  ``float``/``int`` spellings that line protocol lacks (``nan``, ``inf``, ``1_000``) are refused.

A problem anywhere refuses the whole body (``LineParseError`` names the line), as a batch is the
unit a gateway retries: storing part of it would leave the gateway unable to tell what is stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from pipeline.columns import ColumnBatch
from pipeline.errors import PipelineError
from pipeline.points import Point, PointValue

SERIES_TAGS: Final = frozenset({"device", "household", "source"})
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1

# A line: series key (no unescaped space), fields (``key=value`` pairs; a double quote starts a
# string only right after ``=``, and strings may hold spaces), timestamp.
_PAIR: Final = r'(?:[^ ,=\\]|\\.)+=(?:"(?:[^"\\]|\\.)*"|[^ ,"\\]+)'
_LINE: Final = re.compile(rf"(?P<key>(?:[^ \\]|\\.)+) (?P<fields>{_PAIR}(?:,{_PAIR})*)(?: (?P<ts>[^ ]*))?")
_KEY_PART: Final = re.compile(r"(?:[^,\\]|\\.)+")
_TAG: Final = re.compile(r"((?:[^=\\]|\\.)+)=((?:[^=\\]|\\.)+)")
_FIELD: Final = re.compile(r'((?:[^,=\\ ]|\\.)+)=("(?:[^"\\]|\\.)*"|[^,"]+)(,|$)')
_FLOAT: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INT: Final = re.compile(r"[+-]?\d+")
_UNESCAPE_NAME: Final = re.compile(r"\\(.)")
_UNESCAPE_STRING: Final = re.compile(r'\\([\\"])')
_NUMBER_CHARS: Final = str.maketrans("", "", "0123456789+-.eE")  # deletes what a number may hold
_MAX_SERIES: Final = 200_000
_TRUE: Final = frozenset({"t", "T", "true", "True", "TRUE"})
_FALSE: Final = frozenset({"f", "F", "false", "False", "FALSE"})


class LineParseError(PipelineError, ValueError):
    """The body is not line protocol this fleet stores; ``line`` is 1-based."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


class TooManyLines(PipelineError, ValueError):
    """More lines than one upload may carry."""


def _name(text: str) -> str:
    return _UNESCAPE_NAME.sub(r"\1", text) if "\\" in text else text


def _value(text: str) -> PointValue | None:
    """The value, or ``None`` when ``text`` is not a line-protocol value."""
    if text[0] == '"':
        return _UNESCAPE_STRING.sub(r"\1", text[1:-1])
    last = text[-1]
    if last in "iu":
        digits = text[:-1]
        if not _INT.fullmatch(digits):
            return None
        number = int(digits)
        if last == "u" and number < 0:
            return None
        return number if _INT64_MIN <= number <= _INT64_MAX else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    # ``float`` also reads spellings line protocol lacks (nan, inf, 1_000, other scripts' digits):
    # only digits, sign, point and exponent may remain, then the expression has the last word.
    if text.translate(_NUMBER_CHARS) or not _FLOAT.fullmatch(text):
        return None
    value = float(text)
    return value if value - value == 0.0 else None  # an overflow to inf


SeriesTags = tuple[str, str, str, str]  # measurement, household, device, source


def _series(key: str, number: int) -> SeriesTags:
    measurement, *tag_parts = _KEY_PART.findall(key)
    tags: dict[str, str] = {}
    for part in tag_parts:
        tag = _TAG.fullmatch(part)
        if tag is None:
            raise LineParseError(number, "a tag is not key=value")
        name = _name(tag.group(1))
        if name in tags:
            raise LineParseError(number, f"tag {name!r} given twice")
        tags[name] = _name(tag.group(2))
    if tags.keys() != SERIES_TAGS:
        raise LineParseError(number, "tags must be exactly device, household and source")
    return _name(measurement), tags["household"], tags["device"], tags["source"]


def _timestamp(text: str | None, number: int) -> int:
    if not text:
        raise LineParseError(number, "no timestamp (a reading keeps the time it was taken)")
    if not (text.isascii() and text.lstrip("-").isdigit() and text.count("-") <= (text[0] == "-")):
        raise LineParseError(number, f"timestamp {text[:30]!r} is not an integer of nanoseconds")
    ts_ns = int(text)
    if not _INT64_MIN <= ts_ns <= _INT64_MAX:
        raise LineParseError(number, "timestamp outside 64 bits")
    return ts_ns


# Series keys already read (only valid ones: ``_series`` raises on the others), across bodies.
_SERIES_SEEN: dict[str, SeriesTags] = {}


def _plain_line(line: str, number: int, series: dict[str, SeriesTags], batch: ColumnBatch) -> bool:
    """Append the common line (no escape, no string value) to ``batch``, split by ``str.split``, about
    ten times faster than the general expression; False (nothing appended) sends anything unusual to
    ``parse_line``, which explains it."""
    parts = line.split(" ")
    if len(parts) != 3:
        return False
    key, field_text, ts_text = parts
    tags = series.get(key)
    if tags is None:
        if len(series) >= _MAX_SERIES:
            series.clear()
        tags = series[key] = _series(key, number)
    fields: dict[str, PointValue] = {}
    for item in field_text.split(","):
        name, sep, text = item.partition("=")
        if not sep or not name or not text or "=" in text or name in fields:
            return False
        value = _value(text)
        if value is None:
            return False
        fields[name] = value
    batch.add(*tags, _timestamp(ts_text, number), fields)
    return True


def parse_line(line: str, number: int = 1) -> Point:
    m = _LINE.fullmatch(line)
    if m is None:
        raise LineParseError(number, "not '<measurement>,<tags> <fields> <timestamp>'")
    ts_ns = _timestamp(m.group("ts"), number)
    measurement, household, device, source = _series(m.group("key"), number)
    fields: dict[str, PointValue] = {}
    text = m.group("fields")
    pos = 0
    while pos < len(text):
        field = _FIELD.match(text, pos)
        if field is None:
            raise LineParseError(number, f"field set malformed at character {pos + 1}")
        key = _name(field.group(1))
        value = _value(field.group(2))
        if value is None:
            raise LineParseError(number, f"field {key[:40]!r}: {field.group(2)[:30]!r} is not a value")
        if key in fields:
            raise LineParseError(number, f"field {key[:40]!r} given twice")
        fields[key] = value
        pos = field.end()
    return Point(measurement, household, device, source, ts_ns, fields)


def _lines(body: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(body.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line and not line.startswith("#"):
            yield number, line


def parse_body(body: bytes, max_lines: int) -> ColumnBatch:
    """Every point of an upload body (UTF-8 line protocol) in line order, in columns, or
    ``LineParseError``/``TooManyLines``."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineParseError(body[: exc.start].count(b"\n") + 1, "not UTF-8") from None
    batch = ColumnBatch()
    series = _SERIES_SEEN  # a gateway sends the same few series every time: each key is parsed once
    for number, line in _lines(text):
        if len(batch) >= max_lines:
            raise TooManyLines(f"more than {max_lines} lines in one upload")
        if "\\" in line or '"' in line or not _plain_line(line, number, series, batch):
            p = parse_line(line, number)
            batch.add(p.measurement, p.household, p.device, p.source, p.ts_ns, p.fields)
    return batch
