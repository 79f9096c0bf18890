"""SunSpec devices that mark values as "not there" in ways the standard's tables do not list, and Modbus
servers that behave like real ones, each read by the collector from a real pymodbus server (or, where
pymodbus cannot show the behaviour, a real TCP server written here and named as such)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from collector.config import CollectorConfig, DeviceConfig
from collector.reading import Reading
from collector.runner import Collector
from devices.sunspec.image import RegisterMap
from protocols.sunspec.models import MODELS
from protocols.sunspec.points import BASE_ADDRESS
from tests.collector.test_collector_profiles import collect


def meter_image(**raw: list[int]) -> list[int]:
    """A 203 meter behind a common model: W = 500 W, scale factors 0, the given points' raw registers."""
    image = RegisterMap([1, 203])
    for sf in ("W_SF", "TotWh_SF", "A_SF", "V_SF", "Hz_SF"):
        image.set_static(203, sf, 0)
    image.set_static(203, "W", 500)
    for name, registers in raw.items():
        slot = image.slot(203, name)
        image.registers[slot.index : slot.index + len(registers)] = registers
    return image.registers


@pytest.fixture
async def modbus_units() -> AsyncIterator[Callable[..., Any]]:
    """A real pymodbus server serving one register image per unit id, on a port the kernel picks."""
    servers: list[ModbusTcpServer] = []

    async def serve(units: dict[int, list[int]]) -> int:
        devices = [
            SimDevice(
                id=unit,
                simdata=[
                    SimData(address=BASE_ADDRESS, count=len(regs), values=regs, datatype=DataType.REGISTERS)
                ],
            )
            for unit, regs in units.items()
        ]
        server = ModbusTcpServer(devices, address=("127.0.0.1", 0))
        await server.serve_forever(background=True)
        servers.append(server)
        port: int = server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return port

    yield serve
    for server in servers:
        await server.shutdown()


def config(port: int, unit_id: int = 1) -> CollectorConfig:
    dev = DeviceConfig("h1", "meter", "electricity", "modbus", "127.0.0.1", port, 0.2, 0.2, unit_id=unit_id)
    return CollectorConfig((dev,), timeout_s=0.5, backoff_base_s=0.2, backoff_max_s=0.2, health_interval_s=0)


