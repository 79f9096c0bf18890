"""One day of a household's life, drawn at local midnight: weather, load, appliances, car trips.

Drawing the whole day up front from a generator seeded by (seed, household, date) is what makes the
simulation both cheap and independent of how often anyone looks at it: each 10-second step only walks
pointers through precomputed timelines, and a day is the same whichever step first reached it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from common.sun import SolarDay

HOUR = 3600.0
KNOT_S = 1800.0  # load and cloud profiles are given every half hour and interpolated between
KNOTS = 49  # 00:00 .. 24:00 inclusive
GAS_WH_PER_L = 12.5  # city gas (13A), higher heating value: about 45 MJ per cubic metre
WATER_HEATER_EFFICIENCY = 0.90
HOT_WATER_C = 41.0
# Share of hot-water heat still bought as gas when a fuel cell's recovered heat preheats the tank.
FUELCELL_BACKUP_SHARE = 0.45
# Tokyo monthly mean air temperature (deg C), January first: a public climate normal.
MONTHLY_MEAN_C = (5.4, 6.1, 9.4, 14.3, 18.8, 21.9, 25.7, 26.9, 23.3, 18.0, 12.5, 7.7)
# Chance that a day is clear, by month: winter is dry and sunny, June is the rainy season.
CLEAR_DAY_CHANCE = (0.6, 0.55, 0.45, 0.4, 0.4, 0.2, 0.3, 0.4, 0.3, 0.35, 0.45, 0.6)


@dataclass(frozen=True, slots=True)
class Habits:
    """What stays the same in a household from day to day (drawn once from its seed)."""

    residents: int
    base_w: float  # fridge, router, standby
    wake_h: float  # weekday wake-up, local hours
    leave_h: float | None  # weekday departure of the last person leaving; None: someone home all day
    return_h: float  # weekday return of the first person coming back
    sleep_h: float  # may exceed 24 (after midnight)
    activity_w: float  # extra power while people are awake at home
    ac_max_w: float
    cooling_above_c: float
    heating_below_c: float
    bath_chance: float  # chance of filling the bathtub on a given day
    fc_morning: tuple[float, float]  # fuel-cell running window, local hours
    fc_evening: tuple[float, float]
    commute_by_car: bool
    ev_night_charging: bool  # wait for the night tariff instead of charging on arrival
    v2h_chance: float  # chance of running the house from the car in an evening


def draw_habits(rng: random.Random, residents: int) -> Habits:
    at_home_all_day = rng.random() < (0.45 if residents <= 2 else 0.3)
    wake = rng.uniform(5.5, 7.5)
    return Habits(
        residents=residents,
        base_w=rng.uniform(70.0, 130.0) + 20.0 * residents,
        wake_h=wake,
        leave_h=None if at_home_all_day else rng.uniform(max(wake + 0.75, 7.0), 9.0),
        return_h=rng.uniform(17.0, 20.0),
        sleep_h=rng.uniform(22.5, 24.75),
        activity_w=rng.uniform(80.0, 160.0) + 45.0 * residents,
        ac_max_w=rng.uniform(500.0, 1000.0),
        cooling_above_c=rng.uniform(26.0, 28.5),
        heating_below_c=rng.uniform(12.0, 15.0),
        bath_chance=rng.uniform(0.5, 0.95) if residents >= 2 else rng.uniform(0.1, 0.4),
        fc_morning=(rng.uniform(4.5, 5.5), rng.uniform(8.0, 9.5)),
        fc_evening=(rng.uniform(15.5, 17.0), rng.uniform(22.5, 23.5)),
        commute_by_car=rng.random() < 0.6,
        ev_night_charging=rng.random() < 0.5,
        v2h_chance=rng.uniform(0.15, 0.5),
    )


@dataclass(frozen=True, slots=True)
class DayPlan:
    """Everything of one local day that does not depend on the household's stored energy."""

    start_epoch: float  # local midnight as a UNIX time
    end_epoch: float  # next local midnight
    solar: SolarDay
    pv_factor: float  # kW -> W at 1000 W/m2 after performance ratio and heat losses (W per W/m2 per kW)
    load_knots: tuple[float, ...]  # half-hourly household load without appliance events, W
    cloud_knots: tuple[float, ...]  # half-hourly share of clear-sky light getting through
    usage_ends: tuple[float, ...]  # usage segments (local seconds); the last ends at +inf
    usage_w: tuple[float, ...]  # appliance power during each segment
    usage_lpm: tuple[float, ...]  # water flow
    usage_lph: tuple[float, ...]  # gas flow (cooking and water heating, not the fuel cell)
    dip_ends: tuple[float, ...]  # cloud-dip segments, same layout
    dip_factor: tuple[float, ...]
    fc_windows: tuple[tuple[float, float], ...]  # fuel cell on (local seconds)
    away_start_s: float  # car away from home in [away_start_s, away_end_s); equal when it stays
    away_end_s: float
    trip_kwh: float  # energy the car uses while away
    ev_charge_from_s: float  # charging allowed before away_start_s and from this time on
    v2h_window: tuple[float, float]  # car feeds the house in this window (empty when start == end)


