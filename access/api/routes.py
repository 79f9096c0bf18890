"""The ``/api/v1`` handlers and the operational endpoints (``/healthz``, ``/readyz``, ``/metrics``)."""

from __future__ import annotations

import ipaddress
import os
import re
import time
from datetime import timedelta
from typing import Any

import polars as pl
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from access.api import models, params
from access.api.energy import energy
from access.api.maintenance import alerts
from access.api.openapi import document
from access.api.problems import ApiProblem, bad_param
from access.api.render import frame_columns, iso, json_response
from access.api.series import series
from access.api.service import (
    NO_ACCESS_DETAIL,
    access_request,
    check_token_purpose,
    decide,
    empty_series,
    explain_text,
    header_periods,
    homeowner_periods,
    households_of,
    no_access,
    own_suspensions,
    periods_json,
    person_view,
    query,
    record,
    series_queries,
    served_within,
)
from access.api.state import STATE, AppState, caller_of
from access.api.stats import stats
from access.api.webhooks import webhook_delete, webhook_get, webhook_put
from access.auth import Caller, authenticate
from access.consent import ConsentError, ErasureRequest
from access.decision import IDENTITY, ITEMS, NO_GRANT
from access.erasure import requests_of
from access.ledger_anchor import KeptHead
from access.periods import Periods, intersect, span
from access.request import ALL_TIME, AccessRequest
from access.world import SCOPES
from pipeline.derived import TOKYO, daily_energy_per_household
from pipeline.query import COUNTER_FIELDS
from seeds.vocabulary import ACTIONS, CATEGORIES, STORED_CATEGORIES, item_of

_PRINCIPAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,99}")
DOCS_PAGE = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1"><title>HEMS API</title>'
    '<link rel="icon" href="data:,">'
    '<link rel="stylesheet" href="/static/swagger-ui/swagger-ui.css"></head>'
    '<body><div id="swagger-ui"></div><script src="/static/swagger-ui/swagger-ui-bundle.js"></script>'
    '<script src="/static/swagger-ui/init.js"></script></body></html>'
)


def _own_household(state: AppState, caller: Caller, household: str, *, current: bool = True) -> Periods:
    """The person's own settings are reachable only by the homeowner of that household (now, unless
    ``current`` is False: a former homeowner still reads the records of their own period)."""
    periods = homeowner_periods(state, caller.principal, household)
    t = state.clock()
    if not periods or (current and not any(a <= t < b for a, b in periods)):
        state.metrics.refusals["no_grant"] += 1
        raise no_access()
    return periods


def _verified_person(state: AppState, caller: Caller) -> None:
    """The person's requests (suspension, erasure) need an identity verified recently (SPS 2(6)[3])."""
    if not state.identity_verified(caller):
        state.metrics.refusals[IDENTITY] += 1
        raise ApiProblem(
            403,
            "refused",
            "the person's requests need an identity verified recently: sign in again, or use a token "
            "issued after an identity check",
            reason=IDENTITY,
            clause_ids=(),
        )


# -- operational -------------------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    body: models.Health = {"status": "ok"}
    return json_response(body)


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    t0 = time.perf_counter()
    try:
        ok = await state.store.ping()
    except Exception:
        ok = False
    state.metrics.store_ping_seconds = time.perf_counter() - t0
    state.metrics.store_up = ok
    if not ok:
        raise ApiProblem(503, "store_unavailable", "the data store does not answer")
    body: models.Ready = {"status": "ready"}
    return json_response(body)


# Headers a reverse proxy adds for the client it forwards (RFC 7239, de facto X-Forwarded-For, nginx's).
FORWARDING_HEADERS = ("Forwarded", "X-Forwarded-For", "X-Real-IP")


def from_this_machine(request: web.Request) -> bool:
    """A loopback peer that is no proxy's client.  A TLS proxy on this host (deploy/README.md) makes
    every client's peer address loopback; what it forwards carries a forwarding header, so such a
    request is not from this machine whether or not ``--trust-forwarded`` is given (a local client
    that adds one only refuses itself)."""
    if any(name in request.headers for name in FORWARDING_HEADERS):
        return False
    try:
        return ipaddress.ip_address((request.remote or "").split("%")[0]).is_loopback
    except ValueError:
        return False


