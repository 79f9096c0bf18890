"""What a device of each category measures in a household, named as the collector names it.

The protocol entries (``protocols``) say which field each ECHONET property or SunSpec point carries
(``power_w`` of an ``electricity`` device, ``soc_pct`` of a ``battery``); this table says where that
value is in a ``HomeState``.  With both, the emulator serves any registered class or model without code
of its own: a new class whose properties carry known fields of a known category is served as soon as
it is registered.  Signs are the vocabulary's: electricity + import, battery and EV + charging.
"""

from __future__ import annotations

from collections.abc import Callable

from devices.state import HomeState

Measured = float | int | bool | str | None  # None: the device cannot tell now (an unplugged car's battery)
Source = Callable[[HomeState], Measured]


def _battery_state(st: HomeState) -> str:
    if st.battery_w > 1.0:
        return "charging"
    if st.battery_w < -1.0:
        return "discharging"
    return "standby"


SOURCES: dict[str, dict[str, Source]] = {
    "electricity": {
        "power_w": lambda st: st.grid_w,
        "import_wh_total": lambda st: st.grid_import_wh_total,
        "export_wh_total": lambda st: st.grid_export_wh_total,
    },
    "pv": {
        "power_w": lambda st: max(0.0, st.pv_w),
        "energy_wh_total": lambda st: st.pv_wh_total,
        "export_wh_total": lambda st: st.grid_export_wh_total,  # what the PV system sold
        "fault": lambda st: st.inverter_fault,
    },
    "battery": {
        "power_w": lambda st: st.battery_w,
        "soc_pct": lambda st: st.battery_soc_pct,
        "charge_wh_total": lambda st: st.battery_charge_wh_total,
        "discharge_wh_total": lambda st: st.battery_discharge_wh_total,
        "state": _battery_state,
        "fault": lambda st: st.battery_fault,
    },
    "water": {"volume_l_total": lambda st: st.water_l_total},
    "gas": {"volume_l_total": lambda st: st.gas_l_total},
    "external_generation": {
        "power_w": lambda st: st.fuelcell_w,
        "energy_wh_total": lambda st: st.fuelcell_wh_total,
        "running": lambda st: st.fuelcell_w > 0.5,
    },
    "ev": {
        "power_w": lambda st: st.ev_w if st.ev_connected else 0.0,
        "soc_pct": lambda st: st.ev_soc_pct if st.ev_connected else None,
        "charge_wh_total": lambda st: st.ev_charge_wh_total,
        "discharge_wh_total": lambda st: st.ev_discharge_wh_total,
        "connected": lambda st: st.ev_connected,
    },
}


def source(category: str, field: str) -> Source | None:
    """Where a ``category`` device's ``field`` comes from, or None when the household has no such value."""
    return SOURCES.get(category, {}).get(field)
