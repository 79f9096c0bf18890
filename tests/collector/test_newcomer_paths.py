"""README's two newcomer paths, end to end: a class or model written as one module and registered is
served by the emulated homes and read by the collector, over real UDP and a real pymodbus server, with
no change to either.  The class and the model live in this folder (``example_class``,
``example_model``) and are registered only inside the test."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from collector.reading import Reading
from collector.runner import Collector
from devices.echonet.classes import DEVICE_KINDS
from devices.fleet import Fleet
from devices.sunspec.image import ModbusDeviceSpec
from devices.sunspec.server import MODBUS_DEVICES
from protocols.echonet.classes import CLASSES
from protocols.sunspec.models import MODELS
from seeds.vocabulary import STATUS_CATEGORY
from tests.collector.conftest import QUIET, config_for
from tests.collector.example_class import DISTRIBUTION_BOARD
from tests.collector.example_model import WALLBOX, WALLBOX_MODEL_ID

EVENING_JST = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)  # 21:00 in Tokyo: cars are plugged in


async def _latest(collector: Collector, device: str, seconds: float = 0.9) -> dict[str, Reading]:
    """Per household, the poll-time readings of ``device`` merged (counters come on their own interval)."""
    latest: dict[str, Reading] = {}
    await collector.start()

    async def consume() -> None:
        async for r in collector.readings():
            if r.category == STATUS_CATEGORY:
                continue  # the device's health, not its reading (see test_collector_faults)
            if r.device == device and r.ts_utc > datetime.now(UTC) - timedelta(minutes=5):
                old = latest.get(r.household)
                if old is not None:
                    r = replace(
                        r,
                        fields={**old.fields, **r.fields},
                        counter_wrap={**old.counter_wrap, **r.counter_wrap},
                    )
                latest[r.household] = r

    task = asyncio.get_running_loop().create_task(consume())
    await asyncio.sleep(seconds)
    await collector.stop()
    await task
    return latest


async def test_a_registered_echonet_class_is_served_and_read(fleet_factory: Callable[..., Any]) -> None:
    shipped = set(CLASSES)
    with CLASSES.temporarily(DISTRIBUTION_BOARD):
        fleet: Fleet = await fleet_factory(2)
        objects = fleet.manifest()["homes"][0]["echonet"]["objects"]
        assert {"device": "distribution_board", "eoj": "028701", "category": "electricity"} in objects
        collector = Collector(config_for(fleet))
        latest = await _latest(collector, "distribution_board")
        health = collector.health()
    assert set(CLASSES) == shipped and "distribution_board" not in DEVICE_KINDS  # nothing leaked
    assert set(latest) == {h.household_id for h in fleet.homes}
    for home in fleet.homes:
        st = home.household.state()  # the clock is frozen: the instant every read saw
        r = latest[home.household_id]
        assert r.fields == {
            "power_w": round(st.grid_w),
            "import_wh_total": float(int(st.grid_import_wh_total) % 10**9),
        }
        assert r.counter_wrap == {"import_wh_total": 1e9}
        assert (r.category, r.source, r.quality) == ("electricity", "echonet", "ok")
        assert health[f"{home.household_id}/distribution_board"].reason == "ok"


async def test_a_registered_sunspec_model_is_served_and_read(fleet_factory: Callable[..., Any]) -> None:
    wallbox = ModbusDeviceSpec("wallbox", 4, (1, WALLBOX_MODEL_ID), "ev")
    with MODELS.temporarily(WALLBOX):
        fleet: Fleet = await fleet_factory(
            2,
            start=EVENING_JST,
            echonet_options=QUIET,
            modbus_options={"devices": (*MODBUS_DEVICES, wallbox)},
        )
        listed = fleet.manifest()["homes"][0]["modbus"]["devices"]
        assert {
            "device": "wallbox",
            "unit_id": 4,
            "models": [1, WALLBOX_MODEL_ID],
            "category": "ev",
        } in listed
        collector = Collector(config_for(fleet))
        latest = await _latest(collector, "wallbox")
        health = collector.health()
    assert WALLBOX_MODEL_ID not in MODELS  # nothing leaked
    assert set(latest) == {h.household_id for h in fleet.homes}
    for home in fleet.homes:
        st = home.household.state()
        r = latest[home.household_id]
        assert r.fields == {
            "power_w": float(round(st.ev_w if st.ev_connected else 0.0)),
            "charge_wh_total": float(round(st.ev_charge_wh_total)) or 1.0,  # 0 is SunSpec's "not implemented"
            "discharge_wh_total": float(round(st.ev_discharge_wh_total)) or 1.0,
        }
        assert r.counter_wrap == {"charge_wh_total": 2.0**32, "discharge_wh_total": 2.0**32}
        assert (r.category, r.source, r.quality) == ("ev", "modbus", "ok")
        assert health[f"{home.household_id}/wallbox"].reason == "ok"
