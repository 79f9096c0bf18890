"""One home's SunSpec Modbus TCP server: inverter, meter and storage behind one pymodbus listener.

Why one listener with three unit ids (1 inverter, 2 meter, 3 storage) rather than three ports: that is
how a hybrid PCS with a built-in meter and battery gateway typically appears on a home network, and it
keeps 1,000 homes at 1,000 listening sockets.

Values are computed when a read arrives (pymodbus ``SimDevice`` action callback): the device asks the
household for its state, passes it through its ``Faults`` and re-encodes its live points only when the
viewed state changed.  A read therefore always reflects the household as of its latest physics step, and
the cost per read is one ``state()`` call plus a few dozen register writes.

Sign conventions (stated here because vendors differ, see protocols.md §3.3):
- model 103 ``W``: AC output of the PV inverter, >= 0.
- model 203 ``W`` (and ``WphA..C``): grid power at the connection point, **+ = import**, - = export.
  ``TotWhImp`` / ``TotWhExp`` are the household's grid import / export counters.
- model 802 ``W`` and ``A``: battery power and current, **+ = charging**, - = discharging (the same
  sign as ``HomeState.battery_w``; the emulator has no conversion losses, so DC power equals AC power).

Faults (per unit id, from ``devices.state.Faults``), and how each one shows up on the wire:
- ``modbus_exception``: every read of that unit is answered with that exception code (must be one
  pymodbus knows: 1-8, 10, 11; see ``MODBUS_EXCEPTION_CODES``).
- ``no_reply``: the request is processed but the response is dropped, so the client times out.
- ``malformed``: the response keeps its MBAP header (transaction id, unit id) but its PDU byte count
  is wrong, so a client's decoder rejects or mis-sizes it.
- ``truncated``: only the first half of the response frame is sent; the client waits for the rest and
  times out.  (TCP gives no way to signal "short frame" other than sending fewer bytes.)
- ``stuck``, counter reset: through ``Faults.view``: frozen values, counters restarting near zero.
- ``clock_offset``: no effect on Modbus; these SunSpec models carry no timestamp.
- ``sna_epcs``: ECHONET only.
A unit id other than 1-3 is answered with exception 0x0B (gateway target device failed to respond).
Writes (FC 6/16) are refused with exception 2: the emulator is read-only, it takes no remote control.
The byte-level faults use pymodbus' ``trace_packet`` hook, which sees every outgoing frame before it is
written.  Not produced: a reply with a wrong transaction id or unit id, or a delayed-but-valid reply
(pymodbus answers from whole PDUs and offers no per-request delay hook short of blocking the action);
Modbus TCP has no CRC, so there is no checksum fault to emulate.  A plausible-but-wrong value inside a
valid frame is what ``stuck`` and counter resets model.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from devices.state import Faults, HomeState
from devices.sunspec.models import (
    BASE_ADDRESS,
    BATTERY_EVT1_OTHER_ALARM,
    BATTERY_STATE,
    BATTERY_TYPE_LITHIUM_ION,
    CHA_ST,
    END_MODEL_ID,
    INVERTER_EVT1_GROUND_FAULT,
    INVERTER_ST,
    MODELS,
    SUNS_MARKER,
    Point,
    encode,
    model_addresses,
    not_implemented,
)

MODBUS_EXCEPTION_CODES: frozenset[int] = frozenset(int(c) for c in ExcCodes)
DEFAULT_MODBUS_PORT = 5020


class StateSource(Protocol):
    """What the server needs of a household (``devices.physics.Household`` satisfies it)."""

    def state(self) -> HomeState: ...


@dataclass(frozen=True, slots=True)
class ModbusDeviceSpec:
    """One Modbus device of a home, as the manifest lists it."""

    device: str
    unit_id: int
    models: tuple[int, ...]
    category: str


MODBUS_DEVICES: tuple[ModbusDeviceSpec, ...] = (
    ModbusDeviceSpec("inverter", 1, (1, 103), "pv"),
    ModbusDeviceSpec("meter", 2, (1, 203), "electricity"),
    ModbusDeviceSpec("storage", 3, (1, 124, 802), "battery"),
)


@dataclass(frozen=True, slots=True)
class Ratings:
    """Nameplate figures of the home's equipment that the static points advertise."""

    pv_kw: float = 4.5
    battery_kwh: float = 9.8
    battery_kw: float = 3.0
    soc_min_pct: float = 10.0
    soc_max_pct: float = 95.0
    grid_hz: float = 50.0

    @classmethod
    def from_equipment(cls, equipment: object | None) -> Ratings:
        """Read the physics' ``Equipment`` record; anything it lacks keeps its default."""
        if equipment is None:
            return cls()
        defaults = cls()

        def number(attr: str, fallback: float, factor: float = 1.0) -> float:
            value = getattr(equipment, attr, None)
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                return float(value) * factor
            return fallback

        return cls(
            pv_kw=number("pv_kw", defaults.pv_kw),
            battery_kwh=number("battery_kwh", defaults.battery_kwh),
            battery_kw=number("battery_max_w", defaults.battery_kw, 0.001),
            soc_min_pct=number("soc_min_pct", defaults.soc_min_pct),
            soc_max_pct=number("soc_max_pct", defaults.soc_max_pct),
            grid_hz=defaults.grid_hz,
        )


