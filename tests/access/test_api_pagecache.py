"""Rendered pages are reused only while the store is unchanged, and never instead of the policy or the
ledger: real HTTP, a real SQLite store that the tests write to, a real access database."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from access.api.pagecache import Page, PageCache, SharedPages
from access.api.params import accepts_gzip
from access.api.render import _CLOSED_PARTS, column_pieces, join_columns, json_columns
from access.api.series import AHEAD_S, LIVE_BATCH, LIVE_RECENT_S, _Chart, prepare_next_windows
from access.compiler import Policy
from access.decision import Decision
from access.request import AccessRequest
from pipeline.points import Point
from pipeline.query import SeriesQuery
from pipeline.series_changes import PER_SERIES, ChangeLog
from pipeline.sqlite_store import SQLiteStore
from pipeline.store import change_log_position, change_oracle
from tests.access.api_world import (
    DAY,
    OWN,
    PV,
    RANGE,
    SERIES,
    Env,
    api_policy,
    readings,
    start_env,
)

__all__ = ["api_policy"]

Q = {**RANGE, "every": "1h", "fields": "power_w"}
URL = SERIES.format(hh="h1", cat="pv")
URL_H2 = SERIES.format(hh="h2", cat="pv")


@pytest.fixture
async def own_store(tmp_path: Path) -> Path:
    path = tmp_path / "series.sqlite"
    store = SQLiteStore(path)
    await store.write(readings("h1", 288))
    await store.write(readings("h2", 288))
    await store.close()
    return path


@pytest.fixture
async def env(tmp_path: Path, own_store: Path, api_policy: Policy) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, own_store, api_policy):
        e.extra.update(tmp=tmp_path / "whole", policy=api_policy)
        yield e


async def _get(
    env: Env, who: str, purpose: str, url: str = URL, **extra: str
) -> tuple[int, dict[str, object]]:
    r = await env.client.get(url, params={**Q, "purpose": purpose, **extra}, headers=env.auth(who))
    return r.status, await r.json()


async def _write_elsewhere(env: Env, *points: Point) -> None:
    """A commit by another connection, as the collector's process makes."""
    writer = SQLiteStore(env.store.path)
    await writer.write(list(points))
    await writer.close()


async def test_a_write_to_one_household_drops_its_page_and_keeps_the_others(env: Env) -> None:
    env.store.version_poll_s = 0  # see another process's commit at once (default: within 50 ms)
    url_h2 = SERIES.format(hh="h2", cat="pv")
    _, a_before = await _get(env, "alice", OWN)
    _, b_before = await _get(env, "bob", OWN, url_h2)
    queries = env.state.metrics.store_seconds.n
    noon = int((DAY + timedelta(hours=12)).timestamp()) * 1_000_000_000
    await _write_elsewhere(env, Point("pv", "h1", "inv1", "modbus", noon, {"power_w": 123456.0}))
    _, b_after = await _get(env, "bob", OWN, url_h2)
    assert b_after == b_before and env.state.metrics.store_seconds.n == queries  # h2's page: kept
    _, a_after = await _get(env, "alice", OWN)
    assert env.state.metrics.store_seconds.n == queries + 1  # h1's page: made again
    cols_before, cols_after = a_before["columns"], a_after["columns"]
    assert isinstance(cols_before, dict) and isinstance(cols_after, dict)
    i = cols_after["time"].index("2026-06-01T12:00:00.000Z")
    assert cols_after["power_w"][i] > 10_000 > cols_before["power_w"][i]
    # The same household's readings on another day or in another category leave this page alone.
    await _write_elsewhere(
        env,
        Point("pv", "h1", "inv1", "modbus", noon - 2 * 86_400 * 1_000_000_000, {"power_w": 1.0}),
        Point("electricity", "h1", "meter", "echonet", noon, {"power_w": 1.0}),
    )
    _, a_again = await _get(env, "alice", OWN)
    assert a_again == a_after and env.state.metrics.store_seconds.n == queries + 1
    assert env.state.pages.stats.stale >= 1


async def test_repeat_is_served_from_the_cache_with_the_same_rows(env: Env) -> None:
    status, first = await _get(env, "alice", OWN)
    assert status == 200
    queries = env.state.metrics.store_seconds.n
    status, again = await _get(env, "alice", OWN)
    assert status == 200 and again == first
    assert env.state.metrics.store_seconds.n == queries and env.state.pages.stats.hits >= 1


async def test_a_write_to_the_store_is_seen_by_the_next_request(env: Env) -> None:
    env.store.version_poll_s = 0  # see another process's commit at once (default: within 50 ms)
    _, before = await _get(env, "alice", OWN)
    noon = DAY + timedelta(hours=12)
    ns = int(noon.timestamp()) * 1_000_000_000
    # Another connection (as the collector's process would) overwrites the noon reading.
    writer = SQLiteStore(env.store.path)
    await writer.write([Point("pv", "h1", "inv1", "modbus", ns, {"power_w": 123456.0})])
    await writer.close()
    _, after = await _get(env, "alice", OWN)
    cols_before, cols_after = before["columns"], after["columns"]
    assert isinstance(cols_before, dict) and isinstance(cols_after, dict)
    i = cols_after["time"].index("2026-06-01T12:00:00.000Z")
    assert cols_after["power_w"][i] != cols_before["power_w"][i]
    assert cols_after["power_w"][i] > 10_000  # the new reading is in the hour's mean


async def test_a_cached_page_does_not_skip_the_policy_or_the_ledger(env: Env) -> None:
    status, owner = await _get(env, "alice", OWN)
    assert status == 200
    rows = env.ledger_rows()
    status, inst = await _get(env, "inst1", PV)
    assert status == 200 and env.state.pages.stats.hits >= 1
    # Same rows, but the envelope is the installer's own: its purpose and the clauses that allowed it.
    assert inst["columns"] == owner["columns"]
    assert (inst["purpose"], owner["purpose"]) == (PV, OWN)
    assert inst["clause_ids"] != owner["clause_ids"]
    assert env.ledger_rows() == rows + 1  # a hit is still one provision, recorded
    env.state.authz.consent.suspend("h1", "provision", at=env.state.clock() - 10)
    status, refused = await _get(env, "inst1", PV)
    assert status == 403 and refused["reason"] == "suspended"
    assert env.ledger_rows() == rows + 1
    status, _ = await _get(env, "alice", OWN)  # the homeowner still reads their own data
    assert status == 200


