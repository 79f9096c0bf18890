"""SunSpec information models we serve, as plain tables, plus register encoding and decoding.

The emulator writes registers from these tables and the collector decodes with the same tables, so
both sides agree on offsets by construction; a test cross-checks every offset against pysunspec2's
published model definitions, so the tables cannot silently drift from the standard.

Layout rules (SunSpec): the map starts with the marker "SunS" at ``BASE_ADDRESS``; each model is
``ID, L`` followed by ``L`` registers; the chain ends with ``END_MODEL_ID`` and length 0.  Offsets
below count from the model's ID register (ID at 0, L at 1), as the specification's tables do.
Values are big-endian, 32-bit values high word first, strings NUL-padded ASCII.  A point that a
device does not provide holds its type's "not implemented" sentinel, which readers map to None.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

BASE_ADDRESS = 40000
SUNS_MARKER: tuple[int, int] = (0x5375, 0x6E53)  # "SunS"
END_MODEL_ID = 0xFFFF
MAX_READ_REGISTERS = 125  # a single FC3 read may not ask for more

# Registers each fixed-width type occupies.
TYPE_SIZES: dict[str, int] = {
    "uint16": 1,
    "int16": 1,
    "sunssf": 1,
    "enum16": 1,
    "bitfield16": 1,
    "count": 1,
    "pad": 1,
    "acc16": 1,
    "uint32": 2,
    "int32": 2,
    "acc32": 2,
    "enum32": 2,
    "bitfield32": 2,
    "float32": 2,
    "acc64": 4,
}


class SunSpecValueError(ValueError):
    """A value cannot be represented in the point's register type (out of range, wrong kind)."""


@dataclass(frozen=True, slots=True)
class Point:
    """One point of a model: where it sits, how it is encoded, and which scale factor applies."""

    name: str
    offset: int  # registers from the model's ID register
    size: int  # registers
    type: str
    sf: str | None = None  # name of the sunssf point scaling this one (value = raw * 10**sf)
    units: str | None = None


@dataclass(frozen=True)
class Model:
    """A SunSpec model: its id, declared length ``L`` and points (ID and L included, at 0 and 1)."""

    id: int
    name: str
    length: int
    points: tuple[Point, ...]
    _by_name: dict[str, Point] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {p.name: p for p in self.points}
        if len(by_name) != len(self.points):
            raise ValueError(f"model {self.id}: duplicate point names")
        end = self.points[-1].offset + self.points[-1].size
        if end != self.length + 2:
            raise ValueError(f"model {self.id}: points cover {end - 2} registers, L says {self.length}")
        object.__setattr__(self, "_by_name", by_name)

    def point(self, name: str) -> Point:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"model {self.id} has no point {name!r}") from None

    @property
    def size(self) -> int:
        """Registers the whole model occupies, header included."""
        return self.length + 2


def _build(
    model_id: int, name: str, length: int, specs: Iterable[tuple[str, str, int, str | None, str | None]]
) -> Model:
    """Lay points out back to back, so an offset can never be mistyped: only sizes are written."""
    points: list[Point] = [Point("ID", 0, 1, "uint16"), Point("L", 1, 1, "uint16")]
    offset = 2
    for pname, ptype, size, sf, units in specs:
        points.append(Point(pname, offset, size, ptype, sf, units))
        offset += size
    return Model(model_id, name, length, tuple(points))


def _p(
    name: str, ptype: str, sf: str | None = None, units: str | None = None, size: int | None = None
) -> tuple[str, str, int, str | None, str | None]:
    return (name, ptype, size if size is not None else TYPE_SIZES[ptype], sf, units)


def _common() -> Model:
    return _build(
        1,
        "common",
        66,
        [
            _p("Mn", "string", size=16),
            _p("Md", "string", size=16),
            _p("Opt", "string", size=8),
            _p("Vr", "string", size=8),
            _p("SN", "string", size=16),
            _p("DA", "uint16"),
            _p("Pad", "pad"),
        ],
    )


