"""Rendered data pages, reused for as long as the store's data under them is unchanged.

Charts poll, and many people open the same home's day: the same question arrives again and again while
the answer only changes when the store does.  A page is keyed by the store's data version (see
``Store.data_version``) and by everything that shapes the answer (household, category, fields, window,
resolution, aggregation, cursor, limit, format), so a reused page is byte-for-byte what a fresh query
would render.  Only the *query and rendering* are reused: every request is still authenticated,
decided by the policy and, for third parties, recorded in the ledger before anything is sent.

Concurrent requests for a page not cached yet share one computation (otherwise a change of version
sends every waiting client to the store at once).  The cache holds one data version at a time (versions
only grow) and a bounded number of bytes, least recently used pages going first.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Page:
    """``body``: the rendered rows (JSON ``columns`` object, CSV text or Arrow file) as bytes."""

    body: bytes
    count: int
    next_cursor: str | None


@dataclass
class PageCacheStats:
    hits: int = 0
    misses: int = 0
    shared: int = 0  # waited for a computation another request had started
    uncacheable: int = 0  # the store could not say whether its data changed


class PageCache:
    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0 (0 disables the cache)")
        self.max_bytes = max_bytes
        self.stats = PageCacheStats()
        self._version: int | None = None
        self._pages: OrderedDict[Hashable, Page] = OrderedDict()
        self._bytes = 0
        self._pending: dict[tuple[int, Hashable], asyncio.Task[Page]] = {}

    def __len__(self) -> int:
        return len(self._pages)

    @property
    def bytes(self) -> int:
        return self._bytes

    async def get(self, version: int | None, key: Hashable, make: Callable[[], Awaitable[Page]]) -> Page:
        """The page for ``key`` at data ``version``, made by ``make`` unless cached or being made."""
        if version is None or self.max_bytes == 0 or (self._version is not None and version < self._version):
            # (An older version: a request that read it before a write and is only now here; its page is
            # made for it alone rather than evicting every page of the newer version.)
            self.stats.uncacheable += 1
            return await make()
        if version != self._version:
            self._pages.clear()  # pages of an older version can never be asked for again
            self._bytes = 0
            self._version = version
        page = self._pages.get(key)
        if page is not None:
            self._pages.move_to_end(key)
            self.stats.hits += 1
            return page
        pending = self._pending.get((version, key))
        if pending is None:
            self.stats.misses += 1
            # A task of its own, so a caller that goes away does not cancel the others' answer.
            pending = asyncio.ensure_future(self._make(version, key, make))
            pending.add_done_callback(_consume_exception)
            self._pending[(version, key)] = pending
        else:
            self.stats.shared += 1
        return await asyncio.shield(pending)

    async def _make(self, version: int, key: Hashable, make: Callable[[], Awaitable[Page]]) -> Page:
        try:
            page = await make()
        finally:
            self._pending.pop((version, key), None)
        if version == self._version and len(page.body) <= self.max_bytes:
            self._pages[key] = page
            self._bytes += len(page.body)
            while self._bytes > self.max_bytes:
                _, old = self._pages.popitem(last=False)
                self._bytes -= len(old.body)
        return page


def _consume_exception(task: asyncio.Task[Page]) -> None:
    """Every waiter receives the exception; this only keeps asyncio from logging it when none is left."""
    if not task.cancelled():
        task.exception()