async def metrics(request: web.Request) -> web.Response:
    """Operational counters for Prometheus: to a scraper on this machine, or to an operator's token
    (they name routes, refusal reasons and device states, never a household)."""
    state = request.app[STATE]
    if not from_this_machine(request):
        caller = authenticate(request, state)
        assert caller is not None
        if caller.kind != "operator":
            raise ApiProblem(403, "refused", "metrics are for the operator", reason="wrong_kind")
    body = state.metrics.render(state.collector_health, state.pipeline_stats, state.pages)
    # Which worker answered (with --workers every worker's counters are in the body).
    return web.Response(
        body=body, headers={"Content-Type": CONTENT_TYPE_LATEST, "X-Hems-Worker": str(os.getpid())}
    )


async def openapi(request: web.Request) -> web.Response:
    return json_response(document())


async def docs(request: web.Request) -> web.Response:
    """The OpenAPI document for people: Swagger UI (vendored under /static/swagger-ui, see its LICENSE)
    renders it in the browser; nothing is fetched from elsewhere (the pages' CSP would refuse it)."""
    return web.Response(text=DOCS_PAGE, content_type="text/html", charset="utf-8")


# -- who am I, which households --------------------------------------------------------------------
async def me(request: web.Request) -> web.Response:
    state, caller = caller_of(request)
    p = state.relationships.principal(caller.principal)
    body: models.Me = {
        "principal": p.id,
        "kind": p.kind,
        "display_name": p.display_name,
        "via": caller.via,
        "purposes": sorted(caller.purposes if caller.purposes is not None else p.purposes),
    }
    return json_response(body)


async def households(request: web.Request) -> web.Response:
    state, caller = caller_of(request)
    purpose = request.query.get("purpose") or request.headers.get("X-Purpose")
    if purpose is not None:
        purpose = params.purpose(purpose)
    items: list[models.HouseholdItem] = []
    at = state.clock()
    for household, roles in households_of(state, caller.principal):
        item: models.HouseholdItem = {"household": household, "roles": sorted(roles)}
        if purpose is not None:
            if caller.purposes is not None and purpose not in caller.purposes:
                item["categories"] = []
            else:
                item["categories"], partly = _categories_granted(state, caller, household, purpose, at)
                if partly:
                    item["items"] = partly
        items.append(item)
    body: models.Households = {"principal": caller.principal, "purpose": purpose, "households": items}
    return json_response(body)


def _categories_granted(
    state: AppState, caller: Caller, household: str, purpose: str, at: float
) -> tuple[list[str], dict[str, list[str]]]:
    """The series categories something of which may be read for ``purpose``, and for those granted only
    in part, the items that are (a demand-response contractor's negawatt items of ``electricity``)."""
    whole: list[str] = []
    partly: dict[str, list[str]] = {}
    for c in STORED_CATEGORIES:
        req = AccessRequest(
            caller.principal,
            household,
            c,
            "read",
            purpose,
            ALL_TIME,
            identity_verified=state.identity_verified(caller),
        )
        d = state.authz.decide(req, at=at)
        if d.allowed:
            whole.append(c)
        elif d.reason == ITEMS:
            partly[c] = list(state.authz.items_served(req, at=at))
            whole.append(c)
    return whole, partly


