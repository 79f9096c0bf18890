"""What one ECHONET Lite class entry says, and the registry of entries.

An entry is the whole description of a device class: its properties (EPC, size and codec, access), and
for each what it means in the project's field vocabulary (``field`` and its ``unit``), whether the
collector reads it on every poll (``fast``), on the counter interval (``slow``) or never, and which
properties other ones are read with (``param``).  The emulator derives the object it serves from the
entry (property maps included), the collector derives what it asks for and what it emits; neither has
a table of its own per class.

Import the registered classes from ``protocols.echonet.classes``, which loads every class module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from protocols.echonet.codecs import Code, Codec, Flag, Raw
from protocols.echonet.frame import EOJ
from protocols.errors import ProtocolError
from protocols.registry import Registry

Poll = Literal["fast", "slow"]

# The device object super class (EPCs 0x80..0x9F): every class has these; an emulated object serves them
# from its own rules (operation status on, fault status from the device, its clock and identity).
SUPER_CLASS_EPCS = range(0x80, 0xA0)


@dataclass(frozen=True, slots=True)
class Prop:
    """One property of a class.

    ``field``: the vocabulary field it carries (what the collector emits, what the emulator serves from
    the household); ``unit``: that field's unit, checked against the vocabulary by a test.  ``param``:
    a device parameter other properties' codecs read (the meter's coefficient).  ``poll``: when the
    collector reads it (None: never).  ``optional``: a device may lack it for a while (an unplugged
    car's battery), so its absence leaves a reading "ok".  ``default``: the initial value of a settable
    property, or the only value of a fixed one.  ``rating``: a nameplate figure (rated output, maximum
    charge power) that bounds the magnitude of that field; the collector reads it once and refuses a
    value of the field beyond what the device is built for (``collector.plausibility``).
    """

    epc: int
    name: str
    codec: Codec
    field: str | None = None
    unit: str | None = None
    param: str | None = None
    poll: Poll | None = None
    optional: bool = False
    settable: bool = False
    announce: bool = False
    default: bytes | None = None
    rating: str | None = None


def polled(prop: Prop, poll: Poll) -> Prop:
    """A super-class property the collector reads for this class (``polled(OPERATION_STATUS, "fast")``)."""
    return replace(prop, poll=poll)


OPERATION_STATUS = Prop(0x80, "operation status", Flag(0x30, 0x31), "running", "bool", announce=True)
INSTALLATION_LOCATION = Prop(
    0x81, "installation location", Code(), settable=True, announce=True, default=b"\x00"
)
STANDARD_VERSION = Prop(0x82, "standard version", Raw(4))
IDENTIFICATION = Prop(0x83, "identification number", Raw(17))
FAULT_STATUS = Prop(0x88, "fault status", Flag(0x41, 0x42), "fault", "bool", announce=True)
MANUFACTURER = Prop(0x8A, "manufacturer code", Raw(3))
CURRENT_TIME = Prop(0x97, "current time", Raw(2))
CURRENT_DATE = Prop(0x98, "current date", Raw(4))
SUPER_CLASS: tuple[Prop, ...] = (
    OPERATION_STATUS,
    INSTALLATION_LOCATION,
    STANDARD_VERSION,
    IDENTIFICATION,
    FAULT_STATUS,
    MANUFACTURER,
    CURRENT_TIME,
    CURRENT_DATE,
)


@dataclass(frozen=True)
class EchonetClass:
    """A device class (``code`` 0x0288), the ``device`` id and ``category`` its object has in an
    emulated home and a manifest, and its ``props`` in the order the collector asks for them."""

    code: int
    name: str
    device: str
    category: str
    props: tuple[Prop, ...]
    instance: int = 1
    by_epc: Mapping[int, Prop] = field(init=False, repr=False, compare=False)
    fast: tuple[int, ...] = field(init=False, repr=False, compare=False)
    slow: tuple[int, ...] = field(init=False, repr=False, compare=False)
    optional: frozenset[int] = field(init=False, repr=False, compare=False)
    params: Mapping[str, int] = field(init=False, repr=False, compare=False)
    ratings: Mapping[int, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_epc = {p.epc: p for p in self.props}
        if len(by_epc) != len(self.props):
            raise ProtocolError(f"class {self.code:04X}: two properties share an EPC")
        for p in self.props:
            if not 0x80 <= p.epc <= 0xFF:
                raise ProtocolError(f"class {self.code:04X}: EPC 0x{p.epc:02X} is not a property code")
            if p.field is not None and p.unit is None:
                raise ProtocolError(f"class {self.code:04X}: 0x{p.epc:02X} carries {p.field} without a unit")
            if p.poll is not None and p.field is None and p.param is None:
                raise ProtocolError(f"class {self.code:04X}: 0x{p.epc:02X} is polled but means nothing")
            if p.rating is not None and p.rating not in {q.field for q in self.props}:
                raise ProtocolError(f"class {self.code:04X}: 0x{p.epc:02X} rates {p.rating}, which it lacks")
        set_ = object.__setattr__
        set_(self, "by_epc", by_epc)
        set_(self, "fast", tuple(p.epc for p in self.props if p.poll == "fast"))
        set_(self, "slow", tuple(p.epc for p in self.props if p.poll == "slow"))
        set_(self, "optional", frozenset(p.epc for p in self.props if p.optional))
        set_(self, "params", {p.param: p.epc for p in self.props if p.param is not None})
        set_(self, "ratings", {p.epc: p.rating for p in self.props if p.rating is not None})

    @property
    def eoj(self) -> EOJ:
        return EOJ.of(self.code, self.instance)


CLASSES: Registry[int, EchonetClass] = Registry("ECHONET Lite class", lambda c: c.code, lambda k: f"{k:04X}")
