"""The installer's homes and their open problems: gathered once for the view, the alerts API and the
webhook sender.

Reading a home for maintenance is a provision to the installer (SPS 2(2)[4], purpose
``sps.pv_after_maintenance``): every category is decided on its own, and one ledger record per home
lists what was served.  A home whose data the installer may not see now (the homeowner suspended
provision, the relationship ended) is listed with the refusal instead of problems.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import aiohttp
import polars as pl
from aiohttp import web

from access.alerts import Webhook, WebhookStore, payload, sign
from access.api import models, params
from access.api.problems import ApiProblem, bad_param
from access.api.reads import Ask, Decided, decide_categories, read_all, read_pieces, record_served
from access.api.render import iso, json_response
from access.api.service import households_of
from access.api.state import AppState, Caller, caller_of
from access.maintenance import (
    HOURLY_FIELDS,
    LIVE_FIELDS,
    HomeData,
    Problem,
    Rules,
    Yield,
    find_problems,
    pv_yield,
    rank_homes,
    weather_proxy,
)
from seeds.vocabulary import STATUS_CATEGORY

MAINTENANCE_PURPOSE = "sps.pv_after_maintenance"
HEALTH_FIELDS = ("health", "health_since_s")
CATEGORIES = (*LIVE_FIELDS, STATUS_CATEGORY)
HISTORY_2D = timedelta(days=2)
log = logging.getLogger(__name__)


@dataclass
class HomeStatus:
    household: str
    problems: list[Problem] = field(default_factory=list)
    refusal: ApiProblem | None = None
    not_visible: tuple[str, ...] = ()  # categories refused while others were served
    yield_: Yield | None = None
    last_reading: datetime | None = None
    decided: Decided | None = None


def _merge(frames: list[pl.DataFrame]) -> pl.DataFrame:
    keys = ["time", "household", "device"]
    out = frames[0]
    for other in frames[1:]:
        out = out.join(other, on=keys, how="full", coalesce=True)
    return out.sort(keys)


async def _gather(
    state: AppState, caller: Caller, household: str, now: datetime, rules: Rules, record: bool
) -> tuple[HomeData | None, Decided]:
    # Decided over the longest look the page takes; each read below is clipped to what is served.
    longest = max(rules.history, HISTORY_2D, rules.recent)
    decided = decide_categories(state, caller, household, CATEGORIES, MAINTENANCE_PURPOSE, now - longest, now)
    if not decided.allowed:
        return None, decided
    recent_start = now - rules.recent
    asks: list[Ask] = []
    for category, fields in LIVE_FIELDS.items():
        if category in decided.allowed:
            asks.append(Ask(category, fields, recent_start, now))
    if STATUS_CATEGORY in decided.allowed:
        # The last health report may predate the recent window when nothing changed: a longer look.
        asks.append(Ask(STATUS_CATEGORY, HEALTH_FIELDS, now - HISTORY_2D, now))
    hourly_asks: list[Ask] = []
    for category, fields in HOURLY_FIELDS.items():
        if category not in decided.allowed:
            continue
        span = rules.history if category == "pv" else HISTORY_2D
        hour = timedelta(hours=1)
        hourly_asks.append(Ask(category, ("power_w",), now - span, now, hour, "mean"))
        hourly_asks.append(
            Ask(category, tuple(f for f in fields if f != "power_w"), now - span, now, hour, "last")
        )
    # The hourly totals are read one served period at a time (``read_pieces``): today's yield is taken
    # within each, never across a refused gap.
    lasts = hourly_asks[1::2]
    frames = await read_all(state, household, asks + hourly_asks[::2], decided)
    pieces = await asyncio.gather(*(read_pieces(state, household, a, decided) for a in lasts))
    home = HomeData(household)
    for ask, df in zip(asks, frames[: len(asks)], strict=True):
        if ask.category == STATUS_CATEGORY:
            home.health = df
        else:
            home.recent[ask.category] = df
    for ask, power, totals in zip(lasts, frames[len(asks) :], pieces, strict=True):
        home.hourly[ask.category] = _merge([power, totals.drop("piece")])
        home.totals[ask.category] = totals
    if record:
        await record_served(state, caller, household, decided, CATEGORIES, now - rules.history, now)
    return home, decided


async def installer_homes(
    state: AppState,
    caller: Caller,
    rules: Rules,
    households: list[str] | None = None,
    *,
    record: bool = True,
) -> list[HomeStatus]:
    """The caller's installations (or ``households`` among them), ranked by what needs attention.
    ``record=False``: the caller records what it passes on itself (the webhook sender)."""
    mine = [h for h, roles in households_of(state, caller.principal) if "installer" in roles]
    wanted = mine if households is None else [h for h in mine if h in households]
    now = state.now_dt()
    gathered = await asyncio.gather(*(_gather(state, caller, h, now, rules, record) for h in wanted))
    yields: dict[str, Yield] = {}
    homes: dict[str, HomeData] = {}
    statuses: dict[str, HomeStatus] = {}
    for household, (home, decided) in zip(wanted, gathered, strict=True):
        if home is None:
            refusal = decided.refused.get("pv") or next(iter(decided.refused.values()))
            statuses[household] = HomeStatus(household, refusal=refusal)
            continue
        homes[household] = home
        yields[household] = pv_yield(home, now)
        statuses[household] = HomeStatus(
            household, not_visible=tuple(sorted(decided.refused)), decided=decided
        )
    ratios = {h: y.ratio for h, y in yields.items()}
    for household, home in homes.items():
        weather = weather_proxy((r for h, r in ratios.items() if h != household), rules.weather_peers)
        status = statuses[household]
        status.yield_ = yields[household]
        status.problems = find_problems(home, now, rules, weather, yields[household])
        lasts = [df["time"].max() for df in home.recent.values() if df.height]
        status.last_reading = max((t for t in lasts if isinstance(t, datetime)), default=None)
    order = rank_homes({h: s.problems for h, s in statuses.items() if s.refusal is None})
    refused = sorted(h for h, s in statuses.items() if s.refusal is not None)
    return [statuses[h] for h in order + refused]


def problem_json(p: Problem) -> models.AlertProblem:
    return {
        "key": p.key,
        "household": p.household,
        "device": p.device,
        "category": p.category,
        "kind": p.kind,
        "severity": p.severity,
        "since": iso(p.since),
        "detail": dict(p.detail),
    }


async def alerts(request: web.Request) -> web.Response:
    """``GET /api/v1/alerts``: the open problems of the caller's installations, worst first."""
    state, caller = caller_of(request)
    purpose = params.declared_purpose(request.query, request.headers)
    if purpose != MAINTENANCE_PURPOSE:
        raise bad_param("purpose", f"alerts serve after-sales maintenance ({MAINTENANCE_PURPOSE})")
    rules: Rules = request.app[RULES]
    homes = await installer_homes(state, caller, rules)
    body: models.Alerts = {
        "principal": caller.principal,
        "purpose": purpose,
        "at": iso(state.now_dt()),
        "problems": [problem_json(p) for s in homes for p in s.problems],
        "refused": [
            {"household": s.household, "reason": s.refusal.reason or "", "detail": s.refusal.detail}
            for s in homes
            if s.refusal is not None
        ],
    }
    return json_response(body)


