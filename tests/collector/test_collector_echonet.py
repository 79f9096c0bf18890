"""The ECHONET Lite controller against real nodes: notifications, INFC acknowledgement, TID matching,
and batch shrinking."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from collector.echonet_client import EchonetController
from collector.reading import Reading
from collector.runner import Collector
from devices.fleet import Fleet
from protocols.echonet.frame import CONTROLLER, EOJ, ESV, Frame, Property, decode, encode
from tests.collector.conftest import LimitedNode, SteerableHousehold, config_for, controller_address

BATTERY = EOJ(0x02, 0x7D, 0x01)


async def test_infc_is_acknowledged_and_becomes_a_reading(fleet_factory: Callable[..., Any]) -> None:
    fleet: Fleet = await fleet_factory(1, household_factory=SteerableHousehold)
    collector = Collector(config_for(fleet, power_interval_s=5.0, counter_interval_s=5.0))
    home = fleet.homes[0]
    readings: list[Reading] = []
    await collector.start()

    async def drain() -> None:
        async for r in collector.readings():
            readings.append(r)

    task = asyncio.get_running_loop().create_task(drain())
    try:
        # one poll makes the node remember us as a controller (first polls are spread over 5 s)
        await collector.controller.get(home.address, BATTERY, [0xCF])
        node = home.echonet_node
        node.check_announcements()  # baseline
        household: SteerableHousehold = home.household  # type: ignore[assignment]
        before = household.state()
        household.override = {"battery_w": -1500.0 if before.battery_w >= 0 else 1500.0}
        assert node.check_announcements() >= 1  # CF changed: INFC goes to us
        for _ in range(50):
            if node.stats.infc_res and any(r.fields.get("state") for r in readings if r.device == "battery"):
                break
            await asyncio.sleep(0.02)
    finally:
        await collector.stop()
        await task
    assert collector.controller.stats.infc_acked >= 1
    assert node.stats.infc_res >= 1  # the node received our INFC_Res (same TID)
    pushed = [r for r in readings if r.device == "battery"]
    assert pushed and pushed[-1].fields["state"] == ("discharging" if before.battery_w >= 0 else "charging")
    assert collector.stats()["pushed"] >= 1


async def test_batch_shrinks_when_a_device_answers_fewer_epcs(fleet_factory: Callable[..., Any]) -> None:
    fleet: Fleet = await fleet_factory(1)
    node_address = fleet.homes[0].address.rsplit(".", 1)[0] + ".200"
    loop = asyncio.get_running_loop()
    fake = LimitedNode(limit=3, omit=True)  # leaves out what it does not answer
    transport, _ = await loop.create_datagram_endpoint(lambda: fake, local_addr=(node_address, 3610))
    ctl = EchonetController(controller_address(fleet), multicast=False, timeout_s=0.5)
    await ctl.start()
    try:
        epcs = list(range(0xE0, 0xEA))  # 10 EPCs
        result = await ctl.get(node_address, BATTERY, epcs)
        assert result.values == {e: bytes((1, e)) for e in epcs}  # everything, despite the limit
        assert ctl.batch_limit(node_address, BATTERY) == 3
        assert ctl.stats.batch_shrinks == 1
        fake.requests.clear()
        await ctl.get(node_address, BATTERY, epcs)
        assert fake.requests == [3, 3, 3, 1]  # the learned limit is used from the start
        # the device gets a firmware update and takes more: the limit is probed up again
        fake.limit = 16
        for _ in range(40):
            await ctl.get(node_address, BATTERY, epcs)
        assert ctl.batch_limit(node_address, BATTERY) >= 6
    finally:
        await ctl.stop()
        transport.close()


async def test_answers_are_matched_by_tid_and_late_ones_are_dropped(
    fleet_factory: Callable[..., Any],
) -> None:
    """A slow node answers after the timeout: the late answer must not satisfy the next request."""
    fleet: Fleet = await fleet_factory(1)
    node_address = fleet.homes[0].address.rsplit(".", 1)[0] + ".201"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((node_address, 3610))
    sock.setblocking(False)
    ctl = EchonetController(controller_address(fleet), multicast=False, timeout_s=0.2)
    await ctl.start()
    loop = asyncio.get_running_loop()
    try:
        first = loop.create_task(ctl.get(node_address, BATTERY, [0xE4]))
        data, addr = await loop.sock_recvfrom(sock, 512)
        req1 = decode(data)
        try:
            await first
        except Exception as exc:
            assert getattr(exc, "reason", "") == "timeout"
        second = loop.create_task(ctl.get(node_address, BATTERY, [0xE4]))
        data, addr = await loop.sock_recvfrom(sock, 512)
        req2 = decode(data)
        assert req2.tid != req1.tid
        # the late answer to the first request, then the right one
        for req, soc in ((req1, 11), (req2, 77)):
            reply = Frame(req.tid, BATTERY, CONTROLLER, ESV.GET_RES, (Property(0xE4, bytes((soc,))),))
            sock.sendto(encode(reply), addr)
        result = await second
        assert result.values == {0xE4: bytes((77,))}
        assert ctl.stats.late == 1
    finally:
        await ctl.stop()
        sock.close()


async def test_boot_announcement_updates_discovery(fleet_factory: Callable[..., Any]) -> None:
    """A node that boots after the collector started announces its instance list (INF 0xD5 to the
    multicast group); a collector listening to the group learns about it without asking."""
    first: Fleet = await fleet_factory(1)
    collector = Collector(config_for(first, listen_multicast=True))
    await collector.controller.start()
    collector.controller.on_notification = collector._notification  # no polling needed
    try:
        late: Fleet = await fleet_factory(1, echonet_options={"multicast": True, "announce_interval_s": None})
        address = late.homes[0].address
        for _ in range(50):
            if address in collector.discovery.nodes:
                break
            await asyncio.sleep(0.02)
    finally:
        await collector.controller.stop()
    assert len(collector.discovery.nodes[address]) == 7