# Electrical constants of the emulated installation: a 200 V three-phase wye (115.5 V to neutral).
_PHASE_V = 115.5
_LINE_V = 200.0
_DC_V = 380.0  # PV string voltage
_BATTERY_NOMINAL_V = 51.2
_INVERTER_EFFICIENCY = 0.97


# --- register image ----------------------------------------------------------------------------


# Range each numeric type can carry without colliding with its "not implemented" sentinel.
_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-32767, 32767),
    "sunssf": (-32767, 32767),
    "uint16": (0, 0xFFFE),
    "enum16": (0, 0xFFFE),
    "bitfield16": (0, 0xFFFE),
    "acc32": (1, 0xFFFFFFFF),  # 0 would read as "not implemented"
    "uint32": (0, 0xFFFFFFFE),
    "enum32": (0, 0xFFFFFFFE),
    "bitfield32": (0, 0xFFFFFFFE),
}


@dataclass(slots=True)
class _Slot:
    index: int  # position in the device's register list (address - BASE_ADDRESS)
    point: Point
    scale: float  # 10**-sf: multiply an engineering value by this to get the raw value
    low: int = 0
    high: int = 0
    missing: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.point.type in _RANGES:
            self.low, self.high = _RANGES[self.point.type]
        self.missing = tuple(not_implemented(self.point))


class RegisterMap:
    """The full register image of one device (from ``BASE_ADDRESS``) and where each point lives."""

    def __init__(self, model_ids: Sequence[int]) -> None:
        self.model_ids = tuple(model_ids)
        self.addresses = model_addresses(self.model_ids)
        regs: list[int] = [*SUNS_MARKER]
        for model_id in self.model_ids:
            model = MODELS[model_id]
            regs += [model.id, model.length]
            for point in model.points[2:]:
                regs += not_implemented(point)
        regs += [END_MODEL_ID, 0]
        self.registers = regs
        self._sf: dict[tuple[int, str], int] = {}

    def slot(self, model_id: int, name: str) -> _Slot:
        model = MODELS[model_id]
        point = model.point(name)
        index = self.addresses[model_id] + point.offset - BASE_ADDRESS
        sf = self._sf.get((model_id, point.sf)) if point.sf else 0
        if point.sf and sf is None:
            raise ValueError(f"set {model_id}:{point.sf} before using {name}")
        return _Slot(index, point, 10.0 ** -(sf or 0))

    def set_static(self, model_id: int, name: str, value: int | float | str) -> None:
        """Write a point that never changes (nameplate, scale factors): once, at build time."""
        point = MODELS[model_id].point(name)
        if point.type == "sunssf":
            self._sf[(model_id, name)] = int(value)
        slot = self.slot(model_id, name)
        raw = value if isinstance(value, str) else value * slot.scale
        self.write(self.registers, slot, raw)

    @staticmethod
    def write(registers: list[int], slot: _Slot, raw: float | str) -> None:
        """Store ``raw`` clamped into the type's range: a server must answer, never fail on a value.

        This runs for every live point on every state change of every polled home, so it avoids the
        general ``encode`` (which validates instead of clamping) for the one- and two-register types.
        """
        i = slot.index
        if isinstance(raw, str) or slot.point.type not in _RANGES:  # strings, floats: the general path
            registers[i : i + slot.point.size] = encode(slot.point, raw)
            return
        if raw != raw or raw in (math.inf, -math.inf):
            registers[i : i + slot.point.size] = slot.missing
            return
        v = round(raw)
        v = slot.low if v < slot.low else slot.high if v > slot.high else v
        if slot.point.size == 1:
            registers[i] = v & 0xFFFF
        else:
            registers[i] = (v >> 16) & 0xFFFF
            registers[i + 1] = v & 0xFFFF


