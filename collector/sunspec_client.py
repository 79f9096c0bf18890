"""SunSpec over Modbus TCP with pymodbus' async client: find the map, walk the models, read them.

Why one connection per host:port: a home's hybrid PCS answers all its unit ids on one listener and
many devices limit concurrent TCP sessions, so unit ids share the connection and are chosen per
request (as evcc and OpenEMS do).  pymodbus serializes requests on a client, so the three devices
of a home take turns; devices of different homes never wait for each other.

Values leave this module already scaled (``raw * 10**SF``); a point holding its type's "not
implemented" sentinel, or whose scale factor does, becomes missing, never zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from collector.errors import DeviceException, DeviceTimeout, DeviceUnreachable, MalformedReply, PollError
from collector.reading import FieldValue
from devices.sunspec.models import (
    CHA_ST,
    END_MODEL_ID,
    INVERTER_ST,
    MAX_READ_REGISTERS,
    MODELS,
    SUNS_MARKER,
    Model,
    SunSpecValueError,
    decode,
)

SCAN_BASES: tuple[int, ...] = (40000, 0, 50000)
INTERESTING_MODELS = frozenset({103, 101, 201, 203, 124, 802})
_ST_NAMES = {v: k.lower() for k, v in INVERTER_ST.items()}
_CHA_NAMES = {v: k.lower() for k, v in CHA_ST.items()}
_RUNNING_ST = frozenset({INVERTER_ST["MPPT"], INVERTER_ST["THROTTLED"], INVERTER_ST["STARTING"]})
_BATTERY_FAULT_STATE = 99

# pymodbus logs every timeout and refused connection at ERROR; the collector reports each device
# failure once, in its health table.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


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


# The points each model is read for (decoding only these keeps a poll cheap: a 203 block has 105).
USED_POINTS: dict[int, tuple[str, ...]] = {
    101: ("W", "W_SF", "WH", "WH_SF", "Hz", "Hz_SF", "St", "Evt1"),
    103: ("W", "W_SF", "WH", "WH_SF", "Hz", "Hz_SF", "St", "Evt1"),
    201: ("W", "W_SF", "TotWhImp", "TotWhExp", "TotWh_SF", "Hz", "Hz_SF"),
    203: ("W", "W_SF", "TotWhImp", "TotWhExp", "TotWh_SF", "Hz", "Hz_SF"),
    124: ("ChaState", "ChaState_SF", "ChaSt"),
    802: ("SoC", "SoC_SF", "W", "W_SF", "State", "ChaSt", "Evt1"),
}


def _points(model: Model, regs: Sequence[int]) -> dict[str, int | float | str | None]:
    out: dict[str, int | float | str | None] = {}
    for name in USED_POINTS[model.id]:
        p = model.point(name)
        out[name] = decode(p, regs[p.offset : p.offset + p.size])
    return out


def _scaled(values: dict[str, int | float | str | None], model: Model, name: str) -> float | None:
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


@dataclass
class SunSpecData:
    fields: dict[str, FieldValue]
    counter_wrap: dict[str, float]
    missing: list[str]


def interpret(blocks: Mapping[int, Sequence[int]], power_sign: int = 1) -> SunSpecData:
    """Map decoded models to the project's fields; ``power_sign`` flips a meter's/battery's W."""
    fields: dict[str, FieldValue] = {}
    wrap: dict[str, float] = {}
    missing: list[str] = []

    def put(name: str, value: FieldValue | None) -> None:
        if value is None:
            missing.append(name)
        else:
            fields[name] = value

    def acc_wrap(
        model: Model, values: dict[str, int | float | str | None], point: str, sf: str
    ) -> float | None:
        s = values.get(sf)
        size = model.point(point).size
        return float(1 << (16 * size)) * 10.0**s if isinstance(s, int) else None

    for model_id in (103, 101):
        if model_id in blocks:
            m = MODELS[model_id]
            v = _points(m, blocks[model_id])
            put("power_w", _scaled(v, m, "W"))
            put("energy_wh_total", _scaled(v, m, "WH"))
            if "energy_wh_total" in fields:
                w = acc_wrap(m, v, "WH", "WH_SF")
                if w is not None:
                    wrap["energy_wh_total"] = w
            hz = _scaled(v, m, "Hz")
            if hz is not None:
                fields["frequency_hz"] = hz
            st, evt1 = v.get("St"), v.get("Evt1")
            if isinstance(st, int):
                fields["running"] = st in _RUNNING_ST
                fields["state"] = _ST_NAMES.get(st, str(st))
            if isinstance(st, int) or isinstance(evt1, int):
                fields["fault"] = st == INVERTER_ST["FAULT"] or (isinstance(evt1, int) and evt1 != 0)
            else:
                missing.append("fault")
    for model_id in (203, 201):
        if model_id in blocks:
            m = MODELS[model_id]
            v = _points(m, blocks[model_id])
            w = _scaled(v, m, "W")
            put("power_w", None if w is None else power_sign * w)
            put("import_wh_total", _scaled(v, m, "TotWhImp"))
            put("export_wh_total", _scaled(v, m, "TotWhExp"))
            for name, point in (("import_wh_total", "TotWhImp"), ("export_wh_total", "TotWhExp")):
                ww = acc_wrap(m, v, point, "TotWh_SF")
                if name in fields and ww is not None:
                    wrap[name] = ww
            hz = _scaled(v, m, "Hz")
            if hz is not None:
                fields["frequency_hz"] = hz
    if 802 in blocks:
        m = MODELS[802]
        v = _points(m, blocks[802])
        put("soc_pct", _scaled(v, m, "SoC"))
        w = _scaled(v, m, "W")
        put("power_w", None if w is None else power_sign * w)
        state, cha = v.get("State"), v.get("ChaSt")
        if isinstance(cha, int):
            fields["state"] = _CHA_NAMES.get(cha, str(cha))
        evt1 = v.get("Evt1")
        if isinstance(state, int) or isinstance(evt1, int):
            fields["fault"] = state == _BATTERY_FAULT_STATE or (isinstance(evt1, int) and evt1 != 0)
    if 124 in blocks:
        m = MODELS[124]
        v = _points(m, blocks[124])
        if "soc_pct" not in fields:
            soc = _scaled(v, m, "ChaState")
            if soc is not None:
                fields["soc_pct"] = soc
                with contextlib.suppress(ValueError):
                    missing.remove("soc_pct")
        cha = v.get("ChaSt")
        if "state" not in fields and isinstance(cha, int):
            fields["state"] = _CHA_NAMES.get(cha, str(cha))
    return SunSpecData(fields, wrap, missing)


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
        # model id -> (index of the planned read holding it, its offset there, its size)
        self._where: dict[int, tuple[int, int, int]] = {}

    async def ensure_layout(self) -> SunSpecLayout:
        if self.layout is None:
            layout = await scan(self.pool, self.host, self.port, self.unit_id)
            blocks = [
                (addr, length + 2)
                for mid, (addr, length) in layout.models.items()
                if mid in INTERESTING_MODELS and mid in MODELS and MODELS[mid].length == length
            ]
            if not blocks:
                raise MalformedReply(f"{self.host}:{self.port}/{self.unit_id}: no model this collector reads")
            self._plan = plan_reads(blocks)
            self._where = {}
            for mid, (addr, length) in layout.models.items():
                for i, (start, count) in enumerate(self._plan):
                    if start <= addr and addr + length + 2 <= start + count:
                        self._where[mid] = (i, addr - start, length + 2)
            self.layout = layout
        return self.layout

    async def read(self) -> SunSpecData:
        await self.ensure_layout()
        reads = [
            await self.pool.read(self.host, self.port, self.unit_id, address, count)
            for address, count in self._plan
        ]
        blocks: dict[int, list[int]] = {}
        for mid, (i, offset, size) in self._where.items():
            regs = reads[i][offset : offset + size]
            if regs[0] != mid or regs[1] != size - 2:
                self.layout = None  # the map moved (firmware update?): rescan next time
                raise MalformedReply(f"{self.host}/{self.unit_id}: model {mid} header changed")
            blocks[mid] = regs
        try:
            return interpret(blocks, self.power_sign)
        except (SunSpecValueError, KeyError) as exc:
            raise MalformedReply(f"{self.host}/{self.unit_id}: {exc}") from exc
