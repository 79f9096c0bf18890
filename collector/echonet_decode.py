"""ECHONET Lite EDTs -> normalized fields, one small table per device class.

The collector polls each class for a fixed set of EPCs: ``fast`` ones (instantaneous values, every
poll) and ``slow`` ones (counters and the coefficients that scale them, on the counter interval).
``optional`` lists EPCs a device documents as sometimes unavailable (an EV's battery while the car
is unplugged): missing them is normal, so the reading stays ``ok``.  Units come from the protocol
reference (protocols.md §2); anything outside a property's documented range decodes to None, never
to a plausible-looking zero.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from collector.reading import FieldValue
from devices.echonet.classes import JST, METER_UNIT_KWH, WRAP_1E9  # shared with the emulator
from devices.echonet.frame import FrameError, decode_int, decode_uint


@dataclass
class Decoded:
    """What one poll of one object yields.  ``missing`` are EPCs whose absence makes the data partial."""

    fields: dict[str, FieldValue] = field(default_factory=dict)
    counter_wrap: dict[str, float] = field(default_factory=dict)
    missing: set[int] = field(default_factory=set)
    # (device timestamp, fields) of values the device stamped itself (meter 0xEA/0xEB)
    stamped: list[tuple[datetime, dict[str, FieldValue]]] = field(default_factory=list)


Values = Mapping[int, bytes | None]
Decoder = Callable[[Values, Decoded], None]


@dataclass(frozen=True)
class ClassSpec:
    class_id: int
    fast: tuple[int, ...]
    slow: tuple[int, ...]
    decode: Decoder
    optional: frozenset[int] = frozenset()


def _edt(values: Values, epc: int, out: Decoded, size: int) -> bytes | None:
    """The property's bytes if the device sent them (a property it could not give is noted as
    missing), refusing a length the class does not define."""
    edt = values.get(epc)
    if edt is None:
        if epc in values:
            out.missing.add(epc)
        return None
    if len(edt) != size:
        raise FrameError(f"EPC 0x{epc:02x}: {len(edt)} bytes where {size} were expected")
    return edt


def _u(values: Values, epc: int, out: Decoded, size: int, max_value: int | None = None) -> int | None:
    edt = _edt(values, epc, out, size)
    return None if edt is None else decode_uint(edt, size, max_value)


def _s(values: Values, epc: int, out: Decoded, size: int, lo: int, hi: int) -> int | None:
    edt = _edt(values, epc, out, size)
    return None if edt is None else decode_int(edt, size, lo, hi)


def _put(out: Decoded, name: str, value: FieldValue | None) -> None:
    if value is not None:
        out.fields[name] = value


def _wh_counter(values: Values, epc: int, out: Decoded, name: str) -> None:
    """0.001 kWh uint32 counter: 0..999,999,999 Wh."""
    raw = _u(values, epc, out, 4, WRAP_1E9 - 1)
    if raw is not None:
        out.fields[name] = float(raw)
        out.counter_wrap[name] = float(WRAP_1E9)


def _status(values: Values, out: Decoded) -> None:
    """Super-class operation (0x80) and fault (0x88) status."""
    op = _u(values, 0x80, out, 1)
    if op is not None:
        out.fields["running"] = op == 0x30
    fault = _u(values, 0x88, out, 1)
    if fault is not None:
        out.fields["fault"] = fault == 0x41


def _fixed_time(edt: bytes) -> tuple[datetime, int] | None:
    """0xEA/0xEB: local date-time of the :00/:30 boundary, then the uint32 count at that moment."""
    if len(edt) != 11:
        raise FrameError(f"fixed-time cumulative energy: {len(edt)} bytes, expected 11")
    year = edt[0] << 8 | edt[1]
    try:
        local = datetime(year, edt[2], edt[3], edt[4], edt[5], edt[6], tzinfo=JST)
    except ValueError:
        return None  # a meter that has not recorded a boundary yet sends an impossible date
    count = decode_uint(edt[7:], 4, 99_999_999)
    if count is None:
        return None
    return local.astimezone(UTC), count


def decode_meter(values: Values, out: Decoded) -> None:
    """Low-voltage smart meter: E7 W (+ import), E0/E3 x D3 x unit(E1) -> Wh, wrap at 10**D7 counts."""
    _put(out, "power_w", _s(values, 0xE7, out, 4, -2_147_483_647, 2_147_483_645))
    coefficient = _u(values, 0xD3, out, 4, 999_999) if 0xD3 in values else 1
    if coefficient is None:
        coefficient = 1  # "treat as 1 if absent" (protocols.md §2.1)
    unit = _u(values, 0xE1, out, 1)
    digits = _u(values, 0xD7, out, 1)
    if unit is None or unit not in METER_UNIT_KWH:
        if 0xE0 in values or 0xE3 in values:
            out.missing.add(0xE1)
        return
    step_wh = coefficient * METER_UNIT_KWH[unit] * 1000.0
    wrap = (10.0**digits) * step_wh if digits is not None and 1 <= digits <= 8 else None
    for epc, name in ((0xE0, "import_wh_total"), (0xE3, "export_wh_total")):
        raw = _u(values, epc, out, 4, 99_999_999)
        if raw is not None:
            out.fields[name] = raw * step_wh
            if wrap is not None:
                out.counter_wrap[name] = wrap
    for epc, name in ((0xEA, "import_wh_total"), (0xEB, "export_wh_total")):
        edt = values.get(epc)
        if edt:
            stamped = _fixed_time(edt)
            if stamped is not None:
                out.stamped.append((stamped[0], {name: stamped[1] * step_wh}))


def decode_solar(values: Values, out: Decoded) -> None:
    _put(out, "power_w", _u(values, 0xE0, out, 2, 65533))
    _wh_counter(values, 0xE1, out, "energy_wh_total")
    _status(values, out)


_BATTERY_STATE = {0x40: "other", 0x41: "rapid_charging", 0x42: "charging", 0x43: "discharging"}
_BATTERY_STATE |= {0x44: "standby", 0x45: "test", 0x46: "auto", 0x48: "restart", 0x49: "recalc"}


def decode_battery(values: Values, out: Decoded) -> None:
    """Storage battery: D3 signed W (+ charging), E4 SOC %, A8/A9 AC charge/discharge totals."""
    _put(out, "power_w", _s(values, 0xD3, out, 4, -999_999_999, 999_999_999))
    _put(out, "soc_pct", _u(values, 0xE4, out, 1, 100))
    _wh_counter(values, 0xA8, out, "charge_wh_total")
    _wh_counter(values, 0xA9, out, "discharge_wh_total")
    working = _u(values, 0xCF, out, 1)
    if working is not None:
        out.fields["state"] = _BATTERY_STATE.get(working, f"0x{working:02x}")
    _status(values, out)


def _volume(values: Values, out: Decoded, m3_per_count: float) -> None:
    raw = _u(values, 0xE0, out, 4, 99_999_999)
    if raw is not None:
        out.fields["volume_l_total"] = raw * m3_per_count * 1000.0
        out.counter_wrap["volume_l_total"] = 100_000_000 * m3_per_count * 1000.0


def decode_water(values: Values, out: Decoded) -> None:
    """Water meter: E0 count x 10**-E1 m3 (E1 = 0..6)."""
    unit = _u(values, 0xE1, out, 1)
    if unit is None or unit > 6:
        if 0xE0 in values:
            out.missing.add(0xE1)
        return
    _volume(values, out, 10.0**-unit)


def decode_gas(values: Values, out: Decoded) -> None:
    """Gas meter: E0 in 0.001 m3 (= 1 L)."""
    _volume(values, out, 0.001)


def decode_fuel_cell(values: Values, out: Decoded) -> None:
    _put(out, "power_w", _u(values, 0xC4, out, 2, 65533))
    _wh_counter(values, 0xC5, out, "energy_wh_total")
    generating = _u(values, 0xCB, out, 1)
    _status(values, out)
    if generating is not None:
        out.fields["running"] = generating == 0x41  # generation status wins over operation status


# 0xC7: 0x30 = not connected; 0x40-0x47 = connected in some state; 0xFF = undefined.
def decode_ev(values: Values, out: Decoded) -> None:
    """EV charger: D3 W (+ charging the car), E4 SOC %, C7 connection, D8/D6 totals."""
    _put(out, "power_w", _s(values, 0xD3, out, 4, -999_999_999, 999_999_999))
    _put(out, "soc_pct", _u(values, 0xE4, out, 1, 100))
    _wh_counter(values, 0xD8, out, "charge_wh_total")
    _wh_counter(values, 0xD6, out, "discharge_wh_total")
    conn = _u(values, 0xC7, out, 1)
    if conn is not None and conn != 0xFF:
        out.fields["connected"] = conn != 0x30
    _status(values, out)


CLASS_SPECS: dict[int, ClassSpec] = {
    s.class_id: s
    for s in (
        ClassSpec(
            0x0288,
            fast=(0xE7,),
            slow=(0xD3, 0xD7, 0xE1, 0xE0, 0xE3, 0xEA, 0xEB),
            decode=decode_meter,
            optional=frozenset({0xD3, 0xE3, 0xEA, 0xEB}),
        ),
        ClassSpec(0x0279, fast=(0xE0, 0x80, 0x88), slow=(0xE1,), decode=decode_solar),
        ClassSpec(0x027D, fast=(0xD3, 0xE4, 0xCF, 0x80, 0x88), slow=(0xA8, 0xA9), decode=decode_battery),
        ClassSpec(0x0281, fast=(), slow=(0xE1, 0xE0), decode=decode_water),
        ClassSpec(0x0282, fast=(), slow=(0xE0,), decode=decode_gas),
        ClassSpec(0x027C, fast=(0xC4, 0xCB, 0x80), slow=(0xC5,), decode=decode_fuel_cell),
        ClassSpec(
            0x027E,
            fast=(0xD3, 0xE4, 0xC7, 0x80),
            slow=(0xD8, 0xD6),
            decode=decode_ev,
            optional=frozenset({0xC2, 0xC4, 0xE2, 0xE4}),  # the car's battery, unreadable while unplugged
        ),
    )
}


def decode(class_id: int, values: Values) -> Decoded:
    """Decode one object's values; FrameError when an EDT has the wrong shape (a malformed reply)."""
    out = Decoded()
    CLASS_SPECS[class_id].decode(values, out)
    return out
