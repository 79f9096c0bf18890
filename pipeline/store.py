"""What the pipeline needs from a time-series store, whichever one is configured.

Both the embedded SQLite store and the InfluxDB store implement this; the writer only ever sees
``StoreUnavailable`` (retry later, spool meanwhile) versus any other exception (a bug or bad data,
which must not be retried forever).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import polars as pl

from pipeline.errors import PipelineError
from pipeline.points import Point
from pipeline.query import SeriesQuery


class StoreUnavailable(PipelineError):
    """The store cannot be reached or cannot persist right now; the data is intact and may be retried."""


@runtime_checkable
class Store(Protocol):
    async def write(self, points: Sequence[Point]) -> None:
        """Persist ``points``; idempotent per (measurement, household, device, ts_ns).

        Raises ``StoreUnavailable`` on an outage (nothing or a prefix may have been written; a retry of
        the whole batch is always safe because writes are upserts)."""
        ...

    async def query(self, q: SeriesQuery) -> pl.DataFrame:
        """Return the frame described in ``SeriesQuery``'s docstring (shape identical across stores)."""
        ...

    async def ping(self) -> bool:
        """True when a write would currently be attempted with a chance of success."""
        ...

    def data_version(self) -> int | None:
        """Cheap, synchronous: a value that changes whenever the stored data may have changed, or
        ``None`` when the store cannot tell (then nothing derived from a query may be reused)."""
        ...

    async def close(self) -> None: ...
