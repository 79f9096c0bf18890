"""The ``/api/v1`` handlers and the operational endpoints (``/healthz``, ``/readyz``, ``/metrics``)."""

from __future__ import annotations

import gzip
import io
import json
import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from aiohttp import web

from access.api import params
from access.api.openapi import document
from access.api.pagecache import Page
from access.api.problems import ApiProblem, bad_param
from access.api.service import (
    NO_ACCESS_DETAIL,
    Allowed,
    check_token_purpose,
    decide,
    explain_text,
    fleet_statistics,
    households_of,
    provide,
    query,
    record,
    series_query,
)
from access.api.state import STATE, AppState, Caller, authenticate, rate_limit
from access.consent import SCOPES, ConsentError
from pipeline.derived import TOKYO, daily_energy_per_household
from pipeline.query import COUNTER_FIELDS
from seeds.vocabulary import ACTIONS, CATEGORIES, SERIES_CATEGORIES

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PRINCIPAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,99}$")
STATS_CHUNK = 500  # households per store query when aggregating a fleet
MAX_STATS_HOUSEHOLDS = 20_000


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _caller(request: web.Request) -> tuple[AppState, Caller]:
    state = request.app[STATE]
    caller = authenticate(request, state)
    assert caller is not None
    rate_limit(state, caller.rate_key)
    return state, caller


def _purpose(request: web.Request) -> str:
    return params.purpose(request.query.get("purpose") or request.headers.get("X-Purpose"))


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def frame_columns(df: pl.DataFrame) -> dict[str, list[Any]]:
    """Column-oriented JSON (charts want arrays); times as ISO UTC strings with milliseconds."""
    out = df.with_columns(
        pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        for c, t in df.schema.items()
        if isinstance(t, pl.Datetime)
    )
    out = out.with_columns(pl.col(c).cast(pl.Utf8) for c, t in out.schema.items() if isinstance(t, pl.Date))
    return out.to_dict(as_series=False)


def _own_household(state: AppState, caller: Caller, household: str) -> None:
    """The person's own settings are reachable only by the homeowner of that household."""
    roles = state.authz.snapshot(state.clock()).links.household_roles.get((caller.principal, household))
    if roles is None or "homeowner" not in roles:
        state.metrics.refusals["no_grant"] += 1
        raise ApiProblem(403, "refused", NO_ACCESS_DETAIL, reason="no_grant", clause_ids=())