def fields_of(readings: list[Reading]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in readings:
        out.update(r.fields)
    return out


async def test_an_accumulator_of_all_ones_is_not_a_number(modbus_units: Callable[..., Any]) -> None:
    """Many meters mark an accumulator they do not keep with all ones (0xFFFFFFFF), not the standard's 0.
    Read as a number it is a counter of 4.29 GWh, and the next real value looks like a wrap; it must be
    missing instead (before: stored as 4294967295 Wh)."""
    port = await modbus_units({1: meter_image(TotWhImp=[0xFFFF, 0xFFFF], TotWhExp=[0, 1234])})
    collector = Collector(config(port))
    readings = await collect(collector, 0.6)
    fields = fields_of(readings)
    assert fields.get("power_w") == 500 and fields.get("export_wh_total") == 1234
    assert "import_wh_total" not in fields, fields
    health = collector.health()["h1/meter"]
    assert health.reason == "partial" and "import_wh_total" in health.message, health


def test_the_emulator_never_writes_an_accumulator_of_all_ones() -> None:
    """The emulated devices clamp a counter below the all-ones mark, so what they serve always reads."""
    image = RegisterMap([1, 203])
    image.set_static(203, "TotWh_SF", 0)
    slot = image.slot(203, "TotWhImp")
    image.write(image.registers, slot, float(1 << 40))
    assert image.registers[slot.index : slot.index + 2] == [0xFFFF, 0xFFFE]
    assert MODELS[203].point("TotWhImp").type == "acc32"


class OneAnswerServer:
    """A Modbus TCP server written here (pymodbus' cannot do this): it answers one read of holding
    registers from ``registers`` (at BASE_ADDRESS) per connection and then closes it, as devices that
    take one request per session do; with ``close_before`` it closes on the second request instead of
    answering it (an idle timeout that strikes as the next request arrives); with ``keep_open`` it
    answers every request (its ``registers`` may be swapped meanwhile, as a firmware update does).
    A read outside the registers gets exception 2 (illegal data address), one of more than ``max_count``
    registers exception 3 (illegal data value), as devices that read fewer than 125 at once answer."""

    def __init__(
        self,
        registers: list[int],
        *,
        close_before: bool = False,
        keep_open: bool = False,
        max_count: int = 125,
    ) -> None:
        self.registers = registers
        self.max_count = max_count
        self.counts: list[int] = []
        self.close_before = close_before
        self.keep_open = keep_open
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            answered = 0
            while True:
                request = await reader.readexactly(12)
                if answered and self.close_before and not self.keep_open:
                    break
                tid, _, _, unit, function, address, count = struct.unpack(">HHHBBHH", request)
                regs = self.registers[address - BASE_ADDRESS : address - BASE_ADDRESS + count]
                self.counts.append(count)
                if count > self.max_count:  # more than this device reads at once: illegal data value
                    writer.write(struct.pack(">HHHBBB", tid, 0, 3, unit, function | 0x80, 3))
                elif function != 3 or address < BASE_ADDRESS or len(regs) != count:
                    writer.write(struct.pack(">HHHBBB", tid, 0, 3, unit, function | 0x80, 2))
                else:
                    body = struct.pack(f">BB{count}H", 3, 2 * count, *regs)
                    writer.write(struct.pack(">HHHB", tid, 0, 1 + len(body), unit) + body)
                await writer.drain()
                answered += 1
                if not (self.close_before or self.keep_open):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.mark.parametrize("close_before", [False, True], ids=["after_each_answer", "on_the_next_request"])
async def test_a_device_closing_its_connection_between_reads_is_read(close_before: bool) -> None:
    """Reads are idempotent, so a read the device closed the connection on without answering is asked
    again on a new connection; the device is read every poll and healthy."""
    server = OneAnswerServer(meter_image(TotWhImp=[0, 99], TotWhExp=[0, 1234]), close_before=close_before)
    port = await server.start()
    try:
        collector = Collector(config(port))
        readings = await collect(collector, 1.0)
    finally:
        await server.stop()
    fields = fields_of(readings)
    assert fields.get("import_wh_total") == 99 and fields.get("power_w") == 500
    health = collector.health()["h1/meter"]
    assert health.reason == "ok", health
    assert len([r for r in readings if r.device == "meter"]) >= 3


def longer(registers: list[int], model_id: int, extra: int) -> list[int]:
    """The image with ``extra`` registers appended to model ``model_id`` and its L raised to match, as a
    later revision of a model (points added at its end) or a vendor's padding gives."""
    at = 2
    while registers[at] != model_id:
        at += 2 + registers[at + 1]
    end = at + 2 + registers[at + 1]
    out = [*registers[:end], *([0x1234] * extra), *registers[end:]]
    out[at + 1] += extra
    return out


async def test_a_model_longer_than_its_table_is_read_by_its_table(modbus_units: Callable[..., Any]) -> None:
    """A meter's 203 block has L = 109 where the table's is 105: SunSpec only ever adds points at a
    model's end, so every point the collector decodes sits where the table says and the model is read
    (before: refused as 'unsupported model 203 (L=109...)').  A shorter block stays unsupported."""
    image = longer(meter_image(TotWhImp=[0, 99], TotWhExp=[0, 1234]), 203, 4)
    port = await modbus_units({1: image})
    collector = Collector(config(port))
    readings = await collect(collector, 0.6)
    fields = fields_of(readings)
    assert fields.get("power_w") == 500 and fields.get("import_wh_total") == 99, collector.health()
    assert collector.health()["h1/meter"].reason == "ok", collector.health()


async def test_a_map_that_moved_away_is_scanned_again() -> None:
    """After a firmware update the device's map is shorter (no common model): the reads planned from the
    old map now ask for registers past its end and get exception 2 (illegal data address).  The map is
    scanned again and the meter read where it now is (before: the old plan was kept, every poll failed
    with exception:2, forever)."""
    before = meter_image(TotWhImp=[0, 99], TotWhExp=[0, 1234])
    common_end = 2 + 2 + MODELS[1].length
    after = [*before[:2], *before[common_end:]]  # "SunS", then 203 and the end marker
    server = OneAnswerServer(before, keep_open=True)
    port = await server.start()
    try:
        collector = Collector(config(port))
        await collector.start()
        readings: list[Reading] = []

        async def consume() -> None:
            async for r in collector.readings():
                readings.append(r)

        task = asyncio.get_running_loop().create_task(consume())
        await asyncio.sleep(0.5)
        assert collector.health()["h1/meter"].reason == "ok", collector.health()
        server.registers = after
        await asyncio.sleep(0.3)
        readings.clear()
        await asyncio.sleep(1.0)
        await collector.stop()
        await task
    finally:
        await server.stop()
    assert collector.health()["h1/meter"].reason == "ok", collector.health()
    assert fields_of([r for r in readings if r.device == "meter"]).get("import_wh_total") == 99


async def test_sentinels_and_unimplemented_scale_factors_are_missing(
    modbus_units: Callable[..., Any],
) -> None:
    """Found sound, kept as coverage: a power whose scale factor is not implemented (0x8000), an import
    counter at the standard's acc32 sentinel (0) and an export counter whose value is fine are read as
    missing, missing and a number; nothing unimplemented becomes a number or a zero."""
    image = meter_image(W_SF=[0x8000], TotWhImp=[0, 0], TotWhExp=[0, 1234])
    port = await modbus_units({1: image})
    collector = Collector(config(port))
    readings = await collect(collector, 0.6)
    fields = fields_of(readings)
    assert fields == {"export_wh_total": 1234.0}, fields
    health = collector.health()["h1/meter"]
    assert health.reason == "partial" and "power_w" in health.message and "import_wh_total" in health.message


async def test_a_device_reading_fewer_registers_at_once_is_read_in_smaller_reads() -> None:
    """The device takes at most 40 registers per read and answers a larger one with exception 3 (illegal
    data value): the collector learns to read it in smaller pieces and keeps doing so (before: every
    poll asked for the same large read and failed with exception:3, forever)."""
    server = OneAnswerServer(meter_image(TotWhImp=[0, 99], TotWhExp=[0, 1234]), keep_open=True, max_count=40)
    port = await server.start()
    try:
        collector = Collector(config(port))
        readings = await collect(collector, 1.0)
    finally:
        await server.stop()
    assert collector.health()["h1/meter"].reason == "ok", collector.health()
    assert fields_of(readings).get("import_wh_total") == 99
    assert len(readings) >= 3
    assert sum(1 for n in server.counts if n > 40) == 1  # learned once, kept