def air_temperature_c(day: date, hour: float, offset_c: float) -> float:
    """Air temperature from the monthly normal, a day's anomaly and a daily cycle peaking at 14:00."""
    month_pos = day.month - 1 + (day.day - 15.5) / 30.5
    lo = math.floor(month_pos)
    frac = month_pos - lo
    mean = MONTHLY_MEAN_C[lo % 12] * (1 - frac) + MONTHLY_MEAN_C[(lo + 1) % 12] * frac
    return mean + offset_c + 4.0 * math.cos(2 * math.pi * (hour - 14.0) / 24.0)


def _timeline(
    events: Iterable[tuple[float, float, tuple[float, ...]]], width: int
) -> tuple[tuple[float, ...], list[list[float]]]:
    """Sum overlapping (start, end, values) events into piecewise-constant segments."""
    deltas: dict[float, list[float]] = {}
    for start, end, values in events:
        if end <= start:
            continue
        for point, sign in ((start, 1.0), (end, -1.0)):
            slot = deltas.setdefault(point, [0.0] * width)
            for i, v in enumerate(values):
                slot[i] += sign * v
    ends: list[float] = []
    columns: list[list[float]] = [[] for _ in range(width)]
    running = [0.0] * width
    # Segment i covers [ends[i-1], ends[i]); the zero floor keeps the float residue of add-then-subtract
    # from going a hair below zero.
    for point in sorted(deltas):
        ends.append(point)
        for i in range(width):
            columns[i].append(max(0.0, running[i]))
        for i, d in enumerate(deltas[point]):
            running[i] += d
    ends.append(math.inf)
    for i in range(width):
        columns[i].append(max(0.0, running[i]))
    return tuple(ends), columns


class _Day:
    """Accumulates one day's events while it is being drawn."""

    def __init__(self, cold_water_c: float, fuelcell: bool) -> None:
        self.cold_water_c = cold_water_c
        self.fuelcell = fuelcell
        self.events: list[tuple[float, float, tuple[float, ...]]] = []

    def add(
        self, start_h: float, minutes: float, watts: float = 0.0, lpm: float = 0.0, lph: float = 0.0
    ) -> None:
        start = start_h * HOUR
        self.events.append((start, start + minutes * 60.0, (watts, lpm, lph)))

    def hot_water(self, start_h: float, minutes: float, lpm: float, hot_share: float) -> None:
        """A draw of mixed water: its hot part is heated by gas on the spot (or partly by the fuel cell)."""
        heat_w = lpm * hot_share / 60.0 * 4186.0 * max(0.0, HOT_WATER_C - self.cold_water_c)
        gas = heat_w / WATER_HEATER_EFFICIENCY / GAS_WH_PER_L
        if self.fuelcell:
            gas *= FUELCELL_BACKUP_SHARE
        self.add(start_h, minutes, lpm=lpm, lph=gas)


