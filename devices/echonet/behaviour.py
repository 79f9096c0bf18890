"""What emulated objects do beyond serving the household through their class entry.

Most properties need nothing here: the class entry says which field each carries and the codec that
encodes it (``devices.echonet.classes``).  This module holds what an entry cannot say: a device's
settings (its ratings, the meter's coefficient, unit and digits) with their defaults and checks, and the
few properties whose value is more than one field through one codec (the meter's half-hourly record, an
EV's capacity that needs the car's size).  A class without an entry here is served with no settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from devices.echonet.table import DeviceContext, Producer, fixed, local_time
from devices.state import HomeState
from protocols.echonet.classes.battery import BATTERY
from protocols.echonet.classes.ev_charger import EV_CHARGER, NOT_CONNECTED
from protocols.echonet.classes.fuel_cell import FUEL_CELL
from protocols.echonet.classes.smart_meter import SMART_METER
from protocols.echonet.classes.solar import SOLAR
from protocols.echonet.classes.water_meter import WATER_METER
from protocols.echonet.codecs import METER_UNIT_KWH, WATER_UNIT_M3, MeterEnergy, Stamped, Unsigned
from protocols.echonet.entry import EchonetClass
from protocols.echonet.frame import NO_DATA_UINT32, pack_int, pack_uint


@dataclass(frozen=True)
class Behaviour:
    """Settings (name -> default) with their check, and producers that replace the entry's rule."""

    defaults: Mapping[str, float] = field(default_factory=dict)
    check: Callable[[Mapping[str, float]], None] | None = None
    producers: Mapping[int, Producer] = field(default_factory=dict)


def _codec_of(cls: EchonetClass, epc: int) -> Unsigned:
    codec = cls.by_epc[epc].codec
    assert isinstance(codec, Unsigned), f"{cls.name} 0x{epc:02X}"
    return codec


# --- low-voltage smart electric energy meter -------------------------------------------------------


def _import_wh(st: HomeState, ctx: DeviceContext) -> float:
    return st.grid_import_wh_total + ctx.settings["import_offset_wh"]


def _export_wh(st: HomeState, ctx: DeviceContext) -> float:
    return st.grid_export_wh_total + ctx.settings["export_offset_wh"]


def _energy(epc: int, energy: Callable[[HomeState, DeviceContext], float]) -> Producer:
    """The register with an older meter's history (``*_offset_wh``) on top of the household's own."""
    codec = SMART_METER.by_epc[epc].codec
    return lambda st, ctx: codec.encode(energy(st, ctx), ctx.settings)


def _half_hour(t: datetime) -> datetime:
    return t.replace(minute=30 if t.minute >= 30 else 0, second=0, microsecond=0)


_HISTORY_DAYS = 100  # 0xE5 asks for today (0) back to 99 days ago


