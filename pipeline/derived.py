"""Series computed from stored ones: grid flows, PV self-consumption/self-sufficiency, daily energy.

Every function takes and returns polars DataFrames in the ``SeriesQuery`` result shape (``time``,
``household``, ``device``, fields), so the API can derive from whichever store answered.  Nothing
here fills gaps: a window or day without data has no row, because a missing night-time value is
unknown, not zero.

**One source of truth per quantity.**  A home's devices of one category are views of one quantity:
the PV output is read by the SunSpec inverter and by the ECHONET solar unit, the grid connection by
the SunSpec meter and by the smart meter, the battery by the storage controller and the ECHONET
battery.  Adding them counts the quantity twice.  So every household figure takes each field from
one device (``one_source``): devices are ranked by how many samples of that field they gave in the
frame (a device that reports steadily wins; ties go to the smaller device id), and at each time the
highest-ranked device that has a value gives it; a lower-ranked device only fills a time the others
left empty.  A home with two separate arrays needs a device (or a collector entry) that reports
their sum.
"""

from __future__ import annotations

from typing import Final

import polars as pl

TOKYO: Final = "Asia/Tokyo"
_KEYS: Final = ["household", "time"]


def grid_flows(electricity: pl.DataFrame, power_field: str = "power_w") -> pl.DataFrame:
    """Split the meter's net power (+ import / - export) into two non-negative flows.

    Adds ``grid_import_w`` and ``grid_export_w``; a null net power stays null in both."""
    p = pl.col(power_field)
    return electricity.with_columns(
        pl.when(p > 0).then(p).otherwise(0.0).cast(pl.Float64).alias("grid_import_w"),
        pl.when(p < 0).then(-p).otherwise(0.0).cast(pl.Float64).alias("grid_export_w"),
    ).with_columns(
        pl.when(p.is_null()).then(None).otherwise(pl.col(c)).alias(c)
        for c in ("grid_import_w", "grid_export_w")
    )


def device_rank(df: pl.DataFrame, field: str) -> pl.DataFrame:
    """``household``, ``device``, ``rank`` (0 = the source of truth) for ``field``: most samples
    first, then the smaller device id."""
    return (
        df.filter(pl.col(field).is_not_null())
        .group_by(["household", "device"])
        .agg(pl.len().alias("n"))
        .sort(["household", "n", "device"], descending=[False, True, False])
        .with_columns(pl.int_range(pl.len()).over("household").alias("rank"))
        .select("household", "device", "rank")
    )


def one_source(df: pl.DataFrame, field: str) -> pl.DataFrame:
    """``time``, ``household``, ``device`` (the one it came from), ``field``: one value per household
    and time, by the rule in the module docstring."""
    ranked = df.filter(pl.col(field).is_not_null()).join(
        device_rank(df, field), on=["household", "device"], how="inner"
    )
    return (
        ranked.sort(["household", "time", "rank"])
        .group_by(_KEYS, maintain_order=True)
        .first()
        .select("time", "household", "device", field)
    )


def _per_household(df: pl.DataFrame, field: str, alias: str) -> pl.DataFrame:
    return one_source(df, field).select(*_KEYS, pl.col(field).cast(pl.Float64).alias(alias))


def self_consumption(
    pv: pl.DataFrame,
    electricity: pl.DataFrame,
    battery: pl.DataFrame | None = None,
    power_field: str = "power_w",
) -> pl.DataFrame:
    """Per household and time step: how much PV output stayed in the home and how much of the
    home's use PV covered.

    Inputs are windowed results on the SAME ``every`` (mean power per window), so a row is one time
    step.  ``load_w = pv + import - export - battery_charge`` (battery ``power_w`` is + charging).
    ``self_consumption = (pv - export) / pv`` and ``self_sufficiency = (load - import) / load``; both
    null where their denominator is not positive (night, or no load), never a made-up 0 or 1.  Only
    time steps present in both PV and meter data are returned.

    Mean power per window hides import and export netted inside one window, so use windows no
    longer than the meter's own resolution for exact figures."""
    grid = grid_flows(electricity, power_field)
    out = _per_household(pv, power_field, "pv_w").join(
        _per_household(grid, "grid_import_w", "import_w").join(
            _per_household(grid, "grid_export_w", "export_w"), on=_KEYS, how="inner"
        ),
        on=_KEYS,
        how="inner",
    )
    if battery is not None:
        out = out.join(_per_household(battery, power_field, "battery_w"), on=_KEYS, how="left").with_columns(
            pl.col("battery_w").fill_null(0.0)
        )
    else:
        out = out.with_columns(pl.lit(0.0).alias("battery_w"))
    pv_w = pl.col("pv_w").clip(lower_bound=0.0)
    load = pv_w + pl.col("import_w") - pl.col("export_w") - pl.col("battery_w")
    out = out.with_columns(load.alias("load_w"))
    used_pv = (pv_w - pl.col("export_w")).clip(lower_bound=0.0)
    return (
        out.with_columns(
            pl.when(pv_w > 0)
            .then((used_pv / pv_w).clip(upper_bound=1.0))
            .otherwise(None)
            .alias("self_consumption"),
            pl.when(pl.col("load_w") > 0)
            .then(((pl.col("load_w") - pl.col("import_w")) / pl.col("load_w")).clip(0.0, 1.0))
            .otherwise(None)
            .alias("self_sufficiency"),
        )
        .select(
            "time",
            "household",
            "pv_w",
            "import_w",
            "export_w",
            "battery_w",
            "load_w",
            "self_consumption",
            "self_sufficiency",
        )
        .sort(["household", "time"])
    )


def daily_energy(df: pl.DataFrame, total_field: str, tz: str = TOKYO) -> pl.DataFrame:
    """Energy (or volume) per local day from a monotonic total (raw points, any resolution).

    Each increase between two consecutive samples of a device is booked to the local day of the
    later sample; the first sample of a device only sets the baseline.  So a day's figure is the
    rise of the meter over that day (plus the stretch since the previous day's last sample), and a
    day with no samples has no row.  Returns ``day`` (Date), ``household``, ``device``, ``delta``."""
    col = pl.col(total_field)
    return (
        df.filter(col.is_not_null())
        .sort(["household", "device", "time"])
        .with_columns(
            col.cast(pl.Float64).diff().over(["household", "device"]).alias("delta"),
            pl.col("time").dt.convert_time_zone(tz).dt.date().alias("day"),
        )
        .filter(pl.col("delta").is_not_null())
        .group_by(["household", "device", "day"])
        .agg(pl.col("delta").sum())
        .select("day", "household", "device", "delta")
        .sort(["household", "device", "day"])
    )


def daily_energy_per_household(df: pl.DataFrame, total_field: str, tz: str = TOKYO) -> pl.DataFrame:
    """``daily_energy`` per household: each day from one device (``one_source``: the device ranked
    first by its samples of ``total_field`` in ``df`` that has a figure for that day)."""
    per_device = daily_energy(df, total_field, tz).join(
        device_rank(df, total_field), on=["household", "device"], how="inner"
    )
    return (
        per_device.sort(["household", "day", "rank"])
        .group_by(["household", "day"], maintain_order=True)
        .first()
        .select("day", "household", "delta")
        .sort(["household", "day"])
    )
