"""Line protocol: exact text, escaping, refusal of what cannot be carried, and the column path writing
byte for byte what the line-by-line path writes.  A small independent reader of the spec parses the
output back, so "escaped" is checked as "reads back as the same values", not as a string we happened
to expect."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.columns import ColumnBatch
from pipeline.lineproto import LineEncoder, LineProtocolError, to_line
from pipeline.points import Point

TS = 1_764_115_200_000_000_123


def pt(fields: Mapping[str, object], **kw: object) -> Point:
    base: dict[str, object] = {
        "measurement": "electricity",
        "household": "hh-1",
        "device": "meter",
        "source": "echonet",
        "ts_ns": TS,
    }
    base.update(kw)
    return Point(fields=fields, **base)  # type: ignore[arg-type]


# -- a reader written from the spec, independent of the encoder --------------------------------------


def _split_unescaped(text: str, sep: str, *, quotes: bool = False) -> list[str]:
    parts, cur, i, in_q = [], [], 0, False
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if quotes and c == '"':
            in_q = not in_q
        if c == sep and not in_q:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _unescape(text: str) -> str:
    out, i = [], 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in ',= "\\':
            out.append(text[i + 1])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def parse_line(line: str) -> tuple[str, dict[str, str], dict[str, object], int]:
    assert "\n" not in line
    head, fields_text, ts = _split_unescaped(line, " ", quotes=True)
    series = _split_unescaped(head, ",")
    tags = {}
    for item in series[1:]:
        k, v = _split_unescaped(item, "=")
        tags[_unescape(k)] = _unescape(v)
    fields: dict[str, object] = {}
    for item in _split_unescaped(fields_text, ",", quotes=True):
        k, v = _split_unescaped(item, "=", quotes=True)
        if v.startswith('"'):
            assert v.endswith('"') and len(v) >= 2
            fields[_unescape(k)] = _unescape(v[1:-1])
        elif v in ("true", "false"):
            fields[_unescape(k)] = v == "true"
        elif v.endswith("i"):
            fields[_unescape(k)] = int(v[:-1])
        else:
            fields[_unescape(k)] = float(v)
    return _unescape(series[0]), tags, fields, int(ts)


# -- exact text ----------------------------------------------------------------------------------------


def test_exact_line_for_each_value_type() -> None:
    line = to_line(pt({"power_w": 1.5, "fault": True, "running": False, "state": "ok", "n": 7}))
    assert line == (
        "electricity,device=meter,household=hh-1,source=echonet "
        f'power_w=1.5,fault=true,running=false,state="ok",n=7i {TS}'
    )


def test_ints_as_floats_keeps_field_type_stable() -> None:
    enc = LineEncoder(ints_as_floats=True)
    assert enc.line(pt({"energy_wh_total": 12})).split(" ")[1] == "energy_wh_total=12.0"
    assert enc.line(pt({"fault": True})).split(" ")[1] == "fault=true"  # bools stay bools


def test_escaping_reads_back_unchanged() -> None:
    p = pt(
        {"odd key,=x": 'say "hi" \\ bye', "power_w": -0.0},
        measurement="with space,comma",
        household="a=b,c d",
        device="dev 1",
    )
    line = to_line(p)
    measurement, tags, fields, ts = parse_line(line)
    assert measurement == "with space,comma"
    assert tags == {"device": "dev 1", "household": "a=b,c d", "source": "echonet"}
    assert fields == {"odd key,=x": 'say "hi" \\ bye', "power_w": -0.0}
    assert ts == TS


@pytest.mark.parametrize(
    "value", [0.1, 1 / 3, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, -123456789.123, 2.0**53 + 2]
)
def test_floats_round_trip_exactly(value: float) -> None:
    text = to_line(pt({"power_w": value})).split(" ")[1].removeprefix("power_w=")
    assert float(text) == value


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "fields", "what"),
    [
        ({"household": 'hh") |> drop() //\nx'}, {"power_w": 1.0}, "household"),
        ({"household": "trailing\\"}, {"power_w": 1.0}, "household"),
        ({"device": ""}, {"power_w": 1.0}, "device"),
        ({"source": "a\tb"}, {"power_w": 1.0}, "source"),
        ({"measurement": "#comment"}, {"power_w": 1.0}, "measurement"),
        ({"measurement": "_internal"}, {"power_w": 1.0}, "measurement"),
        ({}, {"_field": 1.0}, "field"),
        ({}, {"time": 1.0}, "field"),
        ({}, {"bad\nkey": 1.0}, "field"),
        ({}, {"state": "two\nlines x=1 0"}, "state"),
        ({}, {"state": "cr\r"}, "state"),
        ({}, {"power_w": math.nan}, "power_w"),
        ({}, {"power_w": math.inf}, "power_w"),
        ({}, {"n": 2**63}, "n"),
        ({}, {"blob": b"bytes"}, "blob"),
        ({}, {}, "fields"),
        ({"ts_ns": 1.5}, {"power_w": 1.0}, "ts_ns"),
        ({"ts_ns": 2**63}, {"power_w": 1.0}, "ts_ns"),
    ],
)
def test_refuses_what_line_protocol_cannot_carry(
    kw: dict[str, object], fields: dict[str, object], what: str
) -> None:
    with pytest.raises(LineProtocolError) as err:
        to_line(pt(fields, **kw))
    assert err.value.what == what


def test_a_refused_point_in_a_big_batch_is_reported_not_skipped() -> None:
    points = [pt({"power_w": float(i)}, ts_ns=TS + i) for i in range(600)]
    points[300] = pt({"power_w": math.nan}, ts_ns=TS + 300)
    with pytest.raises(LineProtocolError):
        LineEncoder().encode(points)


# -- fast (column-wise) path == general path ------------------------------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False)
names = st.sampled_from(["power_w", "energy_wh_total", "soc_pct", "voltage_v", "fault"])


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["hh-1", "hh-2", "a b,c=d"]),
            st.dictionaries(names, finite | st.booleans(), min_size=1, max_size=4),
            st.integers(min_value=-(2**62), max_value=2**62),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_columnwise_encoding_equals_line_by_line(
    rows: list[tuple[str, dict[str, float | bool], int]],
) -> None:
    points = [pt(fields, household=hh, ts_ns=ts) for hh, fields, ts in rows]
    enc = LineEncoder(vector_min=1)
    body = enc.encode(points).decode()
    assert body == "\n".join(enc._general(p) for p in points)  # byte for byte
    for line, p in zip(body.split("\n"), points, strict=True):
        _, tags, fields, ts = parse_line(line)
        assert (tags["household"], fields, ts) == (p.household, dict(p.fields), p.ts_ns)


def test_big_batches_of_every_shape_are_complete() -> None:
    enc = LineEncoder()
    flags = [pt({"power_w": float(i), "fault": i % 2 == 0}, ts_ns=TS + i) for i in range(300)]
    lines = enc.encode(flags).decode().split("\n")
    assert len(lines) == 300
    assert lines[1].endswith(f"power_w=1.0,fault=false {TS + 1}")
    texts = [pt({"power_w": 1.0, "state": f"s{i}", "n": i}, ts_ns=TS + i) for i in range(300)]
    lines = enc.encode(texts).decode().split("\n")
    assert lines[299].endswith(f'power_w=1.0,state="s299",n=299i {TS + 299}')


def test_columnwise_keeps_bools_apart_from_equal_floats_and_batch_order() -> None:
    """``True == 1.0`` and ``False == 0.0``: the fast path must still write each with its own type,
    and keep every point (even a repeated one) where the batch put it."""
    from types import MappingProxyType

    points = [
        pt({"power_w": 1.0, "fault": True}, ts_ns=TS),
        pt({"fault": False, "power_w": 0.0}, ts_ns=TS + 1, device="pv 1"),
        pt(MappingProxyType({"power_w": 0.0}), ts_ns=TS + 2, measurement="battery"),
        pt({"power_w": 1.0, "fault": 1.0, "soc_pct": 0.0}, ts_ns=TS),
        pt({"power_w": 2.5}, ts_ns=TS, household="h=1,x y"),
    ]
    enc = LineEncoder(vector_min=1)
    lines = enc.encode(points).decode().split("\n")
    assert lines == [enc._general(p) for p in points]
    assert (
        lines[1]
        == f"electricity,device=pv\\ 1,household=hh-1,source=echonet fault=false,power_w=0.0 {TS + 1}"
    )


def test_columnwise_refusal_names_the_part() -> None:
    points = [pt({"power_w": float(i)}, ts_ns=TS + i) for i in range(600)]
    points[42] = pt({"power_w": 1.0}, ts_ns=TS + 42, device="a\\")
    with pytest.raises(LineProtocolError) as err:
        LineEncoder().encode(points)
    assert err.value.what == "device"
    points[42] = pt({"_reserved": 1.0}, ts_ns=TS + 42)
    with pytest.raises(LineProtocolError) as err:
        LineEncoder().encode(points)
    assert err.value.what == "field"
    for bad_ts in (2**63, -(2**63) - 1, True):
        points[42] = pt({"power_w": 1.0}, ts_ns=bad_ts)
        with pytest.raises(LineProtocolError) as err:
            LineEncoder().encode(points)
        assert err.value.what == "ts_ns"


def test_huge_finite_values_whose_sum_overflows_are_still_written() -> None:
    points = [pt({"power_w": 1.7e308, "soc_pct": -0.0}, ts_ns=TS + i) for i in range(300)]
    lines = LineEncoder().encode(points).decode().split("\n")
    assert [parse_line(x)[2:] for x in lines] == [
        ({"power_w": 1.7e308, "soc_pct": -0.0}, TS + i) for i in range(300)
    ]


# -- per-series shapes (``_columns_by_series``) and their fallbacks -------------------------------------


def same_as_general(enc: LineEncoder, points: list[Point]) -> None:
    """``encode`` writes byte for byte what the line-by-line path writes, for the points as a list and
    as a ``ColumnBatch``."""
    reference = LineEncoder(ints_as_floats=enc.ints_as_floats)
    expected = "\n".join(reference.lines(points)).encode()
    assert enc.encode(points) == expected
    assert enc.encode(ColumnBatch(points)) == expected


# Names that need escaping, a '%' (the line path's templates are ``%`` formats), braces (the column
# path's are ``pl.format`` templates: "{}" is a placeholder there) and non-ASCII text.
shape_names = st.sampled_from(
    ["power_w", "soc_pct", "run ning", "a,b=c", "50%d", "tension_ü", "fault", "{}", "a}{b"]
)
households = st.sampled_from(["hh-1", "hh-2", "a b,c=d", "100%s", "haus-ß", "h{}"])
devices = st.sampled_from(["meter", "pv", "bat%", "{dev}"])
stamps = st.integers(min_value=-(2**63), max_value=2**63 - 1)
field_sets = st.dictionaries(shape_names, finite | st.booleans(), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.tuples(households, devices, field_sets, stamps), min_size=1, max_size=40),
        min_size=1,
        max_size=4,
    ),
    ints_as_floats=st.booleans(),
)
def test_batches_after_batches_equal_line_by_line(
    batches: list[list[tuple[str, str, dict[str, float | bool], int]]], ints_as_floats: bool
) -> None:
    """One encoder over consecutive batches: series come and go, change or reorder their fields,
    mix floats and bools; every batch must read back as the line-by-line path writes it."""
    enc = LineEncoder(vector_min=1, ints_as_floats=ints_as_floats)
    for rows in batches:
        same_as_general(enc, [pt(f, household=h, device=d, ts_ns=ts) for h, d, f, ts in rows])


@settings(max_examples=30, deadline=None)
@given(
    series_fields=st.lists(field_sets, min_size=1, max_size=6),
    picks=st.lists(st.tuples(st.integers(0, 5), stamps), min_size=1, max_size=60),
)
def test_stable_series_shapes_equal_line_by_line(
    series_fields: list[dict[str, float | bool]], picks: list[tuple[int, int]]
) -> None:
    """The common case: every series sends the same field names each time (values vary)."""
    enc = LineEncoder(vector_min=1)
    for flip in (False, True, False):
        points = []
        for i, ts in picks:
            fields = series_fields[i % len(series_fields)]
            values = {k: (not v if isinstance(v, bool) else v + flip) for k, v in fields.items()}
            points.append(pt(values, device=f"dev-{i % len(series_fields)}", ts_ns=ts))
        same_as_general(enc, points)


def test_a_series_that_changes_its_single_field_is_not_mislabelled() -> None:
    """A one-field series caches ``values()`` as its getter, which would take any single value."""
    enc = LineEncoder()
    same_as_general(enc, [pt({"power_w": float(i)}, ts_ns=TS + i) for i in range(300)])
    other = [pt({"soc_pct": float(i)}, ts_ns=TS + i) for i in range(300)]
    lines = enc.encode(other).decode().split("\n")
    assert lines[7] == f"electricity,device=meter,household=hh-1,source=echonet soc_pct=7.0 {TS + 7}"
    same_as_general(enc, other)
    wider = [pt({"soc_pct": float(i), "power_w": -1.0}, ts_ns=TS + i) for i in range(300)]
    same_as_general(enc, wider)


def test_points_that_leave_their_series_shape_mid_batch() -> None:
    enc = LineEncoder()
    points = [pt({"power_w": float(i), "fault": i % 3 == 0}, ts_ns=TS + i) for i in range(600)]
    same_as_general(enc, points)  # learnt: (power_w, fault)
    points[100] = pt({"power_w": 1.0, "fault": True, "soc_pct": 5.0}, ts_ns=TS)  # one more field
    points[200] = pt({"power_w": 2.0}, ts_ns=TS)  # one field fewer
    points[300] = pt({"fault": False, "power_w": 3.0}, ts_ns=TS)  # same names, other order
    points[400] = pt({"power_w": 4.0, "soc_pct": 0.0}, ts_ns=TS)  # same count, other name
    for _ in range(12):  # the mismatch batch, the batches that skip the series shapes, and after
        same_as_general(enc, points)
        same_as_general(enc, points[:250] + points[401:])


def test_series_alternating_between_field_sets() -> None:
    """A meter sending power every 10 s and energy every 60 s as separate points."""
    enc = LineEncoder()
    for batch in range(20):
        points = [
            pt({"energy_wh_total": 1e6 + i} if (i + batch) % 6 == 0 else {"power_w": float(i)}, ts_ns=TS + i)
            for i in range(300)
        ]
        same_as_general(enc, points)


def test_new_series_mid_batch_are_learnt_in_the_same_pass() -> None:
    enc = LineEncoder()
    first = [
        pt({"power_w": float(i), "fault": False}, household=f"hh-{i % 2}", ts_ns=TS + i) for i in range(300)
    ]
    same_as_general(enc, first)
    second = [
        pt({"power_w": float(i), "fault": True}, household=f"hh-{i % 5}", device=f"d{i // 100}", ts_ns=TS + i)
        for i in range(300)
    ]
    same_as_general(enc, second)
    assert enc.encode(second) == enc.encode(second)  # and the learnt shapes are reused


def test_a_new_series_without_fields_or_with_a_bad_name_is_reported() -> None:
    good = [pt({"power_w": float(i)}, ts_ns=TS + i) for i in range(300)]
    for bad, what in (
        (pt({}, device="new", ts_ns=TS), "fields"),
        (pt({"ok": 1.0, "_bad": 2.0}, device="new", ts_ns=TS), "field"),
        (pt({"ok": 1.0}, device="new\\", ts_ns=TS), "device"),
    ):
        enc = LineEncoder()
        same_as_general(enc, good)
        with pytest.raises(LineProtocolError) as err:
            enc.encode([*good[:150], bad, *good[150:]])
        assert err.value.what == what
        same_as_general(enc, good)  # the encoder is still usable


def test_non_float_values_in_a_known_series_take_the_general_path() -> None:
    enc = LineEncoder(ints_as_floats=True)
    points = [pt({"power_w": float(i), "fault": False}, ts_ns=TS + i) for i in range(300)]
    same_as_general(enc, points)
    points[9] = pt({"power_w": 12, "fault": False}, ts_ns=TS)
    assert enc.encode(points).decode().split("\n")[9].split(" ")[1] == "power_w=12.0,fault=false"
    assert LineEncoder().encode(points).decode().split("\n")[9].split(" ")[1] == "power_w=12i,fault=false"
    points[9] = pt({"power_w": 1.0, "fault": "no"}, ts_ns=TS)
    assert enc.encode(points).decode().split("\n")[9].split(" ")[1] == 'power_w=1.0,fault="no"'
    for bad in (math.nan, -math.inf):
        points[9] = pt({"power_w": bad, "fault": False}, ts_ns=TS)
        with pytest.raises(LineProtocolError) as err:
            enc.encode(points)
        assert err.value.what == "power_w"


def test_percent_signs_in_names_survive_the_timestamp_formatting() -> None:
    points = [
        pt({"50%d": float(i), "%s": True}, measurement="m%d", household="100%", ts_ns=TS + i)
        for i in range(300)
    ]
    enc = LineEncoder()
    lines = enc.encode(points).decode().split("\n")
    assert lines == [enc._general(p) for p in points]
    assert lines[0] == f"m%d,device=meter,household=100%,source=echonet 50%d=0.0,%s=true {TS}"


def test_mappings_that_are_not_dicts() -> None:
    from types import MappingProxyType

    enc = LineEncoder()
    for _ in range(2):
        points = [
            pt(
                MappingProxyType({"power_w": float(i)} if i % 2 else {"power_w": 1.0, "fault": True}),
                device=f"d{i % 2}",
            )
            for i in range(300)
        ]
        same_as_general(enc, points)


def test_caches_at_their_limit_are_cleared_between_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.lineproto

    monkeypatch.setattr(pipeline.lineproto, "_MAX_SERIES_CACHE", 3)
    enc = LineEncoder(vector_min=1)
    for batch in range(6):
        devices = [(i + batch) % 7 for i in range(40)]
        points = [
            pt({"power_w": float(i)} if d % 3 else {"power_w": 1.0, "soc_pct": 2.0}, device=f"d{d}")
            for i, d in enumerate(devices)
        ]
        same_as_general(enc, points)


# -- the column path on fleet traffic ----------------------------------------------------------------------

# Every value type, with what the two paths could disagree on: int64's ends, floats that repr writes
# with an exponent (and polars does not), negative zero, subnormals; text with quotes, backslashes and
# non-ASCII; names and tags that need escaping or carry '%'.
ints64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
odd_floats = st.sampled_from(
    [1e-5, -3.4e-6, 9.999999999999999e-05, 1e16, -2.5e17, 5e-324, -0.0, 1.7e308, 0.1]
)
values = (
    finite
    | odd_floats
    | ints64
    | st.booleans()
    | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x00"), max_size=8)
)
fleet_field_sets = st.dictionaries(shape_names, values, min_size=1, max_size=8)


@settings(max_examples=80, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["electricity", "pv", "b,a t", "m{}"]),
            households,
            devices,
            fleet_field_sets,
            stamps,
        ),
        min_size=1,
        max_size=60,
    ),
    ints_as_floats=st.booleans(),
)
def test_any_batch_is_written_byte_for_byte_as_line_by_line(
    rows: list[tuple[str, str, str, dict[str, object], int]], ints_as_floats: bool
) -> None:
    """Whatever a batch holds, the column path writes the line path's bytes, or refuses with the line
    path's error (a NaN-free strategy: refusals come from text the spec cannot carry)."""
    points = [pt(f, measurement=m, household=h, device=d, ts_ns=ts) for m, h, d, f, ts in rows]
    enc = LineEncoder(vector_min=1, ints_as_floats=ints_as_floats)
    try:
        expected = "\n".join(LineEncoder(ints_as_floats=ints_as_floats).lines(points)).encode()
    except LineProtocolError as exc:
        with pytest.raises(LineProtocolError) as err:
            enc.encode(ColumnBatch(points))
        assert (err.value.what, err.value.message) == (exc.what, exc.message)
        return
    assert enc.encode(ColumnBatch(points)) == expected


