"""One emulated household: its physics, its ECHONET Lite node, its SunSpec Modbus server, its faults.

Both protocols read the same ``Household`` so an ECHONET smart meter and a SunSpec meter of one home
agree on the same instant; each device id has its own ``Faults`` (ECHONET and Modbus device ids never
collide, so one dict serves both servers and the fault-control endpoint).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from devices.errors import DeviceError
from devices.profile import STANDARD, Profile
from devices.state import Faults, HomeState
from devices.sunspec.server import MODBUS_DEVICES, SunSpecHomeServer
from protocols.echonet.frame import PORT as ECHONET_PORT


class HouseholdLike(Protocol):
    household_id: str

    def state(self) -> HomeState: ...


class UnknownDeviceError(DeviceError, KeyError):
    """A device id this home does not have (e.g. from the fault-control endpoint)."""


def household_id_for(seed: int, index: int) -> str:
    """Opaque, stable id of home ``index`` of a fleet built with ``seed`` (the devices contract)."""
    return "hh-" + hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()[:10]


def address_for(index: int, prefix: str = "127.10") -> str:
    """Loopback address of home ``index``: 250 homes per /24 so no host part is 0 or 255."""
    if index < 0 or index >= 250 * 256:
        raise ValueError(f"home index {index} outside 0..{250 * 256 - 1}")
    return f"{prefix}.{index // 250}.{index % 250 + 1}"


@dataclass
class EmulatedHome:
    """A household and the servers that expose it; ``stop`` is idempotent and safe after a failed start."""

    index: int
    household: HouseholdLike
    address: str
    modbus_port: int | None = None  # None: no Modbus server
    echonet: bool = True
    echonet_port: int = ECHONET_PORT
    echonet_options: dict[str, Any] = field(default_factory=dict)
    modbus_options: dict[str, Any] = field(default_factory=dict)  # SunSpecHomeServer keywords (devices)
    faults: dict[str, Faults] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)  # device id -> profile (else standard)
    modbus_server: SunSpecHomeServer | None = field(default=None, init=False)
    echonet_node: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.modbus_port is not None:
            self.modbus_server = SunSpecHomeServer(
                self.household_id,
                self.household,
                self.faults,
                self.address,
                self.modbus_port,
                profiles=self.profiles,
                **self.modbus_options,
            )
        if self.echonet:
            from devices.echonet.home import build_home_node

            self.echonet_node = build_home_node(
                self.address,
                self.household,
                self.faults,
                port=self.echonet_port,
                profiles=self.profiles,
                **self.echonet_options,
            )
        # a fleet-wide plan may name devices of a protocol this home does not run
        self.profiles = {device: p for device, p in self.profiles.items() if device in self.faults}

    @property
    def household_id(self) -> str:
        return self.household.household_id

    def profile(self, device: str) -> Profile:
        self.device_faults(device)  # the device exists
        return self.profiles.get(device, STANDARD)

    def set_profile(self, device: str, profile: Profile) -> None:
        """Make one device behave as ``profile`` from its next answer on (the manifest follows)."""
        self.device_faults(device)
        self.profiles[device] = profile
        if self.modbus_server is not None and device in self.modbus_server.devices:
            self.modbus_server.set_profile(device, profile)
        elif self.echonet_node is not None:
            self.echonet_node.by_device[device].set_profile(profile)

    def device_faults(self, device: str) -> Faults:
        try:
            return self.faults[device]
        except KeyError:
            raise UnknownDeviceError(
                f"household {self.household_id} has no device {device!r}; devices: {sorted(self.faults)}"
            ) from None

    async def start(self) -> None:
        try:
            if self.modbus_server is not None:
                await self.modbus_server.start()
            if self.echonet_node is not None:
                await self.echonet_node.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self.echonet_node is not None:
            await self.echonet_node.stop()
        if self.modbus_server is not None:
            await self.modbus_server.stop()

    def manifest_entry(self, control_url: str | None = None) -> dict[str, object]:
        entry: dict[str, object] = {"household": self.household_id, "address": self.address}
        if self.echonet_node is not None:
            entry["echonet"] = {"port": self.echonet_port, "objects": _echonet_objects(self.echonet_node)}
        if self.modbus_server is not None:
            entry["modbus"] = self.modbus_server.manifest_entry()
        if control_url:
            entry["control_url"] = control_url
        return entry


def _echonet_objects(node: Any) -> list[dict[str, object]]:
    """The node's device objects as the manifest lists them (EOJ as 6 upper-case hex digits), with the
    profile of each that is not a standard device."""
    from devices.echonet.classes import DEVICE_KINDS

    objects: list[dict[str, object]] = []
    for o in node.objects:
        entry: dict[str, object] = {
            "device": o.device,
            "eoj": o.eoj.hex().upper(),
            "category": DEVICE_KINDS[o.device].category,
        }
        if o.profile != STANDARD:
            entry["profile"] = o.profile.to_json()
        objects.append(entry)
    return objects


MODBUS_DEVICE_IDS: frozenset[str] = frozenset(s.device for s in MODBUS_DEVICES)
