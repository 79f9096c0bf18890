"""Fleets of emulated homes driven by the real physics, read over real sockets by real clients.

Each test uses its own loopback /16 (``127.N``) and ephemeral Modbus ports so it can run next to other
fleets on the machine.  ``speed=0`` freezes the shared clock, so every device of a home reports the same
simulated instant and readings can be compared across devices and protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from devices.fleet import Fleet, FleetError, UnknownHouseholdError
from devices.home import UnknownDeviceError, household_id_for
from protocols.echonet.frame import CONTROLLER, EOJ, ESV, Frame, Property
from protocols.echonet.frame import decode as decode_frame
from protocols.echonet.frame import encode as encode_frame
from protocols.sunspec.models import MODELS, model_addresses
from protocols.sunspec.points import BASE_ADDRESS, SUNS_MARKER, decode_model
from tests.loopback import free_prefix

NOON_JST = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
MIDNIGHT_JST = datetime(2026, 4, 30, 15, 0, tzinfo=UTC)  # 00:00 in Tokyo
QUIET_ECHONET = {"multicast": False, "announce_interval_s": None}  # no traffic the test did not ask for


def make_fleet(homes: int = 2, **kw: Any) -> Fleet:
    kw.setdefault("speed", 0)
    kw.setdefault("start", NOON_JST)
    kw.setdefault("modbus_port", 0)
    kw.setdefault("echonet_options", QUIET_ECHONET)
    return Fleet(homes, 7, address_prefix=free_prefix(), **kw)


@pytest.fixture
async def noon() -> AsyncIterator[Fleet]:
    fleet = make_fleet()
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


async def read_model(
    fleet: Fleet, index: int, unit: int, model_id: int, models: tuple[int, ...]
) -> dict[str, Any]:
    home = fleet.homes[index]
    assert home.modbus_server is not None and home.modbus_server.port
    address = model_addresses(models)[model_id]
    model = MODELS[model_id]
    async with AsyncModbusTcpClient(home.address, port=home.modbus_server.port, timeout=1, retries=0) as c:
        assert (
            tuple((await c.read_holding_registers(BASE_ADDRESS, count=2, device_id=unit)).registers)
            == SUNS_MARKER
        )
        registers: list[int] = []
        while len(registers) < model.size:  # a float meter (126 registers) takes two reads
            count = min(125, model.size - len(registers))
            rr = await c.read_holding_registers(address + len(registers), count=count, device_id=unit)
            assert not rr.isError(), rr
            registers += rr.registers
    return decode_model(model, registers)


class _Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.replies.put_nowait(data)


async def echonet_get(address: str, eoj: EOJ, epcs: list[int]) -> dict[int, bytes]:
    """One Get from a controller on an address of the fleet's /16 that no home uses, listening on the
    ECHONET Lite port, where nodes answer."""
    loop = asyncio.get_running_loop()
    controller = address.rsplit(".", 2)[0] + ".255.7"
    transport, proto = await loop.create_datagram_endpoint(_Collector, local_addr=(controller, 3610))
    try:
        request = Frame(0x1234, CONTROLLER, eoj, ESV.GET, tuple(Property(e) for e in epcs))
        transport.sendto(encode_frame(request), (address, 3610))
        reply = decode_frame(await asyncio.wait_for(proto.replies.get(), 2))
    finally:
        transport.close()
        await asyncio.sleep(0)  # the socket closes on the loop's next turn: free the address for the next Get
    assert reply.tid == 0x1234 and reply.esv in (ESV.GET_RES, ESV.GET_SNA)
    return {p.epc: p.edt for p in reply.props if p.edt}


def _signed(edt: bytes) -> int:
    return int.from_bytes(edt, "big", signed=True)


async def test_noon_power_balances_across_devices_and_protocols(noon: Fleet) -> None:
    for index, home in enumerate(noon.homes):
        state = home.household.state()  # frozen clock: the instant every device reports
        inverter = await read_model(noon, index, 1, 102, (1, 102, 120))
        meter = await read_model(noon, index, 2, 202, (1, 202))
        battery = await read_model(noon, index, 3, 802, (1, 124, 802))
        assert inverter["W"] > 0 and inverter["St"] == 4  # producing, MPPT
        assert battery["SoCMin"] <= battery["SoC"] <= battery["SoCMax"]
        eq = home.household.equipment  # type: ignore[attr-defined]
        assert (battery["SoCMin"], battery["SoCMax"]) == (eq.soc_min_pct, eq.soc_max_pct)
        assert battery["WChaRteMax"] == eq.battery_max_w and battery["WHRtg"] == eq.battery_kwh * 1000
        em = await echonet_get(home.address, EOJ(0x02, 0x88, 0x01), [0xE7])
        fc = await echonet_get(home.address, EOJ(0x02, 0x7C, 0x01), [0xC4])
        ev = await echonet_get(home.address, EOJ(0x02, 0x7E, 0x01), [0xD3])
        # The ECHONET smart meter and the SunSpec meter of one home agree on the grid power.
        assert abs(_signed(em[0xE7]) - meter["W"]) <= 1
        fuelcell_w = int.from_bytes(fc[0xC4], "big")
        ev_w = _signed(ev[0xD3])
        # pv + fuel cell + grid == load + battery + ev, each reading rounded to 1 W.
        imbalance = inverter["W"] + fuelcell_w + meter["W"] - battery["W"] - ev_w - state.load_w
        assert abs(imbalance) <= 2.5, (inverter, meter, battery, fuelcell_w, ev_w, state)
        assert abs(inverter["W"] - state.pv_w) <= 0.5 and abs(battery["W"] - state.battery_w) <= 0.5


async def test_night_inverter_sleeps() -> None:
    fleet = make_fleet(homes=1, start=MIDNIGHT_JST, echonet=False)
    async with fleet:
        inverter = await read_model(fleet, 0, 1, 102, (1, 102, 120))
    assert inverter["W"] == 0 and inverter["St"] == 2  # SLEEPING


async def test_counters_are_monotonic_while_time_runs() -> None:
    fleet = make_fleet(homes=1, speed=7200, echonet=False)  # two simulated hours per wall second
    household: Any = fleet.homes[0].household  # devices.physics.Household
    eq = household.equipment
    seen: list[tuple[float, float, float, float]] = []
    async with fleet:
        for _ in range(6):
            meter = await read_model(fleet, 0, 2, 202, (1, 202))
            inverter = await read_model(fleet, 0, 1, 102, (1, 102, 120))
            battery = await read_model(fleet, 0, 3, 802, (1, 124, 802))
            seen.append((meter["TotWhImp"], meter["TotWhExp"], inverter["WH"], battery["SoC"]))
            await asyncio.sleep(0.2)
    for earlier, later in itertools.pairwise(seen):
        assert all(b >= a for a, b in zip(earlier[:3], later[:3], strict=True)), seen
    assert seen[-1][:3] != seen[0][:3]  # something was counted over ~2 simulated hours at midday
    assert all(eq.soc_min_pct - 0.05 <= s[3] <= eq.soc_max_pct + 0.05 for s in seen)


async def test_faults_are_per_device_and_lookups_are_checked(noon: Fleet) -> None:
    hid = noon.homes[1].household_id
    assert hid == household_id_for(7, 1)
    noon.faults(hid, "meter").modbus_exception = 4
    home = noon.homes[1]
    assert home.modbus_server is not None
    async with AsyncModbusTcpClient(
        home.address, port=home.modbus_server.port or 0, timeout=1, retries=0
    ) as c:
        rr = await c.read_holding_registers(BASE_ADDRESS, count=2, device_id=2)
        assert rr.isError() and rr.exception_code == 4
        assert not (await c.read_holding_registers(BASE_ADDRESS, count=2, device_id=1)).isError()
    # ECHONET device ids share the same per-home dict
    assert noon.faults(1, "smart_meter") is home.faults["smart_meter"]
    with pytest.raises(UnknownHouseholdError):
        noon.faults("hh-nope", "meter")
    with pytest.raises(UnknownDeviceError):
        noon.faults(hid, "toaster")


async def test_control_endpoint_switches_faults() -> None:
    fleet = make_fleet(homes=2, control_port=0)
    async with fleet:
        assert fleet.control_url
        home = fleet.homes[0]
        hid = home.household_id
        assert fleet.manifest()["homes"][0]["control_url"] == fleet.control_url
        async with aiohttp.ClientSession(fleet.control_url) as http:
            async with http.get("/faults") as r:
                everything = await r.json()
            assert set(everything) == {h.household_id for h in fleet.homes}
            assert everything[hid]["inverter"]["no_reply"] is False

            async with http.put(f"/faults/{hid}/inverter", json={"no_reply": True}) as r:
                assert r.status == 200 and (await r.json())["no_reply"] is True
            assert home.modbus_server is not None
            async with AsyncModbusTcpClient(
                home.address, port=home.modbus_server.port or 0, timeout=0.4, retries=0
            ) as c:
                with pytest.raises(ModbusIOException):
                    await c.read_holding_registers(BASE_ADDRESS, count=2, device_id=1)
            async with http.get("/faults", params={"active": "1"}) as r:
                assert await r.json() == {hid: {"inverter": (await _one(http, hid, "inverter"))}}
            async with http.put(f"/faults/{hid}/inverter", json={"clear": True}) as r:
                assert (await r.json())["no_reply"] is False

            before = (await read_model(fleet, 0, 2, 202, (1, 202)))["TotWhImp"]
            async with http.post(f"/faults/{hid}/meter/reset-counters") as r:
                assert r.status == 200 and (await r.json())["counters_reset"] is True
            after = (await read_model(fleet, 0, 2, 202, (1, 202)))["TotWhImp"]
            assert before > 1000 and after < 10

            for path, body, status in [
                ("/faults/hh-unknown/inverter", {"stuck": True}, 404),
                (f"/faults/{hid}/toaster", {"stuck": True}, 404),
                (f"/faults/{hid}/inverter", {"stuck": "yes"}, 400),
                (f"/faults/{hid}/inverter", {"volume": 11}, 400),
                (f"/faults/{hid}/meter", {"modbus_exception": 99}, 400),
                (f"/faults/{hid}/smart_meter", {"sna_epcs": ["E7", "zz"]}, 400),
            ]:
                async with http.put(path, json=body) as r:
                    assert r.status == status, (path, body, await r.text())
                    assert (await r.text()).strip()  # says why
            async with http.put(f"/faults/{hid}/inverter", data=b"{not json") as r:
                assert r.status == 400
            assert home.faults["inverter"].stuck is False  # a refused request changed nothing
            async with http.put(f"/faults/{hid}/smart_meter", json={"sna_epcs": ["E7", 0xE8]}) as r:
                assert (await r.json())["sna_epcs"] == ["E7", "E8"]


async def test_control_endpoint_raises_the_device_fault_flag() -> None:
    """``fault_flag`` makes a still-answering device report a fault: SunSpec St = FAULT with an event
    bit, ECHONET 0x88 = 0x41, a battery's alarm state; clearing it returns the healthy values."""
    fleet = make_fleet(homes=1, control_port=0)
    async with fleet:
        hid = fleet.homes[0].household_id
        address = fleet.homes[0].address
        assert fleet.control_url
        async with aiohttp.ClientSession(fleet.control_url) as http:
            inverter = await read_model(fleet, 0, 1, 102, (1, 102, 120))
            assert inverter["St"] == 4 and inverter["Evt1"] == 0
            solar = await echonet_get(address, EOJ(0x02, 0x79, 0x01), [0x88])
            assert solar[0x88] == b"\x42"
            for device in ("inverter", "solar", "storage"):
                async with http.put(f"/faults/{hid}/{device}", json={"fault_flag": True}) as r:
                    assert r.status == 200 and (await r.json())["fault_flag"] is True
            inverter = await read_model(fleet, 0, 1, 102, (1, 102, 120))
            assert inverter["St"] == 7 and inverter["Evt1"] != 0  # FAULT, ground-fault event
            assert inverter["W"] > 0  # the alarm does not change what it measures
            storage = await read_model(fleet, 0, 3, 802, (1, 124, 802))
            assert storage["State"] == 99 and storage["Evt1"] != 0  # FAULT, an alarm bit
            assert (await echonet_get(address, EOJ(0x02, 0x79, 0x01), [0x88]))[0x88] == b"\x41"
            # Only the devices it was raised on: the ECHONET battery stays healthy.
            assert (await echonet_get(address, EOJ(0x02, 0x7D, 0x01), [0x88]))[0x88] == b"\x42"
            async with http.put(f"/faults/{hid}/inverter", json={"clear": True}) as r:
                assert (await r.json())["fault_flag"] is False
            assert (await read_model(fleet, 0, 1, 102, (1, 102, 120)))["St"] == 4
            async with http.put(f"/faults/{hid}/solar", json={"fault_flag": "yes"}) as r:
                assert r.status == 400


