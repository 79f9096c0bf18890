"""One set of cases, run against every registered store (``pipeline.stores``: the embedded SQLite
store, a real InfluxDB 2.x, and whatever else is registered when the suite is collected), plus a
check that each returns frames *identical* to the SQLite store's for the same data and queries.

Stores are picked up by registration, never listed here: each is opened from ``PipelineConfig`` the
way ``hems`` opens it.  A store that needs an outside server names it (``Registration.service``);
its cases carry that pytest marker and take the server's settings from the ``<service>_settings``
fixture.  The InfluxDB cases need the ``influxd`` binary (``scripts/influxdb.sh``); without it they
are reported as skipped by the ``influxdb`` fixture, never passed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipeline import stores
from pipeline.config import PipelineConfig
from pipeline.frames import result_schema
from pipeline.points import Point
from pipeline.query import Deletion, QueryError, SeriesQuery
from pipeline.store import Store

T0 = datetime(2026, 11, 25, tzinfo=UTC)
NS = 1_000_000_000
B = int(T0.timestamp()) * NS


def pt(ts_s: float, hh: str = "hh-1", dev: str = "meter", cat: str = "electricity", **fields: Any) -> Point:
    return Point(cat, hh, dev, "echonet", B + round(ts_s * NS), fields)


def q(**kw: Any) -> SeriesQuery:
    args: dict[str, Any] = {
        "households": ("hh-1",),
        "category": "electricity",
        "fields": ("power_w",),
        "start": T0,
        "stop": T0 + timedelta(hours=1),
    }
    args.update(kw)
    return SeriesQuery(**args)


def _param(registration: stores.Registration) -> Any:
    marks = () if registration.service is None else (getattr(pytest.mark, registration.service),)
    return pytest.param(registration, marks=marks, id=registration.name)


ALL_STORES = [_param(r) for r in stores.registered()]
SQLITE = next(r for r in stores.registered() if r.name == "sqlite")  # the reference the others match
OTHER_STORES = [_param(r) for r in stores.registered() if r is not SQLITE]


async def _open(registration: stores.Registration, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """The store as ``hems`` opens it: from settings, through the registry."""
    settings: dict[str, Any] = {
        "store": registration.name,
        "sqlite_path": str(tmp_path / f"conformance-{registration.name}.sqlite"),
        "batch_size": 500,
    }
    if registration.service is not None:
        settings.update(request.getfixturevalue(f"{registration.service}_settings"))
    s = stores.open_store(PipelineConfig.from_mapping(settings, env={}))
    await s.open()
    return s


@pytest.fixture(params=ALL_STORES)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    s = await _open(request.param, request, tmp_path)
    yield s
    await s.close()


# -- the shared cases ---------------------------------------------------------------------------------


async def test_is_a_store_and_answers_ping(store: Store) -> None:
    assert isinstance(store, Store)
    assert await store.ping()


async def test_equipment_health_is_a_series_like_any_other(store: Store) -> None:
    """Collector health (category ``equipment``: text ``health``, number ``health_since_s``) is written
    and read back the same on both stores: raw, and the last verdict per window."""
    await store.write(
        [
            pt(0, dev="inverter", cat="equipment", health="ok", health_since_s=100.0),
            pt(30, dev="inverter", cat="equipment", health="timeout", health_since_s=130.5),
            pt(30, dev="solar", cat="equipment", health="ok", health_since_s=100.0),
        ]
    )
    raw = await store.query(q(category="equipment", fields=("health", "health_since_s")))
    assert raw.select("device", "health", "health_since_s").rows() == [
        ("inverter", "ok", 100.0),
        ("inverter", "timeout", 130.5),
        ("solar", "ok", 100.0),
    ]
    last = await store.query(
        q(category="equipment", fields=("health",), every=timedelta(minutes=1), agg="last")
    )
    assert last.select("device", "health").rows() == [("inverter", "timeout"), ("solar", "ok")]


async def test_delete_removes_one_households_measurement_in_the_range(store: Store) -> None:
    """Erasure's store step: [start, stop) of one household's one measurement goes, nothing else."""
    await store.write(
        [pt(s, power_w=float(s)) for s in range(0, 60, 10)]
        + [pt(s, hh="hh-2", power_w=1.0) for s in range(0, 60, 10)]
        + [pt(s, cat="pv", power_w=2.0) for s in range(0, 60, 10)]
    )
    removed = await store.delete(
        Deletion("hh-1", "electricity", T0 + timedelta(seconds=10), T0 + timedelta(seconds=30))
    )
    assert removed in (2, None)  # InfluxDB does not say how many
    left = await store.query(q(households=("hh-1", "hh-2")))
    assert left.filter(pl.col("household") == "hh-1")["power_w"].to_list() == [0.0, 30.0, 40.0, 50.0]
    assert left.filter(pl.col("household") == "hh-2").height == 6
    assert (await store.query(q(category="pv"))).height == 6
    assert await store.delete(Deletion("hh-1", "electricity", T0, T0 + timedelta(seconds=5))) in (1, None)
    assert (await store.query(q()))["power_w"].to_list() == [30.0, 40.0, 50.0]


def test_a_deletion_refuses_what_could_reach_a_predicate() -> None:
    for household, measurement in (('h" OR household="x', "electricity"), ("hh-1", "electricity OR 1")):
        with pytest.raises(QueryError):
            Deletion(household, measurement, T0, T0 + timedelta(seconds=1))
    with pytest.raises(QueryError):
        Deletion("hh-1", "electricity", T0, T0)


async def test_write_then_raw_query(store: Store) -> None:
    await store.write([pt(0, power_w=1.5), pt(10, power_w=-2.25), pt(20.000001, power_w=3.0)])
    got = await store.query(q())
    assert got.schema == pl.Schema(result_schema(q()))
    assert got["time"].to_list() == [
        T0,
        T0 + timedelta(seconds=10),
        T0 + timedelta(seconds=20, microseconds=1),
    ]
    assert got["power_w"].to_list() == [1.5, -2.25, 3.0]
    assert set(got["household"]) == {"hh-1"} and set(got["device"]) == {"meter"}


async def test_rewrite_is_idempotent_and_overwrites(store: Store) -> None:
    batch = [pt(i, power_w=float(i)) for i in range(0, 50, 5)]
    await store.write(batch)
    await store.write(batch)  # a replay
    await store.write([pt(5, power_w=99.0)])  # same series + timestamp = same point
    got = await store.query(q())
    assert got.height == 10
    assert got.filter(pl.col("time") == T0 + timedelta(seconds=5))["power_w"].to_list() == [99.0]


async def test_partial_rewrite_keeps_other_fields(store: Store) -> None:
    await store.write([pt(0, power_w=1.0, import_wh_total=10.0)])
    await store.write([pt(0, power_w=2.0)])
    got = await store.query(q(fields=("power_w", "import_wh_total")))
    assert got.select("power_w", "import_wh_total").rows() == [(2.0, 10.0)]


async def test_missing_fields_are_null_and_types_follow_the_contract(store: Store) -> None:
    await store.write([pt(0, power_w=1.0, fault=True, state="run"), pt(10, fault=False), pt(20, power_w=2.0)])
    query = q(fields=("power_w", "fault", "state"))
    got = await store.query(query)
    assert got.schema == pl.Schema(result_schema(query))
    assert got.select("power_w", "fault", "state").rows() == [
        (1.0, True, "run"),
        (None, False, None),
        (2.0, None, None),
    ]


async def test_rows_without_any_requested_field_are_absent(store: Store) -> None:
    await store.write([pt(0, power_w=1.0), pt(10, soc_pct=50.0)])
    got = await store.query(q())
    assert got.height == 1


async def test_multi_household_sorted_and_filtered(store: Store) -> None:
    await store.write(
        [
            pt(10, hh="hh-2", power_w=2.0),
            pt(0, hh="hh-1", dev="zz", power_w=3.0),
            pt(5, hh="hh-1", dev="aa", power_w=4.0),
            pt(5, hh="hh-3", power_w=5.0),  # not asked for
            pt(5, hh="hh-1", cat="pv", power_w=6.0),  # other category
        ]
    )
    got = await store.query(q(households=("hh-2", "hh-1")))
    assert got.select("household", "device", "power_w").rows() == [
        ("hh-1", "aa", 4.0),
        ("hh-1", "zz", 3.0),
        ("hh-2", "meter", 2.0),
    ]
    only = await store.query(q(households=("hh-1",), devices=("zz",)))
    assert only["power_w"].to_list() == [3.0]


async def test_range_is_half_open(store: Store) -> None:
    await store.write([pt(0, power_w=1.0), pt(60, power_w=2.0)])
    got = await store.query(q(stop=T0 + timedelta(seconds=60)))
    assert got["power_w"].to_list() == [1.0]


WINDOW_DATA: list[tuple[int, dict[str, Any]]] = [
    # window [0, 60): power 1, 3 (mean 2); fault T, F; state a, b
    (0, {"power_w": 1.0, "fault": True, "state": "a"}),
    (30, {"power_w": 3.0, "fault": False, "state": "b"}),
    # window [60, 120): power 5 only once, a point without power
    (70, {"power_w": 5.0}),
    (90, {"fault": True}),
    # window [180, 240): one point
    (200, {"power_w": -1.5, "fault": False}),
]
EXPECTED = {
    "mean": ([2.0, 5.0, -1.5], [0.5, 1.0, 0.0]),
    "min": ([1.0, 5.0, -1.5], [False, True, False]),
    "max": ([3.0, 5.0, -1.5], [True, True, False]),
    "sum": ([4.0, 5.0, -1.5], [1.0, 1.0, 0.0]),
    "first": ([1.0, 5.0, -1.5], [True, True, False]),
    "last": ([3.0, 5.0, -1.5], [False, True, False]),
    "count": ([2, 1, 1], [2, 1, 1]),
}


@pytest.mark.parametrize("agg", sorted(EXPECTED))
async def test_windowed_aggregation(store: Store, agg: str) -> None:
    await store.write([pt(ts, **fields) for ts, fields in WINDOW_DATA])
    query = q(fields=("power_w", "fault"), every=timedelta(minutes=1), agg=agg)
    got = await store.query(query)
    assert got.schema == pl.Schema(result_schema(query))
    assert got["time"].to_list() == [T0, T0 + timedelta(minutes=1), T0 + timedelta(minutes=3)]
    power, fault = EXPECTED[agg]
    assert got["power_w"].to_list() == power
    assert got["fault"].to_list() == fault


async def test_windows_are_epoch_aligned_even_when_start_is_not(store: Store) -> None:
    await store.write([pt(ts, power_w=float(ts)) for ts in range(0, 1800, 60)])
    query = q(start=T0 + timedelta(seconds=90), every=timedelta(minutes=7), agg="count")
    got = await store.query(query)
    every_us = 7 * 60 * 1_000_000
    starts = [int(t.timestamp() * 1_000_000) for t in got["time"]]
    assert all(s % every_us == 0 for s in starts)
    assert got["power_w"].sum() == 28  # minutes 2..29


_AGGS = {
    "mean": lambda v: sum(v) / len(v),
    "sum": sum,
    "min": min,
    "max": max,
    "first": lambda v: v[0],
    "last": lambda v: v[-1],
    "count": len,
}


@pytest.mark.parametrize("every", [timedelta(hours=1), timedelta(days=1)])
@pytest.mark.parametrize("agg", sorted(_AGGS))
async def test_a_window_straddling_the_start_or_stop_aggregates_only_what_is_inside(
    store: Store, every: timedelta, agg: str
) -> None:
    """A served period that begins or ends inside an aggregation window (a new occupant, a link that
    ended): the windows at either end aggregate only the readings inside ``[start, stop)``; one just
    outside (the previous occupant's, the next one's) never counts."""
    step = 600  # a reading every 10 minutes for two days, each a different value
    await store.write([pt(ts, power_w=float(ts // step)) for ts in range(0, 2 * 86400, step)])
    start, stop = 10 * 3600 + 300, 86400 + 7 * 3600 + 300  # 10:05 on day 1 to 07:05 on day 2
    size = int(every.total_seconds())
    windows: dict[int, list[float]] = {}
    for ts in range(0, 2 * 86400, step):
        if start <= ts < stop:
            windows.setdefault(ts // size * size, []).append(float(ts // step))
    got = await store.query(
        q(start=T0 + timedelta(seconds=start), stop=T0 + timedelta(seconds=stop), every=every, agg=agg)
    )
    assert got["time"].to_list() == [T0 + timedelta(seconds=w) for w in sorted(windows)]
    assert got["power_w"].to_list() == pytest.approx([_AGGS[agg](windows[w]) for w in sorted(windows)])


async def test_text_field_first_last(store: Store) -> None:
    await store.write([pt(0, state="a"), pt(20, state="b"), pt(40, state="c")])
    query = q(fields=("state",), every=timedelta(minutes=1), agg="last")
    got = await store.query(query)
    assert got["state"].to_list() == ["c"]


@pytest.mark.parametrize("every", [None, timedelta(minutes=5)])
async def test_empty_result_keeps_columns_and_dtypes(store: Store, every: timedelta | None) -> None:
    await store.write([pt(0, power_w=1.0)])
    query = q(fields=("power_w", "fault", "state"), start=T0 + timedelta(days=1), stop=T0 + timedelta(days=2))
    query = dataclasses.replace(query, every=every, agg="first")
    got = await store.query(query)
    assert got.height == 0
    assert got.schema == pl.Schema(result_schema(query))


HOSTILE = 'hh") |> drop() //'


def test_query_validation_refuses_hostile_and_malformed_values() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"households": (HOSTILE,)}, "households"),
        ({"households": ()}, "households"),
        ({"devices": ('x" or true',)}, "devices"),
        ({"category": "electricity) |> drop("}, "category"),
        ({"fields": ('power_w"',)}, "fields"),
        ({"start": datetime(2026, 1, 1)}, "start"),
        ({"stop": T0}, "stop"),
        ({"every": timedelta(0)}, "every"),
        ({"agg": "median"}, "agg"),
    ]
    for kw, field in cases:
        with pytest.raises(QueryError) as err:
            q(**kw)
        assert err.value.field == field


def _unvalidated(**kw: Any) -> SeriesQuery:
    """A query that skipped validation (as if a bug let it through)."""
    query = object.__new__(SeriesQuery)
    for name, value in {**dataclasses.asdict(q()), **kw}.items():
        object.__setattr__(query, name, value)
    return query


async def test_hostile_values_that_bypass_validation_are_inert(store: Store) -> None:
    await store.write([pt(0, power_w=1.0), pt(0, hh="hh-2", power_w=2.0)])
    for query in (
        _unvalidated(households=(HOSTILE,)),
        _unvalidated(households=("hh-1", 'hh-2" or r.household != "')),
        _unvalidated(households=("hh-1",), devices=('meter") or (r.device != "',)),
    ):
        got = await store.query(query)
        assert got.height <= 1  # never more than what the honest part of the query matches
        assert set(got["household"]) <= {"hh-1"}
    # the data is untouched
    assert (await store.query(q(households=("hh-1", "hh-2"))))["power_w"].to_list() == [1.0, 2.0]


# -- both stores, same answers ------------------------------------------------------------------------


def _dataset() -> list[Point]:
    points = []
    for i in range(360):  # one hour at 10 s, two homes, two meters, irregular field presence
        for hh in ("hh-1", "hh-2"):
            for dev in ("meter", "sub"):
                fields: dict[str, Any] = {"power_w": ((i * 7 + len(dev)) % 40) * 0.25 - 3.0}
                if i % 3 == 0:
                    fields["import_wh_total"] = 1000.0 + i * 0.5
                if i % 4 == 0:
                    fields["fault"] = i % 8 == 0
                if i % 5 == 0:
                    fields["state"] = "run" if i % 10 else "idle"
                points.append(pt(i * 10 + (0.000000123 if hh == "hh-2" else 0), hh=hh, dev=dev, **fields))
    return points


CROSS_QUERIES: list[dict[str, Any]] = [
    {"fields": ("power_w", "import_wh_total", "fault", "state")},
    {"households": ("hh-2", "hh-1"), "fields": ("import_wh_total", "power_w")},
    {"devices": ("sub",), "fields": ("fault",), "start": T0 + timedelta(seconds=95)},
    *[
        {
            "households": ("hh-1", "hh-2"),
            "fields": ("power_w", "import_wh_total", "fault"),
            "every": timedelta(minutes=5),
            "agg": agg,
        }
        for agg in ("mean", "min", "max", "sum", "first", "last", "count")
    ],
    {
        "fields": ("state",),
        "every": timedelta(minutes=7),
        "agg": "first",
        "start": T0 + timedelta(seconds=33),
    },
    {"fields": ("state", "power_w"), "every": timedelta(seconds=90), "agg": "count"},
    {"fields": ("soc_pct",)},
]


@pytest.mark.parametrize("registration", OTHER_STORES)
async def test_every_store_returns_frames_identical_to_sqlite(
    tmp_path: Path, request: pytest.FixtureRequest, registration: stores.Registration
) -> None:
    sqlite = await _open(SQLITE, request, tmp_path)
    other = await _open(registration, request, tmp_path)
    try:
        data = _dataset()
        await sqlite.write(data)
        await other.write(data)
        for kw in CROSS_QUERIES:
            query = q(**kw)
            a = await sqlite.query(query)
            b = await other.query(query)
            assert_frame_equal(a, b, check_exact=True)
            assert a.height > 0 or kw["fields"] == ("soc_pct",), kw
    finally:
        await sqlite.close()
        await other.close()
