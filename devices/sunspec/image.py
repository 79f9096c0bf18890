"""The register image of one emulated SunSpec device, and how it follows the household.

A device is a list of registered models (``protocols.sunspec.models``).  Its image is built from their
tables alone: the "SunS" marker, each model's header, every point at its "not implemented" value, the
scale factors the model entry gives.  Every point a model entry ``emits`` a field from is then kept
equal to the household's value of that field (``devices.measurements``), so a newly registered model
is served with no code here.  What goes beyond one field per point (nameplate figures, phase currents,
an inverter's operating state) is the device's ``extras``, keyed by its device id.

The installation is a Japanese home's: single-phase three-wire, 100 V from each line to neutral and
200 V between the lines (lines A and B; SunSpec's split-phase models 102/202, or 112/212 in float
mode).  A load or a PV inverter across the lines draws the same current on both, P / 200 V, which is
what the ECHONET Lite smart meter reports for its R and T lines (0xE8): both protocols give one home
the same currents.

Sign conventions (stated here because vendors differ, see protocols.md §3.3):
- inverter ``W``: AC output of the PV inverter, >= 0.
- meter ``W`` (and ``WphA``/``WphB``): grid power at the connection point, **+ = import**, - = export,
  and the line currents carry the same sign.  ``TotWhImp`` / ``TotWhExp`` are the household's grid
  import / export counters.
- model 802 ``W`` and ``A``: battery power and current, **+ = charging**, - = discharging (the same
  sign as ``HomeState.battery_w``; the emulator has no conversion losses, so DC power equals AC power).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from devices.measurements import Measured, source
from devices.state import HomeState
from protocols.sunspec.models import MODELS, model_addresses
from protocols.sunspec.models.battery import BATTERY_EVT1_OTHER_ALARM, BATTERY_STATE, BATTERY_TYPE_LITHIUM_ION
from protocols.sunspec.models.inverter import INVERTER_EVT1_GROUND_FAULT, INVERTER_ST
from protocols.sunspec.models.nameplate import DER_TYPE_PV
from protocols.sunspec.models.storage import CHA_ST
from protocols.sunspec.points import BASE_ADDRESS, END_MODEL_ID, SUNS_MARKER, Point, encode, not_implemented


@dataclass(frozen=True, slots=True)
class ModbusDeviceSpec:
    """One Modbus device of a home, as the manifest lists it."""

    device: str
    unit_id: int
    models: tuple[int, ...]
    category: str


@dataclass(frozen=True, slots=True)
class Ratings:
    """Nameplate figures of the home's equipment that the static points advertise."""

    pv_kw: float = 4.5
    battery_kwh: float = 9.8
    battery_kw: float = 3.0
    soc_min_pct: float = 10.0
    soc_max_pct: float = 95.0
    grid_hz: float = 50.0

    @classmethod
    def from_equipment(cls, equipment: object | None) -> Ratings:
        """Read the physics' ``Equipment`` record; anything it lacks keeps its default."""
        if equipment is None:
            return cls()
        defaults = cls()

        def number(attr: str, fallback: float, factor: float = 1.0) -> float:
            value = getattr(equipment, attr, None)
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                return float(value) * factor
            return fallback

        return cls(
            pv_kw=number("pv_kw", defaults.pv_kw),
            battery_kwh=number("battery_kwh", defaults.battery_kwh),
            battery_kw=number("battery_max_w", defaults.battery_kw, 0.001),
            soc_min_pct=number("soc_min_pct", defaults.soc_min_pct),
            soc_max_pct=number("soc_max_pct", defaults.soc_max_pct),
            grid_hz=defaults.grid_hz,
        )


# Electrical constants of the emulated installation: single-phase three-wire, 100/200 V.
_PHASE_V = 100.0
_LINE_V = 200.0
_LINES = "AB"
_DC_V = 380.0  # PV string voltage
_BATTERY_NOMINAL_V = 51.2
_INVERTER_EFFICIENCY = 0.97


# --- register image ----------------------------------------------------------------------------


# Range each numeric type can carry without colliding with its "not implemented" sentinel.
_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-32767, 32767),
    "sunssf": (-32767, 32767),
    "uint16": (0, 0xFFFE),
    "enum16": (0, 0xFFFE),
    "bitfield16": (0, 0xFFFE),
    "acc32": (1, 0xFFFFFFFE),  # 0 and all ones read as "not implemented" (points.ACCUMULATOR_TYPES)
    "uint32": (0, 0xFFFFFFFE),
    "enum32": (0, 0xFFFFFFFE),
    "bitfield32": (0, 0xFFFFFFFE),
}