async def test_concurrent_requests_for_a_new_page_share_one_query(env: Env) -> None:
    queries = env.state.metrics.store_seconds.n
    results = await asyncio.gather(*(_get(env, "alice", OWN, every="30m") for _ in range(20)))
    assert {status for status, _ in results} == {200}
    assert len({str(body) for _, body in results}) == 1
    assert env.state.metrics.store_seconds.n == queries + 1  # one store query for twenty requests
    assert env.state.pages.stats.shared >= 19


async def test_each_format_and_page_is_its_own_entry(env: Env) -> None:
    r_json = await env.client.get(URL, params={**Q, "purpose": OWN}, headers=env.auth("alice"))
    r_csv = await env.client.get(
        URL, params={**Q, "purpose": OWN, "format": "csv"}, headers=env.auth("alice")
    )
    assert r_json.content_type == "application/json" and r_csv.content_type == "text/csv"
    first = await env.client.get(URL, params={**Q, "purpose": OWN, "limit": "5"}, headers=env.auth("alice"))
    body = await first.json()
    assert body["count"] == 5 and body["next_cursor"]
    nxt = await env.client.get(
        URL,
        params={**Q, "purpose": OWN, "limit": "5", "cursor": body["next_cursor"]},
        headers=env.auth("alice"),
    )
    body2 = await nxt.json()
    assert body2["columns"]["time"][0] > body["columns"]["time"][-1]


async def test_a_write_to_the_open_window_is_seen_at_once_and_the_closed_windows_stay_cached(
    env: Env,
) -> None:
    """The test clock stands at the window's stop, so an hourly page is cut before its last hour
    (``open_window_start``): a write in that hour makes only the open part again, one in an earlier
    hour only the closed part, and each is in the very next answer."""
    env.store.version_poll_s = 0  # see another process's commit at once (default: within 50 ms)
    _, before = await _get(env, "alice", OWN)
    queries = env.state.metrics.store_seconds.n
    late = DAY + timedelta(hours=23, minutes=30)
    await _write_elsewhere(
        env, Point("pv", "h1", "inv1", "modbus", int(late.timestamp()) * 10**9, {"power_w": 9e7})
    )
    _, after = await _get(env, "alice", OWN)
    assert env.state.metrics.store_seconds.n == queries + 1  # the open hour only
    cols_before, cols_after = before["columns"], after["columns"]
    assert isinstance(cols_before, dict) and isinstance(cols_after, dict)
    assert cols_after["time"][-1] == "2026-06-01T23:00:00.000Z" and cols_after["time"] == cols_before["time"]
    assert cols_after["power_w"][-1] > 1e6 > cols_before["power_w"][-1]
    assert cols_after["power_w"][:-1] == cols_before["power_w"][:-1]
    assert after["count"] == before["count"] == len(cols_after["time"])
    noon = int((DAY + timedelta(hours=12)).timestamp()) * 10**9
    await _write_elsewhere(env, Point("pv", "h1", "inv1", "modbus", noon, {"power_w": 8e7}))
    _, again = await _get(env, "alice", OWN)
    assert env.state.metrics.store_seconds.n == queries + 2  # the closed hours, once
    cols_again = again["columns"]
    assert isinstance(cols_again, dict)
    i = cols_again["time"].index("2026-06-01T12:00:00.000Z")
    assert cols_again["power_w"][i] > 1e6 > cols_after["power_w"][i]
    assert cols_again["power_w"][-1] == cols_after["power_w"][-1]
    # The page made whole (a page cache of its own, cut nowhere) is the same page.
    async for whole in start_env(env.extra["tmp"], env.store.path, env.extra["policy"], page_cache_bytes=0):
        _, fresh = await _get(whole, "alice", OWN)
        assert fresh == again


async def test_a_rolling_day_that_moves_a_minute_reads_only_its_new_windows(
    tmp_path: Path, own_store: Path, api_policy: Policy
) -> None:
    """A dashboard's "last 24 h at 1 minute" moves with the clock: the hours in between are kept as
    they were, and only the new first hour, the hour holding now and the open window are read again;
    the page is the one a server without a cache makes."""
    clock = [(DAY + timedelta(hours=23, minutes=30)).timestamp()]
    async for env in start_env(tmp_path, own_store, api_policy, now=lambda: clock[0]):
        read = _note_query_spans(env.store)
        await _rolling_day(env, clock[0])
        assert sum(read) >= 24 * 3600  # the first page reads the whole day
        for _ in range(3):
            read.clear()
            clock[0] += 60
            moved = await _rolling_day(env, clock[0])
            assert 0 < sum(read) <= 2 * 3600 + 180  # the first hour, the last one and the open minutes
            async for whole in start_env(
                tmp_path / f"{clock[0]:.0f}", own_store, api_policy, page_cache_bytes=0, now=lambda: clock[0]
            ):
                assert moved == await _rolling_day(whole, clock[0])


async def test_a_minute_joins_and_compresses_no_whole_hour_again(
    tmp_path: Path, own_store: Path, api_policy: Policy
) -> None:
    """When a rolling day moves on a minute, every live chart's answer is made again at once: the
    whole hours between its first and last are kept joined and compressed (``render._CLOSED_PARTS``),
    so a minute makes no closed part again: only when the window's start or its last closed window
    crosses an hour, or a write touches those hours.  Across the hour, a write to a closed hour and a
    late reading, every answer (gzip'd) is byte for byte what a server without a cache gives.
    Between the minutes, more writes to the open minute than the store's change log remembers: the
    kept hours' chunks are still current when the hour turns (left unchecked, they counted as changed
    and the whole day was read again)."""
    clock = [(DAY + timedelta(hours=22, minutes=57, seconds=5)).timestamp()]
    async for env in start_env(tmp_path, own_store, api_policy, now=lambda: clock[0], rate_per_s=None):
        env.store.version_poll_s = 0
        minutes = range(22 * 60 + 30, 23 * 60 + 5)  # a reading in each minute (5-minute readings otherwise)
        await _write_elsewhere(
            env,
            *(
                Point("pv", "h1", "inv1", "modbus", _ns(DAY) + m * 60 * 10**9, {"power_w": m})
                for m in minutes
            ),
        )
        read = _note_query_spans(env.store)
        await _rolling_day_bytes(env, clock[0], "alice", "h1")
        # 22:58; 22:59 (the start at the hour, before the first served one: the same part); 23:00 with
        # the writes; 23:01 (the closed windows end at 23:00, the hour before is still the last);
        # 23:02 (the hour before 23:00 joins the part)
        for step, made in enumerate((0, 0, 1, 0, 1)):
            # A collector's writes to the open minute, each seen by the next answer: more than the
            # store's change log keeps.
            for k in range(PER_SERIES + 4):
                ns = int(clock[0] * 1e9) + k
                await _write_elsewhere(env, Point("pv", "h1", "inv1", "modbus", ns, {"power_w": k}))
                await _rolling_day_bytes(env, clock[0], "alice", "h1")
            read.clear()
            parts = list(_CLOSED_PARTS)
            clock[0] += 60
            ns = int(clock[0] * 1e9)
            if step == 2:  # a closed hour (05:00) and a reading 50 s late
                await _write_elsewhere(
                    env,
                    Point(
                        "pv",
                        "h1",
                        "inv1",
                        "modbus",
                        int(DAY.timestamp() * 1e9) + 5 * 3600 * 10**9,
                        {"power_w": 7.0},
                    ),
                    Point("pv", "h1", "inv1", "modbus", ns - 50 * 10**9, {"power_w": 9.0}),
                )
            moved = await _rolling_day_bytes(env, clock[0], "alice", "h1")
            new_parts = [p for p in _CLOSED_PARTS if p not in parts]
            assert len(new_parts) == made
            if step != 2:
                assert 0 < sum(read) <= 2 * 3600 + 180, step
            assert [moved] == await _uncached(
                tmp_path / f"{step}", own_store, api_policy, clock[0], [("alice", "h1")]
            )


