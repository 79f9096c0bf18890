"""Fleets of emulated homes for the collector tests: the same ``devices.fleet.Fleet`` that
``hems devices`` runs, on a loopback /16 of its own (127.30-127.99, so it never meets the device
tests' 127.100-127.250) with ephemeral Modbus ports."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from collector.config import CollectorConfig, from_manifest
from devices.fleet import Fleet
from devices.physics import Household
from devices.state import HomeState
from protocols.echonet.frame import ESV, Frame, Property, decode, encode
from tests.loopback import free_prefix

NOON_JST = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo: the sun is up
QUIET = {"multicast": False, "announce_interval_s": None}


class SteerableHousehold:
    """A real physics household whose state a test can bend (``override``): a device then reports, or
    announces, what the test asked for."""

    def __init__(self, household_id: str, seed: int, clock: Any) -> None:
        self.inner = Household(household_id, seed, clock)
        self.household_id = household_id
        self.equipment = self.inner.equipment
        self.override: dict[str, Any] = {}

    def state(self, at: Any = None) -> HomeState:
        st = self.inner.state(at)
        return dataclasses.replace(st, **self.override) if self.override else st


def make_fleet(homes: int = 2, **kw: Any) -> Fleet:
    kw.setdefault("speed", 0)
    kw.setdefault("start", NOON_JST)
    kw.setdefault("modbus_port", 0)
    kw.setdefault("echonet_options", QUIET)
    return Fleet(homes, 7, address_prefix=free_prefix(), **kw)


def controller_address(fleet: Fleet) -> str:
    """A loopback address in the fleet's /16 that no home uses (homes end at x.y.249.250)."""
    prefix = fleet.homes[0].address.rsplit(".", 2)[0]
    return f"{prefix}.255.1"


def config_for(fleet: Fleet, **options: Any) -> CollectorConfig:
    options.setdefault("power_interval_s", 0.2)
    options.setdefault("counter_interval_s", 0.4)
    options.setdefault("timeout_s", 0.3)
    options.setdefault("backoff_base_s", 0.2)
    options.setdefault("backoff_max_s", 0.4)
    options.setdefault("discovery_wait_s", 0.2)
    options.setdefault("echonet_bind", controller_address(fleet))
    options.setdefault("echonet_multicast", False)
    # The fleets run on simulated time (frozen at noon on a spring day, or faster than the wall): the
    # meter's own fixed-time stamps are then far from the collector's clock and would be refused as
    # implausible, as they should.  Tests of those values run a fleet at the wall clock and turn it on.
    options.setdefault("fixed_time_readings", False)
    return from_manifest(fleet.manifest(), "test-manifest", **options)


def wall_half_hour() -> datetime:
    """The latest :00/:30 of the wall clock: a frozen fleet started there stamps what a real meter would."""
    now = datetime.now(UTC)
    return now.replace(minute=30 if now.minute >= 30 else 0, second=0, microsecond=0)


@pytest.fixture
async def fleet_factory() -> AsyncIterator[Callable[..., Any]]:
    started: list[Fleet] = []

    async def make(homes: int = 2, **kw: Any) -> Fleet:
        fleet = make_fleet(homes, **kw)
        await fleet.start()
        started.append(fleet)
        return fleet

    yield make
    for fleet in started:
        await fleet.stop()


@pytest.fixture
async def frozen_fleet(fleet_factory: Callable[..., Any]) -> Fleet:
    fleet: Fleet = await fleet_factory(2)
    return fleet


class LimitedNode(asyncio.DatagramProtocol):
    """A device (test-local UDP responder) that answers only the first ``limit`` properties of a Get,
    as some real devices do (interop.md): the rest listed with PDC 0 in a Get_SNA, or, with ``omit``,
    left out of a Get_Res.  Each answered property's data is 1 and its own EPC (a property map listing
    itself, so a map read from it decodes)."""

    def __init__(self, limit: int, omit: bool = False) -> None:
        self.limit = limit
        self.omit = omit
        self.requests: list[int] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        frame = decode(data)
        self.requests.append(len(frame.props))
        answered = [Property(p.epc, bytes((1, p.epc))) for p in frame.props[: self.limit]]
        rest = [] if self.omit else [Property(p.epc) for p in frame.props[self.limit :]]
        esv = ESV.GET_SNA if rest else ESV.GET_RES
        assert self.transport is not None
        reply = Frame(frame.tid, frame.deoj, frame.seoj, esv, (*answered, *rest))
        self.transport.sendto(encode(reply), (addr[0], 3610))  # answers go to port 3610
