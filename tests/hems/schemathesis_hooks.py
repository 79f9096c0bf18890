"""Schemathesis hooks for ``test_schemathesis.py`` (loaded through ``SCHEMATHESIS_HOOKS``).

Three constraints of the API span parameters or depend on who calls, so an OpenAPI document cannot
state them: a time window must run forward and not be longer than the server serves
(``access.api.params.window``), a purpose must be given in the query or the ``X-Purpose`` header and
be one the token was issued for, and a household must be one the caller is related to.  Left alone,
nearly every generated data request stops at one of these refusals.  So, for the data operations:
a window the server would refuse is moved onto the day the test store holds, a missing purpose is
the caller's, and in half of the cases (a coin made from a hash of all the case's values, so runs
repeat) the purpose and the household are the caller's own and a generated cursor is dropped (only
cursors the server signed are served).  Every other value stays as generated.
"""

from __future__ import annotations

import os
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis

from access.api import params
from access.api.problems import ApiProblem

DATA_DAY = {"start": "2026-06-01T00:00:00Z", "stop": "2026-06-02T00:00:00Z"}
WINDOWED = ("/series/", "/daily/", "/stats/")


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    path = case.operation.path
    query = dict(case.query or {})
    path_parameters = dict(case.path_parameters or {})
    coin = zlib.crc32(repr((sorted(query.items()), sorted(path_parameters.items()))).encode()) % 2 == 0
    if any(part in path for part in WINDOWED):
        _repair_window(query, timedelta(minutes=1) if "/series/" in path else timedelta(hours=1))
        if "X-Purpose" not in (case.headers or {}):
            query.setdefault("purpose", os.environ["HEMS_ST_PURPOSE"])
    if coin:
        query.pop("cursor", None)  # only cursors the server signed are served; no document can make one
        if isinstance(query.get("purpose"), str):
            query["purpose"] = os.environ["HEMS_ST_PURPOSE"]
        for values in (query, path_parameters):
            if isinstance(values.get("household"), str):
                values["household"] = os.environ["HEMS_ST_HOUSEHOLD"]
    case.query = query
    case.path_parameters = path_parameters
    return case


def _repair_window(query: dict[str, Any], default_every: timedelta) -> None:
    """Move a window the server refuses for its order or span onto the data's day; a value the
    server refuses by itself (a malformed instant, say) is left for the server to refuse."""
    window = {k: str(query[k]) for k in ("start", "stop", "every") if k in query}
    try:
        params.window(window, datetime.now(UTC), default_every)
    except ApiProblem as refused:
        if refused.field in ("start", "stop", "every"):
            query.update(DATA_DAY)
    except Exception:
        pass
