"""``GET /api/v1/households/{household}/series/{category}``: one household's readings over a range.

This is the endpoint dashboards poll and partners export from, so its cost per request is kept to
what each request must pay by itself:

* **authentication, rate limit, policy decision and ledger record** run for every request;
* **the served periods**: the decision says which part of the window may be served; the page reads the
  store only within those periods (one query per period), and they are part of every cache key, so a
  page made for a caller whose grant reaches further back can never be handed to one whose grant
  does not (a new occupant and the previous one asking the same URL get different pages);
* **parsing**: what a request asks (household, category, purpose, fields, window, cursor, format) is
  a function of its target and two headers alone when the window is given as two absolute instants,
  so that parse is remembered (``ask_of``); a window relative to now is parsed every time;
* **the answer**: the rendered page is one entry of the page cache (``access.api.pagecache``), made
  again only when a write touches its household, category and window; CSV and Arrow go out as that
  page itself, while a JSON envelope (per caller purpose, clauses and served periods) or gzip form is
  a second entry made from it.  Compression is gzip level 1 by ISA-L (``isal``): a day of minutes
  compresses 4x faster than zlib's level 1, to the same size.
"""

from __future__ import annotations

import asyncio
import functools
import io
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import polars as pl
from aiohttp import web

from access.api import models, params
from access.api.cursor import CursorCodec
from access.api.pagecache import Page
from access.api.problems import bad_param
from access.api.render import (
    column_pieces,
    gzip_json,
    iso,
    join_pieces,
    json_columns,
    live_json,
    pieces_of_runs,
    prepare_closed,
)
from access.api.service import (
    access_request,
    decide_fields,
    empty_series,
    header_periods,
    periods_json,
    query_served,
    record,
    series_queries,
    series_query,
    served_within,
    utc,
)
from access.api.state import AppState, caller_of
from access.decision import Decision
from access.periods import Periods, intersect, span
from pipeline.query import SeriesQuery

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ASK_MEMO_SIZE = 4096
FOOTPRINT_MEMO_SIZE = 16384
PLAN_MEMO_SIZE = 2048  # live charts' plans (about 8 KB each for a day of minutes), good for a minute
CHUNK_WINDOWS = 60  # the closed part of a live page is kept in pieces of this many windows (``_live_page``)
LIVE_RECENT_S = 10.0  # a live chart asked this lately has its pieces made with others' (``_others``)
LIVE_BATCH = 256  # at most this many households' pieces from one store query
LIVE_GROUPS = 256  # kinds of live chart remembered (``AppState.live_charts``; forgotten all at once beyond)
AHEAD_S = 20.0  # a live chart's next window's closed part is made this long before it begins
AHEAD_MIN_EVERY = 30.0  # ... at resolutions this coarse or coarser
AHEAD_BATCH = 32  # households' pieces per store query when made ahead (one turn of the event loop cuts them)
AHEAD_CHECK_S = 5.0  # what was made ahead is checked again this often (within the change log's memory)
log = logging.getLogger(__name__)
_CONTENT_TYPES = {
    "json": "application/json; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
    "arrow": "application/vnd.apache.arrow.file",
}


@dataclass(frozen=True, slots=True)
class SeriesAsk:
    """A series request as parsed: everything it asks, nothing about who asks."""

    household: str
    category: str
    purpose: str
    fmt: str
    fields: tuple[str, ...] | None  # None: the granted ones (``service.decide_fields``)
    window: params.Window
    agg: str
    limit: int
    after: tuple[int, str] | None  # the cursor: the last (time in us, device) already sent
    read_from: datetime  # where this page reads from: the window's start, or the cursor's window
    footprint: SeriesQuery  # [read_from, stop) of this household and category: what writes make it stale
    asked: tuple[object, ...]  # what a next-page cursor is bound to
    page_key: Hashable  # the page's key in the page cache, before the served periods are added


def ask_of(state: AppState, request: web.Request) -> SeriesAsk:
    """The request parsed, from ``state.series_asks`` when the same target came before.  Only asks
    with an absolute window are kept there (one relative to now differs by the time it arrives);
    the memo is bounded and starts afresh when full (a parse costs tens of microseconds)."""
    headers = request.headers
    key = (request.raw_path, headers.get("X-Purpose"), headers.get("Accept"))
    ask = state.series_asks.get(key)
    if ask is None:
        ask = parse(request, state.now_dt(), state.cursors)
        if "start" in request.query and "stop" in request.query:
            if len(state.series_asks) >= ASK_MEMO_SIZE:
                state.series_asks.clear()
            state.series_asks[key] = ask
    return ask


