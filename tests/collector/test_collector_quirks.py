"""Issue 15's collector defects, each against real sockets: devices that answer only N properties of a
Get, water and gas counters beyond 8 digits, SunSpec float and unsupported models, values a device cannot
have meant, and the sign of pushed values."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from collector.config import CollectorConfig, DeviceConfig
from collector.echonet_client import EchonetController
from collector.reading import Reading
from collector.runner import Collector
from devices.fleet import Fleet, known_device_ids
from devices.profile import PROFILES, Profile, every_home
from protocols.echonet.frame import CONTROLLER, EOJ, ESV, Frame, Property, encode, pack_int
from protocols.sunspec.models import MODELS
from protocols.sunspec.points import SUNS_MARKER, not_implemented
from tests.collector.conftest import LimitedNode, SteerableHousehold, config_for, controller_address
from tests.collector.test_collector_devices import expected
from tests.collector.test_collector_profiles import collect, latest_fields

METER = EOJ(0x02, 0x88, 0x01)
BATTERY = EOJ(0x02, 0x7D, 0x01)


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_property_maps_and_every_value_come_from_a_device_answering_n_properties(
    fleet_factory: Callable[..., Any], limit: int
) -> None:
    fleet: Fleet = await fleet_factory(1)
    node_address = fleet.homes[0].address.rsplit(".", 1)[0] + ".210"
    node = LimitedNode(limit)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: node, local_addr=(node_address, 3610)
    )
    ctl = EchonetController(controller_address(fleet), multicast=False, timeout_s=0.5)
    await ctl.start()
    try:
        maps = await ctl.property_maps(node_address, METER)
        assert set(maps) == {0x9D, 0x9E, 0x9F}  # not one of them lost
        epcs = list(range(0xE0, 0xE8))
        result = await ctl.get(node_address, METER, epcs)
        assert result.values == {e: bytes((1, e)) for e in epcs} and not result.sna
        assert ctl.batch_limit(node_address, METER) == limit
        node.requests.clear()
        await ctl.get(node_address, METER, epcs)
        assert node.requests == [limit] * (8 // limit) + ([8 % limit] if 8 % limit else [])
    finally:
        await ctl.stop()
        transport.close()


@pytest.mark.parametrize("limit", [1, 2, 3])
async def test_emulated_homes_answering_n_properties_are_read_whole(
    fleet_factory: Callable[..., Any], limit: int
) -> None:
    """Every ECHONET Lite device of the home answers at most ``limit`` properties per Get: its map is
    read in full (and kept), every field comes, and health is ok (before: with N <= 2 an empty map was
    kept, nothing polled and health said ok; with N = 3 the energy registers were never read)."""
    fleet: Fleet = await fleet_factory(
        1, profiles=every_home(dict.fromkeys(known_device_ids(), PROFILES[f"get_limit_{limit}"]))
    )
    config = config_for(fleet)
    collector = Collector(config)
    start = datetime.now(UTC)
    readings = await collect(collector, 1.2)
    st = fleet.homes[0].household.state()
    for dev in config.devices:
        if dev.protocol != "echonet":
            continue
        assert collector.health()[dev.key].reason == "ok", (dev.key, collector.health()[dev.key])
        assert latest_fields(readings, dev.key, start) == expected(dev.device, st), dev.key
        state = collector._echonet[dev.key]
        assert state.readable is not None and 0x9F in state.readable
    assert any("import_wh_total" in r.fields for r in readings if r.device == "smart_meter")


async def test_a_device_that_yields_no_reading_is_never_healthy(fleet_factory: Callable[..., Any]) -> None:
    """A water meter that answers every property it is asked without data (Get_SNA): no reading, so
    health is a failure that says what the device answered (before: reason "partial", counted healthy,
    and "answered none")."""
    fleet: Fleet = await fleet_factory(1)
    fleet.faults(0, "water_meter").sna_epcs = frozenset({0xE0, 0xE1})
    collector = Collector(config_for(fleet))
    readings = await collect(collector, 0.8)
    key = f"{fleet.homes[0].household_id}/water_meter"
    health = collector.health()[key]
    assert health.reason == "no_data" and not health.healthy, health
    assert "answered none" not in health.message and "Get_SNA for 0xE0, 0xE1" in health.message
    assert not [r for r in readings if r.device == "water_meter"]


async def test_water_and_gas_counters_beyond_eight_digits_are_read(fleet_factory: Callable[..., Any]) -> None:
    """0xE0 of a water or gas meter holds 0..999,999,999 counts (the emulator's large_counters profile
    puts them at 900 million litres and more): read, with the wrap the unit gives, health ok (before:
    no value above 99,999,999 and a health message saying the meter "answered none")."""
    lifted = PROFILES["large_counters"]
    fleet: Fleet = await fleet_factory(
        1,
        profiles=every_home({"water_meter": lifted, "gas_meter": lifted}),
        echonet_options={
            "multicast": False,
            "announce_interval_s": None,
            "settings": {"water_meter": {"unit": 0x03}},
        },
    )
    collector = Collector(config_for(fleet))
    readings = await collect(collector, 0.8)
    st = fleet.homes[0].household.state()
    hid = fleet.homes[0].household_id
    for device, litres in (("water_meter", st.water_l_total), ("gas_meter", st.gas_l_total)):
        health = collector.health()[f"{hid}/{device}"]
        assert health.reason == "ok", health
        got = [r for r in readings if r.device == device]
        assert got and got[-1].fields["volume_l_total"] == pytest.approx(
            int(litres + lifted.counter_offset), abs=1
        )
        assert got[-1].fields["volume_l_total"] > 99_999_999
        assert got[-1].counter_wrap == {"volume_l_total": pytest.approx(1e9)}  # 10**9 counts of 1 L


async def test_sunspec_float_models_are_read(fleet_factory: Callable[..., Any]) -> None:
    """An inverter and a meter in float mode (models 112 and 212, the float twins of 102 and 202) are
    read like their integer models (before: refused as malformed)."""
    fleet: Fleet = await fleet_factory(
        1, profiles=every_home({"inverter": PROFILES["float"], "meter": PROFILES["float"]})
    )
    assert [d["models"] for d in fleet.manifest()["homes"][0]["modbus"]["devices"][:2]] == [
        [1, 112, 120],
        [1, 212],
    ]
    config = config_for(fleet)
    collector = Collector(config)
    start = datetime.now(UTC)
    readings = await collect(collector, 0.8)
    st = fleet.homes[0].household.state()
    for device in ("inverter", "meter"):
        key = f"{fleet.homes[0].household_id}/{device}"
        assert collector.health()[key].reason == "ok", collector.health()[key]
        want = {
            k: pytest.approx(v, abs=1.0) if isinstance(v, float) else v
            for k, v in expected(device, st).items()
        }
        assert latest_fields(readings, key, start) == want


def _image(chain: list[tuple[int, int, list[int]]]) -> list[int]:
    """A SunSpec map: the marker, each (model id, L, registers), the end marker."""
    regs = list(SUNS_MARKER)
    for model_id, length, body in chain:
        regs += [model_id, length, *body, *([0] * (length - len(body)))]
    return [*regs, 0xFFFF, 0]


@pytest.fixture
async def odd_maps() -> AsyncIterator[tuple[str, int]]:
    """A real pymodbus server with two units: 1 lists only a vendor model, 2 a model 103 of the wrong
    length; each next to a common model."""
    common = [r for p in MODELS[1].points[2:] for r in not_implemented(p)]
    units = {
        1: _image([(1, 66, common), (64001, 4, [1, 2, 3, 4])]),
        2: _image([(1, 66, common), (103, 48, [])]),
    }
    devices = [
        SimDevice(
            id=unit,
            simdata=[SimData(address=40000, count=len(regs), values=regs, datatype=DataType.REGISTERS)],
        )
        for unit, regs in units.items()
    ]
    server = ModbusTcpServer(devices, address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port: int = server.transport.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield "127.0.0.1", port
    await server.shutdown()


async def test_an_unsupported_sunspec_model_has_its_own_reason(odd_maps: tuple[str, int]) -> None:
    host, port = odd_maps
    devices = tuple(
        DeviceConfig("hh-odd", name, "pv", "modbus", host, port, 0.2, 0.2, unit_id=unit)
        for name, unit in (("vendor", 1), ("wrong_length", 2))
    )
    collector = Collector(CollectorConfig(devices, timeout_s=0.5, backoff_base_s=0.2, backoff_max_s=0.2))
    await collect(collector, 0.6)
    vendor, wrong = collector.health()["hh-odd/vendor"], collector.health()["hh-odd/wrong_length"]
    assert vendor.reason == "unsupported" and "unsupported model 64001" in vendor.message, vendor
    assert wrong.reason == "unsupported" and "unsupported model 103 (L=48" in wrong.message, wrong


async def test_values_beyond_range_or_rating_are_refused_counted_logged_and_shown(
    fleet_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A household drawing -1.1 GW (a register gone wild) and PV far beyond what the inverter is rated
    for: those values are refused with a reason, counted and logged, health says "implausible"; the
    device's other values are kept (before: stored as "ok")."""
    fleet: Fleet = await fleet_factory(1, household_factory=SteerableHousehold)
    household: SteerableHousehold = fleet.homes[0].household  # type: ignore[assignment]
    household.override = {"grid_w": -1.1e9, "pv_w": 60_000.0}
    collector = Collector(config_for(fleet))
    with caplog.at_level(logging.WARNING, logger="collector.runner"):
        readings = await collect(collector, 0.8)
    hid = fleet.homes[0].household_id
    meter = collector.health()[f"{hid}/smart_meter"]
    solar = collector.health()[f"{hid}/solar"]
    inverter = collector.health()[f"{hid}/inverter"]
    assert meter.reason == "implausible" and "outside its physical range" in meter.message, meter
    assert solar.reason == "implausible" and "rating" in solar.message, solar  # 65,533 W on a 5 kW array
    assert inverter.reason == "implausible" and "rating" in inverter.message, inverter  # model 120 WRtg
    for device in ("smart_meter", "solar", "inverter"):
        got = [r for r in readings if r.device == device]
        assert got and all("power_w" not in r.fields for r in got), device
        assert all(r.quality == "partial" for r in got if r.fields)
    assert any("running" in r.fields for r in readings if r.device == "solar")  # the rest is kept
    stats = collector.stats()["implausible"]
    assert stats["range"] >= 1 and stats["rating"] >= 2
    assert any("smart_meter" in rec.message and "physical range" in rec.message for rec in caplog.records)
    # a healthy neighbour in range is untouched
    assert collector.health()[f"{hid}/battery"].reason == "ok"


