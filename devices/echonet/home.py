"""One emulated home's ECHONET Lite node: the seven device objects of the devices contract.

    build_home_node(address, household, faults_by_device, settings=None, port=3610,
                    announce_interval_s=10.0, multicast=True) -> EchonetNode

- ``household``: anything with ``.state() -> HomeState`` (``devices.physics.Household``); its
  ``.equipment`` (if present) sizes rated powers and capacities, and ``.household_id`` seeds the node's
  identification number (0x83).  The meter shows the household's own import/export totals (the
  physics starts them at years of use); ``import_offset_wh`` adds an older meter's history on top.
- ``faults_by_device``: ``{device_id: Faults}``; a missing device id gets a fresh ``Faults()`` which is
  stored back into the dict, so the caller can switch faults later through the same dict.
- ``settings``: ``{device_id: {name: value}}`` overrides, e.g. ``{"smart_meter": {"coefficient": 1,
  "unit": 0x01, "digits": 6, "import_offset_wh": 9.99e7}}``.
- ``profiles``: ``{device_id: Profile}``, how each device behaves (``devices.profile``).
- Device ids and EOJs: one object per registered class (``protocols.echonet.classes``), instance 1:
  smart_meter 028801, solar 027901, battery 027D01, water_meter 028101, gas_meter 028201, fuel_cell
  027C01, ev_charger 027E01 (the node's ``objects`` list them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from devices.echonet.classes import DEVICE_KINDS
from devices.echonet.node import EchonetNode, EchonetObject
from devices.errors import DeviceSettingsError
from devices.profile import STANDARD, Profile
from devices.state import Faults, HomeState
from protocols.echonet.frame import PORT


class HouseholdLike(Protocol):
    def state(self) -> HomeState: ...


def _equipment_settings(equipment: Any) -> dict[str, dict[str, float]]:
    """Rated powers and capacities the real devices would report, taken from the household's equipment."""
    if equipment is None:
        return {}
    out: dict[str, dict[str, float]] = {}

    def put(device: str, key: str, attr: str, scale: float = 1.0) -> None:
        value = getattr(equipment, attr, None)
        if isinstance(value, int | float):  # bool included: v2h becomes 1.0 / 0.0
            out.setdefault(device, {})[key] = float(value) * scale

    put("solar", "rated_w", "pv_kw", 1000.0)
    put("battery", "capacity_wh", "battery_kwh", 1000.0)
    put("battery", "rated_w", "battery_max_w")
    put("fuel_cell", "rated_w", "fuelcell_w")
    put("ev_charger", "vehicle_wh", "ev_battery_kwh", 1000.0)
    put("ev_charger", "charger_w", "ev_charger_w")
    put("ev_charger", "v2h", "v2h")
    return out


def build_home_node(
    address: str,
    household: HouseholdLike,
    faults_by_device: dict[str, Faults],
    settings: Mapping[str, Mapping[str, float]] | None = None,
    port: int = PORT,
    *,
    announce_interval_s: float | None = 10.0,
    multicast: bool = True,
    profiles: Mapping[str, Profile] | None = None,
) -> EchonetNode:
    """The home's node with an object of every registered class; ``await node.start()`` it."""
    household_id = str(getattr(household, "household_id", address))
    merged = _equipment_settings(getattr(household, "equipment", None))
    unknown = set(settings or {}) - set(DEVICE_KINDS)
    if unknown:
        raise DeviceSettingsError(
            f"settings for unknown devices {sorted(unknown)}; known: {sorted(DEVICE_KINDS)}"
        )
    for device, values in (settings or {}).items():
        merged.setdefault(device, {}).update(values)
    objects = []
    for device, kind in DEVICE_KINDS.items():
        faults = faults_by_device.setdefault(device, Faults())
        objects.append(
            EchonetObject(
                kind.eoj,
                device,
                kind.cls,
                household.state,
                faults,
                dict(merged.get(device, {})),
                household_id,
                (profiles or {}).get(device, STANDARD),
            )
        )
    return EchonetNode(
        address,
        objects,
        port,
        node_id=household_id,
        announce_interval_s=announce_interval_s,
        multicast=multicast,
    )
