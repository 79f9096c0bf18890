"""SunSpec register types, point codecs and what a model entry says.

The emulator writes registers from a model's table and the collector decodes with the same table, so
both sides agree on offsets by construction; a test cross-checks every offset against pysunspec2's
published model definitions, so the tables cannot silently drift from the standard.

Layout rules (SunSpec): the map starts with the marker "SunS" at ``BASE_ADDRESS``; each model is
``ID, L`` followed by ``L`` registers; the chain ends with ``END_MODEL_ID`` and length 0.  Offsets
below count from the model's ID register (ID at 0, L at 1), as the specification's tables do.
Values are big-endian, 32-bit values high word first, strings NUL-padded ASCII.  A point that a
device does not provide holds its type's "not implemented" sentinel, which readers map to None.

A model entry (``Model``) is the table plus what it means to the project: the ``category`` its points
describe, the fields the collector ``emits`` from which points, the scale factors an emulated device
uses, and, where a field needs several points (an inverter's state from its operating state and event
bits), a ``status`` function.  Models are registered in ``MODELS`` by their modules; import it from
``protocols.sunspec.models``, which loads every one.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from protocols.errors import ProtocolError
from protocols.registry import Registry

BASE_ADDRESS = 40000
SUNS_MARKER: tuple[int, int] = (0x5375, 0x6E53)  # "SunS"
END_MODEL_ID = 0xFFFF
MAX_READ_REGISTERS = 125  # a single FC3 read may not ask for more
VENDOR_MODEL_IDS = range(64000, 65535)  # what SunSpec leaves to vendors

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

RawValue = int | float | str | None
FieldValue = float | int | bool | str
PointValues = Mapping[str, RawValue]
# Fields a model gives from several points at once: decoded points -> the fields, and the names of
# fields it could not tell (missing).
Status = Callable[[PointValues], tuple[dict[str, FieldValue], list[str]]]


class SunSpecValueError(ProtocolError):
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


@dataclass(frozen=True, slots=True)
class Emit:
    """A field the collector emits from one point, scale factor applied.

    ``counter``: an accumulator, whose wrap (``2**bits x 10**SF``) travels with the reading.  ``signed``:
    a power whose sign the device configuration may flip (``power_sign``, for vendors whose meter says
    + = export).  ``optional``: a point devices often leave unimplemented; its absence keeps the reading
    "ok".  ``unit``: the field's unit, checked against the vocabulary by a test.
    """

    field: str
    point: str
    unit: str
    counter: bool = False
    signed: bool = False
    optional: bool = False


@dataclass(frozen=True, slots=True)
class Rating:
    """A nameplate point (an inverter's ``WRtg``, a battery's ``WChaRteMax``) that bounds the magnitude
    of a field the device emits: the collector refuses a value beyond what the device is built for."""

    field: str
    point: str


@dataclass(frozen=True)
class Model:
    """A SunSpec model: its id, declared length ``L`` and points (ID and L included, at 0 and 1), and
    what the project reads from it (empty for a model only listed, like the common model 1).
    ``float_of``: the integer model (with scale factors) this float32 model mirrors (112 for 102), which
    an emulated device in float mode serves instead."""

    id: int
    name: str
    length: int
    points: tuple[Point, ...]
    category: str | None = None
    emits: tuple[Emit, ...] = ()
    scale_factors: Mapping[str, int] = field(default_factory=dict, compare=False)
    status: Status | None = field(default=None, compare=False)
    status_points: tuple[str, ...] = ()
    fallback: bool = False  # its fields only fill what the device's other models leave out
    ratings: tuple[Rating, ...] = ()
    float_of: int | None = None
    _by_name: dict[str, Point] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_name = {p.name: p for p in self.points}
        if len(by_name) != len(self.points):
            raise SunSpecValueError(f"model {self.id}: duplicate point names")
        end = self.points[-1].offset + self.points[-1].size
        if end != self.length + 2:
            raise SunSpecValueError(
                f"model {self.id}: points cover {end - 2} registers, L says {self.length}"
            )
        object.__setattr__(self, "_by_name", by_name)
        points = (e.point for e in self.emits)
        for name in (*points, *self.status_points, *self.scale_factors, *(r.point for r in self.ratings)):
            if name not in by_name:
                raise SunSpecValueError(f"model {self.id} has no point {name!r}")
        for name in self.scale_factors:
            if by_name[name].type != "sunssf":
                raise SunSpecValueError(f"model {self.id}: {name} is no scale factor")
        if (self.emits or self.status) and self.category is None:
            raise SunSpecValueError(f"model {self.id}: emits fields but names no category")

    def point(self, name: str) -> Point:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"model {self.id} has no point {name!r}") from None

    @property
    def size(self) -> int:
        """Registers the whole model occupies, header included."""
        return self.length + 2

    @property
    def read_points(self) -> tuple[str, ...]:
        """The points the collector decodes (a 203 block has 105 registers; a poll needs a dozen)."""
        names: list[str] = []
        for name in (*(e.point for e in self.emits), *self.status_points, *(r.point for r in self.ratings)):
            sf = self._by_name[name].sf
            names += [name] if sf is None else [name, sf]
        return tuple(dict.fromkeys(names))


PointSpec = tuple[str, str, int, str | None, str | None]


def build_model(
    model_id: int,
    name: str,
    length: int,
    specs: Iterable[PointSpec],
    *,
    category: str | None = None,
    emits: tuple[Emit, ...] = (),
    scale_factors: Mapping[str, int] | None = None,
    status: Status | None = None,
    status_points: tuple[str, ...] = (),
    fallback: bool = False,
    ratings: tuple[Rating, ...] = (),
    float_of: int | None = None,
) -> Model:
    """Lay points out back to back, so an offset can never be mistyped: only sizes are written."""
    points: list[Point] = [Point("ID", 0, 1, "uint16"), Point("L", 1, 1, "uint16")]
    offset = 2
    for pname, ptype, size, sf, units in specs:
        points.append(Point(pname, offset, size, ptype, sf, units))
        offset += size
    return Model(
        model_id,
        name,
        length,
        tuple(points),
        category,
        emits,
        dict(scale_factors or {}),
        status,
        status_points,
        fallback,
        ratings,
        float_of,
    )


def row(
    name: str, ptype: str, sf: str | None = None, units: str | None = None, size: int | None = None
) -> PointSpec:
    """One row of a model table: name, type, scale factor, units (size only for strings)."""
    return (name, ptype, size if size is not None else TYPE_SIZES[ptype], sf, units)


def scaled_rows(*points: tuple[str, str, str]) -> list[PointSpec]:
    """Rows of points that each have their own scale factor right behind them (``W``, ``W_SF``),
    from (name, type, units)."""
    return [
        spec
        for name, ptype, units in points
        for spec in (row(name, ptype, f"{name}_SF", units), row(f"{name}_SF", "sunssf"))
    ]


# --- register encoding -------------------------------------------------------------------------

NOT_IMPLEMENTED: dict[str, int] = {
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

SIGNED_TYPES = frozenset({"int16", "sunssf", "int32"})  # two's complement; their sentinel is the minimum
# Accumulators the standard marks unimplemented with 0, but many devices mark with all ones (the
# uint32 convention).  Read as a number, all ones is a counter of 4.29 GWh whose next real value looks
# like a wrap; as a real count it lasts one reading before the wrap.  So both read as "not there", and
# an encoder never writes all ones.
ACCUMULATOR_TYPES = frozenset({"acc16", "acc32", "acc64"})


def not_implemented(point: Point) -> list[int]:
    """The registers a point holds when the device does not provide it."""
    if point.type == "string":
        return [0] * point.size
    return _split(NOT_IMPLEMENTED[point.type], point.size)


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
    if point.type in SIGNED_TYPES:
        low, high = -(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1  # the minimum is the sentinel
    elif point.type in ACCUMULATOR_TYPES:
        low, high = 1, (1 << bits) - 2  # 0 and all ones read as "not implemented"
    elif point.type == "pad":
        low, high = 0, 0
    else:
        low, high = 0, (1 << bits) - 2  # all ones is the sentinel
    if not low <= number <= high:
        raise SunSpecValueError(f"{point.name}: {value!r} outside {point.type} range [{low}, {high}]")
    return _split(number & ((1 << bits) - 1), point.size)


def decode(point: Point, registers: Sequence[int]) -> int | float | str | None:
    """The raw value of a point from its registers; None when it holds the not-implemented sentinel (or,
    for an accumulator, all ones: ``ACCUMULATOR_TYPES``)."""
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
    if value == NOT_IMPLEMENTED[point.type]:
        return None
    if point.type in ACCUMULATOR_TYPES and value == (1 << (16 * point.size)) - 1:
        return None
    if point.type == "float32":
        result: float = struct.unpack(">f", struct.pack(">I", value))[0]
        return None if result != result else result  # NaN
    if point.type in SIGNED_TYPES and value >= 1 << (16 * point.size - 1):
        value -= 1 << (16 * point.size)
    return value


def scaled(raw: int | float | None, sf: int | None) -> float | None:
    """Apply a scale factor; None (unimplemented value or SF) stays None."""
    if raw is None or sf is None:
        return None
    return float(raw) * 10.0**sf


MODELS: Registry[int, Model] = Registry("SunSpec model", lambda m: m.id)


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