def _fixed_time(
    epc: int, energy: Callable[[HomeState, DeviceContext], float], history: str | None = None
) -> Producer:
    """0xEA/0xEB: the counter at the latest :00/:30 (local time).

    The device only sees states when asked, so the value at the boundary is interpolated between the
    last state seen before it and the first one after it (exact when states are dense, close enough
    otherwise); a clock jump backwards restarts the record.  With ``history`` each boundary value is
    also kept, by local date and half hour, for the history property (0xE2).
    """
    key = f"fixed_{epc:02x}"
    codec = SMART_METER.by_epc[epc].codec

    def produce(st: HomeState, ctx: DeviceContext) -> bytes:
        rec = _record(st, ctx)
        if history is not None:
            days: dict[date, dict[int, float]] = ctx.memo.setdefault(history, {})
            boundary: datetime = rec[2]
            days.setdefault(boundary.date(), {})[boundary.hour * 2 + boundary.minute // 30] = rec[3]
            while len(days) > _HISTORY_DAYS:
                del days[min(days)]
        return codec.encode(Stamped(rec[2], rec[3]), ctx.settings)

    def _record(st: HomeState, ctx: DeviceContext) -> tuple[datetime, float, datetime, float]:
        now = local_time(st)
        wh = energy(st, ctx)
        boundary = _half_hour(now)
        rec = ctx.memo.get(key)
        if rec is None or boundary < rec[2]:
            rec = (now, wh, boundary, wh)
        elif boundary > rec[2]:
            last_t, last_wh = rec[0], rec[1]
            span = (now - last_t).total_seconds()
            if last_t <= boundary and span > 0:
                frac = (boundary - last_t).total_seconds() / span
                rec = (now, wh, boundary, last_wh + (wh - last_wh) * frac)
            else:
                rec = (now, wh, boundary, wh)
        else:
            rec = (now, wh, rec[2], rec[3])
        ctx.memo[key] = rec
        return rec

    return produce


def _history(fixed_time: Producer, history: str) -> Producer:
    """0xE2: the day 0xE5 names (0 = today, local time) and the register at each of its half hours,
    as far as the meter recorded them (``fixed_time`` keeps the record; it is brought up to date
    first, so the history has the latest boundary even when nobody asked for 0xEA)."""

    def produce(st: HomeState, ctx: DeviceContext) -> bytes:
        fixed_time(st, ctx)
        back = ctx.values.get(0xE5, b"\x00")[0]
        day = local_time(st).date() - timedelta(days=back)
        slots = ctx.memo.get(history, {}).get(day, {})
        counts = (
            pack_uint(MeterEnergy.count(slots[k], ctx.settings), 4) if k in slots else NO_DATA_UINT32
            for k in range(48)
        )
        return pack_uint(back, 2) + b"".join(counts)

    return produce


def _e8_currents(st: HomeState, ctx: DeviceContext) -> bytes:
    # single-phase three-wire 100/200 V: the power splits over the R and T lines at 200 V, 0.1 A units
    raw = pack_int(max(-32765, min(32765, round(st.grid_w / 20.0))), 2)
    return raw + raw


def _check_meter(s: Mapping[str, float]) -> None:
    if int(s["unit"]) not in METER_UNIT_KWH or s["unit"] != int(s["unit"]):
        raise ValueError(f"smart meter unit (0xE1) must be one of {sorted(METER_UNIT_KWH)}, got {s['unit']}")
    if not 1 <= s["digits"] <= 8 or s["digits"] != int(s["digits"]):
        raise ValueError(f"smart meter digits (0xD7) must be an integer 1..8, got {s['digits']}")
    if not 1 <= s["coefficient"] <= 999_999 or s["coefficient"] != int(s["coefficient"]):
        raise ValueError(
            f"smart meter coefficient (0xD3) must be an integer 1..999999, got {s['coefficient']}"
        )
    if s["import_offset_wh"] < 0 or s["export_offset_wh"] < 0:
        raise ValueError("smart meter offsets must be >= 0 Wh")


# --- household solar power generation ----------------------------------------------------------------


def _solar_restraint(st: HomeState, ctx: DeviceContext) -> bytes:
    limit = ctx.values.get(0xA0, b"\x64")
    return b"\x41" if limit[0] < 100 else b"\x44"


# --- storage battery and EV charger: stored energy needs the battery's size ----------------------------


def _stored_wh(
    cls: EchonetClass, epc: int, capacity: str, soc: Callable[[HomeState], float | None]
) -> Producer:
    codec = _codec_of(cls, epc)

    def produce(st: HomeState, ctx: DeviceContext) -> bytes | None:
        pct = soc(st)
        return None if pct is None else codec.encode(ctx.settings[capacity] * pct / 100.0, ctx.settings)

    return produce


def _ev_soc(st: HomeState) -> float | None:
    """The car's battery cannot be read while it is unplugged: the device answers Get_SNA."""
    return st.ev_soc_pct if st.ev_connected else None


def _ev_full(st: HomeState) -> float | None:
    """The car's whole battery (a capacity), while it can be read."""
    return 100.0 if st.ev_connected else None


def _ev_room(st: HomeState) -> float | None:
    """What the car's battery can still take."""
    return 100.0 - st.ev_soc_pct if st.ev_connected else None


def _discharge_w(cls: EchonetClass, epc: int) -> Producer:
    """A V2H charger discharges as fast as it charges; a charge-only one has no discharge rating."""
    codec = cls.by_epc[epc].codec
    return fixed(lambda st, ctx: codec.encode(ctx.settings["charger_w"] * ctx.settings["v2h"], ctx.settings))


def _ev_connection(st: HomeState, ctx: DeviceContext) -> bytes:
    if not st.ev_connected:
        return bytes((NOT_CONNECTED,))
    return b"\x43" if ctx.settings["v2h"] else b"\x41"  # chargeable and dischargeable / chargeable


def _check_water(s: Mapping[str, float]) -> None:
    if s["unit"] not in WATER_UNIT_M3:
        raise ValueError(f"water meter unit (0xE1) must be 0..6, got {s['unit']}")


_IMPORT_RECORD = _fixed_time(0xEA, _import_wh, "history_e2")

BEHAVIOURS: dict[int, Behaviour] = {
    SMART_METER.code: Behaviour(
        {"coefficient": 1, "unit": 0x01, "digits": 6, "import_offset_wh": 0.0, "export_offset_wh": 0.0},
        _check_meter,
        {
            0xE0: _energy(0xE0, _import_wh),
            0xE3: _energy(0xE3, _export_wh),
            0xE8: _e8_currents,
            0xEA: _IMPORT_RECORD,
            0xE2: _history(_IMPORT_RECORD, "history_e2"),
            0xEB: _fixed_time(0xEB, _export_wh),
        },
    ),
    SOLAR.code: Behaviour({"rated_w": 4500.0}, producers={0xD1: _solar_restraint}),
    BATTERY.code: Behaviour(
        {"capacity_wh": 7000.0, "rated_w": 3000.0},
        producers={
            0xE2: _stored_wh(BATTERY, 0xE2, "capacity_wh", lambda st: st.battery_soc_pct),
            **{
                epc: _stored_wh(BATTERY, epc, "capacity_wh", lambda st: 100.0)
                for epc in (0xA0, 0xA1, 0xA2, 0xA3)
            },
            0xA4: _stored_wh(BATTERY, 0xA4, "capacity_wh", lambda st: 100.0 - st.battery_soc_pct),
            0xA5: _stored_wh(BATTERY, 0xA5, "capacity_wh", lambda st: st.battery_soc_pct),
        },
    ),
    WATER_METER.code: Behaviour({"unit": 0x03}, _check_water),  # 0.001 m3 = 1 L per count
    FUEL_CELL.code: Behaviour({"rated_w": 700.0}),
    EV_CHARGER.code: Behaviour(
        {"vehicle_wh": 40000.0, "charger_w": 6000.0, "v2h": 1.0},
        producers={
            0xC2: _stored_wh(EV_CHARGER, 0xC2, "vehicle_wh", _ev_soc),
            0xC7: _ev_connection,
            0xE2: _stored_wh(EV_CHARGER, 0xE2, "vehicle_wh", _ev_soc),
            0xC0: _stored_wh(EV_CHARGER, 0xC0, "vehicle_wh", _ev_full),
            0xCE: _stored_wh(EV_CHARGER, 0xCE, "vehicle_wh", _ev_full),
            0xCF: _stored_wh(EV_CHARGER, 0xCF, "vehicle_wh", _ev_room),
            0xD0: _stored_wh(EV_CHARGER, 0xD0, "vehicle_wh", _ev_full),
            0xC6: _discharge_w(EV_CHARGER, 0xC6),
            0xC9: _discharge_w(EV_CHARGER, 0xC9),
        },
    ),
}