def _inverter(model_id: int, name: str) -> Model:
    """Models 101 (single phase) and 103 (three phase) share one layout; only mandatoriness differs."""
    specs = [
        _p("A", "uint16", "A_SF", "A"),
        *(_p(f"Aph{ph}", "uint16", "A_SF", "A") for ph in "ABC"),
        _p("A_SF", "sunssf"),
        *(_p(f"PPVph{pair}", "uint16", "V_SF", "V") for pair in ("AB", "BC", "CA")),
        *(_p(f"PhVph{ph}", "uint16", "V_SF", "V") for ph in "ABC"),
        _p("V_SF", "sunssf"),
        _p("W", "int16", "W_SF", "W"),
        _p("W_SF", "sunssf"),
        _p("Hz", "uint16", "Hz_SF", "Hz"),
        _p("Hz_SF", "sunssf"),
        _p("VA", "int16", "VA_SF", "VA"),
        _p("VA_SF", "sunssf"),
        _p("VAr", "int16", "VAr_SF", "var"),
        _p("VAr_SF", "sunssf"),
        _p("PF", "int16", "PF_SF", "Pct"),
        _p("PF_SF", "sunssf"),
        _p("WH", "acc32", "WH_SF", "Wh"),
        _p("WH_SF", "sunssf"),
        _p("DCA", "uint16", "DCA_SF", "A"),
        _p("DCA_SF", "sunssf"),
        _p("DCV", "uint16", "DCV_SF", "V"),
        _p("DCV_SF", "sunssf"),
        _p("DCW", "int16", "DCW_SF", "W"),
        _p("DCW_SF", "sunssf"),
        *(_p(f"Tmp{where}", "int16", "Tmp_SF", "C") for where in ("Cab", "Snk", "Trns", "Ot")),
        _p("Tmp_SF", "sunssf"),
        _p("St", "enum16"),
        _p("StVnd", "enum16"),
        _p("Evt1", "bitfield32"),
        _p("Evt2", "bitfield32"),
        *(_p(f"EvtVnd{i}", "bitfield32") for i in range(1, 5)),
    ]
    return _build(model_id, name, 50, specs)


def _meter(model_id: int, name: str) -> Model:
    """Models 201 (single phase) and 203 (wye three phase): same layout, signed 16-bit measurements."""
    phases = ("A", "B", "C")

    def with_phases(
        base: str, sf: str, units: str, per_phase: str, ptype: str = "int16"
    ) -> list[tuple[str, str, int, str | None, str | None]]:
        return [
            _p(base, ptype, sf, units),
            *(_p(f"{base}{per_phase}{ph}", ptype, sf, units) for ph in phases),
        ]

    # 201 names the line-to-line voltages PPVph.., 203 names them PhVph..
    ll = "PPVph" if model_id == 201 else "PhVph"
    specs = [
        *with_phases("A", "A_SF", "A", "ph"),
        _p("A_SF", "sunssf"),
        *with_phases("PhV", "V_SF", "V", "ph"),
        _p("PPV", "int16", "V_SF", "V"),
        *(_p(f"{ll}{pair}", "int16", "V_SF", "V") for pair in ("AB", "BC", "CA")),
        _p("V_SF", "sunssf"),
        _p("Hz", "int16", "Hz_SF", "Hz"),
        _p("Hz_SF", "sunssf"),
        *with_phases("W", "W_SF", "W", "ph"),
        _p("W_SF", "sunssf"),
        *with_phases("VA", "VA_SF", "VA", "ph"),
        _p("VA_SF", "sunssf"),
        *with_phases("VAR", "VAR_SF", "var", "ph"),
        _p("VAR_SF", "sunssf"),
        *with_phases("PF", "PF_SF", "Pct", "ph"),
        _p("PF_SF", "sunssf"),
        *with_phases("TotWhExp", "TotWh_SF", "Wh", "Ph", "acc32"),
        *with_phases("TotWhImp", "TotWh_SF", "Wh", "Ph", "acc32"),
        _p("TotWh_SF", "sunssf"),
        *with_phases("TotVAhExp", "TotVAh_SF", "VAh", "Ph", "acc32"),
        *with_phases("TotVAhImp", "TotVAh_SF", "VAh", "Ph", "acc32"),
        _p("TotVAh_SF", "sunssf"),
        *with_phases("TotVArhImpQ1", "TotVArh_SF", "varh", "Ph", "acc32"),
        *with_phases("TotVArhImpQ2", "TotVArh_SF", "varh", "Ph", "acc32"),
        *with_phases("TotVArhExpQ3", "TotVArh_SF", "varh", "Ph", "acc32"),
        *with_phases("TotVArhExpQ4", "TotVArh_SF", "varh", "Ph", "acc32"),
        _p("TotVArh_SF", "sunssf"),
        _p("Evt", "bitfield32"),
    ]
    return _build(model_id, name, 105, specs)


