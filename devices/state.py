"""What a household looks like at one instant, and how a faulty device distorts what it reports.

The physics (``devices.physics``) produces ``HomeState``; every emulated device (SunSpec registers,
ECHONET properties) reads its values from a ``HomeState`` seen through that device's ``Faults``.  Keeping
the two apart means a fault never changes the household itself, only what one device says about it,
which is exactly how a replaced meter or a stuck sensor behaves in a real home.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timedelta

# Counters of HomeState, in the unit their name says.  A fault that resets counters rebases these.
COUNTER_NAMES: tuple[str, ...] = (
    "pv_wh_total",
    "grid_import_wh_total",
    "grid_export_wh_total",
    "battery_charge_wh_total",
    "battery_discharge_wh_total",
    "fuelcell_wh_total",
    "ev_charge_wh_total",
    "ev_discharge_wh_total",
    "water_l_total",
    "gas_l_total",
)


@dataclass(frozen=True, slots=True)
class HomeState:
    """Instantaneous powers (W, sign given per field) and cumulative counters of one household.

    Balance, exact by construction: ``pv_w + fuelcell_w + grid_w == load_w + battery_w + ev_w``.
    """

    ts: datetime  # simulated time, timezone-aware UTC
    pv_w: float  # >= 0
    load_w: float  # household consumption, >= 0
    battery_w: float  # + charging, - discharging
    battery_soc_pct: float  # within the battery's SOC limits
    grid_w: float  # + import from the grid, - export to the grid
    fuelcell_w: float  # >= 0
    ev_w: float  # + charging the car, - discharging it (V2H)
    ev_connected: bool
    ev_soc_pct: float
    water_lpm: float  # current water flow, litres per minute
    gas_lph: float  # current gas flow, litres per hour
    pv_wh_total: float
    grid_import_wh_total: float
    grid_export_wh_total: float
    battery_charge_wh_total: float
    battery_discharge_wh_total: float
    fuelcell_wh_total: float
    ev_charge_wh_total: float
    ev_discharge_wh_total: float
    water_l_total: float
    gas_l_total: float
    inverter_fault: bool = False
    battery_fault: bool = False


@dataclass
class Faults:
    """Faults of one device, switchable at run time (the servers read these on every request).

    - ``no_reply``: the device stays silent (the client sees a timeout).
    - ``modbus_exception``: Modbus exception code to answer every read with (e.g. 2, 4, 6).
    - ``sna_epcs``: ECHONET EPCs the device cannot answer (Get_SNA with PDC=0 for those).
    - ``malformed`` / ``truncated``: replies are garbage, or cut short mid-frame.
    - ``stuck``: the device keeps reporting the state it had when the fault was switched on.
    - ``clock_offset``: the device's own clock is off by this much (a clock jump).
    - ``fault_flag``: the device raises its own fault flag while still answering: an inverter reports
      SunSpec ``St`` = FAULT with an event bit and ECHONET fault status 0x41, a battery its alarm
      state; what it measures is unchanged (a ground-fault alarm is raised by a running inverter).
    - counter reset: ``reset_counters(state)`` makes every counter restart from zero, like a
      replaced meter; the household's true totals are unaffected.
    """

    no_reply: bool = False
    modbus_exception: int | None = None
    sna_epcs: frozenset[int] = frozenset()
    malformed: bool = False
    truncated: bool = False
    stuck: bool = False
    clock_offset: timedelta = timedelta(0)
    fault_flag: bool = False
    counter_base: dict[str, float] = field(default_factory=dict)
    _stuck_state: HomeState | None = None

    def clear(self) -> None:
        """Back to a healthy device (a counter reset stays: a replaced meter is not un-replaced)."""
        self.no_reply = False
        self.modbus_exception = None
        self.sna_epcs = frozenset()
        self.malformed = False
        self.truncated = False
        self.stuck = False
        self.clock_offset = timedelta(0)
        self.fault_flag = False
        self._stuck_state = None

    def reset_counters(self, state: HomeState) -> None:
        """Simulate a meter replacement: from now on this device's counters start at zero."""
        self.counter_base = {name: getattr(state, name) for name in COUNTER_NAMES}

    def view(self, state: HomeState) -> HomeState:
        """The state as this device reports it, with stuck values, clock jump and counter reset applied."""
        if self.stuck:
            if self._stuck_state is None:
                self._stuck_state = state
            state = self._stuck_state
        else:
            self._stuck_state = None
        changes: dict[str, object] = {}
        if self.counter_base:
            for name, base in self.counter_base.items():
                changes[name] = max(0.0, getattr(state, name) - base)
        if self.clock_offset:
            changes["ts"] = state.ts + self.clock_offset
        if self.fault_flag:
            # Each device reads only its own flag (an inverter ``inverter_fault``, a battery
            # ``battery_fault``), so raising both is raising this device's.
            changes["inverter_fault"] = True
            changes["battery_fault"] = True
        return dataclasses.replace(state, **changes) if changes else state  # type: ignore[arg-type]
