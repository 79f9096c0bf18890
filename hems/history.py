"""Past readings for the demo homes, so a fresh demo already has days of charts to show.

The emulated household is deterministic, so its past is as real as its present: the same physics
that the live devices serve is sampled at past instants and stored as the readings the ECHONET Lite
devices would have given.  Field names match ``collector.echonet_decode`` so the history and the live
series are one series per device.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from collector.reading import FieldValue, Reading
from devices.state import HomeState


def readings_of(household: str, state: HomeState) -> list[Reading]:
    """One reading per ECHONET Lite device of the home, as the collector would emit them."""
    ts = state.ts
    devices: list[tuple[str, str, dict[str, FieldValue]]] = [
        (
            "smart_meter",
            "electricity",
            {
                "power_w": round(state.grid_w),
                "import_wh_total": round(state.grid_import_wh_total, 1),
                "export_wh_total": round(state.grid_export_wh_total, 1),
            },
        ),
        ("solar", "pv", {"power_w": round(state.pv_w), "energy_wh_total": round(state.pv_wh_total, 1)}),
        (
            "battery",
            "battery",
            {
                "power_w": round(state.battery_w),
                "soc_pct": round(state.battery_soc_pct),
                "charge_wh_total": round(state.battery_charge_wh_total, 1),
                "discharge_wh_total": round(state.battery_discharge_wh_total, 1),
            },
        ),
        ("water_meter", "water", {"volume_l_total": round(state.water_l_total, 1)}),
        ("gas_meter", "gas", {"volume_l_total": round(state.gas_l_total, 1)}),
        (
            "fuel_cell",
            "external_generation",
            {"power_w": round(state.fuelcell_w), "energy_wh_total": round(state.fuelcell_wh_total, 1)},
        ),
        (
            "ev_charger",
            "ev",
            {
                "power_w": round(state.ev_w),
                "connected": state.ev_connected,
                "charge_wh_total": round(state.ev_charge_wh_total, 1),
                "discharge_wh_total": round(state.ev_discharge_wh_total, 1),
                **({"soc_pct": round(state.ev_soc_pct)} if state.ev_connected else {}),
            },
        ),
    ]
    return [Reading(household, device, category, ts, fields) for device, category, fields in devices]


def sample_times(start: datetime, stop: datetime, every: timedelta) -> Iterator[datetime]:
    t = start
    while t < stop:
        yield t
        t += every
