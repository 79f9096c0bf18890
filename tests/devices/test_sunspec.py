"""SunSpec tables and the per-home Modbus server, exercised over real TCP sockets on loopback.

The household here is a settable ``HomeState`` holder so each test states exactly which instant the
devices report; the fleet tests drive the same server from the real physics.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import sunspec2
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException

from devices.profile import parse
from devices.state import Faults, HomeState
from devices.sunspec.server import MODBUS_DEVICES, SunSpecHomeServer
from protocols.sunspec.models import MODELS, Model
from protocols.sunspec.models.inverter import INVERTER_ST
from protocols.sunspec.models.storage import CHA_ST
from protocols.sunspec.points import (
    BASE_ADDRESS,
    END_MODEL_ID,
    SUNS_MARKER,
    VENDOR_MODEL_IDS,
    SunSpecValueError,
    decode,
    decode_model,
    encode,
    not_implemented,
    scaled,
)
from tests.sunspec_reference import pysunspec2_scan


def make_state(**changes: Any) -> HomeState:
    base = HomeState(
        ts=datetime(2026, 6, 1, 3, 0, tzinfo=UTC),
        pv_w=3210.0,
        load_w=900.0,
        battery_w=1500.0,  # charging
        battery_soc_pct=55.5,
        grid_w=-810.0,  # exporting
        fuelcell_w=0.0,
        ev_w=0.0,
        ev_connected=False,
        ev_soc_pct=0.0,
        water_lpm=0.0,
        gas_lph=0.0,
        pv_wh_total=12_345.0,
        grid_import_wh_total=5_000.0,
        grid_export_wh_total=300.0,
        battery_charge_wh_total=100.0,
        battery_discharge_wh_total=50.0,
        fuelcell_wh_total=0.0,
        ev_charge_wh_total=0.0,
        ev_discharge_wh_total=0.0,
        water_l_total=0.0,
        gas_l_total=0.0,
    )
    return replace(base, **changes)


class SettableHousehold:
    """A household whose state the test sets; the server must report whatever it holds at read time."""

    household_id = "hh-test000001"

    def __init__(self) -> None:
        self.current = make_state()

    def state(self) -> HomeState:
        return self.current


# --- tables and encoding ------------------------------------------------------------------------


def _reference_points(model_id: int) -> list[tuple[str, int, int, str, str | None, str | None]]:
    path = os.path.join(os.path.dirname(sunspec2.__file__), "models", "json", f"model_{model_id}.json")
    with open(path, encoding="utf-8") as f:
        group = json.load(f)["group"]
    out, offset = [], 0
    for p in group["points"]:
        units = p.get("units")
        out.append((p["name"], offset, p["size"], p["type"], p.get("sf"), units.strip() if units else None))
        offset += p["size"]
    return out


@pytest.mark.parametrize("model_id", sorted(m for m in MODELS if m not in VENDOR_MODEL_IDS))
def test_tables_match_pysunspec2_definitions(model_id: int) -> None:
    model: Model = MODELS[model_id]
    ours = [(p.name, p.offset, p.size, p.type, p.sf, p.units) for p in model.points]
    assert ours == _reference_points(model_id)


def test_encode_decode_round_trip_and_sentinels() -> None:
    m103, m1 = MODELS[103], MODELS[1]
    w, wh, st, sf = (m103.point(n) for n in ("W", "WH", "St", "W_SF"))
    assert decode(w, encode(w, -1234)) == -1234
    assert decode(wh, encode(wh, 70_000)) == 70_000
    assert encode(wh, 70_000) == [1, 70_000 - 65_536]  # high word first
    assert decode(sf, encode(sf, -2)) == -2
    assert decode(m1.point("Mn"), encode(m1.point("Mn"), "ACME")) == "ACME"
    assert encode(m1.point("Mn"), "AB")[:2] == [0x4142, 0]  # NUL padded
    for point in (w, wh, st, sf, m1.point("SN"), m103.point("Evt1")):
        assert decode(point, not_implemented(point)) is None
    raw = decode(w, encode(w, 321))
    assert isinstance(raw, int)
    assert scaled(raw, -1) == pytest.approx(32.1)
    assert scaled(None, 0) is None


@pytest.mark.parametrize(
    ("model_id", "name", "value"),
    [
        (103, "WH", 0),
        (103, "W", 40_000),
        (103, "W", -32_768),
        (103, "St", 0xFFFF),
        (1, "Mn", "x" * 33),
        (103, "W", "1"),
    ],
)
def test_encode_refuses_values_that_would_read_as_something_else(
    model_id: int, name: str, value: Any
) -> None:
    with pytest.raises(SunSpecValueError):
        encode(MODELS[model_id].point(name), value)


# --- server over TCP ------------------------------------------------------------------------------


@pytest.fixture
async def home() -> AsyncIterator[tuple[SunSpecHomeServer, SettableHousehold, dict[str, Faults]]]:
    household = SettableHousehold()
    faults: dict[str, Faults] = {}
    server = SunSpecHomeServer(household.household_id, household, faults, "127.0.0.1", 0)
    await server.start()
    try:
        yield server, household, faults
    finally:
        await server.stop()


@pytest.fixture
async def client(home: tuple[SunSpecHomeServer, Any, Any]) -> AsyncIterator[AsyncModbusTcpClient]:
    server = home[0]
    assert server.port
    async with AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=0.5, retries=0) as c:
        yield c


async def read(client: AsyncModbusTcpClient, unit: int, address: int, count: int) -> list[int]:
    rr = await client.read_holding_registers(address, count=count, device_id=unit)
    assert not rr.isError(), rr
    return list(rr.registers)


async def walk(client: AsyncModbusTcpClient, unit: int) -> dict[int, int]:
    """Follow the SunSpec chain like any collector would: model id -> address of its ID register."""
    assert tuple(await read(client, unit, BASE_ADDRESS, 2)) == SUNS_MARKER
    found: dict[int, int] = {}
    address = BASE_ADDRESS + 2
    while True:
        model_id, length = await read(client, unit, address, 2)
        if model_id == END_MODEL_ID:
            assert length == 0
            return found
        assert MODELS[model_id].length == length
        found[model_id] = address
        address += 2 + length


async def point_values(client: AsyncModbusTcpClient, unit: int, model_id: int) -> dict[str, Any]:
    """Read one whole model in a single request and decode every point, scale factors applied."""
    address = (await walk(client, unit))[model_id]
    model = MODELS[model_id]
    return decode_model(model, await read(client, unit, address, model.size))


async def test_chain_per_unit_id_matches_the_manifest(client: AsyncModbusTcpClient, home: Any) -> None:
    server = home[0]
    for spec in MODBUS_DEVICES:
        assert tuple((await walk(client, spec.unit_id)).keys()) == spec.models
    entry = server.manifest_entry()
    assert entry["port"] == server.port
    assert [d["unit_id"] for d in entry["devices"]] == [1, 2, 3]


async def test_values_follow_the_household_at_read_time(client: AsyncModbusTcpClient, home: Any) -> None:
    _, household, _ = home
    inv = await point_values(client, 1, 102)
    assert inv["W"] == 3210 and inv["St"] == INVERTER_ST["MPPT"] and inv["Evt1"] == 0
    assert inv["WH"] == 12_345
    meter = await point_values(client, 2, 202)
    assert meter["W"] == -810  # + import, - export
    assert meter["WphA"] + meter["WphB"] == meter["W"] and meter["WphC"] is None  # two lines, no third
    assert (meter["TotWhImp"], meter["TotWhExp"]) == (5_000, 300)
    storage = await point_values(client, 3, 802)
    basic = await point_values(client, 3, 124)
    assert storage["W"] == 1500 and storage["A"] > 0  # + charging
    assert storage["SoC"] == pytest.approx(55.5) and basic["ChaState"] == pytest.approx(55.5)
    assert basic["ChaSt"] == CHA_ST["CHARGING"] and storage["ChaSt"] == CHA_ST["CHARGING"]
    assert storage["SoCMin"] <= storage["SoC"] <= storage["SoCMax"]

    household.current = make_state(pv_w=0.0, pv_wh_total=12_400.0, battery_w=-700.0, grid_w=200.0)
    inv = await point_values(client, 1, 102)
    assert inv["W"] == 0 and inv["St"] == INVERTER_ST["SLEEPING"] and inv["WH"] == 12_400
    storage = await point_values(client, 3, 802)
    assert storage["W"] == -700 and storage["ChaSt"] == CHA_ST["DISCHARGING"]
    assert (await point_values(client, 2, 202))["W"] == 200


async def test_device_faults_show_in_status_points(client: AsyncModbusTcpClient, home: Any) -> None:
    _, household, _ = home
    household.current = make_state(inverter_fault=True, battery_fault=True)
    inv = await point_values(client, 1, 102)
    assert inv["St"] == INVERTER_ST["FAULT"] and inv["Evt1"] != 0
    storage = await point_values(client, 3, 802)
    assert storage["State"] == 99 and storage["Evt1"] != 0


async def test_unknown_unit_id_gets_gateway_exception(client: AsyncModbusTcpClient) -> None:
    rr = await client.read_holding_registers(BASE_ADDRESS, count=2, device_id=9)
    assert rr.isError() and rr.exception_code == 0x0B
    assert tuple(await read(client, 3, BASE_ADDRESS, 2)) == SUNS_MARKER  # the connection stays usable


async def test_writes_are_refused(client: AsyncModbusTcpClient) -> None:
    rr = await client.write_register(40070 + 2, 1, device_id=3)
    assert rr.isError() and rr.exception_code == 2


async def test_modbus_exception_fault_is_per_unit(client: AsyncModbusTcpClient, home: Any) -> None:
    faults = home[2]
    faults["meter"].modbus_exception = 6
    rr = await client.read_holding_registers(BASE_ADDRESS, count=2, device_id=2)
    assert rr.isError() and rr.exception_code == 6
    assert tuple(await read(client, 1, BASE_ADDRESS, 2)) == SUNS_MARKER  # the inverter still answers
    faults["meter"].modbus_exception = None
    assert tuple(await read(client, 2, BASE_ADDRESS, 2)) == SUNS_MARKER


@pytest.mark.parametrize("fault", ["no_reply", "truncated", "malformed"])
async def test_byte_level_faults_leave_the_client_without_a_valid_answer(
    fault: str, client: AsyncModbusTcpClient, home: Any
) -> None:
    faults = home[2]
    setattr(faults["inverter"], fault, True)
    with pytest.raises(ModbusIOException):
        await client.read_holding_registers(BASE_ADDRESS, count=2, device_id=1)
    setattr(faults["inverter"], fault, False)
    # A fresh connection gets normal answers again (the faulty frame may have poisoned the old one).
    server = home[0]
    async with AsyncModbusTcpClient("127.0.0.1", port=server.port, timeout=0.5, retries=0) as fresh:
        assert tuple(await read(fresh, 1, BASE_ADDRESS, 2)) == SUNS_MARKER


async def test_stuck_and_counter_reset_faults(client: AsyncModbusTcpClient, home: Any) -> None:
    _, household, faults = home
    faults["inverter"].stuck = True
    assert (await point_values(client, 1, 102))["W"] == 3210
    household.current = make_state(pv_w=100.0, pv_wh_total=20_000.0)
    assert (await point_values(client, 1, 102))["W"] == 3210  # frozen
    faults["inverter"].stuck = False
    assert (await point_values(client, 1, 102))["W"] == 100

    faults["meter"].reset_counters(household.current)
    household.current = replace(household.current, grid_import_wh_total=5_042.0)
    meter = await point_values(client, 2, 202)
    assert meter["TotWhImp"] == 42
    assert meter["TotWhExp"] == 1  # zero is "not implemented" in SunSpec: the emulator floors at 1


async def test_pysunspec2_scans_every_device(home: Any) -> None:
    """A third-party, synchronous client (run in a thread) must scan and decode our maps."""
    server = home[0]
    assert server.port is not None
    results = await asyncio.gather(
        *(asyncio.to_thread(pysunspec2_scan, server.port, s.unit_id) for s in MODBUS_DEVICES)
    )
    inverter, meter, storage = results
    assert sorted(inverter) == [1, 102, 120] and sorted(meter) == [1, 202]
    assert sorted(storage) == [1, 124, 802]
    assert inverter[1]["SN"] == "hh-test000001-u1" and inverter[1]["Mn"] == "HEMS Emulator"
    assert inverter[102]["W"] == 3210 and inverter[102]["WH"] == 12_345
    assert inverter[120]["WRtg"] > 0 and inverter[120]["DERTyp"] == 4  # the nameplate: a PV inverter
    assert meter[202]["W"] == -810 and meter[202]["TotWhImp"] == 5_000
    # single-phase three-wire: 100 V to neutral on lines A and B, 200 V between them, no line C
    assert meter[202]["PhVphA"] == meter[202]["PhVphB"] == 100 and meter[202]["PhVphAB"] == 200
    assert meter[202]["AphC"] is None and meter[202]["AphA"] == pytest.approx(-810 / 200)
    assert storage[802]["SoC"] == pytest.approx(55.5) and storage[124]["ChaState"] == pytest.approx(55.5)
    assert storage[802]["AHRtg"] > 0  # points we do not fill are None, the ones we fill decode
    assert inverter[102]["VA"] is None


async def test_pysunspec2_scans_a_float_mode_home() -> None:
    """The float profile's maps (112 and 212 in place of 102 and 202) are scanned and decoded by
    pysunspec2 too, and carry the household's values."""
    household = SettableHousehold()
    float_mode = {"inverter": parse("float"), "meter": parse("float")}
    server = SunSpecHomeServer(household.household_id, household, {}, "127.0.0.1", 0, profiles=float_mode)
    await server.start()
    assert server.port is not None
    try:
        inverter, meter = await asyncio.gather(
            asyncio.to_thread(pysunspec2_scan, server.port, 1),
            asyncio.to_thread(pysunspec2_scan, server.port, 2),
        )
    finally:
        await server.stop()
    assert sorted(inverter) == [1, 112, 120] and sorted(meter) == [1, 212]
    assert inverter[112]["W"] == pytest.approx(3210) and inverter[112]["WH"] == pytest.approx(12_345)
    assert meter[212]["W"] == pytest.approx(-810) and meter[212]["TotWhImp"] == pytest.approx(5_000)
    assert meter[212]["AphA"] == pytest.approx(-810 / 200) and meter[212]["PPVphAB"] == pytest.approx(200)


