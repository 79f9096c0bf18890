"""The collector against every device profile (``devices.profile``), over real sockets: whatever quirk a
make of device has, its readings keep coming, they are the household's values, and health tells the
truth (``ok``: nothing was lost or refused).

Each case gives every device of a home one profile; the fleet is frozen at the wall clock's now, so the
smart meter's own fixed-time stamps are real-time stamps and are collected too."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from collector.reading import Reading
from collector.runner import Collector
from devices.fleet import Fleet, known_device_ids
from devices.profile import PROFILES, every_home
from protocols.echonet.frame import EOJ
from seeds.vocabulary import STATUS_CATEGORY
from tests.collector.conftest import config_for
from tests.collector.test_collector_devices import expected

COUNTERS = ("import_wh_total", "export_wh_total", "energy_wh_total", "charge_wh_total", "discharge_wh_total")


async def collect(collector: Collector, seconds: float) -> list[Reading]:
    """The device readings of ``seconds`` of polling (health readings, category ``equipment``, left
    out: health is checked through ``collector.health()``)."""
    readings: list[Reading] = []
    await collector.start()

    async def consume() -> None:
        async for r in collector.readings():
            if r.category != STATUS_CATEGORY:
                readings.append(r)

    task = asyncio.get_running_loop().create_task(consume())
    await asyncio.sleep(seconds)
    await collector.stop()
    await task
    return readings


def latest_fields(readings: list[Reading], key: str, since: datetime) -> dict[str, Any]:
    """The poll-time fields of one device, merged over its polls (counters come on their own interval)."""
    fields: dict[str, Any] = {}
    for r in readings:
        if f"{r.household}/{r.device}" == key and r.ts_utc >= since:
            fields.update(r.fields)
    return fields


def wrap_of(readings: list[Reading], key: str) -> dict[str, float]:
    wraps: dict[str, float] = {}
    for r in readings:
        if f"{r.household}/{r.device}" == key:
            wraps.update(r.counter_wrap)
    return wraps


@pytest.mark.parametrize("name", sorted(PROFILES))
async def test_every_profile_keeps_readings_coming_and_health_true(
    fleet_factory: Callable[..., Any], name: str
) -> None:
    profile = PROFILES[name]
    start = datetime.now(UTC)
    fleet: Fleet = await fleet_factory(
        1, start=start, profiles=every_home(dict.fromkeys(known_device_ids(), profile))
    )
    slow = profile.delay_s > 0
    config = config_for(
        fleet,
        fixed_time_readings=True,
        power_interval_s=0.6 if slow else 0.2,
        counter_interval_s=0.6 if slow else 0.4,
        timeout_s=profile.delay_s + 0.3,
    )
    collector = Collector(config)
    readings = await collect(collector, 2.0 if slow else 1.0)
    home = fleet.homes[0]
    st = home.household.state()
    health = collector.health()
    for dev in config.devices:
        assert health[dev.key].reason == "ok", (name, dev.key, health[dev.key])
        got = latest_fields(readings, dev.key, start)
        want = expected(dev.device, st)
        if dev.device == "storage" and want["state"] == "holding":
            want.pop("state")  # full/empty/holding depends on the SOC limits; not what we test
            got.pop("state", None)
        if profile.counter_offset:  # the device counts from far up: its counters are lifted (and wrap)
            wraps = wrap_of(readings, dev.key)
            for counter in (*COUNTERS, "volume_l_total"):
                if counter in want:
                    raw = getattr(want[counter], "expected", want[counter])  # the gas meter's is approx
                    lifted = (raw + profile.counter_offset) % wraps.get(counter, float("inf"))
                    want[counter] = pytest.approx(lifted, abs=1.0)
            if "volume_l_total" in want:  # 1 L per count: far beyond 8 digits, and read whole
                assert got["volume_l_total"] > 99_999_999
        if profile.float_models and dev.protocol == "modbus":
            want = {k: pytest.approx(v, abs=1.0) if isinstance(v, float) else v for k, v in want.items()}
        assert got == want, (name, dev.key)
    stamped = [r for r in readings if r.device == "smart_meter" and "power_w" not in r.fields]
    assert stamped, "the meter's own half-hour values came as well"
    assert collector.stats()["implausible"] == {}
    if profile.max_epcs is not None:
        meter = EOJ(0x02, 0x88, 0x01)
        assert collector.controller.batch_limit(home.address, meter) <= profile.max_epcs
        assert collector.controller.stats.batch_shrinks >= 1
    if profile.float_models:
        layouts = {
            d.device: collector._modbus[d.key].layout for d in config.devices if d.protocol == "modbus"
        }
        assert 112 in layouts["inverter"].models and 212 in layouts["meter"].models  # type: ignore[union-attr]
    # one read per poll for every unit, the float meter's 126-register model too: only the registers
    # up to its last decoded point are asked (issue 20), and the values above are still right
    for dev in config.devices:
        if dev.protocol == "modbus":
            assert len(collector._modbus[dev.key]._plan) == 1, (dev.key, collector._modbus[dev.key]._plan)
