"""Every registered property codec, both directions: what the emulator encodes the collector decodes
back (to the property's resolution), and nothing in range ever encodes to a "no data" code."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.echonet.classes import CLASSES
from protocols.echonet.codecs import (
    Counter,
    FixedTimeEnergy,
    MeterEnergy,
    MissingParam,
    Signed,
    Stamped,
    Unsigned,
    Volume,
)

METER = {"coefficient": 10, "unit": 0x02, "digits": 6}  # 0.1 kWh per count


def _numeric() -> list[tuple[str, object]]:
    return [
        (f"{c.device}:{p.epc:02X}", p.codec)
        for c in CLASSES.values()
        for p in c.props
        if isinstance(p.codec, Unsigned | Signed | Counter)
    ]


@pytest.mark.parametrize(("where", "codec"), _numeric(), ids=[w for w, _ in _numeric()])
@given(fraction=st.floats(0.0, 1.0))
def test_numbers_round_trip_within_their_range(
    where: str, codec: Unsigned | Signed | Counter, fraction: float
) -> None:
    if isinstance(codec, Counter):
        low, high = 0, codec.wrap_counts - 1
    elif isinstance(codec, Signed):
        low, high = codec.min, codec.max
    else:
        low, high = codec.min, codec.max if codec.max is not None else (1 << (8 * codec.size)) - 3
    value = round(low + (high - low) * fraction)
    if isinstance(codec, Unsigned) and codec.unset is not None and value <= 0:
        value = 1  # 0 means "not installed" for a rating
    edt = codec.encode(value, {})
    assert len(edt) == codec.size and codec.decode(edt, {}) == value, where


@given(wh=st.floats(0.0, 1e8, allow_nan=False))
def test_meter_energy_is_counted_in_its_steps_and_wraps_at_its_digits(wh: float) -> None:
    codec = MeterEnergy()
    got = codec.decode(codec.encode(wh, METER), METER)
    assert got == pytest.approx((int(wh / 100.0 + 1e-9) % 10**6) * 100.0)
    assert codec.wrap(METER) == pytest.approx(1e8)
    with pytest.raises(MissingParam, match="unit"):
        codec.decode(b"\x00\x00\x00\x01", {"digits": 6})


def test_the_fixed_time_record_keeps_the_meters_own_clock() -> None:
    codec = FixedTimeEnergy()
    at = datetime(2026, 7, 1, 3, 30, tzinfo=UTC)  # 12:30 in Tokyo
    edt = codec.encode(Stamped(at, 2_000.0), METER)
    assert edt[:7] == bytes.fromhex("07ea07010c1e00")
    assert codec.decode(edt, METER) == Stamped(at, 2_000.0)
    assert codec.decode(b"\x00" * 7 + edt[7:], METER) is None  # no boundary recorded yet


@given(litres=st.floats(0.0, 1e7, allow_nan=False), unit=st.integers(0, 6))
def test_volume_in_any_unit(litres: float, unit: int) -> None:
    codec = Volume()
    count = int(litres / 1000.0 / 10.0**-unit + 1e-9) % 1_000_000_000
    got = codec.decode(codec.encode(litres, {"unit": unit}), {"unit": unit})
    # every count the appendix allows (0..999,999,999) reads back, and the wrap is 10**9 counts
    assert got == pytest.approx(count * 10.0**-unit * 1000.0)
    assert codec.wrap({"unit": unit}) == pytest.approx(1e9 * 10.0**-unit * 1000.0)


def test_a_volume_above_eight_digits_reads_and_wraps_at_nine() -> None:
    """Issue 15 item 2: a meter counting millilitres passes 99,999,999 counts (100 m3) within months;
    the register goes on to 999,999,999 and only then starts again from 0."""
    codec = Volume()
    ml = {"unit": 6}
    assert codec.decode((123_456_789).to_bytes(4, "big"), ml) == pytest.approx(123_456.789)
    assert codec.decode((999_999_999).to_bytes(4, "big"), ml) == pytest.approx(999_999.999)
    assert codec.wrap(ml) == pytest.approx(1e6)  # litres: 10**9 counts of 1 mL
    assert Volume(0.001).wrap({}) == pytest.approx(1e9)  # gas: 10**9 counts of 1 L
    assert codec.decode(b"\xff\xff\xff\xfe", ml) is None  # the no-data code stays no value
