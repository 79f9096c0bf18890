"""pychonet 2.8.2 (the library behind Home Assistant's ECHONET Lite integration) as a controller of our
emulated home: it discovers the node, reads every object's property maps and reads values with its own
decoders, and they are the household's values.

pychonet listens where ECHONET Lite answers go (its own address, port 3610), on an address of this run's
loopback /16.  Its known quirks are avoided, not tested: it decodes 0x83/0x8A twice and raises, and a
Get answered with Get_SNA comes back to it as a timeout (interop.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pychonet import Factory
from pychonet.echonetapiclient import ECHONETAPIClient
from pychonet.lib.udpserver import UDPServer

from devices.echonet.classes import DEVICE_KINDS
from devices.fleet import Fleet
from tests.loopback import free_prefix

NOON_JST = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
NET = free_prefix()


@pytest.fixture
async def home_and_client() -> AsyncIterator[tuple[Fleet, ECHONETAPIClient]]:
    fleet = Fleet(
        1, 7, speed=0, start=NOON_JST, modbus=False, address_prefix=NET,
        echonet_options={"multicast": False, "announce_interval_s": None},
    )  # fmt: skip
    await fleet.start()
    udp = UDPServer(local_ip=f"{NET}.255.9")
    udp.run(f"{NET}.255.9", 3610, asyncio.get_running_loop())
    api = ECHONETAPIClient(udp)
    api.configure(message_timeout=30, logger=lambda *_: None)  # 3 s, in pychonet's 0.1 s ticks
    try:
        yield fleet, api
    finally:
        udp.close()
        await fleet.stop()


async def test_pychonet_discovers_maps_and_reads_our_emulated_home(
    home_and_client: tuple[Fleet, ECHONETAPIClient],
) -> None:
    fleet, api = home_and_client
    home = fleet.homes[0]
    host = home.address
    await api.discover(host)
    instances: dict[int, Any] = api._state[host]["instances"]
    listed = {(gc, cc, ci) for gc in instances for cc in instances[gc] for ci in instances[gc][cc]}
    assert listed == {tuple(kind.eoj) for kind in DEVICE_KINDS.values()}
    for kind in DEVICE_KINDS.values():
        gc, cc, ci = kind.eoj
        await api.getAllPropertyMaps(host, gc, cc, ci)
        # pychonet keeps the maps decoded as lists of EPCs: the same as what the object serves
        got_map = instances[gc][cc][ci][0x9F]
        assert sorted(got_map) == sorted(kind.cls.get_epcs), kind.device
    st = home.household.state()

    meter = Factory(host, api, 0x02, 0x88, 0x01)
    values = await meter.update([0xE7, 0xE0, 0xE1, 0xD7, 0xE8])
    assert values[0xE7] == round(st.grid_w)
    assert values[0xE0] == int(st.grid_import_wh_total / 100.0) % 10**6  # 0.1 kWh steps, 6 digits
    assert values[0xE1] == 0.1 and values[0xD7] == 6
    assert values[0xE8]["r_phase_amperes"] == pytest.approx(st.grid_w / 200, abs=0.051)

    battery = Factory(host, api, 0x02, 0x7D, 0x01)
    values = await battery.update([0xD3, 0xE4, 0xA5])
    assert values[0xD3] == round(st.battery_w) and values[0xE4] == round(st.battery_soc_pct)
    capacity_wh = home.echonet_node.by_device["battery"].ctx.settings["capacity_wh"]
    assert values[0xA5] == pytest.approx(capacity_wh * st.battery_soc_pct / 100, abs=1)

    solar = Factory(host, api, 0x02, 0x79, 0x01)
    values = await solar.update([0xE0, 0xE1])
    assert values[0xE0] == round(st.pv_w) and values[0xE1] == int(st.pv_wh_total) % 10**9

    water = Factory(host, api, 0x02, 0x81, 0x01)
    assert await water.update(0xE0) == int(st.water_l_total) % 10**9  # 1 L per count (unit 0x03)
