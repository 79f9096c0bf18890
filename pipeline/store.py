"""What the pipeline needs from a time-series store, whichever one is configured.

Every registered store (``pipeline.stores``) implements this, and the conformance suite holds each
to it; the writer only ever sees ``StoreUnavailable`` (retry later, spool meanwhile) versus any other
exception (a bug, bad data or a schema that does not fit, which must not be retried forever).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import polars as pl

from pipeline.errors import PipelineError
from pipeline.points import Point
from pipeline.query import Deletion, SeriesQuery


class StoreUnavailable(PipelineError):
    """The store cannot be reached or cannot persist right now; the data is intact and may be retried.

    ``retry_after_s`` is the earliest the store asked to be tried again (a fleet answering 429 or 503
    with ``Retry-After``); the writer's replayer makes no attempt before it."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@runtime_checkable
class Sink(Protocol):
    """What the writer needs from where its batches go: a store, or the fleet a home gateway uploads
    to (``pipeline.upload.FleetUploader``), which cannot be queried."""

    async def write(self, points: Sequence[Point]) -> None:
        """Persist ``points``; idempotent per (measurement, household, device, ts_ns); raises
        ``StoreUnavailable`` on an outage (see ``Store.write``)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class SendsAhead(Protocol):
    """A sink whose ``write`` is done encoding and sending before it is done: ``write_sending`` is
    ``write`` that calls ``sent()`` once nothing of ``points`` is left to encode or to queue for the
    server, only answers (or retries) to wait for.  A writer with several batches at once starts its
    next batch then, so that batch's first request is ready when a request slot frees: without it a
    slot freed by a batch's last answer waited for the next batch's first chunk to be encoded
    (bench.ingest (d): two of three requests in flight a sixth of the time at 1.8 fields a reading)."""

    async def write_sending(self, points: Sequence[Point], sent: Callable[[], None]) -> None: ...


@runtime_checkable
class Store(Protocol):
    async def open(self) -> None:
        """Connect now and make the store ready for this code's data (the embedded store creates or
        migrates its schema).  Raises ``SchemaError`` for a store this code must not write to (a
        database from a newer release) and ``StoreUnavailable`` when it cannot be reached (a caller
        may start anyway and spool).  Optional for callers: every other method opens lazily."""
        ...

    async def write(self, points: Sequence[Point]) -> None:
        """Persist ``points``; idempotent per (measurement, household, device, ts_ns).

        Raises ``StoreUnavailable`` on an outage (nothing or a prefix may have been written; a retry of
        the whole batch is always safe because writes are upserts)."""
        ...

    async def query(self, q: SeriesQuery) -> pl.DataFrame:
        """Return the frame described in ``SeriesQuery``'s docstring (shape identical across stores)."""
        ...

    async def delete(self, d: Deletion) -> int | None:
        """Remove every point of ``d.household``'s ``d.measurement`` with ``d.start <= ts < d.stop``, and
        everything the store derived from them (rollups of a window that overlaps the range go whole);
        the number of rows removed, or ``None`` when the store cannot tell.  For erasure
        (``hems erasure complete``); idempotent, so a completion interrupted half-way is run again."""
        ...

    async def ping(self) -> bool:
        """True when a write would currently be attempted with a chance of success."""
        ...

    def data_version(self) -> int | None:
        """Cheap, synchronous: a value that changes whenever the stored data may have changed, or
        ``None`` when the store cannot tell (then nothing derived from a query may be reused)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class TracksChanges(Protocol):
    """A store that can tell *which* answers a write may have changed (``SQLiteStore``), so a reader
    caching answers keeps those no write touched."""

    def changed_since(self, version: int, q: SeriesQuery) -> bool:
        """Cheap, synchronous: whether the answer to ``q`` may differ from the one read when
        ``data_version()`` was ``version`` (as of the last ``data_version()`` call).  False only when
        no write since touched ``q``'s households' series of its category within its window."""
        ...

    def last_change(self, q: SeriesQuery) -> int | None:
        """A number naming the last write under ``q``'s footprint that is the same in every process
        reading this store (so they can share answers): equal numbers mean equal answers.  None when
        the store cannot tell yet."""
        ...


def change_oracle(store: Store) -> Callable[[int, SeriesQuery], bool]:
    """``(version, query) -> may the answer have changed since?`` for ``store``: its own
    ``changed_since`` when it tracks changes, else any new ``data_version()`` changes every answer."""
    if isinstance(store, TracksChanges):
        return store.changed_since
    return lambda version, q: store.data_version() != version


def change_log_position(store: Store) -> Callable[[SeriesQuery], int | None] | None:
    """``store.last_change`` when the store keeps a change log every reader agrees on, else None."""
    return store.last_change if isinstance(store, TracksChanges) else None
