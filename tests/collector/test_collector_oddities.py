"""ECHONET Lite devices that bend the spec in ways real equipment does, each read by the collector over
real UDP sockets: a scripted node (test-local, below) answers as told, the collector must keep reading
what can be read and say in health what it could not.

Cases: frames with trailing bytes after the last property, an EDT whose length is not the class's,
a Get property map (0x9F) that does not decode, a Get_SNA that lists none of the properties asked
(OPC 0), a node that always answers late, an INFC sent from another port; and cases found sound."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from collector.config import CollectorConfig, DeviceConfig
from collector.reading import Reading
from collector.runner import Collector
from protocols.echonet.frame import (
    CONTROLLER,
    EOJ,
    ESV,
    NODE_PROFILE,
    Frame,
    Property,
    decode,
    encode,
    encode_property_map,
    pack_int,
    pack_uint,
)
from protocols.echonet.node_profile import node_profile_values
from tests.collector.test_collector_profiles import collect
from tests.loopback import free_prefix

METER = EOJ(0x02, 0x88, 0x01)


def meter_values(power_w: int = 1234, energy_kwh_tenths: int = 56789) -> dict[int, bytes]:
    """A smart meter's answers: power, coefficient 1, 6 digits, unit 0.1 kWh, a cumulative import."""
    values = {
        0xE7: pack_int(power_w, 4),
        0xD3: pack_uint(1, 4),
        0xD7: b"\x06",
        0xE1: b"\x01",  # 0.1 kWh
        0xE0: pack_uint(energy_kwh_tenths, 4),
    }
    values[0x9F] = encode_property_map([*values, 0x9F])
    return values


@dataclass
class ScriptedNode(asyncio.DatagramProtocol):
    """One ECHONET node holding ``objects`` (EOJ -> EPC -> EDT), answering every Get to port 3610.

    ``trailing``: bytes appended after the last property of every answer.  ``delay_s``: every answer
    leaves this long after its request.  ``sna_opc0``: a Get asking
    for any property the object lacks is answered Get_SNA with no property at all (OPC 0), as some
    devices do; otherwise lacking properties come back with PDC 0."""

    objects: dict[EOJ, dict[int, bytes]]
    trailing: bytes = b""
    sna_opc0: bool = False
    delay_s: float = 0.0
    extra: tuple[Property, ...] = ()
    reply_port: int | None = None
    asked: list[tuple[int, ...]] = field(default_factory=list)
    acks: list[Frame] = field(default_factory=list)  # INFC_Res the node received on port 3610
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        frame = decode(data)
        if frame.esv == ESV.INFC_RES:
            self.acks.append(frame)
        if frame.esv != ESV.GET:
            return
        if frame.deoj == NODE_PROFILE:
            values = node_profile_values(list(self.objects))
        else:
            values = self.objects.get(frame.deoj, {})
        self.asked.append(tuple(p.epc for p in frame.props))
        props = tuple(Property(p.epc, values.get(p.epc, b"")) for p in frame.props)
        lacking = any(not p.edt for p in props)
        if lacking and self.sna_opc0:
            props = ()
        props += self.extra
        esv = ESV.GET_SNA if lacking else ESV.GET_RES
        reply = encode(Frame(frame.tid, frame.deoj, frame.seoj, esv, props)) + self.trailing
        assert self.transport is not None
        if self.reply_port is not None:  # from another socket of the node, an ephemeral port
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                other.bind((self.transport.get_extra_info("sockname")[0], 0))
                other.sendto(reply, (addr[0], 3610))
            return
        if self.delay_s:
            asyncio.get_running_loop().call_later(self.delay_s, self.transport.sendto, reply, (addr[0], 3610))
        else:
            self.transport.sendto(reply, (addr[0], 3610))


