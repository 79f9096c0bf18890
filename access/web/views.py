"""Server-rendered pages: sign-in, the homeowner's dashboard, the installer's maintenance view.

Pages carry no data of their own beyond what the server decided to show; charts fetch the JSON API
with the session cookie, and the installer's view reads through the same service as the API
(``access.api.reads``: decide, read only the served periods, record), so the same policy, periods
and ledger apply to a page as to a partner's script.
Every form that changes state carries the session's CSRF token, and the app refuses cross-origin
posts.  Times are shown in Asia/Tokyo.
"""

from __future__ import annotations

import html
import math
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from aiohttp import web

from access.alerts import WebhookError, WebhookStore
from access.api.maintenance import RULES, WEBHOOKS, HomeStatus, installer_homes
from access.api.problems import ApiProblem
from access.api.service import homeowner_periods, households_of, person_view
from access.api.state import STATE, AppState
from access.auth import (
    SESSION_COOKIE,
    Caller,
    SignInRefused,
    authenticate,
    check_csrf,
    client_address,
    same_origin,
    set_session_cookie,
)
from access.maintenance import Problem
from access.periods import contains
from access.web.i18n import MESSAGES, category_word, duration, energy, language, t, when
from access.web.ledger_head import ledger_head_section
from access.world import Suspension

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


def _page(
    title: str, body: str, caller: Caller | None = None, lang: str = "en", status: int = 200
) -> web.Response:
    nav = ""
    if caller is not None:
        nav = (
            f'<nav><span class="who">{_e(caller.principal)} ({_e(caller.kind.replace("_", " "))})</span>'
            '<form method="post" action="/logout">'
            f'<input type="hidden" name="csrf" value="{_e(caller.csrf)}">'
            f'<button type="submit">{_e(t(lang, "sign_out"))}</button></form></nav>'
        )
    csrf_meta = f'<meta name="csrf-token" content="{_e(caller.csrf)}">' if caller and caller.csrf else ""
    text = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{csrf_meta}<title>{_e(title)} - HEMS</title>"
        '<link rel="stylesheet" href="/static/style.css"></head><body>'
        f"<header><h1>{_e(title)}</h1>{nav}</header><main>{body}</main>"
        '<script src="/static/chart.umd.min.js"></script><script src="/static/app.js"></script>'
        "</body></html>"
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _session(request: web.Request) -> Caller | None:
    state = request.app[STATE]
    if "Authorization" in request.headers:
        return None  # pages are for browsers; tokens are for the API
    if not request.cookies.get(SESSION_COOKIE):
        return None
    return authenticate(request, state, required=False, form_csrf=True)


# -- sign-in -----------------------------------------------------------------------------------------
async def login_form(request: web.Request, error: str = "", status: int = 401) -> web.Response:
    msg = f'<p class="error" role="alert">{_e(error)}</p>' if error else ""
    body = (
        f'<form method="post" action="/login" class="card login">{msg}'
        '<label>User <input name="principal" autocomplete="username" required></label>'
        '<label>Password <input type="password" name="password" autocomplete="current-password" required>'
        '</label><button type="submit">Sign in</button></form>'
    )
    resp = _page("Sign in", body)
    if error:
        resp.set_status(status)
    return resp


async def login(request: web.Request) -> web.StreamResponse:
    """The form's side of ``access.auth.SignIn`` (throttle, hash off the loop, log)."""
    state = request.app[STATE]
    # No session yet, so no CSRF token: a cross-site sign-in is stopped by the Origin check.
    if not same_origin(request):
        raise ApiProblem(403, "csrf_refused", "cross-site request refused (Origin does not match)")
    address = client_address(request, state.trust_forwarded)
    try:
        state.signin.precheck(address)  # a flood is refused before its forms are read
        try:
            form = await request.post()
        except ValueError:  # a body that is no form at all
            return await login_form(request, "send the sign-in form", status=400)
        principal, password = str(form.get("principal", ""))[:100], str(form.get("password", ""))[:200]
        sid, _session = await state.signin.attempt(
            principal, password, state.kind_of(principal), address, state.clock()
        )
    except SignInRefused as refused:
        if refused.status in (429, 503):
            await state.signin.tarpit()
        resp = await login_form(request, str(refused), status=refused.status)
        if refused.retry_after_s is not None:
            resp.headers["Retry-After"] = str(max(1, math.ceil(refused.retry_after_s)))
        return resp
    resp = web.HTTPSeeOther("/installer" if state.kind_of(principal) == "installer" else "/")
    set_session_cookie(resp, sid, state.secure_cookies, state.web.session_ttl_s)
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


def _my_households(state: AppState, caller: Caller, role: str, *, former: bool = False) -> list[str]:
    """The households in which the caller holds ``role`` now (current ones first, in order), and with
    ``former`` a homeowner's former homes after them (their own period stays theirs to see)."""
    mine = [h for h, roles in households_of(state, caller.principal) if role in roles]
    t = state.clock()
    current = [
        h for h in mine if role != "homeowner" or contains(homeowner_periods(state, caller.principal, h), t)
    ]
    return current + ([h for h in mine if h not in current] if former else [])


