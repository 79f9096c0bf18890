"""ECHONET Lite frame codec (EHD2 0x81, "format 1"), property maps and numeric EDT helpers.

Pure stdlib and shared by the emulated nodes and the collector.  Decoding is the hot path on both
sides (thousands of frames per second in one process), so it works on plain ``bytes`` indexing and
precompiled ``struct`` objects and builds only tuples.  Every malformed input raises ``FrameError``
naming what is wrong and where, so a caller can log one precise line and drop the datagram.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from enum import IntEnum
from typing import NamedTuple

from protocols.errors import ProtocolError

EHD1 = 0x10  # ECHONET Lite
EHD2_FORMAT1 = 0x81  # specified message format
HEADER_LEN = 12  # EHD1 EHD2 TID(2) SEOJ(3) DEOJ(3) ESV OPC
PORT = 3610
MULTICAST_GROUP = "224.0.23.0"


class FrameError(ProtocolError):
    """A datagram (or a frame to encode, or an EDT) that is not valid ECHONET Lite."""


class ESV(IntEnum):
    """Service codes; the high nibble says request (6), response/notification (7) or failure (5)."""

    SETI = 0x60
    SETC = 0x61
    GET = 0x62
    INF_REQ = 0x63
    SETGET = 0x6E
    SET_RES = 0x71
    GET_RES = 0x72
    INF = 0x73
    INFC = 0x74
    INFC_RES = 0x7A
    SETGET_RES = 0x7E
    SETI_SNA = 0x50
    SETC_SNA = 0x51
    GET_SNA = 0x52
    INF_SNA = 0x53
    SETGET_SNA = 0x5E


# Plain ints: hashing an IntEnum member runs Python code, and these sets are probed per datagram.
ESV_CODES: frozenset[int] = frozenset(int(e) for e in ESV)
# SetGet and its answers carry two property lists (Set first, then Get).
SETGET_ESVS: frozenset[int] = frozenset(int(e) for e in (ESV.SETGET, ESV.SETGET_RES, ESV.SETGET_SNA))
REQUEST_ESVS: frozenset[int] = frozenset(
    int(e) for e in (ESV.SETI, ESV.SETC, ESV.GET, ESV.INF_REQ, ESV.SETGET)
)


class EOJ(NamedTuple):
    """An ECHONET object: class group, class code and instance (e.g. 02 88 01, the smart meter)."""

    class_group: int
    class_code: int
    instance: int

    def hex(self) -> str:
        return f"{self.class_group:02x}{self.class_code:02x}{self.instance:02x}"

    def to_bytes(self) -> bytes:
        return bytes(self)

    @property
    def cls(self) -> int:
        """The class as one number (0x0288), the key of class tables."""
        return self.class_group << 8 | self.class_code

    @classmethod
    def from_hex(cls, text: str) -> EOJ:
        try:
            raw = bytes.fromhex(text)
        except ValueError as exc:
            raise FrameError(f"EOJ {text!r} is not hexadecimal") from exc
        if len(raw) != 3:
            raise FrameError(f"EOJ {text!r} must be 3 bytes (6 hex digits), got {len(raw)}")
        return cls(raw[0], raw[1], raw[2])

    @classmethod
    def of(cls, class_id: int, instance: int) -> EOJ:
        """Build from a class number (0x0288) and an instance."""
        return cls(class_id >> 8 & 0xFF, class_id & 0xFF, instance)


NODE_PROFILE = EOJ(0x0E, 0xF0, 0x01)
CONTROLLER = EOJ(0x05, 0xFF, 0x01)


class Property(NamedTuple):
    """One EPC with its data; a Get request carries an empty EDT (PDC = 0)."""

    epc: int
    edt: bytes = b""


class Frame(NamedTuple):
    """A decoded frame.  For SetGet ESVs ``set_props`` is the Set list and ``props`` the Get list;
    for every other ESV ``set_props`` is None.  Property lists are tuples.  ``decode`` gives ``esv`` as
    a plain int (compare it with ``ESV`` members; ``ESV(frame.esv)`` names it)."""

    tid: int
    seoj: EOJ
    deoj: EOJ
    esv: int
    props: tuple[Property, ...]
    set_props: tuple[Property, ...] | None = None


def _encode_props(out: list[bytes], props: Sequence[Property], what: str) -> None:
    if len(props) > 255:
        raise FrameError(f"{what}: {len(props)} properties, at most 255 fit in OPC")
    out.append(bytes((len(props),)))
    for epc, edt in props:
        if not 0 <= epc <= 0xFF:
            raise FrameError(f"{what}: EPC {epc} is not a byte")
        if len(edt) > 255:
            raise FrameError(f"{what}: EDT of EPC 0x{epc:02x} is {len(edt)} bytes, at most 255")
        out.append(bytes((epc, len(edt))))
        out.append(bytes(edt))


def encode(frame: Frame) -> bytes:
    """Serialize a frame; raises FrameError for values that cannot be put on the wire."""
    tid, seoj, deoj, esv, props, set_props = frame
    if not 0 <= tid <= 0xFFFF:
        raise FrameError(f"TID {tid} is not 0..65535")
    if not 0 <= esv <= 0xFF:
        raise FrameError(f"ESV {esv} is not a byte")
    try:
        out = [bytes((EHD1, EHD2_FORMAT1, tid >> 8, tid & 0xFF, *seoj, *deoj, esv))]
    except ValueError as exc:
        raise FrameError(f"EOJ bytes out of range: {seoj}, {deoj}") from exc
    if esv in SETGET_ESVS:
        _encode_props(out, set_props or (), "SetGet set list")
    elif set_props:
        raise FrameError(f"ESV 0x{esv:02x} has one property list, set_props must be None")
    _encode_props(out, props, "property list")
    return b"".join(out)


def get_request(tid: int, deoj: EOJ, epcs: Iterable[int], seoj: EOJ = CONTROLLER) -> bytes:
    """A Get for ``epcs`` (each with PDC 0), the request a collector sends most."""
    return encode(Frame(tid, seoj, deoj, ESV.GET, tuple(Property(e) for e in epcs)))


# Decoded tuples are built with tuple.__new__ directly: a NamedTuple's own __new__ is a Python function,
# one call per property and per frame on the hot path; the fields are the same.
_new = tuple.__new__


def _decode_props(data: bytes, offset: int, what: str) -> tuple[tuple[Property, ...], int]:
    end = len(data)
    if offset >= end:
        raise FrameError(f"{what}: frame ends at offset {offset} where OPC was expected")
    opc = data[offset]
    opc_at = offset
    offset += 1
    props: list[Property] = []
    for i in range(opc):
        if offset + 2 > end:
            raise FrameError(
                f"{what}: OPC at offset {opc_at} says {opc} properties but the frame ends "
                f"after {i} (offset {offset}, length {end})"
            )
        epc = data[offset]
        pdc = data[offset + 1]
        offset += 2
        if offset + pdc > end:
            raise FrameError(
                f"{what}: PDC {pdc} of EPC 0x{epc:02x} at offset {offset - 1} runs past the end "
                f"(frame is {end} bytes)"
            )
        props.append(_new(Property, (epc, data[offset : offset + pdc])))
        offset += pdc
    return tuple(props), offset


def decode(data: bytes | bytearray | memoryview) -> Frame:
    """Parse one datagram; raises FrameError saying what is wrong and at which offset."""
    frame, extra = decode_padded(data)
    if extra:
        n = len(data)
        raise FrameError(f"{extra} trailing bytes after the last property, from offset {n - extra}")
    return frame


def decode_padded(data: bytes | bytearray | memoryview) -> tuple[Frame, int]:
    """Parse one datagram that may carry bytes after its last property; returns the frame and how many
    such bytes there were.

    Why: some devices pad their frames (zeros after the last property).  OPC and the PDCs say where the
    properties end, so a receiver can read the frame and count the padding; the emulated devices keep
    refusing it (``decode``), a collector reads it.  Everything else malformed still raises FrameError."""
    if not isinstance(data, bytes):
        data = bytes(data)
    n = len(data)
    if n < HEADER_LEN:
        raise FrameError(f"frame too short: {n} bytes, the header alone needs {HEADER_LEN}")
    if data[0] != EHD1:
        raise FrameError(f"bad EHD1 0x{data[0]:02x} at offset 0 (expected 0x10, ECHONET Lite)")
    if data[1] != EHD2_FORMAT1:
        raise FrameError(f"bad EHD2 0x{data[1]:02x} at offset 1 (only format 1, 0x81, is supported)")
    esv = data[10]
    if esv not in ESV_CODES:
        raise FrameError(f"unknown ESV 0x{esv:02x} at offset 10")
    set_props: tuple[Property, ...] | None = None
    offset = 11
    if esv in SETGET_ESVS:
        set_props, offset = _decode_props(data, offset, "SetGet set list")
    props, offset = _decode_props(data, offset, "property list")
    seoj = _new(EOJ, (data[4], data[5], data[6]))
    deoj = _new(EOJ, (data[7], data[8], data[9]))
    return _new(Frame, (data[2] << 8 | data[3], seoj, deoj, esv, props, set_props)), n - offset


# --- property maps (0x9D / 0x9E / 0x9F) -------------------------------------------------------


def encode_property_map(epcs: Iterable[int]) -> bytes:
    """Below 16 EPCs a plain list, from 16 on the 16-byte bitmap (byte = low nibble, bit = high - 8)."""
    unique = sorted(set(epcs))
    for epc in unique:
        if not 0x80 <= epc <= 0xFF:
            raise FrameError(f"EPC 0x{epc:02x} cannot be in a property map (0x80..0xFF only)")
    if len(unique) < 16:
        return bytes((len(unique), *unique))
    bitmap = bytearray(16)
    for epc in unique:
        bitmap[epc & 0x0F] |= 1 << ((epc >> 4) - 8)
    return bytes((len(unique),)) + bytes(bitmap)


def decode_property_map(edt: bytes) -> tuple[int, ...]:
    """The EPCs of a property map, ascending; FrameError when the layout and the count disagree."""
    if not edt:
        raise FrameError("property map is empty (needs at least the count byte)")
    count = edt[0]
    if count < 16:
        if len(edt) != 1 + count:
            raise FrameError(f"property map lists {len(edt) - 1} EPCs but its count byte says {count}")
        return tuple(sorted(set(edt[1:])))
    if len(edt) != 17:
        raise FrameError(f"property map of {count} EPCs must be a 17-byte bitmap, got {len(edt)} bytes")
    epcs = tuple(((bit + 8) << 4) | i for bit in range(8) for i in range(16) if edt[1 + i] >> bit & 1)
    if len(epcs) != count:
        raise FrameError(f"property map bitmap has {len(epcs)} bits set but its count byte says {count}")
    return tuple(sorted(epcs))


# --- numbers ----------------------------------------------------------------------------------

_UNSIGNED = {1: struct.Struct(">B"), 2: struct.Struct(">H"), 4: struct.Struct(">I")}
_SIGNED = {1: struct.Struct(">b"), 2: struct.Struct(">h"), 4: struct.Struct(">i")}


def pack_uint(value: int, size: int) -> bytes:
    """Big-endian unsigned; FrameError when it does not fit (callers clamp or wrap first)."""
    try:
        return _UNSIGNED[size].pack(value)
    except (KeyError, struct.error) as exc:
        raise FrameError(f"cannot pack {value} as a {size}-byte unsigned integer") from exc


def pack_int(value: int, size: int) -> bytes:
    try:
        return _SIGNED[size].pack(value)
    except (KeyError, struct.error) as exc:
        raise FrameError(f"cannot pack {value} as a {size}-byte signed integer") from exc


def _check(edt: bytes, size: int) -> None:
    if len(edt) != size or size not in _UNSIGNED:
        raise FrameError(f"EDT of {len(edt)} bytes where a {size}-byte integer was expected")


def decode_uint(edt: bytes, size: int | None = None, max_value: int | None = None) -> int | None:
    """Unsigned EDT; the two top codes (0xFF..FE "no data"/underflow, 0xFF..FF overflow) and any
    value above ``max_value`` (the class's documented range) mean "no value" -> None."""
    size = len(edt) if size is None else size
    if len(edt) != size or size not in _UNSIGNED:
        _check(edt, size)
    value = int.from_bytes(edt, "big")  # every collector read decodes several: no struct lookup
    if value >= (1 << (8 * size)) - 2:
        return None
    if max_value is not None and value > max_value:
        return None
    return value


def decode_int(
    edt: bytes, size: int | None = None, min_value: int | None = None, max_value: int | None = None
) -> int | None:
    """Signed EDT; 0x7F..FE ("no data"), 0x7F..FF (overflow), 0x80..00 (underflow) and values outside
    the documented range -> None."""
    size = len(edt) if size is None else size
    if len(edt) != size or size not in _UNSIGNED:
        _check(edt, size)
    value = int.from_bytes(edt, "big", signed=True)
    top = (1 << (8 * size - 1)) - 1
    if value >= top - 1 or value == -top - 1:
        return None
    if (min_value is not None and value < min_value) or (max_value is not None and value > max_value):
        return None
    return value


NO_DATA_UINT32 = b"\xff\xff\xff\xfe"
NO_DATA_INT32 = b"\x7f\xff\xff\xfe"
NO_DATA_INT16 = b"\x7f\xfe"
