"""Which of an installer's homes need attention, and why: problems found in a home's recent series.

Pure functions over the frames a store returned (``SeriesQuery`` result shape), so the rules are tested
on exact data and the view, the alerts API and the webhook sender share them.  Each problem names the
device, what is wrong, since when (UTC; the pages show Tokyo time) and how bad it is:

* ``health``: the collector's verdict on a device (the ``equipment`` series) is not ok: it times out,
  answers a Modbus exception, a malformed frame, or is not found.  Since: when that verdict began.
* ``silent``: a device gave no reading for ``Rules.silent_intervals`` of its own usual intervals
  (learnt from its recent samples), or its collector stopped reporting health at all.
* ``fault``: an inverter or battery raises its fault flag (SunSpec St/Evt1, ECHONET 0x88).
* ``low_yield``: today's PV yield is well under what the home's array gives on such a day: the
  clear-sky expectation for the date and hours (array size estimated from its best hours of the
  last weeks), times the day's weather proxy, the median ratio of the installer's other homes today
  (their sky is this home's sky); with fewer than ``Rules.weather_peers`` peers the weather is unknown
  and a low day is only a notice.
* ``battery_idle``: the battery's state of charge and its counters have not moved for a day.
* ``counter_stuck``: a cumulative counter did not rise while its device's own power readings add
  up to ``Rules.stuck_wh`` (within the recent window, so "since" is at the latest its start).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final

import polars as pl

from common.sun import clear_sky_fraction, expected_wh
from pipeline.derived import one_source

CRITICAL, WARNING, NOTICE = 3, 2, 1
# "pending" (not polled yet) is no verdict: a device that never answers shows up as silent or
# unreachable instead.
HEALTHY_REASONS: Final = frozenset({"ok", "partial", "pending"})
# Reasons whose device still answers with readings but not all of them can be trusted: worth a visit,
# not an emergency.  Every other reason (timeout, exception, malformed, unreachable, no_data,
# unsupported) means nothing usable arrives, which is critical.
DEGRADED_REASONS: Final = frozenset({"implausible"})
# Fields read per category to see that a device is alive and what it says (presence, fault, state).
LIVE_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "pv": ("power_w", "energy_wh_total", "fault", "state"),
    "battery": ("power_w", "soc_pct", "fault", "state", "charge_wh_total", "discharge_wh_total"),
    "electricity": ("power_w", "import_wh_total", "export_wh_total"),
    "external_generation": ("power_w", "energy_wh_total"),
    "ev": ("power_w", "charge_wh_total"),
    "water": ("volume_l_total",),
    "gas": ("volume_l_total",),
}
HOURLY_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "pv": ("power_w", "energy_wh_total"),
    "battery": ("power_w", "soc_pct", "charge_wh_total", "discharge_wh_total"),
    "electricity": ("power_w", "import_wh_total", "export_wh_total"),
}
# (category, counter, sign of power that must make it rise): a flat counter under such power is stuck.
COUNTER_POWER: Final = (
    ("pv", "energy_wh_total", 1),
    ("electricity", "import_wh_total", 1),
    ("electricity", "export_wh_total", -1),
    ("battery", "charge_wh_total", 1),
    ("battery", "discharge_wh_total", -1),
)


@dataclass(frozen=True)
class Rules:
    """Thresholds; the defaults suit a collector polling power every 10 s and counters every 60 s."""

    recent: timedelta = timedelta(hours=2)  # raw points looked at for silence, faults and health
    silent_intervals: float = 3.0  # silent after this many of a device's usual intervals
    min_silence: timedelta = timedelta(seconds=5)
    health_stale: timedelta = timedelta(minutes=10)  # no health report at all: the collector is silent
    history: timedelta = timedelta(days=30)  # hourly PV used to size the array
    low_yield_ratio: float = 0.5  # flagged under this share of the day's expectation
    min_expected_wh: float = 1000.0  # judge the yield only once this much was expected today
    weather_peers: int = 3
    idle_after: timedelta = timedelta(hours=24)
    idle_soc_band: float = 2.0  # percentage points
    stuck_wh: float = 500.0


@dataclass(frozen=True)
class Problem:
    household: str
    device: str | None
    category: str
    kind: str  # health / silent / fault / low_yield / battery_idle / counter_stuck
    severity: int
    since: datetime
    detail: Mapping[str, object] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable identity of an open problem (the webhook's and the alert list's)."""
        return f"{self.household}/{self.device or '-'}/{self.category}/{self.kind}"


