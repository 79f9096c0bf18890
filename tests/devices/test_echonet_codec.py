"""The ECHONET Lite codec: byte-exact against the reference's wire examples, round-trips, and every
malformed input ends as FrameError (never IndexError, struct.error, ...)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.echonet.frame import (
    CONTROLLER,
    EOJ,
    ESV,
    NODE_PROFILE,
    SETGET_ESVS,
    Frame,
    FrameError,
    Property,
    decode,
    decode_int,
    decode_property_map,
    decode_uint,
    encode,
    encode_property_map,
    get_request,
    pack_int,
    pack_uint,
)

METER = EOJ(0x02, 0x88, 0x01)
BATTERY = EOJ(0x02, 0x7D, 0x01)


def _hex(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# protocols.md §1.4, byte for byte
WIRE_EXAMPLES = [
    (
        "10 81 00 01 05 ff 01 0e f0 01 62 01 d6 00",
        Frame(1, CONTROLLER, NODE_PROFILE, ESV.GET, (Property(0xD6),)),
    ),
    (
        "10 81 00 01 0e f0 01 05 ff 01 72 01 d6 04 01 02 88 01",
        Frame(1, NODE_PROFILE, CONTROLLER, ESV.GET_RES, (Property(0xD6, _hex("01 02 88 01")),)),
    ),
    (
        "10 81 00 00 0e f0 01 0e f0 01 73 01 d5 04 01 02 88 01",
        Frame(0, NODE_PROFILE, NODE_PROFILE, ESV.INF, (Property(0xD5, _hex("01 02 88 01")),)),
    ),
    (
        "10 81 00 02 05 ff 01 02 88 01 62 04 e7 00 e0 00 e1 00 d3 00",
        Frame(2, CONTROLLER, METER, ESV.GET, tuple(Property(e) for e in (0xE7, 0xE0, 0xE1, 0xD3))),
    ),
    (
        "10 81 00 02 02 88 01 05 ff 01 72 04 e7 04 00 00 00 9e e0 04 00 07 a7 8d e1 01 02 d3 04 00 00 00 01",
        Frame(
            2,
            METER,
            CONTROLLER,
            ESV.GET_RES,
            (
                Property(0xE7, _hex("0000009e")),
                Property(0xE0, _hex("0007a78d")),
                Property(0xE1, b"\x02"),
                Property(0xD3, _hex("00000001")),
            ),
        ),
    ),
    (
        "10 81 00 03 02 88 01 05 ff 01 52 02 e7 04 00 00 00 9e eb 00",
        Frame(3, METER, CONTROLLER, ESV.GET_SNA, (Property(0xE7, _hex("0000009e")), Property(0xEB))),
    ),
    (
        "10 81 00 04 05 ff 01 02 7d 01 61 01 da 01 42",
        Frame(4, CONTROLLER, BATTERY, ESV.SETC, (Property(0xDA, b"\x42"),)),
    ),
    (
        "10 81 00 04 02 7d 01 05 ff 01 71 01 da 00",
        Frame(4, BATTERY, CONTROLLER, ESV.SET_RES, (Property(0xDA),)),
    ),
    (
        "10 81 00 04 02 7d 01 05 ff 01 51 01 da 01 42",
        Frame(4, BATTERY, CONTROLLER, ESV.SETC_SNA, (Property(0xDA, b"\x42"),)),
    ),
]


@pytest.mark.parametrize(("wire", "frame"), WIRE_EXAMPLES)
def test_reference_wire_examples(wire: str, frame: Frame) -> None:
    assert encode(frame) == _hex(wire)
    assert decode(_hex(wire)) == frame


def test_reference_property_map_bitmap() -> None:
    epcs = [0x80, 0x81, 0x82, 0x88, 0x8A, 0x8D, 0x97, 0x98, 0x9D, 0x9E, 0x9F, 0xD3, 0xD7]
    epcs += [0xE0, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE7, 0xE8, 0xEA, 0xEB, 0xEC, 0xED]
    wire = _hex("19 41 41 41 60 40 40 00 62 43 00 41 40 40 43 02 02")
    assert encode_property_map(epcs) == wire
    assert decode_property_map(wire) == tuple(sorted(epcs))


def test_short_property_map_is_a_list() -> None:
    assert encode_property_map([0x88, 0x80, 0x81]) == _hex("03 80 81 88")
    assert decode_property_map(_hex("03 80 81 88")) == (0x80, 0x81, 0x88)


def test_eoj_hex() -> None:
    assert METER.hex() == "028801"
    assert EOJ.from_hex("027D01") == BATTERY
    assert BATTERY.cls == 0x027D
    with pytest.raises(FrameError):
        EOJ.from_hex("0288")
    with pytest.raises(FrameError):
        EOJ.from_hex("zz8801")


def test_get_request_helper() -> None:
    assert get_request(2, METER, [0xE7, 0xE0, 0xE1, 0xD3]) == _hex(WIRE_EXAMPLES[3][0])


def test_setget_carries_both_lists() -> None:
    frame = Frame(9, CONTROLLER, BATTERY, ESV.SETGET, (Property(0xE4),), (Property(0xDA, b"\x42"),))
    wire = encode(frame)
    assert wire == _hex("10 81 00 09 05 ff 01 02 7d 01 6e 01 da 01 42 01 e4 00")
    assert decode(wire) == frame


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("10 81 00 01 05 ff 01 0e f0", "too short"),
        ("11 81 00 01 05 ff 01 0e f0 01 62 00", "EHD1 0x11 at offset 0"),
        ("10 82 00 01 05 ff 01 0e f0 01 62 00", "EHD2 0x82 at offset 1"),
        ("10 81 00 01 05 ff 01 0e f0 01 99 00", "ESV 0x99 at offset 10"),
        ("10 81 00 01 05 ff 01 0e f0 01 62 02 d6 00", "says 2 properties but the frame ends after 1"),
        (
            "10 81 00 01 05 ff 01 0e f0 01 72 01 d6 04 01 02",
            "PDC 4 of EPC 0xd6 at offset 13 runs past the end",
        ),
        ("10 81 00 01 05 ff 01 0e f0 01 62 01 d6 00 ff ff", "2 trailing bytes"),
        ("10 81 00 01 05 ff 01 0e f0 01 6e 01 da 01 42", "ends at offset 15 where OPC was expected"),
    ],
)
def test_malformed_frames_say_what_and_where(wire: str, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode(_hex(wire))


def test_encode_refuses_unencodable() -> None:
    with pytest.raises(FrameError, match="TID"):
        encode(Frame(70000, CONTROLLER, METER, ESV.GET, ()))
    with pytest.raises(FrameError, match="at most 255"):
        encode(Frame(1, CONTROLLER, METER, ESV.GET, (Property(0xE0, bytes(256)),)))
    with pytest.raises(FrameError, match="set_props must be None"):
        encode(Frame(1, CONTROLLER, METER, ESV.GET, (), (Property(0xE0),)))


def test_property_map_errors() -> None:
    with pytest.raises(FrameError, match="empty"):
        decode_property_map(b"")
    with pytest.raises(FrameError, match="count byte says 3"):
        decode_property_map(_hex("03 80 81"))
    with pytest.raises(FrameError, match="17-byte bitmap"):
        decode_property_map(_hex("10 01 02"))
    with pytest.raises(FrameError, match="bits set"):
        decode_property_map(bytes((16,)) + bytes(16))
    with pytest.raises(FrameError, match=r"0x80\.\.0xFF"):
        encode_property_map([0x10])


def test_numbers_and_no_data_sentinels() -> None:
    assert decode_uint(_hex("0007a78d")) == 501_645
    assert decode_uint(_hex("fffffffe")) is None  # not measured
    assert decode_uint(_hex("ffff")) is None
    assert decode_uint(_hex("fffd")) == 65533
    assert decode_uint(_hex("05f5e100"), max_value=99_999_999) is None  # outside the documented range
    assert decode_int(_hex("ffffff9c")) == -100
    assert decode_int(_hex("7ffffffe")) is None
    assert decode_int(_hex("80000000")) is None
    assert decode_int(_hex("7ffe")) is None
    assert decode_int(_hex("0014")) == 20
    assert decode_int(_hex("ff"), min_value=0) is None
    assert pack_int(-100, 4) == _hex("ffffff9c")
    assert pack_uint(501_645, 4) == _hex("0007a78d")
    with pytest.raises(FrameError):
        pack_uint(-1, 2)
    with pytest.raises(FrameError):
        pack_uint(1, 3)
    with pytest.raises(FrameError):
        decode_uint(b"\x00\x01", 4)


# --- properties -----------------------------------------------------------------------------------

eojs = st.builds(EOJ, st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
props = st.lists(st.builds(Property, st.integers(0, 255), st.binary(max_size=40)), max_size=12).map(tuple)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    esv = draw(st.sampled_from(list(ESV)))
    set_props = draw(props) if esv in SETGET_ESVS else None
    return Frame(draw(st.integers(0, 0xFFFF)), draw(eojs), draw(eojs), esv, draw(props), set_props)


@given(frames())
def test_frame_round_trip(frame: Frame) -> None:
    assert decode(encode(frame)) == frame


@given(st.sets(st.integers(0x80, 0xFF)))
def test_property_map_round_trip(epcs: set[int]) -> None:
    wire = encode_property_map(epcs)
    assert len(wire) == (1 + len(epcs) if len(epcs) < 16 else 17)
    assert decode_property_map(wire) == tuple(sorted(epcs))


@given(st.binary(max_size=80))
@settings(max_examples=400)
def test_random_bytes_decode_or_frame_error(data: bytes) -> None:
    try:
        frame = decode(data)
    except FrameError:
        return
    assert encode(frame) == data  # whatever decodes is exactly what was sent


@given(frames(), st.data())
def test_damaged_frames_never_raise_anything_else(frame: Frame, data: st.DataObject) -> None:
    wire = bytearray(encode(frame))
    cut = data.draw(st.integers(0, len(wire)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(wire) - 1), st.integers(0, 255)), max_size=3))
    for pos, value in flips:
        wire[pos] = value
    damaged = bytes(wire[:cut]) + data.draw(st.binary(max_size=3))
    try:
        again = decode(damaged)
    except FrameError:
        return
    assert encode(again) == damaged


@given(st.binary(min_size=1, max_size=20))
def test_random_property_maps_decode_or_frame_error(edt: bytes) -> None:
    try:
        epcs = decode_property_map(edt)
    except FrameError:
        return
    assert all(0 <= e <= 0xFF for e in epcs)


@given(st.integers(-(2**31) + 1, 2**31 - 3))
def test_int32_round_trip(value: int) -> None:
    assert decode_int(pack_int(value, 4)) == value


@given(st.integers(0, 2**32 - 3))
def test_uint32_round_trip(value: int) -> None:
    assert decode_uint(pack_uint(value, 4)) == value
