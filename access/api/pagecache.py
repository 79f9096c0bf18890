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

``hems serve --workers N`` runs N processes, each with this cache; after a write, each would make the
same page again.  ``SharedPages`` lets them hand pages to each other through one SQLite file: a page
is stored with the store's ``last_change`` of its footprint (a number every process reading the store
agrees on), and another process takes it when its own ``last_change`` for that footprint is the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pipeline.query import SeriesQuery
from pipeline.sqlite_schema import contended

log = logging.getLogger(__name__)

# (version read before the query, footprint) -> may the answer have changed since?
ChangedSince = Callable[[int, SeriesQuery], bool]
# footprint -> the store's number for the last write under it, the same in every process (None: unknown)
LastChange = Callable[[SeriesQuery], int | None]
SHARED_TTL_S: Final = 600.0  # pages no process asked for this long are deleted from the shared file


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
    from_other_process: int = 0  # made by another process of the server (``SharedPages``)
    stale: int = 0  # dropped because a write touched their footprint
    uncacheable: int = 0  # the store could not say whether its data changed


class SharedPages:
    """Pages made by one process of a server, for the others: one SQLite file (WAL, no fsync: it is a
    cache, losing it costs a page made again).  Keys are digests of the page keys; a page is taken only
    with the ``last_change`` number it was made under.  Calls are short (a key look-up or an insert),
    so they run on the event loop.

    The file being busy (another process mid-insert, its log being reset) is expected and costs only
    a page made here instead.  Any other SQLite failure (the table gone, the disk full or failing)
    costs the same but means sharing no longer works: it is logged, once per process, so the log
    says why the workers stopped handing pages over without a line per request."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=OFF")
        self._conn.execute(
            "CREATE TABLE IF NOT EXISTS pages (key BLOB PRIMARY KEY, tag INTEGER NOT NULL, "
            "made REAL NOT NULL, body BLOB NOT NULL, count INTEGER NOT NULL, next_cursor TEXT)"
        )
        # Then no busy wait: the calls run on the event loop, and a page the file cannot take or give
        # at once is simply made here (SQLite's busy handler sleeps up to 100 ms a try: every worker's
        # requests stalled behind another worker's insert).
        self._conn.execute("PRAGMA busy_timeout = 0")
        self._puts = 0
        self._failed = False

    def _unshared(self, exc: sqlite3.OperationalError) -> None:
        """A failed look-up or insert: the page is made or kept here only.  Re-raises nothing."""
        if not contended(exc) and not self._failed:
            self._failed = True
            log.warning("shared page file %s failed, pages are not shared reliably: %s", self.path, exc)

    @staticmethod
    def digest(key: Hashable) -> bytes:
        """Stable across processes (``hash()`` of a string is not)."""
        return hashlib.blake2b(repr(key).encode(), digest_size=16).digest()

    def get(self, key: bytes, tag: int) -> Page | None:
        try:
            row = self._conn.execute(
                "SELECT body, count, next_cursor FROM pages WHERE key = ? AND tag = ?", (key, tag)
            ).fetchone()
        except sqlite3.OperationalError as exc:  # made here instead
            self._unshared(exc)
            return None
        return None if row is None else Page(row[0], row[1], row[2])

    def put(self, key: bytes, tag: int, page: Page) -> None:
        now = time.time()
        try:
            self._conn.execute(
                "INSERT OR REPLACE INTO pages VALUES (?, ?, ?, ?, ?, ?)",
                (key, tag, now, page.body, page.count, page.next_cursor),
            )
            self._puts += 1
            if self._puts % 256 == 0:
                self._conn.execute("DELETE FROM pages WHERE made < ?", (now - SHARED_TTL_S,))
        except sqlite3.OperationalError as exc:  # the page is simply not shared
            self._unshared(exc)

    def close(self) -> None:
        self._conn.close()


class PageCache:
    def __init__(
        self,
        max_bytes: int,
        changed_since: ChangedSince,
        shared: SharedPages | None = None,
        last_change: LastChange | None = None,
    ) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0 (0 disables the cache)")
        if shared is not None and last_change is None:
            raise ValueError("sharing pages needs the store's last_change")
        self.max_bytes = max_bytes
        self.stats = PageCacheStats()
        self._changed_since = changed_since
        self._shared = shared
        self._last_change = last_change
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
        self,
        version: int | None,
        key: Hashable,
        footprint: SeriesQuery,
        make: Callable[[], Awaitable[Page]],
        *,
        share: bool = True,
    ) -> Page:
        """The page for ``key``, made by ``make`` unless a current one is cached or being made.

        ``version`` is the store's ``data_version()`` read *before* ``make`` queries the store, so a
        write that lands while the page is made counts as newer than the page.  ``share=False`` keeps
        the page from the other processes (``SharedPages``): for pages cheaper to make than to pass
        through the file, such as the open minute of a live chart, which every write makes stale."""
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
        task = asyncio.ensure_future(self._make(version, key, footprint, make, share))
        task.add_done_callback(_consume_exception)
        self._pending[key] = (version, task)
        return await asyncio.shield(task)

    def get_now(
        self, version: int | None, key: Hashable, footprint: SeriesQuery, make_now: Callable[[], Page | None]
    ) -> Page | None:
        """``get`` without an await, for a page that can often be made at once: the cached page when it
        is current, else the page ``make_now`` makes (kept, a miss); None, with nothing counted, when
        ``make_now`` cannot make it (it needs the store) or another request is making it already: then
        ``get`` it.

        A live chart's answer made again after a write mostly joins pieces this process already holds.
        Through ``get`` each of those costs a task and two turns of the event loop before its request
        goes on, and after a write every live chart's answer is made again at once: under load each
        turn is a few hundred other callbacks, so the answers made again were the slowest of all."""
        if version is None or self.max_bytes == 0:
            return None
        entry = self._pages.get(key)
        if entry is not None and self._current(entry.version, footprint, version):
            entry.version = max(entry.version, version)
            self._pages.move_to_end(key)
            self.stats.hits += 1
            return entry.page
        pending = self._pending.get(key)
        if pending is not None and self._current(pending[0], footprint, version):
            return None
        page = make_now()
        if page is None:
            return None
        if entry is not None:
            self.stats.stale += 1
        self.stats.misses += 1
        return self._keep(version, key, footprint, page)

    def has(self, version: int | None, key: Hashable, footprint: SeriesQuery) -> bool:
        """Whether ``get`` would answer from this process's cache (no hit is counted, nothing is made):
        a caller that makes several pages with one query asks which of them it needs."""
        return self.peek(version, key, footprint) is not None

    def peek(self, version: int | None, key: Hashable, footprint: SeriesQuery) -> Page | None:
        """The page ``get`` would answer from this process's cache, else None (no hit is counted,
        nothing is made).  Found current, it counts as checked up to ``version``, as in ``get``."""
        if version is None or self.max_bytes == 0:
            return None
        entry = self._pages.get(key)
        if entry is None or not self._current(entry.version, footprint, version):
            return None
        entry.version = max(entry.version, version)
        return entry.page

    def current_pages(
        self, version: int | None, wanted: Sequence[tuple[Hashable, SeriesQuery]]
    ) -> list[Page] | None:
        """The pages of ``wanted`` (key, footprint) when every one of them is current in this process's
        cache, each counted and kept as a hit of ``get``; else None, and nothing counted or made.  For
        a caller that needs several pages at once and has a slower way that makes what is missing: a
        live chart's answer made again after a write, whose pieces another chart's query made."""
        if version is None or self.max_bytes == 0:
            return None
        pages = self._pages
        found = []
        for key, footprint in wanted:
            entry = pages.get(key)
            if entry is None or not self._current(entry.version, footprint, version):
                return None
            found.append(entry)
        for (key, _), entry in zip(wanted, found, strict=True):
            if entry.version < version:
                entry.version = version
            pages.move_to_end(key)
        self.stats.hits += len(found)
        return [entry.page for entry in found]

    def vouch(self, version: int | None, keys: Iterable[Hashable]) -> None:
        """Mark the pages of ``keys`` held here as current at ``version`` without checking them: the
        caller knows it (they are the parts of a page just found current under a footprint holding
        theirs).  The store's change log forgets old changes, so a page left unchecked for long
        counts as changed when it is next asked for."""
        if version is None:
            return
        pages = self._pages
        for key in keys:
            entry = pages.get(key)
            if entry is not None and entry.version < version:
                entry.version = version

    def put(self, version: int | None, key: Hashable, footprint: SeriesQuery, page: Page) -> None:
        """Keep a page made along with another (one query that answers both), read at ``version``."""
        if version is not None and self.max_bytes > 0:
            self._keep(version, key, footprint, page)

    async def _make(
        self,
        version: int,
        key: Hashable,
        footprint: SeriesQuery,
        make: Callable[[], Awaitable[Page]],
        share: bool,
    ) -> Page:
        shared, tag = self._shared if share else None, None
        try:
            if shared is not None and self._last_change is not None:
                tag = self._last_change(footprint)
                if tag is not None:
                    key_digest = shared.digest(key)
                    found = shared.get(key_digest, tag)
                    if found is not None:
                        self.stats.from_other_process += 1
                        return self._keep(version, key, footprint, found)
            page = await make()
            if shared is not None and tag is not None:
                shared.put(key_digest, tag, page)
        finally:
            pending = self._pending.get(key)
            if pending is not None and pending[0] == version:  # not a newer computation's entry
                del self._pending[key]
        return self._keep(version, key, footprint, page)

    def _keep(self, version: int, key: Hashable, footprint: SeriesQuery, page: Page) -> Page:
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