@functools.lru_cache(maxsize=FOOTPRINT_MEMO_SIZE)
def footprint(household: str, category: str, start: datetime, stop: datetime) -> SeriesQuery:
    """The points a page of ``[start, stop)`` is made of (changes are tracked by household, category and
    time, whatever the fields and aggregation): the category's default fields, raw, so it refuses
    nothing the decision and the query would not (their 403 or 400 comes first, as without it).
    Remembered: a live chart names the footprints of its day's hours, the same ones every minute,
    and another chart's query names those of every chart of its kind (a query checks its values)."""
    return series_query((household,), category, params.DEFAULT_FIELDS[category], start, stop, None, "mean")


def parse(request: web.Request, now: datetime, cursors: CursorCodec) -> SeriesAsk:
    """A 400 naming the parameter for anything malformed; ``now`` fills a missing start or stop."""
    household = params.household_id(request.match_info["household"])
    category = params.category(request.match_info["category"])
    purpose = params.declared_purpose(request.query, request.headers)
    q = request.query
    fmt = params.fmt(q.get("format"), request.headers.get("Accept"))
    fields = params.fields_asked(q.get("fields"))
    win = params.window(q, now, timedelta(minutes=1))
    agg = params.agg(q.get("agg"))
    limit = params.limit(q.get("limit"))
    asked = (household, category, fields, win.start, win.stop, win.every, agg)
    page_start, after = win.start, None
    if "cursor" in q:
        t_us, device = cursors.decode(q["cursor"], asked)
        page_start = _EPOCH + timedelta(microseconds=t_us)
        # Windows are aligned to the epoch, so the first one may start before ``start``.
        if not win.start - (win.every or timedelta(0)) <= page_start < win.stop:
            raise bad_param("cursor", "the cursor is not one this query returned")
        after = (t_us, device)
    # Never read before the caller's start: a later page sees the same windows as the first.
    read_from = max(page_start, win.start)
    page_key = (asked, after, limit, fmt)
    return SeriesAsk(
        household,
        category,
        purpose,
        fmt,
        fields,
        win,
        agg,
        limit,
        after,
        read_from,
        footprint(household, category, read_from, win.stop),
        asked,
        page_key,
    )


