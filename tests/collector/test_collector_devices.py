"""Every device class and field, read over real sockets from emulated homes, against the household's
own state at the same (frozen) simulated instant."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from collector.reading import FIELD_UNITS, Reading
from collector.runner import Collector
from devices.fleet import Fleet
from devices.state import HomeState
from seeds.vocabulary import STATUS_CATEGORY
from tests.collector.conftest import config_for, wall_half_hour

EVENING_JST = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)  # 21:00 in Tokyo: car plugged in, fuel cell on
NOON_JST = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


async def one_round(
    collector: Collector, seconds: float = 0.7, stamped: list[Reading] | None = None
) -> dict[str, Reading]:
    """Poll for a while; per device, the latest poll-time reading (not the meter's stamped ones) with
    the fields of earlier polls merged in (counters are read on their own, slower, interval)."""
    latest: dict[str, Reading] = {}
    await collector.start()

    async def consume() -> None:
        async for r in collector.readings():
            if r.category == STATUS_CATEGORY:
                continue  # device health, checked in test_collector_faults
            if r.ts_utc <= datetime.now(UTC) - timedelta(minutes=5):
                if stamped is not None:
                    stamped.append(r)
            else:
                key = f"{r.household}/{r.device}"
                old = latest.get(key)
                fields = {**old.fields, **r.fields} if old else r.fields
                wrap = {**old.counter_wrap, **r.counter_wrap} if old else r.counter_wrap
                latest[key] = replace(r, fields=fields, counter_wrap=wrap)

    task = asyncio.get_running_loop().create_task(consume())
    await asyncio.sleep(seconds)
    await collector.stop()
    await task
    return latest


def expected(device: str, st: HomeState) -> dict[str, Any]:
    meter_count = lambda wh: (int(wh / 100.0 + 1e-9) % 10**6) * 100.0  # noqa: E731 - unit 0.1 kWh, 6 digits
    battery_state = "charging" if st.battery_w > 1 else "discharging" if st.battery_w < -1 else "standby"
    ev: dict[str, Any] = {
        "power_w": round(st.ev_w) if st.ev_connected else 0,
        "connected": st.ev_connected,
        "charge_wh_total": float(int(st.ev_charge_wh_total)),
        "discharge_wh_total": float(int(st.ev_discharge_wh_total)),
        "running": True,
    }
    if st.ev_connected:
        ev["soc_pct"] = round(st.ev_soc_pct)
    table: dict[str, dict[str, Any]] = {
        "smart_meter": {
            "power_w": round(st.grid_w),
            "import_wh_total": meter_count(st.grid_import_wh_total),
            "export_wh_total": meter_count(st.grid_export_wh_total),
        },
        "solar": {
            "power_w": round(st.pv_w),
            "energy_wh_total": float(int(st.pv_wh_total)),
            "running": True,
            "fault": st.inverter_fault,
        },
        "battery": {
            "power_w": round(st.battery_w),
            "soc_pct": round(st.battery_soc_pct),
            "charge_wh_total": float(int(st.battery_charge_wh_total)),
            "discharge_wh_total": float(int(st.battery_discharge_wh_total)),
            "state": battery_state,
            "running": True,
            "fault": st.battery_fault,
        },
        "water_meter": {"volume_l_total": float(int(st.water_l_total / 1000.0 / 0.001 + 1e-9))},
        "gas_meter": {"volume_l_total": pytest.approx(float(int(st.gas_l_total)), abs=1e-6)},
        "fuel_cell": {
            "power_w": round(st.fuelcell_w),
            "energy_wh_total": float(int(st.fuelcell_wh_total)),
            "running": st.fuelcell_w > 0.5,
        },
        "ev_charger": ev,
        "inverter": {
            "power_w": float(round(st.pv_w)),
            "energy_wh_total": float(round(st.pv_wh_total)),
            "frequency_hz": 50.0,
            "running": st.pv_w > 0,
            "state": "mppt" if st.pv_w > 0 else "sleeping",
            "fault": False,
        },
        "meter": {
            "power_w": float(round(st.grid_w)),
            "import_wh_total": float(round(st.grid_import_wh_total)),
            "export_wh_total": float(round(st.grid_export_wh_total)),
            "frequency_hz": 50.0,
        },
        "storage": {
            "power_w": float(round(st.battery_w)),
            "soc_pct": pytest.approx(st.battery_soc_pct, abs=0.051),
            "state": battery_state if battery_state != "standby" else "holding",
            "fault": False,
        },
    }
    return table[device]


@pytest.mark.parametrize("start", [NOON_JST, EVENING_JST], ids=["noon", "evening"])
async def test_every_device_and_field_matches_the_household(
    fleet_factory: Callable[..., Any], start: datetime
) -> None:
    fleet: Fleet = await fleet_factory(2, start=start)
    collector = Collector(config_for(fleet))
    latest = await one_round(collector)
    manifest_keys = {d.key for d in collector.config.devices}
    assert set(latest) == manifest_keys  # every device of every home produced a reading
    for home in fleet.homes:
        st = home.household.state()
        for dev in collector.config.devices:
            if dev.household != home.household_id:
                continue
            r = latest[dev.key]
            want = expected(dev.device, st)
            if dev.device == "storage" and want["state"] == "holding":
                want.pop("state")  # full/empty/holding depends on the SOC limits; not what we test
                r.fields.pop("state")
            assert r.fields == want, dev.key
            assert r.category == dev.category
            assert r.quality == "ok", (dev.key, r)
            assert set(r.fields) <= set(FIELD_UNITS)
            assert r.source == dev.protocol
        assert collector.health()[f"{home.household_id}/smart_meter"].reason == "ok"


async def test_counters_carry_their_wrap_modulus(frozen_fleet: Fleet) -> None:
    latest = await one_round(Collector(config_for(frozen_fleet)))
    hid = frozen_fleet.homes[0].household_id
    # meter: 10**D7 counts x D3 x unit(E1) = 10**6 x 1 x 0.1 kWh
    assert latest[f"{hid}/smart_meter"].counter_wrap == {"import_wh_total": 1e8, "export_wh_total": 1e8}
    assert latest[f"{hid}/solar"].counter_wrap == {"energy_wh_total": 1e9}
    assert latest[f"{hid}/inverter"].counter_wrap == {"energy_wh_total": 2.0**32}


async def test_meter_fixed_time_values_keep_the_meters_own_timestamp(
    fleet_factory: Callable[..., Any],
) -> None:
    boundary = wall_half_hour()
    frozen_fleet: Fleet = await fleet_factory(2, start=boundary)
    collector = Collector(config_for(frozen_fleet, fixed_time_readings=True))
    await collector.start()
    stamped: list[Reading] = []

    async def consume() -> None:
        async for r in collector.readings():
            if r.device == "smart_meter" and r.category != STATUS_CATEGORY and "power_w" not in r.fields:
                stamped.append(r)

    task = asyncio.get_running_loop().create_task(consume())
    await asyncio.sleep(0.9)  # several counter polls
    await collector.stop()
    await task
    # the frozen clock sits exactly on a :00/:30 boundary: the meter stamps its value with that instant,
    # and each stamped value is emitted once however often it is polled
    by_home = {(r.household, next(iter(r.fields))) for r in stamped}
    assert len(stamped) == len(by_home) == 2 * len(frozen_fleet.homes)
    for r in stamped:
        assert r.ts_utc == boundary
        st = frozen_fleet.home(r.household).household.state()
        if "import_wh_total" in r.fields:
            assert r.fields["import_wh_total"] == int(st.grid_import_wh_total / 100.0) * 100.0


async def test_discovery_finds_exactly_the_manifest_devices(frozen_fleet: Fleet) -> None:
    collector = Collector(config_for(frozen_fleet))
    found = await _discover(collector)
    manifest = {
        h["address"]: sorted(o["eoj"].lower() for o in h["echonet"]["objects"])
        for h in frozen_fleet.manifest()["homes"]
    }
    assert {a: sorted(e.hex() for e in eojs) for a, eojs in found.items()} == manifest


async def test_multicast_discovery_finds_the_fleet(fleet_factory: Callable[..., Any]) -> None:
    fleet: Fleet = await fleet_factory(3, echonet_options={"multicast": True, "announce_interval_s": None})
    collector = Collector(config_for(fleet, echonet_multicast=True))
    await collector.controller.start()
    try:
        found = await collector.controller.discover((), wait_s=0.3)  # multicast probe only
    finally:
        await collector.controller.stop()
    prefix = fleet.homes[0].address.rsplit(".", 2)[0] + "."
    ours = {a for a in found.nodes if a.startswith(prefix)}  # other test runs may share the group
    assert ours == {h.address for h in fleet.homes}


async def _discover(collector: Collector) -> dict[str, Any]:
    await collector.controller.start()
    try:
        return (await collector.discover()).nodes
    finally:
        await collector.controller.stop()


async def test_property_maps_are_read_and_respected(frozen_fleet: Fleet) -> None:
    collector = Collector(config_for(frozen_fleet))
    await collector.controller.start()
    try:
        home = frozen_fleet.homes[0]
        from protocols.echonet.frame import EOJ

        maps = await collector.controller.property_maps(home.address, EOJ(0x02, 0x88, 0x01))
    finally:
        await collector.controller.stop()
    assert {0xE0, 0xE7, 0xD7, 0xEA} <= set(maps[0x9F])
    assert 0xE5 in maps[0x9E]  # the one settable meter property


async def test_fixed_time_readings_can_be_switched_off_and_sign_flipped(frozen_fleet: Fleet) -> None:
    base = config_for(frozen_fleet, fixed_time_readings=False)
    devices = tuple(
        replace(d, power_sign=-1) if d.device in ("smart_meter", "meter") else d for d in base.devices
    )
    stamped: list[Reading] = []
    latest = await one_round(Collector(replace(base, devices=devices)), seconds=0.5, stamped=stamped)
    assert stamped == []
    st = frozen_fleet.homes[0].household.state()
    hid = frozen_fleet.homes[0].household_id
    assert latest[f"{hid}/smart_meter"].fields["power_w"] == -round(st.grid_w)  # + = export now
    assert latest[f"{hid}/meter"].fields["power_w"] == -float(round(st.grid_w))
    assert latest[f"{hid}/solar"].fields["power_w"] == round(st.pv_w)  # others untouched
