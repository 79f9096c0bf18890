"""Where a home's energy came from and where it went, window by window, from its meters' totals.

The inputs are the monotonic totals the pipeline stores (``energy_wh_total`` of PV and fuel cell,
``import_wh_total``/``export_wh_total`` of the grid meter, ``charge_wh_total``/``discharge_wh_total``
of the battery and the EV charger, ``volume_l_total`` of the water and gas meters), read as the
last value of each window (``SeriesQuery(every=..., agg="last")``) from one window before the period,
so the first window has its baseline.  Each quantity is taken from one device (``one_source``'s rule,
applied to the windows' rises), so a home read by two meters is not counted twice.

**The home's consumption is what the meters leave over**: no device meters the home's own use, so
``home = pv + fuel_cell + battery_discharge + ev_discharge + grid_import - grid_export -
battery_charge - ev_charge`` per window.  A window where that is negative (meters read at slightly
different moments) is booked as 0 and the difference is reported as ``unmetered_wh``, never hidden:
the balance ``sources = sinks + unmetered`` is what the homeowner's page checks.

**Who fed whom** (the flow diagram) is not metered either; within each window the flows are assigned
by a fixed rule, in this order (``ASSIGN``): the export is fed by PV first (Japanese grid rules let
only PV flow back to the grid), then fuel cell and storage; the home by the battery and the car
(storage discharges only to cover the home's use), then the fuel cell, PV, and the grid; the battery's
charge by what PV and the fuel cell have left, then the grid; the EV's charge likewise.  Whatever a
sink still lacks is taken from any source with energy left, so every window's flows add up to its
totals exactly.  A window hides what happened inside it (sun at noon,
import at one o'clock), so the assignment is as fine as the window: hourly for the pages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import polars as pl

from pipeline.derived import device_rank

# quantity -> (category, counter field); the order is the CSV's column order.
QUANTITIES: Final[dict[str, tuple[str, str]]] = {
    "pv": ("pv", "energy_wh_total"),
    "fuel_cell": ("external_generation", "energy_wh_total"),
    "grid_import": ("electricity", "import_wh_total"),
    "grid_export": ("electricity", "export_wh_total"),
    "battery_charge": ("battery", "charge_wh_total"),
    "battery_discharge": ("battery", "discharge_wh_total"),
    "ev_charge": ("ev", "charge_wh_total"),
    "ev_discharge": ("ev", "discharge_wh_total"),
    "water": ("water", "volume_l_total"),
    "gas": ("gas", "volume_l_total"),
}
ELECTRIC: Final = tuple(q for q in QUANTITIES if q not in ("water", "gas"))
SOURCES: Final = ("pv", "fuel_cell", "battery_discharge", "ev_discharge", "grid_import")
SINKS: Final = ("grid_export", "home", "battery_charge", "ev_charge")
# sink -> its sources in the order they feed it (see the module docstring)
ASSIGN: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("grid_export", ("pv", "fuel_cell", "battery_discharge", "ev_discharge")),
    ("home", ("battery_discharge", "ev_discharge", "fuel_cell", "pv", "grid_import")),
    ("battery_charge", ("pv", "fuel_cell", "grid_import", "ev_discharge")),
    ("ev_charge", ("pv", "fuel_cell", "grid_import", "battery_discharge")),
)
MIN_FLOW_WH: Final = 0.001  # smaller flows are float noise of the assignment, not energy
CATEGORY_FIELDS: Final[dict[str, tuple[str, ...]]] = {}
for _q, (_cat, _field) in QUANTITIES.items():
    CATEGORY_FIELDS[_cat] = tuple(dict.fromkeys((*CATEGORY_FIELDS.get(_cat, ()), _field)))


def flow_column(source: str, sink: str) -> str:
    return f"{source}__{sink}"


def _rises(df: pl.DataFrame, field: str, alias: str) -> pl.DataFrame:
    """``time`` and the rise of ``field`` since the device's previous window, one device per time; with a
    ``piece`` column, only between windows of the same piece (see ``window_energy``)."""
    if field not in df.columns or df.height == 0:
        return pl.DataFrame(
            schema={"time": df.schema.get("time", pl.Datetime("us", "UTC")), alias: pl.Float64}
        )
    keys = ["household", "device", *(["piece"] if "piece" in df.columns else [])]
    rises = (
        df.filter(pl.col(field).is_not_null())
        .sort([*keys, "time"])
        .with_columns(pl.col(field).cast(pl.Float64).diff().over(keys).alias("rise"))
        .filter(pl.col("rise").is_not_null())
        .with_columns(pl.col("rise").clip(lower_bound=0.0))
    )
    ranked = rises.join(device_rank(rises, "rise"), on=["household", "device"], how="inner")
    return (
        ranked.sort(["time", "rank"])
        .group_by("time", maintain_order=True)
        .first()
        .select("time", pl.col("rise").alias(alias))
    )


def window_energy(frames: Mapping[str, pl.DataFrame]) -> pl.DataFrame:
    """Per window: each quantity's Wh (L for water and gas), ``home`` and ``unmetered`` (see the module
    docstring).  ``frames``: category -> its counters as windowed ``last`` values of ONE household,
    starting one window before the period; a category left out (not allowed, not installed) counts 0.
    A frame with a ``piece`` column (``access.api.reads.read_pieces``: one piece per served period) has
    rises only within each piece, so none spans the readings between two pieces.
    Windows where no quantity rose are absent."""
    parts = [_rises(frames[cat], field, q) for q, (cat, field) in QUANTITIES.items() if cat in frames]
    parts = [p for p in parts if p.height]
    if not parts:
        return pl.DataFrame(
            schema={
                "time": pl.Datetime("us", "UTC"),
                **dict.fromkeys((*QUANTITIES, "home", "unmetered"), pl.Float64),
            }
        )
    out = parts[0]
    for p in parts[1:]:
        out = out.join(p, on="time", how="full", coalesce=True)
    out = out.with_columns(pl.lit(0.0).alias(q) for q in QUANTITIES if q not in out.columns)
    out = out.with_columns(pl.col(q).fill_null(0.0) for q in QUANTITIES)
    net = sum((pl.col(q) for q in SOURCES), pl.lit(0.0)) - sum(
        (pl.col(q) for q in SINKS if q != "home"), pl.lit(0.0)
    )
    return (
        out.with_columns(net.alias("net"))
        .with_columns(
            pl.col("net").clip(lower_bound=0.0).alias("home"),
            (-pl.col("net")).clip(lower_bound=0.0).alias("unmetered"),
        )
        .select("time", *QUANTITIES, "home", "unmetered")
        .sort("time")
    )


def assign_flows(windows: pl.DataFrame) -> pl.DataFrame:
    """``windows`` (from ``window_energy``) with one column per source->sink flow (``flow_column``)."""
    # What each source has left and each sink still needs, as columns: each step is materialised, so
    # no expression nests the ones before it.
    out = windows.with_columns(
        *(pl.col(s).alias(f"left_{s}") for s in SOURCES), *(pl.col(s).alias(f"need_{s}") for s in SINKS)
    )
    steps = [(source, sink) for sink, sources in ASSIGN for source in sources]
    steps += [(source, sink) for sink in SINKS for source in SOURCES]  # what is still lacking
    for source, sink in steps:
        left, need, flow = f"left_{source}", f"need_{sink}", flow_column(source, sink)
        amount = pl.min_horizontal(pl.col(left), pl.col(need)).clip(lower_bound=0.0)
        previous = pl.col(flow) if flow in out.columns else pl.lit(0.0)
        out = out.with_columns(amount.alias("_take")).with_columns(
            (previous + pl.col("_take")).alias(flow),
            (pl.col(left) - pl.col("_take")).alias(left),
            (pl.col(need) - pl.col("_take")).alias(need),
        )
    return out.drop("_take", *(f"left_{s}" for s in SOURCES), *(f"need_{s}" for s in SINKS))


@dataclass(frozen=True)
class Flow:
    source: str
    sink: str
    wh: float


@dataclass(frozen=True)
class Summary:
    """A period's totals and what follows from them."""

    totals: dict[str, float]  # quantity (and home, unmetered) -> Wh or L
    flows: tuple[Flow, ...]  # non-zero flows over the period
    sources_wh: float  # PV + fuel cell + battery and EV discharge + grid import
    sinks_wh: float  # home + battery and EV charge + grid export; exceeds sources by ``unmetered``
    self_consumption: float | None  # share of PV output used in the home (not exported)
    self_sufficiency: float | None  # share of the home's use (car included) not bought from the grid
    windows: int


