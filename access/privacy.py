"""Statistics that identify no one: what ``/api/v1/stats`` releases, and what any sequence of releases
can teach about one household.

ENEX footnote *2 (and XOOM's regulator statistics) allow only statistics that identify no individual.
Suppressing small groups is not that: two releases whose groups differ by one household (a window
moved, a contract ended, a suspension) difference that household out exactly.  So every release is
**differentially private** with the household as the unit of privacy: adding or removing one
household's data changes the probability of any answer by at most a factor ``e^epsilon``.  Epsilons
add up over releases (basic composition), so a principal's releases are charged against a budget it
cannot exceed (``access.budget``): whatever sequence of queries it sends, with whatever groups, windows
and suspensions in between, what it can learn about any one household is bounded by ``e^budget``.

The mechanism, per release of ``K`` windows of ``F`` fields:

* **Windows** are the resolution's epoch-aligned grid: ``start`` is floored and ``stop`` ceiled to it,
  and every window of the range is released (with zeros where no household had data), so neither the
  windows nor their number depend on anyone's data.
* **One value per household and window** per field (the store's aggregate within the window,
  ``one_source``), **clamped** to the field's public range (``seeds.vocabulary``
  ``stats_range``: one home's power is within +-12 kW).  A household lacking a requested field in a
  window is left out of that window.
* **Clamped sums and counts** are computed in polars: per window, the number of households and, per
  field, the sum of the clamped values centred on the middle of the range.  Adding or removing one
  household changes the counts by at most ``K`` in L1 and each field's centred sums by at most
  ``K * half-range``.
* **Noise**: OpenDP's Laplace mechanism on each vector (``make_laplace``: discrete Laplace for the
  integer counts, OpenDP's floating-point-safe Laplace for the sums), the release's epsilon split
  evenly between the counts and each field's sums; the epsilon charged is the sum of OpenDP's own
  privacy maps at those sensitivities.  (OpenDP's polars front end needs polars 1.36.x exactly; this
  product runs polars 2, so the clamped aggregates are made here and released through the core
  measurements, ``../shared/reference/interop.md``.)
* **Post-processing** only (no privacy cost): mean = noisy sum / noisy count (plus the centre),
  clamped to the range; a window whose noisy count is below the clause's ``min_group_size`` is
  suppressed.  No minimum or maximum is released: each is one household's value.

What the numbers mean (``attack_interval`` computes them): with the default release (epsilon 0.5),
one window of ``power_w``: the sums carry Laplace noise of scale 48 kW, so an attacker who differences
two releases (the same hour before and after a household's suspension) estimates that household's
hourly mean power with a 95 % interval of about +-197 kW, against a true value within +-12 kW (at the
largest release, epsilon 1.0: +-99 kW); and with the whole default budget (3.0) spent on it, the odds
of any guess about one household move by a factor of at most e^3 (about 20).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import polars as pl

from seeds.vocabulary import STATS_RANGES

DEFAULT_RELEASE_EPSILON: Final = 0.5
MAX_RELEASE_EPSILON: Final = 1.0
MIN_RELEASE_EPSILON: Final = 0.01
# Per-principal lifetime budget unless the operator sets another (``hems principals budget``).
DEFAULT_BUDGET_EPSILON: Final = 3.0
# The aggregates of a household's samples within a window that stay within the field's range.
RELEASE_AGGS: Final = ("mean", "min", "max", "first", "last")

_dp: Any = None


def _opendp() -> Any:
    """OpenDP, with its contrib features (the Laplace mechanism) enabled; imported when first used."""
    global _dp
    if _dp is None:
        import opendp.prelude as dp

        dp.enable_features("contrib")
        _dp = dp
    return _dp


class ReleaseError(ValueError):
    """A release that cannot be made as asked (a field with no public range, an epsilon out of bounds)."""


@dataclass(frozen=True)
class Grid:
    """The release's windows: ``count`` windows of ``every`` from ``start`` (epoch-aligned)."""

    start: datetime
    stop: datetime
    every: timedelta

    @classmethod
    def snapped(cls, start: datetime, stop: datetime, every: timedelta) -> Grid:
        """``[start, stop)`` widened to whole windows of the epoch-aligned grid of ``every``."""
        step = every.total_seconds()
        a = math.floor(start.timestamp() / step) * step
        b = math.ceil(stop.timestamp() / step) * step
        tz = start.tzinfo
        return cls(datetime.fromtimestamp(a, tz), datetime.fromtimestamp(b, tz), every)

    @property
    def count(self) -> int:
        return round((self.stop - self.start) / self.every)

    def times(self) -> list[datetime]:
        return [self.start + k * self.every for k in range(self.count)]


@dataclass(frozen=True)
class Noise:
    """The public description of a release's noise (it depends on no one's data)."""

    epsilon: float  # charged: the sum of OpenDP's privacy maps
    count_scale: float  # discrete Laplace scale of each window's household count
    sum_scales: dict[str, float]  # field -> Laplace scale of each window's centred sum

    def error95(self, scale: float) -> float:
        """Half-width of the 95 % interval of one Laplace draw of ``scale`` (P(|X| > t) = e^(-t/b))."""
        return scale * math.log(20.0)


