"""Household physics: sun, balance, stores, counters, determinism and plausible daily totals."""

from __future__ import annotations

import itertools
import random
import time
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.physics import (
    Equipment,
    Household,
    SimClock,
    SimulationError,
    Site,
    clear_sky_pv_w,
    draw_equipment,
    sunrise_sunset,
)
from devices.state import COUNTER_NAMES, HomeState

TOKYO = ZoneInfo("Asia/Tokyo")
SITE = Site()


def midnight_jst(year: int, month: int, day: int) -> datetime:
    return datetime(year, month, day, tzinfo=TOKYO).astimezone(UTC)


def run(home: Household, start: datetime, hours: float, step_s: float) -> list[HomeState]:
    """Every step's state, asked for one step at a time."""
    n = int(hours * 3600 / step_s)
    return [home.state(start + timedelta(seconds=i * step_s)) for i in range(n + 1)]


def load_wh(a: HomeState, b: HomeState) -> float:
    """Household consumption between two states, from the counters alone (the balance over time)."""
    supply = (b.pv_wh_total - a.pv_wh_total) + (b.fuelcell_wh_total - a.fuelcell_wh_total)
    grid = (b.grid_import_wh_total - a.grid_import_wh_total) - (
        b.grid_export_wh_total - a.grid_export_wh_total
    )
    battery = (b.battery_charge_wh_total - a.battery_charge_wh_total) - (
        b.battery_discharge_wh_total - a.battery_discharge_wh_total
    )
    ev = (b.ev_charge_wh_total - a.ev_charge_wh_total) - (b.ev_discharge_wh_total - a.ev_discharge_wh_total)
    return supply + grid - battery - ev


def check_invariants(states: list[HomeState], eq: Equipment) -> None:
    previous: HomeState | None = None
    for s in states:
        assert abs(s.pv_w + s.fuelcell_w + s.grid_w - (s.load_w + s.battery_w + s.ev_w)) < 1e-6
        assert s.pv_w >= 0 and s.load_w >= 0 and s.fuelcell_w >= 0
        assert s.water_lpm >= 0 and s.gas_lph >= 0
        if eq.battery_kwh > 0:
            assert eq.soc_min_pct - 1e-9 <= s.battery_soc_pct <= eq.soc_max_pct + 1e-9
        assert abs(s.battery_w) <= eq.battery_max_w + 1e-9
        assert 0.0 <= s.ev_soc_pct <= 100.0
        assert s.fuelcell_w <= eq.fuelcell_w + 1e-9
        if not s.ev_connected:
            assert s.ev_w == 0.0
        if s.battery_w > 1e-9:  # charging only from surplus: never buys from the grid to fill the battery
            assert s.grid_w <= 1e-6
        if s.battery_w < -1e-9:  # discharging only to cover the house: never exports battery energy
            assert s.grid_w >= -1e-6
        assert s.pv_w <= clear_sky_pv_w(SITE, eq.pv_kw, s.ts, tilt_deg=eq.pv_tilt_deg) + 1e-9
        assert not s.inverter_fault and not s.battery_fault
        if previous is not None:
            for name in COUNTER_NAMES:
                assert getattr(s, name) >= getattr(previous, name), name
        previous = s


# -- the sun ------------------------------------------------------------------------------------

# Almanac times for Tokyo (National Astronomical Observatory of Japan tables, local time, to the minute).
ALMANAC = [
    (date(2024, 3, 20), (5, 45), (17, 53)),
    (date(2024, 6, 21), (4, 25), (19, 0)),
    (date(2024, 9, 22), (5, 29), (17, 38)),
    (date(2024, 12, 21), (6, 47), (16, 32)),
]


@pytest.mark.parametrize(("day", "rise", "set_"), ALMANAC)
def test_sunrise_and_sunset_in_tokyo_match_the_almanac(
    day: date, rise: tuple[int, int], set_: tuple[int, int]
) -> None:
    result = sunrise_sunset(SITE, day)
    assert result is not None
    for computed, (hour, minute) in zip(result, (rise, set_), strict=True):
        known = datetime(day.year, day.month, day.day, hour, minute, tzinfo=TOKYO)
        assert abs((computed - known).total_seconds()) < 15 * 60


