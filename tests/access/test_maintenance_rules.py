"""The maintenance rules on exact frames: each problem appears when its condition holds, not when it
does not, with the right since-when; homes rank worst first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from access.maintenance import (
    CRITICAL,
    WARNING,
    HomeData,
    Rules,
    find_problems,
    pv_yield,
    rank_homes,
    weather_proxy,
)

NOW = datetime(2026, 6, 1, 5, 0, tzinfo=UTC)  # 14:00 in Tokyo
S = timedelta(seconds=10)
RULES = Rules()


def frame(rows: list[tuple[datetime, str, dict[str, object]]], fields: tuple[str, ...]) -> pl.DataFrame:
    data: dict[str, list[object]] = {"time": [], "household": [], "device": []}
    for f in fields:
        data[f] = []
    for t, device, values in rows:
        data["time"].append(t)
        data["household"].append("h")
        data["device"].append(device)
        for f in fields:
            data[f].append(values.get(f))
    schema: dict[str, pl.DataType] = {
        "time": pl.Datetime("us", "UTC"),
        "household": pl.Utf8(),
        "device": pl.Utf8(),
    }
    for f in fields:
        schema[f] = pl.Boolean() if f == "fault" else pl.Utf8() if f in ("state", "health") else pl.Float64()
    return pl.DataFrame(data, schema=schema)


def pv_rows(
    device: str, until: datetime, fault_from: datetime | None = None
) -> list[tuple[datetime, str, dict[str, object]]]:
    rows = []
    t = NOW - timedelta(minutes=30)
    energy = 1000.0
    while t <= until:
        energy += 3000 * 10 / 3600
        faulty = fault_from is not None and t >= fault_from
        rows.append(
            (
                t,
                device,
                {
                    "power_w": 3000.0,
                    "energy_wh_total": energy,
                    "fault": faulty,
                    "state": "fault" if faulty else "mppt",
                },
            )
        )
        t += S
    return rows


PV_FIELDS = ("power_w", "energy_wh_total", "fault", "state")


def test_a_quiet_inverter_beside_a_talking_solar_unit_is_silent_since_its_last_reading() -> None:
    last = NOW - timedelta(minutes=2)
    home = HomeData("h", recent={"pv": frame(pv_rows("inverter", last) + pv_rows("solar", NOW), PV_FIELDS)})
    (p,) = find_problems(home, NOW, RULES, weather=None)
    assert (p.kind, p.device, p.severity, p.since) == ("silent", "inverter", CRITICAL, last)
    # Within three of its 10 s intervals it is not silent.
    home = HomeData("h", recent={"pv": frame(pv_rows("inverter", NOW - timedelta(seconds=20)), PV_FIELDS)})
    assert find_problems(home, NOW, RULES, weather=None) == []


def test_fault_flag_since_the_first_faulty_reading_and_health_explains_silence() -> None:
    began = NOW - timedelta(minutes=5)
    home = HomeData("h", recent={"pv": frame(pv_rows("inverter", NOW, fault_from=began), PV_FIELDS)})
    (p,) = find_problems(home, NOW, RULES, weather=None)
    assert (p.kind, p.since, p.detail["state"]) == ("fault", began, "fault")
    health = frame(
        [
            (
                NOW - timedelta(minutes=1),
                "inverter",
                {"health": "exception:4", "health_since_s": (NOW - timedelta(minutes=3)).timestamp()},
            )
        ],
        ("health", "health_since_s"),
    )
    quiet = HomeData(
        "h", recent={"pv": frame(pv_rows("inverter", NOW - timedelta(minutes=3)), PV_FIELDS)}, health=health
    )
    (p,) = find_problems(quiet, NOW, RULES, weather=None)  # one problem: health, with the last reading
    assert (p.kind, p.detail["reason"], p.since) == ("health", "exception:4", NOW - timedelta(minutes=3))
    assert p.detail["last_reading"] == (NOW - timedelta(minutes=3)).isoformat()
    ok = frame([(NOW, "inverter", {"health": "ok", "health_since_s": 0.0})], ("health", "health_since_s"))
    assert find_problems(HomeData("h", health=ok), NOW, RULES, weather=None) == []


def test_counter_stuck_under_power_but_not_when_it_rises() -> None:
    rows = pv_rows("inverter", NOW)
    stuck_at = NOW - timedelta(minutes=20)
    frozen = [
        (t, d, {**v, "energy_wh_total": min(float(v["energy_wh_total"]), 1000.0 + 3000 * 600 / 3600)})
        for t, d, v in rows
    ]
    home = HomeData("h", recent={"pv": frame(frozen, PV_FIELDS)})
    (p,) = find_problems(home, NOW, RULES, weather=None)
    assert p.kind == "counter_stuck" and p.severity == WARNING
    assert abs((p.since - stuck_at).total_seconds()) <= 10 and p.detail["missing_wh"] >= 500
    assert find_problems(HomeData("h", recent={"pv": frame(rows, PV_FIELDS)}), NOW, RULES, weather=None) == []


def test_battery_idle_for_a_day() -> None:
    hours = [NOW - timedelta(hours=h) for h in range(30, -1, -1)]
    flat = frame([(t, "bat", {"soc_pct": 55.0}) for t in hours], ("soc_pct",))
    (p,) = find_problems(HomeData("h", hourly={"battery": flat}), NOW, RULES, weather=None)
    assert p.kind == "battery_idle" and p.since == hours[0]
    cycling = frame(
        [(t, "bat", {"soc_pct": 30.0 + 40.0 * (i % 2)}) for i, t in enumerate(hours)], ("soc_pct",)
    )
    assert find_problems(HomeData("h", hourly={"battery": cycling}), NOW, RULES, weather=None) == []


def test_weather_proxy_needs_enough_peers_and_homes_rank_worst_first() -> None:
    assert weather_proxy([0.9, None, 0.3, 0.5], 3) == 0.5
    assert weather_proxy([0.9, None], 3) is None
    quiet = HomeData("a", recent={"pv": frame(pv_rows("inverter", NOW - timedelta(minutes=2)), PV_FIELDS)})
    problems = {"a": [], "b": find_problems(quiet, NOW, RULES, weather=None), "c": []}
    assert rank_homes(problems) == ["b", "a", "c"]


def test_yield_expectation_covers_only_the_measured_stretch() -> None:
    """A series that starts this afternoon is judged against the sun since its first sample, not since
    midnight (a home switched on at 13:30 would otherwise read as a failed array)."""
    start = NOW - timedelta(minutes=30)
    hourly = frame(
        [(NOW - timedelta(hours=1), "inverter", {"power_w": 3000.0, "energy_wh_total": 1000.0})],
        ("power_w", "energy_wh_total"),
    )
    recent = frame(pv_rows("inverter", NOW), PV_FIELDS)
    home = HomeData("h", recent={"pv": recent}, hourly={"pv": hourly})
    y = pv_yield(home, NOW)
    assert y.today_wh is not None and y.expected_clear_wh is not None
    # About half an hour of sun was expected, not the whole day since midnight.
    assert y.expected_clear_wh < 0.6 * (y.capacity_w or 0) and recent["time"].min() == start
    assert [p.kind for p in find_problems(home, NOW, RULES, weather=None)] == []


def test_implausible_values_are_a_warning_and_silence_is_critical() -> None:
    """The collector reports ``implausible`` when a device answered but some values were refused: readings
    still arrive, so an installer sees a warning, while a timeout (nothing arrives) stays critical."""
    since = (NOW - timedelta(minutes=3)).timestamp()
    health = frame(
        [
            (NOW, "meter", {"health": "implausible", "health_since_s": since}),
            (NOW, "inverter", {"health": "timeout", "health_since_s": since}),
        ],
        ("health", "health_since_s"),
    )
    problems = find_problems(HomeData("h", health=health), NOW, RULES, weather=None)
    severity = {p.device: p.severity for p in problems if p.kind == "health"}
    assert severity == {"meter": WARNING, "inverter": CRITICAL}
