"""The OpenAPI 3.1 document of the JSON API, built as data so a test can hold it equal to the router.

It is as strict as the server: parameters carry the parsers' own patterns, enums and bounds (from
``access.api.params``, the cursor codec and the vocabularies), and response schemas are made from the
TypedDicts the handlers build (``access.api.models`` through ``access.api.schema``).  Property-based
tests generated from it therefore reach the handlers instead of stopping at a 400.
"""

from __future__ import annotations

import functools
from typing import Any

from access.api import models, params
from access.api.cursor import PATTERN as CURSOR_PATTERN
from access.api.energy import SPANS
from access.api.maintenance import MAINTENANCE_PURPOSE
from access.api.params import (
    DEFAULT_LIMIT,
    EPSILON_PATTERN,
    FORMATS,
    MAX_FIELDS,
    MAX_LIMIT,
    MAX_PARAM_LEN,
    PURPOSE_PATTERN,
    RELATIVE_PATTERN,
)
from access.api.schema import Schema, schema_of
from access.privacy import DEFAULT_RELEASE_EPSILON, RELEASE_AGGS
from pipeline.query import AGGS, COUNTER_FIELDS, QUERYABLE_FIELDS
from seeds.vocabulary import ACTIONS, CATEGORIES, STORED_CATEGORIES

HOUSEHOLD_PATTERN = "^[A-Za-z0-9_.-]{1,64}$"
# What ``params.moment`` accepts, within reason: an RFC 3339 instant with its zone, years 2000-2200, or
# a time before now (-20m, -2h, -7d).
INSTANT_PATTERN = (
    r"^((20[0-9]{2}|21[0-9]{2}|2200)-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    rf"(Z|[+-][0-9]{{2}}:[0-9]{{2}})|{RELATIVE_PATTERN})$"
)
KEPT_PATTERN = "^[1-9][0-9]{0,11}:[0-9a-fA-F]{64}$"
DAY_PATTERN = "^(20[0-9]{2}|2100)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"


def upto(limit: int) -> str:
    """A regex for the decimal numbers 1..``limit`` (no leading zeros), so a bound goes into a pattern."""

    def any_digits(n: int) -> str:
        return "" if n == 0 else "[0-9]" if n == 1 else f"[0-9]{{{n}}}"

    digits = str(limit)
    shorter = len(digits) - 1  # numbers with fewer digits are all below the limit
    parts = [f"[1-9]{'' if shorter == 1 else f'[0-9]{{0,{shorter - 1}}}'}"] if shorter else []
    for i, d in enumerate(digits):
        low = 1 if i == 0 else 0
        if int(d) > low:  # this digit lower than the limit's, after the same prefix; any digits after
            top = int(d) - 1
            digit = str(low) if top == low else f"[{low}-{top}]"
            parts.append(digits[:i] + digit + any_digits(len(digits) - i - 1))
    parts.append(digits)
    return "(" + "|".join(parts) + ")"


def _every_pattern() -> str:
    """``params.every``: a count and a unit from 1 s to 31 days (the count has at most 6 digits), or raw."""
    longest = params.MAX_EVERY.total_seconds()
    units = []
    for unit, seconds in params.UNITS.items():
        units.append(f"{upto(min(int(longest // seconds), 999_999))}{unit}")
    return "^(" + "|".join(units) + "|raw)$"


def _fields_pattern() -> str:
    one = "(" + "|".join(sorted(QUERYABLE_FIELDS)) + ")"
    return f"^({one}(,{one}){{0,{MAX_FIELDS - 1}}})?$"  # empty: the category's default fields


def _p(name: str, where: str, desc: str, schema: Schema, required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "description": desc,
        "required": required or where == "path",
        "schema": schema,
    }


def _pattern(pattern: str, **extra: Any) -> Schema:
    return {"type": "string", "pattern": pattern, **extra}


def _enum(values: Any) -> Schema:
    return {"type": "string", "enum": list(values)}


