"""Rendered data pages, reused for as long as the data under each one is unchanged.

Charts poll, and many people open the same home's day: the same question arrives again and again while
the answer only changes when the store does.  A page is keyed by everything that shapes the answer
(household, category, fields, window, resolution, aggregation, cursor, limit, format, and whatever the
policy decision clipped from the window), so a reused page is byte-for-byte what a fresh query would
render.  Only the *query and rendering* are reused: every request is still authenticated, decided by
the policy and, for third parties, recorded in the ledger before anything is sent.

Each page remembers the store's data version it was read at and its *footprint*: the ``SeriesQuery``
it answered.  It is served again only while the store says nothing changed under that footprint
since (``Store.changed_since``): a collector writing household A's readings every second drops A's
pages whose window holds the new readings, and neither A's pages of other days nor any page of
household B.  A store that cannot tell (``data_version()`` is ``None``) gets no reuse at all.

Concurrent requests for a page not cached yet share one computation (otherwise a write sends every
waiting client to the store at once).  The cache holds a bounded number of bytes, least recently used
pages going first.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from pipeline.query import SeriesQuery

# (version read before the query, footprint) -> may the answer have changed since?
ChangedSince = Callable[[int, SeriesQuery], bool]


@dataclass(frozen=True, slots=True)
class Page:
    """``body``: the rendered rows (JSON ``columns`` object, CSV text or Arrow file) as bytes."""

    body: bytes
    count: int
    next_cursor: str | None


@dataclass(slots=True)
class _Entry:
    page: Page
    version: int  # the page holds every change up to this data version (moved up when re-checked)
    footprint: SeriesQuery


@dataclass
class PageCacheStats:
    hits: int = 0
    misses: int = 0
    shared: int = 0  # waited for a computation another request had started
    stale: int = 0  # dropped because a write touched their footprint
    uncacheable: int = 0  # the store could not say whether its data changed


class PageCache:
    def __init__(self, max_bytes: int, changed_since: ChangedSince) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0 (0 disables the cache)")
        self.max_bytes = max_bytes
        self.stats = PageCacheStats()
        self._changed_since = changed_since
        self._pages: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._bytes = 0
        self._pending: dict[Hashable, tuple[int, asyncio.Task[Page]]] = {}

    def __len__(self) -> int:
        return len(self._pages)

    @property
    def bytes(self) -> int:
        return self._bytes

    def _current(self, made_at: int, footprint: SeriesQuery, version: int) -> bool:
        return made_at >= version or not self._changed_since(made_at, footprint)

    async def get(
        self, version: int | None, key: Hashable, footprint: SeriesQuery, make: Callable[[], Awaitable[Page]]
    ) -> Page:
        """The page for ``key``, made by ``make`` unless a current one is cached or being made.

        ``version`` is the store's ``data_version()`` read *before* ``make`` queries the store, so a
        write that lands while the page is made counts as newer than the page."""
        if version is None or self.max_bytes == 0:
            self.stats.uncacheable += 1
            return await make()
        entry = self._pages.get(key)
        if entry is not None:
            if self._current(entry.version, footprint, version):
                entry.version = max(entry.version, version)  # checked up to now: later checks start here
                self._pages.move_to_end(key)
                self.stats.hits += 1
                return entry.page
            self.stats.stale += 1
            self._drop(key)
        pending = self._pending.get(key)
        if pending is not None and self._current(pending[0], footprint, version):
            self.stats.shared += 1
            return await asyncio.shield(pending[1])
        self.stats.misses += 1
        # A task of its own, so a caller that goes away does not cancel the others' answer.
        task = asyncio.ensure_future(self._make(version, key, footprint, make))
        task.add_done_callback(_consume_exception)
        self._pending[key] = (version, task)
        return await asyncio.shield(task)

    async def _make(
        self, version: int, key: Hashable, footprint: SeriesQuery, make: Callable[[], Awaitable[Page]]
    ) -> Page:
        try:
            page = await make()
        finally:
            pending = self._pending.get(key)
            if pending is not None and pending[0] == version:  # not a newer computation's entry
                del self._pending[key]
        size = len(page.body)
        old = self._pages.get(key)
        if size <= self.max_bytes and (old is None or old.version <= version):
            if old is not None:
                self._drop(key)
            self._pages[key] = _Entry(page, version, footprint)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, evicted = self._pages.popitem(last=False)
                self._bytes -= len(evicted.page.body)
        return page

    def _drop(self, key: Hashable) -> None:
        entry = self._pages.pop(key)
        self._bytes -= len(entry.page.body)


def _consume_exception(task: asyncio.Task[Page]) -> None:
    """Every waiter receives the exception; this only keeps asyncio from logging it when none is left."""
    if not task.cancelled():
        task.exception()