def _storage() -> Model:
    """Model 124, basic storage controls: ChaState is the state of charge in percent."""
    return _build(
        124,
        "storage",
        24,
        [
            _p("WChaMax", "uint16", "WChaMax_SF", "W"),
            _p("WChaGra", "uint16", "WChaDisChaGra_SF", "% WChaMax/sec"),
            _p("WDisChaGra", "uint16", "WChaDisChaGra_SF", "% WChaMax/sec"),
            _p("StorCtl_Mod", "bitfield16"),
            _p("VAChaMax", "uint16", "VAChaMax_SF", "VA"),
            _p("MinRsvPct", "uint16", "MinRsvPct_SF", "% WChaMax"),
            _p("ChaState", "uint16", "ChaState_SF", "% AhrRtg"),
            _p("StorAval", "uint16", "StorAval_SF", "AH"),
            _p("InBatV", "uint16", "InBatV_SF", "V"),
            _p("ChaSt", "enum16"),
            _p("OutWRte", "int16", "InOutWRte_SF", "% WDisChaMax"),
            _p("InWRte", "int16", "InOutWRte_SF", "% WChaMax"),
            _p("InOutWRte_WinTms", "uint16", units="Secs"),
            _p("InOutWRte_RvrtTms", "uint16", units="Secs"),
            _p("InOutWRte_RmpTms", "uint16", units="Secs"),
            _p("ChaGriSet", "enum16"),
            *(
                _p(sf, "sunssf")
                for sf in (
                    "WChaMax_SF",
                    "WChaDisChaGra_SF",
                    "VAChaMax_SF",
                    "MinRsvPct_SF",
                    "ChaState_SF",
                    "StorAval_SF",
                    "InBatV_SF",
                    "InOutWRte_SF",
                )
            ),
        ],
    )


def _battery() -> Model:
    """Model 802, battery base: SoC, DC power, state and alarms of the battery bank."""
    return _build(
        802,
        "battery",
        62,
        [
            _p("AHRtg", "uint16", "AHRtg_SF", "Ah"),
            _p("WHRtg", "uint16", "WHRtg_SF", "Wh"),
            _p("WChaRteMax", "uint16", "WChaDisChaMax_SF", "W"),
            _p("WDisChaRteMax", "uint16", "WChaDisChaMax_SF", "W"),
            _p("DisChaRte", "uint16", "DisChaRte_SF", "%WHRtg"),
            _p("SoCMax", "uint16", "SoC_SF", "%WHRtg"),
            _p("SoCMin", "uint16", "SoC_SF", "%WHRtg"),
            _p("SocRsvMax", "uint16", "SoC_SF", "%WHRtg"),
            _p("SoCRsvMin", "uint16", "SoC_SF", "%WHRtg"),
            _p("SoC", "uint16", "SoC_SF", "%WHRtg"),
            _p("DoD", "uint16", "DoD_SF", "%"),
            _p("SoH", "uint16", "SoH_SF", "%"),
            _p("NCyc", "uint32"),
            _p("ChaSt", "enum16"),
            _p("LocRemCtl", "enum16"),
            _p("Hb", "uint16"),
            _p("CtrlHb", "uint16"),
            _p("AlmRst", "uint16"),
            _p("Typ", "enum16"),
            _p("State", "enum16"),
            _p("StateVnd", "enum16"),
            _p("WarrDt", "uint32"),
            _p("Evt1", "bitfield32"),
            _p("Evt2", "bitfield32"),
            _p("EvtVnd1", "bitfield32"),
            _p("EvtVnd2", "bitfield32"),
            _p("V", "uint16", "V_SF", "V"),
            _p("VMax", "uint16", "V_SF", "V"),
            _p("VMin", "uint16", "V_SF", "V"),
            _p("CellVMax", "uint16", "CellV_SF", "V"),
            _p("CellVMaxStr", "uint16"),
            _p("CellVMaxMod", "uint16"),
            _p("CellVMin", "uint16", "CellV_SF", "V"),
            _p("CellVMinStr", "uint16"),
            _p("CellVMinMod", "uint16"),
            _p("CellVAvg", "uint16", "CellV_SF", "V"),
            _p("A", "int16", "A_SF", "A"),
            _p("AChaMax", "uint16", "AMax_SF", "A"),
            _p("ADisChaMax", "uint16", "AMax_SF", "A"),
            _p("W", "int16", "W_SF", "W"),
            _p("ReqInvState", "enum16"),
            _p("ReqW", "int16", "W_SF", "W"),
            _p("SetOp", "enum16"),
            _p("SetInvState", "enum16"),
            *(
                _p(sf, "sunssf")
                for sf in (
                    "AHRtg_SF",
                    "WHRtg_SF",
                    "WChaDisChaMax_SF",
                    "DisChaRte_SF",
                    "SoC_SF",
                    "DoD_SF",
                    "SoH_SF",
                    "V_SF",
                    "CellV_SF",
                    "A_SF",
                    "AMax_SF",
                    "W_SF",
                )
            ),
        ],
    )