async def test_a_meter_clock_years_off_has_its_stamped_values_refused(
    fleet_factory: Callable[..., Any],
) -> None:
    """A meter whose clock runs six years behind stamps its half-hour record six years back: those
    values are refused (before: stored as is), health says so, and its live values keep coming."""
    behind = Profile("clock_unset", clock_offset_s=-6 * 365 * 86400.0)
    fleet: Fleet = await fleet_factory(
        1, start=datetime.now(UTC), profiles=every_home({"smart_meter": behind})
    )
    # the half-hour record is read with the counters: on every poll here, so the last poll's health,
    # whenever the window ends, is one that read it (polls start up to collector.timers.WINDOW_S late)
    collector = Collector(config_for(fleet, fixed_time_readings=True, counter_interval_s=0.2))
    readings = await collect(collector, 0.9)
    meter = [r for r in readings if r.device == "smart_meter"]
    assert meter and all(r.ts_utc > datetime.now(UTC) - timedelta(hours=1) for r in meter)
    assert any("power_w" in r.fields for r in meter)
    health = collector.health()[f"{fleet.homes[0].household_id}/smart_meter"]
    assert health.reason == "implausible" and "years behind the collector's clock" in health.message, health
    assert collector.stats()["implausible"]["clock"] >= 2


async def test_a_wrong_clock_stays_in_health_between_the_polls_that_read_it(
    fleet_factory: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The half-hour record is read with the counters only; the polls in between read live values.  A
    meter whose clock is years off stays "implausible" through those polls (before: it blinked back to
    "ok" after each one) and is logged once, not again after every poll that did not read its clock."""
    behind = Profile("clock_unset", clock_offset_s=-6 * 365 * 86400.0)
    fleet: Fleet = await fleet_factory(
        1, start=datetime.now(UTC), profiles=every_home({"smart_meter": behind})
    )
    collector = Collector(
        config_for(fleet, fixed_time_readings=True, power_interval_s=0.1, counter_interval_s=0.5)
    )
    key = f"{fleet.homes[0].household_id}/smart_meter"
    seen: list[str] = []

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.02)
            health = collector.health().get(key)
            if health is not None and (seen or health.reason == "implausible"):
                seen.append(health.reason)  # from the first poll that read the clock on

    watcher = asyncio.get_running_loop().create_task(watch())
    with caplog.at_level(logging.WARNING, logger="collector.runner"):
        readings = await collect(collector, 1.4)
    watcher.cancel()
    meter = [r for r in readings if r.device == "smart_meter"]
    assert sum(1 for r in meter if "power_w" in r.fields) >= 6  # polls that did not read the clock ran
    assert collector.stats()["implausible"]["clock"] >= 2  # and polls that read it, more than once
    assert len(seen) >= 20 and set(seen) == {"implausible"}, seen
    logged = [
        rec for rec in caplog.records if "smart_meter" in rec.getMessage() and "behind" in rec.getMessage()
    ]
    assert len(logged) == 1, [rec.getMessage() for rec in logged]


async def test_pushed_values_get_the_devices_power_sign(fleet_factory: Callable[..., Any]) -> None:
    """A battery configured with power_sign -1 announces its power (INF): the pushed reading has the
    same sign as a polled one would (before: the sign applied to polls only)."""
    fleet: Fleet = await fleet_factory(1)
    base = config_for(fleet)
    device_address = fleet.homes[0].address.rsplit(".", 1)[0] + ".211"  # a device of our own: a socket
    battery = next(d for d in base.devices if d.device == "battery")
    config = dataclasses.replace(
        base,
        devices=(dataclasses.replace(battery, household="hh-pusher", address=device_address, power_sign=-1),),
    )
    collector = Collector(config)
    await collector.controller.start()
    collector.controller.on_notification = collector._notification
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(device_address, 3610)
    )
    try:
        inf = Frame(7, BATTERY, CONTROLLER, ESV.INF, (Property(0xD3, pack_int(1500, 4)),))
        transport.sendto(encode(inf), (controller_address(fleet), 3610))
        reading: Reading = await asyncio.wait_for(collector._queue.get(), 2)  # type: ignore[assignment]
    finally:
        transport.close()
        await collector.controller.stop()
    assert reading.household == "hh-pusher" and reading.fields["power_w"] == -1500
    assert collector.stats()["pushed"] == 1
