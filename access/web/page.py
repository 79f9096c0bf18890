"""What every web page shares: the frame (header, navigation, language switch, scripts), the session
of the person looking, and escaping.

Pages carry no data of their own beyond what the server decided to show; charts fetch the JSON API
with the session cookie, so the same policy and ledger apply to a chart as to a partner's script.
Every form that changes state carries the session's CSRF token.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable

from aiohttp import web
from multidict import MultiDictProxy

from access.api.problems import ApiProblem
from access.api.service import homeowner_periods, households_of
from access.api.state import STATE, AppState
from access.auth import SESSION_COOKIE, Caller, authenticate
from access.periods import contains
from access.web.i18n import t

HOMEOWNER_TABS = (("/", "tab_energy"), ("/ledger", "tab_ledger"), ("/erasure", "tab_erasure"))


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


async def read_form(request: web.Request) -> MultiDictProxy[str | bytes | bytearray | web.FileField]:
    """The posted form, or a 400: a body that is no form, or one in a charset Python has no codec for
    (aiohttp lets the ``LookupError`` out, which would be a 500 with a traceback)."""
    try:
        return await request.post()
    except (ValueError, LookupError):
        raise ApiProblem(400, "bad_body", "send the page's form") from None


def figure(chart_id: str, caption: str, extra: str = "") -> str:
    """A chart's place: a canvas named by its caption (for screen readers), ``extra`` below it."""
    return (
        f'<figure><figcaption id="{chart_id}-caption">{e(caption)}</figcaption>'
        f'<div class="plot"><canvas id="{chart_id}" role="img" aria-labelledby="{chart_id}-caption">'
        f"</canvas></div>{extra}</figure>"
    )


def words_block(lang: str, keys: Iterable[str]) -> str:
    """The words a page's script needs, as a JSON data block (not executed, so the CSP allows it)."""
    words = {k: t(lang, k) for k in keys}
    text = json.dumps(words, ensure_ascii=False).replace("</", "<\\/")
    return f'<script type="application/json" id="words">{text}</script>'


def page(
    title: str,
    body: str,
    caller: Caller | None = None,
    lang: str = "en",
    status: int = 200,
    *,
    path: str = "",
    query: str = "",
    scripts: tuple[str, ...] = ("chart.umd.min.js", "app.js"),
) -> web.Response:
    """A whole page.  ``path``: the page's own path, for the homeowner's tabs and the language switch
    (``query``: its other parameters, kept when switching language)."""
    nav = ""
    if caller is not None:
        tabs = ""
        if caller.kind == "homeowner":
            current = ' aria-current="page"'
            tabs = "".join(
                f'<a href="{href}?lang={lang}"{current if href == path else ""}>{e(t(lang, key))}</a>'
                for href, key in HOMEOWNER_TABS
            )
            tabs = f'<div class="tabs-nav">{tabs}</div>'
        other = "en" if lang == "ja" else "ja"
        switch = (
            f'<a class="lang" hreflang="{other}" lang="{other}" href="{e(path or "/")}?{e(query)}'
            f'{"&amp;" if query else ""}lang={other}">{e(t(other, "language_name"))}</a>'
        )
        nav = (
            f'<nav aria-label="{e(t(lang, "menu"))}">{tabs}{switch}'
            f'<span class="who">{e(caller.principal)}</span>'
            '<form method="post" action="/logout">'
            f'<input type="hidden" name="csrf" value="{e(caller.csrf)}">'
            f'<button type="submit" class="secondary">{e(t(lang, "sign_out"))}</button></form></nav>'
        )
    csrf_meta = f'<meta name="csrf-token" content="{e(caller.csrf)}">' if caller and caller.csrf else ""
    tags = "".join(f'<script src="/static/{name}"></script>' for name in scripts)
    text = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"{csrf_meta}<title>{e(title)} - HEMS</title>"
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/style.css"></head><body>'
        f"<header><h1>{e(title)}</h1>{nav}</header><main>{body}</main>{tags}</body></html>"
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def session(request: web.Request) -> Caller | None:
    state = request.app[STATE]
    if "Authorization" in request.headers:
        return None  # pages are for browsers; tokens are for the API
    if not request.cookies.get(SESSION_COOKIE):
        return None
    return authenticate(request, state, required=False, form_csrf=True)


def require(request: web.Request, kind: str | None = None) -> tuple[AppState, Caller]:
    """The page's state and the signed-in person (else to the sign-in page); ``kind``: only them."""
    state = request.app[STATE]
    caller = session(request)
    if caller is None:
        raise web.HTTPSeeOther("/login")
    if kind is not None and caller.kind != kind:
        raise ApiProblem(403, "refused", f"this page is for {kind}s", reason="wrong_kind")
    return state, caller


def my_households(state: AppState, caller: Caller, role: str, *, former: bool = False) -> list[str]:
    """The households in which the caller holds ``role`` now (current ones first, in order), and with
    ``former`` a homeowner's former homes after them (their own period stays theirs to see)."""
    mine = [h for h, roles in households_of(state, caller.principal) if role in roles]
    t = state.clock()
    current = [
        h for h in mine if role != "homeowner" or contains(homeowner_periods(state, caller.principal, h), t)
    ]
    return current + ([h for h in mine if h not in current] if former else [])
