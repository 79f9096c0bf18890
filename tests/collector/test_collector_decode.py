"""Decoding rules that a healthy emulator never exercises: sentinels, scale factors, coefficients,
request planning."""

from __future__ import annotations

import random

import pytest

from collector.echonet_decode import decode
from collector.sunspec_client import _plan_of, _points, interpret, plan_reads
from protocols.echonet.classes import CLASSES
from protocols.echonet.codecs import may_wrap
from protocols.sunspec.models import MODELS
from protocols.sunspec.points import SunSpecValueError, encode, not_implemented
from protocols.sunspec.points import decode as decode_point


def test_plan_reads_merges_neighbours_within_125_registers() -> None:
    assert plan_reads([(40070, 26), (40096, 64)]) == [(40070, 90)]  # models 124 + 802 in one read
    assert plan_reads([(40070, 107)]) == [(40070, 107)]
    assert plan_reads([(40070, 52), (40122, 107)]) == [(40070, 125), (40195, 34)]
    assert plan_reads([(0, 300)]) == [(0, 125), (125, 125), (250, 50)]
    assert plan_reads([(10, 5), (100, 5)]) == [(10, 95)]  # the registers between read, unused
    assert plan_reads([(10, 5), (200, 5)]) == [(10, 5), (200, 5)]  # too far apart for one read
    assert plan_reads([(40070, 44), (40122, 7)]) == [(40070, 59)]  # an inverter's 102 and 120, decoded part


def _model_regs(model_id: int, values: dict[str, float | int]) -> list[int]:
    model = MODELS[model_id]
    regs = [model_id, model.length]
    for p in model.points[2:]:
        regs += encode(p, values[p.name]) if p.name in values else not_implemented(p)
    return regs


def test_sunspec_scale_factors_and_not_implemented_points() -> None:
    regs = _model_regs(203, {"W": -1234, "W_SF": -1, "TotWhImp": 5000, "TotWh_SF": 3})
    data = interpret({203: regs})
    assert data.fields["power_w"] == pytest.approx(-123.4)
    assert data.fields["import_wh_total"] == 5_000_000.0
    assert "export_wh_total" not in data.fields and "export_wh_total" in data.missing  # not zero
    assert data.counter_wrap["import_wh_total"] == 2.0**32 * 1000
    flipped = interpret({203: regs}, power_sign=-1)
    assert flipped.fields["power_w"] == pytest.approx(123.4)
    # a value whose scale factor is not implemented cannot be trusted either
    no_sf = interpret({203: _model_regs(203, {"W": 100})})
    assert "power_w" not in no_sf.fields


def test_sunspec_inverter_fault_from_state_or_events() -> None:
    faulted = interpret({103: _model_regs(103, {"W": 0, "W_SF": 0, "St": 7, "Evt1": 0})})
    assert faulted.fields["fault"] is True and faulted.fields["running"] is False
    evt = interpret({103: _model_regs(103, {"W": 10, "W_SF": 0, "St": 4, "Evt1": 1 << 7})})
    assert evt.fields["fault"] is True and evt.fields["running"] is True


def test_meter_energy_uses_coefficient_unit_and_digits() -> None:
    values = {
        0xE0: (123456).to_bytes(4, "big"),
        0xD3: (10).to_bytes(4, "big"),
        0xE1: b"\x02",  # 0.01 kWh
        0xD7: b"\x06",
        0xE7: (-300).to_bytes(4, "big", signed=True),
    }
    out = decode(0x0288, values)
    assert out.fields["import_wh_total"] == pytest.approx(123456 * 10 * 0.01 * 1000)
    assert out.counter_wrap["import_wh_total"] == pytest.approx(10**6 * 10 * 0.01 * 1000)
    assert out.fields["power_w"] == -300
    # no-data codes are missing values, not numbers
    nodata = decode(0x0288, {0xE7: b"\x7f\xff\xff\xfe", 0xE0: b"\xff\xff\xff\xfe", 0xE1: b"\x01"})
    assert nodata.fields == {}


def test_sna_epcs_are_missing_and_wrong_sizes_cost_only_themselves() -> None:
    out = decode(0x027D, {0xD3: None, 0xE4: b"\x32"})
    assert out.fields == {"soc_pct": 50} and out.missing == {0xD3}
    odd = decode(0x027D, {0xD3: b"\x00\x01", 0xE4: b"\x32"})  # 0xD3 is 4 bytes
    assert odd.fields == {"soc_pct": 50} and odd.wrong_length == {0xD3: (2, 4)}


def test_water_unit_and_gas_litres() -> None:
    water = decode(0x0281, {0xE0: (1234).to_bytes(4, "big"), 0xE1: b"\x01"})  # 0.1 m3 per count
    assert water.fields["volume_l_total"] == pytest.approx(123400.0)
    gas = decode(0x0282, {0xE0: (5678).to_bytes(4, "big")})
    assert gas.fields["volume_l_total"] == pytest.approx(5678.0)


def test_sunspec_points_read_inline_agree_with_the_point_decoder() -> None:
    """The collector decodes one-register integer points inline (``sunspec_client._points``); every point
    of every registered model, at its sentinel, at the edges of its range and at random values, must
    read as ``protocols.sunspec.points.decode`` reads it, and a block too short still says so."""
    rng = random.Random(20)
    for model in MODELS.values():
        plan = _plan_of(model)
        specials = [0, 1, 0x7FFF, 0x8000, 0x8001, 0xFFFE, 0xFFFF]
        for trial in range(len(specials) + 50):
            regs = [
                specials[trial] if trial < len(specials) else rng.randrange(0x10000)
                for _ in range(model.size)
            ]
            expected = {
                name: decode_point(p, regs[offset : offset + size])
                for name, offset, size, p, _, _ in plan.points
            }
            assert _points(plan, regs) == expected, (model.id, trial)
        if plan.points:
            with pytest.raises(SunSpecValueError):
                _points(plan, [0] * (plan.end - 1))


def test_only_codecs_said_to_wrap_give_a_wrap() -> None:
    """ECHONET decoding asks ``wrap`` only of codecs that ``may_wrap``: the others must never give one."""
    params = {"coefficient": 1.0, "unit": 1.0, "digits": 6.0}
    for cls in CLASSES.values():
        for prop in cls.props:
            if not may_wrap(prop.codec):
                assert prop.codec.wrap(params) is None, (hex(cls.code), hex(prop.epc))
    assert any(may_wrap(p.codec) for cls in CLASSES.values() for p in cls.props)  # the counters do