def _whole_provision_suspensions(state: AppState, household: str, t: float) -> list[Suspension]:
    """The suspensions active at ``t`` of every provision of the household's data under the SPS terms
    (to any recipient, of any category): what the homeowner's switch shows and sets."""
    return [
        s
        for s in state.authz.consent.suspensions(household)
        if s.active(t)
        and s.scope == "provision"
        and s.recipient is None
        and s.category is None
        and s.company == "sps"
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
    own = _my_households(state, caller, "homeowner", former=True)
    if not own:
        return _page("My home", '<p class="card">No household is linked to you yet.</p>', caller)
    household = request.query.get("household", own[0])
    if household not in own:
        household = own[0]
    t = state.clock()
    suspended = bool(_whole_provision_suspensions(state, household, t))
    ledger = await state.ledger_for(household)
    mine = homeowner_periods(state, caller.principal, household)
    records = [v for r in ledger.records if (v := person_view(r, mine)) is not None][-50:][::-1]
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
        f'<section class="card"><h2>Who received your data</h2>{ledger_html}'
        f"{ledger_head_section(household, ledger, request.query.get('kept'))}</section>"
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
    if not state.identity_verified(caller):
        raise ApiProblem(
            403,
            "refused",
            "changing who receives your data needs a recent sign-in: sign out and in again",
            reason="identity_not_verified",
        )
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
def _reason_words(lang: str, reason: str) -> str:
    if reason.startswith("exception:"):
        return t(lang, "reason_exception", code=reason.split(":", 1)[1])
    key = f"reason_{reason}"
    return t(lang, key) if key in MESSAGES["en"] else reason


def problem_words(lang: str, p: Problem) -> str:
    """One problem as a sentence for the installer."""
    d = p.detail
    device = p.device or "-"
    category = category_word(lang, str(d.get("data", p.category)))
    if p.kind == "health":
        return t(lang, "kind_health", device=device, reason=_reason_words(lang, str(d.get("reason", ""))))
    if p.kind == "silent" and p.device is None:
        return t(lang, "kind_silent_collector")
    if p.kind == "silent":
        return t(lang, "kind_silent", device=device, category=category, gap="{gap}")
    if p.kind == "fault":
        state = f" ({d['state']})" if d.get("state") else ""
        return t(lang, "kind_fault", device=device, category=category, state=state)
    if p.kind == "low_yield":
        weather = t(lang, "weather_unknown") if d.get("weather") is None else t(lang, "weather_from_peers")
        return t(
            lang,
            "kind_low_yield",
            today=energy(float(d["today_wh"])),  # type: ignore[arg-type]
            expected=energy(float(d["expected_wh"])),  # type: ignore[arg-type]
            weather=weather,
        )
    if p.kind == "battery_idle":
        return t(lang, "kind_battery_idle", soc=f"{float(d['soc_pct']):.0f}")  # type: ignore[arg-type]
    if p.kind == "counter_stuck":
        return t(
            lang,
            "kind_counter_stuck",
            device=device,
            counter=str(d["counter"]),
            missing=energy(float(d["missing_wh"])),  # type: ignore[arg-type]
        )
    return p.kind


def _problem_item(lang: str, p: Problem, now: datetime) -> str:
    words = problem_words(lang, p).replace("{gap}", duration(lang, now - p.since))
    return (
        f'<li class="problem sev-{p.severity}" data-kind="{_e(p.kind)}" data-device="{_e(p.device or "")}">'
        f'<span class="badge">{_e(t(lang, f"severity_{p.severity}"))}</span> {_e(words)} '
        f'<span class="since">{_e(t(lang, "since"))} <time datetime="{_e(p.since.isoformat())}">'
        f"{_e(when(lang, p.since))}</time> ({_e(duration(lang, now - p.since))} {_e(t(lang, 'ago'))})"
        "</span></li>"
    )


def _home_card(lang: str, s: HomeStatus, now: datetime, link: bool = True) -> str:
    hid = _e(s.household)
    name = f'<a href="/installer/{hid}?lang={lang}">{hid}</a>' if link else hid
    if s.refusal is not None:
        return (
            f'<article class="home refused" data-household="{hid}"><h3>{name}</h3>'
            f'<p class="refusal">{_e(t(lang, "refused"))} ({_e(s.refusal.reason or s.refusal.code)}): '
            f"{_e(s.refusal.detail)}</p></article>"
        )
    worst = max((p.severity for p in s.problems), default=0)
    items = "".join(_problem_item(lang, p, now) for p in s.problems)
    body = (
        f'<ul class="problems">{items}</ul>' if items else f'<p class="ok">{_e(t(lang, "no_problems"))}</p>'
    )
    facts = []
    y = s.yield_
    if y is not None and y.today_wh is not None:
        line = f"{t(lang, 'pv_today')} {energy(y.today_wh)}"
        if y.expected_clear_wh:
            line += " " + t(lang, "of_clear_sky", expected=energy(y.expected_clear_wh))
        facts.append(line)
    if s.last_reading is not None:
        facts.append(f"{t(lang, 'last_reading')} {when(lang, s.last_reading)}")
    if s.not_visible:
        cats = ", ".join(category_word(lang, c) for c in s.not_visible)
        facts.append(t(lang, "not_visible", categories=cats))
    facts_html = "".join(f"<li>{_e(f)}</li>" for f in facts)
    return (
        f'<article class="home sev-{worst}" data-household="{hid}" data-severity="{worst}">'
        f'<h3>{name} <span class="badge">{_e(t(lang, f"severity_{worst}"))}</span></h3>'
        f'{body}<ul class="facts muted">{facts_html}</ul></article>'
    )


async def installer(request: web.Request) -> web.StreamResponse:
    state, caller = _require(request, "installer")
    lang = language(request)
    homes = await installer_homes(state, caller, request.app[RULES])
    now = state.now_dt()
    cards = "".join(_home_card(lang, s, now) for s in homes)
    body = (
        f'<section class="card"><h2>{_e(t(lang, "homes_attention"))}</h2>'
        f'<p class="muted">{_e(t(lang, "homes_note"))}</p><div class="homes">{cards}</div></section>'
        f"{webhook_section(request.app[WEBHOOKS], caller, lang)}"
    )
    return _page(t(lang, "maintenance"), body, caller, lang)


async def installer_home(request: web.Request) -> web.StreamResponse:
    state, caller = _require(request, "installer")
    lang = language(request)
    household = request.match_info["household"]
    homes = _my_households(state, caller, "installer")
    if household not in homes:
        raise ApiProblem(403, "refused", "no relationship gives you this household", reason="no_grant")
    (status,) = await installer_homes(state, caller, request.app[RULES], [household])
    now = state.now_dt()
    charts = ""
    if status.refusal is None:
        charts = (
            f'<section class="card" id="dashboard" data-household="{_e(household)}" '
            f'data-purpose="{INSTALLER_PURPOSE}" data-mode="installer" data-lang="{lang}">'
            f"<h2>{_e(t(lang, 'charts'))}</h2>"
            f'{TABS}<div class="charts">{_chart("power-chart", t(lang, "power"))}'
            f"{_chart('energy-chart', t(lang, 'energy_per_day'))}</div>"
            f'<p class="status muted" id="chart-status">{_e(t(lang, "loading"))}</p></section>'
        )
    body = (
        f'<p><a href="/installer?lang={lang}">{_e(t(lang, "back"))}</a></p>'
        f'<section class="card">{_home_card(lang, status, now, link=False)}</section>{charts}'
    )
    return _page(t(lang, "maintenance"), body, caller, lang)


def webhook_section(hooks: WebhookStore, caller: Caller, lang: str, secret: str | None = None) -> str:
    hook = hooks.get(caller.principal)
    now = t(lang, "webhook_none") if hook is None else t(lang, "webhook_set", url=hook.url)
    shown = (
        f'<p class="secret" role="status">{_e(t(lang, "webhook_secret", secret=secret))}</p>'
        if secret
        else ""
    )
    remove = (
        ""
        if hook is None
        else '<button type="submit" name="remove" value="1" class="secondary">'
        f"{_e(t(lang, 'webhook_remove'))}</button>"
    )
    return (
        f'<section class="card" id="webhook"><h2>{_e(t(lang, "webhook"))}</h2>'
        f'<p class="muted">{_e(t(lang, "webhook_note"))}</p><p>{_e(now)}</p>{shown}'
        f'<form method="post" action="/installer/webhook?lang={lang}" class="row">'
        f'<input type="hidden" name="csrf" value="{_e(caller.csrf)}">'
        f'<label>{_e(t(lang, "webhook_url"))} <input name="url" type="url" maxlength="500"></label>'
        f'<button type="submit">{_e(t(lang, "webhook_save"))}</button>{remove}</form></section>'
    )


async def webhook_form(request: web.Request) -> web.StreamResponse:
    state, caller = _require(request, "installer")
    lang = language(request)
    form = await request.post()
    assert caller.csrf is not None
    check_csrf(request, caller.csrf, str(form.get("csrf", "")))
    hooks = request.app[WEBHOOKS]
    if form.get("remove"):
        hooks.remove(caller.principal)
        raise web.HTTPSeeOther(f"/installer?lang={lang}#webhook")
    try:
        hook = hooks.put(caller.principal, str(form.get("url", "")).strip(), at=state.clock())
    except WebhookError as exc:
        raise ApiProblem(400, "bad_parameter", str(exc), field="url") from None
    body = webhook_section(hooks, caller, lang, secret=hook.secret)
    return _page(t(lang, "webhook"), body, caller, lang)


def add_web_routes(app: web.Application) -> None:
    app.router.add_get("/", home, name="home")
    app.router.add_get("/login", login_form, name="login_form")
    app.router.add_post("/login", login, name="login")
    app.router.add_post("/logout", logout, name="logout")
    app.router.add_post("/household/{household}/provision", provision_form, name="provision_form")
    app.router.add_get("/installer", installer, name="installer")
    app.router.add_post("/installer/webhook", webhook_form, name="webhook_form")
    app.router.add_get("/installer/{household}", installer_home, name="installer_home")
    app.router.add_static("/static", STATIC, name="static", append_version=False)