MODELS: dict[int, Model] = {
    m.id: m
    for m in (
        _common(),
        _inverter(101, "inverter_single_phase"),
        _inverter(103, "inverter_three_phase"),
        _meter(201, "ac_meter_single_phase"),
        _meter(203, "ac_meter_wye"),
        _storage(),
        _battery(),
    )
}

# Enumerations the emulator sets and collectors interpret.
INVERTER_ST = {
    "OFF": 1,
    "SLEEPING": 2,
    "STARTING": 3,
    "MPPT": 4,
    "THROTTLED": 5,
    "SHUTTING_DOWN": 6,
    "FAULT": 7,
    "STANDBY": 8,
}
INVERTER_EVT1_GROUND_FAULT = 1 << 0
INVERTER_EVT1_OVER_TEMP = 1 << 7
INVERTER_EVT1_HW_TEST_FAILURE = 1 << 15
CHA_ST = {"OFF": 1, "EMPTY": 2, "DISCHARGING": 3, "CHARGING": 4, "FULL": 5, "HOLDING": 6, "TESTING": 7}
BATTERY_STATE = {
    "DISCONNECTED": 1,
    "INITIALIZING": 2,
    "CONNECTED": 3,
    "STANDBY": 4,
    "SOC_PROTECTION": 5,
    "SUSPENDING": 6,
    "FAULT": 99,
}
BATTERY_TYPE_LITHIUM_ION = 4
BATTERY_EVT1_OTHER_ALARM = 1 << 25


# --- register encoding -------------------------------------------------------------------------

_NOT_IMPLEMENTED: dict[str, int] = {
    "uint16": 0xFFFF,
    "enum16": 0xFFFF,
    "bitfield16": 0xFFFF,
    "count": 0xFFFF,
    "int16": 0x8000,
    "sunssf": 0x8000,
    "pad": 0,
    "acc16": 0,
    "acc32": 0,
    "acc64": 0,
    "uint32": 0xFFFFFFFF,
    "enum32": 0xFFFFFFFF,
    "bitfield32": 0xFFFFFFFF,
    "int32": 0x80000000,
    "float32": 0x7FC00000,
}

_SIGNED = {"int16", "sunssf", "int32"}


def not_implemented(point: Point) -> list[int]:
    """The registers a point holds when the device does not provide it."""
    if point.type == "string":
        return [0] * point.size
    return _split(_NOT_IMPLEMENTED[point.type], point.size)


def _split(value: int, size: int) -> list[int]:
    return [(value >> (16 * (size - 1 - i))) & 0xFFFF for i in range(size)]