HOUSEHOLD = _p("household", "path", "Opaque household id", _pattern(HOUSEHOLD_PATTERN))
CATEGORY = _p("category", "path", "Series category", _enum(STORED_CATEGORIES))
_PURPOSE = _pattern(f"^{PURPOSE_PATTERN}$", example="sps.pv_after_maintenance")
PURPOSE = _p(
    "purpose", "query", "Declared purpose (or header X-Purpose); must be registered for the token", _PURPOSE
)
PURPOSE_HEADER = _p("X-Purpose", "header", "Declared purpose, instead of the query parameter", _PURPOSE)
_PURPOSES = _pattern(
    f"^{PURPOSE_PATTERN}(,{PURPOSE_PATTERN}){{0,{params.MAX_PURPOSES - 1}}}$",
    maxLength=MAX_PARAM_LEN,
    example="sps.disclosure_to_person,kaluza.disclosure_to_person",
)
START = _p(
    "start",
    "query",
    "ISO 8601 instant with zone; default stop - 24h",
    _pattern(INSTANT_PATTERN, maxLength=40, example="2026-06-01T00:00:00Z"),
)
STOP = _p(
    "stop",
    "query",
    "ISO 8601 instant with zone, after start; default now",
    _pattern(INSTANT_PATTERN, maxLength=40, example="2026-06-02T00:00:00Z"),
)
EVERY = _p(
    "every", "query", "Resolution: <n>s|m|h|d (1s..31d) or 'raw'", _pattern(_every_pattern(), example="1h")
)
WINDOWED = (CATEGORY, PURPOSE, PURPOSE_HEADER, START, STOP, EVERY)  # what every data read takes
AGG = _p("agg", "query", "Aggregation per window", _enum(AGGS))
STATS_AGG = _p("agg", "query", "Aggregation per household and window (default mean)", _enum(RELEASE_AGGS))
EPSILON = _p(
    "epsilon",
    "query",
    f"Privacy cost of this release (default {DEFAULT_RELEASE_EPSILON}), charged to the caller's company's "
    "budget (its own without a company)",
    _pattern(f"^{EPSILON_PATTERN}$", example=str(DEFAULT_RELEASE_EPSILON)),
)
FIELDS = _p(
    "fields",
    "query",
    f"Comma-separated field names, each at most once, at most {MAX_FIELDS}",
    _pattern(_fields_pattern(), maxLength=MAX_PARAM_LEN, example="power_w,soc_pct"),
)