Updater = Callable[[list[int], HomeState], None]


def _phase_split(total: float) -> tuple[int, int, int]:
    """Three integer shares summing exactly to round(total), so per-phase W adds up to total W."""
    whole = round(total)
    a = round(whole / 3)
    b = round(whole / 3)
    return a, b, whole - a - b


def _common(regs: RegisterMap, household_id: str, unit_id: int, model_name: str) -> None:
    regs.set_static(1, "Mn", "HEMS Emulator")
    regs.set_static(1, "Md", model_name)
    regs.set_static(1, "Vr", "1.0.0")
    regs.set_static(1, "SN", f"{household_id}-u{unit_id}"[:32])
    regs.set_static(1, "DA", unit_id)


def build_inverter(household_id: str, ratings: Ratings) -> tuple[RegisterMap, Updater]:
    """Three-phase PV inverter (models 1 + 103)."""
    regs = RegisterMap((1, 103))
    _common(regs, household_id, 1, "PV-3P")
    for name, sf in (("A_SF", -2), ("V_SF", -1), ("W_SF", 0), ("Hz_SF", -2), ("WH_SF", 0)):
        regs.set_static(103, name, sf)
    for name, sf in (("DCA_SF", -2), ("DCV_SF", -1), ("DCW_SF", 0), ("Tmp_SF", -1)):
        regs.set_static(103, name, sf)
    for name, volts in (("PPVphAB", _LINE_V), ("PPVphBC", _LINE_V), ("PPVphCA", _LINE_V)):
        regs.set_static(103, name, volts)
    for ph in "ABC":
        regs.set_static(103, f"PhVph{ph}", _PHASE_V)
    regs.set_static(103, "Evt2", 0)
    s = {n: regs.slot(103, n) for n in ("A", "AphA", "AphB", "AphC", "W", "Hz", "WH", "DCA", "DCV", "DCW")}
    s |= {n: regs.slot(103, n) for n in ("TmpCab", "St", "Evt1")}
    write = RegisterMap.write

    def update(r: list[int], st: HomeState) -> None:
        watts = max(0.0, st.pv_w)
        write(r, s["W"], round(watts) * s["W"].scale)
        phase_a = watts / 3 / _PHASE_V
        for name in ("AphA", "AphB", "AphC"):
            write(r, s[name], phase_a * s[name].scale)
        write(r, s["A"], 3 * phase_a * s["A"].scale)
        write(r, s["Hz"], ratings.grid_hz * s["Hz"].scale)
        write(r, s["WH"], st.pv_wh_total)
        dc_w = watts / _INVERTER_EFFICIENCY
        write(r, s["DCW"], dc_w)
        write(r, s["DCV"], (_DC_V if watts > 0 else 0.0) * s["DCV"].scale)
        write(r, s["DCA"], (dc_w / _DC_V) * s["DCA"].scale)
        write(r, s["TmpCab"], (25.0 + 15.0 * watts / max(ratings.pv_kw * 1000, 1.0)) * s["TmpCab"].scale)
        if st.inverter_fault:
            state, events = INVERTER_ST["FAULT"], INVERTER_EVT1_GROUND_FAULT
        elif watts <= 0:
            state, events = INVERTER_ST["SLEEPING"], 0
        else:
            state, events = INVERTER_ST["MPPT"], 0
        write(r, s["St"], state)
        write(r, s["Evt1"], events)

    return regs, update