@dataclass(slots=True)
class _Slot:
    index: int  # position in the device's register list (address - BASE_ADDRESS)
    point: Point
    scale: float  # 10**-sf: multiply an engineering value by this to get the raw value
    low: int = 0
    high: int = 0
    missing: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.point.type in _RANGES:
            self.low, self.high = _RANGES[self.point.type]
        self.missing = tuple(not_implemented(self.point))


class RegisterMap:
    """The full register image of one device (from ``BASE_ADDRESS``) and where each point lives."""

    def __init__(self, model_ids: Sequence[int]) -> None:
        self.model_ids = tuple(model_ids)
        self.addresses = model_addresses(self.model_ids)
        regs: list[int] = [*SUNS_MARKER]
        for model_id in self.model_ids:
            model = MODELS[model_id]
            regs += [model.id, model.length]
            for point in model.points[2:]:
                regs += not_implemented(point)
        regs += [END_MODEL_ID, 0]
        self.registers = regs
        self._sf: dict[tuple[int, str], int] = {}

    def slot(self, model_id: int, name: str) -> _Slot:
        model = MODELS[model_id]
        point = model.point(name)
        index = self.addresses[model_id] + point.offset - BASE_ADDRESS
        sf = self._sf.get((model_id, point.sf)) if point.sf else 0
        if point.sf and sf is None:
            raise ValueError(f"set {model_id}:{point.sf} before using {name}")
        return _Slot(index, point, 10.0 ** -(sf or 0))

    def set_static(self, model_id: int, name: str, value: int | float | str) -> None:
        """Write a point that never changes (nameplate, scale factors): once, at build time."""
        point = MODELS[model_id].point(name)
        if point.type == "sunssf":
            self._sf[(model_id, name)] = int(value)
        slot = self.slot(model_id, name)
        raw = value if isinstance(value, str) else value * slot.scale
        self.write(self.registers, slot, raw)

    @staticmethod
    def write(registers: list[int], slot: _Slot, raw: float | str) -> None:
        """Store ``raw`` clamped into the type's range: a server must answer, never fail on a value.

        This runs for every live point on every state change of every polled home, so it avoids the
        general ``encode`` (which validates instead of clamping) for the one- and two-register types.
        """
        i = slot.index
        if isinstance(raw, str) or slot.point.type not in _RANGES:  # strings, floats: the general path
            registers[i : i + slot.point.size] = encode(slot.point, raw)
            return
        if raw != raw or raw in (math.inf, -math.inf):
            registers[i : i + slot.point.size] = slot.missing
            return
        v = round(raw)
        v = slot.low if v < slot.low else slot.high if v > slot.high else v
        if slot.point.size == 1:
            registers[i] = v & 0xFFFF
        else:
            registers[i] = (v >> 16) & 0xFFFF
            registers[i + 1] = v & 0xFFFF


Updater = Callable[[list[int], HomeState], None]
# A device's extras: writes its static points once and returns the updater of its other live points.
Extras = Callable[[RegisterMap, Ratings], Updater]


def _number(value: Measured) -> float:
    """A measured value as a register value: no value (or a text) reads as "not implemented"."""
    return math.nan if value is None or isinstance(value, str) else float(value)


def build_device(spec: ModbusDeviceSpec, household_id: str, ratings: Ratings) -> tuple[RegisterMap, Updater]:
    """The image of ``spec``'s models and the function that refreshes it from a household state."""
    regs = RegisterMap(spec.models)
    if 1 in spec.models:  # the common model: who made it, which one it is
        regs.set_static(1, "Mn", "HEMS Emulator")
        regs.set_static(1, "Md", _MODEL_NAMES.get(spec.device, spec.device))
        regs.set_static(1, "Vr", "1.0.0")
        regs.set_static(1, "SN", f"{household_id}-u{spec.unit_id}"[:32])
        regs.set_static(1, "DA", spec.unit_id)
    for model_id in spec.models:
        for name, sf in MODELS[model_id].scale_factors.items():
            regs.set_static(model_id, name, sf)
    live = [
        (regs.slot(model_id, emit.point), measure)
        for model_id in spec.models
        for emit in MODELS[model_id].emits
        if (measure := source(MODELS[model_id].category or spec.category, emit.field)) is not None
    ]
    extras = _EXTRAS.get(spec.device)
    more = extras(regs, ratings) if extras is not None else None
    write = RegisterMap.write

    def update(r: list[int], st: HomeState) -> None:
        for slot, measure in live:
            write(r, slot, _number(measure(st)) * slot.scale)
        if more is not None:
            more(r, st)

    return regs, update


