"""Energy per window from the meters' totals, the home's use as their remainder, who fed whom."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from pipeline.energy import SINKS, SOURCES, assign_flows, flow_column, summarise, window_energy

T0 = datetime(2026, 6, 1, tzinfo=UTC)
H = timedelta(hours=1)


def totals(field: str, rows: list[tuple[int, str, float]]) -> pl.DataFrame:
    """(hour index, device, total) rows in the SeriesQuery result shape."""
    return pl.DataFrame(
        {
            "time": [T0 + h * H for h, _, _ in rows],
            "household": ["h1"] * len(rows),
            "device": [d for _, d, _ in rows],
            field: [v for _, _, v in rows],
        },
        schema={"time": pl.Datetime("us", "UTC"), "household": pl.Utf8, "device": pl.Utf8, field: pl.Float64},
    )


def grid(rows: list[tuple[int, float, float]]) -> pl.DataFrame:
    df = totals("import_wh_total", [(h, "meter", i) for h, i, _ in rows])
    return df.with_columns(pl.Series("export_wh_total", [e for _, _, e in rows]))


def test_rises_of_one_device_per_quantity_and_home_as_the_remainder() -> None:
    # PV read by the inverter and by the ECHONET solar unit (which missed hour 2): never added up.
    pv = pl.concat(
        [
            totals(
                "energy_wh_total", [(0, "inverter", 1000.0), (1, "inverter", 1500.0), (2, "inverter", 2300.0)]
            ),
            totals("energy_wh_total", [(0, "solar", 7000.0), (1, "solar", 7490.0)]),
        ]
    )
    w = window_energy({"pv": pv, "electricity": grid([(0, 10.0, 0.0), (1, 110.0, 200.0), (2, 110.0, 500.0)])})
    assert w["time"].to_list() == [T0 + H, T0 + 2 * H]
    assert w["pv"].to_list() == [500.0, 800.0]  # the inverter's rises: it has the most samples
    assert w["grid_import"].to_list() == [100.0, 0.0]
    assert w["home"].to_list() == [400.0, 500.0]  # 500 + 100 - 200, 800 - 300
    assert w["battery_charge"].to_list() == [0.0, 0.0]  # absent categories count 0
    assert w["unmetered"].to_list() == [0.0, 0.0]


def test_a_negative_remainder_is_reported_as_unmetered_not_hidden() -> None:
    pv = totals("energy_wh_total", [(0, "inv", 0.0), (1, "inv", 100.0)])
    w = window_energy({"pv": pv, "electricity": grid([(0, 0.0, 0.0), (1, 0.0, 130.0)])})
    assert w["home"].to_list() == [0.0] and w["unmetered"].to_list() == [30.0]
    s = summarise(assign_flows(w))
    assert s.sinks_wh - s.sources_wh == pytest.approx(30.0)


def test_export_comes_from_pv_and_storage_feeds_the_home() -> None:
    """An hour with sun at noon and import at one o'clock: the meters net nothing, the rule assigns the
    export to PV (never to grid import) and the battery's discharge to the home."""
    w = pl.DataFrame(
        {
            "time": [T0],
            "pv": [1000.0],
            "fuel_cell": [300.0],
            "grid_import": [400.0],
            "grid_export": [600.0],
            "battery_charge": [500.0],
            "battery_discharge": [200.0],
            "ev_charge": [0.0],
            "ev_discharge": [0.0],
            "water": [0.0],
            "gas": [0.0],
            "home": [800.0],
            "unmetered": [0.0],
        }
    )
    f = assign_flows(w).row(0, named=True)
    assert f[flow_column("pv", "grid_export")] == 600.0
    assert f[flow_column("grid_import", "grid_export")] == 0.0
    assert f[flow_column("battery_discharge", "home")] == 200.0
    assert f[flow_column("battery_discharge", "battery_charge")] == 0.0
    assert f[flow_column("fuel_cell", "home")] == 300.0
    assert f[flow_column("pv", "home")] == 300.0
    assert f[flow_column("pv", "battery_charge")] == 100.0
    assert f[flow_column("grid_import", "battery_charge")] == 400.0
    for source in SOURCES:  # every source's energy goes somewhere, every sink's comes from somewhere
        assert sum(f[flow_column(source, k)] for k in SINKS) == pytest.approx(w[source][0])
    for sink in SINKS:
        assert sum(f[flow_column(s, sink)] for s in SOURCES) == pytest.approx(w[sink][0])
    s = summarise(assign_flows(w))
    assert s.self_consumption == pytest.approx(0.4)  # (1000 - 600) / 1000
    assert s.self_sufficiency == pytest.approx(0.5)  # (800 - 400) / 800
    assert s.sources_wh == s.sinks_wh == pytest.approx(1900.0)


def test_no_windows_no_figures() -> None:
    s = summarise(assign_flows(window_energy({})))
    assert s.windows == 0 and s.flows == () and s.self_consumption is None and s.self_sufficiency is None
