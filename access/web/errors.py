"""Errors on the web pages as pages: a person in a browser gets words in their language and a way
back, not a problem+json body (the API under ``/api/`` keeps problem+json for programs)."""

from __future__ import annotations

import html

from aiohttp import web

from access.api.problems import ApiProblem
from access.web.i18n import language, t

_MACHINE_PATHS = ("/api/", "/healthz", "/readyz", "/metrics", "/static/")


def wants_page(request: web.Request) -> bool:
    return not request.path.startswith(_MACHINE_PATHS)


def error_page(request: web.Request, problem: ApiProblem) -> web.Response:
    lang = language(request)
    title = f"{t(lang, 'error')} {problem.status}"
    text = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{html.escape(title)} - HEMS</title><link rel="stylesheet" href="/static/style.css"></head>'
        f'<body><header><h1>{html.escape(title)}</h1></header><main><section class="card" role="alert">'
        f'<p class="error" data-code="{html.escape(problem.code)}">{html.escape(problem.detail)}</p>'
        f'<p><a href="/?lang={lang}">{html.escape(t(lang, "error_back"))}</a></p>'
        "</section></main></body></html>"
    )
    return web.Response(
        text=text, status=problem.status, content_type="text/html", charset="utf-8", headers=problem.headers
    )