class _Components:
    """The schemas the document refers to, filled as operations name their models."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def of(self, tp: object) -> Schema:
        return schema_of(tp, self.schemas)


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": _pattern("^[0-9]+$")}}


def _problems(c: _Components, *codes: int) -> dict[str, Any]:
    words = {
        400: "Bad parameter (field named)",
        401: "Not authenticated",
        403: "Refused (reason, clause_ids, refused periods)",
        404: "No such path (a path parameter with a '/' in it)",
        413: "Body too large",
        415: "The JSON body declares a charset other than UTF-8",
        429: "Rate limited (Retry-After)",
        503: "Store unavailable",
    }
    problem = {"application/problem+json": {"schema": c.of(models.Problem)}}
    out: dict[str, Any] = {}
    for code in codes:
        out[str(code)] = {"description": words[code], "content": problem}
        if code == 429:
            out[str(code)]["headers"] = _RETRY_AFTER
    return out


def _ok(c: _Components, desc: str, model: object, status: str = "200") -> dict[str, Any]:
    return _ok_as(desc, "application/json", c.of(model), status)


def _ok_as(desc: str, media_type: str, schema: Schema, status: str = "200") -> dict[str, Any]:
    return {status: {"description": desc, "content": {media_type: {"schema": schema}}}}


def _op(
    summary: str,
    parameters: list[dict[str, Any]],
    responses: dict[str, Any],
    *,
    auth: bool = True,
    body: Schema | None = None,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "parameters": parameters, "responses": responses}
    if not auth:
        op["security"] = []
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


@functools.cache
def document() -> dict[str, Any]:
    """Built once and shared by every request: callers must not change it."""
    c = _Components()
    std = _problems(c, 400, 401, 403, 429)
    own = _problems(c, 400, 401, 403, 404, 429)  # the homeowner's endpoints, with a household in the path
    data = _problems(c, 400, 401, 403, 404, 429, 503)  # the endpoints that read the store
    paths = {
        "/healthz": {"get": _op("Liveness", [], _ok(c, "Alive", models.Health), auth=False)},
        "/readyz": {
            "get": _op(
                "Readiness (store ping)",
                [],
                {**_ok(c, "Ready", models.Ready), **_problems(c, 503)},
                auth=False,
            )
        },
        "/metrics": {
            "get": _op(
                "Prometheus metrics: to a scraper on this machine, or to an operator's token",
                [],
                {**_ok_as("Metrics", "text/plain", {"type": "string"}), **_problems(c, 401, 403, 429)},
            )
        },
        "/api/v1/openapi.json": {
            "get": _op(
                "This document",
                [],
                _ok_as("OpenAPI 3.1", "application/json", {"type": "object"}),
                auth=False,
            )
        },
        "/api/v1/docs": {
            "get": _op(
                "This document for people (Swagger UI, served from here)",
                [],
                _ok_as("HTML page", "text/html", {"type": "string"}),
                auth=False,
            )
        },
        "/api/v1/me": {
            "get": _op(
                "The calling principal", [], {**_ok(c, "Principal", models.Me), **_problems(c, 401, 429)}
            )
        },
        "/api/v1/households": {
            "get": _op(
                "Households the caller holds a relationship with (and, given a purpose, the readable "
                "categories)",
                [PURPOSE, PURPOSE_HEADER],
                {**_ok(c, "Households", models.Households), **std},
            )
        },
        "/api/v1/households/{household}/series/{category}": {
            "get": _op(
                "One household's series over a time range (action read), served only within the periods "
                "the caller's grant rests on (JSON served/refused, header X-Served-Periods)",
                [
                    HOUSEHOLD,
                    *WINDOWED,
                    AGG,
                    FIELDS,
                    _p("format", "query", "Representation (or Accept header)", _enum(FORMATS)),
                    _p(
                        "limit",
                        "query",
                        f"Rows per page (default {DEFAULT_LIMIT})",
                        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                    ),
                    _p(
                        "cursor",
                        "query",
                        "From X-Next-Cursor / next_cursor of the previous page (signed by the server)",
                        _pattern(f"^{CURSOR_PATTERN}$"),
                    ),
                ],
                {
                    "200": {
                        "description": "Rows sorted by time, device; X-Next-Cursor and Link when more",
                        "headers": {
                            "X-Next-Cursor": {"schema": _pattern(f"^{CURSOR_PATTERN}$")},
                            "X-Clause-Ids": {"schema": {"type": "string"}},
                        },
                        "content": {
                            "application/json": {"schema": c.of(models.SeriesPage)},
                            "text/csv": {"schema": {"type": "string"}},
                            "application/vnd.apache.arrow.file": {
                                "schema": {"type": "string", "format": "binary"}
                            },
                        },
                    },
                    **data,
                },
            )
        },
        "/api/v1/households/{household}/daily/{category}": {
            "get": _op(
                "Per local-day increase of a cumulative field (Asia/Tokyo days)",
                [
                    HOUSEHOLD,
                    *WINDOWED,
                    _p(
                        "field",
                        "query",
                        "A cumulative (*_total) field",
                        _enum(sorted(COUNTER_FIELDS)),
                        required=True,
                    ),
                    _p("format", "query", "Representation (or Accept header)", _enum(("json", "csv"))),
                ],
                {
                    "200": {
                        "description": "Days",
                        "content": {
                            "application/json": {"schema": c.of(models.Daily)},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    **data,
                },
            )
        },
        "/api/v1/households/{household}/energy": {
            "get": _op(
                "A home's energy over a Tokyo day, 7 days or month: energy per source and sink, the home's "
                "use, who fed whom, balance, self-consumption and self-sufficiency, cost under the "
                "configured tariff, the period before, last state of charge; hourly rows as CSV",
                [
                    HOUSEHOLD,
                    _p(
                        "purpose",
                        "query",
                        f"Declared purpose, or up to {params.MAX_PURPOSES} comma-separated (each category is "
                        "served under the first that allows it); or header X-Purpose",
                        _PURPOSES,
                    ),
                    _p("X-Purpose", "header", "Instead of the query parameter", _PURPOSES),
                    _p(
                        "date",
                        "query",
                        "A Tokyo day (default today); years 2000-2100",
                        _pattern(DAY_PATTERN, format="date", example="2026-06-01"),
                    ),
                    _p("span", "query", "day (default), week (7 days ending on date), month", _enum(SPANS)),
                    _p("format", "query", "Representation (or Accept header)", _enum(("json", "csv"))),
                ],
                {
                    "200": {
                        "description": "The report, or its hourly rows as CSV (a download)",
                        "content": {
                            "application/json": {"schema": c.of(models.EnergyReport)},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    **data,
                },
            )
        },
        "/api/v1/households/{household}/ledger": {
            "get": _op(
                "The homeowner's provision ledger, with the head of the household's chain",
                [
                    HOUSEHOLD,
                    _p(
                        "kept",
                        "query",
                        "A head kept from an earlier visit ('<records>:<hash>'): is it still at its place?",
                        _pattern(KEPT_PATTERN),
                    ),
                ],
                {**_ok(c, "Records", models.LedgerPage), **own},
            )
        },
        "/api/v1/households/{household}/consent": {
            "get": _op(
                "Suspensions of use / third-party provision",
                [HOUSEHOLD],
                {**_ok(c, "Settings", models.Consent), **own},
            ),
            "put": _op(
                "Suspend or resume (session callers send X-CSRF-Token)",
                [HOUSEHOLD],
                {**_ok(c, "Settings", models.Consent), **own, **_problems(c, 413, 415)},
                body=c.of(models.ConsentChange),
            ),
        },
        "/api/v1/households/{household}/erasure": {
            "get": _op(
                "Erasure requests and their outcome",
                [HOUSEHOLD],
                {**_ok(c, "Requests", models.Erasures), **own},
            ),
            "post": _op(
                "Request erasure (recorded; legal holds answered up front)",
                [HOUSEHOLD],
                {**_ok(c, "Recorded", models.Erasure, "202"), **own, **_problems(c, 413, 415)},
                body=c.of(models.ErasureAsk),
            ),
        },
        "/api/v1/stats/{category}": {
            "get": _op(
                "Fleet statistics (action read_stats), differentially private: the range snapped to the "
                "resolution, per window a noisy household count and each field's mean (no household ids, "
                "no minimum or maximum); windows whose noisy count is below the granting clause's minimum "
                "are suppressed; each release charges its epsilon to the caller's privacy budget (403 "
                "privacy_budget_exhausted once spent)",
                [*WINDOWED, STATS_AGG, FIELDS, EPSILON],
                {**_ok(c, "Release", models.Stats), **data},
            )
        },
        "/api/v1/explain": {
            "get": _op(
                "Why a request is (not) allowed, in words citing the clauses, companies and periods; the "
                "served and refused periods of the window (open when start or stop is left out).  For action "
                "read_stats, the policy's grant alone (clauses, minimum group), the same for every "
                "household, with no periods: a statistics grant is never decided for one household",
                [
                    _p("household", "query", "Household id", _pattern(HOUSEHOLD_PATTERN), required=True),
                    _p("category", "query", "Category", _enum(CATEGORIES), required=True),
                    _p("action", "query", "Action", _enum(ACTIONS)),
                    PURPOSE,
                    PURPOSE_HEADER,
                    _p(
                        "start",
                        "query",
                        "ISO 8601 instant with zone: the data window's start (default: open)",
                        _pattern(INSTANT_PATTERN, maxLength=40, example="2026-06-01T00:00:00Z"),
                    ),
                    _p(
                        "stop",
                        "query",
                        "ISO 8601 instant with zone, after start: the window's stop (default: open)",
                        _pattern(INSTANT_PATTERN, maxLength=40, example="2026-06-02T00:00:00Z"),
                    ),
                ],
                {**_ok(c, "Decision", models.Explanation), **std},
            )
        },
        "/api/v1/alerts/webhook": {
            "get": _op(
                "The installer's alert webhook address", [], {**_ok(c, "Webhook", models.Webhook), **std}
            ),
            "put": _op(
                "Set the alert webhook (https, or http to this machine); the answer carries its signing "
                "secret, shown once (session callers send X-CSRF-Token)",
                [],
                {**_ok(c, "Set", models.WebhookSet), **std, **_problems(c, 413, 415)},
                body=c.of(models.WebhookAsk),
            ),
            "delete": _op("Remove the alert webhook", [], {"204": {"description": "Removed"}, **std}),
        },
        "/api/v1/alerts": {
            "get": _op(
                "Open problems of the caller's installations, worst first (silent devices, collector "
                "health, faults, low yield, idle battery, stuck counters), each with since-when",
                [
                    _p("purpose", "query", "After-sales maintenance", _enum((MAINTENANCE_PURPOSE,))),
                    _p(
                        "X-Purpose", "header", "Instead of the query parameter", _enum((MAINTENANCE_PURPOSE,))
                    ),
                ],
                {**_ok(c, "Problems", models.Alerts), **std},
            )
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "HEMS telemetry access API",
            "version": "1",
            "description": "Every data response is decided by the policy compiled from the terms; every "
            "provision to a third party is written to the household's provision ledger first.",
        },
        "components": {
            "securitySchemes": {
                "token": {"type": "http", "scheme": "bearer", "description": "hems_<id>_<secret>"},
                "session": {"type": "apiKey", "in": "cookie", "name": "hems_session"},
            },
            "schemas": c.schemas,
        },
        "security": [{"token": []}, {"session": []}],
        "paths": paths,
    }