def build_meter(household_id: str, ratings: Ratings) -> tuple[RegisterMap, Updater]:
    """Grid connection-point meter (models 1 + 203); W + = import."""
    regs = RegisterMap((1, 203))
    _common(regs, household_id, 2, "Meter-3P")
    for name, sf in (("A_SF", -2), ("V_SF", -1), ("Hz_SF", -2), ("W_SF", 0), ("TotWh_SF", 0)):
        regs.set_static(203, name, sf)
    regs.set_static(203, "PhV", _PHASE_V)
    regs.set_static(203, "PPV", _LINE_V)
    for ph in "ABC":
        regs.set_static(203, f"PhVph{ph}", _PHASE_V)
    for pair in ("AB", "BC", "CA"):
        regs.set_static(203, f"PhVph{pair}", _LINE_V)
    regs.set_static(203, "Hz", ratings.grid_hz)
    regs.set_static(203, "Evt", 0)
    names = ("A", "AphA", "AphB", "AphC", "W", "WphA", "WphB", "WphC", "TotWhImp", "TotWhExp")
    s = {n: regs.slot(203, n) for n in names}
    write = RegisterMap.write

    def update(r: list[int], st: HomeState) -> None:
        shares = _phase_split(st.grid_w)
        write(r, s["W"], sum(shares))
        amps_total = 0.0
        for ph, share in zip("ABC", shares, strict=True):
            write(r, s[f"Wph{ph}"], share)
            amps = share / _PHASE_V
            amps_total += amps
            write(r, s[f"Aph{ph}"], amps * s[f"Aph{ph}"].scale)
        write(r, s["A"], amps_total * s["A"].scale)
        write(r, s["TotWhImp"], st.grid_import_wh_total)
        write(r, s["TotWhExp"], st.grid_export_wh_total)

    return regs, update


