"""Server-rendered pages: sign-in, the homeowner's dashboard, the installer's maintenance view.

Pages carry no data of their own beyond what the server decided to show; charts fetch the JSON API
with the session cookie, so the same policy and ledger apply to a chart as to a partner's script.
Every form that changes state carries the session's CSRF token, and the app refuses cross-origin
posts.  Times are shown in Asia/Tokyo.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
from aiohttp import web

from access.api.problems import ApiProblem
from access.api.service import decide, households_of, query, series_query
from access.api.state import (
    SESSION_COOKIE,
    STATE,
    AppState,
    Caller,
    authenticate,
    check_csrf,
    rate_limit,
)
from access.auth import AuthError
from access.consent import SuspensionRecord
from common.sun import clear_sky_fraction, expected_wh

STATIC = Path(__file__).parent / "static"
TOKYO = ZoneInfo("Asia/Tokyo")
HOMEOWNER_PURPOSE = "sps.disclosure_to_person"
INSTALLER_PURPOSE = "sps.pv_after_maintenance"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _local(ts: datetime | float) -> str:
    dt = datetime.fromtimestamp(ts, UTC) if isinstance(ts, float | int) else ts
    return dt.astimezone(TOKYO).strftime("%Y-%m-%d %H:%M JST")


TABS = (
    '<div class="tabs"><button data-span="1" class="on">Today</button>'
    '<button data-span="7">7 days</button><button data-span="30">30 days</button></div>'
)


def _chart(chart_id: str, caption: str) -> str:
    return (
        f"<figure><figcaption>{_e(caption)}</figcaption>"
        f'<div class="plot"><canvas id="{chart_id}"></canvas></div></figure>'
    )


def _page(title: str, body: str, caller: Caller | None = None) -> web.Response:
    nav = ""
    if caller is not None:
        nav = (
            f'<nav><span class="who">{_e(caller.principal)} ({_e(caller.kind.replace("_", " "))})</span>'
            '<form method="post" action="/logout">'
            f'<input type="hidden" name="csrf" value="{_e(caller.csrf)}">'
            '<button type="submit">Sign out</button></form></nav>'
        )
    csrf_meta = f'<meta name="csrf-token" content="{_e(caller.csrf)}">' if caller and caller.csrf else ""
    text = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{csrf_meta}<title>{_e(title)} - HEMS</title>"
        '<link rel="stylesheet" href="/static/style.css"></head><body>'
        f"<header><h1>{_e(title)}</h1>{nav}</header><main>{body}</main>"
        '<script src="/static/chart.umd.min.js"></script><script src="/static/app.js"></script>'
        "</body></html>"
    )
    return web.Response(text=text, content_type="text/html", charset="utf-8")


def _session(request: web.Request) -> Caller | None:
    state = request.app[STATE]
    if "Authorization" in request.headers:
        return None  # pages are for browsers; tokens are for the API
    if not request.cookies.get(SESSION_COOKIE):
        return None
    return authenticate(request, state, required=False, form_csrf=True)


# -- sign-in -----------------------------------------------------------------------------------------
async def login_form(request: web.Request, error: str = "") -> web.Response:
    msg = f'<p class="error" role="alert">{_e(error)}</p>' if error else ""
    body = (
        f'<form method="post" action="/login" class="card login">{msg}'
        '<label>User <input name="principal" autocomplete="username" required></label>'
        '<label>Password <input type="password" name="password" autocomplete="current-password" required>'
        '</label><button type="submit">Sign in</button></form>'
    )
    resp = _page("Sign in", body)
    if error:
        resp.set_status(401)
    return resp


async def login(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    # No session yet, so no CSRF token: a cross-site sign-in is stopped by the Origin check.
    origin = request.headers.get("Origin")
    if origin is not None and origin.split("://", 1)[-1] != request.host:
        raise ApiProblem(403, "csrf_refused", "cross-site request refused (Origin does not match)")
    form = await request.post()
    principal, password = str(form.get("principal", ""))[:100], str(form.get("password", ""))[:200]
    # Guessing is slowed per account name, whichever address it comes from.
    rate_limit(state, f"login:{principal}", "too many sign-in attempts; wait and retry")
    kind = state.kind_of(principal)
    try:
        if kind not in ("homeowner", "installer"):
            raise AuthError("unknown user or wrong password")
        sid, _session = state.web.sign_in(principal, password, at=state.clock())
    except AuthError as exc:
        return await login_form(request, str(exc))
    resp = web.HTTPSeeOther("/installer" if kind == "installer" else "/")
    resp.set_cookie(
        SESSION_COOKIE,
        sid,
        httponly=True,
        samesite="Strict",
        secure=state.secure_cookies,
        path="/",
        max_age=int(state.web.session_ttl_s),
    )
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    caller = _session(request)
    if caller is not None and caller.csrf is not None:
        form = await request.post()
        check_csrf(request, caller.csrf, str(form.get("csrf", "")))
        state.web.sign_out(request.cookies.get(SESSION_COOKIE, ""))
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp


def _require(request: web.Request, kind: str | None = None) -> tuple[AppState, Caller]:
    state = request.app[STATE]
    caller = _session(request)
    if caller is None:
        raise web.HTTPSeeOther("/login")
    if kind is not None and caller.kind != kind:
        raise ApiProblem(403, "refused", f"this page is for {kind}s", reason="wrong_kind")
    return state, caller


def _my_households(state: AppState, caller: Caller, role: str) -> list[str]:
    """The households in which the caller holds ``role`` now, in order."""
    return [h for h, roles in households_of(state, caller.principal) if role in roles]


def _whole_provision_suspensions(state: AppState, household: str, t: float) -> list[SuspensionRecord]:
    """The suspensions active at ``t`` of every provision of the household's data (to any recipient,
    of any category): what the homeowner's switch shows and sets."""
    return [
        s
        for s in state.authz.consent.suspensions(household)
        if s.active(t) and s.scope == "provision" and s.recipient is None and s.category is None
    ]


