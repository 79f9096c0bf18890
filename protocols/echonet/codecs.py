"""How one ECHONET Lite property's EDT carries a value, in both directions, by one object.

The collector decodes (EDT -> a value in the project's unit, or None for "no value": the protocol's
no-data codes and anything outside the property's documented range, never a plausible-looking zero).
The emulator encodes (value -> EDT, rounding and clamping or wrapping into the documented range, so it
never sends a no-data code by accident).  One object per property does both, so the two ends cannot
disagree on a unit, a range or a wrap.  Units follow the protocol reference (protocols.md §2).

Some properties only mean something together with others of the same object: the smart meter's energy
registers count in steps of coefficient (0xD3) x unit (0xE1) and wrap at 10**digits (0xD7).  Such a
codec reads ``params`` by name; the collector passes what it decoded from those properties (a property
that is absent raises ``MissingParam``, which the collector reports as that property missing), the
emulator passes the device's settings.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Protocol

from protocols.echonet.frame import FrameError, decode_int, decode_uint, pack_int, pack_uint

Value = float | int | bool | str
Params = Mapping[str, float]

# Meters and device clocks in Japan show local time; Asia/Tokyo has no DST, so a fixed offset is exact.
JST = timezone(timedelta(hours=9), "JST")
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
# The smart meter's cumulative registers (0xE0/0xE3, and the counts inside 0xEA/0xEB/0xE2) hold at most
# 8 decimal digits (0..99,999,999); they roll over at 10**digits (0xD7) counts.
METER_READ_MAX = 99_999_999
# Water and gas cumulative flow (0xE0) holds 9 digits (0..999,999,999) and rolls over at 10**9 counts;
# what a count is worth is the unit (0xE1) for water, 0.001 m3 for gas.
VOLUME_WRAP = WRAP_1E9


class MissingParam(FrameError):
    """A property this one is read with is absent or holds no valid value."""

    def __init__(self, param: str) -> None:
        super().__init__(f"needs {param}, which the device did not give")
        self.param = param


@dataclass(frozen=True, slots=True)
class Stamped:
    """A value the device stamped with its own clock (the meter's :00/:30 record)."""

    ts: datetime  # timezone-aware
    value: float


class Codec(Protocol):
    """What every property codec offers.  ``size`` is the EDT length (None: variable); ``needs`` the
    parameters it cannot decode without."""

    @property
    def size(self) -> int | None: ...

    @property
    def needs(self) -> tuple[str, ...]: ...

    def decode(self, edt: bytes, params: Params) -> Value | Stamped | None: ...

    def encode(self, value: Value | Stamped | None, params: Params) -> bytes: ...

    def wrap(self, params: Params) -> float | None:
        """A counter's modulus in the value's unit, None for anything else."""
        ...

    def accepts(self, edt: bytes) -> bool:
        """Whether a Set may store ``edt`` (its length and range)."""
        ...


class _Plain:
    """Defaults of a codec that needs no parameter, is no counter and takes no Set."""

    __slots__ = ()

    @property
    def needs(self) -> tuple[str, ...]:
        return ()

    def wrap(self, params: Params) -> float | None:
        return None

    def accepts(self, edt: bytes) -> bool:
        return False


def may_wrap(codec: Codec) -> bool:
    """Whether ``codec.wrap`` can give anything (a counter's): a decoder asks only those, once a value."""
    return getattr(type(codec), "wrap", None) is not _Plain.wrap


def _number(value: Value | Stamped | None, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FrameError(f"{what}: cannot encode {value!r} as a number")
    return float(value)


def _top(size: int) -> int:
    """Largest value that is no protocol code: 0xFF..FD (0xFF..FE is "no data", 0xFF..FF overflow)."""
    return (1 << (8 * size)) - 3


@dataclass(frozen=True, slots=True)
class Unsigned(_Plain):
    """Big-endian unsigned integer in the value's unit.  With ``unset`` a value <= 0 means "not
    installed" (a rating of 0 W) and encodes as those bytes."""

    size: int
    max: int | None = None
    min: int = 0
    unset: bytes | None = None

    def decode(self, edt: bytes, params: Params) -> int | None:
        value = decode_uint(edt, self.size, self.max)
        return None if value is None or value < self.min else value

    def encode(self, value: Value | Stamped | None, params: Params) -> bytes:
        if value is None or (self.unset is not None and _number(value, "unsigned") <= 0):
            return self.unset if self.unset is not None else b"\xff" * (self.size - 1) + b"\xfe"
        top = self.max if self.max is not None else _top(self.size)
        v = round(_number(value, "unsigned"))
        return pack_uint(self.min if v < self.min else top if v > top else v, self.size)

    def accepts(self, edt: bytes) -> bool:
        return len(edt) == self.size and self.decode(edt, {}) is not None


@dataclass(frozen=True, slots=True)
class Span(_Plain):
    """A minimum/maximum pair of unsigned integers (a battery's or charger's min/max charge power, two
    uint32 in W).  Reads as the maximum, the figure a rating is; writes ``value`` as the maximum with a
    minimum of 0 (the emulated devices take any power up to their maximum)."""

    part: int = 4
    max: int = 999_999_999

    @property
    def size(self) -> int:
        return 2 * self.part

    def decode(self, edt: bytes, params: Params) -> int | None:
        return decode_uint(edt[self.part :], self.part, self.max)

    def encode(self, value: Value | Stamped | None, params: Params) -> bytes:
        top = max(0, min(self.max, round(_number(value, "span"))))
        return pack_uint(0, self.part) + pack_uint(top, self.part)


@dataclass(frozen=True, slots=True)
class Signed(_Plain):
    """Big-endian two's complement in the value's unit, within [min, max] (the documented range)."""

    size: int
    min: int
    max: int

    def decode(self, edt: bytes, params: Params) -> int | None:
        return decode_int(edt, self.size, self.min, self.max)

    def encode(self, value: Value | Stamped | None, params: Params) -> bytes:
        v = round(_number(value, "signed"))
        return pack_int(self.min if v < self.min else self.max if v > self.max else v, self.size)

    def accepts(self, edt: bytes) -> bool:
        return len(edt) == self.size and self.decode(edt, {}) is not None


@dataclass(frozen=True, slots=True)
class Counter(_Plain):
    """A cumulative register of ``per_count`` units per count that restarts from 0 at ``wrap`` counts
    (0.001 kWh = 1 Wh uint32 counters wrap at 10**9, as devices do)."""

    wrap_counts: int = WRAP_1E9
    per_count: float = 1.0
    size: int = 4

    def decode(self, edt: bytes, params: Params) -> float | None:
        raw = decode_uint(edt, self.size, self.wrap_counts - 1)
        return None if raw is None else raw * self.per_count

    def encode(self, value: Value | Stamped | None, params: Params) -> bytes:
        return pack_uint(int(_number(value, "counter") / self.per_count) % self.wrap_counts, self.size)

    def wrap(self, params: Params) -> float | None:
        return self.wrap_counts * self.per_count


@dataclass(frozen=True, slots=True)
class Volume(_Plain):
    """Water or gas meter cumulative flow (0xE0), in litres: ``m3_per_count`` fixed, or read from the
    ``unit`` parameter (0xE1: 10**-unit m3 per count, unit 0..6).  The register holds 0..999,999,999
    counts and restarts from 0 after that, so its wrap in litres is 10**9 x the unit: 1,000 m3 for a
    meter counting millilitres, 10**6 m3 for one counting litres."""

    m3_per_count: float | None = None
    size: int = 4

    @property
    def needs(self) -> tuple[str, ...]:
        return () if self.m3_per_count is not None else ("unit",)

    def _m3(self, params: Params) -> float:
        if self.m3_per_count is not None:
            return self.m3_per_count
        unit = params.get("unit")
        if unit is None or int(unit) not in WATER_UNIT_M3:
            raise MissingParam("unit")
        return WATER_UNIT_M3[int(unit)]

    def decode(self, edt: bytes, params: Params) -> float | None:
        m3 = self._m3(params)
        raw = decode_uint(edt, self.size, VOLUME_WRAP - 1)
        return None if raw is None else raw * m3 * 1000.0

    def encode(self, value: Value | Stamped | None, params: Params) -> bytes:
        litres = _number(value, "volume")
        return pack_uint(int(litres / 1000.0 / self._m3(params) + 1e-9) % VOLUME_WRAP, self.size)

    def wrap(self, params: Params) -> float | None:
        return VOLUME_WRAP * self._m3(params) * 1000.0


@dataclass(frozen=True, slots=True)
class MeterEnergy(_Plain):
    """Smart meter cumulative energy (0xE0/0xE3), in Wh: count x coefficient (0xD3, 1 when absent) x
    unit (0xE1), wrapping at 10**digits (0xD7) counts."""

    size: int = 4

    @property
    def needs(self) -> tuple[str, ...]:
        return ("unit",)

    @staticmethod
    def step_wh(params: Params) -> float:
        unit = params.get("unit")
        if unit is None or int(unit) not in METER_UNIT_KWH:
            raise MissingParam("unit")
        coefficient = params.get("coefficient")
        return (1 if coefficient is None else coefficient) * METER_UNIT_KWH[int(unit)] * 1000.0

    @classmethod
    def count(cls, wh: float, params: Params) -> int:
        """Energy in Wh -> register value: wh / (D3 x unit(E1)), modulo 10**D7 (the meter's rollover)."""
        return int(wh / cls.step_wh(params) + 1e-9) % (10 ** int(params["digits"]))

    def decode(self, edt: bytes, params: Params) -> float | None:
        step = self.step_wh(params)
        raw = decode_uint(edt, self.size, METER_READ_MAX)
        return None if raw is None else raw * step

    def encode(self, value: Value | Stamped | None, params: Params) -> bytes:
        return pack_uint(self.count(_number(value, "energy"), params), self.size)

    def wrap(self, params: Params) -> float | None:
        digits = params.get("digits")
        step = self.step_wh(params)
        return (10.0**digits) * step if digits is not None and 1 <= digits <= 8 else None


@dataclass(frozen=True, slots=True)
class FixedTimeEnergy(_Plain):
    """0xEA/0xEB: the local date-time of the latest :00/:30 boundary, then the energy register at that
    moment (scaled as ``MeterEnergy``).  Decodes to a ``Stamped`` value at the meter's own time."""

    size: int = 11

    @property
    def needs(self) -> tuple[str, ...]:
        return ("unit",)

    def decode(self, edt: bytes, params: Params) -> Stamped | None:
        step = MeterEnergy.step_wh(params)
        year = edt[0] << 8 | edt[1]
        try:
            local = datetime(year, edt[2], edt[3], edt[4], edt[5], edt[6], tzinfo=JST)
        except ValueError:
            return None  # a meter that has not recorded a boundary yet sends an impossible date
        count = decode_uint(edt[7:], 4, METER_READ_MAX)
        if count is None:
            return None
        return Stamped(local.astimezone(UTC), count * step)

    def encode(self, value: Value | Stamped | None, params: Params) -> bytes:
        if not isinstance(value, Stamped):
            raise FrameError(f"fixed-time energy: needs a Stamped value, got {value!r}")
        b = value.ts.astimezone(JST)
        return (
            pack_uint(b.year, 2)
            + bytes((b.month, b.day, b.hour, b.minute, b.second))
            + pack_uint(MeterEnergy.count(value.value, params), 4)
        )

    def wrap(self, params: Params) -> float | None:
        return MeterEnergy().wrap(params)


@dataclass(frozen=True, slots=True)
class Flag(_Plain):
    """A one-byte status read as a bool: ``value == on`` (or, with ``off_only``, ``value != off``)."""

    on: int
    off: int
    off_only: bool = False
    size: int = 1

    def decode(self, edt: bytes, params: Params) -> bool | None:
        raw = decode_uint(edt, 1)
        if raw is None:
            return None
        return raw != self.off if self.off_only else raw == self.on

    def encode(self, value: Value | Stamped | None, params: Params) -> bytes:
        return bytes((self.on if value else self.off,))

    def accepts(self, edt: bytes) -> bool:
        return len(edt) == 1 and edt[0] in (self.on, self.off)


@dataclass(frozen=True, slots=True)
class Choice(_Plain):
    """A one-byte code with names (a working state); an unnamed code reads as ``0x..``."""

    names: Mapping[int, str]
    size: int = 1

    def decode(self, edt: bytes, params: Params) -> str | None:
        raw = decode_uint(edt, 1)
        return None if raw is None else self.names.get(raw, f"0x{raw:02x}")

    def encode(self, value: Value | Stamped | None, params: Params) -> bytes:
        for code, name in self.names.items():
            if name == value:
                return bytes((code,))
        raise FrameError(f"no code for {value!r}; known: {sorted(self.names.values())}")

    def accepts(self, edt: bytes) -> bool:
        return len(edt) == 1 and edt[0] in self.names


@dataclass(frozen=True, slots=True)
class Code(_Plain):
    """A one-byte number within [low, high] (or one of ``codes``): settings, types and units."""

    low: int = 0
    high: int = 0xFF
    codes: Collection[int] | None = None
    size: int = 1

    def decode(self, edt: bytes, params: Params) -> int | None:
        if len(edt) != 1:
            raise FrameError(f"{len(edt)} bytes where 1 was expected")
        value = edt[0]
        return value if self.accepts(edt) else None

    def encode(self, value: Value | Stamped | None, params: Params) -> bytes:
        code = int(_number(value, "code"))
        if not self.accepts(bytes((code & 0xFF,))) or not 0 <= code <= 0xFF:
            raise FrameError(f"code {code} outside what this property takes")
        return bytes((code,))

    def accepts(self, edt: bytes) -> bool:
        if len(edt) != 1:
            return False
        if self.codes is not None:
            return edt[0] in self.codes
        return self.low <= edt[0] <= self.high


@dataclass(frozen=True, slots=True)
class Raw(_Plain):
    """Bytes with no meaning the collector uses (identification, version, a clock); read as hex."""

    size: int | None = None

    def decode(self, edt: bytes, params: Params) -> str | None:
        return edt.hex() if edt else None

    def encode(self, value: Value | Stamped | None, params: Params) -> bytes:
        if not isinstance(value, str):
            raise FrameError(f"raw property: needs hex text, got {value!r}")
        return bytes.fromhex(value)

    def accepts(self, edt: bytes) -> bool:
        return self.size is None or len(edt) == self.size
