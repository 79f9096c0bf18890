"""SunSpec devices that mark values as "not there" in ways the standard's tables do not list, and Modbus
servers that behave like real ones, each read by the collector from a real pymodbus server (or, where
pymodbus cannot show the behaviour, a real TCP server written here and named as such)."""

from __future__ import annotations

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
