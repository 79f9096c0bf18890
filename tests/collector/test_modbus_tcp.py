"""The collector's own Modbus TCP client (``collector.modbus_tcp``) against the emulator's real pymodbus
server: what it does with answers that come too late, and a shared connection."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from collector.errors import DeviceTimeout, DeviceUnreachable
from collector.sunspec_client import ModbusPool
from devices.fleet import Fleet
from devices.profile import PROFILES, every_home
from protocols.sunspec.points import SUNS_MARKER
from tests.collector.conftest import config_for

SLOW_S = PROFILES["slow"].delay_s


async def _slow_home(fleet_factory: Callable[..., Any]) -> tuple[str, int]:
    """One home whose inverter (unit 1) and meter (unit 2) answer ``SLOW_S`` after each request."""
    slow = PROFILES["slow"]
    fleet: Fleet = await fleet_factory(1, profiles=every_home({"inverter": slow, "meter": slow}))
    modbus = [d for d in config_for(fleet).devices if d.protocol == "modbus"]
    return modbus[0].address, modbus[0].port


async def test_a_late_answer_is_never_taken_for_the_next_requests(fleet_factory: Callable[..., Any]) -> None:
    """The inverter's answer (the common model's header, 1 and 66) comes after its timeout, while the
    meter's request on the same host waits; the server labels it with the meter's transaction id.
    The timeout closed that connection, so the meter's request went out on a new one and gets its own
    answer ("SunS").  (Before: the connection was kept and the meter's read returned 1, 66.)"""
    host, port = await _slow_home(fleet_factory)
    pool = ModbusPool(timeout_s=SLOW_S / 2)
    try:
        timed_out = await pool.connection(host, port)
        with pytest.raises(DeviceTimeout, match="no answer"):
            await pool.read(host, port, 1, 40002, 2)
        assert timed_out.closed
        pool.timeout_s = 2 * SLOW_S
        assert tuple(await pool.read(host, port, 2, 40000, 2)) == SUNS_MARKER
        assert (await pool.read(host, port, 2, 40002, 2))[0] == 1
        assert await pool.connection(host, port) is not timed_out
    finally:
        await pool.close()


async def test_units_on_one_connection_take_turns(fleet_factory: Callable[..., Any]) -> None:
    """Several units asked at once through the pool: one request on the wire at a time, each answer to
    its own request (the second waits for the first, so both take about twice as long as one)."""
    host, port = await _slow_home(fleet_factory)
    pool = ModbusPool(timeout_s=5 * SLOW_S)
    try:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        inverter, meter = await asyncio.gather(
            pool.read(host, port, 1, 40000, 4), pool.read(host, port, 2, 40002, 2)
        )
        took = loop.time() - t0
        assert tuple(inverter[:2]) == SUNS_MARKER and meter[0] == 1
        assert took >= 2 * SLOW_S * 0.95, took
    finally:
        await pool.close()


async def test_a_request_queued_behind_a_lost_connection_goes_out_on_a_new_one(
    fleet_factory: Callable[..., Any],
) -> None:
    """The inverter's read is on the wire when its connection is lost: it fails as unreachable.  The
    meter's read, waiting its turn, was never sent: it goes out on a new connection instead of taking
    the blame."""
    host, port = await _slow_home(fleet_factory)
    pool = ModbusPool(timeout_s=5 * SLOW_S)
    try:
        first = asyncio.ensure_future(pool.read(host, port, 1, 40000, 2))
        second = asyncio.ensure_future(pool.read(host, port, 2, 40000, 2))
        await asyncio.sleep(SLOW_S / 4)  # both asked: the inverter's on the wire, the meter's waiting
        lost = await pool.connection(host, port)
        lost.close()
        with pytest.raises(DeviceUnreachable, match="connection lost"):
            await first
        assert tuple(await second) == SUNS_MARKER
        assert await pool.connection(host, port) is not lost
    finally:
        await pool.close()
