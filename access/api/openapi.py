"""The OpenAPI 3.1 document of the JSON API, built as data so a test can hold it equal to the router."""

from __future__ import annotations

import functools
from typing import Any

from access.api.params import DEFAULT_LIMIT, FORMATS, MAX_LIMIT
from pipeline.query import AGGS, QUERYABLE_FIELDS
from seeds.vocabulary import ACTIONS, CATEGORIES, STORED_CATEGORIES


def _p(name: str, where: str, desc: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "description": desc,
        "required": required or where == "path",
        "schema": schema,
    }


_STR = {"type": "string"}
HOUSEHOLD = _p(
    "household", "path", "Opaque household id", {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}
)
CATEGORY = _p("category", "path", "Series category", {"type": "string", "enum": list(STORED_CATEGORIES)})
PURPOSE = _p(
    "purpose", "query", "Declared purpose (or header X-Purpose); must be registered for the token", _STR
)
PURPOSE_HEADER = _p("X-Purpose", "header", "Declared purpose, instead of the query parameter", _STR)
START = _p(
    "start",
    "query",
    "ISO 8601 instant with zone; default stop - 24h",
    {"type": "string", "format": "date-time"},
)
STOP = _p(
    "stop", "query", "ISO 8601 instant with zone; default now", {"type": "string", "format": "date-time"}
)
EVERY = _p(
    "every",
    "query",
    "Resolution: <n>s|m|h|d (1s..31d) or 'raw'",
    {"type": "string", "pattern": "^([1-9][0-9]{0,5}[smhd]|raw)$"},
)
AGG = _p("agg", "query", "Aggregation per window", {"type": "string", "enum": list(AGGS)})
FIELDS = _p(
    "fields",
    "query",
    "Comma-separated fields",
    {"type": "string", "example": "power_w,soc_pct", "x-vocabulary": sorted(QUERYABLE_FIELDS)},
)
PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problems(*codes: int) -> dict[str, Any]:
    words = {
        400: "Bad parameter (field named)",
        401: "Not authenticated",
        403: "Refused (reason, clause_ids)",
        429: "Rate limited (Retry-After)",
        503: "Store unavailable",
    }
    return {
        str(c): {"description": words[c], "content": {"application/problem+json": {"schema": PROBLEM}}}
        for c in codes
    }


def _ok(desc: str, content: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "200": {
            "description": desc,
            "content": content or {"application/json": {"schema": {"type": "object"}}},
        }
    }