def test_clear_sky_pv_is_zero_at_night_and_peaks_near_noon() -> None:
    noon = datetime(2024, 6, 21, 11, 40, tzinfo=TOKYO)
    assert clear_sky_pv_w(SITE, 5.0, datetime(2024, 6, 21, 0, 0, tzinfo=TOKYO)) == 0.0
    assert clear_sky_pv_w(SITE, 5.0, datetime(2024, 6, 21, 3, 30, tzinfo=TOKYO)) == 0.0
    peak = clear_sky_pv_w(SITE, 5.0, noon)
    assert 3000 < peak < 5000
    assert clear_sky_pv_w(SITE, 5.0, noon - timedelta(hours=3)) < peak
    assert clear_sky_pv_w(SITE, 0.0, noon) == 0.0


@pytest.mark.parametrize("day", [date(2024, 6, 21), date(2024, 8, 1)])
def test_clear_summer_day_yield_of_5_kw_is_plausible(day: date) -> None:
    start = datetime(day.year, day.month, day.day, tzinfo=TOKYO)
    kwh = sum(clear_sky_pv_w(SITE, 5.0, start + timedelta(minutes=m)) for m in range(1440)) / 60 / 1000
    assert 10 <= kwh <= 32


def test_household_pv_is_zero_at_night_positive_at_noon_and_starts_near_sunrise() -> None:
    start = midnight_jst(2024, 7, 1)
    home = Household("hh-sun", 7, SimClock(start), equipment=Equipment(pv_kw=5.0), step_s=60)
    states = run(home, start, 24 * 7, 60)
    for s in states:
        local = s.ts.astimezone(TOKYO)
        if local.hour in (0, 1, 2, 3, 20, 21, 22, 23):
            assert s.pv_w == 0.0
        if local.hour == 12 and local.minute == 0:
            assert s.pv_w > 0.0
    first_light = next(s.ts for s in states if s.pv_w > 0)
    rise = sunrise_sunset(SITE, date(2024, 7, 1))
    assert rise is not None
    assert abs((first_light - rise[0]).total_seconds()) < 15 * 60


# -- invariants over a week ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def may_week() -> tuple[Household, list[HomeState]]:
    start = midnight_jst(2024, 5, 6)
    home = Household("hh-week", 42, SimClock(start), equipment=Equipment(), step_s=10)
    return home, run(home, start, 24 * 7, 10)


def test_invariants_hold_at_every_step_of_a_week(may_week: tuple[Household, list[HomeState]]) -> None:
    home, states = may_week
    check_invariants(states, home.equipment)


def test_counters_integrate_powers(may_week: tuple[Household, list[HomeState]]) -> None:
    _home, states = may_week
    pv_wh = sum(s.pv_w for s in states[:-1]) * 10 / 3600
    assert states[-1].pv_wh_total - states[0].pv_wh_total == pytest.approx(pv_wh, rel=1e-9)
    load = sum(s.load_w for s in states[:-1]) * 10 / 3600
    assert load_wh(states[0], states[-1]) == pytest.approx(load, rel=1e-9)
    water = sum(s.water_lpm for s in states[:-1]) * 10 / 60
    assert states[-1].water_l_total - states[0].water_l_total == pytest.approx(water, rel=1e-9)


def test_battery_charges_from_noon_surplus_and_discharges_in_the_evening(
    may_week: tuple[Household, list[HomeState]],
) -> None:
    _home, states = may_week
    noon_charging = [
        s for s in states if 10 <= s.ts.astimezone(TOKYO).hour < 14 and s.pv_w > s.load_w and s.battery_w > 0
    ]
    evening_discharging = [s for s in states if 18 <= s.ts.astimezone(TOKYO).hour < 23 and s.battery_w < 0]
    assert len(noon_charging) > 100
    assert len(evening_discharging) > 100
    socs = [s.battery_soc_pct for s in states]
    assert max(socs) - min(socs) > 20  # the battery really cycles


