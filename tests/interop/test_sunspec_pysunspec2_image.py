"""Our collector reads SunSpec devices whose register image was built from pysunspec2's own model
definitions (its ``models/json``) and pysunspec2's own point encoders, served by pymodbus' simulator:
integer models with scale factors of +1 to +3 and an unimplemented one, float models 111-113 and
211-214, the "SunS" marker at 40000 and at 0.  The reference for every value is what pysunspec2 itself
reads from the same server, so a layout or scale error on our side cannot hide behind our own tables.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
import sunspec2
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from sunspec2 import mb

from collector.config import CollectorConfig, DeviceConfig
from collector.runner import Collector
from tests.collector.test_collector_profiles import collect
from tests.sunspec_reference import pysunspec2_scan

MODELS_DIR = os.path.join(os.path.dirname(sunspec2.__file__), "models", "json")
INVERTER_STATUS = {"St": 4, "Evt1": 0}  # MPPT, no alarm
FLOAT_INVERTER = {"W": 2345.5, "WH": 1_234_567.0, "Hz": 50.0, **INVERTER_STATUS}
COMMON = {"Mn": "Third Party", "Md": "From JSON", "SN": "X-1", "DA": 1}


def model_registers(model_id: int, values: Mapping[str, Any]) -> list[int]:
    """One model (ID, L and its points) encoded by pysunspec2: given points with its ``to_data``,
    every other point with its "not implemented" value."""
    with open(os.path.join(MODELS_DIR, f"model_{model_id}.json"), encoding="utf-8") as f:
        points = json.load(f)["group"]["points"]
    length = sum(p["size"] for p in points) - 2
    data = b""
    for p in points:
        ptype, size = p["type"], p["size"]
        value = {"ID": model_id, "L": length, **values}.get(p["name"])
        if value is None:
            data += mb.create_unimpl_value(ptype, len=2 * size)
        elif ptype == "string":
            data += mb.point_type_info[ptype][3](value, 2 * size)
        else:
            data += mb.point_type_info[ptype][3](value)
    return list(struct.unpack(f">{len(data) // 2}H", data))


def image(models: list[tuple[int, Mapping[str, Any]]]) -> list[int]:
    regs = [0x5375, 0x6E53]  # "SunS"
    for model_id, values in models:
        regs += model_registers(model_id, values)
    return [*regs, 0xFFFF, 0]


# unit id -> (base address, models with raw point values, category)
UNITS: dict[int, tuple[int, list[tuple[int, dict[str, Any]]], str]] = {
    # scale factors +2 and +3; the frequency's scale factor unimplemented (0x8000): no frequency
    1: (40000, [(1, COMMON), (103, {"W": 45, "W_SF": 2, "WH": 1234, "WH_SF": 3, "Hz": 50, **INVERTER_STATUS}),
                (120, {"DERTyp": 4, "WRtg": 60, "WRtg_SF": 2})], "pv"),
    2: (0, [(1, COMMON), (203, {"W": -81, "W_SF": 1, "TotWhImp": 5678, "TotWhExp": 91, "TotWh_SF": 3,
                                "Hz": 5000, "Hz_SF": -2})], "electricity"),
    3: (40000, [(1, COMMON), (101, {"W": 1500, "W_SF": 0, "WH": 777, "WH_SF": 1, **INVERTER_STATUS})], "pv"),
    4: (40000, [(1, COMMON), (202, {"W": 1200, "W_SF": 0, "TotWhImp": 4000, "TotWhExp": 10, "TotWh_SF": 2})],
        "electricity"),
    **{
        unit: (40000, [(1, COMMON), (mid, FLOAT_INVERTER)], "pv")
        for unit, mid in ((11, 111), (12, 112), (13, 113))
    },
    **{
        unit: (0 if mid == 213 else 40000,
               [(1, COMMON), (mid, {"W": -812.25, "TotWhImp": 98_765.0, "TotWhExp": 4_321.0, "Hz": 60.0})],
               "electricity")
        for unit, mid in ((21, 211), (22, 212), (23, 213), (24, 214))
    },
}  # fmt: skip


@pytest.fixture
async def third_party() -> AsyncIterator[int]:
    devices = [
        SimDevice(
            id=unit,
            simdata=[SimData(address=base, count=len(regs), values=regs, datatype=DataType.REGISTERS)],
        )
        for unit, (base, models, _) in UNITS.items()
        for regs in [image(models)]
    ]
    server = ModbusTcpServer(devices, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port: int = server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield port
    await server.shutdown()


async def test_our_collector_reads_what_pysunspec2_reads(third_party: int) -> None:
    port = third_party
    devices = tuple(
        DeviceConfig(
            "hh-third-party", f"unit{unit}", category, "modbus", "127.0.0.1", port, 0.3, 0.3, unit_id=unit
        )
        for unit, (_, _, category) in UNITS.items()
    )
    collector = Collector(CollectorConfig(devices, timeout_s=1.0))
    readings = await collect(collector, 1.0)
    references = await asyncio.gather(*(asyncio.to_thread(pysunspec2_scan, port, unit) for unit in UNITS))
    for (unit, (_, models, category)), reference in zip(UNITS.items(), references, strict=True):
        key = f"hh-third-party/unit{unit}"
        assert collector.health()[key].reason == "ok", (key, collector.health()[key])
        fields: dict[str, Any] = {}
        for r in readings:
            if r.device == f"unit{unit}":
                fields.update(r.fields)
        main_model = models[1][0]
        ref = reference[main_model]
        assert fields["power_w"] == pytest.approx(ref["W"]), (unit, fields, ref["W"])
        if category == "pv":
            assert fields["energy_wh_total"] == pytest.approx(ref["WH"])
            assert fields["running"] is True and fields["fault"] is False
        else:
            assert fields["import_wh_total"] == pytest.approx(ref["TotWhImp"])
            assert fields["export_wh_total"] == pytest.approx(ref["TotWhExp"])
        if ref.get("Hz") is None or ("Hz_SF" in ref and ref["Hz_SF"] is None):
            # no frequency, or one whose scale factor is unimplemented: no value (pysunspec2 gives the
            # raw number there; a collector cannot know its scale, so it stores nothing rather than 50 Hz
            # that might be 0.5 Hz)
            assert "frequency_hz" not in fields
        else:
            assert fields["frequency_hz"] == pytest.approx(ref["Hz"])
    # the scaled values are the ones the image says: raw x 10**SF
    assert references[0][103]["W"] == 4500 and references[0][103]["WH"] == 1_234_000
    assert references[0][120]["WRtg"] == 6000