@dataclass
class HomeData:
    """What the installer may see of one home: raw recent frames and hourly history per category
    (absent: not allowed or not asked), and the equipment health frame."""

    household: str
    recent: dict[str, pl.DataFrame] = field(default_factory=dict)
    hourly: dict[str, pl.DataFrame] = field(default_factory=dict)
    health: pl.DataFrame | None = None
    # The hourly counters again, with a ``piece`` column numbering the served period each row was read
    # from (``access.api.reads.read_pieces``): a rise is taken within a piece only.
    totals: dict[str, pl.DataFrame] = field(default_factory=dict)


@dataclass(frozen=True)
class Yield:
    today_wh: float | None
    expected_clear_wh: float | None  # clear-sky, for the hours of today so far
    capacity_w: float | None

    @property
    def ratio(self) -> float | None:
        if self.today_wh is None or not self.expected_clear_wh:
            return None
        return self.today_wh / self.expected_clear_wh


def local_midnight(now: datetime, tz: str = "Asia/Tokyo") -> datetime:
    from zoneinfo import ZoneInfo

    local = now.astimezone(ZoneInfo(tz))
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def _last_time(df: pl.DataFrame) -> datetime | None:
    value = df["time"].max() if df.height else None
    return value if isinstance(value, datetime) else None


def pv_yield(home: HomeData, now: datetime) -> Yield:
    """Today's yield (one source: ``pipeline.derived.one_source``), the clear-sky expectation for
    today so far, and the array size it rests on (the best hours of the history against clear sky)."""
    hourly = home.hourly.get("pv")
    if hourly is None or hourly.height == 0:
        return Yield(None, None, None)
    power = one_source(hourly, "power_w")
    ratios = [
        float(p) / f
        for ts, p in zip(power["time"], power["power_w"], strict=True)
        if p is not None and (f := clear_sky_fraction(ts + timedelta(minutes=30))) > 0.2
    ]
    capacity = max(ratios) if ratios else None
    midnight = local_midnight(now)
    recent = home.recent.get("pv")
    latest = None
    if recent is not None and recent.height:
        last = one_source(recent, "energy_wh_total").sort("time")["energy_wh_total"]
        latest = float(last[-1]) if len(last) else None
    pieces = home.totals.get("pv")
    if pieces is None:  # read as one period
        pieces = hourly.with_columns(pl.lit(0, dtype=pl.Int32).alias("piece"))
    parts = pieces.sort("piece").partition_by("piece", maintain_order=True) if pieces.height else []
    today_wh: float | None = None
    covered_from: datetime | None = None
    for i, part in enumerate(parts):
        end = latest if i == len(parts) - 1 else None  # the newest reading is in the last period served
        rise = _rise_today(one_source(part, "energy_wh_total").sort("time"), midnight, end)
        if rise is None:
            continue
        wh, since = rise
        today_wh = (today_wh or 0.0) + wh
        if covered_from is None:
            covered_from = since
            if since > midnight and recent is not None and recent.height:
                seen = recent["time"].min()  # the hourly window starts before the first sample in it
                if isinstance(seen, datetime) and since < seen < since + timedelta(hours=1):
                    covered_from = seen
    covered_from = midnight if covered_from is None else covered_from
    expected = expected_wh(capacity, covered_from, now) if capacity and covered_from < now else None
    return Yield(today_wh, expected, capacity)