async def series(request: web.Request) -> web.Response:
    state, caller = caller_of(request)
    ask = ask_of(state, request)
    win = ask.window
    req = access_request(state, caller, ask.household, ask.category, "read", ask.purpose, win.start, win.stop)
    decision, fields = decide_fields(state, caller, req, ask.fields)
    served = served_within(decision, win.start, win.stop)  # what the whole answer may carry
    periods = served_within(decision, ask.read_from, win.stop)  # what this page reads
    gzipped = ask.fmt != "arrow" and params.accepts_gzip(request.headers.get("Accept-Encoding"))
    version = state.store.data_version()  # before the query: a write during it makes the page stale
    clause_ids = decision.clause_ids
    page_key = (ask.page_key, fields, periods)
    # What the page answers, for the cache to tell which writes make it stale: the page's whole window,
    # which holds every served period it reads (a write in a refused gap only costs a page made again).
    footprint = ask.footprint

    def page() -> Awaitable[Page]:
        return state.pages.get(
            version, ("page", page_key), footprint, lambda: _render(state, ask, fields, periods)
        )

    # Only a cache keeps the closed part (without one the page is made whole: one query).
    split = open_window_start(ask, state.clock()) if state.pages.max_bytes and version is not None else None
    # A live chart, asked now: its pieces are made along with those of the others (``_others``).
    recent = (
        None
        if split is None or win.every is None
        else _charts_asked(
            state,
            (ask.category, fields, win.every, ask.agg),
            ask.household,
            LiveAsk(state.clock(), ask.read_from.timestamp(), win.stop.timestamp(), periods, gzipped),
        )
    )

    def live_reply(parts: tuple[list[Page], Page, list[Page]] | None) -> Page | None:
        """The answer joined from a live chart's parts; None without parts, or when their columns
        differ (the page is then made whole)."""
        if parts is None:
            return None
        before, closed, after = parts
        count = sum(part.count for part in (*before, closed, *after))
        head = _envelope(ask, fields, decision, served, count, None)
        body = live_json(head, [p.body for p in before], closed.body, [p.body for p in after], b"}", gzipped)
        return None if body is None else Page(body, count, None)

    def make_reply_now() -> Page | None:
        """A live chart's answer when every part of it is current in this process (no await)."""
        if split is None or recent is None:
            return None
        parts = _live_chart(state, ask, fields, periods, split, version, recent).current_parts()
        return live_reply(None if parts is None else _within_limit(parts, ask.limit))

    async def make_reply() -> Page:
        if split is not None and recent is not None:
            reply = live_reply(await _live_page(state, ask, fields, periods, split, version, recent))
            if reply is not None:
                return reply
        return _reply(ask, fields, decision, served, await page(), gzipped)

    # CSV and Arrow as they are go out as the page itself.  Otherwise one more entry per page and
    # encoding, and for JSON per caller purpose, clauses and served periods too (only its envelope names
    # them): the policy was decided above for this request, and the ledger record below is written for
    # this response.
    if ask.fmt != "json" and not gzipped:
        reply = await page()
    else:
        envelope_key = (ask.purpose, clause_ids, served) if ask.fmt == "json" else None
        reply_key = ("reply", page_key, gzipped, envelope_key)
        # A live chart's answer is not passed between the workers: each keeps the pieces it is made of
        # current itself (``_live_page``).  Taken from another worker, a worker's pieces went stale
        # unseen, and at the next whole minute it read the whole day of every live chart again.
        found = None if recent is None else state.pages.get_now(version, reply_key, footprint, make_reply_now)
        if found is None:
            found = await state.pages.get(version, reply_key, footprint, make_reply, share=split is None)
        reply = found
    headers = {
        "Content-Type": _CONTENT_TYPES[ask.fmt],
        "X-Clause-Ids": ",".join(clause_ids),
        "X-Served-Periods": header_periods(served),
    }
    if ask.fmt != "arrow":
        headers["Vary"] = "Accept-Encoding"
    if gzipped:
        headers["Content-Encoding"] = "gzip"
    if reply.next_cursor is not None:
        headers["X-Next-Cursor"] = reply.next_cursor
        # The window as resolved for this page: a start or stop left to "now" (or given as "-20m")
        # must not move under the cursor, which is bound to the instants of the first page.
        nxt = request.rel_url.update_query(
            {"cursor": reply.next_cursor, "start": iso(ask.window.start), "stop": iso(ask.window.stop)}
        )
        headers["Link"] = f'<{nxt}>; rel="next"'
    # Recorded last, once the body is built, so no record stands for an answer that failed to render.
    await record(state, caller, decision, ask.household, ask.category, ask.purpose, periods)
    return web.Response(body=reply.body, headers=headers)


async def _frame(
    state: AppState,
    queries: list[SeriesQuery],
    kind: tuple[str, tuple[str, ...], timedelta | None, str],
) -> pl.DataFrame:
    """The rows of ``queries`` (``series_queries``: one per served period), or the empty frame of
    ``kind`` (category, fields, resolution, aggregation) when there is none (a cursor past the last
    served period)."""
    if not queries:
        return empty_series(*kind)
    return await query_served(state, queries)


async def _render(state: AppState, ask: SeriesAsk, fields: tuple[str, ...], periods: Periods) -> Page:
    every = ask.window.every
    queries = series_queries(ask.household, ask.category, fields, periods, every, ask.agg)
    df = await _frame(state, queries, (ask.category, fields, every, ask.agg))
    return render_page(df, ask, state.cursors)


