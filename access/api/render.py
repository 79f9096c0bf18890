"""JSON bodies shared by the API's handlers: responses, instants and data frames as columns."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import polars as pl
from aiohttp import web


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def iso(ts: datetime | float) -> str:
    """UTC with milliseconds and a ``Z``: what JavaScript's ``Date`` parses everywhere.  ``ts`` is an
    aware datetime or epoch seconds."""
    if not isinstance(ts, datetime):
        ts = datetime.fromtimestamp(ts, UTC)
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