def _rise_today(
    totals: pl.DataFrame, midnight: datetime, latest: float | None
) -> tuple[float, datetime] | None:
    """The rise of one served period's hourly totals since midnight, and when the stretch it measures
    began: from the last total before midnight, or, when the period starts today, from its first sample
    (the expectation then covers the same stretch, never hours nobody measured), to ``latest`` (the
    newest raw reading) or its last total.  None: nothing of today in it."""
    before = totals.filter(pl.col("time") < midnight)["energy_wh_total"]
    today = totals.filter(pl.col("time") >= midnight)
    end = latest if latest is not None else (float(today["energy_wh_total"][-1]) if today.height else None)
    if end is None:
        return None
    if len(before):
        return max(0.0, end - float(before[-1])), midnight
    if today.height:
        return max(0.0, end - float(today["energy_wh_total"][0])), today["time"][0]
    return None


def weather_proxy(ratios: Iterable[float | None], minimum: int) -> float | None:
    """The day's weather as the median yield ratio of the other homes (None: too few to tell)."""
    known = [r for r in ratios if r is not None]
    return statistics.median(known) if len(known) >= minimum else None


def _health_problems(home: HomeData, now: datetime, rules: Rules) -> list[Problem]:
    df = home.health
    if df is None:
        return []
    if df.height == 0:
        return []
    out: list[Problem] = []
    latest = df.sort("time").group_by("device", maintain_order=True).last()
    newest = _last_time(df)
    if newest is not None and now - newest > rules.health_stale:
        out.append(
            Problem(home.household, None, "equipment", "silent", CRITICAL, newest, {"what": "collector"})
        )
    for row in latest.iter_rows(named=True):
        reason = row["health"]
        if reason is None or reason in HEALTHY_REASONS:
            continue
        since_s = row.get("health_since_s")
        since = datetime.fromtimestamp(since_s, UTC) if isinstance(since_s, float | int) else row["time"]
        severity = WARNING if reason in DEGRADED_REASONS else CRITICAL
        out.append(
            Problem(home.household, row["device"], "equipment", "health", severity, since, {"reason": reason})
        )
    return out


def _usual_interval(times: pl.Series) -> float | None:
    if times.len() < 3:
        return None
    gaps = times.sort().diff().dt.total_microseconds().drop_nulls() / 1e6
    positive = gaps.filter(gaps > 0)
    return float(positive.median()) if positive.len() else None  # type: ignore[arg-type]


def _silent_and_fault(home: HomeData, now: datetime, rules: Rules) -> list[Problem]:
    out: list[Problem] = []
    for category, df in home.recent.items():
        if df.height == 0:
            continue
        for (device,), part in df.sort("time").group_by(["device"], maintain_order=True):
            last = _last_time(part)
            assert last is not None
            every = _usual_interval(part["time"])
            quiet = now - last
            if every is not None and quiet > max(
                rules.min_silence, timedelta(seconds=every * rules.silent_intervals)
            ):
                out.append(
                    Problem(
                        home.household,
                        str(device),
                        category,
                        "silent",
                        CRITICAL,
                        last,
                        {"interval_s": round(every, 1)},
                    )
                )
            if "fault" in part.columns:
                flags = part.filter(pl.col("fault").is_not_null())
                if flags.height and bool(flags["fault"][-1]):
                    ok_before = flags.filter(~pl.col("fault"))
                    ok_last = _last_time(ok_before)
                    trailing = flags if ok_last is None else flags.filter(pl.col("time") > ok_last)
                    since = _last_time(trailing.head(1)) or last
                    state = None
                    if "state" in part.columns:
                        states = part["state"].drop_nulls()
                        state = str(states[-1]) if len(states) else None
                    out.append(
                        Problem(
                            home.household, str(device), category, "fault", CRITICAL, since, {"state": state}
                        )
                    )
    return out


def _idle_battery(home: HomeData, now: datetime, rules: Rules) -> list[Problem]:
    df = home.hourly.get("battery")
    if df is None or df.height == 0 or "soc_pct" not in df.columns:
        return []
    soc = one_source(df, "soc_pct").sort("time")
    if soc.height < 2:
        return []
    current = float(soc["soc_pct"][-1])
    moved = soc.filter((pl.col("soc_pct") - current).abs() > rules.idle_soc_band)
    last_move = _last_time(moved) or _last_time(soc.head(1))
    assert last_move is not None
    first = _last_time(soc.head(1))
    if first is None or now - first < rules.idle_after or now - last_move < rules.idle_after:
        return []
    return [
        Problem(home.household, None, "battery", "battery_idle", WARNING, last_move, {"soc_pct": current})
    ]


