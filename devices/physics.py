"""Deterministic simulation of one Japanese household's energy, water and gas, producing ``HomeState``.

A household integrates in fixed steps from the clock's start, lazily, only when someone asks for its
state.  Because the steps are fixed and every random draw comes from generators seeded by the
household and the date, the state at a given simulated instant is the same however often, or however
irregularly, the devices poll it; that is what lets a test or a collector compare readings across runs.

Per step the work is plain float arithmetic over precomputed day plans (``devices.dayplan``) and cached
sun geometry (``common.sun``), so a fleet of a thousand homes running at 60x costs a few percent of
a core.

Sign conventions are those of ``HomeState``: grid + import, battery and EV + charging.  The balance
``pv + fuelcell + grid == load + battery + ev`` holds by construction because grid is computed last
as whatever the other flows leave over.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from common import sun
from common.sun import (
    DEFAULT_TILT_DEG,
    PERFORMANCE_RATIO,
    clear_sky_poa,
    clear_sky_pv_w,
    solar_day,
    sunrise_sunset,
)
from devices.clock import SimClock, SimulationError, require_utc
from devices.dayplan import GAS_WH_PER_L, KNOT_S, KNOTS, DayPlan, Habits, draw_day, draw_habits
from devices.state import HomeState

__all__ = [
    "Equipment",
    "Household",
    "SimClock",
    "SimulationError",
    "Site",
    "clear_sky_pv_w",
    "draw_equipment",
    "sunrise_sunset",
]

FUELCELL_ELECTRIC_EFFICIENCY = 0.40  # share of the gas's energy a residential fuel cell turns into power
V2H_FLOOR_PCT = 30.0  # the car keeps this much for tomorrow's drive when it feeds the house
EV_ARRIVAL_FLOOR_PCT = 5.0


@dataclass(frozen=True)
class Site(sun.Site):
    """``common.sun.Site`` whose impossible coordinates or zone are a ``SimulationError``, like every
    other bad input to the household simulation."""

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except sun.SunInputError as exc:
            raise SimulationError(str(exc)) from None


_DEFAULT_SITE = Site()


@dataclass(frozen=True)
class Equipment:
    """What is installed in one home.  Defaults: a typical fully equipped home (every device kind present)."""

    pv_kw: float = 5.0  # 0: no panels
    battery_kwh: float = 9.8  # 0: no stationary battery
    battery_max_w: float = 3000.0
    soc_min_pct: float = 20.0  # reserve kept for outages
    soc_max_pct: float = 100.0
    has_fuelcell: bool = True
    fuelcell_w: float = 700.0
    has_ev: bool = True
    ev_battery_kwh: float = 40.0
    ev_charger_w: float = 3000.0
    v2h: bool = True  # the charger can also feed the house from the car
    residents: int = 3
    ih_cooking: bool = True  # induction hob (electric) instead of a gas hob
    pv_tilt_deg: float = DEFAULT_TILT_DEG
    battery_round_trip: float = 0.90
    ev_charge_efficiency: float = 0.92

    def __post_init__(self) -> None:
        checks = (
            (self.pv_kw >= 0, "pv_kw must be >= 0"),
            (self.battery_kwh >= 0, "battery_kwh must be >= 0"),
            (self.battery_max_w >= 0, "battery_max_w must be >= 0"),
            (0 <= self.soc_min_pct < self.soc_max_pct <= 100, "need 0 <= soc_min_pct < soc_max_pct <= 100"),
            (self.fuelcell_w >= 0, "fuelcell_w must be >= 0"),
            (not self.has_ev or self.ev_battery_kwh > 0, "an EV needs ev_battery_kwh > 0"),
            (self.ev_charger_w >= 0, "ev_charger_w must be >= 0"),
            (1 <= self.residents <= 12, "residents must be within 1..12"),
            (0 <= self.pv_tilt_deg <= 90, "pv_tilt_deg must be within 0..90"),
            (0 < self.battery_round_trip <= 1, "battery_round_trip must be within (0, 1]"),
            (0 < self.ev_charge_efficiency <= 1, "ev_charge_efficiency must be within (0, 1]"),
        )
        for ok, message in checks:
            if not ok:
                raise SimulationError(f"{message} ({self!r})")
        for name in ("pv_kw", "battery_kwh", "battery_max_w", "fuelcell_w", "ev_battery_kwh", "ev_charger_w"):
            if not math.isfinite(getattr(self, name)):
                raise SimulationError(f"{name} must be finite")

    @property
    def has_pv(self) -> bool:
        return self.pv_kw > 0

    @property
    def has_battery(self) -> bool:
        return self.battery_kwh > 0


def draw_equipment(seed: int, household_id: str) -> Equipment:
    """Equipment sized like Japanese homes of that kind, drawn from the household's seed."""
    rng = random.Random(f"{seed}:{household_id}:equipment")
    residents = rng.choices((1, 2, 3, 4, 5), weights=(20, 33, 20, 19, 8))[0]
    return Equipment(
        pv_kw=round(rng.uniform(3.0, 8.0), 1),
        battery_kwh=rng.choice((5.0, 6.5, 7.4, 9.8, 12.7, 16.4)),
        battery_max_w=rng.choice((2000.0, 3000.0, 4000.0, 5900.0)),
        soc_min_pct=rng.choice((10.0, 20.0, 30.0)),
        soc_max_pct=rng.choice((90.0, 95.0, 100.0)),
        has_fuelcell=True,
        fuelcell_w=rng.choice((700.0, 700.0, 400.0)),
        has_ev=True,
        ev_battery_kwh=rng.choice((20.0, 40.0, 60.0, 62.0)),
        ev_charger_w=rng.choice((3000.0, 3000.0, 6000.0)),
        v2h=rng.random() < 0.7,
        residents=residents,
        ih_cooking=rng.random() < 0.6,
        pv_tilt_deg=rng.uniform(15.0, 35.0),
    )


