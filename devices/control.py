"""HTTP endpoint to switch device faults of a running fleet, for operators and integration tests.

    GET  /faults                                      every device's current fault switches
    GET  /faults/{household}/{device}                 one device's
    PUT  /faults/{household}/{device}                 JSON object with any of the fields below
    POST /faults/{household}/{device}/reset-counters  the device's counters restart from zero

Fields: ``no_reply``, ``malformed``, ``truncated``, ``stuck``, ``fault_flag`` (bool), ``modbus_exception``
(int code or null), ``sna_epcs`` (list of EPCs as ints or hex strings, e.g. ``["E7", 224]``),
``clock_offset_s`` (number of seconds).  A PUT changes only the fields it names; ``{"clear": true}``
first returns the device to healthy.  Loopback only: there is no authentication.

Device profiles (``devices.profile``: how a make of device behaves, rather than a fault):

    GET  /profiles                                    every device's profile
    GET  /profiles/{household}/{device}               one device's
    PUT  /profiles/{household}/{device}               ``{"name": "get_limit_2+slow"}``, profile fields
                                                      (``{"max_epcs": 2, "delay_s": 0.1}``) or both

A PUT replaces the device's profile whole (``{"name": "standard"}`` returns it to a standard device);
a body that does not describe a profile is refused (400) and changes nothing.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Protocol

from aiohttp import web

from devices.errors import DeviceError
from devices.profile import ProfileError, from_json
from devices.state import Faults, HomeState
from devices.sunspec.server import MODBUS_EXCEPTION_CODES


class FaultSpecError(DeviceError, ValueError):
    """A fault-control request body that cannot be applied; nothing of it was applied."""


class _Home(Protocol):
    household_id: str
    faults: dict[str, Faults]

    def device_faults(self, device: str) -> Faults: ...


class _Fleet(Protocol):
    homes: list[Any]

    def home(self, household: str | int) -> Any: ...


_BOOL_FIELDS = ("no_reply", "malformed", "truncated", "stuck", "fault_flag")


def faults_to_json(faults: Faults) -> dict[str, object]:
    return {
        "no_reply": faults.no_reply,
        "modbus_exception": faults.modbus_exception,
        "sna_epcs": [f"{e:02X}" for e in sorted(faults.sna_epcs)],
        "malformed": faults.malformed,
        "truncated": faults.truncated,
        "stuck": faults.stuck,
        "fault_flag": faults.fault_flag,
        "clock_offset_s": faults.clock_offset.total_seconds(),
        "counters_reset": bool(faults.counter_base),
    }


def _parse_epc(value: object) -> int:
    if isinstance(value, bool):
        raise FaultSpecError(f"sna_epcs: {value!r} is not an EPC")
    if isinstance(value, str):
        try:
            value = int(value, 16)
        except ValueError:
            raise FaultSpecError(f"sna_epcs: {value!r} is not a hex EPC") from None
    if not isinstance(value, int) or not 0x80 <= value <= 0xFF:
        raise FaultSpecError(f"sna_epcs: {value!r} is not an EPC in 0x80..0xFF")
    return value


def parse_fault_update(body: object) -> dict[str, object]:
    """Validate a PUT body into attribute changes; raise FaultSpecError naming the first bad field."""
    if not isinstance(body, dict):
        raise FaultSpecError("body must be a JSON object")
    allowed = {*_BOOL_FIELDS, "modbus_exception", "sna_epcs", "clock_offset_s", "clear"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise FaultSpecError(f"unknown fields {unknown}; allowed: {sorted(allowed)}")
    changes: dict[str, object] = {}
    for name in (*_BOOL_FIELDS, "clear"):
        if name in body:
            if not isinstance(body[name], bool):
                raise FaultSpecError(f"{name} must be true or false, got {body[name]!r}")
            changes[name] = body[name]
    if "modbus_exception" in body:
        code = body["modbus_exception"]
        if code is not None and (
            isinstance(code, bool) or not isinstance(code, int) or code not in MODBUS_EXCEPTION_CODES
        ):
            raise FaultSpecError(
                f"modbus_exception must be null or one of {sorted(MODBUS_EXCEPTION_CODES)}, got {code!r}"
            )
        changes["modbus_exception"] = code
    if "sna_epcs" in body:
        epcs = body["sna_epcs"]
        if not isinstance(epcs, list):
            raise FaultSpecError("sna_epcs must be a list")
        changes["sna_epcs"] = frozenset(_parse_epc(e) for e in epcs)
    if "clock_offset_s" in body:
        offset = body["clock_offset_s"]
        if isinstance(offset, bool) or not isinstance(offset, int | float) or abs(offset) > 10 * 365 * 86400:
            raise FaultSpecError(
                f"clock_offset_s must be a number of seconds (|x| <= 10 years), got {offset!r}"
            )
        changes["clock_offset"] = timedelta(seconds=offset)
    return changes


def apply_fault_update(faults: Faults, changes: dict[str, object]) -> None:
    if changes.get("clear"):
        faults.clear()
    for name, value in changes.items():
        if name != "clear":
            setattr(faults, name, value)


def _lookup(fleet: _Fleet, request: web.Request) -> tuple[Any, Faults]:
    household = request.match_info["household"]
    device = request.match_info["device"]
    try:
        home = fleet.home(household)
    except KeyError:
        raise web.HTTPNotFound(text=f"unknown household {household!r}\n") from None
    try:
        return home, home.device_faults(device)
    except KeyError:
        raise web.HTTPNotFound(
            text=f"household {household} has no device {device!r}; devices: {sorted(home.faults)}\n"
        ) from None


def build_app(fleet: _Fleet) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/faults")
    async def all_faults(request: web.Request) -> web.Response:
        active_only = request.query.get("active") in {"1", "true"}
        result: dict[str, Any] = {}
        for home in fleet.homes:
            devices = {
                name: faults_to_json(f)
                for name, f in sorted(home.faults.items())
                if not active_only or f != Faults()
            }
            if devices or not active_only:
                result[home.household_id] = devices
        return web.json_response(result)

    @routes.get("/faults/{household}/{device}")
    async def one(request: web.Request) -> web.Response:
        _, faults = _lookup(fleet, request)
        return web.json_response(faults_to_json(faults))

    @routes.put("/faults/{household}/{device}")
    async def put(request: web.Request) -> web.Response:
        _, faults = _lookup(fleet, request)
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body is not valid JSON\n") from None
        try:
            changes = parse_fault_update(body)
        except FaultSpecError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        apply_fault_update(faults, changes)
        return web.json_response(faults_to_json(faults))

    @routes.get("/profiles")
    async def all_profiles(request: web.Request) -> web.Response:
        return web.json_response(
            {
                home.household_id: {d: home.profile(d).to_json() for d in sorted(home.faults)}
                for home in fleet.homes
            }
        )

    @routes.get("/profiles/{household}/{device}")
    async def one_profile(request: web.Request) -> web.Response:
        home, _ = _lookup(fleet, request)
        return web.json_response(home.profile(request.match_info["device"]).to_json())

    @routes.put("/profiles/{household}/{device}")
    async def put_profile(request: web.Request) -> web.Response:
        home, _ = _lookup(fleet, request)
        device = request.match_info["device"]
        try:
            profile = from_json(await request.json())
        except ValueError as exc:  # not JSON, or JSON that is no profile (ProfileError)
            message = str(exc) if isinstance(exc, ProfileError) else "body is not valid JSON"
            raise web.HTTPBadRequest(text=f"{message}\n") from None
        home.set_profile(device, profile)
        return web.json_response(home.profile(device).to_json())

    @routes.post("/faults/{household}/{device}/reset-counters")
    async def reset(request: web.Request) -> web.Response:
        home, faults = _lookup(fleet, request)
        state: HomeState = home.household.state()
        faults.reset_counters(state)
        return web.json_response(faults_to_json(faults))

    app = web.Application()
    app.add_routes(routes)
    return app


async def start_control(fleet: _Fleet, host: str, port: int) -> tuple[web.AppRunner, str]:
    """Serve the control app; returns the runner (``await runner.cleanup()`` to stop) and its URL."""
    runner = web.AppRunner(build_app(fleet), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, f"http://{host}:{bound}"
