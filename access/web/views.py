"""Server-rendered pages: sign-in and the installer's maintenance view (the homeowner's pages are
``access.web.home``; what every page shares is ``access.web.page``).

Every form that changes state carries the session's CSRF token, and the app refuses cross-origin
posts.  Times are shown in Asia/Tokyo.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

from aiohttp import web

from access.alerts import WebhookError, WebhookStore
from access.api.maintenance import RULES, WEBHOOKS, HomeStatus, installer_homes
from access.api.problems import ApiProblem
from access.api.state import STATE
from access.auth import (
    DEVICE_COOKIE,
    SESSION_COOKIE,
    Caller,
    SignInRefused,
    check_csrf,
    client_address,
    same_origin,
    set_device_cookie,
    set_session_cookie,
)
from access.maintenance import Problem
from access.web.home import SCRIPT_WORDS, add_home_routes
from access.web.i18n import MESSAGES, category_word, duration, energy, language, t, when
from access.web.page import e as _e
from access.web.page import figure, my_households, page, read_form, require, session, words_block

STATIC = Path(__file__).parent / "static"
INSTALLER_PURPOSE = "sps.pv_after_maintenance"


def _tabs(lang: str) -> str:
    return (
        f'<div class="tabs"><button data-span="1" class="on">{_e(t(lang, "today"))}</button>'
        f'<button data-span="7">{_e(t(lang, "days_7"))}</button>'
        f'<button data-span="30">{_e(t(lang, "days_30"))}</button></div>'
    )


# -- sign-in -----------------------------------------------------------------------------------------
async def login_form(request: web.Request, error: str = "", status: int = 401) -> web.Response:
    lang = language(request)
    keep = f"?lang={lang}" if "lang" in request.query else ""  # a chosen language survives sign-in
    msg = f'<p class="error" role="alert">{_e(error)}</p>' if error else ""
    body = (
        f'<form method="post" action="/login{keep}" class="card login">{msg}'
        f'<label>{_e(t(lang, "user"))} <input name="principal" autocomplete="username" required></label>'
        f'<label>{_e(t(lang, "password"))} <input type="password" name="password" '
        'autocomplete="current-password" required>'
        f'</label><button type="submit">{_e(t(lang, "sign_in"))}</button></form>'
    )
    resp = page(t(lang, "sign_in"), body, lang=lang, scripts=())
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
            form = await read_form(request)
        except ApiProblem:  # a body that is no form at all
            return await login_form(request, "send the sign-in form", status=400)
        principal, password = str(form.get("principal", ""))[:100], str(form.get("password", ""))[:200]
        sid, _session = await state.signin.attempt(
            principal,
            password,
            state.kind_of(principal),
            address,
            state.clock(),
            request.cookies.get(DEVICE_COOKIE),
        )
    except SignInRefused as refused:
        if refused.status in (429, 503):
            await state.signin.tarpit()
        resp = await login_form(request, str(refused), status=refused.status)
        if refused.retry_after_s is not None:
            resp.headers["Retry-After"] = str(max(1, math.ceil(refused.retry_after_s)))
        return resp
    lang = f"?lang={request.query['lang']}" if request.query.get("lang") in ("ja", "en") else ""
    resp = web.HTTPSeeOther(("/installer" if state.kind_of(principal) == "installer" else "/") + lang)
    set_session_cookie(resp, sid, state.secure_cookies, state.web.session_ttl_s)
    set_device_cookie(resp, state.signin.device_cookie(principal, state.clock()), state.secure_cookies)
    raise resp


async def logout(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    caller = session(request)
    if caller is not None and caller.csrf is not None:
        form = await read_form(request)
        check_csrf(request, caller.csrf, str(form.get("csrf", "")))
        state.web.sign_out(request.cookies.get(SESSION_COOKIE, ""))
    resp = web.HTTPSeeOther("/login")
    resp.del_cookie(SESSION_COOKIE, path="/")
    raise resp


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
    state, caller = require(request, "installer")
    lang = language(request)
    homes = await installer_homes(state, caller, request.app[RULES])
    now = state.now_dt()
    cards = "".join(_home_card(lang, s, now) for s in homes)
    body = (
        f'<section class="card"><h2>{_e(t(lang, "homes_attention"))}</h2>'
        f'<p class="muted">{_e(t(lang, "homes_note"))}</p><div class="homes">{cards}</div></section>'
        f"{webhook_section(request.app[WEBHOOKS], caller, lang)}"
    )
    return page(t(lang, "maintenance"), body, caller, lang, path=request.path)


async def installer_home(request: web.Request) -> web.StreamResponse:
    state, caller = require(request, "installer")
    lang = language(request)
    household = request.match_info["household"]
    homes = my_households(state, caller, "installer")
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
            f'{_tabs(lang)}<div class="charts">{figure("power-chart", t(lang, "power"))}'
            f"{figure('energy-chart', t(lang, 'energy_per_day'))}</div>"
            f'<p class="status muted" id="chart-status" role="status">{_e(t(lang, "loading"))}</p></section>'
            f"{words_block(lang, SCRIPT_WORDS)}"
        )
    body = (
        f'<p><a href="/installer?lang={lang}">{_e(t(lang, "back"))}</a></p>'
        f'<section class="card">{_home_card(lang, status, now, link=False)}</section>{charts}'
    )
    return page(t(lang, "maintenance"), body, caller, lang, path=request.path)


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
    state, caller = require(request, "installer")
    lang = language(request)
    form = await read_form(request)
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
    return page(t(lang, "webhook"), body, caller, lang, path="/installer")


def add_web_routes(app: web.Application) -> None:
    add_home_routes(app)
    app.router.add_get("/login", login_form, name="login_form")
    app.router.add_post("/login", login, name="login")
    app.router.add_post("/logout", logout, name="logout")
    app.router.add_get("/installer", installer, name="installer")
    app.router.add_post("/installer/webhook", webhook_form, name="webhook_form")
    app.router.add_get("/installer/{household}", installer_home, name="installer_home")
    app.router.add_static("/static", STATIC, name="static", append_version=False)