class Household:
    """One home, stepped lazily up to whatever simulated instant a device asks about."""

    def __init__(
        self,
        household_id: str,
        seed: int,
        clock: SimClock,
        site: Site = _DEFAULT_SITE,
        equipment: Equipment | None = None,
        step_s: float = 10.0,
    ) -> None:
        if not isinstance(household_id, str) or not household_id:
            raise SimulationError("household_id must be a non-empty string")
        if not isinstance(step_s, int | float) or not math.isfinite(step_s) or not 0.1 <= step_s <= 3600:
            raise SimulationError(f"step_s must be within [0.1, 3600] seconds, got {step_s!r}")
        self.household_id = household_id
        self.seed = seed
        self.clock = clock
        self.site = site
        self.equipment: Equipment = equipment if equipment is not None else draw_equipment(seed, household_id)
        self.step_s = float(step_s)
        self._step_delta = timedelta(seconds=self.step_s)
        self.habits: Habits = draw_habits(
            random.Random(f"{seed}:{household_id}:habits"), self.equipment.residents
        )
        self._tz = site.tz
        self._start = clock.start
        self._start_epoch = clock.start.timestamp()
        self._plan: DayPlan | None = None
        self._rng = random.Random(0)  # replaced by each day's generator
        self._ui = 0  # pointers into the day's usage and cloud-dip timelines
        self._di = 0
        self._k = -1  # last computed step
        self._snapshot: HomeState | None = None
        # Devices of one home may be served from several threads; stepping must not interleave.
        self._lock = threading.Lock()
        # Powers of the last computed step (W, L/min, L/h).
        self._pv = self._load = self._bat = self._grid = self._fc = self._ev = 0.0
        self._lpm = self._lph = 0.0
        self._init_stores()
        self._advance(0)

    def _init_stores(self) -> None:
        """Counters start where years of use left them, so collectors see realistic meter readings."""
        eq = self.equipment
        rng = random.Random(f"{self.seed}:{self.household_id}:initial")
        years = rng.uniform(0.5, 6.0)
        self._soc = rng.uniform(eq.soc_min_pct, eq.soc_max_pct)
        self._ev_soc = rng.uniform(40.0, 90.0) if eq.has_ev else 0.0
        self._ev_connected = eq.has_ev
        self._pv_wh = years * eq.pv_kw * 1.15e6
        self._import_wh = years * 3.5e6
        self._export_wh = years * eq.pv_kw * 0.6e6
        self._charge_wh = years * eq.battery_kwh * 250e3
        self._discharge_wh = self._charge_wh * eq.battery_round_trip
        self._fc_wh = years * 2.5e6 if eq.has_fuelcell else 0.0
        self._ev_charge_wh = years * 2.0e6 if eq.has_ev else 0.0
        self._ev_discharge_wh = years * 0.2e6 if eq.has_ev and eq.v2h else 0.0
        self._water_l = years * eq.residents * 80e3
        self._gas_l = years * 350e3

    # -- public -------------------------------------------------------------------------------

    def state(self, at: datetime | None = None) -> HomeState:
        """The household at the last step not after ``at`` (default: the clock's now).

        Time never runs backwards in a home: asking about an instant before the last computed step
        returns that last step's state.
        """
        at = self.clock.now() if at is None else require_utc(at, "state time")
        steps = math.floor((at - self._start) / self._step_delta)
        with self._lock:
            if steps > self._k:
                self._advance(steps)
            snapshot = self._snapshot
            if snapshot is None:
                snapshot = self._snapshot = self._make_state()
        return snapshot

    # -- stepping -----------------------------------------------------------------------------

    def _plan_for(self, epoch: float) -> DayPlan:
        """The plan of the local day containing ``epoch``, and that day's generator for step noise."""
        tz = self._tz
        day: date = datetime.fromtimestamp(epoch, tz).date()
        start = datetime.combine(day, time(0), tzinfo=tz).timestamp()
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).timestamp()
        rng = random.Random(f"{self.seed}:{self.household_id}:{day.isoformat()}")
        eq = self.equipment
        geometry = solar_day(self.site.latitude, self.site.longitude, eq.pv_tilt_deg, day.toordinal())
        plan = draw_day(
            rng,
            self.habits,
            day,
            start,
            end,
            geometry,
            ih_cooking=eq.ih_cooking,
            fuelcell=eq.has_fuelcell,
        )
        self._rng = rng
        self._ui = self._di = 0
        return plan

    def _advance(self, target: int) -> None:
        """Integrate from the last computed step to step ``target``.

        Written as one loop over locals because it is the only hot path of a fleet: attribute
        lookups and calls per step are what would make 1,000 homes expensive.
        """
        eq = self.equipment
        dt = self.step_s
        dt_h = dt / 3600.0
        start_epoch = self._start_epoch
        half_eff = math.sqrt(eq.battery_round_trip)
        cap_wh = eq.battery_kwh * 1000.0
        bat_max = eq.battery_max_w
        soc_min, soc_max = eq.soc_min_pct, eq.soc_max_pct
        ev_cap_wh = eq.ev_battery_kwh * 1000.0
        ev_eff = eq.ev_charge_efficiency
        ev_max = eq.ev_charger_w
        has_ev, v2h_capable = eq.has_ev, eq.v2h
        fc_max = eq.fuelcell_w if eq.has_fuelcell else 0.0
        pv_kw = eq.pv_kw
        last_knot = KNOTS - 2

        k = self._k
        pv, load, bat, grid, fc, ev = self._pv, self._load, self._bat, self._grid, self._fc, self._ev
        lpm, lph = self._lpm, self._lph
        soc, ev_soc, ev_connected = self._soc, self._ev_soc, self._ev_connected
        pv_wh, import_wh, export_wh = self._pv_wh, self._import_wh, self._export_wh
        charge_wh, discharge_wh, fc_wh = self._charge_wh, self._discharge_wh, self._fc_wh
        ev_charge_wh, ev_discharge_wh = self._ev_charge_wh, self._ev_discharge_wh
        water_l, gas_l = self._water_l, self._gas_l
        plan = self._plan
        ui, di = self._ui, self._di
        rnd = self._rng.random
        if plan is not None:
            (day_start, day_end, lk, ck, uends, uw, ulpm, ulph, dends, dfac) = self._unpack(plan)
        else:
            day_start = day_end = -math.inf
            lk = ck = uends = uw = ulpm = ulph = dends = dfac = ()
        pv_scale = pv_kw * PERFORMANCE_RATIO * plan.pv_factor if plan is not None else 0.0

        while k < target:
            # 1. The powers of step k act for dt: integrate them into counters and stores.
            if k >= 0:
                pv_wh += pv * dt_h
                if grid >= 0.0:
                    import_wh += grid * dt_h
                else:
                    export_wh -= grid * dt_h
                if bat >= 0.0:
                    charge_wh += bat * dt_h
                    soc += bat * dt_h * half_eff / cap_wh * 100.0 if cap_wh else 0.0
                else:
                    discharge_wh -= bat * dt_h
                    soc += bat * dt_h / half_eff / cap_wh * 100.0 if cap_wh else 0.0
                soc = soc_min if soc < soc_min else (soc_max if soc > soc_max else soc)
                fc_wh += fc * dt_h
                if ev >= 0.0:
                    ev_charge_wh += ev * dt_h
                    ev_soc += ev * dt_h * ev_eff / ev_cap_wh * 100.0 if has_ev else 0.0
                else:
                    ev_discharge_wh -= ev * dt_h
                    ev_soc += ev * dt_h / ev_eff / ev_cap_wh * 100.0
                ev_soc = 0.0 if ev_soc < 0.0 else (100.0 if ev_soc > 100.0 else ev_soc)
                water_l += lpm * dt / 60.0
                gas_l += lph * dt_h
            k += 1
            t = start_epoch + k * dt
            if t >= day_end:
                plan = self._plan_for(t)
                ui = di = 0
                rnd = self._rng.random
                (day_start, day_end, lk, ck, uends, uw, ulpm, ulph, dends, dfac) = self._unpack(plan)
                pv_scale = pv_kw * PERFORMANCE_RATIO * plan.pv_factor
            assert plan is not None
            s = t - day_start

            # 2. Household demand: interpolated background profile with a little jitter, plus appliances.
            x = s / KNOT_S
            j = int(x)
            if j > last_knot:
                j = last_knot
            f = x - j
            if f > 1.0:
                f = 1.0
            while s >= uends[ui]:
                ui += 1
            load = (lk[j] + (lk[j + 1] - lk[j]) * f) * (0.94 + 0.12 * rnd()) + uw[ui]
            lpm = ulpm[ui]
            lph = ulph[ui]

            # 3. Sun through clouds.
            pv = 0.0
            if pv_scale > 0.0:
                poa = clear_sky_poa(plan.solar, t)
                if poa > 0.0:
                    while s >= dends[di]:
                        di += 1
                    pv = poa * pv_scale * (ck[j] + (ck[j + 1] - ck[j]) * f) * dfac[di]

            # 4. Fuel cell follows the load (it may not feed the grid) while it is scheduled to run.
            fc = 0.0
            if fc_max > 0.0:
                for on, off in plan.fc_windows:
                    if on <= s < off:
                        fc = fc_max if load > fc_max else load
                        lph += fc / FUELCELL_ELECTRIC_EFFICIENCY / GAS_WH_PER_L
                        break

            # 5. The car: away, arriving (its trip drained it), feeding the house, or charging.
            ev = 0.0
            if has_ev:
                if plan.away_start_s <= s < plan.away_end_s:
                    ev_connected = False
                else:
                    if not ev_connected:
                        ev_connected = True
                        ev_soc -= plan.trip_kwh * 1000.0 / ev_cap_wh * 100.0
                        if ev_soc < EV_ARRIVAL_FLOOR_PCT:
                            ev_soc = EV_ARRIVAL_FLOOR_PCT
                    v0, v1 = plan.v2h_window
                    if v2h_capable and v0 <= s < v1:
                        deficit = load - pv - fc
                        spare_w = (ev_soc - V2H_FLOOR_PCT) / 100.0 * ev_cap_wh * ev_eff / dt_h
                        if deficit > 0.0 and spare_w > 0.0:
                            ev = -min(ev_max, deficit, spare_w)
                    elif (s < plan.away_start_s or s >= plan.ev_charge_from_s) and ev_soc < 100.0:
                        room_w = (100.0 - ev_soc) / 100.0 * ev_cap_wh / ev_eff / dt_h
                        ev = ev_max if ev_max < room_w else room_w

            # 6. Battery: store surplus, cover the house's deficit (never the car's charging).
            bat = 0.0
            if cap_wh > 0.0:
                surplus = pv + fc - load - ev
                if surplus > 0.0:
                    room_w = (soc_max - soc) / 100.0 * cap_wh / half_eff / dt_h
                    bat = min(surplus, bat_max, room_w)
                    if bat < 0.0:
                        bat = 0.0
                else:
                    need = load - pv - fc + (ev if ev < 0.0 else 0.0)
                    if need > 0.0:
                        avail_w = (soc - soc_min) / 100.0 * cap_wh * half_eff / dt_h
                        bat = -min(need, bat_max, avail_w)
                        if bat > 0.0:
                            bat = 0.0

            # 7. The grid takes the rest.
            grid = load + bat + ev - pv - fc

        self._k = k
        self._pv, self._load, self._bat, self._grid, self._fc, self._ev = pv, load, bat, grid, fc, ev
        self._lpm, self._lph = lpm, lph
        self._soc, self._ev_soc, self._ev_connected = soc, ev_soc, ev_connected
        self._pv_wh, self._import_wh, self._export_wh = pv_wh, import_wh, export_wh
        self._charge_wh, self._discharge_wh, self._fc_wh = charge_wh, discharge_wh, fc_wh
        self._ev_charge_wh, self._ev_discharge_wh = ev_charge_wh, ev_discharge_wh
        self._water_l, self._gas_l = water_l, gas_l
        self._plan = plan
        self._ui, self._di = ui, di
        self._snapshot = None

    @staticmethod
    def _unpack(
        plan: DayPlan,
    ) -> tuple[
        float,
        float,
        tuple[float, ...],
        tuple[float, ...],
        tuple[float, ...],
        tuple[float, ...],
        tuple[float, ...],
        tuple[float, ...],
        tuple[float, ...],
        tuple[float, ...],
    ]:
        return (
            plan.start_epoch,
            plan.end_epoch,
            plan.load_knots,
            plan.cloud_knots,
            plan.usage_ends,
            plan.usage_w,
            plan.usage_lpm,
            plan.usage_lph,
            plan.dip_ends,
            plan.dip_factor,
        )

    def _make_state(self) -> HomeState:
        return HomeState(
            ts=self._start + timedelta(seconds=self._k * self.step_s),
            pv_w=self._pv,
            load_w=self._load,
            battery_w=self._bat,
            battery_soc_pct=self._soc if self.equipment.battery_kwh > 0 else 0.0,
            grid_w=self._grid,
            fuelcell_w=self._fc,
            ev_w=self._ev,
            ev_connected=self._ev_connected,
            ev_soc_pct=self._ev_soc,
            water_lpm=self._lpm,
            gas_lph=self._lph,
            pv_wh_total=self._pv_wh,
            grid_import_wh_total=self._import_wh,
            grid_export_wh_total=self._export_wh,
            battery_charge_wh_total=self._charge_wh,
            battery_discharge_wh_total=self._discharge_wh,
            fuelcell_wh_total=self._fc_wh,
            ev_charge_wh_total=self._ev_charge_wh,
            ev_discharge_wh_total=self._ev_discharge_wh,
            water_l_total=self._water_l,
            gas_l_total=self._gas_l,
        )