def fleet(ticks: int, homes: int = 50) -> list[Point]:
    """Time-ordered across homes: meter (power; with int counters each sixth tick), inverter (power,
    running flag, int energy), battery (power, state of charge)."""
    out = []
    for tick in range(ticks):
        ts = TS + tick * 10_000_000_000
        for h in range(homes):
            hh = f"hh-{h:05d}"
            meter: dict[str, object] = {"power_w": 400.5 + (tick + h) % 700}
            if tick % 6 == 0:
                meter |= {"import_wh_total": 10**6 + tick, "export_wh_total": 5 * 10**5 + h}
            out.append(pt(meter, household=hh, ts_ns=ts))
            pv = {"power_w": float(tick * h % 3000), "running": tick % 2 == 0, "energy_wh_total": tick}
            out.append(pt(pv, measurement="pv", household=hh, device="inverter", source="modbus", ts_ns=ts))
            battery = {"power_w": -500.25, "soc_pct": 55.5}
            out.append(pt(battery, measurement="battery", household=hh, device="battery", ts_ns=ts))
    return out


@pytest.mark.parametrize("ints_as_floats", [False, True])
def test_fleet_traffic_takes_the_column_path_and_keeps_the_batch_order(ints_as_floats: bool) -> None:
    """Guards the speed of the common case: ints, floats and bools in a fleet batch are formatted by
    columns (no fallback to the line path), and the lines come out in the order they were added."""
    points = fleet(7)
    enc = LineEncoder(ints_as_floats=ints_as_floats)
    batch = ColumnBatch(points)
    assert len(batch.shapes()) == 4  # meter, meter with counters, inverter, battery
    body = enc._encode_batch(batch)
    assert body is not None
    assert body == "\n".join(LineEncoder(ints_as_floats=ints_as_floats).lines(points)).encode()