def encode(point: Point, value: int | str | float) -> list[int]:
    """Registers for ``value`` (already in raw units, i.e. divided by 10**sf) in the point's type.

    Refuses values that would collide with the type's sentinel or overflow it, rather than wrapping:
    a silently wrapped counter or power is exactly the kind of error a collector cannot detect.
    """
    if point.type == "string":
        if not isinstance(value, str):
            raise SunSpecValueError(f"{point.name}: string point needs str, got {type(value).__name__}")
        raw = value.encode("ascii")
        if len(raw) > 2 * point.size:
            raise SunSpecValueError(f"{point.name}: {value!r} longer than {2 * point.size} bytes")
        raw = raw.ljust(2 * point.size, b"\0")
        return list(struct.unpack(f">{point.size}H", raw))
    if point.type == "float32":
        (bits,) = struct.unpack(">I", struct.pack(">f", float(value)))
        return _split(bits, 2)
    if isinstance(value, str):
        raise SunSpecValueError(f"{point.name}: numeric point got str {value!r}")
    number = round(value)
    bits = 16 * point.size
    if point.type in _SIGNED:
        low, high = -(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1  # the minimum is the sentinel
    elif point.type.startswith("acc"):
        low, high = 1, (1 << bits) - 1  # 0 reads as "not implemented"
    elif point.type == "pad":
        low, high = 0, 0
    else:
        low, high = 0, (1 << bits) - 2  # all ones is the sentinel
    if not low <= number <= high:
        raise SunSpecValueError(f"{point.name}: {value!r} outside {point.type} range [{low}, {high}]")
    return _split(number & ((1 << bits) - 1), point.size)


def decode(point: Point, registers: Sequence[int]) -> int | float | str | None:
    """The raw value of a point from its registers; None when it holds the not-implemented sentinel."""
    if len(registers) != point.size:
        raise SunSpecValueError(f"{point.name}: needs {point.size} registers, got {len(registers)}")
    if point.type == "string":
        raw = struct.pack(f">{point.size}H", *registers)
        text = raw.split(b"\0", 1)[0].decode("ascii", errors="replace")
        return text or None
    value = 0
    for reg in registers:
        value = (value << 16) | (reg & 0xFFFF)
    if point.type == "pad":
        return None
    if value == _NOT_IMPLEMENTED[point.type]:
        return None
    if point.type == "float32":
        result: float = struct.unpack(">f", struct.pack(">I", value))[0]
        return None if result != result else result  # NaN
    if point.type in _SIGNED and value >= 1 << (16 * point.size - 1):
        value -= 1 << (16 * point.size)
    return value


def scaled(raw: int | float | None, sf: int | None) -> float | None:
    """Apply a scale factor; None (unimplemented value or SF) stays None."""
    if raw is None or sf is None:
        return None
    return float(raw) * 10.0**sf


def chain_length(model_ids: Sequence[int]) -> int:
    """Registers of a whole map: marker, the models, and the end marker."""
    return 2 + sum(MODELS[m].size for m in model_ids) + 2


def model_addresses(model_ids: Sequence[int], base: int = BASE_ADDRESS) -> dict[int, int]:
    """Protocol address of each model's ID register in a map holding ``model_ids`` in order."""
    addresses: dict[int, int] = {}
    address = base + 2
    for model_id in model_ids:
        addresses[model_id] = address
        address += MODELS[model_id].size
    return addresses


def decode_model(model: Model, registers: Sequence[int]) -> dict[str, int | float | str | None]:
    """Every point of one model read in full (``registers`` starts at its ID register), scale factors
    applied: what a collector wants from one block read.  Unimplemented points (or SFs) give None."""
    if len(registers) < model.size:
        raise SunSpecValueError(f"model {model.id} needs {model.size} registers, got {len(registers)}")
    if registers[0] != model.id or registers[1] != model.length:
        raise SunSpecValueError(
            f"block starts with model {registers[0]} L={registers[1]}, expected {model.id} L={model.length}"
        )
    raw = {p.name: decode(p, registers[p.offset : p.offset + p.size]) for p in model.points}
    out: dict[str, int | float | str | None] = {}
    for p in model.points:
        value = raw[p.name]
        if p.sf is not None and not isinstance(value, str):
            sf = raw.get(p.sf)
            value = scaled(value, sf) if isinstance(sf, int) else None
        out[p.name] = value
    return out
