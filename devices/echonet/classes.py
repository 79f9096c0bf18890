"""Data-driven ECHONET Lite classes: which EPCs each emulated object has and how each EDT is made.

Every property is a row (EPC, size, access, producer); a producer turns the household's ``HomeState``
(already seen through the device's faults) plus the object's own settings into EDT bytes, or None when
the real device could not answer (a Get_SNA with PDC = 0).  Units follow the protocol reference
(§2): energy counters in 0.001 kWh (= Wh) wrapping at their EDT range, the smart meter in
``D3 x unit(E1)`` steps wrapping at ``10**D7``.  Keeping the tables as data means the property maps
(0x9D/0x9E/0x9F) are derived, never hand-maintained, and cannot disagree with what is served.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from devices.echonet.frame import EOJ, encode_property_map, pack_int, pack_uint
from devices.state import HomeState

# Meters and device clocks in Japan show local time; Asia/Tokyo has no DST, so a fixed offset is exact.
JST = timezone(timedelta(hours=9), "JST")
MAKER_CODE = b"\xff\xff\xff"  # "experimental": honest for an emulator
DEVICE_VERSION = b"\x00\x00R\x01"  # appendix release R, revision 1
NODE_VERSION = b"\x01\x0d\x01\x00"  # ECHONET Lite 1.13, message format type 1
WRAP_1E9 = 1_000_000_000  # 0..999,999,999 counters

# Smart meter unit (0xE1) code -> kWh per count.
METER_UNIT_KWH: dict[int, float] = {
    0x00: 1.0,
    0x01: 0.1,
    0x02: 0.01,
    0x03: 0.001,
    0x04: 0.0001,
    0x0A: 10.0,
    0x0B: 100.0,
    0x0C: 1000.0,
    0x0D: 10000.0,
}
# Water meter unit (0xE1) code -> m3 per count.
WATER_UNIT_M3: dict[int, float] = {code: 10.0**-code for code in range(7)}


@dataclass
class DeviceContext:
    """Per-object data the producers read: settings (fixed per device), stored Set values, memo."""

    settings: dict[str, float]
    values: dict[int, bytes]
    ident: bytes  # 17-byte identification number (0x83)
    memo: dict[str, Any] = field(default_factory=dict)


Producer = Callable[[HomeState, DeviceContext], "bytes | None"]
Acceptor = Callable[[bytes], bool]


@dataclass(frozen=True, slots=True)
class PropertyDef:
    """One EPC of a class.  ``size`` None = variable length; ``announce`` = in the INF map (0x9D)."""

    epc: int
    name: str
    size: int | None
    produce: Producer
    get: bool = True
    settable: bool = False
    announce: bool = False
    accept: Acceptor | None = None
    default: bytes | None = None  # initial stored value of a settable property


@dataclass(frozen=True)
class DeviceClass:
    class_id: int  # 0x0288
    name: str
    props: Mapping[int, PropertyDef]
    defaults: Mapping[str, float]  # settings and their defaults
    get_epcs: frozenset[int]
    set_epcs: frozenset[int]
    inf_epcs: frozenset[int]
    # Announced EPCs whose value follows the household; the rest only change through a Set, which is
    # announced at once, so the change-polling loop never needs to look at them.
    polled_inf_epcs: frozenset[int] = frozenset()
    check: Callable[[Mapping[str, float]], None] | None = None  # raises ValueError for bad settings

    def validate(self, settings: Mapping[str, float]) -> None:
        unknown = set(settings) - set(self.defaults)
        if unknown:
            raise ValueError(
                f"{self.name}: unknown settings {sorted(unknown)}; known: {sorted(self.defaults)}"
            )
        if self.check is not None:
            self.check({**self.defaults, **settings})

    def initial_values(self) -> dict[int, bytes]:
        return {p.epc: p.default for p in self.props.values() if p.default is not None}


# --- producer building blocks -----------------------------------------------------------------


_FIXED: set[Producer] = set()  # producers that never look at the state


def const(edt: bytes) -> Producer:
    produce: Producer = lambda st, ctx: edt  # noqa: E731
    _FIXED.add(produce)
    return produce


def stored(epc: int) -> Producer:
    produce: Producer = lambda st, ctx: ctx.values.get(epc)  # noqa: E731
    _FIXED.add(produce)
    return produce


def _u(size: int, value: float, top: int) -> bytes:
    """Round and clamp into the documented range (never emit a sentinel by accident)."""
    v = round(value)
    return pack_uint(0 if v < 0 else top if v > top else v, size)


def _s(size: int, value: float, limit: int) -> bytes:
    v = round(value)
    return pack_int(-limit if v < -limit else limit if v > limit else v, size)


def counter_wh(name: str, wrap: int = WRAP_1E9) -> Producer:
    """A 0.001 kWh (= 1 Wh) uint32 counter that restarts from 0 past its EDT range, as devices do."""
    return lambda st, ctx: pack_uint(int(getattr(st, name)) % wrap, 4)


def byte_in(*allowed: int) -> Acceptor:
    codes = frozenset(allowed)
    return lambda edt: len(edt) == 1 and edt[0] in codes


def byte_range(low: int, high: int) -> Acceptor:
    return lambda edt: len(edt) == 1 and low <= edt[0] <= high


def identification(node_id: str, eoj: EOJ) -> bytes:
    """0xFE, the maker code, then 13 bytes that are stable for this node id and object."""
    digest = hashlib.sha256(f"{node_id}/{eoj.hex()}".encode()).digest()
    return b"\xfe" + MAKER_CODE + digest[:13]


def _local(st: HomeState) -> datetime:
    return st.ts.astimezone(JST)


def _time(st: HomeState, ctx: DeviceContext) -> bytes:
    t = _local(st)
    return bytes((t.hour, t.minute))


def _date(st: HomeState, ctx: DeviceContext) -> bytes:
    t = _local(st)
    return pack_uint(t.year, 2) + bytes((t.month, t.day))


def _fault(flag: str | None) -> Producer:
    if flag is None:
        return const(b"\x42")
    return lambda st, ctx: b"\x41" if getattr(st, flag) else b"\x42"


def _prop(
    epc: int,
    name: str,
    size: int | None,
    produce: Producer,
    *,
    settable: bool = False,
    announce: bool = False,
    accept: Acceptor | None = None,
    default: bytes | None = None,
) -> PropertyDef:
    return PropertyDef(epc, name, size, produce, True, settable, announce, accept, default)


def _setting(
    epc: int, name: str, size: int, accept: Acceptor, default: bytes, announce: bool = False
) -> PropertyDef:
    return _prop(
        epc, name, size, stored(epc), settable=True, announce=announce, accept=accept, default=default
    )


def build_class(
    class_id: int,
    name: str,
    props: list[PropertyDef],
    defaults: Mapping[str, float] | None = None,
    *,
    fault_flag: str | None = None,
    node_profile: bool = False,
    check: Callable[[Mapping[str, float]], None] | None = None,
) -> DeviceClass:
    """Add the super-class rows and the three property maps derived from the rows themselves."""
    table: dict[int, PropertyDef] = {}
    if node_profile:
        common = [
            _prop(0x80, "operating status", 1, const(b"\x30"), announce=True),
            _prop(0x82, "version", 4, const(NODE_VERSION)),
            _prop(0x83, "identification number", 17, lambda st, ctx: ctx.ident),
            _prop(0x8A, "manufacturer code", 3, const(MAKER_CODE)),
        ]
    else:
        common = [
            _prop(0x80, "operation status", 1, const(b"\x30"), announce=True),
            _setting(0x81, "installation location", 1, lambda edt: len(edt) == 1, b"\x00", announce=True),
            _prop(0x82, "standard version", 4, const(DEVICE_VERSION)),
            _prop(0x83, "identification number", 17, lambda st, ctx: ctx.ident),
            _prop(0x88, "fault status", 1, _fault(fault_flag), announce=True),
            _prop(0x8A, "manufacturer code", 3, const(MAKER_CODE)),
            _prop(0x97, "current time", 2, _time),
            _prop(0x98, "current date", 4, _date),
        ]
    for p in common + props:
        table[p.epc] = p
    inf = frozenset(p.epc for p in table.values() if p.announce)
    polled = frozenset(p.epc for p in table.values() if p.announce and p.produce not in _FIXED)
    settable = frozenset(p.epc for p in table.values() if p.settable)
    gettable = frozenset(p.epc for p in table.values() if p.get) | {0x9D, 0x9E, 0x9F}
    # 0xD5 of the node profile is announce-only in the spec, but answering a Get for it is allowed.
    table[0x9D] = _prop(0x9D, "INF property map", None, const(encode_property_map(inf)))
    table[0x9E] = _prop(0x9E, "Set property map", None, const(encode_property_map(settable)))
    table[0x9F] = _prop(0x9F, "Get property map", None, const(encode_property_map(gettable)))
    return DeviceClass(class_id, name, table, dict(defaults or {}), gettable, settable, inf, polled, check)


# --- low-voltage smart electric energy meter 0x0288 ---------------------------------------------


def meter_count(wh: float, ctx: DeviceContext) -> int:
    """Energy in Wh -> register value: wh / (D3 x unit(E1)), modulo 10**D7 (the meter's rollover)."""
    s = ctx.settings
    step_wh = s["coefficient"] * METER_UNIT_KWH[int(s["unit"])] * 1000.0
    return int(wh / step_wh + 1e-9) % (10 ** int(s["digits"]))


def _import_wh(st: HomeState, ctx: DeviceContext) -> float:
    return st.grid_import_wh_total + ctx.settings["import_offset_wh"]


def _export_wh(st: HomeState, ctx: DeviceContext) -> float:
    return st.grid_export_wh_total + ctx.settings["export_offset_wh"]


def _half_hour(t: datetime) -> datetime:
    return t.replace(minute=30 if t.minute >= 30 else 0, second=0, microsecond=0)


def _fixed_time(kind: str, energy: Callable[[HomeState, DeviceContext], float]) -> Producer:
    """0xEA/0xEB: the counter at the latest :00/:30 (local time).

    The device only sees states when asked, so the value at the boundary is interpolated between the
    last state seen before it and the first one after it (exact when states are dense, close enough
    otherwise); a clock jump backwards restarts the record.
    """
    key = "fixed_" + kind

    def produce(st: HomeState, ctx: DeviceContext) -> bytes:
        now = _local(st)
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
        b = rec[2]
        return (
            pack_uint(b.year, 2)
            + bytes((b.month, b.day, b.hour, b.minute, 0))
            + pack_uint(meter_count(rec[3], ctx), 4)
        )

    return produce


def _e8_currents(st: HomeState, ctx: DeviceContext) -> bytes:
    # single-phase three-wire 100/200 V: the power splits over the R and T lines at 200 V, 0.1 A units
    raw = _s(2, st.grid_w / 20.0, 32765)
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


SMART_METER = build_class(
    0x0288,
    "low-voltage smart electric energy meter",
    [
        _prop(0xD3, "coefficient", 4, lambda st, ctx: pack_uint(int(ctx.settings["coefficient"]), 4)),
        _prop(0xD7, "effective digits", 1, lambda st, ctx: bytes((int(ctx.settings["digits"]),))),
        _prop(
            0xE0,
            "cumulative energy, normal",
            4,
            lambda st, ctx: pack_uint(meter_count(_import_wh(st, ctx), ctx), 4),
        ),
        _prop(0xE1, "energy unit", 1, lambda st, ctx: bytes((int(ctx.settings["unit"]),))),
        _prop(
            0xE3,
            "cumulative energy, reverse",
            4,
            lambda st, ctx: pack_uint(meter_count(_export_wh(st, ctx), ctx), 4),
        ),
        _setting(0xE5, "day for history 1", 1, byte_range(0, 99), b"\x00"),
        _prop(0xE7, "instantaneous power", 4, lambda st, ctx: _s(4, st.grid_w, 2_147_483_645)),
        _prop(0xE8, "instantaneous currents", 4, _e8_currents),
        _prop(0xEA, "fixed-time cumulative, normal", 11, _fixed_time("import", _import_wh)),
        _prop(0xEB, "fixed-time cumulative, reverse", 11, _fixed_time("export", _export_wh)),
    ],
    {"coefficient": 1, "unit": 0x01, "digits": 6, "import_offset_wh": 0.0, "export_offset_wh": 0.0},
    check=_check_meter,
)


# --- household solar power generation 0x0279 ------------------------------------------------------


def _solar_restraint(st: HomeState, ctx: DeviceContext) -> bytes:
    limit = ctx.values.get(0xA0, b"\x64")
    return b"\x41" if limit[0] < 100 else b"\x44"


def _rated_w(key: str, size: int, unset: bytes) -> Producer:
    def produce(st: HomeState, ctx: DeviceContext) -> bytes:
        w = ctx.settings[key]
        return unset if w <= 0 else _u(size, w, (1 << (8 * size)) - 3)

    return produce


SOLAR = build_class(
    0x0279,
    "household solar power generation",
    [
        _prop(
            0xA0,
            "output power control 1",
            1,
            stored(0xA0),
            settable=True,
            accept=byte_range(0, 100),
            default=b"\x64",
        ),
        _prop(0xD0, "system-interconnected type", 1, const(b"\x00")),
        _prop(0xD1, "output restraint status", 1, _solar_restraint),
        _prop(0xE0, "instantaneous generation", 2, lambda st, ctx: _u(2, st.pv_w, 65533)),
        _prop(0xE1, "cumulative generation", 4, counter_wh("pv_wh_total")),
        _prop(0xE3, "cumulative energy sold", 4, counter_wh("grid_export_wh_total")),
        _prop(0xE8, "rated output, grid-tied", 2, _rated_w("rated_w", 2, b"\xff\xff")),
    ],
    {"rated_w": 4500.0},
    fault_flag="inverter_fault",
)


# --- storage battery 0x027D -----------------------------------------------------------------------

BATTERY_MODES = (0x40, 0x41, 0x42, 0x43, 0x44, 0x45, 0x46, 0x48, 0x49)


def _battery_working(st: HomeState, ctx: DeviceContext) -> bytes:
    if st.battery_w > 1.0:
        return b"\x42"
    if st.battery_w < -1.0:
        return b"\x43"
    return b"\x44"


BATTERY = build_class(
    0x027D,
    "storage battery",
    [
        _prop(0xA8, "AC cumulative charge", 4, counter_wh("battery_charge_wh_total")),
        _prop(0xA9, "AC cumulative discharge", 4, counter_wh("battery_discharge_wh_total")),
        _prop(0xCF, "working operation status", 1, _battery_working, announce=True),
        _prop(0xD0, "rated energy", 4, _rated_w("capacity_wh", 4, b"\xff\xff\xff\xfe")),
        _prop(
            0xD3, "instantaneous charge/discharge power", 4, lambda st, ctx: _s(4, st.battery_w, 999_999_999)
        ),
        _prop(0xD6, "cumulative discharge", 4, counter_wh("battery_discharge_wh_total")),
        _prop(0xD8, "cumulative charge", 4, counter_wh("battery_charge_wh_total")),
        _setting(0xDA, "operation mode setting", 1, byte_in(*BATTERY_MODES), b"\x46", announce=True),
        _prop(
            0xE2,
            "remaining stored electricity 1",
            4,
            lambda st, ctx: _u(4, ctx.settings["capacity_wh"] * st.battery_soc_pct / 100.0, 999_999_999),
        ),
        _prop(0xE4, "remaining stored electricity 3", 1, lambda st, ctx: _u(1, st.battery_soc_pct, 100)),
        _prop(0xE6, "battery type", 1, const(b"\x04")),
    ],
    {"capacity_wh": 7000.0},
    fault_flag="battery_fault",
)


# --- water flow meter 0x0281 and gas meter 0x0282 -------------------------------------------------


def _water_e0(st: HomeState, ctx: DeviceContext) -> bytes:
    m3_per_count = WATER_UNIT_M3[int(ctx.settings["unit"])]
    return pack_uint(int(st.water_l_total / 1000.0 / m3_per_count + 1e-9) % WRAP_1E9, 4)


def _check_water(s: Mapping[str, float]) -> None:
    if s["unit"] not in WATER_UNIT_M3:
        raise ValueError(f"water meter unit (0xE1) must be 0..6, got {s['unit']}")


WATER_METER = build_class(
    0x0281,
    "water flow meter",
    [
        _prop(0xD0, "water classification", 1, const(b"\x30")),
        _prop(0xE0, "cumulative flow", 4, _water_e0),
        _prop(0xE1, "flow unit", 1, lambda st, ctx: bytes((int(ctx.settings["unit"]),))),
    ],
    {"unit": 0x03},  # 0.001 m3 = 1 L per count
    check=_check_water,
)

GAS_METER = build_class(
    0x0282,
    "gas meter",
    [_prop(0xE0, "cumulative gas", 4, counter_wh("gas_l_total"))],  # 0.001 m3 = 1 L per count
)


# --- fuel cell 0x027C -----------------------------------------------------------------------------

FUEL_CELL = build_class(
    0x027C,
    "fuel cell",
    [
        _prop(0xC2, "rated generation output", 2, _rated_w("rated_w", 2, b"\xff\xfe")),
        _prop(0xC4, "instantaneous generation", 2, lambda st, ctx: _u(2, st.fuelcell_w, 65533)),
        _prop(0xC5, "cumulative generation", 4, counter_wh("fuelcell_wh_total")),
        _prop(
            0xCB,
            "generation status",
            1,
            lambda st, ctx: b"\x41" if st.fuelcell_w > 0.5 else b"\x42",
            announce=True,
        ),
        _prop(0xD0, "system-interconnected type", 1, const(b"\x00")),
    ],
    {"rated_w": 700.0},
)


# --- EV charger/discharger 0x027E -----------------------------------------------------------------

EV_MODES = (0x40, 0x42, 0x43, 0x44, 0x46, 0x47, 0x48, 0x49)


def _when_connected(produce: Producer) -> Producer:
    """The vehicle's capacities cannot be read while it is unplugged: the device answers Get_SNA."""
    return lambda st, ctx: produce(st, ctx) if st.ev_connected else None


def _ev_connection(st: HomeState, ctx: DeviceContext) -> bytes:
    if not st.ev_connected:
        return b"\x30"
    return b"\x43" if ctx.settings["v2h"] else b"\x41"  # chargeable and dischargeable / chargeable


EV_CHARGER = build_class(
    0x027E,
    "EV charger/discharger",
    [
        _prop(
            0xC2,
            "remaining dischargeable capacity 1",
            4,
            _when_connected(
                lambda st, ctx: _u(4, ctx.settings["vehicle_wh"] * st.ev_soc_pct / 100.0, 999_999_999)
            ),
        ),
        _prop(
            0xC4,
            "remaining dischargeable capacity 3",
            1,
            _when_connected(lambda st, ctx: _u(1, st.ev_soc_pct, 100)),
        ),
        _prop(0xC5, "rated charge power", 4, _rated_w("charger_w", 4, b"\xff\xff\xff\xfe")),
        _prop(
            0xC7,
            "vehicle connection status",
            1,
            _ev_connection,
            announce=True,
        ),
        _prop(
            0xD3,
            "instantaneous charge/discharge power",
            4,
            lambda st, ctx: _s(4, st.ev_w if st.ev_connected else 0.0, 999_999_999),
        ),
        _prop(0xD6, "cumulative discharge", 4, counter_wh("ev_discharge_wh_total")),
        _prop(0xD8, "cumulative charge", 4, counter_wh("ev_charge_wh_total")),
        _setting(0xDA, "operation mode setting", 1, byte_in(*EV_MODES), b"\x42", announce=True),
        _prop(
            0xE2,
            "remaining stored electricity 1",
            4,
            _when_connected(
                lambda st, ctx: _u(4, ctx.settings["vehicle_wh"] * st.ev_soc_pct / 100.0, 999_999_999)
            ),
        ),
        _prop(
            0xE4,
            "remaining stored electricity 3",
            1,
            _when_connected(lambda st, ctx: _u(1, st.ev_soc_pct, 100)),
        ),
    ],
    {"vehicle_wh": 40000.0, "charger_w": 6000.0, "v2h": 1.0},
)


# --- node profile 0x0EF0 --------------------------------------------------------------------------

NODE_PROFILE_CLASS = build_class(
    0x0EF0,
    "node profile",
    [
        _prop(0xD3, "number of self-node instances", 3, stored(0xD3)),
        _prop(0xD4, "number of self-node classes", 2, stored(0xD4)),
        PropertyDef(0xD5, "instance list notification", None, stored(0xD5), get=True, announce=True),
        _prop(0xD6, "self-node instance list S", None, stored(0xD6)),
        _prop(0xD7, "self-node class list S", None, stored(0xD7)),
    ],
    node_profile=True,
)


def node_profile_values(objects: list[EOJ]) -> dict[int, bytes]:
    """0xD3-0xD7 of a node holding ``objects`` (the class count includes the node profile itself)."""
    classes: list[int] = []
    for eoj in objects:
        if eoj.cls not in classes:
            classes.append(eoj.cls)
    listed = b"".join(bytes(e) for e in objects[:84])
    class_list = b"".join(pack_uint(c, 2) for c in classes[:8])
    return {
        0xD3: pack_uint(len(objects), 4)[1:],
        0xD4: pack_uint(len(classes) + 1, 2),
        0xD5: bytes((min(len(objects), 84),)) + listed,
        0xD6: bytes((min(len(objects), 84),)) + listed,
        0xD7: bytes((min(len(classes), 8),)) + class_list,
    }


# --- the device ids of the devices contract --------------------------------------------------------


@dataclass(frozen=True)
class DeviceKind:
    device: str
    eoj: EOJ
    category: str
    cls: DeviceClass


DEVICE_KINDS: dict[str, DeviceKind] = {
    k.device: k
    for k in (
        DeviceKind("smart_meter", EOJ(0x02, 0x88, 0x01), "electricity", SMART_METER),
        DeviceKind("solar", EOJ(0x02, 0x79, 0x01), "pv", SOLAR),
        DeviceKind("battery", EOJ(0x02, 0x7D, 0x01), "battery", BATTERY),
        DeviceKind("water_meter", EOJ(0x02, 0x81, 0x01), "water", WATER_METER),
        DeviceKind("gas_meter", EOJ(0x02, 0x82, 0x01), "gas", GAS_METER),
        DeviceKind("fuel_cell", EOJ(0x02, 0x7C, 0x01), "external_generation", FUEL_CELL),
        DeviceKind("ev_charger", EOJ(0x02, 0x7E, 0x01), "ev", EV_CHARGER),
    )
}
CLASSES: dict[int, DeviceClass] = {k.cls.class_id: k.cls for k in DEVICE_KINDS.values()}
