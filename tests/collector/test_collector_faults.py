"""Injected device faults: each one shows up as the right health reason (or the right effect on the
data), the other devices keep their schedule meanwhile, and everything recovers once it clears.

All faults run at once, one per home, in a single fleet: that is both faster and a harder test of
isolation than one fault at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from collector.reading import Reading
from collector.runner import Collector
from devices.fleet import Fleet
from devices.state import Faults
from seeds.vocabulary import STATUS_CATEGORY
from tests.collector.conftest import config_for, wall_half_hour

TIMEOUT_S = 0.5


def _set(**changes: Any) -> Callable[[Faults], None]:
    def apply(f: Faults) -> None:
        for k, v in changes.items():
            setattr(f, k, v)

    return apply


# (device, fault, expected health reason)
FAULTS: list[tuple[str, Callable[[Faults], None], str]] = [
    ("battery", _set(no_reply=True), "timeout"),
    ("smart_meter", _set(sna_epcs=frozenset({0xE7, 0xE0})), "partial"),
    ("solar", _set(malformed=True), "malformed"),
    ("fuel_cell", _set(truncated=True), "malformed"),
    ("inverter", _set(no_reply=True), "timeout"),
    ("meter", _set(modbus_exception=4), "exception:4"),
    ("storage", _set(malformed=True), "malformed"),
    ("inverter", _set(truncated=True), "timeout"),  # TCP: a frame cut short is a frame that never ends
]
CLEAN_HOMES = 2


async def _drain(collector: Collector, sink: list[Reading]) -> None:
    async for r in collector.readings():
        sink.append(r)


async def test_each_fault_gives_its_reason_without_delaying_others(fleet_factory: Callable[..., Any]) -> None:
    fleet: Fleet = await fleet_factory(len(FAULTS) + CLEAN_HOMES)
    config = config_for(
        fleet,
        power_interval_s=0.5,
        counter_interval_s=0.5,
        timeout_s=TIMEOUT_S,
        backoff_base_s=0.25,
        backoff_max_s=0.5,
    )
    collector = Collector(config)
    readings: list[Reading] = []
    await collector.start()
    drain = asyncio.get_running_loop().create_task(_drain(collector, readings))
    try:
        await asyncio.sleep(1.2)
        assert all(h.reason == "ok" for h in collector.health().values()), collector.health()
        faulty: dict[str, str] = {}
        injected = time.time()
        for i, (device, apply, reason) in enumerate(FAULTS):
            apply(fleet.faults(i, device))
            faulty[f"{fleet.homes[i].household_id}/{device}"] = reason
        collector.scheduler.reset_lateness()
        polls_before = collector.stats()["polls"]
        await asyncio.sleep(2.0)
        health = collector.health()
        for key, reason in faulty.items():
            assert health[key].reason == reason, (key, health[key])
            assert health[key].message
        # Clean homes kept their schedule: no poll of theirs waited for a faulty device's timeout.
        clean = [d.key for d in config.devices if d.household in {h.household_id for h in fleet.homes[-2:]}]
        worst = max(max(collector.scheduler.device_lateness(k)) for k in clean)
        assert worst < TIMEOUT_S, worst
        assert all(len(collector.scheduler.device_lateness(k)) >= 3 for k in clean)
        # and no healthy device took the blame, not even one sharing a faulty device's connection
        assert {k: h.reason for k, h in health.items() if k not in faulty and h.reason != "ok"} == {}
        # So did the ECHONET devices of a home whose Modbus device is faulty, and vice versa.
        inverter_home = fleet.homes[4].household_id
        assert max(collector.scheduler.device_lateness(f"{inverter_home}/smart_meter")) < TIMEOUT_S
        assert collector.stats()["polls"] > polls_before
        # A Get_SNA keeps what the device did answer.
        sna_home = fleet.homes[1].household_id
        partial = [
            r
            for r in readings
            if r.household == sna_home and r.device == "smart_meter" and r.category != STATUS_CATEGORY
        ][-1]
        assert partial.quality == "partial" and "power_w" not in partial.fields
        assert "export_wh_total" in partial.fields or partial.fields.keys() <= {"power_w", "import_wh_total"}

        for i, (device, _, _) in enumerate(FAULTS):
            fleet.faults(i, device).clear()
        await asyncio.sleep(2.0)
        health = collector.health()
        for key in faulty:
            assert health[key].reason == "ok", (key, health[key])
            assert health[key].last_ok is not None
        # Each change of health also went into the reading stream (and so through the pipeline to the
        # store): the fault's reason with the instant it began, then "ok" again.
        told: dict[str, list[tuple[object, object]]] = {}
        for r in readings:
            if r.category == STATUS_CATEGORY:
                told.setdefault(f"{r.household}/{r.device}", []).append(
                    (r.fields["health"], r.fields["health_since_s"])
                )
        for key, reason in faulty.items():
            reasons = [h for h, _ in told[key]]
            assert reason in reasons and reasons[-1] == "ok", (key, told[key])
            began = next(since for h, since in told[key] if h == reason)
            assert isinstance(began, float) and injected - 0.01 <= began <= injected + 2.0, (key, began)
    finally:
        await collector.stop()
        await drain


async def test_failing_device_backs_off(fleet_factory: Callable[..., Any]) -> None:
    fleet: Fleet = await fleet_factory(1)
    config = config_for(fleet, power_interval_s=0.1, timeout_s=0.1, backoff_base_s=0.2, backoff_max_s=0.4)
    collector = Collector(config)
    fleet.faults(0, "gas_meter").no_reply = True
    readings: list[Reading] = []
    await collector.start()
    drain = asyncio.get_running_loop().create_task(_drain(collector, readings))
    await asyncio.sleep(1.6)
    await collector.stop()
    await drain
    key = f"{fleet.homes[0].household_id}/gas_meter"
    healthy_key = f"{fleet.homes[0].household_id}/solar"
    h = collector.health()[key]
    assert h.reason == "timeout"
    # 16 slots of 0.1 s, but after each failure the device waits 0.2, 0.4, 0.4 ... s (+ its timeout)
    assert 2 <= h.polls <= 6, h.polls
    assert collector.health()[healthy_key].polls >= 10


async def test_data_faults_show_in_the_data(fleet_factory: Callable[..., Any]) -> None:
    """Counter reset and stuck values are not failures: the device answers fine, so health stays ok,
    and the effect is in what it says.  A meter clock that jumps a day back stamps its fixed-time
    values a day off the collector's clock: those are refused (issue 15 item 4), counted, and the
    meter's health says why, while its live values keep coming."""
    # from the wall clock's latest half hour, ten simulated minutes per second: the stamps stay within
    # the hour of skew this test allows until the meter's clock jumps
    fleet: Fleet = await fleet_factory(1, speed=600.0, start=wall_half_hour())
    config = config_for(
        fleet, power_interval_s=0.15, counter_interval_s=0.15, fixed_time_readings=True, clock_skew_s=3600.0
    )
    collector = Collector(config)
    readings: list[Reading] = []
    hid = fleet.homes[0].household_id
    await collector.start()
    drain = asyncio.get_running_loop().create_task(_drain(collector, readings))
    try:
        await asyncio.sleep(0.6)
        household = fleet.homes[0].household
        fleet.faults(0, "solar").reset_counters(household.state())
        fleet.faults(0, "water_meter").stuck = True
        fleet.faults(0, "smart_meter").clock_offset = timedelta(days=-1)
        mark = len(readings)
        await asyncio.sleep(1.2)
    finally:
        await collector.stop()
        await drain
    before, after = readings[:mark], readings[mark:]

    def values(rs: list[Reading], device: str, field: str) -> list[float]:
        return [float(r.fields[field]) for r in rs if r.device == device and field in r.fields]

    solar_before, solar_after = (
        values(before, "solar", "energy_wh_total"),
        values(after, "solar", "energy_wh_total"),
    )
    assert solar_after[-1] < 1e6 < solar_before[-1]  # restarted from zero (years of Wh before)
    water_after = values(after, "water_meter", "volume_l_total")
    assert len(water_after) >= 3 and len(set(water_after[1:])) == 1  # frozen
    # the household itself went on: its unfaulted counters never fall and some energy moved, from the
    # sun, the grid, the battery or the fuel cell (any one alone can stay flat for an evening, so the
    # test would depend on the hour it runs at)
    moved = [
        values(after, device, field)
        for device, field in (
            ("inverter", "energy_wh_total"),
            ("meter", "import_wh_total"),
            ("meter", "export_wh_total"),
            ("battery", "charge_wh_total"),
            ("battery", "discharge_wh_total"),
            ("storage", "charge_wh_total"),
            ("storage", "discharge_wh_total"),
            ("fuel_cell", "energy_wh_total"),
        )
    ]
    assert all(v[-1] >= v[0] for v in moved if v), moved
    assert any(v[-1] > v[0] for v in moved if v), moved

    def stamps(rs: list[Reading]) -> set[datetime]:
        return {r.ts_utc for r in rs if r.device == "smart_meter" and "power_w" not in r.fields}

    assert stamps(before)  # the meter's own half-hour values came while its clock was right ...
    assert all(t > datetime.now(UTC) - timedelta(hours=2) for t in stamps(after))  # ... none a day back
    assert collector.stats()["implausible"].get("clock", 0) >= 1
    meter = collector.health()[f"{hid}/smart_meter"]
    assert meter.reason == "implausible" and "behind the collector's clock" in meter.message, meter
    assert values(after, "smart_meter", "power_w")  # its live values keep coming
    assert all(collector.health()[f"{hid}/{d}"].reason == "ok" for d in ("solar", "water_meter"))


async def test_nothing_listening_is_unreachable(fleet_factory: Callable[..., Any]) -> None:
    """A Modbus device whose host refuses the connection, and an ECHONET object its node does not
    list in discovery, are reported as unreachable (not as a generic timeout)."""
    fleet: Fleet = await fleet_factory(1)
    base = config_for(fleet, power_interval_s=0.2, timeout_s=0.2)
    dead = fleet.homes[0].address.rsplit(".", 1)[0] + ".222"  # no home here
    from dataclasses import replace

    from protocols.echonet.frame import EOJ

    inverter = next(d for d in base.devices if d.device == "inverter")
    solar = next(d for d in base.devices if d.device == "solar")
    devices = (
        replace(inverter, household="hh-dead", address=dead),
        replace(solar, household="hh-ghost", eoj=EOJ(0x02, 0x79, 0x02)),  # the node lists only instance 1
    )
    collector = Collector(replace(base, devices=devices))
    await collector.start()
    try:
        assert collector.health()["hh-ghost/solar"].reason == "unreachable"  # from discovery, before any poll
        await asyncio.sleep(0.6)
        assert collector.health()["hh-dead/inverter"].reason == "unreachable"
    finally:
        await collector.stop()
