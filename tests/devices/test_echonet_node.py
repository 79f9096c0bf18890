"""Emulated ECHONET Lite nodes over real UDP sockets on loopback (node 127.N.211.x:3610, client on
127.N.212.x:3610): request/response rules of protocols.md §1.3, announcements, discovery and every fault."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from devices.echonet.classes import DEVICE_KINDS
from devices.echonet.home import build_home_node
from devices.echonet.node import EchonetNode, EchonetObject, MulticastResponder, _Announcer
from devices.echonet.table import DeviceContext, PropertyDef, build_class
from devices.state import Faults, HomeState
from protocols.echonet.classes import CLASSES
from protocols.echonet.frame import (
    CONTROLLER,
    EOJ,
    ESV,
    MULTICAST_GROUP,
    NODE_PROFILE,
    PORT,
    Frame,
    FrameError,
    Property,
    decode,
    decode_int,
    decode_property_map,
    decode_uint,
    encode,
)
from tests.loopback import free_prefix

METER = EOJ(0x02, 0x88, 0x01)
SOLAR = EOJ(0x02, 0x79, 0x01)
BATTERY = EOJ(0x02, 0x7D, 0x01)
WATER = EOJ(0x02, 0x81, 0x01)
GAS = EOJ(0x02, 0x82, 0x01)
FUEL_CELL = EOJ(0x02, 0x7C, 0x01)
EV = EOJ(0x02, 0x7E, 0x01)
T0 = datetime(2026, 7, 1, 3, 10, tzinfo=UTC)  # 12:10 in Tokyo
# This run's loopback /16 (nodes at .211.x, .213.x and .214.x, clients at .212.x, all on port 3610):
# two test runs at once pick different ones, as the collector fixtures do.
NET = free_prefix()


def make_state(**changes: Any) -> HomeState:
    base = HomeState(
        ts=T0,
        pv_w=3000.0,
        load_w=800.0,
        battery_w=1200.0,
        battery_soc_pct=55.4,
        grid_w=-1000.0,
        fuelcell_w=0.0,
        ev_w=0.0,
        ev_connected=False,
        ev_soc_pct=60.0,
        water_lpm=0.0,
        gas_lph=0.0,
        pv_wh_total=12_345.6,
        grid_import_wh_total=5_000.0,
        grid_export_wh_total=2_500.0,
        battery_charge_wh_total=3_000.0,
        battery_discharge_wh_total=2_000.0,
        fuelcell_wh_total=700.0,
        ev_charge_wh_total=0.0,
        ev_discharge_wh_total=0.0,
        water_l_total=1234.0,
        gas_l_total=456.0,
    )
    return dataclasses.replace(base, **changes)


class Home:
    """A household whose state the test sets directly (the physics is tested elsewhere)."""

    household_id = "hh-test000001"

    def __init__(self) -> None:
        self.current = make_state()

    def state(self) -> HomeState:
        return self.current


class Client(asyncio.DatagramProtocol):
    """A controller on its own loopback address; replies are queued with their source address."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None
        self.tid = 0
        self.notifications: list[Frame] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, addr))

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(data, addr)

    async def raw(self, timeout: float = 1.0) -> tuple[bytes, tuple[str, int]]:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def recv(self, timeout: float = 1.0) -> Frame:
        return decode((await self.raw(timeout))[0])

    async def silent(self, timeout: float = 0.3) -> bool:
        """Nothing but notifications (kept in ``notifications``) arrives within ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                frame = decode((await self.raw(max(0.0, deadline - loop.time())))[0])
            except TimeoutError:
                return True
            if frame.esv not in (ESV.INF, ESV.INFC):
                return False
            self.notifications.append(frame)

    async def ask(
        self, node: str, deoj: EOJ, esv: int, props: list[Property], set_props: list[Property] | None = None
    ) -> Frame:
        self.tid += 1
        frame = Frame(
            self.tid, CONTROLLER, deoj, esv, tuple(props), None if set_props is None else tuple(set_props)
        )
        self.send(encode(frame), (node, PORT))
        while True:  # notifications a Set caused may arrive in between: set them aside
            reply = await self.recv()
            if reply.tid == self.tid and (
                reply.esv != ESV.INFC and (reply.esv != ESV.INF or esv == ESV.INF_REQ)
            ):
                return reply
            self.notifications.append(reply)

    async def get(self, node: str, deoj: EOJ, *epcs: int) -> Frame:
        return await self.ask(node, deoj, ESV.GET, [Property(e) for e in epcs])


async def open_client(address: str = "") -> Client:
    """A controller listening where nodes answer: its own address, the ECHONET Lite port."""
    loop = asyncio.get_running_loop()
    _, client = await loop.create_datagram_endpoint(Client, local_addr=(address or f"{NET}.212.7", PORT))
    return client


def multicast_listener() -> socket.socket:
    """A socket that hears what nodes announce to 224.0.23.0 on loopback."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((MULTICAST_GROUP, PORT))
    sock.setsockopt(
        socket.IPPROTO_IP,
        socket.IP_ADD_MEMBERSHIP,
        socket.inet_aton(MULTICAST_GROUP) + socket.inet_aton("127.0.0.1"),
    )
    sock.setblocking(False)
    return sock


