"""SunSpec over Modbus TCP (``collector.modbus_tcp``): find the map, walk the models, read them.

Why one connection per host:port: a home's hybrid PCS answers all its unit ids on one listener and
many devices limit concurrent TCP sessions, so unit ids share the connection and are chosen per
request (as evcc and OpenEMS do).  A connection carries one request at a time, so the three devices
of a home take turns; devices of different homes never wait for each other.

Values leave this module already scaled (``raw * 10**SF``); a point holding its type's "not
implemented" sentinel, or whose scale factor does, becomes missing, never zero.  Which models are read
and which fields come from which points is each model's entry (``protocols.sunspec.models``): a newly
registered model is read with no change here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from collector.errors import DeviceException, DeviceUnreachable, MalformedReply, PollError
from collector.modbus_tcp import ConnectionLost, ModbusConnection, NotSent, connect
from collector.reading import FieldValue
from protocols.sunspec.models import MODELS, Model
from protocols.sunspec.points import (
    ACCUMULATOR_TYPES,
    END_MODEL_ID,
    MAX_READ_REGISTERS,
    NOT_IMPLEMENTED,
    SIGNED_TYPES,
    SUNS_MARKER,
    Emit,
    Point,
    Rating,
    RawValue,
    SunSpecValueError,
    decode,
)

SCAN_BASES: tuple[int, ...] = (40000, 0, 50000)
# Exception codes to a planned read that say the map the scan found is no longer there: 2 (illegal data
# address) and 3 (illegal data value: a count the device no longer takes there)
_MAP_MOVED = frozenset({2, 3})
MIN_READ_REGISTERS = 8  # reads are never made smaller than this when a device refuses larger ones


def read_models() -> frozenset[int]:
    """The registered models this collector reads something from (now: a model registered later counts)."""
    return frozenset(m.id for m in MODELS.values() if m.emits or m.status is not None or m.ratings)


class ModbusPool:
    """One connection per host:port (``collector.modbus_tcp``), made lazily and again after a failure."""

    def __init__(self, timeout_s: float = 1.0) -> None:
        self.timeout_s = timeout_s
        self.requests = 0  # reads put on a connection (each a round trip), for capacity figures
        self.reconnects = 0  # reads asked again because the device closed the connection first
        self._connections: dict[tuple[str, int], ModbusConnection] = {}
        self._connecting: dict[tuple[str, int], asyncio.Lock] = {}

    async def connection(self, host: str, port: int) -> ModbusConnection:
        key = (host, port)
        conn = self._connections.get(key)
        if conn is not None and not conn.closed:
            return conn  # the common case: no lock
        lock = self._connecting.get(key)
        if lock is None:
            lock = self._connecting[key] = asyncio.Lock()
        async with lock:
            conn = self._connections.get(key)  # another task may have connected meanwhile
            if conn is not None and not conn.closed:
                return conn
            conn = self._connections[key] = await connect(host, port, self.timeout_s)
            return conn

    def drop(self, host: str, port: int) -> None:
        """Forget a connection whose stream may be out of step."""
        conn = self._connections.pop((host, port), None)
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        for conn in self._connections.values():
            conn.close()
        self._connections.clear()
        await asyncio.sleep(0)

    async def read(self, host: str, port: int, unit_id: int, address: int, count: int) -> list[int]:
        """Holding registers, or a PollError whose reason the health view can show.

        Units share the connection, so a request may have queued behind another unit's failure
        that closed it; such a request is asked again once on a fresh connection instead of taking
        the blame.  So is one whose connection the device closed before answering (``ConnectionLost``:
        devices that take one request per session, or end an idle one as the request arrives, do it
        in normal operation, and a read changes nothing on the device); a second loss is the device's.
        """
        for attempt in (0, 1):
            conn = self._connections.get((host, port))
            if conn is None or conn.closed:
                conn = await self.connection(host, port)
            self.requests += 1
            try:
                return await conn.read_holding_registers(unit_id, address, count, self.timeout_s)
            except NotSent:
                continue
            except ConnectionLost:
                self.drop(host, port)
                if attempt == 0:
                    self.reconnects += 1
                    continue
                raise
            except DeviceUnreachable:
                self.drop(host, port)
                raise
            # a timeout or an untrustworthy frame closed the connection: the next read opens a new one
        raise DeviceUnreachable(f"{host}:{port}/{unit_id}: connection lost twice")


@dataclass
class SunSpecLayout:
    """Where each model of one device sits (address of its ID register, length L)."""

    base: int
    models: dict[int, tuple[int, int]] = field(default_factory=dict)


def plan_reads(blocks: Iterable[tuple[int, int]], limit: int = MAX_READ_REGISTERS) -> list[tuple[int, int]]:
    """(address, count) requests covering every (address, size) block in as few reads as fit: a block
    joins the request before it when the two, with the registers between them, stay within ``limit``
    registers (what lies between is the device's SunSpec map: contiguous, readable, its values unused);
    neighbours are merged up to ``limit`` and a block larger than ``limit`` is split."""
    requests: list[tuple[int, int]] = []
    for address, size in sorted(blocks):
        if requests:
            start, count = requests[-1]
            if address + size - start <= limit:  # fits in the previous request, gap and all
                requests[-1] = (start, max(count, address + size - start))
                continue
        while size > 0:
            if requests:
                start, count = requests[-1]
                if start + count == address and count < limit:
                    take = min(size, limit - count)
                    requests[-1] = (start, count + take)
                    address, size = address + take, size - take
                    continue
            take = min(size, limit)
            requests.append((address, take))
            address, size = address + take, size - take
    return requests


async def scan(pool: ModbusPool, host: str, port: int, unit_id: int) -> SunSpecLayout:
    """Find 'SunS' (40000, then 0, then 50000) and walk the model chain to the end marker."""
    base: int | None = None
    last: PollError | None = None
    for candidate in SCAN_BASES:
        try:
            marker = await pool.read(host, port, unit_id, candidate, 2)
        except DeviceException as exc:
            if exc.code != 2:  # anything but "illegal address" is the device refusing every read
                raise
            last = exc
            continue
        if tuple(marker) == SUNS_MARKER:
            base = candidate
            break
    if base is None:
        raise last or MalformedReply(f"{host}:{port}/{unit_id}: no SunSpec marker at {SCAN_BASES}")
    layout = SunSpecLayout(base)
    address = base + 2
    for _ in range(64):  # a chain longer than this is a broken device, not a real map
        model_id, length = await pool.read(host, port, unit_id, address, 2)
        if model_id == END_MODEL_ID:
            return layout
        layout.models[model_id] = (address, length)
        address += 2 + length
    raise MalformedReply(f"{host}:{port}/{unit_id}: SunSpec chain has no end marker")


def unsupported(layout: SunSpecLayout) -> str:
    """Why a device whose map lists nothing this collector reads is not read, model by model."""
    parts = []
    for mid, (_, length) in layout.models.items():
        model = MODELS.get(mid)
        if model is None:
            parts.append(f"unsupported model {mid}")
        elif length < model.length:
            parts.append(f"unsupported model {mid} (L={length}; the standard's is {model.length})")
    listed = ", ".join(str(m) for m in layout.models) or "none"
    return "; ".join(parts) or f"its models ({listed}) carry nothing this collector reads"


# One point as ``_points`` decodes it: (name, offset, size, the point, then for a one-register integer
# point -- nearly all of them -- its "not implemented" sentinel and whether it is signed; None else)
_PointPlan = tuple[str, int, int, Point, int | None, bool]
# How a value is read from a model's points: (point, its scale factor's name or None)
_ValuePlan = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class _ModelPlan:
    """What ``interpret`` needs of one model, worked out once rather than on every read: the points to
    decode, and for each rating and emitted field where its value and scale factor are, and an
    accumulator's width (its wrap is 2**bits x 10**SF)."""

    model: Model
    points: tuple[_PointPlan, ...]
    end: int  # registers the decoded points need from the model's ID register on
    ratings: tuple[tuple[Rating, str, str | None], ...]
    emits: tuple[tuple[Emit, str, str | None, int | None], ...]  # (emit, point, sf, accumulator bits)


def _model_plan(model: Model) -> _ModelPlan:
    points: list[_PointPlan] = []
    for name in model.read_points:
        p = model.point(name)
        # inline only types with one sentinel: an accumulator has two (``ACCUMULATOR_TYPES``)
        inline = p.size == 1 and p.type != "pad" and p.type not in ACCUMULATOR_TYPES
        sentinel = NOT_IMPLEMENTED.get(p.type) if inline else None
        points.append((name, p.offset, p.size, p, sentinel, p.type in SIGNED_TYPES))
    emits = []
    for emit in model.emits:
        p = model.point(emit.point)
        bits = 16 * p.size if emit.counter and p.type.startswith("acc") else None
        emits.append((emit, emit.point, p.sf, bits))
    return _ModelPlan(
        model,
        tuple(points),
        max((offset + size for _, offset, size, *_ in points), default=0),
        tuple((r, r.point, model.point(r.point).sf) for r in model.ratings),
        tuple(emits),
    )


_PLANS: dict[int, _ModelPlan] = {}  # model id -> its plan (made again if the registry's model changed)


def _plan_of(model: Model) -> _ModelPlan:
    plan = _PLANS.get(model.id)
    if plan is None or plan.model is not model:
        plan = _PLANS[model.id] = _model_plan(model)
    return plan


def _points(plan: _ModelPlan, regs: Sequence[int]) -> dict[str, RawValue]:
    """The plan's points decoded (``protocols.sunspec.points.decode``), one-register integers inline:
    they are nearly every point, and this runs for every model of every Modbus read."""
    if len(regs) < plan.end:  # too short a block: ``decode`` says which point lacks registers
        return {name: decode(p, regs[offset : offset + size]) for name, offset, size, p, _, _ in plan.points}
    values: dict[str, RawValue] = {}
    for name, offset, size, p, sentinel, signed in plan.points:
        if sentinel is None:
            values[name] = decode(p, regs[offset : offset + size])
            continue
        raw = regs[offset] & 0xFFFF
        if raw == sentinel:
            values[name] = None
        elif signed and raw >= 0x8000:
            values[name] = raw - 0x10000
        else:
            values[name] = raw
    return values


def _scaled(values: Mapping[str, RawValue], name: str, sf_name: str | None) -> float | None:
    raw = values.get(name)
    if raw is None or isinstance(raw, str):
        return None
    if sf_name is None:
        return float(raw)
    sf = values.get(sf_name)
    if not isinstance(sf, int) or not -10 <= sf <= 10:
        return None
    return float(raw) * 10.0**sf


def _acc_wrap(values: Mapping[str, RawValue], sf_name: str | None, bits: int) -> float | None:
    """An accumulator's modulus in the field's unit: 2**bits x 10**SF (a float32 total has none)."""
    sf = values.get(sf_name) if sf_name else 0
    return float(1 << bits) * 10.0**sf if isinstance(sf, int) else None


@dataclass
class SunSpecData:
    fields: dict[str, FieldValue]
    counter_wrap: dict[str, float]
    missing: list[str]
    ratings: dict[str, float] = field(default_factory=dict)  # field -> the device's rating for it


def interpret(blocks: Mapping[int, Sequence[int]], power_sign: int = 1) -> SunSpecData:
    """Map decoded models to the project's fields; ``power_sign`` flips a meter's/battery's W.

    Each model gives the fields its entry emits; where two models of one device give the same field,
    the first registered wins, and a ``fallback`` model (124 beside 802) only fills what the others left.
    A field a model should give but the device left unimplemented is ``missing``.
    """
    fields: dict[str, FieldValue] = {}
    wrap: dict[str, float] = {}
    ratings: dict[str, float] = {}
    expected: list[str] = []
    missing: list[str] = []
    present = [MODELS[mid] for mid in MODELS if mid in blocks]
    for model in sorted(present, key=lambda m: m.fallback):
        plan = _plan_of(model)
        values = _points(plan, blocks[model.id])
        for rating, point, sf_name in plan.ratings:
            rated = _scaled(values, point, sf_name)
            if rated is not None and rated > 0:
                ratings[rating.field] = max(ratings.get(rating.field, 0.0), rated)
        for emit, point, sf_name, bits in plan.emits:
            if not emit.optional:
                expected.append(emit.field)
            value = _scaled(values, point, sf_name)
            if value is None or emit.field in fields:
                continue
            fields[emit.field] = power_sign * value if emit.signed else value
            if bits is not None:
                modulus = _acc_wrap(values, sf_name, bits)
                if modulus is not None:
                    wrap[emit.field] = modulus
        if model.status is not None:
            told, unknown = model.status(values)
            for name, status in told.items():
                fields.setdefault(name, status)
            missing += unknown
    missing = [name for name in dict.fromkeys(expected) if name not in fields] + missing
    return SunSpecData(fields, wrap, missing, ratings)


def _registers(reads: Sequence[tuple[int, Sequence[int]]], address: int, size: int) -> list[int]:
    """``size`` registers from ``address`` out of the reads (address, registers) that cover them."""
    out: list[int] = []
    at, end = address, address + size
    for start, regs in reads:
        if start <= at < start + len(regs):
            take = min(start + len(regs), end) - at
            out += regs[at - start : at - start + take]
            at += take
            if at == end:
                break
    return out


def _readable_length(model: Model, length: int) -> bool:
    """Whether a block of length ``length`` can be read by the model's table: the table's own length or
    longer.  SunSpec only ever adds points at a model's end (a later revision, a vendor's padding), so
    every point of the table sits where the table says; a shorter block is some other layout."""
    return length >= model.length


class SunSpecDevice:
    """One unit id: scans once (and again after the map proved wrong), then reads its models."""

    def __init__(self, pool: ModbusPool, host: str, port: int, unit_id: int, power_sign: int = 1) -> None:
        self.pool = pool
        self.host = host
        self.port = port
        self.unit_id = unit_id
        self.power_sign = power_sign
        self.layout: SunSpecLayout | None = None
        self._plan: list[tuple[int, int]] = []
        self.max_read = MAX_READ_REGISTERS  # registers per read this unit takes (smaller once it says so)
        self.read_shrinks = 0
        # model id -> (address of its ID register, registers read from it on, its length L): from the ID
        # register to the last point decoded, not the whole model (a float meter's 126 registers need
        # two reads, the 70 decoded one); a model longer than one read is put together from consecutive
        # reads
        self._where: dict[int, tuple[int, int, int]] = {}

    async def ensure_layout(self) -> SunSpecLayout:
        if self.layout is None:
            layout = await scan(self.pool, self.host, self.port, self.unit_id)
            wanted = read_models()
            where = {
                mid: (addr, min(length + 2, max(2, _plan_of(MODELS[mid]).end)), length)
                for mid, (addr, length) in layout.models.items()
                if mid in wanted and _readable_length(MODELS[mid], length)
            }
            if not any(MODELS[mid].emits or MODELS[mid].status for mid in where):
                raise PollError(
                    f"{self.host}:{self.port}/{self.unit_id}: {unsupported(layout)}", "unsupported"
                )
            self._plan = plan_reads(((address, size) for address, size, _ in where.values()), self.max_read)
            self._where = where
            self.layout = layout
        return self.layout

    async def _read_plan(self) -> list[tuple[int, list[int]]]:
        """Every planned read, in order: (address, registers)."""
        reads: list[tuple[int, list[int]]] = []
        for address, count in self._plan:
            reads.append((address, await self.pool.read(self.host, self.port, self.unit_id, address, count)))
        return reads

    def _shrink_reads(self) -> bool:
        """After exception 3 (illegal data value) to a planned read: plan reads of half the largest size
        (never below ``MIN_READ_REGISTERS``), kept for this unit from now on, rescans included.  Devices
        that take fewer than the protocol's 125 registers per read answer a larger one so.  False when
        the reads are already that small (then the exception is the device's to report)."""
        largest = max((count for _, count in self._plan), default=0)
        if largest <= MIN_READ_REGISTERS:
            return False
        self.max_read = max(MIN_READ_REGISTERS, largest // 2)
        self._plan = plan_reads(((address, size) for address, size, _ in self._where.values()), self.max_read)
        self.read_shrinks += 1
        return True

    async def read(self) -> SunSpecData:
        if self.layout is None:
            await self.ensure_layout()
        while True:
            try:
                reads = await self._read_plan()
                break
            except DeviceException as exc:
                if exc.code == 3 and self._shrink_reads():
                    continue  # a read larger than the device takes: asked again in smaller pieces
                if exc.code in _MAP_MOVED:
                    self.layout = None  # registers the scan found are gone (firmware update?): rescan
                raise
        blocks: dict[int, list[int]] = {}
        first, regs0 = reads[0]
        for mid, (address, size, length) in self._where.items():
            if len(reads) == 1:  # the common case: every model in one read
                regs = regs0[address - first : address - first + size]
            else:
                regs = _registers(reads, address, size)
            if len(regs) < 2 or regs[0] != mid or regs[1] != length:
                self.layout = None  # the map moved (firmware update?): rescan next time
                raise MalformedReply(f"{self.host}/{self.unit_id}: model {mid} header changed")
            blocks[mid] = regs
        try:
            return interpret(blocks, self.power_sign)
        except (SunSpecValueError, KeyError) as exc:
            raise MalformedReply(f"{self.host}/{self.unit_id}: {exc}") from exc
