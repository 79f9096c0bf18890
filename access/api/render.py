"""JSON bodies shared by the API's handlers: responses, instants and data frames as columns."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

import polars as pl
from aiohttp import web

_ISO_MEMO_SIZE: Final = 200_000


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


class _IsoMemo(dict[int, str]):
    """Epoch microseconds -> the quoted ISO text ``frame_columns`` gives: pages of one resolution share
    their window starts (a day of minutes is 1,440 of them for every home), and a dictionary look-up is
    a fraction of formatting a date."""

    def __missing__(self, us: int) -> str:
        if len(self) >= _ISO_MEMO_SIZE:
            self.clear()
        text = self[us] = (
            '"' + iso(datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)) + '"'
        )
        return text


_ISO_MEMO: Final = _IsoMemo()
_DAY_US: Final = 86_400_000_000
_STAMP_WIDTH: Final = len('"2026-01-01T00:00:00.000Z",')
_YEAR_10000_US: Final = 253_402_300_800_000_000


class _GridMemo(dict[tuple[int, int], str]):
    """(day, step in us) -> the quoted ISO stamps of that day's windows joined by commas.  Every stamp
    has the same width, so the text of a run of consecutive windows is one slice of it."""

    def __missing__(self, key: tuple[int, int]) -> str:
        if len(self) >= 64:
            self.clear()
        day, step = key
        start = day * _DAY_US
        text = self[key] = ",".join(_ISO_MEMO[start + i * step] for i in range(_DAY_US // step))
        _ISO_MEMO.clear()  # a day of seconds would fill it with stamps no page asks for again
        return text


_GRID_MEMO: Final = _GridMemo()


def _grid_text(us: pl.Series) -> str | None:
    """The JSON text of a time column that is a regular grid of windows (``step`` dividing a day,
    consecutive, no gap), sliced from ``_GridMemo``; None for any other column."""
    n = us.len()
    if n < 2 or us.null_count() or not us.is_sorted():
        return None
    first, last = us[0], us[-1]
    step = us[1] - first
    if step < 1_000_000 or _DAY_US % step or first % step or last - first != step * (n - 1):
        return None
    if first < 0 or last >= _YEAR_10000_US:  # stamps of other years differ in width
        return None
    gaps = us.slice(1) - us.slice(0, n - 1)
    if gaps.min() != step or gaps.max() != step:
        return None
    pieces = []
    day = first // _DAY_US
    while True:
        begin = day * _DAY_US
        lo = max(first, begin)
        hi = min(last, begin + _DAY_US - step)
        text = _GRID_MEMO[(day, step)]
        at = (lo - begin) // step * _STAMP_WIDTH
        pieces.append(text[at : ((hi - begin) // step + 1) * _STAMP_WIDTH - 1])
        if hi == last:
            return ",".join(pieces)
        day += 1


def json_columns(df: pl.DataFrame) -> bytes:
    """``frame_columns(df)`` as compact JSON, written column by column without a Python object per
    value where it can be avoided (a page of 1,440 windows is mostly this cost): numbers and flags are
    formatted by polars (the shortest text that reads back to the same float), a text column holding
    one value is repeated, times come from ``_GridMemo`` (one device's windows) or ``_IsoMemo``.
    ``json.loads`` of the result equals ``frame_columns(df)``."""
    parts = []
    n = df.height
    for name, dtype in df.schema.items():
        column = df.get_column(name)
        # (Series methods only: those that go through polars' expression engine cost tens of us each.)
        if isinstance(dtype, pl.Datetime):
            if dtype.time_unit != "us":
                column = column.dt.cast_time_unit("us")
            us = column.cast(pl.Int64)
            grid = _grid_text(us)
            if grid is not None:
                text = grid
            elif column.null_count():
                text = ",".join("null" if v is None else _ISO_MEMO[v] for v in us.to_list())
            else:
                text = ",".join(map(_ISO_MEMO.__getitem__, us.to_list()))
        elif dtype.is_numeric() or dtype == pl.Boolean:
            values = column.cast(pl.Utf8)
            if values.null_count():
                values = values.fill_null("null")
            text = ",".join(values.to_list())
        elif dtype == pl.Utf8 and n and column.null_count() == 0 and (column == column[0]).all():
            one = json.dumps(column[0])
            text = (one + ",") * (n - 1) + one
        else:
            text = json.dumps(frame_columns(df.select(name))[name], separators=(",", ":"))[1:-1]
        parts.append(f"{json.dumps(name)}:[{text}]")
    return ("{" + ",".join(parts) + "}").encode()