def build_storage(household_id: str, ratings: Ratings) -> tuple[RegisterMap, Updater]:
    """Battery (models 1 + 124 + 802); W and A + = charging."""
    regs = RegisterMap((1, 124, 802))
    _common(regs, household_id, 3, "Battery-LI")
    rated_w = ratings.battery_kw * 1000.0
    for name, sf in (("WChaMax_SF", 0), ("WChaDisChaGra_SF", 0), ("ChaState_SF", -1), ("InBatV_SF", -1)):
        regs.set_static(124, name, sf)
    regs.set_static(124, "WChaMax", rated_w)
    regs.set_static(124, "WChaGra", 100)
    regs.set_static(124, "WDisChaGra", 100)
    regs.set_static(124, "StorCtl_Mod", 0)
    for name, sf in (("AHRtg_SF", 0), ("WHRtg_SF", 1), ("WChaDisChaMax_SF", 0), ("SoC_SF", -1), ("V_SF", -1)):
        regs.set_static(802, name, sf)
    for name, sf in (("CellV_SF", -3), ("A_SF", -1), ("AMax_SF", 0), ("W_SF", 0), ("SoH_SF", 0)):
        regs.set_static(802, name, sf)
    regs.set_static(802, "AHRtg", ratings.battery_kwh * 1000.0 / _BATTERY_NOMINAL_V)
    regs.set_static(802, "WHRtg", ratings.battery_kwh * 1000.0)
    regs.set_static(802, "WChaRteMax", rated_w)
    regs.set_static(802, "WDisChaRteMax", rated_w)
    regs.set_static(802, "SoCMax", ratings.soc_max_pct)
    regs.set_static(802, "SoCMin", ratings.soc_min_pct)
    regs.set_static(802, "SoH", 100)
    regs.set_static(802, "LocRemCtl", 1)  # local: the emulator takes no remote control
    regs.set_static(802, "AlmRst", 0)
    regs.set_static(802, "Typ", BATTERY_TYPE_LITHIUM_ION)
    regs.set_static(802, "Evt2", 0)
    regs.set_static(802, "EvtVnd1", 0)
    regs.set_static(802, "EvtVnd2", 0)
    regs.set_static(802, "SetOp", 1)  # connect
    regs.set_static(802, "SetInvState", 3)  # inverter started
    s124 = {n: regs.slot(124, n) for n in ("ChaState", "ChaSt", "InBatV")}
    s802 = {n: regs.slot(802, n) for n in ("SoC", "ChaSt", "State", "Evt1", "V", "A", "W", "NCyc")}
    write = RegisterMap.write
    capacity_wh = max(ratings.battery_kwh * 1000.0, 1.0)

    def update(r: list[int], st: HomeState) -> None:
        soc = st.battery_soc_pct
        volts = _BATTERY_NOMINAL_V * (0.95 + 0.1 * soc / 100.0)
        if st.battery_fault:
            cha_st, state, events = CHA_ST["OFF"], BATTERY_STATE["FAULT"], BATTERY_EVT1_OTHER_ALARM
        else:
            state, events = BATTERY_STATE["CONNECTED"], 0
            if st.battery_w > 0.5:
                cha_st = CHA_ST["CHARGING"]
            elif st.battery_w < -0.5:
                cha_st = CHA_ST["DISCHARGING"]
            elif soc >= ratings.soc_max_pct - 0.5:
                cha_st = CHA_ST["FULL"]
            elif soc <= ratings.soc_min_pct + 0.5:
                cha_st = CHA_ST["EMPTY"]
            else:
                cha_st = CHA_ST["HOLDING"]
        write(r, s124["ChaState"], soc * s124["ChaState"].scale)
        write(r, s124["ChaSt"], cha_st)
        write(r, s124["InBatV"], volts * s124["InBatV"].scale)
        write(r, s802["SoC"], soc * s802["SoC"].scale)
        write(r, s802["ChaSt"], cha_st)
        write(r, s802["State"], state)
        write(r, s802["Evt1"], events)
        write(r, s802["V"], volts * s802["V"].scale)
        write(r, s802["W"], round(st.battery_w))
        write(r, s802["A"], st.battery_w / volts * s802["A"].scale)
        write(r, s802["NCyc"], st.battery_discharge_wh_total // capacity_wh)

    return regs, update


_BUILDERS: dict[str, Callable[[str, Ratings], tuple[RegisterMap, Updater]]] = {
    "inverter": build_inverter,
    "meter": build_meter,
    "storage": build_storage,
}


# --- server --------------------------------------------------------------------------------------


class _Device:
    """Runtime of one unit id: refreshes its live registers from the household on each read."""

    def __init__(
        self,
        spec: ModbusDeviceSpec,
        household: StateSource,
        faults: Faults,
        updater: Updater,
        image: list[int],
    ) -> None:
        self.spec = spec
        self.household = household
        self.faults = faults
        self.updater = updater
        self.image = image  # static registers, copied into pymodbus' store on the first read
        self.loaded = False
        self.last_view: HomeState | None = None
        self.reads = 0

    async def action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: Sequence[int] | Sequence[bool] | None,
    ) -> ExcCodes | None:
        code = self.faults.modbus_exception
        if code is not None:
            return ExcCodes(code) if code in MODBUS_EXCEPTION_CODES else ExcCodes.DEVICE_FAILURE
        self.reads += 1
        if not self.loaded:
            # pymodbus builds a store from per-value SimData slowly (~15 ms a home); an all-zero block
            # filled here on first use keeps 1,000 homes starting in seconds.
            registers[: len(self.image)] = self.image
            self.loaded = True
        view = self.faults.view(self.household.state())
        if view is not self.last_view:
            self.updater(registers, view)
            self.last_view = view
        return None


class _RequestHandler(ServerRequestHandler):
    """pymodbus' connection handler, minus a cross-thread hop per request.

    pymodbus 3.16 schedules each decoded request with ``run_coroutine_threadsafe`` although it is
    already on the loop's thread; that writes to the loop's self-pipe once per request, which was half
    the system calls of a read in profiles.  Creating the task directly keeps the same ordering.
    """

    def handle_later(self) -> None:
        task = self.loop.create_task(self.handle_request())
        _IN_FLIGHT.add(task)
        task.add_done_callback(_IN_FLIGHT.discard)

    async def handle_request(self) -> None:
        """A unit id the home does not have gets exception 0x0B (gateway target failed to respond),
        what a gateway answers; pymodbus' own path would log a traceback and answer 0x04."""
        pdu = self.last_pdu
        if pdu is not None and pdu.dev_id not in self.server.context.device_ids():
            response = ExceptionResponse(pdu.function_code, ExcCodes.GATEWAY_NO_RESPONSE)
            response.transaction_id = pdu.transaction_id
            response.dev_id = pdu.dev_id
            self.server_send(response, self.last_addr)
            return
        await super().handle_request()


