"""The negawatt items, computed by the pipeline from the meter: what a demand-response contractor gets.

XOOM's joint use (1) and Sobu Gas's joint use (2) give demand-reduction contractors four *items* of
a household's electricity data, not its power curve: generation sold, demand procured, demand
reduction and the baseline.  Computing them here, from the stored readings, is what lets the policy
grant those items and refuse the raw series (``seeds.vocabulary.NEGAWATT_ITEMS``): the contractor
receives the settlement figures, never the seconds-level readings, currents or voltages behind them.

Per 30-minute settlement slot (the unit Japan's balancing settles in), per household, from the
meter's net power ``power_w`` (+ import / - export; one device per home, ``derived.one_source``):

* ``demand_procured_w``: mean import over the slot (``derived.grid_flows``);
* ``generation_sold_w``: mean export over the slot;
* ``baseline_w``: what the slot's demand procured would have been without a reduction, by an
  **X-of-Y day-matching baseline** with X = 4, Y = 5: the candidates are the 5 most recent earlier
  local (Tokyo) days of the same kind (weekday, or Saturday/Sunday) within the last 21 days that have
  data in at least 40 of their 48 slots; of these the 4 with the highest mean demand procured are
  kept, and the baseline of a slot is the mean of that slot over the kept days that have it.  A day
  with fewer than 4 candidates has no baseline (and no reduction): an estimate from fewer days is
  not offered as one;
* ``demand_reduction_w``: baseline less demand procured, never below zero.

Why this baseline: X-of-Y day matching is the common settlement choice (utilities' billing systems
describe it as the "X of Y" method: Y qualifying days, the X with the highest load averaged,
e.g. Oracle's "Baseline Calculation Rule" documentation); it needs nothing but the meter, which is
all the contractor is given, so the contractor can check it; dropping the lowest of five days keeps
one unusual day (an absence, a holiday) from pulling the baseline down.  What it does not do, said
plainly: no same-day adjustment, no national-holiday calendar (a holiday on a weekday counts as a
weekday), no exclusion of earlier event days (this product holds no event calendar).

The points go to the store as ``electricity`` points of device ``negawatt`` (source ``derived``),
one per slot start, so the one series path serves them with the same decisions, periods and ledger
as any other item, and an erasure of the household's electricity takes them with it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import polars as pl

from pipeline.derived import TOKYO, grid_flows, one_source
from pipeline.points import Point
from pipeline.query import SeriesQuery
from pipeline.store import Store, StoreUnavailable
from seeds.vocabulary import BASELINE_LOOKBACK_DAYS, NEGAWATT_SLOT_S

log = logging.getLogger(__name__)

# Both also bound what a served item is made of (``seeds.vocabulary`` ``FieldSpec.reach``).
SLOT: Final = timedelta(seconds=NEGAWATT_SLOT_S)
SLOTS_PER_DAY: Final = 48
BASELINE_KEEP: Final = 4  # X: the highest days kept
BASELINE_DAYS: Final = 5  # Y: the candidate days
MIN_SLOTS: Final = 40  # a candidate day has data in at least this many of its 48 slots
LOOKBACK_DAYS: Final = BASELINE_LOOKBACK_DAYS  # candidates are at most this many days before the day
DEVICE: Final = "negawatt"
SOURCE: Final = "derived"
_SLOT_NS: Final = int(SLOT.total_seconds()) * 1_000_000_000


def slot_flows(electricity: pl.DataFrame) -> pl.DataFrame:
    """Raw electricity points (the ``SeriesQuery`` frame with ``power_w``) -> ``household``, ``slot``
    (slot start, UTC), ``demand_procured_w``, ``generation_sold_w``: means over each slot."""
    net = one_source(electricity, "power_w")
    flows = grid_flows(net)
    return (
        flows.with_columns(pl.col("time").dt.truncate(f"{NEGAWATT_SLOT_S}s").alias("slot"))
        .group_by("household", "slot")
        .agg(
            pl.col("grid_import_w").mean().alias("demand_procured_w"),
            pl.col("grid_export_w").mean().alias("generation_sold_w"),
        )
        .sort("household", "slot")
    )


def _day_kind(day: pl.Expr) -> pl.Expr:
    """``weekday`` or ``weekend`` (Saturday, Sunday) of a local date."""
    return pl.when(day.dt.weekday() >= 6).then(pl.lit("weekend")).otherwise(pl.lit("weekday"))


def baselines(slots: pl.DataFrame) -> pl.DataFrame:
    """``slot_flows`` rows -> the same rows with ``baseline_w`` and ``demand_reduction_w`` (null where a
    day has fewer than ``BASELINE_KEEP`` candidate days), by the method in the module docstring."""
    local = pl.col("slot").dt.convert_time_zone(TOKYO)
    rows = slots.with_columns(
        local.dt.date().alias("day"),
        (local.dt.hour() * 2 + local.dt.minute() // 30).alias("index"),
    ).with_columns(_day_kind(pl.col("day")).alias("kind"))
    days = (
        rows.group_by("household", "day", "kind")
        .agg(pl.len().alias("slots"), pl.col("demand_procured_w").mean().alias("level"))
        .sort("household", "day")
    )
    candidates = days.filter(pl.col("slots") >= MIN_SLOTS)
    # For each (household, day): the earlier days of its kind within the lookback, most recent first.
    pairs = (
        days.select("household", "day", "kind")
        .join(
            candidates.select("household", "kind", pl.col("day").alias("past"), "level"),
            on=["household", "kind"],
        )
        .filter(
            (pl.col("past") < pl.col("day"))
            & (pl.col("past") >= pl.col("day") - pl.duration(days=LOOKBACK_DAYS))
        )
        .sort("household", "day", "past", descending=[False, False, True])
        .group_by("household", "day", maintain_order=True)
        .head(BASELINE_DAYS)
    )
    chosen = (
        pairs.sort("household", "day", "level", descending=[False, False, True])
        .group_by("household", "day", maintain_order=True)
        .agg(pl.col("past").head(BASELINE_KEEP), pl.len().alias("found"))
        .filter(pl.col("found") >= BASELINE_KEEP)
        .explode("past")
    )
    per_slot = (
        chosen.join(
            rows.select("household", pl.col("day").alias("past"), "index", "demand_procured_w"),
            on=["household", "past"],
        )
        .group_by("household", "day", "index")
        .agg(pl.col("demand_procured_w").mean().alias("baseline_w"))
    )
    out = rows.join(per_slot, on=["household", "day", "index"], how="left").with_columns(
        (pl.col("baseline_w") - pl.col("demand_procured_w")).clip(lower_bound=0.0).alias("demand_reduction_w")
    )
    return out.select(
        "household", "slot", "generation_sold_w", "demand_procured_w", "baseline_w", "demand_reduction_w"
    ).sort("household", "slot")


def negawatt_points(items: pl.DataFrame) -> list[Point]:
    """``baselines`` rows -> store points (a null item is left out of its point)."""
    names = ("generation_sold_w", "demand_procured_w", "baseline_w", "demand_reduction_w")
    out = []
    for row in items.iter_rows(named=True):
        fields = {n: float(row[n]) for n in names if row[n] is not None}
        ts = int(row["slot"].timestamp()) * 1_000_000_000
        out.append(Point("electricity", row["household"], DEVICE, SOURCE, ts, fields))
    return out


def _slot_floor(t: datetime) -> datetime:
    ns = int(t.timestamp() * 1_000_000_000) // _SLOT_NS * _SLOT_NS
    return datetime.fromtimestamp(ns / 1e9, UTC)


async def derive(store: Store, households: Sequence[str], start: datetime, stop: datetime) -> int:
    """Compute and write the items of every whole slot in ``[start, stop)`` for ``households``;
    idempotent: a slot computed again (late readings replayed from a spool) overwrites its point.

    The new slots come from the raw readings; the baselines also need the demand procured of the
    lookback before ``start``, which is read back from the items already stored (48 points a day, not
    the readings behind them).  Returns the points written."""
    first, last = _slot_floor(start), _slot_floor(stop)
    if not households or first >= last:
        return 0
    since = first - timedelta(days=LOOKBACK_DAYS + 1)
    written = 0
    for household in households:
        raw = await store.query(SeriesQuery((household,), "electricity", ("power_w",), first, last))
        if raw.height == 0:
            continue
        past = await store.query(
            SeriesQuery(
                (household,),
                "electricity",
                ("generation_sold_w", "demand_procured_w"),
                since,
                first,
                devices=(DEVICE,),
            )
        )
        earlier = past.select(
            "household", pl.col("time").alias("slot"), "demand_procured_w", "generation_sold_w"
        ).drop_nulls("demand_procured_w")
        fresh = slot_flows(raw)
        slots = pl.concat([earlier, fresh.select(earlier.columns)], how="vertical_relaxed")
        items = baselines(slots).filter(pl.col("slot") >= first)
        points = negawatt_points(items)
        await store.write(points)
        written += len(points)
    return written


async def derive_pass(
    store: Store, households: Sequence[str], done: dict[str, datetime], now: datetime, backfill: timedelta
) -> int:
    """One pass: for a household seen before, the slots closed since its last pass and the day before
    them again (readings that arrive late from a spool); for a new one (a gateway just onboarded, or
    this process just took the job over), the last ``backfill``.  ``done`` is updated.  Returns the
    points written."""
    new = [h for h in households if h not in done]
    known = [h for h in households if h in done]
    written = 0
    if new:
        written += await derive(store, new, now - backfill, now)
    if known:
        written += await derive(store, known, min(done[h] for h in known) - timedelta(days=1), now)
    for h in households:
        done[h] = now
    return written


async def negawatt_loop(
    store: Store,
    households: Sequence[str] | Callable[[], Sequence[str]],
    *,
    backfill: timedelta = timedelta(days=7),
    every_s: float = 900.0,
    leads: Callable[[], bool] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Background job beside the writer (``hems collect``, ``hems demo``: the households polled), or on
    the fleet (``hems serve --role ingest``: ``households`` is then asked each pass, as gateways are
    onboarded, and ``leads`` says whether this replica is the one of all that derives, so replicas do
    not each do the work).  An outage is logged and retried at the next pass."""
    done: dict[str, datetime] = {}
    while True:
        try:
            if leads is None or leads():
                homes = households() if callable(households) else households
                n = await derive_pass(store, homes, done, clock(), backfill)
                log.info("negawatt items: %d slot points written for %d households", n, len(homes))
            else:
                done.clear()  # another replica derives; taking over later starts with the backfill
        except StoreUnavailable as exc:
            log.warning("negawatt items skipped, store unavailable: %s", exc)
        except Exception:
            log.exception("negawatt items pass failed")
        await asyncio.sleep(every_s)