# -- homeowner -----------------------------------------------------------------------------------------
async def home(request: web.Request) -> web.StreamResponse:
    state, caller = _require(request)
    if caller.kind == "installer":
        raise web.HTTPSeeOther("/installer")
    if caller.kind != "homeowner":
        raise ApiProblem(
            403, "refused", "the web views are for homeowners and installers", reason="wrong_kind"
        )
    own = _my_households(state, caller, "homeowner")
    if not own:
        return _page("My home", '<p class="card">No household is linked to you yet.</p>', caller)
    household = request.query.get("household", own[0])
    if household not in own:
        household = own[0]
    t = state.clock()
    suspended = bool(_whole_provision_suspensions(state, household, t))
    records = (await state.ledger_for(household))[-50:][::-1]
    rows = "".join(
        f"<tr><td>{_e(_local(r.at))}</td><td>{_e(r.recipient)}</td><td>{_e(', '.join(r.categories))}</td>"
        f"<td>{_e(_local(r.period_start))} - {_e(_local(r.period_end))}</td><td>{_e(r.purpose)}</td>"
        f"<td>{_e(', '.join(r.clause_ids))}</td></tr>"
        for r in records
    )
    ledger_html = (
        '<table class="ledger"><thead><tr><th>When</th><th>Recipient</th><th>Data</th><th>Period</th>'
        f"<th>Purpose</th><th>Clause</th></tr></thead><tbody>{rows}</tbody></table>"
        if records
        else '<p class="muted">No company has received your data.</p>'
    )
    state_words = "suspended" if suspended else "allowed"
    toggle = (
        f'<form method="post" action="/household/{_e(household)}/provision" class="switch">'
        f'<input type="hidden" name="csrf" value="{_e(caller.csrf)}">'
        f'<input type="hidden" name="suspended" value="{"false" if suspended else "true"}">'
        f'<p>Provision of your data to partner companies is <strong id="provision-state">{state_words}'
        f'</strong>.</p><button type="submit" id="provision-toggle">'
        f"{'Resume provision' if suspended else 'Suspend provision'}</button></form>"
    )
    body = (
        f'<section class="card" id="dashboard" data-household="{_e(household)}" '
        f'data-purpose="{HOMEOWNER_PURPOSE}" data-mode="homeowner">'
        f"<h2>Household {_e(household)}</h2>"
        f'{TABS}<div class="charts">{_chart("power-chart", "Power (W)")}'
        f"{_chart('energy-chart', 'Energy per day')}{_chart('flow-chart', 'Water and gas per day (L)')}"
        '</div><p class="status muted" id="chart-status">Loading...</p></section>'
        f'<section class="card"><h2>Sharing</h2>{toggle}</section>'
        f'<section class="card"><h2>Who received your data</h2>{ledger_html}</section>'
    )
    return _page("My home", body, caller)


async def provision_form(request: web.Request) -> web.StreamResponse:
    state, caller = _require(request, "homeowner")
    form = await request.post()
    assert caller.csrf is not None
    check_csrf(request, caller.csrf, str(form.get("csrf", "")))
    household = request.match_info["household"]
    own = _my_households(state, caller, "homeowner")
    if household not in own:
        raise ApiProblem(403, "refused", "not your household", reason="no_grant")
    want = str(form.get("suspended", "")) == "true"
    consent = state.authz.consent
    t = state.clock()
    matching = _whole_provision_suspensions(state, household, t)
    if want and not matching:
        consent.suspend(household, "provision", at=t)
    elif not want:
        for s in matching:
            consent.lift(s.id, at=t)
    raise web.HTTPSeeOther(f"/?household={household}")