# -- operational -------------------------------------------------------------------------------------
async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


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
    return _json({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    text = state.metrics.render(state.collector_health, state.pipeline_stats, state.pages)
    return web.Response(text=text, content_type="text/plain", charset="utf-8", headers={"X-Format": "0.0.4"})


async def openapi(request: web.Request) -> web.Response:
    return _json(document())


# -- who am I, which households --------------------------------------------------------------------
async def me(request: web.Request) -> web.Response:
    state, caller = _caller(request)
    p = state.relationships.principal(caller.principal)
    return _json(
        {
            "principal": p.id,
            "kind": p.kind,
            "display_name": p.display_name,
            "via": caller.via,
            "purposes": sorted(caller.purposes if caller.purposes is not None else p.purposes),
        }
    )


async def households(request: web.Request) -> web.Response:
    state, caller = _caller(request)
    purpose = request.query.get("purpose") or request.headers.get("X-Purpose")
    if purpose is not None:
        purpose = params.purpose(purpose)
    items = []
    for household, roles in households_of(state, caller.principal):
        item: dict[str, Any] = {"household": household, "roles": sorted(roles)}
        if purpose is not None:
            if caller.purposes is not None and purpose not in caller.purposes:
                item["categories"] = []
            else:
                item["categories"] = [
                    c
                    for c in SERIES_CATEGORIES
                    if state.authz.decide(
                        caller.principal, household, c, "read", purpose, at=state.clock()
                    ).allowed
                ]
        items.append(item)
    return _json({"principal": caller.principal, "purpose": purpose, "households": items})


# -- series ----------------------------------------------------------------------------------------------
async def series(request: web.Request) -> web.Response:
    state, caller = _caller(request)
    household = params.household_id(request.match_info["household"])
    category = params.category(request.match_info["category"])
    purpose = _purpose(request)
    q = request.query
    fmt = params.fmt(q.get("format"), request.headers.get("Accept"))
    fields = params.fields(category, q.get("fields"))
    win = params.window(q, state.now_dt(), timedelta(minutes=1))
    agg = params.agg(q.get("agg"))
    limit = params.limit(q.get("limit"))
    asked = (household, category, fields, win.start, win.stop, win.every, agg)
    page_start, after = win.start, None
    if "cursor" in q:
        t_us, device = params.decode_cursor(q["cursor"], params.fingerprint(*asked))
        page_start = _EPOCH + timedelta(microseconds=t_us)
        # Windows are aligned to the epoch, so the first one may start before ``start``.
        if not win.start - (win.every or timedelta(0)) <= page_start < win.stop:
            raise bad_param("cursor", "the cursor is not one this query returned")
        after = (t_us, device)
    # Never read before the caller's start: a later page sees the same windows as the first.
    sq = series_query((household,), category, fields, max(page_start, win.start), win.stop, win.every, agg)
    allowed = decide(state, caller, household, category, "read", purpose)

    async def render() -> Page:
        return _series_page(await query(state, sq), after, limit, fmt, asked)

    # The page depends on the query alone (never on who asks; ``sq`` follows from ``asked`` and
    # ``after``): the policy was decided above, per request, and the ledger record below is written
    # per response.
    key = ("series", asked, after, limit, fmt)
    version = state.store.data_version()
    page = await state.pages.get(version, key, render)
    headers: dict[str, str] = {"X-Clause-Ids": ",".join(allowed.decision.clause_ids)}
    if page.next_cursor is not None:
        headers["X-Next-Cursor"] = page.next_cursor
        nxt = request.rel_url.update_query({"cursor": page.next_cursor})
        headers["Link"] = f'<{nxt}>; rel="next"'
    if fmt == "arrow":
        await record(state, caller, allowed, household, category, purpose, sq)
        return web.Response(body=page.body, content_type="application/vnd.apache.arrow.file", headers=headers)
    head, tail, content_type = b"", b"", "text/csv"
    # The JSON envelope is fixed by the page and the caller's purpose and clauses, so it is made once.
    envelope_key = (key, purpose, allowed.decision.clause_ids)
    if fmt == "json":
        tail, content_type = b"}", "application/json"

        async def envelope() -> Page:
            text = _series_envelope(household, category, purpose, allowed, win, agg, fields, page)
            return Page(text, page.count, page.next_cursor)

        head = (await state.pages.get(version, ("envelope", envelope_key), envelope)).body
    headers["Vary"] = "Accept-Encoding"
    if params.accepts_gzip(request.headers.get("Accept-Encoding")):
        # Compressed once per page and envelope.
        zipped = await state.pages.get(version, ("gzip", envelope_key), lambda: _gzipped(head, page, tail))
        body = zipped.body
        headers["Content-Encoding"] = "gzip"
    else:
        body = head + page.body + tail
    # Recorded last, once the body is built, so no record stands for an answer that failed to render.
    await record(state, caller, allowed, household, category, purpose, sq)
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=headers)


async def _gzipped(head: bytes, page: Page, tail: bytes) -> Page:
    return Page(
        gzip.compress(head + page.body + tail, compresslevel=6, mtime=0), page.count, page.next_cursor
    )


def _series_envelope(
    household: str,
    category: str,
    purpose: str,
    allowed: Allowed,
    win: params.Window,
    agg: str,
    fields: tuple[str, ...],
    page: Page,
) -> bytes:
    """The JSON before a page's ``columns`` (closed by ``}``): who asked for what, under which clauses."""
    envelope = json.dumps(
        {
            "household": household,
            "category": category,
            "purpose": purpose,
            "clause_ids": list(allowed.decision.clause_ids),
            "start": _iso(win.start),
            "stop": _iso(win.stop),
            "every": None if win.every is None else int(win.every.total_seconds()),
            "agg": agg if win.every is not None else None,
            "fields": list(fields),
            "count": page.count,
            "next_cursor": page.next_cursor,
        },
        separators=(",", ":"),
    )
    return envelope[:-1].encode() + b',"columns":'


def _series_page(
    df: pl.DataFrame, after: tuple[int, str] | None, limit: int, fmt: str, asked: tuple[object, ...]
) -> Page:
    """One page of a series answer, rendered: rows after the cursor, at most ``limit``, in ``fmt``
    (for JSON only the ``columns`` object: the envelope names the caller's purpose and clauses).
    ``asked`` is what the caller asked for, which a next-page cursor is bound to."""
    df = df.sort(["time", "device"])
    if after is not None:
        t_col = pl.col("time").dt.epoch("us")
        df = df.filter((t_col > after[0]) | ((t_col == after[0]) & (pl.col("device") > after[1])))
    next_cursor = None
    if df.height > limit:
        df = df.head(limit)
        last_t = int(df["time"].dt.epoch("us")[-1])
        next_cursor = params.encode_cursor(last_t, str(df["device"][-1]), params.fingerprint(*asked))
    if fmt == "csv":
        body = df.write_csv().encode()
    elif fmt == "arrow":
        buf = io.BytesIO()
        df.write_ipc(buf)
        body = buf.getvalue()
    else:
        body = json.dumps(frame_columns(df), separators=(",", ":")).encode()
    return Page(body, df.height, next_cursor)


async def daily(request: web.Request) -> web.Response:
    """Energy or volume per local (Tokyo) day from a monotonic total, for the dashboards' bars."""
    state, caller = _caller(request)
    household = params.household_id(request.match_info["household"])
    category = params.category(request.match_info["category"])
    purpose = _purpose(request)
    field = request.query.get("field", "")
    if field not in COUNTER_FIELDS:
        raise bad_param("field", f"a cumulative field: {', '.join(sorted(COUNTER_FIELDS))}")
    win = params.window(request.query, state.now_dt(), timedelta(hours=1))
    if win.every is None or win.every > timedelta(days=1):
        raise bad_param("every", "daily totals are built from windows of at most 1d")
    # One window before the range gives the first day its baseline.
    sq = series_query((household,), category, (field,), win.start - win.every, win.stop, win.every, "last")
    df, allowed = await provide(state, caller, household, category, purpose, sq)
    days = daily_energy_per_household(df, field, TOKYO)
    return _json(
        {
            "household": household,
            "category": category,
            "field": field,
            "purpose": purpose,
            "clause_ids": list(allowed.decision.clause_ids),
            "time_zone": TOKYO,
            "columns": frame_columns(days.select("day", "delta")),
        }
    )


async def stats(request: web.Request) -> web.Response:
    state, caller = _caller(request)
    category = params.category(request.match_info["category"])
    purpose = _purpose(request)
    if "household" in request.query:
        raise bad_param("household", "statistics describe groups of households, never one")
    fields = params.fields(category, request.query.get("fields"))
    win = params.window(request.query, state.now_dt(), timedelta(hours=1))
    if win.every is None:
        raise bad_param("every", "statistics need a resolution (e.g. 1h)")
    agg = params.agg(request.query.get("agg"))
    candidates = state.relationships.households()[:MAX_STATS_HOUSEHOLDS]
    if not candidates:
        raise ApiProblem(403, "refused", NO_ACCESS_DETAIL, reason="no_grant", clause_ids=())
    check_token_purpose(caller, purpose)
    allowed: list[str] = []
    sizes: list[int] = []
    clauses: dict[str, None] = {}
    at = state.clock()
    for household in candidates:
        d = state.authz.decide(caller.principal, household, category, "read_stats", purpose, at=at)
        if d.allowed:
            allowed.append(household)
            sizes.append(d.min_group_size or 0)
            clauses.update(dict.fromkeys(d.clause_ids))
    state.metrics.decisions["allow" if allowed else "deny"] += 1
    if not allowed:
        decide(state, caller, candidates[0], category, "read_stats", purpose)  # raises the refusal
        raise ApiProblem(403, "refused", NO_ACCESS_DETAIL, reason="no_grant", clause_ids=())
    min_group = max(sizes)
    frames = []
    for i in range(0, len(allowed), STATS_CHUNK):
        chunk = tuple(allowed[i : i + STATS_CHUNK])
        frames.append(
            await query(state, series_query(chunk, category, fields, win.start, win.stop, win.every, agg))
        )
    out, suppressed = fleet_statistics(pl.concat(frames), fields, min_group)
    return _json(
        {
            "category": category,
            "purpose": purpose,
            "clause_ids": list(clauses),
            "start": _iso(win.start),
            "stop": _iso(win.stop),
            "every": int(win.every.total_seconds()),
            "min_group_size": min_group,
            "suppressed_windows": suppressed,
            "columns": frame_columns(out),
        }
    )


# -- the homeowner's own rights ------------------------------------------------------------------------
async def ledger(request: web.Request) -> web.Response:
    state, caller = _caller(request)
    household = params.household_id(request.match_info["household"])
    _own_household(state, caller, household)
    records = await state.ledger_for(household)
    return _json(
        {
            "household": household,
            "records": [
                {
                    "seq": r.seq,
                    "recipient": r.recipient,
                    "categories": list(r.categories),
                    "period_start": _iso(datetime.fromtimestamp(r.period_start, UTC)),
                    "period_end": _iso(datetime.fromtimestamp(r.period_end, UTC)),
                    "purpose": r.purpose,
                    "clause_ids": list(r.clause_ids),
                    "at": _iso(datetime.fromtimestamp(r.at, UTC)),
                }
                for r in records
            ],
        }
    )


def _consent_body(state: AppState, household: str) -> dict[str, Any]:
    t = state.clock()
    rows = state.authz.consent.suspensions(household)
    return {
        "household": household,
        "suspensions": [
            {
                "id": s.id,
                "scope": s.scope,
                "recipient": s.recipient,
                "category": s.category,
                "requested_at": _iso(datetime.fromtimestamp(s.requested_at, UTC)),
                "lifted_at": None if s.lifted_at is None else _iso(datetime.fromtimestamp(s.lifted_at, UTC)),
                "active": s.active(t),
            }
            for s in rows
        ],
        "provision_suspended": any(s.active(t) and s.recipient is None and s.category is None for s in rows),
    }


async def consent_get(request: web.Request) -> web.Response:
    state, caller = _caller(request)
    household = params.household_id(request.match_info["household"])
    _own_household(state, caller, household)
    return _json(_consent_body(state, household))


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise bad_param("body", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise bad_param("body", "the body is a JSON object")
    return body


async def consent_put(request: web.Request) -> web.Response:
    state, caller = _caller(request)
    household = params.household_id(request.match_info["household"])
    _own_household(state, caller, household)
    body = await _json_body(request)
    scope = body.get("scope", "provision")
    if scope not in SCOPES:
        raise bad_param("scope", f"scope is one of {', '.join(SCOPES)}")
    suspended = body.get("suspended")
    if not isinstance(suspended, bool):
        raise bad_param("suspended", "suspended is true or false")
    recipient = body.get("recipient")
    if recipient is not None and (not isinstance(recipient, str) or not _PRINCIPAL_RE.match(recipient)):
        raise bad_param("recipient", "recipient is a principal id or null")
    category = body.get("category")
    if category is not None and category not in CATEGORIES:
        raise bad_param("category", "category is a known category or null")
    consent = state.authz.consent
    t = state.clock()
    matching = [
        s
        for s in consent.suspensions(household)
        if s.active(t) and s.scope == scope and s.recipient == recipient and s.category == category
    ]
    try:
        if suspended and not matching:
            consent.suspend(household, scope, recipient, category, at=t)
        elif not suspended:
            for s in matching:
                consent.lift(s.id, at=t)
    except ConsentError as exc:
        raise bad_param("body", str(exc)) from None
    return _json(_consent_body(state, household))


async def erasure_get(request: web.Request) -> web.Response:
    state, caller = _caller(request)
    household = params.household_id(request.match_info["household"])
    _own_household(state, caller, household)
    return _json(
        {"household": household, "requests": [_erasure(e) for e in state.authz.consent.erasures(household)]}
    )


def _erasure(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "requested_at": _iso(datetime.fromtimestamp(e.requested_at, UTC)),
        "outcome": e.outcome,
        "status": e.status,
    }


async def erasure_post(request: web.Request) -> web.Response:
    state, caller = _caller(request)
    household = params.household_id(request.match_info["household"])
    _own_household(state, caller, household)
    body = await _json_body(request)
    cats = body.get("categories")
    if cats is not None and (
        not isinstance(cats, list)
        or not cats
        or any(not isinstance(c, str) or c not in CATEGORIES for c in cats)
    ):
        raise bad_param("categories", "categories is a non-empty list of known categories, or null for all")
    e = state.authz.consent.request_erasure(household, state.authz.policy.seeds, cats, at=state.clock())
    return _json(_erasure(e), status=202)


async def explain(request: web.Request) -> web.Response:
    state, caller = _caller(request)
    q = request.query
    household = params.household_id(q.get("household", ""))
    category = q.get("category", "")
    if category not in CATEGORIES:
        raise bad_param("category", "unknown category")
    action = q.get("action", "read")
    if action not in ACTIONS:
        raise bad_param("action", f"action is one of {', '.join(ACTIONS)}")
    purpose = _purpose(request)
    ok, reason, words, clause_ids = explain_text(state, caller, household, category, action, purpose)
    return _json({"allowed": ok, "reason": reason, "explanation": words, "clause_ids": list(clause_ids)})


ROUTES: tuple[tuple[str, str, Any, str], ...] = (
    ("GET", "/healthz", healthz, "healthz"),
    ("GET", "/readyz", readyz, "readyz"),
    ("GET", "/metrics", metrics, "metrics"),
    ("GET", "/api/v1/openapi.json", openapi, "openapi"),
    ("GET", "/api/v1/me", me, "me"),
    ("GET", "/api/v1/households", households, "households"),
    ("GET", "/api/v1/households/{household}/series/{category}", series, "series"),
    ("GET", "/api/v1/households/{household}/daily/{category}", daily, "daily"),
    ("GET", "/api/v1/households/{household}/ledger", ledger, "ledger"),
    ("GET", "/api/v1/households/{household}/consent", consent_get, "consent_get"),
    ("PUT", "/api/v1/households/{household}/consent", consent_put, "consent_put"),
    ("GET", "/api/v1/households/{household}/erasure", erasure_get, "erasure_get"),
    ("POST", "/api/v1/households/{household}/erasure", erasure_post, "erasure_post"),
    ("GET", "/api/v1/stats/{category}", stats, "stats"),
    ("GET", "/api/v1/explain", explain, "explain"),
)


def add_routes(app: web.Application) -> None:
    for method, path, handler, name in ROUTES:
        app.router.add_route(method, path, handler, name=name)
