"""An emulated ECHONET Lite object's table: which EPCs it has and how each EDT is made.

Every property is a row (EPC, size, access, producer); a producer turns the household's ``HomeState``
(already seen through the device's faults) plus the object's own settings into EDT bytes, or None when
the real device could not answer (a Get_SNA with PDC = 0).  ``build_class`` adds the super-class rows
every object has and the three property maps (0x9D/0x9E/0x9F), derived from the rows themselves, so
they are never hand-maintained and cannot disagree with what is served.  The rows of each device
class come from its protocol entry (``devices.echonet.classes``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from devices.errors import DeviceSettingsError
from devices.state import HomeState
from protocols.echonet.codecs import JST
from protocols.echonet.frame import EOJ, encode_property_map, pack_uint
from protocols.echonet.node_profile import NODE_PROFILE_CODE, NODE_PROFILE_PROPS

MAKER_CODE = b"\xff\xff\xff"  # "experimental": honest for an emulator
DEVICE_VERSION = b"\x00\x00R\x01"  # appendix release R, revision 1
NODE_VERSION = b"\x01\x0d\x01\x00"  # ECHONET Lite 1.13, message format type 1


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
            raise DeviceSettingsError(
                f"{self.name}: unknown settings {sorted(unknown)}; known: {sorted(self.defaults)}"
            )
        if self.check is not None:
            try:
                self.check({**self.defaults, **settings})
            except ValueError as exc:
                raise DeviceSettingsError(str(exc)) from None

    def initial_values(self) -> dict[int, bytes]:
        return {p.epc: p.default for p in self.props.values() if p.default is not None}


# --- producer building blocks -----------------------------------------------------------------


_FIXED: set[Producer] = set()  # producers that never look at the state


def fixed(produce: Producer) -> Producer:
    """Mark a producer that never reads the household (its value changes only through a Set)."""
    _FIXED.add(produce)
    return produce


def const(edt: bytes | None) -> Producer:
    return fixed(lambda st, ctx: edt)


def stored(epc: int) -> Producer:
    return fixed(lambda st, ctx: ctx.values.get(epc))


def identification(node_id: str, eoj: EOJ) -> bytes:
    """0xFE, the maker code, then 13 bytes that are stable for this node id and object."""
    digest = hashlib.sha256(f"{node_id}/{eoj.hex()}".encode()).digest()
    return b"\xfe" + MAKER_CODE + digest[:13]


def local_time(st: HomeState) -> datetime:
    """The household's instant on the device's clock (Japan time)."""
    return st.ts.astimezone(JST)


def _time(st: HomeState, ctx: DeviceContext) -> bytes:
    t = local_time(st)
    return bytes((t.hour, t.minute))


def _date(st: HomeState, ctx: DeviceContext) -> bytes:
    t = local_time(st)
    return pack_uint(t.year, 2) + bytes((t.month, t.day))


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


def _ident(st: HomeState, ctx: DeviceContext) -> bytes:
    return ctx.ident


def build_class(
    class_id: int,
    name: str,
    props: list[PropertyDef],
    defaults: Mapping[str, float] | None = None,
    *,
    fault: Producer | None = None,
    node_profile: bool = False,
    check: Callable[[Mapping[str, float]], None] | None = None,
) -> DeviceClass:
    """Add the super-class rows (``fault`` makes 0x88; without it the device never reports a fault)
    and the three property maps derived from the rows themselves."""
    table: dict[int, PropertyDef] = {}
    if node_profile:
        common = [
            _prop(0x80, "operating status", 1, const(b"\x30"), announce=True),
            _prop(0x82, "version", 4, const(NODE_VERSION)),
            _prop(0x83, "identification number", 17, _ident),
            _prop(0x8A, "manufacturer code", 3, const(MAKER_CODE)),
        ]
    else:
        common = [
            _prop(0x80, "operation status", 1, const(b"\x30"), announce=True),
            _prop(
                0x81,
                "installation location",
                1,
                stored(0x81),
                settable=True,
                announce=True,
                accept=lambda edt: len(edt) == 1,
                default=b"\x00",
            ),
            _prop(0x82, "standard version", 4, const(DEVICE_VERSION)),
            _prop(0x83, "identification number", 17, _ident),
            _prop(0x88, "fault status", 1, fault or const(b"\x42"), announce=True),
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
    table[0x9D] = _prop(0x9D, "INF property map", None, const(encode_property_map(inf)))
    table[0x9E] = _prop(0x9E, "Set property map", None, const(encode_property_map(settable)))
    table[0x9F] = _prop(0x9F, "Get property map", None, const(encode_property_map(gettable)))
    return DeviceClass(class_id, name, table, dict(defaults or {}), gettable, settable, inf, polled, check)


NODE_PROFILE_CLASS = build_class(
    NODE_PROFILE_CODE,
    "node profile",
    [
        PropertyDef(p.epc, p.name, p.codec.size, stored(p.epc), get=True, announce=p.announce)
        for p in NODE_PROFILE_PROPS
        if p.epc >= 0xD0  # the instance and class lists; the rest is the super class above
    ],
    node_profile=True,
)