# -- installer -----------------------------------------------------------------------------------------
async def _maintenance_row(state: AppState, caller: Caller, household: str) -> str:
    link = f'<a href="/installer/{_e(household)}">{_e(household)}</a>'
    now = state.now_dt()
    try:
        pv_ok = decide(state, caller, household, "pv", "read", INSTALLER_PURPOSE)
    except ApiProblem as p:
        return (
            f'<tr class="refused"><td>{link}</td><td colspan="5" class="refusal">Refused '
            f"({_e(p.reason or p.code)}): {_e(p.detail)}</td></tr>"
        )
    day_start = now.astimezone(TOKYO).replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)
    month = now - timedelta(days=30)
    hourly = await query(
        state,
        series_query(
            (household,), "pv", ("power_w", "energy_wh_total", "fault"), month, now, timedelta(hours=1), "max"
        ),
    )
    recent = await query(
        state, series_query((household,), "pv", ("power_w",), now - timedelta(hours=2), now, None, "mean")
    )
    await state.record_provision(
        caller.principal,
        household,
        ("pv",),
        month.timestamp(),
        now.timestamp(),
        INSTALLER_PURPOSE,
        pv_ok.decision.clause_ids,
    )
    battery_fault = "n/a"
    try:
        bat_ok = decide(state, caller, household, "battery", "read", INSTALLER_PURPOSE)
        bat = await query(
            state,
            series_query(
                (household,),
                "battery",
                ("fault", "soc_pct"),
                now - timedelta(hours=24),
                now,
                timedelta(hours=1),
                "max",
            ),
        )
        await state.record_provision(
            caller.principal,
            household,
            ("battery",),
            (now - timedelta(hours=24)).timestamp(),
            now.timestamp(),
            INSTALLER_PURPOSE,
            bat_ok.decision.clause_ids,
        )
        battery_fault = "FAULT" if bat["fault"].fill_null(False).any() else "ok"
    except ApiProblem as p:
        battery_fault = f"refused ({p.reason})"
    last = _e(_local(recent["time"].max())) if recent.height else "none in 2 h"  # type: ignore[arg-type]
    today = hourly.filter(pl.col("time") >= day_start)
    totals = today["energy_wh_total"].drop_nulls()
    before = hourly.filter(pl.col("time") < day_start)["energy_wh_total"].drop_nulls()
    base = before[-1] if len(before) else (totals[0] if len(totals) else None)
    yield_wh = float(totals[-1] - base) if len(totals) and base is not None else None
    ratios = [
        float(p) / f
        for ts, p in zip(hourly["time"], hourly["power_w"], strict=True)
        if p is not None and (f := clear_sky_fraction(ts + timedelta(minutes=30))) > 0.2
    ]
    capacity = max(ratios) if ratios else None
    expected = expected_wh(capacity, day_start, now) if capacity else None
    ratio = f"{yield_wh / expected:.0%}" if yield_wh is not None and expected else "n/a"
    inverter = (
        "FAULT"
        if hourly.filter(pl.col("time") >= now - timedelta(hours=24))["fault"].fill_null(False).any()
        else "ok"
    )
    return (
        f"<tr><td>{link}</td><td>{last}</td>"
        f"<td>{'n/a' if yield_wh is None else f'{yield_wh / 1000:.1f} kWh'}"
        f"{'' if expected is None else f' / {expected / 1000:.1f} kWh'}</td><td>{ratio}</td>"
        f'<td class="{inverter.lower()}">{inverter}</td><td class="{battery_fault.split(" ")[0].lower()}">'
        f"{_e(battery_fault)}</td></tr>"
    )


async def installer(request: web.Request) -> web.StreamResponse:
    state, caller = _require(request, "installer")
    homes = _my_households(state, caller, "installer")
    rows = "".join([await _maintenance_row(state, caller, h) for h in homes])
    body = (
        '<section class="card"><h2>Your installations</h2>'
        '<p class="muted">Yield today against the clear-sky expectation for the date and hour in Tokyo '
        "(the array size is estimated from its best hours of the last 30 days; weather is not known, so "
        "a cloudy day reads low). Each row you view is recorded in the household's provision ledger.</p>"
        '<table class="maintenance"><thead><tr><th>Household</th><th>Last reading</th><th>PV today / '
        "expected</th><th>Ratio</th><th>Inverter</th><th>Battery</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )
    return _page("Maintenance", body, caller)


async def installer_home(request: web.Request) -> web.StreamResponse:
    state, caller = _require(request, "installer")
    household = request.match_info["household"]
    homes = _my_households(state, caller, "installer")
    if household not in homes:
        raise ApiProblem(403, "refused", "no relationship gives you this household", reason="no_grant")
    body = (
        f'<section class="card" id="dashboard" data-household="{_e(household)}" '
        f'data-purpose="{INSTALLER_PURPOSE}" data-mode="installer">'
        f'<h2>Household {_e(household)}</h2><p><a href="/installer">Back to the list</a></p>'
        f'{TABS}<div class="charts">{_chart("power-chart", "Power (W)")}'
        f"{_chart('energy-chart', 'Energy per day')}</div>"
        '<p class="status muted" id="chart-status">Loading...</p></section>'
    )
    return _page("Maintenance", body, caller)


def add_web_routes(app: web.Application) -> None:
    app.router.add_get("/", home, name="home")
    app.router.add_get("/login", login_form, name="login_form")
    app.router.add_post("/login", login, name="login")
    app.router.add_post("/logout", logout, name="logout")
    app.router.add_post("/household/{household}/provision", provision_form, name="provision_form")
    app.router.add_get("/installer", installer, name="installer")
    app.router.add_get("/installer/{household}", installer_home, name="installer_home")
    app.router.add_static("/static", STATIC, name="static", append_version=False)