async def test_stop_releases_the_port() -> None:
    household = SettableHousehold()
    server = SunSpecHomeServer(household.household_id, household, {}, "127.0.0.1", 0)
    await server.start()
    port = server.port
    await server.stop()
    again = SunSpecHomeServer(household.household_id, household, {}, "127.0.0.1", port or 0)
    await again.start()  # would fail with "address in use" if the listener leaked
    await again.stop()


def test_live_writes_clamp_instead_of_failing() -> None:
    """A server must answer whatever the physics produces: out-of-range values clamp, NaN reads as unset."""
    from devices.sunspec.image import RegisterMap

    regs = RegisterMap((1, 103))
    regs.set_static(103, "W_SF", 0)
    regs.set_static(103, "WH_SF", 0)
    w, wh, st = regs.slot(103, "W"), regs.slot(103, "WH"), regs.slot(103, "St")
    image = regs.registers
    RegisterMap.write(image, w, 1e9)
    assert decode(w.point, image[w.index : w.index + 1]) == 32767
    RegisterMap.write(image, w, float("nan"))
    assert decode(w.point, image[w.index : w.index + 1]) is None
    RegisterMap.write(image, wh, 0.2)
    assert decode(wh.point, image[wh.index : wh.index + 2]) == 1  # never the "not implemented" zero
    RegisterMap.write(image, wh, 123_456_789.4)
    assert decode(wh.point, image[wh.index : wh.index + 2]) == 123_456_789
    RegisterMap.write(image, st, -5)
    assert decode(st.point, image[st.index : st.index + 1]) == 0


def test_decode_model_checks_the_header() -> None:
    model = MODELS[124]
    with pytest.raises(SunSpecValueError):
        decode_model(model, [124, 24])
    with pytest.raises(SunSpecValueError):
        decode_model(model, [103, 24] + [0] * 24)