@pytest.fixture
async def scripted() -> AsyncIterator[Callable[..., Any]]:
    """Start a scripted node on a free loopback prefix; returns (node, collector config)."""
    transports: list[asyncio.DatagramTransport] = []

    async def make(node: ScriptedNode) -> CollectorConfig:
        prefix = free_prefix()
        address = f"{prefix}.0.1"
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: node, local_addr=(address, 3610)
        )
        transports.append(transport)
        devices = tuple(
            DeviceConfig("h1", "smart_meter", "electricity", "echonet", address, 3610, 0.2, 0.3, eoj=eoj)
            for eoj in node.objects
        )
        return CollectorConfig(
            devices,
            echonet_bind=f"{prefix}.255.1",
            echonet_multicast=False,
            timeout_s=0.3,
            backoff_base_s=0.2,
            backoff_max_s=0.4,
            discovery_wait_s=0.2,
            fixed_time_readings=False,
            health_interval_s=0,
        )

    yield make
    for transport in transports:
        transport.close()


def fields_of(readings: list[Reading]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in readings:
        out.update(r.fields)
    return out


async def test_answers_with_trailing_bytes_are_read(scripted: Callable[..., Any]) -> None:
    """Some devices pad their frames (two zero bytes after the last property).  OPC and PDC say where
    the properties end, so the answer is read, and the padding counted (before: every answer was
    malformed, the device never read)."""
    node = ScriptedNode({METER: meter_values()}, trailing=b"\x00\x00")
    collector = Collector(await scripted(node))
    readings = await collect(collector, 1.0)
    assert fields_of(readings).get("power_w") == 1234
    assert fields_of(readings).get("import_wh_total") == pytest.approx(5_678_900)
    assert collector.health()["h1/smart_meter"].reason == "ok", collector.health()
    assert collector.controller.stats.trailing > 0


async def test_the_scripted_meter_answering_by_the_spec_is_read(scripted: Callable[..., Any]) -> None:
    """The control for the cases below: the same node without its quirk reads whole and healthy."""
    collector = Collector(await scripted(ScriptedNode({METER: meter_values()})))
    readings = await collect(collector, 1.0)
    assert fields_of(readings).get("power_w") == 1234
    assert fields_of(readings).get("import_wh_total") == pytest.approx(5_678_900)
    assert collector.health()["h1/smart_meter"].reason == "ok", collector.health()


async def test_a_property_of_an_unexpected_length_costs_only_itself(scripted: Callable[..., Any]) -> None:
    """The reverse energy (0xE3) comes in 3 bytes where the class says 4: that one value is left out and
    health says which and why; the import counter of the same answer is read (before: the whole answer
    was malformed, so the meter's counters were never read again)."""
    values = meter_values()
    values[0xE3] = b"\x00\x01\x02"
    values[0x9F] = encode_property_map([*values, 0x9F])
    collector = Collector(await scripted(ScriptedNode({METER: values})))
    readings = await collect(collector, 1.0)
    fields = fields_of(readings)
    assert fields.get("import_wh_total") == pytest.approx(5_678_900) and fields.get("power_w") == 1234
    assert "export_wh_total" not in fields
    health = collector.health()["h1/smart_meter"]
    assert health.reason == "partial" and "0xE3" in health.message and "3 bytes" in health.message, health


async def test_a_property_map_that_does_not_decode_does_not_stop_polling(
    scripted: Callable[..., Any],
) -> None:
    """The Get property map's count byte says one more EPC than it lists: the map cannot be trusted, so
    the collector polls what the class lists (as for a device giving no map), says so in health, and asks
    for the map again later (before: every poll failed as malformed, nothing was ever read)."""
    values = meter_values()
    listed = sorted(values)
    values[0x9F] = bytes((len(listed) + 1, *listed))
    node = ScriptedNode({METER: values})
    collector = Collector(await scripted(node))
    readings = await collect(collector, 1.0)
    fields = fields_of(readings)
    assert fields.get("power_w") == 1234 and fields.get("import_wh_total") == pytest.approx(5_678_900)
    health = collector.health()["h1/smart_meter"]
    assert health.healthy and "0x9F" in health.message, health
    assert collector._echonet["h1/smart_meter"].readable is None  # never kept
    assert sum(1 for asked in node.asked if 0x9F in asked) > 1  # asked again


async def test_a_get_sna_listing_no_property_means_no_data(scripted: Callable[..., Any]) -> None:
    """The meter lists the reverse energy (0xE3) in its map but has no value for it, and answers any Get
    that asks for it with a Get_SNA of no property at all (OPC 0).  Asked alone, that answer means "no
    data for this one"; every other value is read (before: "answer lacks the one EPC asked", malformed,
    so no counter poll ever succeeded)."""
    values = meter_values()
    values[0x9F] = encode_property_map([*values, 0xE3])
    node = ScriptedNode({METER: values}, sna_opc0=True)
    collector = Collector(await scripted(node))
    readings = await collect(collector, 1.2)
    fields = fields_of(readings)
    assert fields.get("power_w") == 1234 and fields.get("import_wh_total") == pytest.approx(5_678_900)
    assert "export_wh_total" not in fields
    assert collector.health()["h1/smart_meter"].healthy, collector.health()


async def test_a_device_that_always_answers_late_is_read(scripted: Callable[..., Any]) -> None:
    """Every answer leaves 0.5 s after its request, the collector waits 0.3 s: its late answers show the
    device is there but slow, so the wait for that device grows to cover them and it is read (before:
    every poll timed out, forever, although every answer came)."""
    node = ScriptedNode({METER: meter_values()}, delay_s=0.5)
    collector = Collector(await scripted(node))
    readings = await collect(collector, 3.0)
    fields = fields_of(readings)
    assert fields.get("power_w") == 1234 and fields.get("import_wh_total") == pytest.approx(5_678_900)
    assert collector.health()["h1/smart_meter"].healthy, collector.health()
    assert collector.controller.stats.timeouts_raised >= 1


async def test_sound_cases_read_whole(scripted: Callable[..., Any]) -> None:
    """Cases found sound, kept as coverage: two meter instances on one node (0xD6 lists both) each read
    with its own values, a Get property map in the bitmap form (16 or more EPCs), an answer carrying
    properties not asked for (OPC larger than asked), and answers sent from another source port."""
    first = meter_values(power_w=111)
    many = [*range(0x80, 0x8A), 0x9D, 0x9E, 0x9F, 0xD3, 0xD7, 0xE0, 0xE1, 0xE7]
    first.update({epc: b"\x30" for epc in range(0x80, 0x8A)})
    first[0x9F] = encode_property_map(many)
    assert len(first[0x9F]) == 17  # the bitmap form
    second = meter_values(power_w=222)
    node = ScriptedNode(
        {METER: first, EOJ(0x02, 0x88, 0x02): second}, extra=(Property(0xF0, b"\x01"),), reply_port=0
    )
    config = await scripted(node)
    devices = (config.devices[0], replace(config.devices[1], device="smart_meter_2"))
    collector = Collector(replace(config, devices=devices))
    readings = await collect(collector, 1.0)
    by_device: dict[str, dict[str, Any]] = {}
    for r in readings:
        by_device.setdefault(r.device, {}).update(r.fields)
    assert by_device["smart_meter"]["power_w"] == 111 and by_device["smart_meter_2"]["power_w"] == 222
    assert all("import_wh_total" in f for f in by_device.values()), by_device
    assert all(h.reason == "ok" for h in collector.health().values()), collector.health()


async def test_infc_from_another_source_port_is_acknowledged_to_port_3610(
    scripted: Callable[..., Any],
) -> None:
    """A node sends its INFC from an ephemeral port and, as the spec has it, listens for the INFC_Res on
    port 3610: the acknowledgement must go there (before: it went back to the INFC's source port, where
    nobody listens, so the node never heard it and the value still became a reading)."""
    node = ScriptedNode({METER: meter_values()})
    config = await scripted(node)
    collector = Collector(config)
    await collector.start()
    address = config.devices[0].address
    try:
        assert node.transport is not None
        infc = Frame(0x4242, METER, CONTROLLER, ESV.INFC, (Property(0xE7, pack_int(777, 4)),))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as ephemeral:
            ephemeral.bind((address, 0))
            ephemeral.sendto(encode(infc), (config.echonet_bind, 3610))
            for _ in range(50):
                if node.acks:
                    break
                await asyncio.sleep(0.02)
    finally:
        await collector.stop()
    assert [(f.tid, f.esv) for f in node.acks] == [(0x4242, ESV.INFC_RES)]