def _op(
    summary: str,
    parameters: list[dict[str, Any]],
    responses: dict[str, Any],
    *,
    auth: bool = True,
    body: dict[str, Any] | None = None,
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
    std = _problems(400, 401, 403, 429)
    data = _problems(400, 401, 403, 429, 503)  # the endpoints that read the store
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
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "code"],
                    "properties": {
                        "type": _STR,
                        "title": _STR,
                        "status": {"type": "integer"},
                        "detail": _STR,
                        "code": _STR,
                        "field": _STR,
                        "reason": _STR,
                        "clause_ids": {"type": "array", "items": _STR},
                    },
                },
            },
        },
        "security": [{"token": []}, {"session": []}],
        "paths": {
            "/healthz": {"get": _op("Liveness", [], _ok("Alive"), auth=False)},
            "/readyz": {
                "get": _op("Readiness (store ping)", [], {**_ok("Ready"), **_problems(503)}, auth=False)
            },
            "/metrics": {
                "get": _op(
                    "Prometheus metrics (text format 0.0.4)",
                    [],
                    _ok("Metrics", {"text/plain": {"schema": _STR}}),
                    auth=False,
                )
            },
            "/api/v1/openapi.json": {"get": _op("This document", [], _ok("OpenAPI document"), auth=False)},
            "/api/v1/me": {
                "get": _op("The calling principal", [], {**_ok("Principal"), **_problems(401, 429)})
            },
            "/api/v1/households": {
                "get": _op(
                    "Households the caller holds a relationship with (and, given a purpose, the readable "
                    "categories)",
                    [PURPOSE, PURPOSE_HEADER],
                    {**_ok("Households"), **std},
                )
            },
            "/api/v1/households/{household}/series/{category}": {
                "get": _op(
                    "One household's series over a time range (action read)",
                    [
                        HOUSEHOLD,
                        CATEGORY,
                        PURPOSE,
                        PURPOSE_HEADER,
                        START,
                        STOP,
                        EVERY,
                        AGG,
                        FIELDS,
                        _p(
                            "format",
                            "query",
                            "Representation (or Accept header)",
                            {"type": "string", "enum": list(FORMATS)},
                        ),
                        _p(
                            "limit",
                            "query",
                            f"Rows per page (default {DEFAULT_LIMIT})",
                            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
                        ),
                        _p("cursor", "query", "From X-Next-Cursor / next_cursor of the previous page", _STR),
                    ],
                    {
                        "200": {
                            "description": "Rows sorted by time, device; X-Next-Cursor and Link when more",
                            "content": {
                                "application/json": {"schema": {"type": "object"}},
                                "text/csv": {"schema": _STR},
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
                        CATEGORY,
                        PURPOSE,
                        PURPOSE_HEADER,
                        START,
                        STOP,
                        EVERY,
                        _p("field", "query", "A *_total field", _STR, required=True),
                    ],
                    {**_ok("Days"), **data},
                )
            },
            "/api/v1/households/{household}/ledger": {
                "get": _op("The homeowner's provision ledger", [HOUSEHOLD], {**_ok("Records"), **std})
            },
            "/api/v1/households/{household}/consent": {
                "get": _op(
                    "Suspensions of use / third-party provision", [HOUSEHOLD], {**_ok("Settings"), **std}
                ),
                "put": _op(
                    "Suspend or resume (session callers send X-CSRF-Token)",
                    [HOUSEHOLD],
                    {**_ok("Settings"), **std},
                    body={
                        "type": "object",
                        "required": ["suspended"],
                        "properties": {
                            "scope": {"type": "string", "enum": ["provision", "use"]},
                            "suspended": {"type": "boolean"},
                            "recipient": {"type": ["string", "null"]},
                            "category": {"type": ["string", "null"], "enum": [*CATEGORIES, None]},
                        },
                    },
                ),
            },
            "/api/v1/households/{household}/erasure": {
                "get": _op("Erasure requests and their outcome", [HOUSEHOLD], {**_ok("Requests"), **std}),
                "post": _op(
                    "Request erasure (recorded; legal holds answered up front)",
                    [HOUSEHOLD],
                    {"202": {"description": "Recorded"}, **std},
                    body={
                        "type": "object",
                        "properties": {
                            "categories": {"type": ["array", "null"], "items": {"enum": list(CATEGORIES)}}
                        },
                    },
                ),
            },
            "/api/v1/stats/{category}": {
                "get": _op(
                    "Fleet statistics (action read_stats): no household ids; windows with fewer households "
                    "than the granting clause's minimum are suppressed",
                    [CATEGORY, PURPOSE, PURPOSE_HEADER, START, STOP, EVERY, AGG, FIELDS],
                    {**_ok("Aggregates"), **data},
                )
            },
            "/api/v1/explain": {
                "get": _op(
                    "Why a request is (not) allowed, in words citing the clauses",
                    [
                        _p("household", "query", "Household id", _STR, required=True),
                        _p(
                            "category",
                            "query",
                            "Category",
                            {"type": "string", "enum": list(CATEGORIES)},
                            required=True,
                        ),
                        _p("action", "query", "Action", {"type": "string", "enum": list(ACTIONS)}),
                        PURPOSE,
                        PURPOSE_HEADER,
                    ],
                    {**_ok("Decision"), **std},
                )
            },
            "/api/v1/alerts": {
                "get": _op(
                    "Open problems of the caller's installations, worst first (silent devices, collector "
                    "health, faults, low yield, idle battery, stuck counters), each with since-when",
                    [PURPOSE, PURPOSE_HEADER],
                    {**_ok("Problems"), **std},
                )
            },
        },
    }