def test_one_unusual_column_among_many_shapes_is_written_as_repr_writes_it() -> None:
    """The column path formats a batch's floats (ints, flags) of every shape in one column: a float
    ``repr`` writes with an exponent in one shape must not change how the other shapes' floats are
    written, nor be written the polars way itself."""
    points = fleet(7)
    points[40] = pt({"power_w": 1e20, "soc_pct": 55.5}, measurement="battery", device="battery", ts_ns=TS)
    points[41] = pt({"power_w": 2.5e-7, "note": "a b"}, measurement="pv", device="inverter", ts_ns=TS)
    for ints_as_floats in (False, True):
        enc = LineEncoder(ints_as_floats=ints_as_floats)
        body = enc._encode_batch(ColumnBatch(points))
        assert body is not None  # (it did take the column path)
        assert body == "\n".join(LineEncoder(ints_as_floats=ints_as_floats).lines(points)).encode()
        assert b"power_w=1e+20,soc_pct=55.5" in body and b"power_w=2.5e-07" in body


def test_a_value_to_refuse_in_any_shape_refuses_the_batch_with_the_line_paths_error() -> None:
    for bad, what in (({"energy_wh_total": 2**63}, "energy_wh_total"), ({"power_w": math.nan}, "power_w")):
        points = fleet(7)
        points[-1] = pt(bad, measurement="pv", device="inverter", ts_ns=TS)
        enc = LineEncoder(ints_as_floats=True)
        assert enc._encode_batch(ColumnBatch(points)) is None
        with pytest.raises(LineProtocolError) as err:
            enc.encode(ColumnBatch(points))
        assert err.value.what == what


def test_an_empty_batch_is_an_empty_body_on_the_column_path_too() -> None:
    enc = LineEncoder(vector_min=0)
    assert enc.encode(ColumnBatch()) == enc.encode([]) == b""