async def heard_from(sock: socket.socket, source: str, timeout: float = 2.0) -> Frame:
    """The next announcement from ``source`` (other processes' nodes may share the group)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        data, addr = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), deadline - loop.time())
        if addr[0] == source:
            return decode(data)


ADDR = f"{NET}.211.1"


@pytest.fixture
async def home() -> Home:
    return Home()


@pytest.fixture
async def faults() -> dict[str, Faults]:
    return {}


@pytest.fixture
async def node(home: Home, faults: dict[str, Faults]) -> AsyncIterator[EchonetNode]:
    n = build_home_node(
        ADDR,
        home,
        faults,
        {"smart_meter": {"import_offset_wh": 0.0}},
        announce_interval_s=None,
        multicast=False,
    )
    await n.start()
    yield n
    await n.stop()


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    c = await open_client()
    yield c
    assert c.transport is not None
    c.transport.close()


def values(frame: Frame) -> dict[int, bytes]:
    return {p.epc: p.edt for p in frame.props}


# --- Get ------------------------------------------------------------------------------------------


async def test_get_res_meter_values(node: EchonetNode, client: Client) -> None:
    reply = await client.get(ADDR, METER, 0xE7, 0xE0, 0xE1, 0xD3, 0xD7, 0xE3, 0xE8, 0x80, 0x8A)
    assert reply.esv == ESV.GET_RES
    assert (reply.seoj, reply.deoj, reply.tid) == (METER, CONTROLLER, client.tid)
    v = values(reply)
    assert [p.epc for p in reply.props] == [0xE7, 0xE0, 0xE1, 0xD3, 0xD7, 0xE3, 0xE8, 0x80, 0x8A]
    assert decode_int(v[0xE7]) == -1000  # exporting: negative
    assert v[0xE1] == b"\x01" and decode_uint(v[0xD3]) == 1 and v[0xD7] == b"\x06"
    assert decode_uint(v[0xE0]) == 50  # 5,000 Wh in 0.1 kWh steps
    assert decode_uint(v[0xE3]) == 25
    assert decode_int(v[0xE8][:2]) == decode_int(v[0xE8][2:]) == -50  # -5.0 A on each line at 200 V
    assert v[0x80] == b"\x30" and v[0x8A] == b"\xff\xff\xff"


async def test_values_of_every_class(node: EchonetNode, client: Client, home: Home) -> None:
    home.current = make_state(ev_connected=True, ev_w=3000.0, fuelcell_w=650.0)
    v = values(await client.get(ADDR, SOLAR, 0xE0, 0xE1, 0xE3, 0xD0, 0xD1, 0xE8, 0x88, 0xA0))
    assert decode_uint(v[0xE0]) == 3000 and decode_uint(v[0xE1]) == 12_345 and decode_uint(v[0xE3]) == 2_500
    assert v[0x88] == b"\x42" and v[0xA0] == b"\x64" and v[0xD1] == b"\x44"
    v = values(await client.get(ADDR, BATTERY, 0xD3, 0xE4, 0xCF, 0xD6, 0xD8, 0xA8, 0xA9, 0xDA, 0xE6))
    assert decode_int(v[0xD3]) == 1200 and v[0xE4] == bytes((55,)) and v[0xCF] == b"\x42"
    assert decode_uint(v[0xD6]) == 2_000 and decode_uint(v[0xD8]) == 3_000 and v[0xA8] == v[0xD8]
    assert v[0xE6] == b"\x04"
    v = values(await client.get(ADDR, WATER, 0xE0, 0xE1))
    assert decode_uint(v[0xE0]) == 1234 and v[0xE1] == b"\x03"  # 0.001 m3 per count
    assert decode_uint(values(await client.get(ADDR, GAS, 0xE0))[0xE0]) == 456
    v = values(await client.get(ADDR, FUEL_CELL, 0xC4, 0xC5, 0xCB))
    assert decode_uint(v[0xC4]) == 650 and decode_uint(v[0xC5]) == 700 and v[0xCB] == b"\x41"
    reply = await client.get(ADDR, EV, 0xC7, 0xD3, 0xE4, 0xE2)
    assert reply.esv == ESV.GET_RES
    v = values(reply)
    assert v[0xC7] == b"\x43" and decode_int(v[0xD3]) == 3000 and v[0xE4] == bytes((60,))


async def test_get_sna_keeps_every_epc_in_order(node: EchonetNode, client: Client) -> None:
    reply = await client.get(ADDR, METER, 0xE7, 0xF0, 0xE0)
    assert reply.esv == ESV.GET_SNA
    assert [(p.epc, len(p.edt)) for p in reply.props] == [(0xE7, 4), (0xF0, 0), (0xE0, 4)]
    # the EV cannot report its battery while unplugged (the MRA's note): Get_SNA is normal there
    reply = await client.get(ADDR, EV, 0xC7, 0xE4, 0xC2, 0xD8)
    assert reply.esv == ESV.GET_SNA
    assert values(reply)[0xC7] == b"\x30"
    assert [len(p.edt) for p in reply.props] == [1, 0, 0, 4]


async def test_property_maps_match_what_is_served(node: EchonetNode, client: Client) -> None:
    for kind in DEVICE_KINDS.values():
        v = values(await client.get(ADDR, kind.eoj, 0x9D, 0x9E, 0x9F))
        get_map = decode_property_map(v[0x9F])
        assert set(get_map) == set(kind.cls.get_epcs)
        assert set(decode_property_map(v[0x9E])) == kind.cls.set_epcs
        # everything listed answers, but the car's battery figures while it is unplugged (as at this hour)
        unplugged = CLASSES[EV.cls].optional if kind.eoj == EV else frozenset()
        reply = await client.get(ADDR, kind.eoj, *[e for e in get_map if e not in unplugged])
        assert reply.esv == ESV.GET_RES, kind.device


async def test_node_profile(node: EchonetNode, client: Client) -> None:
    reply = await client.get(ADDR, NODE_PROFILE, 0xD6, 0xD3, 0xD4, 0xD7, 0x83, 0x82, 0x8A, 0x80)
    v = values(reply)
    eojs = [v[0xD6][i : i + 3] for i in range(1, len(v[0xD6]), 3)]
    assert v[0xD6][0] == 7 and set(eojs) == {bytes(k.eoj) for k in DEVICE_KINDS.values()}
    assert decode_uint(b"\x00" + v[0xD3]) == 7 and decode_uint(v[0xD4]) == 8 and v[0xD7][0] == 7
    assert len(v[0x83]) == 17 and v[0x83][:4] == b"\xfe\xff\xff\xff"
    assert v[0x82] == bytes.fromhex("010d0100") and v[0x80] == b"\x30"
    # the unique part is stable per household and differs between households
    same = build_home_node(f"{NET}.211.9", Home(), {}, multicast=False, announce_interval_s=None)
    assert same.profile.ctx.ident == v[0x83]
    neighbour = Home()
    neighbour.household_id = "hh-test000002"
    assert build_home_node(ADDR, neighbour, {}).profile.ctx.ident != v[0x83]


async def test_deoj_instance_zero_and_unknown_objects(node: EchonetNode, client: Client) -> None:
    reply = await client.get(ADDR, EOJ(0x02, 0x88, 0x00), 0xE7)
    assert reply.seoj == METER and reply.esv == ESV.GET_RES
    client.send(
        encode(Frame(77, CONTROLLER, EOJ(0x02, 0x88, 0x02), ESV.GET, (Property(0xE7),))), (ADDR, PORT)
    )
    client.send(
        encode(Frame(78, CONTROLLER, EOJ(0x01, 0x30, 0x01), ESV.GET, (Property(0x80),))), (ADDR, PORT)
    )
    assert await client.silent()
    assert node.stats.ignored == 2


# --- Set ------------------------------------------------------------------------------------------


async def test_setc_set_res_and_setc_sna(node: EchonetNode, client: Client) -> None:
    reply = await client.ask(ADDR, BATTERY, ESV.SETC, [Property(0xDA, b"\x42")])
    assert reply.esv == ESV.SET_RES and reply.props == (Property(0xDA),)
    assert values(await client.get(ADDR, BATTERY, 0xDA))[0xDA] == b"\x42"
    reply = await client.ask(ADDR, BATTERY, ESV.SETC, [Property(0xDA, b"\x99")])
    assert reply.esv == ESV.SETC_SNA and reply.props == (Property(0xDA, b"\x99"),)
    reply = await client.ask(ADDR, BATTERY, ESV.SETC, [Property(0xDA, b"\x43"), Property(0xE4, b"\x10")])
    assert reply.esv == ESV.SETC_SNA
    assert reply.props == (Property(0xDA), Property(0xE4, b"\x10"))  # accepted at PDC 0, rejected echoed
    assert values(await client.get(ADDR, BATTERY, 0xDA))[0xDA] == b"\x43"
    reply = await client.ask(ADDR, METER, ESV.SETC, [Property(0xE5, b"\x07")])
    assert reply.esv == ESV.SET_RES
    reply = await client.ask(ADDR, SOLAR, ESV.SETC, [Property(0xA0, b"\x32")])
    assert reply.esv == ESV.SET_RES
    assert values(await client.get(ADDR, SOLAR, 0xA0, 0xD1)) == {0xA0: b"\x32", 0xD1: b"\x41"}


async def test_seti_silent_on_success_sna_on_failure(node: EchonetNode, client: Client) -> None:
    client.send(encode(Frame(5, CONTROLLER, EV, ESV.SETI, (Property(0xDA, b"\x44"),))), (ADDR, PORT))
    assert await client.silent()
    assert [n.props for n in client.notifications] == [(Property(0xDA, b"\x44"),)]  # DA is announced
    assert values(await client.get(ADDR, EV, 0xDA))[0xDA] == b"\x44"
    reply = await client.ask(ADDR, EV, ESV.SETI, [Property(0xDA, b"\x00")])
    assert reply.esv == ESV.SETI_SNA


async def test_setget(node: EchonetNode, client: Client) -> None:
    reply = await client.ask(ADDR, BATTERY, ESV.SETGET, [Property(0xDA)], [Property(0xDA, b"\x44")])
    assert reply.esv == ESV.SETGET_RES
    assert reply.set_props == (Property(0xDA),) and reply.props == (Property(0xDA, b"\x44"),)


# --- notifications ----------------------------------------------------------------------------------


async def test_inf_req_answered_by_unicast_inf(node: EchonetNode, client: Client) -> None:
    reply = await client.ask(ADDR, BATTERY, ESV.INF_REQ, [Property(0xCF)])
    assert (reply.esv, reply.tid, reply.seoj) == (ESV.INF, client.tid, BATTERY)
    assert reply.props == (Property(0xCF, b"\x42"),)
    reply = await client.ask(ADDR, EV, ESV.INF_REQ, [Property(0xE4)])
    assert reply.esv == ESV.INF_SNA


async def test_infc_on_change_and_infc_res(node: EchonetNode, client: Client, home: Home) -> None:
    await client.get(ADDR, METER, 0xE7)  # the controller is now known to the node
    assert node.check_announcements() == 0  # baseline
    home.current = make_state(battery_w=-800.0)
    assert node.check_announcements() == 1
    infc = await client.recv()
    assert (infc.esv, infc.seoj, infc.deoj) == (ESV.INFC, BATTERY, CONTROLLER)
    assert infc.props == (Property(0xCF, b"\x43"),)
    client.send(encode(Frame(infc.tid, CONTROLLER, BATTERY, ESV.INFC_RES, (Property(0xCF),))), (ADDR, PORT))
    for _ in range(50):
        if node.stats.infc_res:
            break
        await asyncio.sleep(0.01)
    assert node.stats.infc_res == 1
    assert node.check_announcements() == 0  # nothing changed since


async def test_multicast_inf_boot_and_on_change(home: Home, client: Client) -> None:
    try:
        listener = multicast_listener()
    except OSError as exc:
        pytest.skip(f"multicast on loopback unavailable here: {exc}")
    addr = f"{NET}.211.2"
    node = build_home_node(addr, home, {}, announce_interval_s=0.05)
    try:
        await node.start()
        boot = await heard_from(listener, addr)
        assert (boot.esv, boot.seoj, boot.deoj) == (ESV.INF, NODE_PROFILE, NODE_PROFILE)
        d5 = values(boot)[0xD5]
        assert d5[0] == 7 and bytes(METER) in d5
        await asyncio.sleep(0.2)  # let the loop record its baseline
        home.current = make_state(ev_connected=True)
        inf = await heard_from(listener, addr)
        assert (inf.esv, inf.seoj) == (ESV.INF, EV) and values(inf)[0xC7] == b"\x43"
    finally:
        await node.stop()
        listener.close()
    assert asyncio.get_running_loop() not in _Announcer._instances  # its shared task is gone too


async def test_multicast_discovery(client: Client) -> None:
    addresses = [f"{NET}.213.{i}" for i in range(1, 71)]  # three answer groups
    nodes = [build_home_node(a, Home(), {}, announce_interval_s=None) for a in addresses]
    for n in nodes:
        await n.start()
    try:
        if not all(n._responder is not None and n._responder.available for n in nodes):
            pytest.skip("multicast on loopback unavailable here")
        assert client.transport is not None
        sock = client.transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)
        client.send(
            encode(Frame(300, CONTROLLER, NODE_PROFILE, ESV.GET, (Property(0xD6),))), (MULTICAST_GROUP, PORT)
        )
        answered: dict[str, Frame] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2.0
        while set(answered) != set(addresses):
            data, src = await client.raw(deadline - loop.time())
            frame = decode(data)
            if frame.tid == 300 and src[0] in addresses:  # other processes' nodes may answer too
                answered[src[0]] = frame
        assert all(f.esv == ESV.GET_RES and values(f)[0xD6][0] == 7 for f in answered.values())
    finally:
        for n in nodes:
            await n.stop()
    assert asyncio.get_running_loop() not in MulticastResponder._instances


# --- faults -------------------------------------------------------------------------------------------


async def test_fault_no_reply(node: EchonetNode, client: Client, faults: dict[str, Faults]) -> None:
    faults["smart_meter"].no_reply = True
    client.send(encode(Frame(1, CONTROLLER, METER, ESV.GET, (Property(0xE7),))), (ADDR, PORT))
    assert await client.silent()
    assert node.stats.dropped == 1
    assert (await client.get(ADDR, SOLAR, 0xE0)).esv == ESV.GET_RES  # the other objects still answer
    faults["smart_meter"].clear()
    assert (await client.get(ADDR, METER, 0xE7)).esv == ESV.GET_RES


async def test_fault_malformed_and_truncated(
    node: EchonetNode, client: Client, faults: dict[str, Faults]
) -> None:
    faults["battery"].malformed = True
    client.send(encode(Frame(0x1234, CONTROLLER, BATTERY, ESV.GET, (Property(0xE4),))), (ADDR, PORT))
    data, _ = await client.raw()
    assert data[2:4] == b"\x12\x34"
    with pytest.raises(FrameError, match="EHD1"):
        decode(data)
    faults["battery"].malformed = False
    faults["battery"].truncated = True
    client.send(
        encode(Frame(2, CONTROLLER, BATTERY, ESV.GET, (Property(0xE4), Property(0xD3)))), (ADDR, PORT)
    )
    data, _ = await client.raw()
    with pytest.raises(FrameError, match=r"runs past the end|frame ends"):
        decode(data)


async def test_fault_sna_epcs(node: EchonetNode, client: Client, faults: dict[str, Faults]) -> None:
    faults["smart_meter"].sna_epcs = frozenset({0xE7})
    reply = await client.get(ADDR, METER, 0xE0, 0xE7)
    assert reply.esv == ESV.GET_SNA and reply.props[1] == Property(0xE7) and len(reply.props[0].edt) == 4


async def test_fault_stuck(node: EchonetNode, client: Client, faults: dict[str, Faults], home: Home) -> None:
    faults["solar"].stuck = True
    first = values(await client.get(ADDR, SOLAR, 0xE0, 0xE1))
    home.current = make_state(pv_w=100.0, pv_wh_total=20_000.0)
    assert values(await client.get(ADDR, SOLAR, 0xE0, 0xE1)) == first
    faults["solar"].stuck = False
    assert decode_uint(values(await client.get(ADDR, SOLAR, 0xE0))[0xE0]) == 100


async def test_fault_clock_jump(node: EchonetNode, client: Client, faults: dict[str, Faults]) -> None:
    v = values(await client.get(ADDR, METER, 0x97, 0x98, 0xEA))
    assert v[0x97] == bytes((12, 10)) and v[0x98] == bytes.fromhex("07ea0701")
    assert v[0xEA][:7] == bytes.fromhex("07ea07010c0000")  # 2026-07-01 12:00:00 local
    faults["smart_meter"].clock_offset = timedelta(hours=-13)
    v = values(await client.get(ADDR, METER, 0x97, 0x98, 0xEA))
    assert v[0x97] == bytes((23, 10)) and v[0x98] == bytes.fromhex("07ea061e")  # previous day
    assert v[0xEA][:7] == bytes.fromhex("07ea061e170000")


async def test_fault_counter_reset(
    node: EchonetNode, client: Client, faults: dict[str, Faults], home: Home
) -> None:
    assert decode_uint(values(await client.get(ADDR, METER, 0xE0))[0xE0]) == 50
    faults["smart_meter"].reset_counters(home.current)
    home.current = make_state(grid_import_wh_total=5_300.0)
    assert decode_uint(values(await client.get(ADDR, METER, 0xE0))[0xE0]) == 3
    assert (
        decode_uint(values(await client.get(ADDR, SOLAR, 0xE1))[0xE1]) == 12_345
    )  # other devices unaffected


# --- counters --------------------------------------------------------------------------------------


async def test_meter_wraps_at_d7_digits(home: Home, client: Client) -> None:
    addr = f"{NET}.211.5"
    settings = {"smart_meter": {"import_offset_wh": 99_999.8e3 - 5_000.0, "export_offset_wh": 0.0}}
    node = build_home_node(addr, home, {}, settings, announce_interval_s=None, multicast=False)
    async with node:
        assert decode_uint(values(await client.get(addr, METER, 0xE0))[0xE0]) == 999_998  # 99,999.8 kWh
        home.current = make_state(grid_import_wh_total=5_350.0)  # 100,000.15 kWh on a 6-digit register
        assert decode_uint(values(await client.get(addr, METER, 0xE0))[0xE0]) == 1
    settings = {"smart_meter": {"coefficient": 10, "unit": 0x02, "digits": 8, "import_offset_wh": 0.0}}
    node = build_home_node(addr, home, {}, settings, announce_interval_s=None, multicast=False)
    async with node:  # 5,350 Wh / (10 x 0.01 kWh)
        v = values(await client.get(addr, METER, 0xE0, 0xD3, 0xE1, 0xD7))
        assert decode_uint(v[0xE0]) == 53 and decode_uint(v[0xD3]) == 10 and v[0xD7] == b"\x08"


async def test_solar_counter_wraps_at_edt_range(node: EchonetNode, client: Client, home: Home) -> None:
    home.current = make_state(pv_wh_total=1_000_000_123.0)
    assert decode_uint(values(await client.get(ADDR, SOLAR, 0xE1))[0xE1]) == 123


async def test_fixed_time_value_interpolated_at_half_hour(
    node: EchonetNode, client: Client, home: Home
) -> None:
    home.current = make_state(ts=datetime(2026, 7, 1, 3, 20, tzinfo=UTC), grid_import_wh_total=1_000.0)
    await client.get(ADDR, METER, 0xEA)
    home.current = make_state(ts=datetime(2026, 7, 1, 3, 40, tzinfo=UTC), grid_import_wh_total=3_000.0)
    v = values(await client.get(ADDR, METER, 0xEA))[0xEA]
    assert v[:7] == bytes.fromhex("07ea07010c1e00")  # 12:30:00 local
    assert decode_uint(v[7:]) == 20  # 2,000 Wh at 12:30 in 0.1 kWh


# --- robustness -------------------------------------------------------------------------------------


async def test_random_flood_does_not_hurt(node: EchonetNode, client: Client) -> None:
    rng = random.Random(7)
    good = encode(Frame(1, CONTROLLER, METER, ESV.GET, (Property(0xE7), Property(0xE0))))
    for i in range(600):
        if i % 3 == 0:
            junk = bytearray(good)
            junk[rng.randrange(len(junk))] = rng.randrange(256)
            data = bytes(junk[: rng.randrange(len(junk) + 1)])
        else:
            data = rng.randbytes(rng.randrange(0, 64))
        client.send(data, (ADDR, PORT))
        if i % 10 == 0:
            await asyncio.sleep(0.001)  # the node's socket buffer is finite: pace the flood
    await asyncio.sleep(0.2)
    while not client.queue.empty():  # a flipped byte can still be a valid request: drain its answer
        client.queue.get_nowait()
    assert (await client.get(ADDR, METER, 0xE7)).esv == ESV.GET_RES
    assert node.stats.malformed > 200 and node.stats.errors == 0


async def test_stop_releases_the_address(home: Home) -> None:
    addr = f"{NET}.211.6"
    for _ in range(2):
        node = build_home_node(addr, home, {}, announce_interval_s=0.01)
        await node.start()
        await asyncio.sleep(0.03)
        await node.stop()
        assert node._transport is None
        assert asyncio.get_running_loop() not in _Announcer._instances
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((addr, PORT))  # free again
        taken = build_home_node(addr, home, {}, multicast=False)
        with pytest.raises(OSError, match=f"cannot bind {addr}:3610"):
            await taken.start()
        assert taken._transport is None


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown settings"):
        build_home_node(ADDR, Home(), {}, {"smart_meter": {"digitz": 5}})
    with pytest.raises(ValueError, match=r"digits \(0xD7\)"):
        build_home_node(ADDR, Home(), {}, {"smart_meter": {"digits": 9}})
    with pytest.raises(ValueError, match=r"unit \(0xE1\)"):
        build_home_node(ADDR, Home(), {}, {"smart_meter": {"unit": 0x05}})
    with pytest.raises(ValueError, match="unknown devices"):
        build_home_node(ADDR, Home(), {}, {"toaster": {}})


async def test_full_decoder_path_answers_like_the_fast_path(node: EchonetNode, client: Client) -> None:
    fast = await client.get(ADDR, METER, 0xE7, 0xF0, 0xE0)
    # a Get carrying data in a PDC is unusual: it takes the full decoder, and must answer the same
    slow = await client.ask(ADDR, METER, ESV.GET, [Property(0xE7, b"\x01"), Property(0xF0), Property(0xE0)])
    assert slow._replace(tid=fast.tid) == fast


async def test_a_failing_property_costs_one_request_only(home: Home, client: Client) -> None:
    def broken(st: HomeState, ctx: DeviceContext) -> bytes:  # a FAKE bug: no real property fails
        raise RuntimeError("producer bug")

    cls = build_class(0x0288, "meter with a fake bug", [PropertyDef(0xF5, "broken", 1, broken)])
    addr = f"{NET}.211.7"
    obj = EchonetObject(METER, "smart_meter", cls, home.state)
    async with EchonetNode(addr, [obj], announce_interval_s=None, multicast=False) as node:
        client.send(encode(Frame(1, CONTROLLER, METER, ESV.GET, (Property(0xF5),))), (addr, PORT))
        assert await client.silent()
        assert node.stats.errors == 1
        assert (await client.get(addr, METER, 0x80)).esv == ESV.GET_RES


async def test_home_node_on_the_real_physics(client: Client) -> None:
    from devices.physics import Household, SimClock

    # a frozen clock gives one consistent instant across all the reads
    clock = SimClock(datetime(2026, 7, 1, 3, 0, tzinfo=UTC), monotonic=lambda: 0.0)
    household = Household("hh-physics01", 5, clock)
    addr = f"{NET}.211.8"
    node = build_home_node(addr, household, {}, announce_interval_s=None, multicast=False)
    async with node:
        st = household.state()
        eq = household.equipment
        v = values(await client.get(addr, METER, 0xE0, 0xE7))
        assert decode_uint(v[0xE0]) == int(st.grid_import_wh_total / 100) % 10**6
        assert decode_int(v[0xE7]) == round(st.grid_w)
        v = values(await client.get(addr, SOLAR, 0xE8, 0xE0))
        assert decode_uint(v[0xE8]) == round(eq.pv_kw * 1000) and decode_uint(v[0xE0]) == round(st.pv_w)
        v = values(await client.get(addr, BATTERY, 0xD0, 0xE4))
        assert decode_uint(v[0xD0]) == round(eq.battery_kwh * 1000)
        assert decode_uint(v[0xE4]) == round(st.battery_soc_pct)


async def test_shared_announcer_serves_every_node(client: Client) -> None:
    homes = [Home(), Home(), Home()]
    addresses = [f"{NET}.214.{i}" for i in range(1, 4)]
    nodes = [
        build_home_node(a, h, {}, announce_interval_s=0.05, multicast=False)
        for a, h in zip(addresses, homes, strict=True)
    ]
    for n in nodes:
        await n.start()
    try:
        for a in addresses:
            await client.get(a, EV, 0xC7)  # each node now knows the controller
        await asyncio.sleep(0.15)  # every node's baseline is recorded
        for h in homes:
            h.current = make_state(ev_connected=True)
        heard: set[str] = set()
        while heard != set(addresses):
            data, src = await client.raw(2.0)
            frame = decode(data)
            assert (frame.esv, frame.seoj, values(frame)[0xC7]) == (ESV.INFC, EV, b"\x43")
            heard.add(src[0])
        await nodes[1].stop()  # the others keep being checked
        for h in homes:
            h.current = make_state(ev_connected=False)
        heard.clear()
        while heard != {addresses[0], addresses[2]}:
            heard.add((await client.raw(2.0))[1][0])
        assert asyncio.get_running_loop() in _Announcer._instances
    finally:
        for n in nodes:
            await n.stop()
    assert asyncio.get_running_loop() not in _Announcer._instances
