"""The reading stream: a slow consumer is visible (waits or counted drops), nothing queued is lost
at shutdown, and a bad device table is refused up front."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from collector.errors import ConfigError
from collector.reading import Reading
from collector.runner import Collector
from devices.fleet import Fleet
from protocols.echonet.frame import EOJ
from tests.collector.conftest import config_for
from tests.loopback import free_prefix


async def test_full_queue_slows_polling_and_nothing_is_lost(fleet_factory: Callable[..., Any]) -> None:
    fleet: Fleet = await fleet_factory(1)
    collector = Collector(config_for(fleet, power_interval_s=0.1, counter_interval_s=0.1, queue_size=5))
    await collector.start()
    await asyncio.sleep(0.6)  # nobody reads: the queue fills, polls wait for room
    assert collector.stats()["queue_waits"] > 0
    assert collector.stats()["dropped"] == 0
    produced_before_stop = collector.readings_out
    await collector.stop()
    got: list[Reading] = [r async for r in collector.readings()]
    assert len(got) == collector.readings_out >= produced_before_stop >= 5  # every queued reading
    assert collector.stats()["dropped"] == 0


async def test_drop_mode_counts_what_it_drops(fleet_factory: Callable[..., Any]) -> None:
    fleet: Fleet = await fleet_factory(1)
    config = config_for(
        fleet, power_interval_s=0.1, counter_interval_s=0.1, queue_size=3, drop_when_full=True
    )
    collector = Collector(config)
    await collector.start()
    await asyncio.sleep(0.6)
    await collector.stop()
    got = [r async for r in collector.readings()]
    assert len(got) == 3
    assert collector.stats()["dropped"] > 0
    assert collector.stats()["queue_waits"] == 0
    assert collector.stats()["polls"] > 10  # polling went on at its pace


async def test_next_readings_hands_out_groups_then_the_end(fleet_factory: Callable[..., Any]) -> None:
    """Groups as soon as they are complete (not after the wait), at most the size asked, each reading
    once, and None after the last one; a full queue of a blocked collector is drained the same way."""
    fleet: Fleet = await fleet_factory(1)
    collector = Collector(config_for(fleet, power_interval_s=0.1, counter_interval_s=0.1, queue_size=50))
    await collector.start()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first = await collector.next_readings(5, 30.0)
    assert first is not None and len(first) == 5 and loop.time() - t0 < 5.0
    assert await collector.next_readings(10**6, 0.3) != []  # the wait's end hands out what came meanwhile
    await asyncio.sleep(0.6)  # nobody reads: the queue fills
    await collector.stop()
    rest: list[Reading] = []
    while (group := await collector.next_readings(7, 0.05)) is not None:
        assert 0 < len(group) <= 7
        rest += group
    assert await collector.next_readings(7, 0.05) is None
    assert len(rest) >= 50 - 1  # the full queue, every reading in it (the end marker may not fit)
    assert not any(r is f for r in rest for f in first)


def test_unknown_echonet_class_is_a_config_error() -> None:
    fleet = Fleet(1, 7, speed=0, address_prefix=free_prefix())
    base = config_for(fleet)
    odd = replace(base.devices[0], eoj=EOJ(0x01, 0x30, 0x01))  # an air conditioner: no decoder
    with pytest.raises(ConfigError, match="no decoder for ECHONET class 0130"):
        Collector(replace(base, devices=(odd,)))