def test_ev_sessions_charge_at_home_leave_in_the_morning_and_feed_the_house_sometimes() -> None:
    start = midnight_jst(2024, 10, 7)
    v2h_seen = charge_seen = 0
    for seed in range(3):
        home = Household(f"hh-ev{seed}", seed, SimClock(start), equipment=Equipment(), step_s=60)
        states = run(home, start, 24 * 14, 60)
        check_invariants(states, home.equipment)
        assert any(not s.ev_connected for s in states)  # the car leaves
        assert any(s.ev_connected for s in states)
        for s in states:
            if s.ev_w < 0:
                v2h_seen += 1
                assert 17 <= s.ts.astimezone(TOKYO).hour < 22
                assert s.ev_soc_pct >= 30.0 - 1e-6
            elif s.ev_w > 0:
                charge_seen += 1
        departures = [
            b.ts.astimezone(TOKYO).hour
            for a, b in itertools.pairwise(states)
            if a.ev_connected and not b.ev_connected
        ]
        assert all(6 <= h < 13 for h in departures), departures
    assert v2h_seen > 0 and charge_seen > 0


def test_fuel_cell_runs_on_gas_and_never_exceeds_load(may_week: tuple[Household, list[HomeState]]) -> None:
    home, states = may_week
    running = [s for s in states if s.fuelcell_w > 0]
    assert running
    for s in running:
        assert s.fuelcell_w <= s.load_w + 1e-9
        assert s.gas_lph > 0
    assert any(s.fuelcell_w == home.equipment.fuelcell_w for s in running)


# -- determinism ---------------------------------------------------------------------------------


def test_same_seed_gives_identical_states_whatever_the_call_pattern() -> None:
    start = midnight_jst(2024, 2, 1) + timedelta(hours=5, seconds=3)
    a = Household("hh-det", 123, SimClock(start))
    b = Household("hh-det", 123, SimClock(start))
    c = Household("hh-det", 123, SimClock(start))
    times = [start + timedelta(seconds=s) for s in range(0, 2 * 86400, 997)]
    at_a = [a.state(t) for t in times]  # regular polling
    rng = random.Random(5)
    for t in times:  # irregular: b sometimes asked several times, sometimes not at all
        for _ in range(rng.randint(0, 3)):
            b.state(t)
    at_c = {}
    for t in times[::7]:  # c only sees every seventh instant
        at_c[t] = c.state(t)
    assert at_a[-1] == b.state(times[-1]) == c.state(times[-1])
    for t, state in zip(times, at_a, strict=True):
        if t in at_c:
            assert at_c[t] == state
    fresh = Household("hh-det", 123, SimClock(start))
    assert fresh.state(times[100]) == at_a[100]  # jumping straight to an instant gives the same state


def test_time_never_runs_backwards() -> None:
    start = midnight_jst(2024, 4, 1)
    home = Household("hh-back", 1, SimClock(start))
    late = home.state(start + timedelta(hours=5))
    assert home.state(start + timedelta(hours=1)) == late
    assert home.state(start - timedelta(days=3)) == late
    assert late.ts == start + timedelta(hours=5)
    between = home.state(start + timedelta(hours=6, seconds=7))
    assert between.ts == start + timedelta(hours=6)  # the last full step, not the asked instant


def test_different_seeds_give_different_households() -> None:
    start = midnight_jst(2024, 4, 1)
    t = [start + timedelta(minutes=m) for m in range(0, 1440, 30)]
    one = Household("hh-a", 1, SimClock(start), equipment=Equipment())
    two = Household("hh-a", 2, SimClock(start), equipment=Equipment())
    assert [one.state(x).load_w for x in t] != [two.state(x).load_w for x in t]
    assert draw_equipment(1, "hh-a") == draw_equipment(1, "hh-a")
    assert len({draw_equipment(s, "hh-a") for s in range(10)}) > 5
    drawn = Household("hh-a", 9, SimClock(start))
    assert drawn.equipment == draw_equipment(9, "hh-a")
    eq = drawn.equipment
    assert eq.has_ev and eq.has_fuelcell and eq.has_pv and eq.has_battery
    assert not Equipment(pv_kw=0, battery_kwh=0).has_pv


# -- plausible daily totals ----------------------------------------------------------------------