RULES: web.AppKey[Rules] = web.AppKey("hems_maintenance_rules", Rules)
WEBHOOKS: web.AppKey[WebhookStore] = web.AppKey("hems_webhooks", WebhookStore)
RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)


async def deliver(session: aiohttp.ClientSession, hook: Webhook, body: bytes) -> bool:
    """POST ``body`` signed; True once a 2xx came back, after up to ``len(RETRY_DELAYS_S) + 1`` tries."""
    for attempt, pause in enumerate((0.0, *RETRY_DELAYS_S)):
        await asyncio.sleep(pause)
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Hems-Timestamp": stamp,
            "X-Hems-Signature": sign(hook.secret, stamp, body),
        }
        try:
            async with session.post(hook.url, data=body, headers=headers, allow_redirects=False) as r:
                if 200 <= r.status < 300:
                    return True
                log.warning("webhook of %s answered %d (try %d)", hook.principal, r.status, attempt + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("webhook of %s failed (try %d): %s", hook.principal, attempt + 1, exc)
    return False


async def notify_once(
    state: AppState, rules: Rules, hooks: WebhookStore, session: aiohttp.ClientSession
) -> int:
    """One round: for each webhook, tell what opened or cleared since it was last told.  Returns the
    number of deliveries made."""
    sent = 0
    for hook in hooks.all():
        kind = state.kind_of(hook.principal)
        if kind is None:
            continue
        caller = Caller(
            hook.principal, kind, "webhook", frozenset({MAINTENANCE_PURPOSE}), f"webhook:{hook.principal}"
        )
        homes = await installer_homes(state, caller, rules, record=False)
        current = {p.key: p for s in homes for p in s.problems}
        told = hooks.told_open(hook.principal)
        opened = sorted(k for k in current if k not in told)
        cleared = sorted(k for k in told if k not in current)
        if not opened and not cleared:
            continue
        body = payload(
            hook.principal, iso(state.now_dt()), [dict(problem_json(current[k])) for k in opened], cleared
        )
        if not await deliver(session, hook, body):
            state.metrics.refusals["webhook_failed"] += 1
            continue
        now = state.now_dt()
        touched = {current[k].household for k in opened} | {k.split("/", 1)[0] for k in cleared}
        for s in homes:
            if s.household in touched and s.decided is not None:
                await record_served(
                    state,
                    caller,
                    s.household,
                    s.decided,
                    CATEGORIES,
                    now - rules.history,
                    now,
                )
        hooks.mark_told(hook.principal, opened, cleared, state.clock())
        sent += 1
    return sent


async def alert_loop(state: AppState, rules: Rules, hooks: WebhookStore, every_s: float) -> None:
    """Run ``notify_once`` every ``every_s`` seconds until cancelled, when this process is the one of
    all replicas that sends (``WebhookStore.sends``); a failing round is logged."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            try:
                if hooks.sends():
                    await notify_once(state, rules, hooks, session)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert round failed")
            await asyncio.sleep(every_s)
