"""Line protocol read back: what our encoder writes parses to the same points, and what would make a
line mean something else is refused with the line's number."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.lineparse import LineParseError, TooManyLines, parse_body, parse_line
from pipeline.lineproto import LineEncoder
from pipeline.points import Point

GOOD = (
    "electricity,device=m1,household=hh-a,source=echonet power_w=1.5,import_wh_total=12.0 1700000000000000000"
)

names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters="\\"),
    min_size=1,
    max_size=12,
)
field_names = names.filter(lambda n: not n.startswith("_") and n != "time")
values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=20),
)
points = st.builds(
    Point,
    measurement=names.filter(lambda n: not n.startswith(("_", "#"))),
    household=names,
    device=names,
    source=names,
    ts_ns=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    fields=st.dictionaries(field_names, values, min_size=1, max_size=4),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(points, min_size=1, max_size=5))
def test_what_the_encoder_writes_parses_to_the_same_points(batch: list[Point]) -> None:
    body = "\n".join(LineEncoder().lines(batch)).encode()
    assert list(parse_body(body, 100)) == batch


def test_the_encoders_column_wise_output_parses_too() -> None:
    batch = [
        Point("pv", f"hh-{i % 7}", "inv", "modbus", 10**18 + i, {"power_w": i * 0.1, "fault": i % 2 == 0})
        for i in range(600)
    ]
    body = LineEncoder(ints_as_floats=True).encode(batch)
    assert list(parse_body(body, 1000)) == batch


def test_numbers_keep_their_kind_and_value() -> None:
    p = parse_line('pv,device=d,household=h,source=s a=1,b=-2.5e3,c=7i,d=8u,e=t,f=FALSE,g="x \\" y" 5')
    assert p.fields == {"a": 1.0, "b": -2500.0, "c": 7, "d": 8, "e": True, "f": False, "g": 'x " y'}
    assert [type(v) for v in p.fields.values()] == [float, float, int, int, bool, bool, str]
    assert p.ts_ns == 5


def test_blank_lines_comments_and_crlf_are_skipped() -> None:
    body = f"# a comment\n\n{GOOD}\r\n\n".encode()
    assert len(parse_body(body, 10)) == 1


@pytest.mark.parametrize(
    "line, reason",
    [
        (GOOD.rsplit(" ", 1)[0], "no timestamp"),
        (GOOD.rsplit(" ", 1)[0] + " 1.5", "not an integer"),
        (GOOD.rsplit(" ", 1)[0] + f" {2**63}", "outside 64 bits"),
        (GOOD.replace(",source=echonet", ""), "exactly device, household and source"),
        (GOOD.replace("source=echonet", "source=echonet,site=x"), "exactly device, household and source"),
        (GOOD.replace("device=m1", "device=m1,device=m2"), "given twice"),
        (GOOD.replace("power_w=1.5", "power_w=nan"), "not a value"),
        (GOOD.replace("power_w=1.5", "power_w=inf"), "not a value"),
        (GOOD.replace("power_w=1.5", "power_w=1_000"), "not a value"),
        (GOOD.replace("power_w=1.5", "power_w=1e999"), "not a value"),
        (GOOD.replace("power_w=1.5", f"power_w={2**63}i"), "not a value"),
        (GOOD.replace("power_w=1.5", "power_w=-1u"), "not a value"),
        (GOOD.replace("power_w=1.5", "power_w=1.5,power_w=2.0"), "given twice"),
        (GOOD.replace("import_wh_total=12.0", "import_wh_total=12.0,"), "not '<measurement>"),
        (GOOD.replace("power_w=1.5", 'power_w="open'), "not '<measurement>"),
        (GOOD + " extra", "not '<measurement>"),
        ("electricity", "not '<measurement>"),
    ],
)
def test_lines_that_would_change_meaning_are_refused(line: str, reason: str) -> None:
    body = f"{GOOD}\n{line}".encode()
    with pytest.raises(LineParseError) as exc:
        parse_body(body, 10)
    assert exc.value.line == 2
    assert reason in str(exc.value)


def test_a_body_that_is_not_utf8_names_its_line() -> None:
    with pytest.raises(LineParseError, match="line 2: not UTF-8"):
        parse_body(f"{GOOD}\n".encode() + b"\xff\n", 10)


def test_more_lines_than_allowed_are_refused() -> None:
    body = "\n".join([GOOD] * 11).encode()
    assert len(parse_body(body, 11)) == 11
    with pytest.raises(TooManyLines):
        parse_body(body, 10)


def test_escaped_names_round_trip() -> None:
    p = Point("electricity", "hh a,b=c", "dev ice", "echonet", 1, {"power w,x=y": 1.0})
    line = LineEncoder().line(p)
    assert "\\ " in line and "\\," in line and "\\=" in line
    assert parse_line(line) == p
    assert math.isclose(parse_line(line).fields["power w,x=y"], 1.0)  # type: ignore[arg-type]