async def test_one_query_makes_the_open_windows_of_every_live_chart_after_a_write(
    tmp_path: Path, own_store: Path, api_policy: Policy
) -> None:
    """A collector writes every home in one transaction, so every live chart's open windows go stale
    at once: the first chart asked after the write reads the open windows of every chart asked lately
    in one store query, and the next chart is answered without one; likewise the new first and last
    hours when the window moves on a minute.  Every answer is, byte for byte, the one a server
    without a cache gives."""
    clock = [(DAY + timedelta(hours=23, minutes=30, seconds=5)).timestamp()]
    charts = (("alice", "h1"), ("bob", "h2"))
    async for env in start_env(tmp_path, own_store, api_policy, now=lambda: clock[0]):
        env.store.version_poll_s = 0
        asked = _note_query_households(env.store)
        for who, hh in charts:
            await _rolling_day_bytes(env, clock[0], who, hh)
        for step in range(4):
            moved = step % 2 == 1
            if moved:  # the dashboards keep asking while the minute runs out, then it moves on
                for _ in range(9):
                    clock[0] += 6
                    for who, hh in charts:
                        await _rolling_day_bytes(env, clock[0], who, hh)
                clock[0] += 6
            ns = int(clock[0] * 1e9)
            written = [
                Point("pv", hh, "inv1", "modbus", ns, {"power_w": 1e3 * step + k})
                for k, hh in ((1, "h1"), (2, "h2"))
            ]
            await _write_elsewhere(env, *written)
            asked.clear()
            pages = [await _rolling_day_bytes(env, clock[0], who, hh) for who, hh in charts]
            stop = clock[0] // 60 * 60 + 60
            if moved:  # the new first hour, and the last hour with the open windows, of both charts
                assert [q[0] for q in asked] == [("h1", "h2")] * 2
                assert asked[-1][2] == stop
            else:  # both open parts from one query
                assert asked == [(("h1", "h2"), stop - 120, stop)]
            assert pages == await _uncached(
                tmp_path / f"whole{step}", own_store, api_policy, clock[0], charts
            )


async def test_charts_asked_while_their_pieces_are_read_for_them_wait_for_that_query(
    tmp_path: Path, own_store: Path, api_policy: Policy
) -> None:
    """A query that makes other charts' pieces may take a while (a store under load, or a long span
    handed to a reader thread): their own requests meanwhile wait for it rather than each starting
    one more query of every chart (which, at a minute roll-over of a hundred charts, meant a hundred
    queries of a hundred homes each)."""
    clock = [(DAY + timedelta(hours=23, minutes=30, seconds=5)).timestamp()]
    charts = (("alice", "h1"), ("bob", "h2"))
    async for env in start_env(tmp_path, own_store, api_policy, now=lambda: clock[0]):
        env.store.version_poll_s = 0
        for who, hh in charts:
            await _rolling_day_bytes(env, clock[0], who, hh)
        asked = _note_query_households(env.store, delay_s=0.05)  # a slow store: another process's load
        ns = int(clock[0] * 1e9)
        await _write_elsewhere(
            env, *(Point("pv", hh, "inv1", "modbus", ns, {"power_w": 5.0}) for _, hh in charts)
        )
        pages = await asyncio.gather(*(_rolling_day_bytes(env, clock[0], who, hh) for who, hh in charts))
        assert [q[0] for q in asked] == [("h1", "h2")]
        assert list(pages) == await _uncached(tmp_path / "whole", own_store, api_policy, clock[0], charts)


async def test_each_server_process_keeps_its_live_charts_pieces_for_the_next_minute(
    tmp_path: Path, own_store: Path, api_policy: Policy
) -> None:
    """Two processes of one server (two apps, one store, one shared page file) answer the same live
    chart.  The second makes its own answer instead of taking the first's from the shared file, so
    when the window moves on a minute it reads only the new first and last hours, not the whole day
    (taking it, it had none of the chart's pieces: with a hundred charts, every whole minute meant a
    whole day of every home read and written out on the event loop).  A write to a closed hour, one to
    the open minute and a reading arriving late are in every answer, which is byte for byte what a
    server without a cache gives."""
    clock = [(DAY + timedelta(hours=23, minutes=30, seconds=5)).timestamp()]
    shared = tmp_path / "pages.sqlite"
    async for one in start_env(
        tmp_path / "one", own_store, api_policy, now=lambda: clock[0], shared_pages=shared
    ):
        async for two in start_env(
            tmp_path / "two", own_store, api_policy, now=lambda: clock[0], shared_pages=shared
        ):
            for env in (one, two):
                env.store.version_poll_s = 0
            await _rolling_day_bytes(one, clock[0], "alice", "h1")
            read = _note_query_spans(two.store)
            await _rolling_day_bytes(two, clock[0], "alice", "h1")
            for step in range(3):
                clock[0] += 60
                ns = int(clock[0] * 1e9)
                if step == 1:  # a closed hour (05:00), the open minute and a reading 50 s late
                    await _write_elsewhere(
                        one,
                        Point(
                            "pv",
                            "h1",
                            "inv1",
                            "modbus",
                            int((DAY + timedelta(hours=5)).timestamp() * 1e9),
                            {"power_w": 7.0},
                        ),
                        Point("pv", "h1", "inv1", "modbus", ns, {"power_w": 8.0}),
                        Point("pv", "h1", "inv1", "modbus", ns - 50 * 10**9, {"power_w": 9.0}),
                    )
                read.clear()  # the second process is asked first now: it has the chart's pieces itself
                answers = [await _rolling_day_bytes(two, clock[0], "alice", "h1")]
                answers.append(await _rolling_day_bytes(one, clock[0], "alice", "h1"))
                if step != 1:
                    assert (
                        0 < sum(read) <= 2 * 3600 + 180
                    )  # the new first hour, the last one, the open minutes
                assert (
                    answers
                    == await _uncached(
                        tmp_path / f"whole{step}", own_store, api_policy, clock[0], [("alice", "h1")]
                    )
                    * 2
                )


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 10**9


