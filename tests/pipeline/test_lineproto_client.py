"""Our line protocol against influxdb-client's own ``Point.to_line_protocol``, on the inputs that are
hard to get right: spaces, commas, equals signs, quotes, backslashes and line breaks in names, tag
values and strings; non-ASCII text (accents, CJK ideographs, emoji, lone surrogates); NaN and the
infinities; int64's ends and beyond; flags.

The client is not byte-for-byte our reference (it sorts fields, drops a float's ``.0``, silently
drops NaN, and "escapes" a newline in a tag into the two characters ``\\n``), so both lines are read
back by a reader written from the spec (``read_line``: a double quote is literal everywhere but in a
string value) and compared as values.  The rule checked for every
input: either our encoder refuses it with ``LineProtocolError`` naming the offending part -- and then
the input really holds something line protocol cannot carry unchanged -- or both paths (line by line
and by columns) write one line that reads back as the point's own values and as the client's line.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from influxdb_client import Point as ClientPoint
from influxdb_client import WritePrecision

from pipeline.columns import ColumnBatch
from pipeline.lineproto import LineEncoder, LineProtocolError
from pipeline.points import Point, PointValue

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Characters line protocol treats specially, plus text from several scripts (written as escapes:
# accented Latin, a CJK ideograph, an emoji outside the BMP); ``risky`` adds what it cannot carry in
# a name or tag (control characters, a backslash, a lone surrogate: no UTF-8 form) or at its start.
SAFE = [" ", ",", "=", '"', "%", "\u00e9", "\u4e2d", "\U0001f600", "a", "b", "1"]
RISKY = [*SAFE, "\\", "\n", "\r", "\t", "#", "_", "\ud800"]
safe = st.text(st.sampled_from(SAFE), min_size=1, max_size=6)
risky = st.text(st.sampled_from(RISKY), min_size=0, max_size=6)
# (Repeated branches weigh ``one_of``: most points are writable, so both outcomes are well covered.)
names = st.one_of(st.sampled_from(["power_w", "soc_pct", "fault"]), safe, safe, safe, risky)
tag_values = st.one_of(st.sampled_from(["hh-1", "meter", "echonet"]), safe, safe, safe, risky)
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(),  # NaN and the infinities too
    st.sampled_from([1e-5, 1e16, -2.5e17, 5e-324, -0.0, 1.7e308, 0.1]),
    st.integers(min_value=INT64_MIN, max_value=INT64_MAX),
    st.sampled_from([INT64_MIN, INT64_MAX, INT64_MIN - 1, INT64_MAX + 1]),
    st.booleans(),
    st.text(st.sampled_from([*SAFE, "\\"]), max_size=6),
    risky,
)
points = st.builds(
    Point,
    measurement=st.one_of(st.sampled_from(["electricity", "pv"]), safe, safe, risky),
    household=tag_values,
    device=tag_values,
    source=tag_values,
    ts_ns=st.integers(min_value=0, max_value=INT64_MAX),
    fields=st.dictionaries(names, values, min_size=1, max_size=3),
)


def _token(line: str, i: int, stops: str) -> tuple[str, int]:
    """Text from ``i`` to the first unescaped character of ``stops`` (a backslash keeps the next one)."""
    out = []
    while i < len(line) and line[i] not in stops:
        if line[i] == "\\" and i + 1 < len(line):
            i += 1
        out.append(line[i])
        i += 1
    return "".join(out), i


def read_line(line: str) -> tuple[str, dict[str, str], dict[str, Any], int]:
    """measurement, tags, typed fields, timestamp: line protocol as its spec reads it."""
    assert "\n" not in line
    measurement, i = _token(line, 0, ", ")
    tags: dict[str, str] = {}
    while line[i] == ",":
        key, i = _token(line, i + 1, "=")
        tags[key], i = _token(line, i + 1, ", ")
    fields: dict[str, Any] = {}
    separator = " "
    while separator in " ,":
        key, i = _token(line, i + 1, "=")
        if line[i + 1] == '"':
            fields[key], i = _token(line, i + 2, '"')
            i += 1
        else:
            text, i = _token(line, i + 1, ", ")
            if text in ("true", "false"):
                fields[key] = text == "true"
            elif text.endswith("i"):
                fields[key] = int(text[:-1])
            else:
                fields[key] = float(text)
        separator = line[i] if line[i] == "," else "."
    assert line[i] == " ", line
    return measurement, tags, fields, int(line[i + 1 :])


def _carriable(text: str) -> bool:
    """Text line protocol carries unchanged in a name or tag value (see ``pipeline.lineproto``)."""
    return bool(text) and not any(c in text for c in "\n\r\t\\\ud800")


def _why_refused(p: Point) -> set[str]:
    """Every part of ``p`` that line protocol cannot carry unchanged, by the names the encoder uses."""
    parts: set[str] = set()
    if not _carriable(p.measurement) or p.measurement[0] in "#_":
        parts.add("measurement")
    for tag in ("household", "device", "source"):
        if not _carriable(getattr(p, tag)):
            parts.add(tag)
    for name, value in p.fields.items():
        if not _carriable(name) or name.startswith("_") or name == "time":
            parts.add("field")
        unfit = (
            (isinstance(value, float) and not math.isfinite(value))
            or (
                isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX
            )
            or (isinstance(value, str) and any(c in value for c in "\n\r\ud800"))
        )
        if unfit:
            parts.add(name)
    return parts


def _client_line(p: Point) -> str:
    cp = ClientPoint(p.measurement).tag("household", p.household).tag("device", p.device)
    cp = cp.tag("source", p.source).time(p.ts_ns, WritePrecision.NS)
    for name, value in p.fields.items():
        cp = cp.field(name, value)
    line: str = cp.to_line_protocol()
    return line


def _as_read(p: Point) -> tuple[str, dict[str, str], dict[str, Any], int]:
    """What the spec reader should find in a line written for ``p`` (ints as ints, not floats)."""
    tags = {"device": p.device, "household": p.household, "source": p.source}
    return p.measurement, tags, dict(p.fields), p.ts_ns


@settings(max_examples=400, deadline=None)
@given(point=points)
def test_a_line_reads_back_as_the_clients_line_or_is_refused_by_name(point: Point) -> None:
    expected_refusals = _why_refused(point)
    line_path = LineEncoder()
    try:
        (line,) = line_path.lines([point])
    except LineProtocolError as exc:
        assert exc.what in expected_refusals, (exc.what, expected_refusals)
        with pytest.raises(LineProtocolError) as by_columns:
            LineEncoder(vector_min=1).encode(ColumnBatch([point]))
        assert (by_columns.value.what, by_columns.value.message) == (exc.what, exc.message)
        return
    assert not expected_refusals, f"wrote {line!r} though {expected_refusals} cannot be carried"
    assert LineEncoder(vector_min=1).encode(ColumnBatch([point])) == line.encode("utf-8")
    ours = read_line(line)
    assert ours == _as_read(point)
    assert ours == read_line(_client_line(point))


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_refused_where_the_client_drops_them(value: float) -> None:
    """The client writes a point with a NaN field as if the field had not been sent (and a point with
    nothing else as an empty line); ours refuses it and names the field, in both paths."""
    point = Point("electricity", "hh-1", "meter", "echonet", 1, {"power_w": value, "soc_pct": 50.0})
    assert "power_w" not in _client_line(point)
    for encode in (LineEncoder().encode, LineEncoder(vector_min=1).encode):
        with pytest.raises(LineProtocolError) as err:
            encode(ColumnBatch([point]))
        assert err.value.what == "power_w"
        assert "NaN/inf" in err.value.message


@pytest.mark.parametrize("value", [INT64_MAX + 1, INT64_MIN - 1])
def test_ints_past_int64_are_refused_where_the_client_writes_them(value: int) -> None:
    """InfluxDB's integers are signed 64-bit: the client writes ``9223372036854775808i`` anyway (the
    server then refuses the whole request); ours refuses the point and names the field."""
    point = Point("electricity", "hh-1", "meter", "echonet", 1, {"energy_wh_total": value})
    assert f"energy_wh_total={value}i" in _client_line(point)
    for encode in (LineEncoder().encode, LineEncoder(vector_min=1).encode):
        with pytest.raises(LineProtocolError) as err:
            encode(ColumnBatch([point] * 3))
        assert err.value.what == "energy_wh_total"


def test_int64_ends_flags_and_text_read_back_as_the_clients() -> None:
    fields: dict[str, PointValue] = {
        "lo": INT64_MIN,
        "hi": INT64_MAX,
        "on": True,
        "off": False,
        "text": 'a "b" \\ c,d=e f',
    }
    point = Point("a b,c", "h=1,2 3", "dev\u00e9", "\u4e2d", 5, fields)
    (line,) = LineEncoder().lines([point])
    assert read_line(line) == _as_read(point) == read_line(_client_line(point))
    assert LineEncoder(vector_min=1).encode(ColumnBatch([point] * 300)) == "\n".join([line] * 300).encode()


def test_a_lone_surrogate_in_a_string_is_refused_by_name() -> None:
    """A lone surrogate is a Python string but has no UTF-8 form: it used to escape as a
    ``UnicodeEncodeError`` from the body's encoding, not as a refusal naming the field."""
    point = Point("electricity", "hh-1", "meter", "echonet", 1, {"state": "ok\ud800"})
    for encode in (LineEncoder().encode, LineEncoder(vector_min=1).encode):
        with pytest.raises(LineProtocolError) as err:
            encode(ColumnBatch([point] * 3))
        assert err.value.what == "state"