async def daily(request: web.Request) -> web.Response:
    """Energy or volume per local (Tokyo) day from a monotonic total, for the dashboards' bars.

    Decided over the range plus one window before it (the first day's baseline is data too).  Each
    served period is turned into days on its own, so no difference spans a refused gap."""
    state, caller = caller_of(request)
    household = params.household_id(request.match_info["household"])
    category = params.category(request.match_info["category"])
    purpose = params.declared_purpose(request.query, request.headers)
    field = request.query.get("field", "")
    if field not in COUNTER_FIELDS:
        raise bad_param("field", f"a cumulative field: {', '.join(sorted(COUNTER_FIELDS))}")
    win = params.window(request.query, state.now_dt(), timedelta(hours=1))
    if win.every is None or win.every > timedelta(days=1):
        raise bad_param("every", "daily totals are built from windows of at most 1d")
    fmt = params.fmt(request.query.get("format"), request.headers.get("Accept"))
    if fmt == "arrow":
        raise bad_param("format", "daily totals come as json or csv")
    start = win.start - win.every
    req = access_request(state, caller, household, category, "read", purpose, start, win.stop)
    decision = decide(state, caller, req._replace(items=(item_of(field),)))
    periods = served_within(decision, start, win.stop)
    parts = [
        daily_energy_per_household(await query(state, q), field, TOKYO)
        for q in series_queries(household, category, (field,), periods, win.every, "last")
    ]
    days = (
        pl.concat(parts).group_by("day").agg(pl.col("delta").sum()).sort("day")
        if parts
        else daily_energy_per_household(empty_series(category, (field,), win.every, "last"), field, TOKYO)
    )
    # Differences of float totals carry noise in the last bits (287.50000000000006): rounded to what a
    # meter can tell (a thousandth of a Wh or L).
    days = days.with_columns(pl.col("delta").round(3))
    if fmt == "csv":
        text = days.select("day", "delta").write_csv()
        await record(state, caller, decision, household, category, purpose, periods)
        return web.Response(
            text=text,
            content_type="text/csv",
            charset="utf-8",
            headers={"X-Served-Periods": header_periods(periods)},
        )
    body: models.Daily = {
        "household": household,
        "category": category,
        "field": field,
        "purpose": purpose,
        "clause_ids": list(decision.clause_ids),
        "served": periods_json(periods),
        "refused": periods_json(decision.refused),
        "time_zone": TOKYO,
        "columns": frame_columns(days.select("day", "delta")),
    }
    response = json_response(body)
    # Recorded last, once the body is built, so no record stands for an answer that failed to render.
    await record(state, caller, decision, household, category, purpose, periods)
    return response


# -- the homeowner's own rights ------------------------------------------------------------------------
async def ledger(request: web.Request) -> web.Response:
    state, caller = caller_of(request)
    household = params.household_id(request.match_info["household"])
    mine = _own_household(state, caller, household, current=False)
    kept_text = request.query.get("kept")
    kept = None if kept_text is None else KeptHead.parse(kept_text)
    if kept_text is not None and kept is None:
        raise bad_param("kept", "a kept head is '<records>:<64 hex digits>' as this endpoint's head shows it")
    ledger = await state.ledger_for(household)
    # Only the provisions of the caller's own period, shown within it: a new occupant does not learn who
    # received the previous occupant's data.  The chain hashes are the household's, whole.
    body: models.LedgerPage = {
        "household": household,
        "head": {"records": ledger.head.records, "hash": ledger.head.hash, "text": ledger.head.text()},
        "records": [
            {
                "seq": r.seq,
                "recipient": r.recipient,
                "categories": list(r.categories),
                "period_start": iso(shown.period_start),
                "period_end": iso(shown.period_end),
                "purpose": r.purpose,
                "clause_ids": list(r.clause_ids),
                "at": iso(r.at),
                "chain": chain,
            }
            for r, chain in zip(ledger.records, ledger.chain, strict=True)
            if (shown := person_view(r, mine)) is not None
        ],
    }
    if kept is not None:
        body["kept"] = {"text": kept.text(), "verdict": ledger.verdict(kept)}
    return json_response(body)


def _consent_body(state: AppState, caller: Caller, household: str) -> models.Consent:
    """The caller's own suspensions of the household (``own_suspensions``) and their switch's state."""
    t = state.clock()
    rows = own_suspensions(state, caller.principal, household)
    return {
        "household": household,
        "suspensions": [
            {
                "id": s.id,
                "company": s.company,
                "scope": s.scope,
                "recipient": s.recipient,
                "category": s.category,
                "requested_at": iso(s.requested_at),
                "lifted_at": None if s.lifted_at is None else iso(s.lifted_at),
                "active": s.active(t),
            }
            for s in rows
        ],
        "provision_suspended": any(
            s.active(t) and s.recipient is None and s.category is None and s.company == "sps" for s in rows
        ),
    }