def _note_query_households(
    store: SQLiteStore, delay_s: float = 0.0
) -> list[tuple[tuple[str, ...], float, float]]:
    """The real store answers every query (after ``delay_s``, a store slowed by other work); the
    households and the span (epoch seconds) each one reads are noted in the list returned."""
    asked: list[tuple[tuple[str, ...], float, float]] = []
    store_query = store.query

    async def query(q: SeriesQuery) -> pl.DataFrame:
        asked.append((q.households, q.start.timestamp(), q.stop.timestamp()))
        await asyncio.sleep(delay_s)
        return await store_query(q)

    store.query = query  # type: ignore[method-assign]
    return asked


async def _rolling_day_bytes(env: Env, now: float, who: str, household: str) -> bytes:
    """``who``'s last 24 h at 1 minute of ``household``'s PV as sent, gzip'd (and read back)."""
    stop = datetime.fromtimestamp(now // 60 * 60 + 60, UTC)
    window = {"start": f"{stop - timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}", "stop": f"{stop:%Y-%m-%dT%H:%M:%SZ}"}
    r = await env.client.get(
        SERIES.format(hh=household, cat="pv"),
        params={**Q, **window, "every": "1m", "purpose": OWN},
        headers={**env.auth(who), "Accept-Encoding": "gzip"},
    )
    assert r.status == 200 and r.headers["Content-Encoding"] == "gzip"
    return await r.read()


async def _uncached(
    tmp: Path, store: Path, policy: Policy, now: float, charts: Sequence[tuple[str, str]]
) -> list[bytes]:
    """What a server without a page cache sends for each (who, household) live chart at ``now``."""
    pages: list[bytes] = []
    async for whole in start_env(tmp, store, policy, page_cache_bytes=0, now=lambda: now):
        pages = [await _rolling_day_bytes(whole, now, who, hh) for who, hh in charts]
    return pages


def _note_query_spans(store: SQLiteStore) -> list[float]:
    """The real store answers every query; the seconds each one spans are noted in the list returned."""
    spans: list[float] = []
    store_query = store.query

    async def query(q: SeriesQuery) -> pl.DataFrame:
        spans.append((q.stop - q.start).total_seconds())
        return await store_query(q)

    store.query = query  # type: ignore[method-assign]
    return spans


async def _rolling_day(env: Env, now: float) -> dict[str, object]:
    """The last 24 h at 1 minute, up to the next whole minute after ``now``."""
    stop = datetime.fromtimestamp(now // 60 * 60 + 60, UTC)
    window = {"start": f"{stop - timedelta(days=1):%Y-%m-%dT%H:%M:%SZ}", "stop": f"{stop:%Y-%m-%dT%H:%M:%SZ}"}
    r = await env.client.get(
        URL, params={**Q, **window, "every": "1m", "purpose": OWN}, headers=env.auth("alice")
    )
    assert r.status == 200
    body: dict[str, object] = await r.json()
    return body


async def test_a_suspension_refuses_a_cached_live_page(env: Env) -> None:
    status, first = await _get(env, "inst1", PV)
    assert status == 200
    rows = env.ledger_rows()
    status, again = await _get(env, "inst1", PV)
    assert status == 200 and again == first and env.state.pages.stats.hits >= 1
    assert env.ledger_rows() == rows + 1  # a cached answer is still a provision, recorded
    env.state.authz.consent.suspend("h1", "provision", at=env.state.clock() - 10)
    status, refused = await _get(env, "inst1", PV)
    assert status == 403 and refused["reason"] == "suspended"
    assert env.ledger_rows() == rows + 1


async def test_a_repeated_request_reuses_its_decision_until_the_policy_facts_change(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    authz = env.state.authz
    evaluated: list[object] = []
    decide = authz.decide

    def counting(req: AccessRequest, at: float | None = None) -> Decision:
        evaluated.append(req)
        return decide(req, at)

    monkeypatch.setattr(authz, "decide", counting)
    assert (await _get(env, "inst1", PV))[0] == 200
    assert (await _get(env, "inst1", PV))[0] == 200
    assert len(evaluated) == 1  # the same question under the same snapshot: decided once
    assert (await _get(env, "inst1", PV, every="30m"))[0] == 200
    assert len(evaluated) == 1  # another resolution is the same access request
    assert (await _get(env, "inst1", PV, URL_H2))[0] == 403
    assert len(evaluated) == 2  # another household is another question
    authz.consent.suspend("h1", "provision", at=env.state.clock() - 10)
    status, refused = await _get(env, "inst1", PV)
    assert status == 403 and refused["reason"] == "suspended" and len(evaluated) > 2  # decided afresh


def test_pieces_of_consecutive_rows_join_into_the_whole_columns() -> None:
    df = pl.DataFrame(
        {
            "time": [datetime(2026, 6, 1, 0, m, tzinfo=UTC) for m in range(6)],
            "household": ["h1"] * 6,
            "device": ["inv1", "inv1", "inv2", "inv1", "inv1", "inv2"],
            "power_w": [1.5, None, 3.0, 4.25, 5.0, 6.0],
        }
    )
    for cut in range(df.height + 1):
        joined = join_columns([column_pieces(df.slice(0, cut)), column_pieces(df.slice(cut))])
        assert joined == json_columns(df)
    assert join_columns([column_pieces(df), column_pieces(df.select("time", "power_w"))]) is None


async def test_cache_off_still_answers(tmp_path: Path, own_store: Path, api_policy: Policy) -> None:
    async for env in start_env(tmp_path, own_store, api_policy, page_cache_bytes=0):
        status, first = await _get(env, "alice", OWN)
        status2, again = await _get(env, "alice", OWN)
        assert status == status2 == 200 and first == again
        assert env.state.metrics.store_seconds.n == 2  # each request queried the store
        assert env.state.pages.stats.hits == 0


@pytest.mark.parametrize("fmt", ["json", "csv"])
async def test_gzip_when_the_client_accepts_it_and_identity_otherwise(env: Env, fmt: str) -> None:
    q = {**Q, "purpose": OWN, "format": fmt}
    plain = await env.client.get(URL, params=q, headers={**env.auth("alice"), "Accept-Encoding": "identity"})
    assert plain.status == 200 and "Content-Encoding" not in plain.headers
    zipped = await env.client.get(URL, params=q, headers={**env.auth("alice"), "Accept-Encoding": "gzip"})
    assert zipped.status == 200 and zipped.headers["Content-Encoding"] == "gzip"
    assert zipped.headers["Vary"] == plain.headers["Vary"] == "Accept-Encoding"
    assert await zipped.read() == await plain.read()  # the client decompressed it
    refused = await env.client.get(
        URL, params=q, headers={**env.auth("alice"), "Accept-Encoding": "gzip;q=0, identity"}
    )
    assert "Content-Encoding" not in refused.headers


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),
        ("br;q=1.0, gzip;q=0.5", True),
        ("*", True),
        ("x-gzip", True),
        ("GZIP", True),
        (None, False),
        ("", False),
        ("identity", False),
        ("gzip;q=0", False),
        ("gzip;q=0.0, *;q=1", False),
        ("*;q=0", False),
        ("deflate, br", False),
        ("gzip;q=abc", False),
        ("gzip;" + "x" * 2000, False),
    ],
)
def test_accept_encoding_is_read_per_the_rfc(header: str | None, expected: bool) -> None:
    assert accepts_gzip(header) is expected


