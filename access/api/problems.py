"""One error shape for the whole API (RFC 9457 problem details) with a stable ``code``.

Clients branch on ``code``; ``detail`` is for people.  Refusals add ``reason`` (a code too) and the
``clause_ids`` that caused them, so a partner can check a refusal against the terms.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from aiohttp import web

PROBLEM_TYPE = "application/problem+json"
_TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Refused",
    404: "Not found",
    405: "Method not allowed",
    413: "Too large",
    429: "Too many requests",
    500: "Internal error",
    503: "Unavailable",
}


class ApiProblem(Exception):
    """Raised anywhere in a handler; the middleware turns it into the problem response."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        field: str | None = None,
        reason: str | None = None,
        clause_ids: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field
        self.reason = reason
        self.clause_ids = tuple(clause_ids) if clause_ids is not None else None
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})  # further members, e.g. the refused periods of a refusal

    def body(self) -> dict[str, object]:
        out: dict[str, object] = {
            "type": f"/api/v1/problems/{self.code}",
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        if self.field is not None:
            out["field"] = self.field
        if self.reason is not None:
            out["reason"] = self.reason
        if self.clause_ids is not None:
            out["clause_ids"] = list(self.clause_ids)
        out.update(self.extra)
        return out

    def response(self) -> web.Response:
        return web.Response(
            status=self.status,
            text=json.dumps(self.body()),
            content_type=PROBLEM_TYPE,
            headers=self.headers,
        )


def bad_param(field: str, detail: str) -> ApiProblem:
    return ApiProblem(400, "bad_parameter", detail, field=field)
