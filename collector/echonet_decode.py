"""ECHONET Lite EDTs -> normalized fields, for any registered class, from its entry alone.

The class entry (``protocols.echonet.classes``) says which EPCs the collector asks for on every poll
(``fast``: instantaneous values) and on the counter interval (``slow``: counters and the parameters
that scale them), which field each carries and with which codec.  Here the values of one answer
become fields: parameters first (the meter's coefficient, unit and digits), then every field in the
entry's order, where the first property that gives a field wins (a fuel cell's generation status
over its operation status).  An EPC the device answered without data is ``missing``; so is a
parameter without which an asked property cannot be read (that property is then left unread).
Anything outside a property's documented range decodes to None, never to a plausible-looking zero.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from collector.reading import FieldValue
from protocols.echonet.classes import CLASSES
from protocols.echonet.codecs import MissingParam, Stamped
from protocols.echonet.entry import EchonetClass, Prop
from protocols.echonet.frame import FrameError


@dataclass
class Decoded:
    """What one poll of one object yields.  ``missing`` are EPCs whose absence makes the data partial."""

    fields: dict[str, FieldValue] = field(default_factory=dict)
    counter_wrap: dict[str, float] = field(default_factory=dict)
    missing: set[int] = field(default_factory=set)
    # EPCs that came with data holding no value (a no-data code, or outside the documented range)
    invalid: set[int] = field(default_factory=set)
    # (device timestamp, fields) of values the device stamped itself (meter 0xEA/0xEB)
    stamped: list[tuple[datetime, dict[str, FieldValue]]] = field(default_factory=list)


Values = Mapping[int, bytes | None]


def _decode(prop: Prop, values: Values, out: Decoded, params: Mapping[str, float]) -> object:
    """The property's value, or None when the device sent no data for it (noted as missing); a length
    the class does not define is a malformed reply."""
    edt = values[prop.epc]
    if edt is None:
        out.missing.add(prop.epc)
        return None
    size = prop.codec.size
    if size is not None and len(edt) != size:
        raise FrameError(f"EPC 0x{prop.epc:02x}: {len(edt)} bytes where {size} were expected")
    value = prop.codec.decode(edt, params)
    if value is None:
        out.invalid.add(prop.epc)
    return value


def decode_class(cls: EchonetClass, values: Values) -> Decoded:
    """Decode one object's values; FrameError when an EDT has the wrong shape (a malformed reply)."""
    out = Decoded()
    params: dict[str, float] = {}
    for prop in cls.props:
        if prop.param is not None and prop.epc in values:
            value = _decode(prop, values, out, {})
            if isinstance(value, int | float) and not isinstance(value, bool):
                params[prop.param] = value
    for prop in cls.props:
        name = prop.field
        if name is None or prop.epc not in values:
            continue
        lacking = [cls.params.get(p, prop.epc) for p in prop.codec.needs if p not in params]
        if lacking:  # a value that cannot be read without a parameter the device did not give
            out.missing.update(lacking)
            continue
        try:
            value = _decode(prop, values, out, params)
        except MissingParam as exc:  # a parameter present but outside what the codec can use
            out.missing.add(cls.params.get(exc.param, prop.epc))
            continue
        if isinstance(value, Stamped):
            out.stamped.append((value.ts, {name: value.value}))
        elif isinstance(value, int | float | str) and name not in out.fields:
            out.fields[name] = value
            wrap = prop.codec.wrap(params)
            if wrap is not None:
                out.counter_wrap[name] = wrap
    return out


def why_nothing(decoded: Decoded, values: Values) -> str:
    """Why a poll that got an answer yields no field, in words for the device's health: which
    properties came without data (Get_SNA), which held no valid value."""
    hexes = lambda epcs: ", ".join(f"0x{e:02X}" for e in sorted(epcs))  # noqa: E731
    parts: list[str] = []
    empty = {epc for epc, edt in values.items() if edt is None}
    if empty:
        parts.append(f"Get_SNA for {hexes(empty)}")
    if decoded.invalid:
        parts.append(f"no valid value in {hexes(decoded.invalid)} (a no-data code or outside its range)")
    if not parts:
        parts.append(f"nothing this collector reads among {hexes(values)}")
    return "answered, but " + "; ".join(parts)


def decode(class_id: int, values: Values) -> Decoded:
    """``decode_class`` for the registered class ``class_id`` (0x0288)."""
    return decode_class(CLASSES[class_id], values)
