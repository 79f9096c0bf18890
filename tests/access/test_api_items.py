"""Items below categories, through the API: a demand-response contractor gets the negawatt items the
terms name (XOOM joint use (1): generation sold, demand procured, demand reduction, baseline), computed
by the pipeline, and never the household's power curve.

On main the contractor got nothing of ``electricity`` at all (the interim narrowing withheld the
category), so ``test_dr_contractor_is_refused_the_power_curve_but_served_the_negawatt_items`` fails
there on its first served request; before that narrowing it read the raw series whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from access.compiler import Policy
from pipeline.negawatt import derive
from pipeline.points import Point
from pipeline.sqlite_store import SQLiteStore
from seeds.vocabulary import NEGAWATT_ITEMS, STATUS_CATEGORY
from tests.access.api_world import (
    DAY,
    DAY_WINDOW,
    NEGAWATT,
    SERIES,
    Env,
    add_dr_contractor,
    api_policy,
    readings,
    start_env,
)

__all__ = ["api_policy"]


@pytest.fixture(scope="module")
def negawatt_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """h1's readings for the eight days up to 2 June, and the negawatt items the pipeline derived."""
    path = tmp_path_factory.mktemp("negawatt") / "series.sqlite"

    async def fill() -> None:
        store = SQLiteStore(path)
        for back in range(8):
            shifted = [replace(p, ts_ns=p.ts_ns - back * 86400 * 10**9) for p in readings("h1", 288)]
            await store.write(shifted)
        await derive(store, ["h1"], DAY - timedelta(days=7), DAY + timedelta(days=1))
        await store.write(_health("h1"))
        await store.close()

    asyncio.run(fill())
    return path


def _health(household: str) -> list[Point]:
    """The day's equipment status of the inverter (the collector's verdict, hour by hour): the device
    health history, as the ``equipment`` category holds it."""
    out = []
    for hour in range(24):
        t = DAY + timedelta(hours=hour)
        verdict = "timeout" if hour in (3, 4) else "ok"
        fields = {
            "health": verdict,
            "health_since_s": (DAY + timedelta(hours=3 if verdict != "ok" else 0)).timestamp(),
        }
        out.append(Point(STATUS_CATEGORY, household, "inv1", "modbus", int(t.timestamp()) * 10**9, fields))
    return out


@pytest.fixture
async def env(tmp_path: Path, negawatt_store: Path, api_policy: Policy) -> AsyncIterator[Env]:
    async for e in start_env(tmp_path, negawatt_store, api_policy):
        add_dr_contractor(e)
        yield e


async def _get(env: Env, who: str, **query: str) -> tuple[int, dict]:
    r = await env.client.get(
        SERIES.format(hh="h1", cat="electricity"),
        params={**DAY_WINDOW, "purpose": NEGAWATT, **query},
        headers=env.auth(who),
    )
    return r.status, await r.json()


async def test_dr_contractor_is_refused_the_power_curve_but_served_the_negawatt_items(env: Env) -> None:
    # Without fields: the granted items only, each with values, and the ledger names them.
    before = env.ledger_rows()
    status, body = await _get(env, "dr1", every="30m")
    assert status == 200, body
    assert body["fields"] == ["generation_sold_w", "demand_procured_w", "baseline_w", "demand_reduction_w"]
    assert set(body["columns"]) == {"time", "household", "device", *NEGAWATT_ITEMS}
    assert body["clause_ids"] == ["xoom-7.1.negawatt"]
    cols = body["columns"]
    assert len(cols["time"]) == 48 and all(v is not None for v in cols["demand_procured_w"])
    assert any(v is not None for v in cols["baseline_w"])  # seven days before it: a baseline
    (record,) = env.state.ledger.all()[before:]
    assert record.recipient == "dr1" and set(record.categories) == {
        f"electricity.{i}" for i in NEGAWATT_ITEMS
    }
    # Named items: served.
    status, body = await _get(env, "dr1", fields="baseline_w,demand_reduction_w", every="30m")
    assert status == 200 and body["fields"] == ["baseline_w", "demand_reduction_w"]
    # The power curve, or anything else of the meter: refused, citing the clause and what it grants.
    for fields in ("power_w", "baseline_w,power_w", "import_wh_total", "raw_import_wh_total", "voltage_v"):
        status, body = await _get(env, "dr1", fields=fields)
        assert status == 403, (fields, body)
        assert body["reason"] == "item_not_granted" and body["clause_ids"] == ["xoom-7.1.negawatt"], body
        assert "baseline_w" in body["detail"] and "not" in body["detail"]
    r = await env.client.get(
        "/api/v1/households/h1/daily/electricity",
        params={**DAY_WINDOW, "field": "import_wh_total", "purpose": NEGAWATT},
        headers=env.auth("dr1"),
    )
    assert r.status == 403 and (await r.json())["reason"] == "item_not_granted"


async def test_households_lists_the_items_of_a_category_granted_in_part(env: Env) -> None:
    r = await env.client.get("/api/v1/households", params={"purpose": NEGAWATT}, headers=env.auth("dr1"))
    (h1,) = (await r.json())["households"]
    assert "electricity" in h1["categories"]
    assert set(h1["items"]["electricity"]) == set(NEGAWATT_ITEMS)


async def test_whole_category_grants_serve_any_item(env: Env) -> None:
    """The installer's SPS 2(2)[4] grant is of whole categories: the negawatt items are electricity too."""
    r = await env.client.get(
        SERIES.format(hh="h1", cat="electricity"),
        params={
            **DAY_WINDOW,
            "purpose": "sps.pv_after_maintenance",
            "fields": "baseline_w,power_w",
            "every": "1h",
        },
        headers=env.auth("inst1"),
    )
    body = await r.json()
    assert r.status == 200, body
    assert body["fields"] == ["baseline_w", "power_w"]
    (record,) = env.state.ledger.all()[-1:]
    assert record.categories == ("electricity",)  # a whole-category grant: the record names the category


async def test_dr_contractor_is_refused_the_equipment_health_history(env: Env) -> None:
    """XOOM joint use (1) (``xoom-7.1.negawatt``) lists what demand-reduction contractors jointly use:
    basic data, supply-point data (its equipment entries are the meter information and whether
    grid-connected equipment exists) and the negawatt items.  Nothing in it is the home's device health
    history, which is what the ``equipment`` category holds: refused, whole or by item, and nothing is
    recorded as provided.  The installer, whose SPS 2(2)[4] grant names generation equipment, reads it."""
    before = env.ledger_rows()
    for fields in (None, "health", "health_since_s"):
        params = {**DAY_WINDOW, "purpose": NEGAWATT, "agg": "last", **({"fields": fields} if fields else {})}
        r = await env.client.get(
            SERIES.format(hh="h1", cat=STATUS_CATEGORY), params=params, headers=env.auth("dr1")
        )
        body = await r.json()
        assert r.status == 403 and body["reason"] == "no_grant", (fields, body)
    assert env.ledger_rows() == before
    # The allow side of the same clause: the negawatt items are still served, citing it.
    status, body = await _get(env, "dr1", fields="demand_procured_w", every="30m")
    assert status == 200 and body["clause_ids"] == ["xoom-7.1.negawatt"], body
    r = await env.client.get(
        SERIES.format(hh="h1", cat=STATUS_CATEGORY),
        params={**DAY_WINDOW, "purpose": "sps.pv_after_maintenance", "agg": "last"},
        headers=env.auth("inst1"),
    )
    body = await r.json()
    assert r.status == 200 and body["clause_ids"] == ["sps-2.2.4"], body
    assert "timeout" in body["columns"]["health"]