# -- PageCache on its own -------------------------------------------------------------------------------
# The store's change log (real ``ChangeLog``) tells the cache what changed; writes are applied to it as a
# poll of the store would.
FOOT_A = SeriesQuery(("A",), "pv", ("power_w",), DAY, DAY + timedelta(days=1), timedelta(minutes=1))
FOOT_B = SeriesQuery(("B",), "pv", ("power_w",), DAY, DAY + timedelta(days=1), timedelta(minutes=1))
NOON_NS = int((DAY + timedelta(hours=12)).timestamp()) * 1_000_000_000


def _cache(max_bytes: int = 1000) -> tuple[PageCache, ChangeLog]:
    log = ChangeLog()
    return PageCache(max_bytes, lambda v, q: log.changed_since(v, q.households, q.category, q.start_ns,
                                                               q.stop_ns)), log  # fmt: skip


def _write(log: ChangeLog, household: str, ns: int = NOON_NS, category: str = "pv") -> None:
    """What a poll applies after a write to (household, category) at ``ns``."""
    seq = (log.seen_seq or 0) + 1
    log.apply([(seq, household, category, ns, ns)])
    log.seen_seq = seq


def _page(n: int, size: int = 10) -> Page:
    return Page(bytes([n % 256]) * size, n, None)


def _maker(made: list[str], key: str, n: int) -> Callable[[], Awaitable[Page]]:
    async def make() -> Page:
        made.append(key)
        return _page(n)

    return make


async def test_lru_by_bytes() -> None:
    cache, log = _cache(max_bytes=25)
    made: list[str] = []
    v = log.version
    await cache.get(v, "a", FOOT_A, _maker(made, "a", 1))
    await cache.get(v, "b", FOOT_A, _maker(made, "b", 2))
    await cache.get(v, "a", FOOT_A, _maker(made, "a", 1))  # a is now most recent
    await cache.get(v, "c", FOOT_A, _maker(made, "c", 3))  # 30 bytes > 25: b goes
    assert made == ["a", "b", "c"] and cache.bytes == 20 and len(cache) == 2
    await cache.get(v, "b", FOOT_A, _maker(made, "b", 2))
    assert made[-1] == "b"


async def test_current_pages_are_found_all_or_none_and_count_as_used() -> None:
    """Several pages at once, without making any: all of them when every one is current (each a hit,
    and the most recently used, so the least used page goes first), else None with nothing counted."""
    cache, log = _cache(max_bytes=35)
    made: list[str] = []
    v = log.version
    for key, foot, n in (("a", FOOT_A, 1), ("b", FOOT_B, 2), ("c", FOOT_A, 3)):
        await cache.get(v, key, foot, _maker(made, key, n))
    hits = cache.stats.hits
    found = cache.current_pages(v, [("a", FOOT_A), ("b", FOOT_B)])
    assert found is not None and [p.count for p in found] == [1, 2] and cache.stats.hits == hits + 2
    await cache.get(v, "d", FOOT_B, _maker(made, "d", 4))  # 40 bytes > 35: c goes, not a or b
    assert cache.current_pages(v, [("a", FOOT_A), ("b", FOOT_B), ("d", FOOT_B)]) is not None
    assert cache.current_pages(v, [("a", FOOT_A), ("c", FOOT_A)]) is None  # c is gone
    hits = cache.stats.hits
    _write(log, "B")  # b and d are stale, a is not
    assert cache.current_pages(log.version, [("a", FOOT_A), ("b", FOOT_B)]) is None
    assert cache.stats.hits == hits and made == ["a", "b", "c", "d"]  # nothing counted, nothing made
    found = cache.current_pages(log.version, [("a", FOOT_A)])
    assert found is not None and found[0].count == 1


