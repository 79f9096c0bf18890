"""A fleet of emulated homes in one process, sharing one simulated clock, and its manifest.

The manifest is the only thing a collector needs to find every device (devices contract): which
household lives at which loopback address, which ECHONET objects and Modbus unit ids it has.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devices.errors import DeviceError
from devices.home import MODBUS_DEVICE_IDS, EmulatedHome, UnknownDeviceError, address_for, household_id_for
from devices.profile import Plan
from devices.state import Faults
from devices.sunspec.server import DEFAULT_MODBUS_PORT

MANIFEST_VERSION = 1


class UnknownHouseholdError(DeviceError, KeyError):
    """No home of this fleet has that household id (or index)."""


class FleetError(DeviceError, RuntimeError):
    """The fleet cannot start (bad parameters, address in use, ...)."""


def known_device_ids() -> frozenset[str]:
    """Every device id an emulated home may have (ECHONET Lite objects and Modbus units)."""
    from devices.echonet.classes import DEVICE_KINDS

    return frozenset(DEVICE_KINDS) | MODBUS_DEVICE_IDS


def _frozen() -> float:
    return 0.0


def make_clock(start: datetime, speed: float) -> Any:
    """The shared simulated clock; ``speed == 0`` freezes it at ``start`` so every read sees one instant."""
    from devices.clock import SimClock

    if speed == 0:
        return SimClock(start, 1.0, monotonic=_frozen)
    return SimClock(start, speed)


def _default_household_factory(household_id: str, seed: int, clock: Any) -> Any:
    from devices.physics import Household

    return Household(household_id, seed, clock)


class Fleet:
    """``homes`` emulated homes; ``await start()`` binds every server, ``await stop()`` releases them all."""

    def __init__(
        self,
        homes: int,
        seed: int,
        speed: float = 1.0,
        start: datetime | None = None,
        modbus_port: int = DEFAULT_MODBUS_PORT,
        echonet: bool = True,
        modbus: bool = True,
        *,
        address_prefix: str = "127.10",
        control_port: int | None = None,
        echonet_options: dict[str, Any] | None = None,
        modbus_options: dict[str, Any] | None = None,
        household_factory: Callable[[str, int, Any], Any] | None = None,
        profiles: Plan | None = None,
    ) -> None:
        if not isinstance(homes, int) or homes < 1:
            raise FleetError(f"homes must be a positive integer, got {homes!r}")
        if homes > 250 * 256:
            raise FleetError(f"at most {250 * 256} homes fit the address plan, got {homes}")
        if speed < 0:
            raise FleetError(f"speed must be >= 0, got {speed}")
        octets = address_prefix.split(".")
        if (
            len(octets) != 2
            or octets[0] != "127"
            or not octets[1].isdigit()
            or not 0 <= int(octets[1]) <= 255
        ):
            raise FleetError(f"address_prefix must be '127.N' (loopback only), got {address_prefix!r}")
        if start is not None and (start.tzinfo is None or start.utcoffset() is None):
            raise FleetError("start must be timezone-aware")
        self.seed = seed
        self.speed = float(speed)
        self.sim_start = (start or datetime.now(UTC)).astimezone(UTC)
        self.clock = make_clock(self.sim_start, self.speed)
        self.control_port = control_port
        self.control_url: str | None = None
        factory = household_factory or _default_household_factory
        self.homes: list[EmulatedHome] = []
        for i in range(homes):
            chosen = dict(profiles(i)) if profiles is not None else {}
            unknown = set(chosen) - known_device_ids()
            if unknown:
                raise FleetError(
                    f"profiles for unknown devices {sorted(unknown)}; known: {sorted(known_device_ids())}"
                )
            hid = household_id_for(seed, i)
            self.homes.append(
                EmulatedHome(
                    index=i,
                    household=factory(hid, seed, self.clock),  # physics mixes seed with the id
                    address=address_for(i, address_prefix),
                    modbus_port=modbus_port if modbus else None,
                    echonet=echonet,
                    echonet_options=dict(echonet_options or {}),
                    modbus_options=dict(modbus_options or {}),
                    profiles=chosen,
                )
            )
        self._by_id = {h.household_id: h for h in self.homes}
        self._control: Any = None
        self._started = False

    # --- lookup -----------------------------------------------------------------------------------

    def home(self, household: str | int) -> EmulatedHome:
        if isinstance(household, int) and not isinstance(household, bool):
            if 0 <= household < len(self.homes):
                return self.homes[household]
        elif household in self._by_id:
            return self._by_id[household]
        raise UnknownHouseholdError(f"no household {household!r} in this fleet")

    def faults(self, household: str | int, device: str) -> Faults:
        """The live fault switches of one device: changing them changes what that device answers."""
        return self.home(household).device_faults(device)

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            raise FleetError("fleet already started")
        self._started = True
        try:
            # Bind in slices: a thousand concurrent binds gain nothing and make a failure noisy.
            for first in range(0, len(self.homes), 100):
                # Let every start of the slice finish before judging, so none is still binding when we
                # clean up after a failure.
                results = await asyncio.gather(
                    *(h.start() for h in self.homes[first : first + 100]), return_exceptions=True
                )
                failures = [r for r in results if isinstance(r, BaseException)]
                if failures:
                    raise failures[0]
            if self.control_port is not None:
                from devices.control import start_control

                self._control, self.control_url = await start_control(self, "127.0.0.1", self.control_port)
        except OSError as exc:
            await self.stop()
            raise FleetError(f"cannot start fleet: {exc}") from exc
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        control, self._control = self._control, None
        if control is not None:
            await control.cleanup()
        await asyncio.gather(*(h.stop() for h in self.homes), return_exceptions=True)
        self._started = False

    async def __aenter__(self) -> Fleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- manifest ---------------------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "seed": self.seed,
            "speed": self.speed,
            "sim_start": _iso(self.sim_start),
            "created": _iso(datetime.now(UTC)),
            "homes": [h.manifest_entry(self.control_url) for h in self.homes],
        }

    def write_manifest(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file + rename) so a collector never reads half a manifest."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.manifest(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, target)
        return target


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


__all__ = ["Fleet", "FleetError", "UnknownDeviceError", "UnknownHouseholdError", "make_clock"]