@pytest.mark.parametrize("month", [1, 5, 8])
def test_daily_totals_are_plausible_for_a_japanese_home(month: int) -> None:
    start = midnight_jst(2024, month, 3)
    for seed in range(3):
        home = Household(f"hh-day{seed}", seed, SimClock(start), equipment=Equipment(), step_s=60)
        days = [home.state(start + timedelta(days=d)) for d in range(8)]
        for a, b in itertools.pairwise(days):
            assert 5_000 <= load_wh(a, b) <= 20_000
            assert 100 <= b.water_l_total - a.water_l_total <= 600
            assert 300 <= b.gas_l_total - a.gas_l_total <= 3000
            assert b.pv_wh_total - a.pv_wh_total <= 32_000


def test_a_clear_summer_day_yields_like_its_clear_sky_figure() -> None:
    start = midnight_jst(2024, 8, 1)
    home = Household("hh-clear", 3, SimClock(start), equipment=Equipment(pv_kw=5.0), step_s=60)
    days = [home.state(start + timedelta(days=d)) for d in range(15)]
    yields = [b.pv_wh_total - a.pv_wh_total for a, b in itertools.pairwise(days)]
    clear = max(yields)
    assert 10_000 <= clear <= 30_000
    assert min(yields) < 0.7 * clear  # clouds do happen


# -- bad input -----------------------------------------------------------------------------------


def test_bad_input_is_refused_clearly() -> None:
    start = midnight_jst(2024, 1, 1)
    with pytest.raises(SimulationError, match="timezone-aware"):
        SimClock(datetime(2024, 1, 1))
    with pytest.raises(SimulationError, match="speed"):
        SimClock(start, speed=0)
    with pytest.raises(SimulationError, match="soc_min_pct"):
        Equipment(soc_min_pct=90, soc_max_pct=80)
    with pytest.raises(SimulationError, match="step_s"):
        Household("hh-x", 1, SimClock(start), step_s=0)
    with pytest.raises(SimulationError, match="timezone"):
        Site(timezone="Mars/Olympus")
    home = Household("hh-x", 1, SimClock(start))
    with pytest.raises(SimulationError, match="timezone-aware"):
        home.state(datetime(2024, 1, 1, 12))
    assert home.state(start + timedelta(minutes=1)).ts == start + timedelta(minutes=1)


def test_sim_clock_runs_at_its_speed_from_its_start() -> None:
    start = midnight_jst(2024, 1, 1)
    clock = SimClock(start, speed=600.0)
    before = time.monotonic()
    first = clock.now()
    time.sleep(0.05)
    second = clock.now()
    elapsed = time.monotonic() - before
    assert start <= first < second
    assert 30.0 <= (second - start).total_seconds() <= elapsed * 600.0 + 1e-6
    home = Household("hh-now", 1, clock)
    assert home.state().ts <= clock.now()


def test_households_without_optional_equipment() -> None:
    start = midnight_jst(2024, 6, 10)
    bare = Equipment(
        pv_kw=0.0, battery_kwh=0.0, has_fuelcell=False, has_ev=False, v2h=False, ih_cooking=False
    )
    home = Household("hh-bare", 5, SimClock(start), equipment=bare, step_s=60)
    states = run(home, start, 48, 60)
    check_invariants(states, bare)
    for s in states:
        assert s.pv_w == s.battery_w == s.fuelcell_w == s.ev_w == 0.0
        assert not s.ev_connected
        assert s.grid_w == pytest.approx(s.load_w)
    assert states[-1].gas_l_total > states[0].gas_l_total  # gas hob and water heating


# -- property test -------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32),
    start=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)
    ),
    step_s=st.sampled_from([10.0, 60.0, 300.0]),
)
def test_invariants_hold_for_any_seed_and_start(seed: int, start: datetime, step_s: float) -> None:
    home = Household(f"hh-{seed % 977}", seed, SimClock(start), step_s=step_s)
    states = run(home, start, min(48.0, 400 * step_s / 3600), step_s)
    check_invariants(states, home.equipment)
    again = Household(f"hh-{seed % 977}", seed, SimClock(start), step_s=step_s)
    assert again.state(states[-1].ts) == states[-1]