def check_fields(fields: Sequence[str]) -> None:
    for f in fields:
        if f not in STATS_RANGES:
            raise ReleaseError(
                f"{f} is not released as a statistic (a cumulative total or text); released fields: "
                + ", ".join(sorted(STATS_RANGES))
            )


def check_epsilon(epsilon: float) -> None:
    if not MIN_RELEASE_EPSILON <= epsilon <= MAX_RELEASE_EPSILON:
        raise ReleaseError(f"epsilon is between {MIN_RELEASE_EPSILON} and {MAX_RELEASE_EPSILON} per release")


def clamped_aggregates(per_home: pl.DataFrame, fields: Sequence[str], grid: Grid) -> pl.DataFrame:
    """Exact per-window ``households`` and centred clamped sums ``<field>_sum`` over every window of
    ``grid`` (zero where nobody had data): what the noise is added to.  ``per_home`` has one row per
    household and window (``time``, ``household``, fields)."""
    complete = per_home.drop_nulls(list(fields))
    centred = [
        (pl.col(f).cast(pl.Float64).clip(*STATS_RANGES[f]) - sum(STATS_RANGES[f]) / 2).alias(f)
        for f in fields
    ]
    sums = (
        complete.select("time", "household", *centred)
        .group_by("time")
        .agg(
            pl.col("household").n_unique().cast(pl.Int64).alias("households"),
            *[pl.col(f).sum().alias(f"{f}_sum") for f in fields],
        )
    )
    windows = pl.DataFrame({"time": grid.times()}).with_columns(pl.col("time").cast(per_home.schema["time"]))
    return (
        windows.join(sums, on="time", how="left")
        .with_columns(pl.col("households").fill_null(0), *[pl.col(f"{f}_sum").fill_null(0.0) for f in fields])
        .sort("time")
    )


@dataclass(frozen=True)
class Mechanism:
    """The OpenDP measurements of one release, made before anything is charged: the epsilon charged is
    what their privacy maps say, at the sensitivities of ``clamped_aggregates``."""

    windows: int
    fields: tuple[str, ...]
    counts: Any  # OpenDP measurement on the vector of window counts
    sums: dict[str, Any]  # field -> OpenDP measurement on the vector of its centred sums
    noise: Noise


def mechanism(windows: int, fields: Sequence[str], epsilon: float) -> Mechanism:
    """Laplace measurements for ``windows`` windows of ``fields`` spending ``epsilon`` in all, split
    evenly between the counts and each field's sums."""
    dp = _opendp()
    share = epsilon / (len(fields) + 1)
    count_scale = windows / share
    counts = dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T=int), size=windows), dp.l1_distance(T=int), scale=count_scale
    )
    charged = float(counts.map(windows))
    sums: dict[str, Any] = {}
    scales: dict[str, float] = {}
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False), size=windows), dp.l1_distance(T=float)
    for f in fields:
        low, high = STATS_RANGES[f]
        sensitivity = windows * (high - low) / 2
        scales[f] = sensitivity / share
        sums[f] = dp.m.make_laplace(*space, scale=scales[f])
        charged += float(sums[f].map(sensitivity))
    return Mechanism(windows, tuple(fields), counts, sums, Noise(charged, count_scale, scales))


def release(exact: pl.DataFrame, m: Mechanism, min_group: int) -> tuple[pl.DataFrame, int]:
    """The noisy release of ``clamped_aggregates`` through ``m``: (``time``, ``households``,
    ``<field>_mean`` per window not suppressed) and how many windows were suppressed."""
    if exact.height != m.windows:
        raise ReleaseError(f"{exact.height} windows to release, the mechanism was made for {m.windows}")
    noisy_counts = m.counts([int(v) for v in exact["households"]])
    columns: dict[str, Any] = {"time": exact["time"], "households": pl.Series(noisy_counts, dtype=pl.Int64)}
    for f in m.fields:
        low, high = STATS_RANGES[f]
        noisy = m.sums[f]([float(v) for v in exact[f"{f}_sum"]])
        columns[f"{f}_mean"] = pl.Series(
            [
                min(high, max(low, s / n + (low + high) / 2)) if n > 0 else None
                for s, n in zip(noisy, noisy_counts, strict=True)
            ],
            dtype=pl.Float64,
        )
    out = pl.DataFrame(columns)
    kept = out.filter(pl.col("households") >= min_group)
    return kept, out.height - kept.height


def attack_interval(scale: float, level: float = 0.95) -> float:
    """Half-width of the ``level`` interval of the difference of two independent Laplace draws of
    ``scale``: the error of an attacker's estimate of one household's centred sum from two releases whose
    groups differ by that household.  P(|X - Y| > t) = (1 + t / 2b) e^(-t/b); solved by bisection."""
    lo, hi = 0.0, 100.0 * scale
    for _ in range(200):
        mid = (lo + hi) / 2
        tail = (1 + mid / (2 * scale)) * math.exp(-mid / scale)
        lo, hi = (mid, hi) if tail > 1 - level else (lo, mid)
    return (lo + hi) / 2
