"""The emulated objects of the registered ECHONET Lite classes, derived from their entries.

For each property of a class entry (``protocols.echonet.classes``) the emulated object's producer is,
in this order: the class's behaviour for it (``devices.echonet.behaviour``); what was last set, for a
settable property; the household's value of the field it carries (``devices.measurements``) through
its codec; the device's setting of the parameter it carries; its fixed value; else no data (Get_SNA).
The super class (0x80..0x9F) is the emulator's own (``devices.echonet.table``), with the fault status
following the device's ``fault`` measurement where its category has one.

So a class registered with properties that carry known fields is served by every emulated home with no
code here: ``DEVICE_KINDS`` follows the registry.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from devices.echonet.behaviour import BEHAVIOURS, Behaviour
from devices.echonet.table import (
    DeviceClass,
    DeviceContext,
    Producer,
    PropertyDef,
    build_class,
    const,
    fixed,
    stored,
)
from devices.measurements import source
from devices.state import HomeState
from protocols.echonet.classes import CLASSES
from protocols.echonet.entry import FAULT_STATUS, SUPER_CLASS_EPCS, EchonetClass, Prop
from protocols.echonet.frame import EOJ


def _from_field(prop: Prop, category: str) -> Producer | None:
    if prop.field is None:
        return None
    measure = source(category, prop.field)
    if measure is None:
        return None
    codec = prop.codec

    def produce(st: HomeState, ctx: DeviceContext) -> bytes | None:
        value = measure(st)
        return None if value is None else codec.encode(value, ctx.settings)

    return produce


def _from_setting(prop: Prop) -> Producer | None:
    name, codec, default = prop.param, prop.codec, prop.default
    if name is None:
        return None
    return fixed(
        lambda st, ctx: codec.encode(ctx.settings[name], ctx.settings) if name in ctx.settings else default
    )


def _row(prop: Prop, category: str, behaviour: Behaviour) -> PropertyDef:
    if prop.settable:
        produce = stored(prop.epc)
    else:
        produce = (
            behaviour.producers.get(prop.epc)
            or _from_field(prop, category)
            or _from_setting(prop)
            or const(prop.default)
        )
    return PropertyDef(
        prop.epc,
        prop.name,
        prop.codec.size,
        produce,
        settable=prop.settable,
        announce=prop.announce,
        accept=prop.codec.accepts if prop.settable else None,
        default=prop.default if prop.settable else None,
    )


def _fault_status(category: str) -> Producer | None:
    measure = source(category, "fault")
    if measure is None:
        return None
    codec = FAULT_STATUS.codec
    return lambda st, ctx: codec.encode(measure(st), {})


def emulated(entry: EchonetClass) -> DeviceClass:
    """The table an emulated object of ``entry``'s class serves."""
    behaviour = BEHAVIOURS.get(entry.code, Behaviour())
    rows = [_row(p, entry.category, behaviour) for p in entry.props if p.epc not in SUPER_CLASS_EPCS]
    return build_class(
        entry.code,
        entry.name,
        rows,
        behaviour.defaults,
        fault=_fault_status(entry.category),
        check=behaviour.check,
    )


@dataclass(frozen=True)
class DeviceKind:
    """An object every emulated home has: its device id, EOJ, category and table."""

    device: str
    eoj: EOJ
    category: str
    cls: DeviceClass


class _DeviceKinds(Mapping[str, DeviceKind]):
    """Device id -> kind, one per registered class in registration order; rebuilt when the registry
    changes (a class registered later, e.g. a test's own)."""

    def __init__(self) -> None:
        self._version = -1
        self._kinds: dict[str, DeviceKind] = {}

    def _current(self) -> dict[str, DeviceKind]:
        if self._version != CLASSES.version:
            self._kinds = {
                c.device: DeviceKind(c.device, c.eoj, c.category, emulated(c)) for c in CLASSES.values()
            }
            self._version = CLASSES.version
        return self._kinds

    def __getitem__(self, device: str) -> DeviceKind:
        return self._current()[device]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


DEVICE_KINDS: Mapping[str, DeviceKind] = _DeviceKinds()