def draw_day(
    rng: random.Random,
    habits: Habits,
    day: date,
    start_epoch: float,
    end_epoch: float,
    solar: SolarDay,
    *,
    ih_cooking: bool,
    fuelcell: bool,
) -> DayPlan:
    """Draw one local day.  Order of draws is fixed, so the same generator state gives the same day."""
    h = habits
    weekend = day.weekday() >= 5
    temp_offset = rng.gauss(0.0, 2.0)
    noon_c = air_temperature_c(day, 12.0, temp_offset)
    cold_water_c = max(5.0, 0.75 * MONTHLY_MEAN_C[day.month - 1] + 5.5)
    wake = h.wake_h + (rng.uniform(0.5, 2.0) if weekend else rng.uniform(-0.25, 0.25))
    sleep = h.sleep_h + rng.uniform(-0.5, 0.5)
    out_of_home = h.leave_h is not None and not weekend
    leave = (h.leave_h or 0.0) + rng.uniform(-0.2, 0.2)
    back = h.return_h + rng.uniform(-0.5, 1.0)
    if weekend and rng.random() < 0.4:  # a weekend outing
        out_of_home, leave, back = True, rng.uniform(9.5, 12.0), rng.uniform(15.0, 19.0)

    def home(hour: float) -> bool:
        return not (out_of_home and leave <= hour < back)

    def awake(hour: float) -> bool:
        return wake <= hour < sleep or hour + 24.0 < sleep

    # Half-hourly background load: standby + people's activity + air conditioning.
    load: list[float] = []
    for i in range(KNOTS):
        hour = i * KNOT_S / HOUR
        watts = h.base_w
        temp = air_temperature_c(day, hour, temp_offset)
        if home(hour) and awake(hour):
            evening = 1.3 if 18.5 <= hour < 22.0 else 1.0
            daytime = 0.5 if 9.5 <= hour < 16.5 else 1.0
            watts += h.activity_w * evening * daytime
        if home(hour):
            asleep = not awake(hour)
            if temp > h.cooling_above_c - (2.0 if asleep else 0.0):
                watts += min(h.ac_max_w, 100.0 + 70.0 * (temp - h.cooling_above_c + 1.0))
            elif temp < h.heating_below_c and not asleep:
                watts += min(h.ac_max_w, 100.0 + 35.0 * (h.heating_below_c - temp))
        load.append(watts)

    # Clouds: a day type, a mean-reverting walk of half-hourly transmission, and short dips.
    r = rng.random()
    clear_chance = CLEAR_DAY_CHANCE[day.month - 1]
    if r < clear_chance:
        mean, spread, lo, dips = 0.97, 0.02, 0.85, rng.randint(0, 3)
    elif r < clear_chance + (1 - clear_chance) * 0.55:
        mean, spread, lo, dips = rng.uniform(0.5, 0.8), 0.12, 0.2, rng.randint(6, 25)
    else:
        mean, spread, lo, dips = rng.uniform(0.12, 0.35), 0.05, 0.05, 0
    cloud: list[float] = []
    level = mean
    for _ in range(KNOTS):
        level = mean + 0.7 * (level - mean) + rng.gauss(0.0, spread)
        cloud.append(min(1.0, max(lo, level)))
    dip_events: list[tuple[float, float, tuple[float, ...]]] = []
    cursor = 5.0 * HOUR
    for _ in range(dips):
        cursor += rng.uniform(0.1, 1.2) * HOUR
        length = rng.uniform(60.0, 900.0)
        dip_events.append((cursor, cursor + length, (1.0 - rng.uniform(0.3, 0.75),)))
        cursor += length
    dip_ends, dip_cols = _timeline(dip_events, 1)
    # Segments without a dip transmit everything; _timeline reports 0 there.
    dip_factor = tuple(1.0 - v for v in dip_cols[0])

    # Appliance events, water and gas.
    plan = _Day(cold_water_c, fuelcell)
    n = h.residents
    # Morning: hair dryer, kettle/microwave, toilets, washing up.
    plan.add(wake + rng.uniform(0.1, 0.6), rng.uniform(3, 8), watts=1200.0)
    plan.add(wake + rng.uniform(0.2, 0.7), rng.uniform(2, 4), watts=1000.0)
    plan.hot_water(wake + rng.uniform(0.5, 1.0), rng.uniform(2, 5), lpm=5.0, hot_share=0.3)
    for _ in range(n * 5):
        t = rng.uniform(wake, sleep)
        if home(t):
            plan.add(t, 1.0, lpm=6.0)
    # Cooking: breakfast, lunch if home, dinner; on IH (electric) or a gas hob.
    dinner = (back if out_of_home else rng.uniform(17.5, 18.5)) + rng.uniform(0.2, 0.8)
    meals = [(wake + 0.2, rng.uniform(8, 15), 1200.0)]
    if home(12.0):
        meals.append((rng.uniform(11.5, 12.5), rng.uniform(8, 20), 1400.0))
    meals.append((dinner, rng.uniform(20, 45), rng.uniform(1600.0, 2600.0)))
    for start, minutes, watts in meals:
        if ih_cooking:
            plan.add(start, minutes, watts=watts)
        else:
            plan.add(start, minutes, lph=watts * 1.6 / GAS_WH_PER_L)  # gas hobs waste more heat than IH
        plan.hot_water(start + minutes / 60.0, rng.uniform(3, 8), lpm=5.0, hot_share=0.4)
    # Rice cooker before dinner (and some mornings), washing machine, dryer.
    plan.add(dinner - 0.6, 45.0, watts=rng.uniform(450.0, 700.0))
    if rng.random() < 0.4:
        plan.add(wake - 0.3 if wake > 5.5 else wake, 40.0, watts=rng.uniform(450.0, 650.0))
    if rng.random() < min(0.95, 0.3 + 0.15 * n):
        wash = wake + rng.uniform(0.3, 1.0) if (out_of_home or rng.random() < 0.5) else rng.uniform(9.0, 15.0)
        plan.add(wash, 50.0, watts=rng.uniform(250.0, 450.0))
        plan.add(wash, 5.0, lpm=rng.uniform(6.0, 9.0))
        plan.add(wash + 0.4, 5.0, lpm=rng.uniform(5.0, 8.0))
        if rng.random() < 0.25:
            plan.add(wash + 0.9, rng.uniform(60.0, 120.0), watts=rng.uniform(800.0, 1300.0))
    # Evening: a bath for the household, or showers only; one may shower in the morning.
    evening = max(back if out_of_home else 18.0, 19.0) + rng.uniform(0.3, 2.0)
    bath_chance = h.bath_chance * (1.2 if noon_c < 18.0 else 0.8)
    if rng.random() < bath_chance:
        plan.hot_water(evening, 180.0 / 12.0, lpm=12.0, hot_share=1.0)
        plan.add(evening + 1.0, 20.0, lph=rng.uniform(60.0, 120.0))  # keeping the bath warm
        showers = rng.randint(0, max(0, n - 2))
    else:
        showers = n
    for i in range(showers):
        start = wake + 0.3 if rng.random() < 0.25 else evening + 0.4 * i
        plan.hot_water(start, rng.uniform(5.0, 10.0), lpm=rng.uniform(8.0, 11.0), hot_share=0.65)
    usage_ends, cols = _timeline(plan.events, 3)

    # Fuel cell runs ahead of the hot-water demand it learnt, morning and evening.
    fc_windows = (
        (h.fc_morning[0] * HOUR, h.fc_morning[1] * HOUR),
        (h.fc_evening[0] * HOUR, h.fc_evening[1] * HOUR),
    )

    # Car: out on weekday commutes (or a weekend outing), back in the evening.
    drives = (h.commute_by_car and not weekend) or (weekend and out_of_home) or rng.random() < 0.2
    if drives:
        away_start = (leave if out_of_home else rng.uniform(9.5, 11.0)) * HOUR
        away_end = max(away_start + HOUR, (back if out_of_home else rng.uniform(13.0, 16.0)) * HOUR)
        trip_kwh = rng.uniform(2.0, 9.0) if not weekend else rng.uniform(4.0, 18.0)
    else:
        away_start = away_end = 8.0 * HOUR
        trip_kwh = 0.0
    charge_from = 23.0 * HOUR if h.ev_night_charging else away_end
    v2h = (away_end, 22.0 * HOUR) if rng.random() < h.v2h_chance and away_end < 22.0 * HOUR else (0.0, 0.0)
    if v2h[1] > v2h[0]:
        v2h = (max(v2h[0], 17.0 * HOUR), v2h[1])
        charge_from = max(charge_from, v2h[1])

    # Hot panels lose about 0.4 %/K above 25 deg C; clamped at 1 so output never beats the clear-sky figure.
    cell_c = noon_c + 20.0
    pv_factor = min(1.0, 1.0 - 0.004 * (cell_c - 25.0))
    return DayPlan(
        start_epoch=start_epoch,
        end_epoch=end_epoch,
        solar=solar,
        pv_factor=pv_factor,
        load_knots=tuple(load),
        cloud_knots=tuple(cloud),
        usage_ends=usage_ends,
        usage_w=tuple(cols[0]),
        usage_lpm=tuple(cols[1]),
        usage_lph=tuple(cols[2]),
        dip_ends=dip_ends,
        dip_factor=dip_factor,
        fc_windows=fc_windows,
        away_start_s=away_start,
        away_end_s=away_end,
        trip_kwh=trip_kwh,
        ev_charge_from_s=charge_from,
        v2h_window=v2h,
    )
