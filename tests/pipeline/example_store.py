"""A complete store in one module: the README's "Add a store" path, exercised by test_add_a_store.py.

It keeps points in memory (a dict keyed by the point's identity), which is enough to hold it to the
whole store conformance suite once it is registered; a real store would put the same six methods in
front of a database.  Not a fake standing in for another store: it is a store of its own, and the
suite checks it like the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import polars as pl

from pipeline.frames import shape_result
from pipeline.points import Point, PointValue
from pipeline.query import Deletion, SeriesQuery, datetime_to_ns, output_dtype
from pipeline.store import StoreUnavailable
from pipeline.stores import StorePlugin

Key = tuple[str, str, str, int]


class MemoryStore:
    """``Store`` on a dict: writes merge field by field, as the contract asks of every store."""

    def __init__(self) -> None:
        self._points: dict[Key, dict[str, PointValue]] = {}
        self._version = 0
        self._closed = False

    async def open(self) -> None:
        if self._closed:
            raise StoreUnavailable("store is closed")

    async def write(self, points: Sequence[Point]) -> None:
        if self._closed:
            raise StoreUnavailable("store is closed")
        for p in points:
            self._points.setdefault(p.key, {}).update(p.fields)
        self._version += 1

    async def query(self, q: SeriesQuery) -> pl.DataFrame:
        if self._closed:
            raise StoreUnavailable("store is closed")
        rows = [
            (key, fields)
            for key, fields in self._points.items()
            if key[0] == q.category and key[1] in q.households and q.start_ns <= key[3] < q.stop_ns
        ]
        columns: dict[str, pl.Series] = {
            "ts_ns": pl.Series([key[3] for key, _ in rows], dtype=pl.Int64),
            "household": pl.Series([key[1] for key, _ in rows], dtype=pl.Utf8),
            "device": pl.Series([key[2] for key, _ in rows], dtype=pl.Utf8),
        }
        for name in q.fields:
            columns[name] = pl.Series(
                [fields.get(name) for _, fields in rows], dtype=output_dtype(name, None)
            )
        return shape_result(pl.DataFrame(columns), q)  # filters devices and empty rows, shapes, sorts

    async def delete(self, d: Deletion) -> int:
        if self._closed:
            raise StoreUnavailable("store is closed")
        start, stop = datetime_to_ns(d.start), datetime_to_ns(d.stop)
        gone = [
            key
            for key in self._points
            if key[0] == d.measurement and key[1] == d.household and start <= key[3] < stop
        ]
        for key in gone:
            del self._points[key]
        self._version += 1
        return len(gone)

    async def ping(self) -> bool:
        return not self._closed

    def data_version(self) -> int | None:
        return None if self._closed else self._version

    async def close(self) -> None:
        self._closed = True


STORE: Final = StorePlugin(open=lambda cfg: MemoryStore(), describe=lambda cfg: "memory")