# --- what the emulated inverter, meter and storage show beyond their emitted points ----------------


def _model(regs: RegisterMap, category: str) -> int:
    """The id of the device's model of ``category`` (its 103 or 101, ...)."""
    return next(m for m in regs.model_ids if MODELS[m].category == category and not MODELS[m].fallback)


def _line_split(total: float) -> tuple[int, int]:
    """Two integer shares (lines A and B) summing exactly to round(total), so per-line W adds up."""
    whole = round(total)
    a = round(whole / 2)
    return a, whole - a


def _line_amps(watts: float) -> float:
    """The current on each line of a load (or source) across the two lines: P / 200 V."""
    return watts / _LINE_V


def _nameplate(regs: RegisterMap, ratings: Ratings) -> None:
    """Model 120: a PV inverter of the home's PV size, single-phase three-wire."""
    if 120 not in regs.model_ids:
        return
    rated_w = ratings.pv_kw * 1000.0
    regs.set_static(120, "DERTyp", DER_TYPE_PV)
    regs.set_static(120, "WRtg", rated_w)
    regs.set_static(120, "VARtg", rated_w)
    for q, sign in zip("1234", (1, 1, -1, -1), strict=True):
        regs.set_static(120, f"VArRtgQ{q}", sign * rated_w * 0.44)  # PF 0.9 at rated power
        regs.set_static(120, f"PFRtgQ{q}", sign * 0.9)
    regs.set_static(120, "ARtg", _line_amps(rated_w))


def _inverter(regs: RegisterMap, ratings: Ratings) -> Updater:
    """Split-phase PV inverter across lines A and B: line currents and voltages, DC side, cabinet
    temperature, state; its nameplate (model 120) where the device lists it."""
    m = _model(regs, "pv")
    _nameplate(regs, ratings)
    regs.set_static(m, "PPVphAB", _LINE_V)
    for ph in _LINES:
        regs.set_static(m, f"PhVph{ph}", _PHASE_V)
    regs.set_static(m, "Evt2", 0)
    s = {n: regs.slot(m, n) for n in ("A", "AphA", "AphB", "Hz", "DCA", "DCV", "DCW")}
    s |= {n: regs.slot(m, n) for n in ("TmpCab", "St", "Evt1")}
    write = RegisterMap.write

    def update(r: list[int], st: HomeState) -> None:
        watts = max(0.0, st.pv_w)
        line_a = _line_amps(watts)
        for ph in _LINES:
            write(r, s[f"Aph{ph}"], line_a * s[f"Aph{ph}"].scale)
        write(r, s["A"], 2 * line_a * s["A"].scale)
        write(r, s["Hz"], ratings.grid_hz * s["Hz"].scale)
        dc_w = watts / _INVERTER_EFFICIENCY
        write(r, s["DCW"], dc_w * s["DCW"].scale)
        write(r, s["DCV"], (_DC_V if watts > 0 else 0.0) * s["DCV"].scale)
        write(r, s["DCA"], (dc_w / _DC_V) * s["DCA"].scale)
        write(r, s["TmpCab"], (25.0 + 15.0 * watts / max(ratings.pv_kw * 1000, 1.0)) * s["TmpCab"].scale)
        if st.inverter_fault:
            state, events = INVERTER_ST["FAULT"], INVERTER_EVT1_GROUND_FAULT
        elif watts <= 0:
            state, events = INVERTER_ST["SLEEPING"], 0
        else:
            state, events = INVERTER_ST["MPPT"], 0
        write(r, s["St"], state)
        write(r, s["Evt1"], events)

    return update