async def consent_get(request: web.Request) -> web.Response:
    state, caller = caller_of(request)
    household = params.household_id(request.match_info["household"])
    _own_household(state, caller, household)
    return json_response(_consent_body(state, caller, household))


async def consent_put(request: web.Request) -> web.Response:
    state, caller = caller_of(request)
    household = params.household_id(request.match_info["household"])
    mine = _own_household(state, caller, household)
    _verified_person(state, caller)
    body = await params.json_body(request, models.ConsentChange)
    scope = body.get("scope", "provision")
    if scope not in SCOPES:
        raise bad_param("scope", f"scope is one of {', '.join(SCOPES)}")
    suspended = body.get("suspended")
    if not isinstance(suspended, bool):
        raise bad_param("suspended", "suspended is true or false")
    recipient = body.get("recipient")
    if recipient is not None and (not isinstance(recipient, str) or not _PRINCIPAL_RE.fullmatch(recipient)):
        raise bad_param("recipient", "recipient is a principal id or null")
    category = body.get("category")
    if category is not None and category not in CATEGORIES:
        raise bad_param("category", "category is a known category or null")
    company = body.get("company", "sps")
    if not isinstance(company, str) or company not in state.authz.policy.companies:
        raise bad_param("company", f"company is one of {', '.join(sorted(state.authz.policy.companies))}")
    try:
        state.authz.consent.set_suspended(
            household,
            suspended,
            scope,
            recipient,
            category,
            at=state.clock(),
            company=company,
            requested_within=mine,
        )
    except ConsentError as exc:
        raise bad_param("body", str(exc)) from None
    return json_response(_consent_body(state, caller, household))


async def erasure_get(request: web.Request) -> web.Response:
    state, caller = caller_of(request)
    household = params.household_id(request.match_info["household"])
    periods = _own_household(state, caller, household, current=False)
    mine = requests_of(state.authz.consent.erasures(household), caller.principal, periods)
    body: models.Erasures = {"household": household, "requests": [_erasure(e) for e in mine]}
    return json_response(body)


def _erasure(e: ErasureRequest) -> models.Erasure:
    body: models.Erasure = {
        "id": e.id,
        "requested_at": iso(e.requested_at),
        "outcome": e.outcome,
        "status": e.status,
        "completed_at": None if e.completed_at is None else iso(e.completed_at),
    }
    if e.completed_at is not None:
        body["erased"] = list(e.erased)
        body["periods"] = periods_json(e.periods)
        body["kept"] = dict(e.kept or {})
        body["removed"] = dict(e.removed or {})
    return body


async def erasure_post(request: web.Request) -> web.Response:
    state, caller = caller_of(request)
    household = params.household_id(request.match_info["household"])
    # A former homeowner too: the right reaches the data of their own time there (access.erasure).
    _own_household(state, caller, household, current=False)
    _verified_person(state, caller)
    body = await params.json_body(request, models.ErasureAsk)
    cats = body.get("categories")
    if cats is not None and (
        not isinstance(cats, list)
        or not cats
        or any(not isinstance(c, str) or c not in CATEGORIES for c in cats)
    ):
        raise bad_param("categories", "categories is a non-empty list of known categories, or null for all")
    # The holds that may keep something: those of the companies the household was a customer of while
    # the requester lived there (``access.erasure.plan`` keeps only that time when carrying it out).
    mine = homeowner_periods(state, caller.principal, household)
    companies = {c.company for c in state.relationships.contracts(household) if intersect(c.period, mine)}
    e = state.authz.consent.request_erasure(
        household,
        state.authz.policy.seeds,
        cats,
        at=state.clock(),
        requested_by=caller.principal,
        companies=companies,
    )
    return json_response(_erasure(e), status=202)


