"""The scheduler on its own, driven by a poll function the test controls (no devices needed: what is
under test is when polls happen, not what they read)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time

import pytest

from collector.config import CollectorConfig, DeviceConfig
from collector.errors import DeviceTimeout
from collector.scheduler import Scheduler, jitter_fraction, percentile
from collector.slots import Slots
from collector.timers import WINDOW_S


def device(i: int, interval: float = 0.1, address: str = "127.0.0.1") -> DeviceConfig:
    return DeviceConfig(f"hh-{i:04d}", "solar", "pv", "echonet", address, 3610, interval, interval)


def config(devices: list[DeviceConfig], **kw: object) -> CollectorConfig:
    return CollectorConfig(devices=tuple(devices), **kw)  # type: ignore[arg-type]


async def test_schedule_is_absolute_a_slow_poll_does_not_shift_later_ones() -> None:
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def poll(dev: DeviceConfig, counters: bool) -> tuple[str, str]:
        starts.append(loop.time())
        if len(starts) == 3:
            await asyncio.sleep(0.5)  # overruns two and a half slots
        return "ok", ""

    dev = device(1, interval=0.2)
    sched = Scheduler(config([dev]), poll)
    sched.start([dev])
    await asyncio.sleep(1.9)
    await sched.stop()
    phase = sched._runs[dev.key].phase
    slots = [(t - phase) / 0.2 for t in starts]
    # every poll started on its own grid slot (plus a little lateness, never early): no drift
    assert all(-0.01 < s - round(s) < 0.4 for s in slots), slots
    ks = [round(s) for s in slots]
    assert ks[:3] == [0, 1, 2]
    assert ks[3] == 5  # the slow poll (slot 2) ended at ~slot 4.5: slots 3 and 4 were skipped
    assert sched.stats()["skipped_slots"] == 2
    assert ks[4:] == list(range(6, 6 + len(ks) - 4))


async def test_polls_due_within_a_few_ms_share_one_wake_up_never_early() -> None:
    """Issue 20: one timer per poll woke the process once per poll; slots due within
    ``collector.timers.WINDOW_S`` of each other now start together, none before its slot and none
    later than the window (plus the loop's own delay)."""
    starts: list[float] = []

    async def poll(dev: DeviceConfig, counters: bool) -> tuple[str, str]:
        starts.append(time.monotonic())
        return "ok", ""

    devs = [device(i, interval=0.2) for i in range(200)]  # a slot every millisecond on average
    sched = Scheduler(config(devs), poll, first_poll_spread_s=0.2)
    sched.start(devs)
    await asyncio.sleep(0.5)
    sched.reset_lateness()
    del starts[:]
    await asyncio.sleep(1.0)
    await sched.stop()
    assert len(starts) > 800
    # wake-ups: runs of poll starts less than half a millisecond apart
    wake_ups = 1 + sum(1 for a, b in itertools.pairwise(starts) if b - a > 0.0005)
    assert wake_ups < 0.25 * len(starts), (wake_ups, len(starts))
    late = [x for d in devs for x in sched.device_lateness(d.key)]
    assert min(late) >= 0
    assert sorted(late)[len(late) // 2] < WINDOW_S + 0.005


def test_start_times_are_spread_deterministically() -> None:
    fractions = [jitter_fraction(f"hh-{i:04d}/solar") for i in range(1000)]
    assert fractions == [jitter_fraction(f"hh-{i:04d}/solar") for i in range(1000)]
    assert all(0 <= f < 1 for f in fractions)
    # roughly uniform: every tenth of the interval gets a share
    buckets = [sum(1 for f in fractions if b / 10 <= f < (b + 1) / 10) for b in range(10)]
    assert min(buckets) > 60, buckets


async def test_in_flight_is_bounded_per_host_and_overall() -> None:
    live = {"127.0.0.1": 0, "127.0.0.2": 0}
    peak = {"127.0.0.1": 0, "127.0.0.2": 0}
    total_peak = 0

    async def poll(dev: DeviceConfig, counters: bool) -> tuple[str, str]:
        nonlocal total_peak
        live[dev.address] += 1
        peak[dev.address] = max(peak[dev.address], live[dev.address])
        total_peak = max(total_peak, sum(live.values()))
        await asyncio.sleep(0.05)
        live[dev.address] -= 1
        return "ok", ""

    devs = [device(i, 0.05, "127.0.0.1" if i % 2 else "127.0.0.2") for i in range(40)]
    sched = Scheduler(config(devs, max_in_flight=5, max_in_flight_per_host=3), poll)
    sched.start(devs)
    await asyncio.sleep(0.4)
    await sched.stop()
    assert peak == {"127.0.0.1": 3, "127.0.0.2": 3}
    assert total_peak == 5


async def test_failures_back_off_exponentially_up_to_the_cap() -> None:
    loop = asyncio.get_running_loop()
    starts: list[float] = []

    async def poll(dev: DeviceConfig, counters: bool) -> tuple[str, str]:
        starts.append(loop.time())
        raise DeviceTimeout("no answer")

    dev = device(1, interval=0.02)
    sched = Scheduler(config([dev], backoff_base_s=0.05, backoff_max_s=0.2), poll)
    sched.start([dev])
    await asyncio.sleep(1.0)
    await sched.stop()
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # a backoff is a lower bound (the next grid slot after it); the cap bounds it from above
    assert 0.045 <= gaps[0] < 0.05 + 0.1
    assert 0.095 <= gaps[1] < 0.10 + 0.1
    assert all(0.195 <= g < 0.2 + 0.1 for g in gaps[3:]), gaps
    assert len(gaps) >= 4
    h = sched.health()[dev.key]
    assert h.reason == "timeout" and h.failures == len(starts) and h.last_ok is None


async def test_shutdown_lets_in_flight_polls_finish_within_the_grace() -> None:
    finished: list[str] = []
    started = asyncio.Event()

    async def poll(dev: DeviceConfig, counters: bool) -> tuple[str, str]:
        started.set()
        await asyncio.sleep(0.2)
        finished.append(dev.key)
        return "ok", ""

    dev = device(1, interval=10.0)
    sched = Scheduler(config([dev]), poll)
    sched.start([dev])
    sched._runs[dev.key].phase = asyncio.get_running_loop().time()  # due now
    await asyncio.wait_for(started.wait(), 12)
    await sched.stop(grace_s=1.0)
    assert finished == [dev.key]

    finished.clear()
    started.clear()
    sched2 = Scheduler(config([dev]), poll)
    sched2.start([dev])
    sched2._runs[dev.key].phase = asyncio.get_running_loop().time()
    await asyncio.wait_for(started.wait(), 12)
    await sched2.stop(grace_s=0.02)  # deadline too short: the poll is cancelled
    assert finished == []


def test_percentile() -> None:
    assert percentile([], 50) is None
    data = [float(i) for i in range(1, 101)]
    assert percentile(data, 50) == 50.0
    assert percentile(data, 99) == 99.0
    assert percentile([3.0], 99) == 3.0


async def test_after_a_start_every_device_is_polled_promptly_and_still_spread() -> None:
    """A restart must not leave a 60-s meter waiting up to a minute: first polls come within the
    start-up spread (a few seconds), still spread out rather than all at once."""
    loop = asyncio.get_running_loop()
    first: dict[str, float] = {}

    async def poll(dev: DeviceConfig, counters: bool) -> tuple[str, str]:
        first.setdefault(dev.key, loop.time())
        return "ok", ""

    devs = [device(i, interval=60.0) for i in range(300)]
    sched = Scheduler(config(devs), poll)
    t0 = loop.time()
    sched.start(devs)
    await asyncio.sleep(6.0)
    await sched.stop()
    assert len(first) == len(devs), f"{len(devs) - len(first)} devices not polled within 6 s"
    offsets = sorted(t - t0 for t in first.values())
    assert offsets[-1] < 5.5
    per_second = collections.Counter(int(o) for o in offsets)
    assert max(per_second.values()) < 0.35 * len(devs), per_second  # spread, not a burst


async def test_after_the_prompt_first_poll_the_device_joins_its_own_grid() -> None:
    loop = asyncio.get_running_loop()
    starts: dict[str, list[float]] = collections.defaultdict(list)

    async def poll(dev: DeviceConfig, counters: bool) -> tuple[str, str]:
        starts[dev.key].append(loop.time())
        return "ok", ""

    devs = [device(i, interval=1.0) for i in range(20)]
    sched = Scheduler(config(devs), poll, first_poll_spread_s=0.2)
    t0 = loop.time()
    sched.start(devs)
    await asyncio.sleep(4.3)
    await sched.stop()
    for dev in devs:
        times = starts[dev.key]
        assert times[0] - t0 < 0.3  # prompt
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(0.45 < g < 1.6 for g in gaps), gaps  # never a burst, never a whole extra interval
        phase = sched._runs[dev.key].phase
        assert phase - t0 == pytest.approx(jitter_fraction(dev.key) * 1.0, abs=0.01)  # spread kept
        later = [(t - phase) % 1.0 for t in times[1:]]
        assert all(s < 0.1 or s > 0.99 for s in later), later  # on its grid after the first poll


async def test_a_slot_handed_to_a_cancelled_waiter_passes_on() -> None:
    """A poll cancelled in the moment it was given its slot (a stop) does not take the slot with it."""
    slots = Slots(1)
    assert slots.take_now()
    first = asyncio.create_task(slots.take())
    second = asyncio.create_task(slots.take())
    await asyncio.sleep(0)
    slots.release()  # handed to ``first`` ...
    first.cancel()  # ... which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1.0)  # the slot went on to the next waiter
    assert not slots.take_now()
    slots.release()
    assert slots.take_now()