async def test_a_page_made_at_once_is_kept_as_get_would_and_never_instead_of_one_being_made() -> None:
    """``get_now``: a current page is a hit; a stale or missing one is made by ``make_now`` and kept (a
    miss, the same entry ``get`` then finds); when ``make_now`` cannot make it, or a request is already
    making it, nothing is counted or kept and the caller goes through ``get``."""
    cache, log = _cache()
    made: list[str] = []

    def now(key: str, n: int | None) -> Callable[[], Page | None]:
        def make() -> Page | None:
            made.append(key)
            return None if n is None else _page(n)

        return make

    v = log.version
    assert cache.get_now(v, "a", FOOT_A, now("a", None)) is None
    assert (cache.stats.misses, len(cache), made) == (0, 0, ["a"])
    page = cache.get_now(v, "a", FOOT_A, now("a", 1))
    assert page is not None and page.count == 1 and cache.stats.misses == 1
    assert (await cache.get(v, "a", FOOT_A, _maker(made, "a", 9))).count == 1  # kept: get finds it
    found = cache.get_now(v, "a", FOOT_A, now("a", 2))
    assert found is not None and found.count == 1 and cache.stats.hits == 2 and made == ["a", "a"]
    _write(log, "A")
    assert cache.get_now(log.version, "a", FOOT_A, now("a", None)) is None
    assert cache.stats.stale == 0 and len(cache) == 1  # the stale page is left to get
    fresh = cache.get_now(log.version, "a", FOOT_A, now("a", 3))
    assert fresh is not None and fresh.count == 3 and cache.stats.stale == 1 and len(cache) == 1
    # A page being made by a request that waits for the store: made once, by that request.
    gate = asyncio.Event()

    async def slow() -> Page:
        await gate.wait()
        return _page(4)

    _write(log, "A")
    first = asyncio.ensure_future(cache.get(log.version, "a", FOOT_A, slow))
    await asyncio.sleep(0)
    assert cache.get_now(log.version, "a", FOOT_A, now("a", 5)) is None and made[-1] == "a"
    assert len(made) == 4
    gate.set()
    assert (await first).count == 4
    again = cache.get_now(log.version, "a", FOOT_A, now("a", 6))
    assert again is not None and again.count == 4
    assert cache.get_now(None, "b", FOOT_A, now("b", 1)) is None and len(made) == 4  # nothing to key on


async def test_a_write_drops_only_the_pages_it_touches() -> None:
    """A write to household A at noon: A's page of that day is made again; B's page, A's page of
    another category and A's page of another day are still served."""
    cache, log = _cache()
    made: list[str] = []
    a_pv, b_pv = FOOT_A, FOOT_B
    a_grid = SeriesQuery(("A",), "electricity", ("power_w",), DAY, DAY + timedelta(days=1))
    a_before = SeriesQuery(("A",), "pv", ("power_w",), DAY - timedelta(days=1), DAY)
    pages = {"a": a_pv, "b": b_pv, "a_grid": a_grid, "a_before": a_before}
    v = log.version
    for key, foot in pages.items():
        await cache.get(v, key, foot, _maker(made, key, 1))
    _write(log, "A")
    v = log.version
    for key, foot in pages.items():
        await cache.get(v, key, foot, _maker(made, key, 1))
    assert made[4:] == ["a"] and cache.stats.stale == 1 and cache.stats.hits == 3
    await cache.get(v, "a", a_pv, _maker(made, "a", 1))  # the new page is current
    assert made[4:] == ["a"]


async def test_a_write_while_a_page_is_made_makes_it_stale() -> None:
    """The version is read before the query: a write that lands during it is newer than the page."""
    cache, log = _cache()
    gate = asyncio.Event()
    made: list[int] = []
    v = log.version

    async def slow() -> Page:
        made.append(v)
        await gate.wait()
        return _page(1)

    first = asyncio.ensure_future(cache.get(v, "a", FOOT_A, slow))
    await asyncio.sleep(0)
    _write(log, "A")  # committed while the query ran
    gate.set()
    await first
    later: list[str] = []
    await cache.get(log.version, "a", FOOT_A, _maker(later, "a", 2))
    assert later == ["a"]  # not the page made before the write was seen


async def test_a_computation_made_stale_is_not_shared() -> None:
    cache, log = _cache()
    gate = asyncio.Event()

    async def old() -> Page:
        await gate.wait()
        return _page(1)

    first = asyncio.ensure_future(cache.get(log.version, "a", FOOT_A, old))
    await asyncio.sleep(0)
    _write(log, "A")
    second = await cache.get(log.version, "a", FOOT_A, _maker([], "a", 2))
    assert second.count == 2 and cache.stats.shared == 0
    gate.set()
    assert (await first).count == 1
    assert (await cache.get(log.version, "a", FOOT_A, _maker([], "a", 3))).count == 2  # newest kept


async def test_a_late_request_of_an_older_version_gets_the_current_page() -> None:
    cache, log = _cache()
    v_old = log.version
    _write(log, "B")
    made: list[str] = []
    await cache.get(log.version, "a", FOOT_A, _maker(made, "a", 5))
    assert (await cache.get(v_old, "a", FOOT_A, _maker(made, "a", 4))).count == 5
    assert made == ["a"] and len(cache) == 1


async def test_no_version_no_reuse() -> None:
    cache, _ = _cache()
    made: list[str] = []
    await cache.get(None, "a", FOOT_A, _maker(made, "a", 1))
    await cache.get(None, "a", FOOT_A, _maker(made, "a", 1))
    assert made == ["a", "a"] and cache.stats.uncacheable == 2 and len(cache) == 0