async def _one(http: aiohttp.ClientSession, hid: str, device: str) -> Any:
    async with http.get(f"/faults/{hid}/{device}") as r:
        return await r.json()


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_start_stop_leaves_no_sockets_or_tasks_and_ports_are_reusable() -> None:
    prefix = free_prefix()
    tasks_before = len(asyncio.all_tasks())
    fds_before = _open_fds()
    port = random.randint(20_000, 30_000)
    for _ in range(2):  # the second round would fail to bind if anything leaked
        fleet = Fleet(
            3,
            1,
            speed=0,
            start=NOON_JST,
            modbus_port=port,
            address_prefix=prefix,
            control_port=0,
            echonet_options=QUIET_ECHONET,
        )
        await fleet.start()
        assert _open_fds() > fds_before
        await read_model(fleet, 2, 1, 102, (1, 102, 120))
        await fleet.stop()
        await asyncio.sleep(0.05)
        assert _open_fds() == fds_before
        assert len(asyncio.all_tasks()) == tasks_before


async def test_start_failure_releases_what_was_bound() -> None:
    prefix = free_prefix()
    blocker = Fleet(1, 1, speed=0, start=NOON_JST, modbus_port=0, echonet=False, address_prefix=prefix)
    await blocker.start()
    try:
        port = blocker.homes[0].modbus_server.port if blocker.homes[0].modbus_server else None
        assert port
        fds_before = _open_fds()
        clash = Fleet(2, 1, speed=0, start=NOON_JST, modbus_port=port, echonet=False, address_prefix=prefix)
        with pytest.raises(FleetError, match="cannot listen"):
            await clash.start()
        assert _open_fds() == fds_before
    finally:
        await blocker.stop()


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(FleetError):
        Fleet(0, 1)
    with pytest.raises(FleetError):
        Fleet(1, 1, address_prefix="10.0")
    with pytest.raises(FleetError):
        Fleet(1, 1, start=datetime(2026, 1, 1))


