"""SunSpec over Modbus TCP with pymodbus' async client: find the map, walk the models, read them.

Why one connection per host:port: a home's hybrid PCS answers all its unit ids on one listener and
many devices limit concurrent TCP sessions, so unit ids share the connection and are chosen per
request (as evcc and OpenEMS do).  pymodbus serializes requests on a client, so the three devices
of a home take turns; devices of different homes never wait for each other.

Values leave this module already scaled (``raw * 10**SF``); a point holding its type's "not
implemented" sentinel, or whose scale factor does, becomes missing, never zero.  Which models are read
and which fields come from which points is each model's entry (``protocols.sunspec.models``): a newly
registered model is read with no change here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from collector.errors import DeviceException, DeviceTimeout, DeviceUnreachable, MalformedReply, PollError
from collector.reading import FieldValue
from common.logs import quiet_pymodbus
from protocols.sunspec.models import MODELS, Model
from protocols.sunspec.points import (
    END_MODEL_ID,
    MAX_READ_REGISTERS,
    SUNS_MARKER,
    RawValue,
    SunSpecValueError,
    decode,
)

SCAN_BASES: tuple[int, ...] = (40000, 0, 50000)

# The collector reports each device failure once, in its health table.
quiet_pymodbus()


def read_models() -> frozenset[int]:
    """The registered models this collector reads something from (now: a model registered later counts)."""
    return frozenset(m.id for m in MODELS.values() if m.emits or m.status is not None or m.ratings)


class ModbusPool:
    """One pymodbus client per host:port, connected lazily and reconnected after a failure."""

    def __init__(self, timeout_s: float = 1.0) -> None:
        self.timeout_s = timeout_s
        self._clients: dict[tuple[str, int], AsyncModbusTcpClient] = {}
        self._connecting: dict[tuple[str, int], asyncio.Lock] = {}
        self._bad_frame: set[tuple[str, int]] = set()

    async def client(self, host: str, port: int) -> AsyncModbusTcpClient:
        key = (host, port)
        client = self._clients.get(key)
        if client is not None and client.connected:
            return client  # the common case: no lock
        lock = self._connecting.get(key)
        if lock is None:
            lock = self._connecting[key] = asyncio.Lock()
        async with lock:
            client = self._clients.get(key)  # another task may have connected meanwhile
            if client is not None and client.connected:
                return client
            if client is not None:
                client.close()
            client = AsyncModbusTcpClient(
                host,
                port=port,
                timeout=self.timeout_s,
                retries=0,
                reconnect_delay=0,
                reconnect_delay_max=0,
                trace_packet=self._tracer(key),
            )
            self._clients[key] = client
            try:
                ok = await client.connect()
            except (OSError, ModbusException) as exc:
                raise DeviceUnreachable(f"{host}:{port}: {exc}") from exc
            if not ok:
                raise DeviceUnreachable(f"{host}:{port}: connection refused or timed out")
            return client

    def _tracer(self, key: tuple[str, int]) -> Callable[[bool, bytes], bytes]:
        """pymodbus drops a frame it cannot decode and lets the request time out; this hook sees the
        bytes first, so such a timeout can be reported as what it was: a malformed reply."""

        def trace(sending: bool, data: bytes) -> bytes:
            if not sending and len(data) >= 9 and data[7] < 0x80:
                declared = (data[4] << 8 | data[5]) - 3  # MBAP length minus unit id, FC and byte count
                if data[8] != declared:
                    self._bad_frame.add(key)
            return data

        return trace

    def drop(self, host: str, port: int) -> None:
        """Forget a connection whose stream may be out of step (after a timeout or a bad frame)."""
        client = self._clients.pop((host, port), None)
        if client is not None:
            client.close()

    async def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        await asyncio.sleep(0)

    async def read(self, host: str, port: int, unit_id: int, address: int, count: int) -> list[int]:
        """Holding registers, or a PollError whose reason the health view can show.

        Units share the connection, so a request may have queued behind another unit's failure
        that closed it; such a request is retried once on a fresh connection instead of taking the
        blame (only the request that was on the wire when it broke reports the failure).
        """
        key = (host, port)
        for attempt in (0, 1):
            client = await self.client(host, port)
            try:
                rr = await client.read_holding_registers(address, count=count, device_id=unit_id)
            except ModbusException as exc:
                if key in self._bad_frame:
                    # pymodbus could not decode our answer and closed the stream itself
                    self._bad_frame.discard(key)
                    self.drop(host, port)
                    raise MalformedReply(f"{host}:{port}/{unit_id} @{address}: undecodable reply") from exc
                broken_by_other = self._clients.get(key) is not client or not client.connected
                if broken_by_other and attempt == 0:
                    continue
                if isinstance(exc, ConnectionException) or not client.connected:
                    self.drop(host, port)
                    raise DeviceUnreachable(f"{host}:{port}/{unit_id}: {exc}") from exc
                if isinstance(exc, ModbusIOException):
                    # No (complete) answer in time.  The connection stays: pymodbus discards any
                    # leftover bytes before the next request and checks transaction ids.
                    raise DeviceTimeout(f"{host}:{port}/{unit_id} @{address}: no answer") from exc
                self.drop(host, port)
                raise MalformedReply(f"{host}:{port}/{unit_id} @{address}: {exc}") from exc
            if rr.isError():
                code = getattr(rr, "exception_code", 0)
                raise DeviceException(f"{host}:{port}/{unit_id} @{address}: exception {code}", int(code))
            regs = list(rr.registers)
            if len(regs) != count:
                raise MalformedReply(
                    f"{host}:{port}/{unit_id} @{address}: {len(regs)} registers, asked {count}"
                )
            return regs
        raise DeviceUnreachable(f"{host}:{port}/{unit_id}: connection lost twice")  # pragma: no cover


@dataclass
class SunSpecLayout:
    """Where each model of one device sits (address of its ID register, length L)."""

    base: int
    models: dict[int, tuple[int, int]] = field(default_factory=dict)


def plan_reads(blocks: Iterable[tuple[int, int]], limit: int = MAX_READ_REGISTERS) -> list[tuple[int, int]]:
    """(address, count) requests covering every (address, size) block: neighbours are merged while
    the request stays within ``limit`` registers, a block larger than ``limit`` is split."""
    requests: list[tuple[int, int]] = []
    for address, size in sorted(blocks):
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
        elif model.length != length:
            parts.append(f"unsupported model {mid} (L={length}; the standard's is {model.length})")
    listed = ", ".join(str(m) for m in layout.models) or "none"
    return "; ".join(parts) or f"its models ({listed}) carry nothing this collector reads"


def _points(model: Model, regs: Sequence[int]) -> dict[str, RawValue]:
    out: dict[str, RawValue] = {}
    for name in model.read_points:
        p = model.point(name)
        out[name] = decode(p, regs[p.offset : p.offset + p.size])
    return out


def _scaled(values: Mapping[str, RawValue], model: Model, name: str) -> float | None:
    raw = values.get(name)
    if raw is None or isinstance(raw, str):
        return None
    sf_name = model.point(name).sf
    if sf_name is None:
        return float(raw)
    sf = values.get(sf_name)
    if not isinstance(sf, int) or not -10 <= sf <= 10:
        return None
    return float(raw) * 10.0**sf


def _acc_wrap(values: Mapping[str, RawValue], model: Model, name: str) -> float | None:
    """An accumulator's modulus in the field's unit: 2**bits x 10**SF (a float32 total has none)."""
    point = model.point(name)
    if not point.type.startswith("acc"):
        return None
    sf = values.get(point.sf) if point.sf else 0
    return float(1 << (16 * point.size)) * 10.0**sf if isinstance(sf, int) else None


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
        values = _points(model, blocks[model.id])
        for rating in model.ratings:
            rated = _scaled(values, model, rating.point)
            if rated is not None and rated > 0:
                ratings[rating.field] = max(ratings.get(rating.field, 0.0), rated)
        for emit in model.emits:
            if not emit.optional:
                expected.append(emit.field)
            value = _scaled(values, model, emit.point)
            if value is None or emit.field in fields:
                continue
            fields[emit.field] = power_sign * value if emit.signed else value
            if emit.counter:
                modulus = _acc_wrap(values, model, emit.point)
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
        # model id -> (address of its ID register, registers it occupies); a model longer than one read
        # (a float meter, 126 registers) is put together from consecutive reads
        self._where: dict[int, tuple[int, int]] = {}

    async def ensure_layout(self) -> SunSpecLayout:
        if self.layout is None:
            layout = await scan(self.pool, self.host, self.port, self.unit_id)
            wanted = read_models()
            where = {
                mid: (addr, length + 2)
                for mid, (addr, length) in layout.models.items()
                if mid in wanted and MODELS[mid].length == length
            }
            if not any(MODELS[mid].emits or MODELS[mid].status for mid in where):
                raise PollError(
                    f"{self.host}:{self.port}/{self.unit_id}: {unsupported(layout)}", "unsupported"
                )
            self._plan = plan_reads(where.values())
            self._where = where
            self.layout = layout
        return self.layout

    async def read(self) -> SunSpecData:
        await self.ensure_layout()
        reads = [
            (address, await self.pool.read(self.host, self.port, self.unit_id, address, count))
            for address, count in self._plan
        ]
        blocks: dict[int, list[int]] = {}
        for mid, (address, size) in self._where.items():
            regs = _registers(reads, address, size)
            if regs[0] != mid or regs[1] != size - 2:
                self.layout = None  # the map moved (firmware update?): rescan next time
                raise MalformedReply(f"{self.host}/{self.unit_id}: model {mid} header changed")
            blocks[mid] = regs
        try:
            return interpret(blocks, self.power_sign)
        except (SunSpecValueError, KeyError) as exc:
            raise MalformedReply(f"{self.host}/{self.unit_id}: {exc}") from exc
