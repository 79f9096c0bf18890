"""``GET /api/v1/households/{household}/energy``: a home's energy over a day, week or month.

What the homeowner's page shows, computed once on the server from the store's totals
(``pipeline.energy``): each quantity's energy, the home's consumption, who fed whom, the balance,
self-consumption and self-sufficiency, the cost under the configured tariff (``access.tariff``), the
same figures for the period before, and the battery's and the car's last state of charge.  Hourly
rows come with it (the charts, and the CSV with ``format=csv``).

Each category is decided on its own through ``access.api.reads`` (a refused one counts as absent and
is named in ``refused``); a third party's answer is one ledger record covering both periods.
Periods are Tokyo calendar days: ``span=day`` the date, ``week`` the seven days ending on it,
``month`` its calendar month; ``previous`` is the period of the same kind just before.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import polars as pl
from aiohttp import web

from access.api import models, params
from access.api.problems import bad_param
from access.api.reads import Ask, Decided, decide_categories, read_all, read_pieces, record_served
from access.api.render import frame_columns, iso, json_response
from access.api.state import AppState, caller_of
from access.tariff import Tariff
from pipeline.derived import one_source
from pipeline.energy import CATEGORY_FIELDS, ELECTRIC, Summary, assign_flows, summarise, window_energy

TARIFF: web.AppKey[Tariff] = web.AppKey("hems_tariff", Tariff)
TOKYO: Final = ZoneInfo("Asia/Tokyo")
SPANS: Final = ("day", "week", "month")
HOUR: Final = timedelta(hours=1)
CATEGORIES: Final = tuple(CATEGORY_FIELDS)
LAST_STATE: Final = timedelta(minutes=30)  # how far back the "last state of charge" may lie
ROUND_WH: Final = 3


@dataclass(frozen=True)
class Period:
    span: str
    first_day: date
    last_day: date  # inclusive

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first_day, time(0), TOKYO).astimezone(UTC)

    @property
    def stop(self) -> datetime:
        return datetime.combine(self.last_day + timedelta(days=1), time(0), TOKYO).astimezone(UTC)

    def previous(self) -> Period:
        if self.span == "month":
            last = self.first_day - timedelta(days=1)
            return Period("month", last.replace(day=1), last)
        length = (self.last_day - self.first_day).days + 1
        return Period(self.span, self.first_day - timedelta(days=length), self.first_day - timedelta(days=1))


def _day(text: str) -> date:
    try:
        day = date.fromisoformat(text) if len(text) == 10 else None
    except ValueError:
        day = None
    if day is None or not 2000 <= day.year <= 2100:
        raise bad_param("date", "a day as YYYY-MM-DD (Tokyo), between 2000 and 2100")
    return day


def period_of(query: Any, now: datetime) -> Period:
    """``date`` (YYYY-MM-DD, a Tokyo day; default today) and ``span`` (day, week, month)."""
    span = query.get("span", "day")
    if span not in SPANS:
        raise bad_param("span", f"span is one of {', '.join(SPANS)}")
    text = query.get("date")
    day = now.astimezone(TOKYO).date() if text is None else _day(text)
    if span == "day":
        return Period(span, day, day)
    if span == "week":
        return Period(span, day - timedelta(days=6), day)
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return Period(span, first, following - timedelta(days=1))


async def _windows(state: AppState, household: str, decided: Decided, period: Period) -> pl.DataFrame:
    """The period's hourly energy from each counter's hourly last readings (and the hour before, the
    first hour's baseline), each served period read apart: a rise is never taken across a refused gap
    (a suspension, a link that ended and began again), where it would be the gap's energy."""
    cats = [c for c in CATEGORIES if c in decided.allowed]
    asks = [Ask(c, CATEGORY_FIELDS[c], period.start - HOUR, period.stop, HOUR, "last") for c in cats]
    read = await asyncio.gather(*(read_pieces(state, household, a, decided) for a in asks))
    return assign_flows(window_energy(dict(zip(cats, read, strict=True))))


async def _last_states(
    state: AppState, household: str, decided: Decided, period: Period
) -> models.LastStates:
    """The battery's and the EV's last reported state before the period's end (or now)."""
    end = min(period.stop, state.now_dt())
    wanted = {"battery": ("soc_pct",), "ev": ("soc_pct", "connected")}
    cats = [c for c in wanted if c in decided.allowed]
    frames = await read_all(
        state, household, [Ask(c, wanted[c], end - LAST_STATE, end) for c in cats], decided
    )
    out: models.LastStates = {"battery": None, "ev": None}
    for cat, df in zip(cats, frames, strict=True):
        soc = one_source(df, "soc_pct").sort("time")
        if soc.height == 0:
            continue
        last = soc.row(-1, named=True)
        item: models.LastState = {"soc_pct": round(float(last["soc_pct"]), 1), "time": iso(last["time"])}
        if cat == "ev":
            plugged = df.filter(pl.col("connected").is_not_null()).sort("time")
            item["connected"] = None if plugged.height == 0 else bool(plugged["connected"][-1])
            out["ev"] = item
        else:
            out["battery"] = item
    return out


def _summary_json(s: Summary, cost: models.EnergyCost) -> models.EnergyPeriod:
    wh = {q: round(s.totals[q], ROUND_WH) for q in (*ELECTRIC, "home", "unmetered")}
    totals: models.EnergyTotals = {
        "pv_wh": wh["pv"],
        "fuel_cell_wh": wh["fuel_cell"],
        "grid_import_wh": wh["grid_import"],
        "grid_export_wh": wh["grid_export"],
        "battery_charge_wh": wh["battery_charge"],
        "battery_discharge_wh": wh["battery_discharge"],
        "ev_charge_wh": wh["ev_charge"],
        "ev_discharge_wh": wh["ev_discharge"],
        "home_wh": wh["home"],
        "unmetered_wh": wh["unmetered"],
        "water_m3": round(s.totals["water"] / 1000.0, 6),
        "gas_m3": round(s.totals["gas"] / 1000.0, 6),
    }
    return {
        "totals": totals,
        "flows": [{"from": f.source, "to": f.sink, "wh": round(f.wh, ROUND_WH)} for f in s.flows],
        "balance": {
            "sources_wh": round(s.sources_wh, ROUND_WH),
            "sinks_wh": round(s.sinks_wh, ROUND_WH),
            "unmetered_wh": round(s.totals["unmetered"], ROUND_WH),
        },
        "self_consumption": None if s.self_consumption is None else round(s.self_consumption, 4),
        "self_sufficiency": None if s.self_sufficiency is None else round(s.self_sufficiency, 4),
        "cost": cost,
        "hours": s.windows,
    }


def _cost(priced: pl.DataFrame) -> models.EnergyCost:
    if priced.height == 0:
        return {"import_yen": 0.0, "export_yen": 0.0, "net_yen": 0.0, "bands": []}
    by_band = (
        priced.filter(pl.col("band").is_not_null())
        .group_by("band")
        .agg(pl.col("grid_import").sum().alias("wh"), pl.col("import_yen").sum().alias("yen"))
        .sort("band")
    )
    return {
        "import_yen": round(float(priced["import_yen"].sum()), 2),
        "export_yen": round(float(priced["export_yen"].sum()), 2),
        "net_yen": round(float(priced["net_yen"].sum()), 2),
        "bands": [
            {"band": r["band"], "import_kwh": round(r["wh"] / 1000.0, 3), "yen": round(r["yen"], 2)}
            for r in by_band.iter_rows(named=True)
        ],
    }


def hourly_rows(priced: pl.DataFrame) -> pl.DataFrame:
    """The hourly table the charts and the CSV share: Wh per quantity, m³ of water and gas, yen."""
    return priced.select(
        "time",
        *[pl.col(q).round(ROUND_WH).alias(f"{q}_wh") for q in (*ELECTRIC, "home", "unmetered")],
        (pl.col("water") / 1000.0).round(6).alias("water_m3"),
        (pl.col("gas") / 1000.0).round(6).alias("gas_m3"),
        "band",
        pl.col("import_yen").round(2),
        pl.col("export_yen").round(2),
        pl.col("net_yen").round(2),
    )


def csv_text(rows: pl.DataFrame) -> str:
    """The hourly rows with the hour's start in Tokyo time first (what a person reads) and in UTC."""
    local = pl.col("time").dt.convert_time_zone("Asia/Tokyo").dt.strftime("%Y-%m-%d %H:%M")
    utc = pl.col("time").dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return rows.select(
        local.alias("hour_start_jst"), utc.alias("hour_start_utc"), pl.exclude("time")
    ).write_csv()


async def energy(request: web.Request) -> web.Response:
    state, caller = caller_of(request)
    household = params.household_id(request.match_info["household"])
    purposes = params.declared_purposes(request.query, request.headers)
    period = period_of(request.query, state.now_dt())
    fmt = params.fmt(request.query.get("format"), request.headers.get("Accept"))
    if fmt == "arrow":
        raise bad_param("format", "the energy report comes as json or csv")
    before = period.previous()
    # Both periods (and the hour before each, the baseline of its first hour) are decided as one window.
    decided = decide_categories(
        state, caller, household, CATEGORIES, purposes, before.start - HOUR, period.stop
    )
    if not decided.allowed:
        raise decided.refused.get("electricity") or next(iter(decided.refused.values()))
    tariff = request.app[TARIFF]
    now_windows, prev_windows = (
        await _windows(state, household, decided, period),
        await _windows(state, household, decided, before),
    )
    priced, prev_priced = tariff.price(now_windows), tariff.price(prev_windows)
    rows = hourly_rows(priced)
    if fmt == "csv":
        text = csv_text(rows)
        # From the baseline hour: its last reading is the start of the first hour's rise.
        await record_served(state, caller, household, decided, CATEGORIES, period.start - HOUR, period.stop)
        name = f"hems-{household}-{period.span}-{period.last_day.isoformat()}.csv"
        return web.Response(
            text=text,
            content_type="text/csv",
            charset="utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    span: Any = period.span  # one of SPANS, checked by period_of
    body: models.EnergyReport = {
        "household": household,
        "purposes": {c: decided.purposes[c] for c in CATEGORIES if c in decided.purposes},
        "clause_ids": list(decided.clause_ids),
        "refused": {c: p.reason or p.code for c, p in sorted(decided.refused.items())},
        "time_zone": "Asia/Tokyo",
        "span": span,
        "first_day": period.first_day.isoformat(),
        "last_day": period.last_day.isoformat(),
        "start": iso(period.start),
        "stop": iso(period.stop),
        "tariff": tariff.describe(),
        **_summary_json(summarise(now_windows), _cost(priced)),
        "previous": {
            "first_day": before.first_day.isoformat(),
            "last_day": before.last_day.isoformat(),
            **_summary_json(summarise(prev_windows), _cost(prev_priced)),
        },
        "last_state": await _last_states(state, household, decided, period),
        "hourly": frame_columns(rows),
    }
    response = json_response(body)
    await record_served(state, caller, household, decided, CATEGORIES, before.start - HOUR, period.stop)
    return response
