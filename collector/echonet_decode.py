"""ECHONET Lite EDTs -> normalized fields, for any registered class, from its entry alone.

The class entry (``protocols.echonet.classes``) says which EPCs the collector asks for on every poll
(``fast``: instantaneous values) and on the counter interval (``slow``: counters and the parameters
that scale them), which field each carries and with which codec.  Here the values of one answer
become fields: parameters first (the meter's coefficient, unit and digits), then every field in the
entry's order, where the first property that gives a field wins (a fuel cell's generation status
over its operation status).  An EPC the device answered without data is ``missing``; so is a
parameter without which an asked property cannot be read (that property is then left unread).
Anything outside a property's documented range decodes to None, never to a plausible-looking zero.
An EDT whose length is not the class's (``wrong_length``) cannot be read either: it costs that property
alone, never the rest of the answer, since devices that get one property's size wrong are real and the
other values of their answer are good.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from collector.reading import FieldValue
from protocols.echonet.classes import CLASSES
from protocols.echonet.codecs import MissingParam, Stamped, may_wrap
from protocols.echonet.entry import EchonetClass, Prop


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
    # EPC -> (bytes it came in, bytes its class says) for an EDT of another size: left unread, the rest
    # of the answer kept
    wrong_length: dict[int, tuple[int, int]] = field(default_factory=dict)


Values = Mapping[int, bytes | None]


def _decode(prop: Prop, values: Values, out: Decoded, params: Mapping[str, float]) -> object:
    """The property's value, or None when the device sent no data for it (noted as missing) or data of
    a length the class does not define (noted in ``wrong_length``)."""
    edt = values[prop.epc]
    if edt is None:
        out.missing.add(prop.epc)
        return None
    size = prop.codec.size
    if size is not None and len(edt) != size:
        out.wrong_length[prop.epc] = (len(edt), size)
        return None
    value = prop.codec.decode(edt, params)
    if value is None:
        out.invalid.add(prop.epc)
    return value


# isinstance with a tuple: on Python 3.11 a ``X | Y`` union is checked several times slower
_NUMBER = (int, float)
_VALUE = (int, float, str)
# class -> (the properties others are read with, per field (property, field, parameters it needs, EDT
# size or None, whether its codec may have a wrap)): worked out once per class, not on every poll
_Plan = tuple[tuple[Prop, ...], tuple[tuple[Prop, str, tuple[str, ...], int | None, bool], ...]]
_PLANS: dict[int, tuple[EchonetClass, _Plan]] = {}


def _plan(cls: EchonetClass) -> _Plan:
    known = _PLANS.get(id(cls))
    if known is not None and known[0] is cls:
        return known[1]
    plan: _Plan = (
        tuple(p for p in cls.props if p.param is not None),
        tuple(
            (p, p.field, tuple(p.codec.needs), p.codec.size, may_wrap(p.codec))
            for p in cls.props
            if p.field is not None
        ),
    )
    _PLANS[id(cls)] = (cls, plan)
    return plan


def decode_class(cls: EchonetClass, values: Values) -> Decoded:
    """Decode one object's values; FrameError only when a codec finds an EDT of the right length
    malformed."""
    out = Decoded()
    params: dict[str, float] = {}
    param_props, field_props = _plan(cls)
    for prop in param_props:
        if prop.epc in values:
            value = _decode(prop, values, out, {})
            if isinstance(value, _NUMBER) and value.__class__ is not bool:
                params[prop.param] = value  # type: ignore[index]  # a param prop has its name
    fields = out.fields
    for prop, name, needs, size, wraps in field_props:
        epc = prop.epc
        if epc not in values:
            continue
        if needs:
            lacking = [cls.params.get(p, epc) for p in needs if p not in params]
            if lacking:  # a value that cannot be read without a parameter the device did not give
                out.missing.update(lacking)
                continue
        edt = values[epc]  # what ``_decode`` does, written out: this loop runs for every field polled
        if edt is None:
            out.missing.add(epc)
            continue
        codec = prop.codec
        if size is not None and len(edt) != size:
            out.wrong_length[epc] = (len(edt), size)
            continue
        try:
            value = codec.decode(edt, params)
        except MissingParam as exc:  # a parameter present but outside what the codec can use
            out.missing.add(cls.params.get(exc.param, epc))
            continue
        if value is None:
            out.invalid.add(epc)
        elif value.__class__ is Stamped:
            out.stamped.append((value.ts, {name: value.value}))
        elif isinstance(value, _VALUE) and name not in fields:
            fields[name] = value
            if wraps:
                wrap = codec.wrap(params)
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
    if decoded.wrong_length:
        parts.append(wrong_lengths(decoded))
    if not parts:
        parts.append(f"nothing this collector reads among {hexes(values)}")
    return "answered, but " + "; ".join(parts)


def wrong_lengths(decoded: Decoded) -> str:
    """The properties left unread for their EDT's length, in words for the device's health."""
    parts = (
        f"0x{epc:02X} in {got} bytes, not {size}" for epc, (got, size) in sorted(decoded.wrong_length.items())
    )
    return "unread for their length: " + "; ".join(parts)


def decode(class_id: int, values: Values) -> Decoded:
    """``decode_class`` for the registered class ``class_id`` (0x0288)."""
    return decode_class(CLASSES[class_id], values)