def stats_explanation(state: AppState, caller: Caller, category: str, purpose: str) -> models.Explanation:
    """Why statistics are or are not released to the caller, from the policy and the caller alone
    (``statistics_grant``), the same whatever household is named: a decision for one household would
    tell a principal that may only learn about groups (ENEX 2 footnote *2) that household's contract
    periods, suspensions and erasures.  Whether a household is in a group is told to no one."""
    try:
        check_token_purpose(caller, purpose)
    except ApiProblem as p:
        return _explanation(False, p.reason or p.code, p.detail, ())
    granted = state.authz.statistics_grant(caller.principal, category, purpose, (), at=state.clock())
    if granted is None:
        return _explanation(False, NO_GRANT, NO_ACCESS_DETAIL, ())
    clause_ids, min_group = granted
    words = (
        f"statistics on {category} data for {purpose} may be released to you ({', '.join(clause_ids)}): "
        f"differentially private aggregates over at least {min_group} households, never about one "
        f"(GET /api/v1/stats/{category}); which households a release covers is not told"
    )
    return _explanation(True, "allowed", words, clause_ids)


def _explanation(allowed: bool, reason: str, words: str, clause_ids: tuple[str, ...]) -> models.Explanation:
    return {
        "allowed": allowed,
        "reason": reason,
        "explanation": words,
        "clause_ids": list(clause_ids),
        "served": [],
        "refused": [],
    }


async def explain(request: web.Request) -> web.Response:
    state, caller = caller_of(request)
    q = request.query
    household = params.household_id(q.get("household", ""))
    category = q.get("category", "")
    if category not in CATEGORIES:
        raise bad_param("category", "unknown category")
    action = q.get("action", "read")
    if action not in ACTIONS:
        raise bad_param("action", f"action is one of {', '.join(ACTIONS)}")
    purpose = params.declared_purpose(request.query, request.headers)
    start, stop = ALL_TIME
    if "start" in q:
        start = params.instant("start", q["start"]).timestamp()
    if "stop" in q:
        stop = params.instant("stop", q["stop"]).timestamp()
    if not start < stop:
        raise bad_param("stop", "stop must be after start")
    if action == "read_stats":
        return json_response(stats_explanation(state, caller, category, purpose))
    req = AccessRequest(
        caller.principal,
        household,
        category,
        action,
        purpose,
        (start, stop),
        identity_verified=state.identity_verified(caller),
    )
    decision, reason, words, clause_ids = explain_text(state, caller, req)
    body: models.Explanation = {
        "allowed": decision is not None,
        "reason": reason,
        "explanation": words,
        "clause_ids": list(clause_ids),
        "served": periods_json(decision.served) if decision is not None else [],
        "refused": periods_json(decision.refused if decision is not None else span(start, stop)),
    }
    return json_response(body)


ROUTES: tuple[tuple[str, str, Any, str], ...] = (
    ("GET", "/healthz", healthz, "healthz"),
    ("GET", "/readyz", readyz, "readyz"),
    ("GET", "/metrics", metrics, "metrics"),
    ("GET", "/api/v1/openapi.json", openapi, "openapi"),
    ("GET", "/api/v1/docs", docs, "docs"),
    ("GET", "/api/v1/me", me, "me"),
    ("GET", "/api/v1/households", households, "households"),
    ("GET", "/api/v1/households/{household}/series/{category}", series, "series"),
    ("GET", "/api/v1/households/{household}/daily/{category}", daily, "daily"),
    ("GET", "/api/v1/households/{household}/energy", energy, "energy"),
    ("GET", "/api/v1/households/{household}/ledger", ledger, "ledger"),
    ("GET", "/api/v1/households/{household}/consent", consent_get, "consent_get"),
    ("PUT", "/api/v1/households/{household}/consent", consent_put, "consent_put"),
    ("GET", "/api/v1/households/{household}/erasure", erasure_get, "erasure_get"),
    ("POST", "/api/v1/households/{household}/erasure", erasure_post, "erasure_post"),
    ("GET", "/api/v1/stats/{category}", stats, "stats"),
    ("GET", "/api/v1/explain", explain, "explain"),
    ("GET", "/api/v1/alerts", alerts, "alerts"),
    ("GET", "/api/v1/alerts/webhook", webhook_get, "webhook_get"),
    ("PUT", "/api/v1/alerts/webhook", webhook_put, "webhook_put"),
    ("DELETE", "/api/v1/alerts/webhook", webhook_delete, "webhook_delete"),
)


def add_routes(app: web.Application) -> None:
    for method, path, handler, name in ROUTES:
        app.router.add_route(method, path, handler, name=name)
