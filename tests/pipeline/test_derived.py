"""Derived series against values worked out by hand."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import polars as pl
import pytest

from pipeline.derived import (
    daily_energy,
    daily_energy_per_household,
    grid_flows,
    one_source,
    self_consumption,
)

T0 = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
H = timedelta(hours=1)


def frame(rows: Sequence[tuple[datetime, str, str, float | None]], field: str = "power_w") -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema={"time": pl.Datetime("us", "UTC"), "household": pl.Utf8, "device": pl.Utf8, field: pl.Float64},
        orient="row",
    )


def test_grid_flows_split_net_power() -> None:
    df = grid_flows(frame([(T0, "h", "m", 1500.0), (T0 + H, "h", "m", -800.0), (T0 + 2 * H, "h", "m", None)]))
    assert df["grid_import_w"].to_list() == [1500.0, 0.0, None]
    assert df["grid_export_w"].to_list() == [0.0, 800.0, None]


def test_self_consumption_and_sufficiency() -> None:
    # PV is read by two devices of one home (SunSpec inverter and ECHONET solar unit): one quantity.
    # step 1: PV 3000 W, meter -1000 W (export 1000): load = 2000,
    #         self-consumption = (3000-1000)/3000 = 2/3, self-sufficiency = (2000-0)/2000 = 1
    # step 2: PV 1000 W, meter +500 W: load 1500, SC = 1, SS = 1000/1500 = 2/3
    # step 3: PV 0 (night), meter +400 W: load 400, SC undefined (null), SS 0
    pv = frame(
        [
            (T0, "h", "inverter", 3000.0),
            (T0, "h", "solar", 3000.0),
            (T0 + H, "h", "inverter", 1000.0),
            (T0 + H, "h", "solar", 1000.0),
            (T0 + 2 * H, "h", "inverter", 0.0),
        ]
    )
    meter = frame([(T0, "h", "m", -1000.0), (T0 + H, "h", "m", 500.0), (T0 + 2 * H, "h", "m", 400.0)])
    out = self_consumption(pv, meter)
    assert out["pv_w"].to_list() == [3000.0, 1000.0, 0.0]  # not 6000 and 2000: counted once
    assert out["load_w"].to_list() == [2000.0, 1500.0, 400.0]
    assert out["self_consumption"].to_list() == pytest.approx([2 / 3, 1.0, None])
    assert out["self_sufficiency"].to_list() == pytest.approx([1.0, 2 / 3, 0.0])


def test_one_source_per_quantity_ranks_devices_and_fills_gaps() -> None:
    # "b" gave more samples, so it is the source; "a" only fills the step "b" left empty.
    df = frame(
        [
            (T0, "h", "a", 10.0),
            (T0, "h", "b", 11.0),
            (T0 + H, "h", "b", 21.0),
            (T0 + 2 * H, "h", "a", 30.0),
            (T0 + 3 * H, "h", "b", 41.0),
            (T0, "g", "z", 5.0),
        ]
    )
    out = one_source(df, "power_w").sort(["household", "time"])
    assert out.rows() == [
        (T0, "g", "z", 5.0),
        (T0, "h", "b", 11.0),
        (T0 + H, "h", "b", 21.0),
        (T0 + 2 * H, "h", "a", 30.0),
        (T0 + 3 * H, "h", "b", 41.0),
    ]


def test_battery_charging_is_not_load() -> None:
    # PV 3000, battery charging 1000, meter -500: load = 3000 + 0 - 500 - 1000 = 1500
    # SC = (3000-500)/3000 = 5/6; SS = 1 (no import)
    pv = frame([(T0, "h", "inv", 3000.0)])
    meter = frame([(T0, "h", "m", -500.0)])
    bat = frame([(T0, "h", "bat", 1000.0)])
    out = self_consumption(pv, meter, bat)
    assert out.row(0, named=True)["load_w"] == 1500.0
    assert out["self_consumption"].to_list() == pytest.approx([5 / 6])
    assert out["self_sufficiency"].to_list() == [1.0]


def test_daily_energy_over_tokyo_days_with_gap() -> None:
    f = "import_wh_total"
    # Tokyo is UTC+9: 14:00 UTC = 23:00 JST (June 1), 16:00 UTC = 01:00 JST (June 2)
    d1 = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)  # 09:00 JST June 1
    rows = [
        (d1, "h", "m", 1000.0),
        (d1 + 5 * H, "h", "m", 1600.0),  # +600 on June 1
        (d1 + 14 * H, "h", "m", 2000.0),  # +400 on June 1 (23:00 JST)
        (d1 + 16 * H, "h", "m", 2100.0),  # +100 on June 2 (01:00 JST)
        # June 3 JST: no sample at all -> no row (a gap is not zero)
        (d1 + 64 * H, "h", "m", 2600.0),  # June 4 01:00 JST: +500 since the last sample
        (d1 + 16 * H, "h", "m2", None),
    ]
    out = daily_energy(frame(rows, f), f)
    assert out.rows() == [
        (date(2026, 6, 1), "h", "m", 1000.0),
        (date(2026, 6, 2), "h", "m", 100.0),
        (date(2026, 6, 4), "h", "m", 500.0),
    ]


def test_daily_energy_per_household_takes_one_device() -> None:
    # Two devices count the same yield (their own counters): the day's figure is one device's rise,
    # never the sum; ties of sample counts go to the smaller id.
    f = "energy_wh_total"
    rows = [(T0, "h", "a", 10.0), (T0 + H, "h", "a", 30.0), (T0, "h", "b", 5.0), (T0 + H, "h", "b", 25.0)]
    out = daily_energy_per_household(frame(rows, f), f)
    assert out.rows() == [(date(2026, 6, 1), "h", 20.0)]