async def test_a_failure_reaches_every_waiter_and_is_not_cached() -> None:
    cache, _ = _cache()
    gate = asyncio.Event()
    calls = 0

    async def failing() -> Page:
        nonlocal calls
        calls += 1
        await gate.wait()
        raise RuntimeError("store down")

    waiters = [asyncio.ensure_future(cache.get(1, "k", FOOT_A, failing)) for _ in range(5)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert calls == 1 and all(isinstance(r, RuntimeError) for r in results)

    async def ok() -> Page:
        return _page(7)

    assert (await cache.get(1, "k", FOOT_A, ok)).count == 7  # tried again, not a cached failure


async def test_a_caller_that_goes_away_does_not_cancel_the_others() -> None:
    cache, _ = _cache()
    gate = asyncio.Event()

    async def slow() -> Page:
        await gate.wait()
        return _page(3)

    first = asyncio.ensure_future(cache.get(1, "k", FOOT_A, slow))
    second = asyncio.ensure_future(cache.get(1, "k", FOOT_A, slow))
    await asyncio.sleep(0)
    first.cancel()
    gate.set()
    assert (await second).count == 3
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_server_processes_hand_each_other_pages_and_never_a_stale_one(tmp_path: Path) -> None:
    """Two processes of one server (here: two caches, two store connections, one shared page file)
    make a page once between writes; a write under the page makes each of them see a new one."""
    path = tmp_path / "series.sqlite"
    writer = SQLiteStore(path)
    await writer.write([Point("pv", h, "inv1", "modbus", NOON_NS, {"power_w": 1.0}) for h in ("A", "B")])
    stores = [SQLiteStore(path, version_poll_s=0) for _ in range(2)]
    shared = SharedPages(tmp_path / "pages.sqlite")
    caches = [PageCache(10_000, change_oracle(s), shared, change_log_position(s)) for s in stores]
    made: list[str] = []

    async def ask(i: int, n: int) -> Page:
        version = stores[i].data_version()
        return await caches[i].get(version, ("page", "A-day"), FOOT_A, _maker(made, f"p{i}", n))

    try:
        assert (await ask(0, 1)).count == 1 and (await ask(1, 2)).count == 1  # the second took the first's
        assert made == ["p0"] and caches[1].stats.from_other_process == 1
        await writer.write([Point("pv", "B", "inv1", "modbus", NOON_NS + 1, {"power_w": 2.0})])  # not A
        assert (await ask(1, 3)).count == 1 and made == ["p0"]
        await writer.write([Point("pv", "A", "inv1", "modbus", NOON_NS + 1, {"power_w": 2.0})])
        assert (await ask(1, 4)).count == 4 and made == ["p0", "p1"]  # made again, after the write
        assert (await ask(0, 5)).count == 4 and made == ["p0", "p1"]  # ... and handed to the other
    finally:
        shared.close()
        for s in (*stores, writer):
            await s.close()


def test_a_locked_shared_page_file_costs_no_wait(tmp_path: Path) -> None:
    """The shared file is used on the event loop: while another process holds its write lock, a page
    is simply not handed over (put) and pages are still found (get) -- neither waits for the lock."""
    shared = SharedPages(tmp_path / "pages.sqlite")
    page = Page(b"x" * 1000, 1, None)
    shared.put(b"k1", 1, page)
    other = sqlite3.connect(tmp_path / "pages.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker in the middle of its insert
    try:
        t0 = time.monotonic()
        shared.put(b"k2", 1, page)
        assert shared.get(b"k1", 1) == page
        assert time.monotonic() - t0 < 0.5  # SQLite's busy handler would have slept for seconds
        assert shared.get(b"k2", 1) is None  # not handed over: the other process makes it itself
    finally:
        other.execute("ROLLBACK")
        other.close()
        shared.close()


def test_a_broken_shared_page_file_is_logged_once_and_a_busy_one_not_at_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Busy is the file working as meant (another worker mid-insert): silent.  Any other failure means
    sharing stopped working: the worker still answers (the page is made here), and says why, once."""
    path = tmp_path / "pages.sqlite"
    shared = SharedPages(path)
    page = Page(b"x" * 100, 1, None)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        with caplog.at_level("WARNING", logger="access.api.pagecache"):
            other.execute("BEGIN IMMEDIATE")
            shared.put(b"k1", 1, page)  # busy: not shared, nothing logged
            other.execute("ROLLBACK")
            assert caplog.records == []
            other.execute("DROP TABLE pages")  # the file no longer holds what sharing needs
            for _ in range(3):
                shared.put(b"k2", 1, page)
                assert shared.get(b"k2", 1) is None
        failures = [r for r in caplog.records if "no such table" in r.getMessage()]
        assert len(failures) == 1 and failures[0].levelname == "WARNING"
    finally:
        other.close()
        shared.close()


async def test_the_next_minutes_closed_part_is_made_ahead_so_the_minute_reads_only_its_open_windows(
    tmp_path: Path, own_store: Path, api_policy: Policy
) -> None:
    """Before a rolling day moves on a minute, the closed part of every live chart's next window is
    made (``prepare_next_windows``), not earlier than ``AHEAD_S`` before it, and checked again on
    each later call (more writes come meanwhile than the store's change log remembers): at the
    minute each answer reads only its open windows (one query for both charts), as after any
    write.  A late reading that lands in a part made ahead makes it stale (the answer has it, and
    only that chart's hour is read again).  Every answer is byte for byte what a server without a
    cache gives."""
    clock = [(DAY + timedelta(hours=23, minutes=30, seconds=5)).timestamp()]
    charts = (("alice", "h1"), ("bob", "h2"))
    async for env in start_env(tmp_path, own_store, api_policy, now=lambda: clock[0]):
        env.store.version_poll_s = 0
        asked = _note_query_households(env.store)
        for step, late in enumerate((False, True)):
            roll = clock[0] // 60 * 60 + 60
            clock[0] = roll - AHEAD_S - 5
            for who, hh in charts:  # the dashboards keep asking
                await _rolling_day_bytes(env, clock[0], who, hh)
            assert await prepare_next_windows(env.state) == 0  # too early
            clock[0] = roll - AHEAD_S + 5
            for who, hh in charts:
                await _rolling_day_bytes(env, clock[0], who, hh)
            asked.clear()
            assert await prepare_next_windows(env.state) == 2
            # The new first hour and the last one grown by a minute, of both charts, nothing open.
            assert asked and all(q[0] == ("h1", "h2") and q[2] <= roll - 60 for q in asked)
            asked.clear()
            assert await prepare_next_windows(env.state) == 0 and not asked
            # A collector writes the open minute more often than the store's change log remembers
            # (it forgets what is older), while the dashboards keep asking and the server checks
            # what it made ahead each second.
            for k in range(PER_SERIES + 4):
                clock[0] += 0.5
                ns = int(clock[0] * 1e9)
                await _write_elsewhere(
                    env, *(Point("pv", hh, "inv1", "modbus", ns, {"power_w": float(k)}) for _, hh in charts)
                )
                for who, hh in charts:
                    await _rolling_day_bytes(env, clock[0], who, hh)
                asked.clear()
                assert await prepare_next_windows(env.state) == 0
                assert not [q for q in asked if q[2] <= roll - 60]  # what was made ahead is current
            if late:  # a reading 30 s late, in the last hour made ahead
                ns = int((roll - 90) * 1e9)
                await _write_elsewhere(env, Point("pv", "h1", "inv1", "modbus", ns, {"power_w": 3.0}))
            clock[0] = roll + 2
            ns = int(clock[0] * 1e9)
            await _write_elsewhere(
                env, *(Point("pv", hh, "inv1", "modbus", ns, {"power_w": 5.0 + step}) for _, hh in charts)
            )
            asked.clear()
            pages = [await _rolling_day_bytes(env, clock[0], who, hh) for who, hh in charts]
            stop = roll + 60
            if late:  # h1's last hour again with its open windows, then h2's open windows
                assert asked == [(("h1",), (roll - 60) // 3600 * 3600, stop), (("h2",), stop - 120, stop)]
            else:
                assert asked == [(("h1", "h2"), stop - 120, stop)]
            assert pages == await _uncached(
                tmp_path / f"whole{step}", own_store, api_policy, clock[0], charts
            )


async def test_charts_not_rolling_or_not_asked_lately_are_not_made_ahead(
    tmp_path: Path, own_store: Path, api_policy: Policy
) -> None:
    """Only a chart whose window ends at the next whole window and that was asked within
    ``LIVE_RECENT_S`` has its next window made ahead: a day that ends at midnight is asked again as
    it is, and a dashboard closed a while ago costs nothing."""
    clock = [(DAY + timedelta(hours=23, minutes=30, seconds=45)).timestamp() - LIVE_RECENT_S - 1]
    async for env in start_env(tmp_path, own_store, api_policy, now=lambda: clock[0]):
        env.store.version_poll_s = 0
        asked = _note_query_households(env.store)
        await _rolling_day_bytes(env, clock[0], "bob", "h2")
        clock[0] += LIVE_RECENT_S + 1
        assert (await _get(env, "alice", OWN, URL, every="1m"))[0] == 200  # the whole day, up to midnight
        asked.clear()
        assert await prepare_next_windows(env.state) == 0 and not asked
        # The same dashboard asked just now is prepared.
        await _rolling_day_bytes(env, clock[0], "bob", "h2")
        clock[0] += 1
        assert await prepare_next_windows(env.state) == 1 and asked


async def test_a_server_with_live_ahead_prepares_its_charts_by_itself(
    tmp_path: Path, own_store: Path, api_policy: Policy
) -> None:
    """``make_app(live_ahead=True)`` (what ``hems serve`` runs) makes the next window ahead on its own,
    within about a second of the chart being asked in the last ``AHEAD_S`` of a minute."""
    clock = [(DAY + timedelta(hours=23, minutes=30, seconds=50)).timestamp()]
    async for env in start_env(tmp_path, own_store, api_policy, now=lambda: clock[0], live_ahead=True):
        env.store.version_poll_s = 0
        await _rolling_day_bytes(env, clock[0], "bob", "h2")
        kind = next(iter(env.state.live_charts))
        roll = clock[0] // 60 * 60 + 60
        for _ in range(200):  # its round comes every second: ten seconds leave room for a busy machine
            if env.state.live_ahead.get(kind) == (roll, {"h2": clock[0]}):
                break
            await asyncio.sleep(0.05)
        assert env.state.live_ahead.get(kind) == (roll, {"h2": clock[0]})


async def test_charts_whose_pieces_a_query_begun_meanwhile_makes_wait_for_it(
    tmp_path: Path, own_store: Path, api_policy: Policy
) -> None:
    """After a write, two live charts look for their open windows in the same turn of the event loop:
    the first one's query makes both, and the second waits for it instead of reading its own (every
    write, a worker read a few dozen charts' open windows one by one this way)."""
    clock = [(DAY + timedelta(hours=23, minutes=30, seconds=5)).timestamp()]
    async for env in start_env(tmp_path, own_store, api_policy, now=lambda: clock[0]):
        env.store.version_poll_s = 0
        for who, hh in (("alice", "h1"), ("bob", "h2")):
            await _rolling_day_bytes(env, clock[0], who, hh)
        ns = int(clock[0] * 1e9)
        await _write_elsewhere(
            env, *(Point("pv", hh, "inv1", "modbus", ns, {"power_w": 5.0}) for hh in ("h1", "h2"))
        )
        asked = _note_query_households(env.store)
        ((kind, recent),) = env.state.live_charts.items()
        version = env.state.store.data_version()
        cut = (clock[0] // 60 - 1) * 60
        charts = [
            _Chart.plan(
                env.state,
                hh,
                kind,
                (recent[hh].read_from, cut, datetime.fromtimestamp(recent[hh].stop, UTC)),
                recent[hh].periods,
                version,
                recent,
                LIVE_BATCH,
            )
            for hh in ("h1", "h2")
        ]
        pieces = await asyncio.gather(*(chart.piece(chart.chunks) for chart in charts))
        assert [q[0] for q in asked] == [("h1", "h2")]
        alone = [await chart.make(chart.chunks, chart.chunks + 1) for chart in charts]  # each read by itself
        assert [p.body for p in pieces] == [p.body for p in alone]


async def test_the_next_hours_whole_hours_are_joined_and_compressed_ahead(
    tmp_path: Path, own_store: Path, api_policy: Policy
) -> None:
    """At two minutes past each hour a rolling day's whole hours change (the last hour joins them):
    made ahead, they are joined and compressed before the minute (one new part per chart), and the
    answer at the minute makes no part and reads only its open windows, byte for byte what a server
    without a cache gives."""
    roll = (DAY + timedelta(hours=23, minutes=2)).timestamp()
    clock = [roll - AHEAD_S - 5]
    charts = (("alice", "h1"), ("bob", "h2"))
    async for env in start_env(tmp_path, own_store, api_policy, now=lambda: clock[0]):
        env.store.version_poll_s = 0
        # Readings in the hour that joins the whole hours, seen by no other test's charts.
        ns = int((roll - 1800) * 1e9)
        await _write_elsewhere(
            env, *(Point("pv", hh, "inv1", "modbus", ns, {"power_w": 4321.5}) for _, hh in charts)
        )
        for who, hh in charts:
            await _rolling_day_bytes(env, clock[0], who, hh)
        clock[0] = roll - AHEAD_S + 5
        for who, hh in charts:
            await _rolling_day_bytes(env, clock[0], who, hh)
        parts = list(_CLOSED_PARTS)
        assert await prepare_next_windows(env.state) == 2
        assert len([p for p in _CLOSED_PARTS if p not in parts]) == 2
        clock[0] = roll - 5
        for who, hh in charts:  # the dashboards keep asking
            await _rolling_day_bytes(env, clock[0], who, hh)
        clock[0] = roll + 1
        asked = _note_query_households(env.store)
        parts = list(_CLOSED_PARTS)
        pages = [await _rolling_day_bytes(env, clock[0], who, hh) for who, hh in charts]
        assert not [p for p in _CLOSED_PARTS if p not in parts]
        assert asked == [(("h1", "h2"), roll - 60, roll + 60)]
        assert pages == await _uncached(tmp_path / "whole", own_store, api_policy, clock[0], charts)
