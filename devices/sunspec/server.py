"""One home's SunSpec Modbus TCP server: inverter, meter and storage behind one pymodbus listener.

Why one listener with three unit ids (1 inverter, 2 meter, 3 storage) rather than three ports: that is
how a hybrid PCS with a built-in meter and battery gateway typically appears on a home network, and it
keeps 1,000 homes at 1,000 listening sockets.

Values are computed when a read arrives (pymodbus ``SimDevice`` action callback): the device asks the
household for its state, passes it through its ``Faults`` and re-encodes its live points only when the
viewed state changed.  A read therefore always reflects the household as of its latest physics step, and
the cost per read is one ``state()`` call plus a few dozen register writes.

What each device's registers hold, and the sign conventions, is ``devices.sunspec.image``; which
devices a home has is ``MODBUS_DEVICES`` (or the ``devices`` a server is given).

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
written.  Not produced: a reply with a wrong transaction id or unit id; Modbus TCP has no CRC, so there
is no checksum fault to emulate.  A plausible-but-wrong value inside a valid frame is what ``stuck`` and
counter resets model.

Profiles (per unit id, ``devices.profile``): ``float_models`` serves the float32 twins of the inverter and
meter models (112 for 102, 212 for 202; a change at run time moves the map, as a firmware switch would),
``delay_s`` holds each answer back (the action callback is awaited before pymodbus reads the registers),
``counter_offset`` lifts the counters.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from common.logs import quiet_pymodbus
from devices.profile import STANDARD, Profile
from devices.state import Faults, HomeState
from devices.sunspec.image import ModbusDeviceSpec, Ratings, RegisterMap, build_device
from protocols.sunspec.models import MODELS, chain_length
from protocols.sunspec.points import BASE_ADDRESS

MODBUS_EXCEPTION_CODES: frozenset[int] = frozenset(int(c) for c in ExcCodes)
DEFAULT_MODBUS_PORT = 5020

# A request frame pymodbus cannot decode is answered with an exception code or dropped, as a device
# would; the library's own log line (with a traceback for some) per frame is only noise.
quiet_pymodbus()


class StateSource(Protocol):
    """What the server needs of a household (``devices.physics.Household`` satisfies it)."""

    def state(self) -> HomeState: ...


MODBUS_DEVICES: tuple[ModbusDeviceSpec, ...] = (
    ModbusDeviceSpec("inverter", 1, (1, 102, 120), "pv"),
    ModbusDeviceSpec("meter", 2, (1, 202), "electricity"),
    ModbusDeviceSpec("storage", 3, (1, 124, 802), "battery"),
)


def served(spec: ModbusDeviceSpec, profile: Profile) -> ModbusDeviceSpec:
    """The device as a unit of ``profile`` shows it: in float mode each model that has a float32 twin
    is replaced by it."""
    if not profile.float_models:
        return spec
    twins = {m.float_of: m.id for m in MODELS.values() if m.float_of is not None}
    return ModbusDeviceSpec(
        spec.device, spec.unit_id, tuple(twins.get(m, m) for m in spec.models), spec.category
    )


# --- server --------------------------------------------------------------------------------------


class _Device:
    """Runtime of one unit id: refreshes its live registers from the household on each read."""

    def __init__(
        self,
        spec: ModbusDeviceSpec,
        household: StateSource,
        faults: Faults,
        household_id: str,
        ratings: Ratings,
        profile: Profile = STANDARD,
    ) -> None:
        self.base_spec = spec
        self.household = household
        self.faults = faults
        self.household_id = household_id
        self.ratings = ratings
        self.reads = 0
        # registers pymodbus keeps for this unit: room for the integer and the float map alike
        self.size = max(
            chain_length(spec.models), chain_length(served(spec, Profile(float_models=True)).models)
        )
        self.spec = served(spec, profile)
        self.map, self.updater = build_device(self.spec, household_id, ratings)
        self.image = self.map.registers  # static registers, copied into pymodbus' store on the first read
        self.loaded = False
        self.set_profile(profile)

    def set_profile(self, profile: Profile) -> None:
        """Behave as ``profile`` from the next request on (a new map is loaded then, if it moved)."""
        spec = served(self.base_spec, profile)
        if spec != self.spec:
            self.spec = spec
            self.map, self.updater = build_device(spec, self.household_id, self.ratings)
            self.image = self.map.registers
            self.loaded = False
        self.profile = profile
        self.profile_since: datetime | None = None
        self.last_raw: HomeState | None = None
        self.last_view: HomeState | None = None

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
        profile = self.profile
        if profile.delay_s > 0:
            await asyncio.sleep(profile.delay_s)  # pymodbus reads the registers once this returns
        if not self.loaded:
            # pymodbus builds a store from per-value SimData slowly (~15 ms a home); an all-zero block
            # filled here on first use keeps 1,000 homes starting in seconds.
            registers[: self.size] = self.image + [0] * (self.size - len(self.image))
            self.loaded = True
            self.last_view = None
        view = self.faults.view(self.household.state())
        if profile.changes_state:
            if view is not self.last_raw:
                self.profile_since = self.profile_since or view.ts
                self.last_raw = view
                self.updater(registers, profile.view(view, self.profile_since))
            return None
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
        devices: Sequence[ModbusDeviceSpec] = MODBUS_DEVICES,
        profiles: Mapping[str, Profile] | None = None,
    ) -> None:
        self.household_id = household_id
        self.address = address
        self.requested_port = port
        self.ratings = ratings or Ratings.from_equipment(getattr(household, "equipment", None))
        self.devices: dict[str, _Device] = {}
        self._by_unit: dict[int, _Device] = {}
        for spec in devices:
            faults = faults_by_device.setdefault(spec.device, Faults())
            profile = (profiles or {}).get(spec.device, STANDARD)
            device = _Device(spec, household, faults, household_id, self.ratings, profile)
            self.devices[spec.device] = device
            self._by_unit[spec.unit_id] = device
        self._server: ModbusTcpServer | None = None
        self.port: int | None = None

    @property
    def specs(self) -> tuple[ModbusDeviceSpec, ...]:
        """Each unit as it shows itself now (its models follow its profile)."""
        return tuple(dev.spec for dev in self.devices.values())

    @property
    def maps(self) -> dict[str, RegisterMap]:
        return {name: dev.map for name, dev in self.devices.items()}

    def set_profile(self, device: str, profile: Profile) -> None:
        self.devices[device].set_profile(profile)

    def _sim_devices(self) -> list[SimDevice]:
        return [
            SimDevice(
                id=dev.spec.unit_id,
                simdata=[
                    SimData(
                        address=BASE_ADDRESS,
                        count=dev.size,
                        values=0,
                        datatype=DataType.REGISTERS,
                        readonly=True,  # no remote control: writes get exception 2
                    )
                ],
                action=dev.action,
            )
            for dev in self.devices.values()
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
        devices: list[dict[str, object]] = []
        for dev in self.devices.values():
            s = dev.spec
            entry: dict[str, object] = {
                "device": s.device,
                "unit_id": s.unit_id,
                "models": list(s.models),
                "category": s.category,
            }
            if dev.profile != STANDARD:
                entry["profile"] = dev.profile.to_json()
            devices.append(entry)
        return {"port": self.port if self.port is not None else self.requested_port, "devices": devices}


def _bound_port(server: ModbusTcpServer) -> int | None:
    listener: Any = server.transport
    sockets = getattr(listener, "sockets", None)
    if sockets:
        port: int = sockets[0].getsockname()[1]
        return port
    return None