def _stuck_counters(home: HomeData, now: datetime, rules: Rules) -> list[Problem]:
    """From the recent raw points: the energy the device's own power says went by since its counter
    last rose (power times the time to the next sample), against ``Rules.stuck_wh``."""
    out: list[Problem] = []
    for category, counter, sign in COUNTER_POWER:
        df = home.recent.get(category)
        if df is None or df.height == 0 or counter not in df.columns or "power_w" not in df.columns:
            continue
        for (device,), part in df.sort("time").group_by(["device"], maintain_order=True):
            counted = part.filter(pl.col(counter).is_not_null())
            if counted.height < 2:
                continue
            final = counted[counter][-1]
            rose = counted.filter(pl.col(counter) < final)
            since = _last_time(rose) or _last_time(counted.head(1))
            assert since is not None
            flat = part.filter(pl.col("time") >= since).with_columns(
                (pl.col("time").diff().shift(-1).dt.total_microseconds() / 3.6e9).alias("hours")
            )
            energy = float(
                flat.select(
                    ((pl.col("power_w").fill_null(0.0) * sign).clip(lower_bound=0.0) * pl.col("hours"))
                    .fill_null(0.0)
                    .sum()
                ).item()
            )
            if energy >= rules.stuck_wh:
                out.append(
                    Problem(
                        home.household,
                        str(device),
                        category,
                        "counter_stuck",
                        WARNING,
                        since,
                        {"counter": counter, "missing_wh": round(energy)},
                    )
                )
    return out


def find_problems(
    home: HomeData, now: datetime, rules: Rules, weather: float | None, yield_: Yield | None = None
) -> list[Problem]:
    """Every problem of one home, most severe and oldest first."""
    problems = _health_problems(home, now, rules) + _silent_and_fault(home, now, rules)
    problems += _idle_battery(home, now, rules) + _stuck_counters(home, now, rules)
    y = yield_ if yield_ is not None else pv_yield(home, now)
    if (
        y.ratio is not None
        and y.expected_clear_wh is not None
        and y.expected_clear_wh >= rules.min_expected_wh
    ):
        expected_share = weather if weather is not None else 1.0
        if y.ratio < rules.low_yield_ratio * expected_share:
            problems.append(
                Problem(
                    home.household,
                    None,
                    "pv",
                    "low_yield",
                    WARNING if weather is not None else NOTICE,
                    local_midnight(now),
                    {
                        "today_wh": round(y.today_wh or 0.0),
                        "expected_wh": round(y.expected_clear_wh * expected_share),
                        "weather": None if weather is None else round(weather, 2),
                    },
                )
            )
    # A device the collector already calls unhealthy is not reported silent as well: its health says
    # why, and the last reading it gave goes with it.
    unhealthy = {p.device: p for p in problems if p.kind == "health"}
    merged: list[Problem] = []
    for p in problems:
        if p.kind == "silent" and p.device in unhealthy:
            h = unhealthy[p.device]
            unhealthy[p.device] = Problem(
                h.household,
                h.device,
                h.category,
                h.kind,
                h.severity,
                h.since,
                {**h.detail, "data": p.category, "last_reading": p.since.isoformat()},
            )
            continue
        merged.append(p)
    merged = [unhealthy.get(p.device, p) if p.kind == "health" else p for p in merged]
    return sorted(merged, key=lambda p: (-p.severity, p.since, p.key))


def rank_homes(problems_by_home: Mapping[str, Sequence[Problem]]) -> list[str]:
    """Homes in the order an installer should look at them: worst problem first, then more problems,
    then the longest-standing, then by id; homes without problems last."""

    def key(household: str) -> tuple[int, int, float, str]:
        ps = problems_by_home[household]
        if not ps:
            return (0, 0, 0.0, household)
        return (-max(p.severity for p in ps), -len(ps), min(p.since for p in ps).timestamp(), household)

    return sorted(problems_by_home, key=key)