def _run_cli(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    manifest = tmp_path / "manifest.json"
    args = [
        sys.executable,
        "-m",
        "hems",
        "devices",
        "--homes",
        "3",
        "--seed",
        "1",
        "--manifest",
        str(manifest),
        "--modbus-port",
        "0",
        "--address-prefix",
        free_prefix(),
        *extra,
    ]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _check_manifest(path: Path) -> dict[str, Any]:
    manifest = json.loads(path.read_text())
    assert manifest["version"] == 1 and manifest["seed"] == 1
    datetime.fromisoformat(manifest["sim_start"])
    assert [h["household"] for h in manifest["homes"]] == [household_id_for(1, i) for i in range(3)]
    for i, home in enumerate(manifest["homes"]):
        assert home["address"].endswith(f".0.{i + 1}")
        assert home["echonet"]["port"] == 3610 and len(home["echonet"]["objects"]) == 7
        assert {d["device"]: d["unit_id"] for d in home["modbus"]["devices"]} == {
            "inverter": 1,
            "meter": 2,
            "storage": 3,
        }
        assert home["modbus"]["port"] > 0
    return manifest


def test_cli_runs_for_a_duration_and_writes_a_manifest(tmp_path: Path) -> None:
    proc = _run_cli(tmp_path, "--duration", "2")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "3 homes" in out and "stopped" in out
    _check_manifest(tmp_path / "manifest.json")


def test_cli_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    proc = _run_cli(tmp_path, "--speed", "60")
    manifest = tmp_path / "manifest.json"
    deadline = time.monotonic() + 30
    while not manifest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert manifest.exists(), proc.communicate(timeout=5)
    _check_manifest(manifest)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in out


def _bad_modbus_frames(count: int) -> list[bytes]:
    """Requests pymodbus cannot decode: zero-count reads, unknown function codes, short PDUs."""
    rng = random.Random(11)
    frames = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            pdu = bytes((3,)) + BASE_ADDRESS.to_bytes(2, "big") + b"\x00\x00"
        elif kind == 1:
            pdu = bytes((rng.choice((0x41, 0x47, 0x55, 0x64)),)) + rng.randbytes(4)
        else:
            pdu = b"\x03\x9c"
        frames.append(i.to_bytes(2, "big") + b"\x00\x00" + (len(pdu) + 1).to_bytes(2, "big") + b"\x01" + pdu)
    return frames


def test_cli_keeps_quiet_about_bad_modbus_frames(tmp_path: Path) -> None:
    """A fuzzing client once made ``hems devices`` print a pymodbus line per bad frame (10 MB for 110k
    frames); the emulator answers them as a device would and logs nothing."""
    proc = _run_cli(tmp_path, "--no-echonet")
    manifest = tmp_path / "manifest.json"
    deadline = time.monotonic() + 30
    while not manifest.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert manifest.exists(), proc.communicate(timeout=5)
    home = json.loads(manifest.read_text())["homes"][0]
    address, port = home["address"], home["modbus"]["port"]
    try:
        for frame in _bad_modbus_frames(60):
            with socket.create_connection((address, port), timeout=2) as sock:
                sock.sendall(frame)
                sock.settimeout(0.3)
                with contextlib.suppress(TimeoutError, ConnectionError):
                    sock.recv(260)  # an exception answer, or nothing: either is what a device does

        async def still_serving() -> list[int]:
            async with AsyncModbusTcpClient(address, port=port, timeout=2, retries=0) as client:
                rr = await client.read_holding_registers(BASE_ADDRESS, count=2, device_id=1)
                return list(rr.registers)

        assert tuple(asyncio.run(still_serving())) == SUNS_MARKER
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "decode" not in err and len(err.splitlines()) < 3, err[:2000]