def summarise(assigned: pl.DataFrame) -> Summary:
    """The period's totals over the windows of ``assign_flows``."""
    names = [*QUANTITIES, "home", "unmetered"]
    sums = assigned.select(pl.col(n).sum() for n in names).row(0, named=True) if assigned.height else {}
    totals = {n: float(sums.get(n) or 0.0) for n in names}
    flows: list[Flow] = []
    for source in SOURCES:
        for sink in SINKS:
            col = flow_column(source, sink)
            if col in assigned.columns:
                wh = float(assigned[col].sum() or 0.0)
                if wh >= MIN_FLOW_WH:
                    flows.append(Flow(source, sink, wh))
    pv = totals["pv"]
    pv_exported = sum(f.wh for f in flows if f.source == "pv" and f.sink == "grid_export")
    use = totals["home"] + totals["ev_charge"]
    return Summary(
        totals=totals,
        flows=tuple(flows),
        sources_wh=sum(totals[s] for s in SOURCES),
        sinks_wh=sum(totals[s] for s in SINKS),
        self_consumption=None if pv <= 0 else min(1.0, max(0.0, (pv - pv_exported) / pv)),
        self_sufficiency=None if use <= 0 else min(1.0, max(0.0, (use - totals["grid_import"]) / use)),
        windows=assigned.height,
    )