def _meter(regs: RegisterMap, ratings: Ratings) -> Updater:
    """Grid connection-point meter of a single-phase three-wire service: voltages, frequency, and the
    power and current of lines A and B."""
    m = _model(regs, "electricity")
    model = MODELS[m]
    regs.set_static(m, "PhV", _PHASE_V)
    regs.set_static(m, "PPV", _LINE_V)
    for ph in _LINES:
        regs.set_static(m, f"PhVph{ph}", _PHASE_V)
    line_to_line = "PhVphAB" if "PhVphAB" in {p.name for p in model.points} else "PPVphAB"
    regs.set_static(m, line_to_line, _LINE_V)
    regs.set_static(m, "Hz", ratings.grid_hz)
    regs.set_static(m, "Evt", 0)
    s = {n: regs.slot(m, n) for n in ("A", "AphA", "AphB", "WphA", "WphB")}
    write = RegisterMap.write

    def update(r: list[int], st: HomeState) -> None:
        for ph, share in zip(_LINES, _line_split(st.grid_w), strict=True):
            write(r, s[f"Wph{ph}"], share * s[f"Wph{ph}"].scale)
            write(r, s[f"Aph{ph}"], _line_amps(st.grid_w) * s[f"Aph{ph}"].scale)
        write(r, s["A"], 2 * _line_amps(st.grid_w) * s["A"].scale)

    return update


def _storage(regs: RegisterMap, ratings: Ratings) -> Updater:
    """Battery (124 + 802): nameplate, limits, charge state, voltage, current, cycles, alarms."""
    rated_w = ratings.battery_kw * 1000.0
    regs.set_static(124, "WChaMax", rated_w)
    regs.set_static(124, "WChaGra", 100)
    regs.set_static(124, "WDisChaGra", 100)
    regs.set_static(124, "StorCtl_Mod", 0)
    regs.set_static(802, "AHRtg", ratings.battery_kwh * 1000.0 / _BATTERY_NOMINAL_V)
    regs.set_static(802, "WHRtg", ratings.battery_kwh * 1000.0)
    regs.set_static(802, "WChaRteMax", rated_w)
    regs.set_static(802, "WDisChaRteMax", rated_w)
    regs.set_static(802, "SoCMax", ratings.soc_max_pct)
    regs.set_static(802, "SoCMin", ratings.soc_min_pct)
    regs.set_static(802, "SoH", 100)
    regs.set_static(802, "LocRemCtl", 1)  # local: the emulator takes no remote control
    regs.set_static(802, "AlmRst", 0)
    regs.set_static(802, "Typ", BATTERY_TYPE_LITHIUM_ION)
    regs.set_static(802, "Evt2", 0)
    regs.set_static(802, "EvtVnd1", 0)
    regs.set_static(802, "EvtVnd2", 0)
    regs.set_static(802, "SetOp", 1)  # connect
    regs.set_static(802, "SetInvState", 3)  # inverter started
    s124 = {n: regs.slot(124, n) for n in ("ChaSt", "InBatV")}
    s802 = {n: regs.slot(802, n) for n in ("ChaSt", "State", "Evt1", "V", "A", "NCyc")}
    write = RegisterMap.write
    capacity_wh = max(ratings.battery_kwh * 1000.0, 1.0)

    def update(r: list[int], st: HomeState) -> None:
        soc = st.battery_soc_pct
        volts = _BATTERY_NOMINAL_V * (0.95 + 0.1 * soc / 100.0)
        if st.battery_fault:
            cha_st, state, events = CHA_ST["OFF"], BATTERY_STATE["FAULT"], BATTERY_EVT1_OTHER_ALARM
        else:
            state, events = BATTERY_STATE["CONNECTED"], 0
            if st.battery_w > 0.5:
                cha_st = CHA_ST["CHARGING"]
            elif st.battery_w < -0.5:
                cha_st = CHA_ST["DISCHARGING"]
            elif soc >= ratings.soc_max_pct - 0.5:
                cha_st = CHA_ST["FULL"]
            elif soc <= ratings.soc_min_pct + 0.5:
                cha_st = CHA_ST["EMPTY"]
            else:
                cha_st = CHA_ST["HOLDING"]
        write(r, s124["ChaSt"], cha_st)
        write(r, s124["InBatV"], volts * s124["InBatV"].scale)
        write(r, s802["ChaSt"], cha_st)
        write(r, s802["State"], state)
        write(r, s802["Evt1"], events)
        write(r, s802["V"], volts * s802["V"].scale)
        write(r, s802["A"], st.battery_w / volts * s802["A"].scale)
        write(r, s802["NCyc"], st.battery_discharge_wh_total // capacity_wh)

    return update


_EXTRAS: dict[str, Extras] = {"inverter": _inverter, "meter": _meter, "storage": _storage}
_MODEL_NAMES = {"inverter": "PV-1P3W", "meter": "Meter-1P3W", "storage": "Battery-LI"}
