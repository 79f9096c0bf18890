"""An emulated home's readings as a collector would store them, and what really happened in it.

``devices.physics.Household`` steps a fully equipped home (PV, battery, fuel cell, EV with V2H,
water, gas) minute by minute; every ``sample`` its devices are read into ``Point``s, one per device.
Beside the readings the home's true consumption is integrated at every physics step (no meter
reads it; the homeowner's page derives it from the others), so a test can hold the page's
"home" figure and its balance against the truth rather than against the same arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from devices.clock import SimClock
from devices.physics import Household
from devices.state import HomeState
from pipeline.points import Point

STEP_S = 60.0


@dataclass
class EmulatedHome:
    points: list[Point] = field(default_factory=list)
    load_wh_total: dict[datetime, float] = field(default_factory=dict)  # sample time -> true use so far

    def true_load_wh(self, start: datetime, stop: datetime) -> float:
        """The home's use between the last samples before ``start`` and before ``stop`` (the span the
        meters' totals cover for a period [start, stop))."""
        times = sorted(self.load_wh_total)
        before_start = max(t for t in times if t < start)
        before_stop = max(t for t in times if t < stop)
        return self.load_wh_total[before_stop] - self.load_wh_total[before_start]


def emulated_home(
    household: str, start: datetime, stop: datetime, sample: timedelta, seed: int = 7
) -> EmulatedHome:
    home = Household(household, seed=seed, clock=SimClock(start), step_s=STEP_S)
    out = EmulatedHome()
    load_wh = 0.0
    t = start
    next_sample = start
    while t < stop:
        s = home.state(t)
        if t > start:
            load_wh += s.load_w * STEP_S / 3600.0
        if t >= next_sample:
            out.load_wh_total[t] = load_wh
            out.points += _read(household, t, s)
            next_sample += sample
        t += timedelta(seconds=STEP_S)
    return out


def _read(household: str, t: datetime, s: HomeState) -> list[Point]:
    ns = int(t.timestamp()) * 1_000_000_000
    return [
        Point(
            "pv",
            household,
            "pv1",
            "modbus",
            ns,
            {"power_w": s.pv_w, "energy_wh_total": s.pv_wh_total, "fault": s.inverter_fault},
        ),
        Point(
            "electricity",
            household,
            "meter1",
            "echonet",
            ns,
            {
                "power_w": s.grid_w,
                "import_wh_total": s.grid_import_wh_total,
                "export_wh_total": s.grid_export_wh_total,
            },
        ),
        Point(
            "battery",
            household,
            "bat1",
            "echonet",
            ns,
            {
                "power_w": s.battery_w,
                "soc_pct": s.battery_soc_pct,
                "fault": s.battery_fault,
                "charge_wh_total": s.battery_charge_wh_total,
                "discharge_wh_total": s.battery_discharge_wh_total,
            },
        ),
        Point(
            "external_generation",
            household,
            "fuelcell1",
            "echonet",
            ns,
            {"power_w": s.fuelcell_w, "energy_wh_total": s.fuelcell_wh_total},
        ),
        Point(
            "ev",
            household,
            "evcharger1",
            "echonet",
            ns,
            {
                "power_w": s.ev_w,
                "soc_pct": s.ev_soc_pct,
                "connected": s.ev_connected,
                "charge_wh_total": s.ev_charge_wh_total,
                "discharge_wh_total": s.ev_discharge_wh_total,
            },
        ),
        Point("water", household, "water1", "echonet", ns, {"volume_l_total": s.water_l_total}),
        Point("gas", household, "gas1", "echonet", ns, {"volume_l_total": s.gas_l_total}),
    ]
