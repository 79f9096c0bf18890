"""A served period that begins or ends inside a rollup's hour or day, once retention removed the raw
points: the answer holds only what lies within it.

Older than the retention's raw days, the SQLite store keeps hourly and daily partial aggregates only,
and a query read every bucket that *began* within its range's hour or day, so the windows at the edges
of a served period (a move, a link, an erasure's end) carried the readings of the minutes outside it:
the previous occupant's ten minutes in the new occupant's first hour, the new occupant's fifty in the
former one's last, a whole day of the other's with ``every=1d``.  A bucket partly outside the range is
now left out (its raw points are gone, so its part inside cannot be told apart); a day is read from
the whole hours inside the range.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from access.compiler import Policy
from pipeline.retention import RetentionPolicy, run_retention
from pipeline.sqlite_store import SQLiteStore
from tests.access.api_world import (
    DAY,
    OWN,
    RANGE,
    SERIES,
    Env,
    api_policy,
    move_in_carol,
    start_env,
    store_path,
)

__all__ = ["api_policy", "store_path"]
MOVED = DAY + timedelta(hours=12, minutes=10)  # alice moved out of h1, carol moved in


@pytest.fixture
async def env(tmp_path: Path, store_path: Path, api_policy: Policy) -> AsyncIterator[Env]:
    """The day's readings, of which retention has since kept only the hourly and daily rollups."""
    store = tmp_path / "series.sqlite"
    shutil.copy(store_path, store)

    async def expire() -> None:
        s = SQLiteStore(store)
        await run_retention(s, RetentionPolicy(raw_days=30), now=DAY + timedelta(days=40))
        await s.close()

    await asyncio.get_running_loop().run_in_executor(None, asyncio.run, expire())
    async for e in start_env(tmp_path, store, api_policy):
        move_in_carol(e, MOVED.timestamp())
        yield e


async def _counts(env: Env, who: str, every: str) -> dict[str, Any]:
    r = await env.client.get(
        SERIES.format(hh="h1", cat="pv"),
        params={**RANGE, "every": every, "agg": "count", "fields": "power_w", "purpose": OWN},
        headers=env.auth(who),
    )
    assert r.status == 200, await r.text()
    body = await r.json()
    return dict(zip(body["columns"]["time"], body["columns"]["power_w"], strict=True))


async def test_the_hour_of_the_move_goes_to_neither_occupant_once_only_rollups_remain(env: Env) -> None:
    carol, alice = await _counts(env, "carol", "1h"), await _counts(env, "alice", "1h")
    # Deny: the 12:00 hour is 10 minutes of alice's readings and 50 of carol's.
    assert "2026-06-01T12:00:00.000Z" not in carol and "2026-06-01T12:00:00.000Z" not in alice
    # Allow: each one's whole hours, complete (12 readings of 5 minutes).
    assert carol and min(carol) == "2026-06-01T13:00:00.000Z" and set(carol.values()) == {12.0}
    assert alice and max(alice) == "2026-06-01T11:00:00.000Z" and set(alice.values()) == {12.0}


async def test_a_day_of_two_occupants_is_each_ones_whole_hours_once_only_rollups_remain(env: Env) -> None:
    # Deny: the day's rollup is both occupants' readings, and the 12:00 hour's too: each one's day is
    # made of the whole hours of their own time only (12 readings an hour).
    assert await _counts(env, "carol", "1d") == {"2026-06-01T00:00:00.000Z": 11 * 12.0}  # 13:00-24:00
    assert await _counts(env, "alice", "1d") == {"2026-06-01T00:00:00.000Z": 12 * 12.0}  # 00:00-12:00
    # Allow: bob's household, his all day.
    r = await env.client.get(
        SERIES.format(hh="h2", cat="pv"),
        params={**RANGE, "every": "1d", "agg": "count", "fields": "power_w", "purpose": OWN},
        headers=env.auth("bob"),
    )
    body = await r.json()
    assert r.status == 200 and body["columns"]["power_w"] == [288.0], body