def open_window_start(ask: SeriesAsk, now: float) -> float | None:
    """Where a live chart's page is cut in two (epoch seconds), or None for a page made whole.

    A dashboard asks for the day up to now again and again while the collector writes the current
    minute every second.  Made whole, each write would make the whole day again (the query of 1,440
    windows and their rendering); cut at the start of the window before the one holding now (which
    takes readings that arrive late, up to a whole window), the closed windows before the cut stay
    cached until a write touches them, and only the open windows are queried and rendered again.
    The cut moves when a new window begins, the moment a rolling window's URL moves on too, so every
    dashboard's closed part is made again once a minute, not twice.  The cut is a window boundary
    (windows are aligned to the epoch), so no window is split and the two parts joined are exactly
    the whole page.  JSON first pages only: a cursor or a row limit below the rows is resolved on
    the whole page."""
    every = ask.window.every
    if ask.fmt != "json" or ask.after is not None or every is None:
        return None
    step = every.total_seconds()
    cut = (now // step - 1) * step
    if not ask.read_from.timestamp() < cut < ask.window.stop.timestamp():
        return None
    return cut


async def _live_page(
    state: AppState,
    ask: SeriesAsk,
    fields: tuple[str, ...],
    periods: Periods,
    cut: float,
    version: int | None,
    recent: dict[str, LiveAsk],
) -> tuple[list[Page], Page, list[Page]] | None:
    """The page in parts, each a page-cache entry with its own footprint, as ``column_pieces``
    (``render.live_json`` joins them): the pieces before the part kept compressed, that part, and the
    pieces after it, the open part (the windows from ``cut``) last; None when the rows exceed the
    limit (the whole page then decides where the next page starts).

    A write to the open window makes only the open part again; the closed part is ``_Chart``'s (when
    the window moves on, ``prepare_next_windows`` has made most of it already)."""
    chart = _live_chart(state, ask, fields, periods, cut, version, recent)
    parts = chart.current_parts()
    if parts is None:
        try:
            before, closed, after = await chart.closed_part()
            live = await chart.piece(chart.chunks)
        except _Unjoinable:
            return None
        parts = (before, closed, [*after, live])
    return _within_limit(parts, ask.limit)


def _live_chart(
    state: AppState,
    ask: SeriesAsk,
    fields: tuple[str, ...],
    periods: Periods,
    cut: float,
    version: int | None,
    recent: dict[str, LiveAsk],
) -> _Chart:
    every = ask.window.every
    assert every is not None
    return _Chart.plan(
        state,
        ask.household,
        (ask.category, fields, every, ask.agg),
        (ask.read_from.timestamp(), cut, ask.window.stop),
        periods,
        version,
        recent,
        LIVE_BATCH,
    )


def _within_limit(
    parts: tuple[list[Page], Page, list[Page]], limit: int
) -> tuple[list[Page], Page, list[Page]] | None:
    """``parts``, or None when their rows exceed the page's limit (the whole page then decides where
    the next page starts)."""
    return None if sum(part.count for part in (*parts[0], parts[1], *parts[2])) > limit else parts


ChartKind = tuple[str, tuple[str, ...], timedelta, str]  # category, fields, resolution, aggregation


@dataclass(frozen=True, slots=True)
class LiveAsk:
    """When a household's live chart of one kind was last asked, and what it read: the next window's
    closed part is made ahead from it (``prepare_next_windows``)."""

    at: float  # the clock when asked
    read_from: float  # the page's start and stop (epoch seconds)
    stop: float
    periods: Periods  # the served periods it read
    gzipped: bool


@dataclass(slots=True)
class _Chart:
    """A live chart's page (one household, one kind of chart, one window) as page-cache pieces, each
    with its own key and footprint: the closed chunks, then, for an answer, the open part.

    The windows before the cut are chunks of ``CHUNK_WINDOWS`` windows aligned to the epoch: a rolling
    window ("the last 24 h", its stop the next whole minute) moves every minute, and then only the
    first chunk (cut at the new start) and the last (grown by a minute) are read again, not the whole
    day.  The whole chunks between them are joined into one entry (``middle``) that stays the same all
    hour, so at a minute no chart joins, splits or compresses its day again (which, for every live
    chart at once, stalled each worker's event loop for 75-90 ms).  Chunks missing side by side are
    read in one query, and with them the same pieces of the other live charts of its kind asked lately
    (``recent``, see ``_others``), ``batch`` households at most."""

    state: AppState
    household: str
    kind: ChartKind
    window: tuple[float, float, datetime | None]  # where the page reads from, the cut, its stop
    periods: Periods
    version: int | None
    recent: dict[str, LiveAsk]
    batch: int
    spans: tuple[tuple[datetime, datetime, Periods], ...]  # each piece's start, stop and served periods
    keys: tuple[Hashable, ...]
    fps: tuple[SeriesQuery, ...]
    chunks: int  # pieces ``[0, chunks)`` are the closed chunks; the open part, when planned, follows

    @classmethod
    def plan(
        cls,
        state: AppState,
        household: str,
        kind: ChartKind,
        window: tuple[float, float, datetime | None],
        periods: Periods,
        version: int | None,
        recent: dict[str, LiveAsk],
        batch: int,
    ) -> _Chart:
        """The pieces of ``window`` (where the page reads from, the cut, and the page's stop: None
        plans the closed part alone)."""
        spans, keys, fps, chunks = _pieces_of(household, kind, window, periods)
        return cls(state, household, kind, window, periods, version, recent, batch, spans, keys, fps, chunks)

    def key_of(self, household: str, k: int) -> tuple[Hashable, SeriesQuery]:
        """Piece ``k``'s key and footprint for ``household`` (its chart of this kind and window, read
        over the same served periods), as its own request plans them."""
        _, keys, fps, _ = _pieces_of(household, self.kind, self.window, self.periods)
        return keys[k], fps[k]

    async def make(self, i: int, j: int) -> Page:
        """Pieces ``i`` to ``j - 1`` from one query: ``i`` is returned, the others kept; and the same
        pieces of every other household whose live chart of this kind was asked lately and whose
        piece ``i`` is not current (``_others``: a write, or the window moving on, makes the same
        pieces of every chart stale at once)."""
        state, version = self.state, self.version
        # Another chart's query may have made this piece, or be making it, since this request looked
        # (``_made_along``, then the page cache, which starts this in a task of its own): charts asked
        # in the same turn of the event loop all found their pieces missing.
        in_flight = state.live_batches.get(self.keys[i])
        if in_flight is not None:
            await asyncio.shield(in_flight)
        current = state.pages.peek(version, self.keys[i], self.fps[i])
        if current is not None:
            return current
        category, fields, every, agg = self.kind
        served = intersect(self.periods, span(self.spans[i][0].timestamp(), self.spans[j - 1][1].timestamp()))
        queries = series_queries(self.household, category, fields, served, every, agg)
        others = _others(
            state, self.recent, self.household, version, lambda h: self.key_of(h, i), self.batch - 1
        )
        if len(queries) == 1 and others:
            households = [self.household, *others]
            # Their requests wait for this query instead of each starting one of its own.
            claimed = [self.key_of(h, i)[0] for h in others]
            batch = asyncio.get_running_loop().create_future()
            for key in claimed:
                state.live_batches[key] = batch
            try:
                df = await query_served(state, [replace(queries[0], households=tuple(households))])
            finally:
                for key in claimed:
                    if state.live_batches.get(key) is batch:
                        del state.live_batches[key]
                batch.set_result(None)
            # Each household's rows together, each in page order (one row per device and window:
            # the order ``_page_order`` gives a household's own frame).
            df = df.sort("household", "time", "device")
            rows = _rows_by_household(df)
        else:
            households = [self.household]
            df = _page_order(await _frame(state, queries, self.kind))
            rows = {self.household: (0, df.height)}
        # Where each piece starts (numpy: polars' search_sorted goes through its expression engine);
        # a household's first piece holds its rows from the first (a window that starts before the
        # piece, windows being aligned to the epoch).
        us = df.get_column("time").cast(pl.Int64).to_numpy()  # Datetime("us")
        starts = [round(self.spans[k][0].timestamp() * 1e6) for k in range(i + 1, j)]
        runs = []
        for household in households:
            first, n = rows.get(household, (0, 0))
            at = [first, *(first + int(x) for x in np.searchsorted(us[first : first + n], starts)), first + n]
            runs += [(at[m], at[m + 1] - at[m]) for m in range(j - i)]
        if len(households) == 1:
            bodies = [column_pieces(df.slice(first, n)) for first, n in runs]
        else:
            bodies = pieces_of_runs(df, runs)
        made = iter(zip(bodies, runs, strict=True))
        page = None
        for household in households:
            for k in range(i, j):
                body, (_, n) = next(made)
                if household != self.household:
                    state.pages.put(version, *self.key_of(household, k), Page(body, n, None))
                elif k > i:
                    state.pages.put(version, self.keys[k], self.fps[k], Page(body, n, None))
                else:
                    page = Page(body, n, None)
        assert page is not None
        return page

    async def piece(self, i: int, last: int | None = None) -> Page:
        """Piece ``i``, made (with the run of pieces after it up to ``last`` this process has no
        current copy of) when it is not current."""
        state, version = self.state, self.version
        await _made_along(state, self.keys[i])
        j = i + 1
        last = len(self.keys) if last is None else last
        while j < last and not state.pages.has(version, self.keys[j], self.fps[j]):
            j += 1
        return await state.pages.get(
            version, self.keys[i], self.fps[i], functools.partial(self.make, i, j), share=False
        )

    async def closed_part(self) -> tuple[list[Page], Page, list[Page]]:
        """The closed part as (pieces before the part kept whole, that part, pieces after): its first
        chunk, the whole chunks between (``middle``: the same all hour long, kept joined and, by
        ``live_json``, compressed) and its last chunk.  ``_Unjoinable`` when their columns differ."""
        state, version, chunks = self.state, self.version, self.chunks
        inner = range(1, chunks - 1)
        if not inner:
            head = await self.piece(0)
            return [], head, [await self.piece(chunks - 1)] if chunks > 1 else []
        middle_key, middle_fp = self._middle(inner)

        async def make_middle() -> Page:
            made = [await self.piece(i) for i in inner]
            body = join_pieces([c.body for c in made])
            if body is None:
                raise _Unjoinable
            return Page(body, sum(c.count for c in made), None)

        # The first chunk's run of missing pieces stops at the part kept.
        head = await self.piece(0, 1 if state.pages.has(version, middle_key, middle_fp) else None)
        middle = await state.pages.get(version, middle_key, middle_fp, make_middle, share=False)
        # Current, so are the chunks it is made of (a write to them makes it stale): marked so, or the
        # store's change log forgets that far back and, when the hour turns and the part is made
        # again, they count as changed and the whole day is read again.
        state.pages.vouch(version, [self.keys[k] for k in inner])
        return [head], middle, [await self.piece(chunks - 1)]

    def _middle(self, inner: range) -> tuple[Hashable, SeriesQuery]:
        """The key and footprint of the part kept whole: the chunks of ``inner`` joined."""
        a, b = self.spans[inner[0]][0], self.spans[inner[-1]][1]
        served = intersect(self.periods, span(a.timestamp(), b.timestamp()))
        return ("middle", self.household, *self.kind, served), footprint(self.household, self.kind[0], a, b)

    def current_parts(self) -> tuple[list[Page], Page, list[Page]] | None:
        """What ``closed_part`` gives, with the open part last, when every piece of it is current in
        this process's cache, else None: found without an await.  After a write, the first answer of
        a kind of chart reads every chart's open part in one query, and every other chart's answer,
        made again too, then finds all its pieces here (the awaits of ``closed_part`` and ``piece``,
        two hundred answers at once, were a good part of the burst of work after each write)."""
        chunks, keys, fps = self.chunks, self.keys, self.fps
        inner = range(1, chunks - 1)
        wanted = [(keys[0], fps[0])]
        if inner:
            wanted.append(self._middle(inner))
        if chunks > 1:
            wanted.append((keys[chunks - 1], fps[chunks - 1]))
        wanted.append((keys[chunks], fps[chunks]))
        pages = self.state.pages.current_pages(self.version, wanted)
        if pages is None:
            return None
        if not inner:
            return [], pages[0], pages[1:]
        self.state.pages.vouch(self.version, [keys[k] for k in inner])  # as ``closed_part`` does
        return [pages[0]], pages[1], pages[2:]


async def prepare_next_windows(state: AppState) -> int:
    """Make the closed part of every live chart's next window before it begins; the charts prepared
    for the first time.

    A dashboard's rolling window ("the last 24 h" up to the next whole minute) moves on at each whole
    window, all of them at once: then every chart's new first and last chunks were read, cut and
    (once an hour) its whole hours joined and compressed again in the same second, which stalled
    each worker's event loop for 50-70 ms, the slowest answers of the minute.  From ``AHEAD_S`` before
    the window moves on, each chart asked lately whose window ends at the next whole window has its
    next closed part made: its chunks (``AHEAD_BATCH`` households per store query), its whole hours
    joined and, when it was asked gzip'd, compressed (``render.prepare_closed``), one chart per turn
    of the event loop.  A call ``AHEAD_CHECK_S`` or more later checks them again (finding them current
    costs no query): the store's change log remembers a series' last ``series_changes.PER_SERIES``
    changes only, and a piece left unchecked for longer counts as changed (made 20 s ahead of a
    collector writing every second, it was made again at the minute anyway).  When the window moves
    on, its answer finds them current and makes only its open windows, as after any write.  A piece
    made ahead is keyed like any other (the served periods it read are in its key, a write to it makes
    it stale), so one prepared for a chart whose grant or readings change before then is only not
    used.  Charts asked with windows of another length or stop, or at resolutions under
    ``AHEAD_MIN_EVERY``, are left to their requests."""
    version = state.store.data_version()
    if not state.pages.max_bytes or version is None:
        return 0
    prepared = 0
    for kind, recent in list(state.live_charts.items()):
        every = kind[2].total_seconds()
        now = state.clock()
        roll = (now // every + 1) * every
        if every < AHEAD_MIN_EVERY or roll - now > AHEAD_S:
            continue
        ready = state.live_ahead.get(kind)
        if ready is None or ready[0] != roll:
            ready = state.live_ahead[kind] = (roll, {})
        checked = ready[1]
        for household, asked in list(recent.items()):
            read_from, cut = asked.read_from + every, roll - every
            if asked.stop != roll or now - asked.at > LIVE_RECENT_S or not read_from < cut:
                continue
            last = checked.get(household)
            if last is not None and now - last < AHEAD_CHECK_S:
                continue
            if last is None:
                prepared += 1
            checked[household] = now
            chart = _Chart.plan(
                state, household, kind, (read_from, cut, None), asked.periods, version, recent, AHEAD_BATCH
            )
            try:
                closed = (await chart.closed_part())[1]
            except _Unjoinable:
                continue
            if asked.gzipped:
                prepare_closed(closed.body)
            await asyncio.sleep(0)  # one chart per turn: the requests meanwhile are answered
    return prepared


async def keep_next_windows_ready(state: AppState) -> None:
    """``prepare_next_windows`` every second until cancelled; a failing round (a store that cannot
    be read: the requests then report it) is logged, once a minute at most."""
    last_logged = -float("inf")
    while True:
        await asyncio.sleep(1.0)
        try:
            await prepare_next_windows(state)
        except asyncio.CancelledError:
            raise
        except Exception:
            if time.monotonic() - last_logged >= 60.0:
                last_logged = time.monotonic()
                log.exception("making live charts' next windows ahead failed")


@functools.lru_cache(maxsize=PLAN_MEMO_SIZE)
def _pieces_of(
    household: str, kind: ChartKind, window: tuple[float, float, datetime | None], periods: Periods
) -> tuple[
    tuple[tuple[datetime, datetime, Periods], ...], tuple[Hashable, ...], tuple[SeriesQuery, ...], int
]:
    """``_Chart.plan``'s pieces (spans, keys, footprints, and how many are closed chunks).  Remembered:
    a chart asks for the same ones all minute, and after a write every chart's answer plans again."""
    read_from, cut, stop = window
    category, every = kind[0], kind[2]
    spans, keys, fps = [], [], []
    for a, b, served in _chunk_plan(read_from, cut, every.total_seconds() * CHUNK_WINDOWS, periods):
        spans.append((a, b, served))
        keys.append(("chunk", household, *kind, served))
        fps.append(footprint(household, category, a, b))
    chunks = len(spans)
    if stop is not None:
        cut_dt = utc(cut)
        served = intersect(periods, span(cut, float("inf")))
        spans.append((cut_dt, stop, served))
        keys.append(("open", household, *kind, served))
        fps.append(footprint(household, category, cut_dt, stop))
    return tuple(spans), tuple(keys), tuple(fps), chunks


@functools.lru_cache(maxsize=FOOTPRINT_MEMO_SIZE)
def _chunk_plan(
    start: float, stop: float, size: float, periods: Periods
) -> tuple[tuple[datetime, datetime, Periods], ...]:
    """The chunks of ``[start, stop)`` (cut at the multiples of ``size``) with the part of ``periods``
    each one serves.  Remembered: every live chart of a minute has the same ones."""
    return tuple((utc(a), utc(b), intersect(periods, span(a, b))) for a, b in _chunks(start, stop, size))


def _charts_asked(state: AppState, kind: ChartKind, household: str, asked: LiveAsk) -> dict[str, LiveAsk]:
    """The households with a live chart of ``kind`` and what each last asked, ``household``'s ask now
    among them."""
    charts = state.live_charts
    recent = charts.get(kind)
    if recent is None:
        if len(charts) >= LIVE_GROUPS:
            charts.clear()
        recent = charts[kind] = {}
    recent[household] = asked
    return recent


async def _made_along(state: AppState, key: Hashable) -> None:
    """Once the piece ``key``, when another chart's query is making it (``_others``), is made."""
    batch = state.live_batches.get(key)
    if batch is not None:
        await asyncio.shield(batch)


def _others(
    state: AppState,
    recent: dict[str, LiveAsk],
    household: str,
    version: int | None,
    key_of: Callable[[str], tuple[Hashable, SeriesQuery]],
    most: int,
) -> list[str]:
    """The households of ``recent`` but ``household`` asked within ``LIVE_RECENT_S`` whose piece
    (``key_of``) is not current, ``most`` at most; the others are forgotten.

    A collector writes every home in one transaction, so one write makes the open part of every live
    chart stale at once, and when the window moves on a minute every dashboard asks for the next
    one: the next request of each chart made its own pieces.  One query for all of them costs about
    what two queries of one home do (a store query is mostly its fixed cost), so the first request
    makes them all and the others find theirs made.  A closed dashboard costs nothing once
    ``LIVE_RECENT_S`` passed.  Each piece is exactly what its own query makes (the store answers per
    household; a test holds them to it), kept under its own key, which names the served periods it
    was read over (a household whose caller is served other periods asks under another key and
    makes its own), and footprint, at the version the request read before the query."""
    now = state.clock()
    out: list[str] = []
    gone = []
    for other, asked in recent.items():
        if now - asked.at > LIVE_RECENT_S:
            gone.append(other)
        elif other != household:
            key, fp = key_of(other)
            if key not in state.live_batches and not state.pages.has(version, key, fp):
                out.append(other)
                if len(out) == most:
                    break
    for other in gone:
        del recent[other]
    return out


def _rows_by_household(df: pl.DataFrame) -> dict[str, tuple[int, int]]:
    """Household -> (first row, rows) of a frame sorted by household (one run-length encoding: a
    Python step per row cost tens of milliseconds for 100 homes' hour)."""
    runs = df.get_column("household").rle()
    lengths = runs.struct.field("len").to_list()
    starts = itertools.accumulate(lengths, initial=0)
    return {
        h: (at, n) for h, at, n in zip(runs.struct.field("value").to_list(), starts, lengths, strict=False)
    }


class _Unjoinable(Exception):
    """Chunks whose columns differ (the whole page is made instead)."""


def _chunks(start: float, stop: float, size: float) -> Iterator[tuple[float, float]]:
    """``[start, stop)`` cut at the multiples of ``size``."""
    a = start
    while a < stop:
        b = min((a // size + 1) * size, stop)
        yield a, b
        a = b


def _reply(
    ask: SeriesAsk, fields: tuple[str, ...], decision: Decision, served: Periods, page: Page, gzipped: bool
) -> Page:
    """The body as sent: JSON wraps the page's ``columns`` in the envelope; gzip'd when asked."""
    body = page.body
    if ask.fmt == "json":
        body = _envelope(ask, fields, decision, served, page.count, page.next_cursor) + body + b"}"
    if gzipped:
        body = gzip_json(body)
    return Page(body, page.count, page.next_cursor)


def _envelope(
    ask: SeriesAsk,
    fields: tuple[str, ...],
    decision: Decision,
    served: Periods,
    count: int,
    next_cursor: str | None,
) -> bytes:
    """The JSON before a page's ``columns`` (closed by ``}``): who asked for what, under which clauses,
    and which part of the window is served."""
    win = ask.window
    head: models.SeriesEnvelope = {
        "household": ask.household,
        "category": ask.category,
        "purpose": ask.purpose,
        "clause_ids": list(decision.clause_ids),
        "start": iso(win.start),
        "stop": iso(win.stop),
        "served": periods_json(served),
        "refused": periods_json(decision.refused),
        "every": None if win.every is None else int(win.every.total_seconds()),
        "agg": ask.agg if win.every is not None else None,
        "fields": list(fields),
        "count": count,
        "next_cursor": next_cursor,
    }
    return orjson.dumps(head)[:-1] + b',"columns":'


def _page_order(df: pl.DataFrame) -> pl.DataFrame:
    return df if _in_page_order(df) else df.sort(["time", "device"])


def render_page(df: pl.DataFrame, ask: SeriesAsk, cursors: CursorCodec) -> Page:
    """One page of a series answer: rows after the cursor, at most ``limit``, in the ask's format (for
    JSON only the ``columns`` object: the envelope names the caller's purpose and clauses).  A next-page
    cursor is bound to what was asked."""
    df = _page_order(df)
    if ask.after is not None:
        t_col = pl.col("time").dt.epoch("us")
        t_us, device = ask.after
        df = df.filter((t_col > t_us) | ((t_col == t_us) & (pl.col("device") > device)))
    next_cursor = None
    if df.height > ask.limit:
        df = df.head(ask.limit)
        last_t = int(df["time"].dt.epoch("us")[-1])
        next_cursor = cursors.encode(last_t, str(df["device"][-1]), ask.asked)
    if ask.fmt == "csv":
        body = df.write_csv().encode()
    elif ask.fmt == "arrow":
        buf = io.BytesIO()
        df.write_ipc(buf)
        body = buf.getvalue()
    else:
        body = json_columns(df)
    return Page(body, df.height, next_cursor)


def _in_page_order(df: pl.DataFrame) -> bool:
    """Already ordered by time then device: one device's rows in time order (the common page; stores
    return household, device, time order, so several devices need the sort)."""
    device = df.get_column("device")
    if df.height == 0:
        return True
    return device.null_count() == 0 and device.min() == device.max() and df.get_column("time").is_sorted()