_IN_FLIGHT: set[asyncio.Task[None]] = set()  # strong references, so a running request is never collected


class _TcpServer(ModbusTcpServer):
    def callback_new_connection(self) -> ServerRequestHandler:
        return _RequestHandler(self, self.trace_packet, self.trace_pdu, self.trace_connect)


class SunSpecHomeServer:
    """The Modbus TCP endpoint of one home; ``await start()`` / ``await stop()``."""

    def __init__(
        self,
        household_id: str,
        household: StateSource,
        faults_by_device: dict[str, Faults],
        address: str = "127.0.0.1",
        port: int = DEFAULT_MODBUS_PORT,
        ratings: Ratings | None = None,
    ) -> None:
        self.household_id = household_id
        self.address = address
        self.requested_port = port
        self.ratings = ratings or Ratings.from_equipment(getattr(household, "equipment", None))
        self.devices: dict[str, _Device] = {}
        self.maps: dict[str, RegisterMap] = {}
        self._by_unit: dict[int, _Device] = {}
        for spec in MODBUS_DEVICES:
            faults = faults_by_device.setdefault(spec.device, Faults())
            regs, updater = _BUILDERS[spec.device](household_id, self.ratings)
            device = _Device(spec, household, faults, updater, regs.registers)
            self.devices[spec.device] = device
            self.maps[spec.device] = regs
            self._by_unit[spec.unit_id] = device
        self._server: ModbusTcpServer | None = None
        self.port: int | None = None

    def _sim_devices(self) -> list[SimDevice]:
        return [
            SimDevice(
                id=dev.spec.unit_id,
                simdata=[
                    SimData(
                        address=BASE_ADDRESS,
                        count=len(self.maps[name].registers),
                        values=0,
                        datatype=DataType.REGISTERS,
                        readonly=True,  # no remote control: writes get exception 2
                    )
                ],
                action=dev.action,
            )
            for name, dev in self.devices.items()
        ]

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        """Byte-level faults on responses; requests pass through untouched."""
        if not sending or len(data) < 8:
            return data
        device = self._by_unit.get(data[6])
        if device is None:
            return data
        faults = device.faults
        if faults.no_reply:
            return b""
        if faults.truncated:
            return data[: max(1, len(data) // 2)]
        if faults.malformed and data[7] < 0x80 and len(data) >= 9:
            # Byte count larger than what follows: a decoder either rejects the frame or waits forever.
            return data[:8] + bytes([(data[8] + 6) & 0xFF]) + data[9:]
        return data

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("server already started")
        server = _TcpServer(
            self._sim_devices(),
            address=(self.address, self.requested_port),
            trace_packet=self._trace_packet,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:  # pymodbus reports a failed bind this way (after logging the OSError)
            await server.shutdown()
            raise OSError(f"cannot listen on {self.address}:{self.requested_port} for Modbus: {exc}") from exc
        self._server = server
        self.port = _bound_port(server) or self.requested_port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        listener: Any = server.transport  # shutdown() forgets it; keep it to wait for the close
        await server.shutdown()
        if listener is not None and hasattr(listener, "wait_closed"):
            await asyncio.wait_for(listener.wait_closed(), 5)

    def manifest_entry(self) -> dict[str, object]:
        return {
            "port": self.port if self.port is not None else self.requested_port,
            "devices": [
                {"device": s.device, "unit_id": s.unit_id, "models": list(s.models), "category": s.category}
                for s in MODBUS_DEVICES
            ],
        }


def _bound_port(server: ModbusTcpServer) -> int | None:
    listener: Any = server.transport
    sockets = getattr(listener, "sockets", None)
    if sockets:
        port: int = sockets[0].getsockname()[1]
        return port
    return None
