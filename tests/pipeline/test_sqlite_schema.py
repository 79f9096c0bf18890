"""The embedded store's schema is versioned and migrated; a schema error is an error, not an outage.

The bug: a field added to the vocabulary made every write to an existing ``hems.sqlite`` fail with
"table points has no column named ...", the store called that an outage, and the writer spooled the
batches and retried them forever.  Files here are built with the DDL of the last unversioned release,
copied below as text (never derived from today's code, which is what is being checked).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from collector.reading import Reading
from pipeline.errors import PipelineError, SchemaError
from pipeline.points import Point
from pipeline.query import SeriesQuery
from pipeline.spool import Spool
from pipeline.sqlite_schema import FIELD_COLUMNS, SCHEMA_VERSION
from pipeline.sqlite_store import SQLiteStore
from pipeline.store import StoreUnavailable
from pipeline.writer import Pipeline

# The schema of every file made before versioning (user_version 0), as that release created it.
UNVERSIONED_DDL = (
    "CREATE TABLE IF NOT EXISTS points (household TEXT NOT NULL, measurement TEXT NOT NULL, "
    "ts_ns INTEGER NOT NULL, device TEXT NOT NULL, source TEXT NOT NULL, power_w REAL, energy_wh_total REAL, "
    "import_wh_total REAL, export_wh_total REAL, charge_wh_total REAL, discharge_wh_total REAL, "
    "soc_pct REAL, volume_l_total REAL, current_a REAL, voltage_v REAL, frequency_hz REAL, "
    "temperature_c REAL, fault INTEGER, running INTEGER, connected INTEGER, state TEXT, "
    "raw_charge_wh_total REAL, raw_discharge_wh_total REAL, raw_energy_wh_total REAL, "
    "raw_export_wh_total REAL, raw_import_wh_total REAL, raw_volume_l_total REAL, "
    "PRIMARY KEY (household, measurement, ts_ns, device)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS rollups (household TEXT NOT NULL, measurement TEXT NOT NULL, "
    "level TEXT NOT NULL, bucket_ns INTEGER NOT NULL, device TEXT NOT NULL, field TEXT NOT NULL, "
    "n INTEGER NOT NULL, total REAL, min REAL, max REAL, first REAL, first_ts INTEGER, last REAL, "
    "last_ts INTEGER, PRIMARY KEY (household, measurement, level, bucket_ns, device, field)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
)
T0 = datetime(2026, 11, 25, tzinfo=UTC)
NS0 = int(T0.timestamp()) * 1_000_000_000


def old_file(path: Path, *, without: str | None = None, user_version: int = 0) -> None:
    """A file as the unversioned release left it, with one reading in it.  ``without``: the same
    release as it was before that field joined the vocabulary (its column not there yet)."""
    conn = sqlite3.connect(path)
    points_ddl, *others = UNVERSIONED_DDL
    if without is not None:
        assert f" {without} REAL," in points_ddl
        points_ddl = points_ddl.replace(f" {without} REAL,", "")
    for ddl in (points_ddl, *others):
        conn.execute(ddl)
    conn.execute(
        "INSERT INTO points (household, measurement, ts_ns, device, source, power_w, soc_pct) "
        "VALUES ('hh-1', 'battery', ?, 'battery', 'echonet', -250.0, 61.0)",
        (NS0,),
    )
    conn.execute(f"PRAGMA user_version = {user_version}")
    conn.commit()
    conn.close()


def file_state(path: Path) -> tuple[int, list[str]]:
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        columns = [row[1] for row in conn.execute("PRAGMA table_info(points)")]
    finally:
        conn.close()
    return version, columns


def battery_query(*fields: str) -> SeriesQuery:
    return SeriesQuery(("hh-1",), "battery", fields, T0, T0 + timedelta(hours=1))


def battery_point(seconds: int, **fields: float) -> Point:
    return Point("battery", "hh-1", "battery", "echonet", NS0 + seconds * 1_000_000_000, fields)


async def test_a_file_made_before_versioning_opens_migrates_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "hems.sqlite"
    old_file(path)
    store = SQLiteStore(path)
    try:
        await store.open()
        assert file_state(path)[0] == SCHEMA_VERSION
        got = await store.query(battery_query("power_w", "soc_pct"))
        assert got.select("power_w", "soc_pct").rows() == [(-250.0, 61.0)]
        await store.write([battery_point(10, power_w=100.0)])
        assert (await store.query(battery_query("power_w")))["power_w"].to_list() == [-250.0, 100.0]
    finally:
        await store.close()


async def test_a_field_added_since_the_file_was_made_gets_its_column_and_writes_work(tmp_path: Path) -> None:
    """Fails on the unversioned code: the write raised StoreUnavailable ("no column named")."""
    path = tmp_path / "hems.sqlite"
    old_file(path, without="temperature_c")
    assert "temperature_c" not in file_state(path)[1]
    store = SQLiteStore(path)
    try:
        await store.write([battery_point(10, temperature_c=24.5, power_w=80.0)])  # opens lazily, migrates
        got = await store.query(battery_query("temperature_c", "power_w"))
        assert got.select("temperature_c", "power_w").rows() == [(None, -250.0), (24.5, 80.0)]
    finally:
        await store.close()
    version, columns = file_state(path)
    assert version == SCHEMA_VERSION and set(FIELD_COLUMNS) <= set(columns)
    assert columns.count("temperature_c") == 1


async def test_the_pipeline_stores_a_new_field_instead_of_spooling_it(tmp_path: Path) -> None:
    """The bug end to end: the reading reaches the store; nothing waits in the spool."""
    path = tmp_path / "hems.sqlite"
    old_file(path, without="temperature_c")
    store = SQLiteStore(path)
    spool = Spool(tmp_path / "spool")
    reading = Reading("hh-1", "battery", "battery", T0 + timedelta(seconds=30), {"temperature_c": 31.0})
    try:
        async with Pipeline(store, spool=spool) as pipeline:
            result = await pipeline.submit([reading], now=T0 + timedelta(minutes=1))
            assert result.accepted == 1
            assert pipeline.stats.points_written == 1 and pipeline.stats.spooled_batches == 0
        got = await store.query(battery_query("temperature_c"))
        assert got["temperature_c"].to_list() == [31.0]
    finally:
        await store.close()


async def test_a_file_from_a_newer_release_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "hems.sqlite"
    old_file(path, user_version=SCHEMA_VERSION + 1)
    before = path.read_bytes()
    store = SQLiteStore(path)
    try:
        with pytest.raises(SchemaError, match=rf"schema version {SCHEMA_VERSION + 1}, newer than"):
            await store.open()
        with pytest.raises(SchemaError):
            await store.write([battery_point(10, power_w=1.0)])
        with pytest.raises(SchemaError):
            await store.query(battery_query("power_w"))
        assert not await store.ping()
    finally:
        await store.close()
    assert path.read_bytes() == before


async def test_a_table_that_is_not_ours_is_a_schema_error(tmp_path: Path) -> None:
    path = tmp_path / "hems.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE points (id INTEGER PRIMARY KEY, payload TEXT)")
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    try:
        with pytest.raises(SchemaError, match="not a hems store"):
            await store.open()
    finally:
        await store.close()
    assert file_state(path) == (0, ["id", "payload"])  # the failed migration was rolled back


async def test_two_stores_opening_one_old_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "hems.sqlite"
    old_file(path, without="frequency_hz")
    stores = [SQLiteStore(path), SQLiteStore(path)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        await asyncio.gather(*(s.write([battery_point(i, frequency_hz=50.0)]) for i, s in enumerate(stores)))
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    version, columns = file_state(path)
    assert version == SCHEMA_VERSION and columns.count("frequency_hz") == 1


def _drop_column(path: Path, column: str) -> None:
    """What a botched manual repair or a foreign tool does to a migrated file (SQLite >= 3.35)."""
    conn = sqlite3.connect(path)
    conn.execute(f"ALTER TABLE points DROP COLUMN {column}")
    conn.commit()
    conn.close()


async def test_a_schema_error_is_counted_logged_and_raised_never_spooled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Fails on the unversioned code: the error was StoreUnavailable, the batch went to the spool and
    the submit was acknowledged as if the data were safe, to be replayed (and fail) forever."""
    path = tmp_path / "hems.sqlite"
    store = SQLiteStore(path)
    await store.open()
    _drop_column(path, "temperature_c")
    spool = Spool(tmp_path / "spool")
    reading = Reading("hh-1", "battery", "battery", T0, {"temperature_c": 20.0, "power_w": 5.0})
    try:
        with caplog.at_level(logging.ERROR, logger="pipeline.writer"):
            async with Pipeline(store, spool=spool) as pipeline:
                with pytest.raises(SchemaError, match="temperature_c") as info:
                    await pipeline.submit([reading], now=T0)
                assert not isinstance(info.value, StoreUnavailable)
                assert isinstance(info.value, PipelineError)
                assert pipeline.stats.store_failures == {"schema": 1}
                assert pipeline.stats.spooled_batches == 0 and len(spool) == 0
                assert pipeline.metrics()["store_failures"] == {"schema": 1}
        assert any("schema" in r.getMessage() and "temperature_c" in r.getMessage() for r in caplog.records)
    finally:
        await store.close()


async def test_a_spooled_batch_that_hits_a_schema_error_is_set_aside_not_retried_forever(
    tmp_path: Path,
) -> None:
    path = tmp_path / "hems.sqlite"
    store = SQLiteStore(path)
    await store.open()
    _drop_column(path, "temperature_c")
    spool = Spool(tmp_path / "spool")
    spool.append([battery_point(0, temperature_c=20.0)])  # spooled during an outage, before the repair
    spool.append([battery_point(10, power_w=7.0)])
    try:
        async with Pipeline(store, spool=spool, replay_interval=0.01) as pipeline:
            for _ in range(500):
                if len(spool) == 0 and pipeline.stats.replayed_batches == 1:
                    break
                await asyncio.sleep(0.01)
            assert len(spool) == 0
            assert pipeline.stats.store_failures == {"schema": 1}
            assert pipeline.stats.replayed_batches == 1
            assert spool.stats.events["quarantined_batches"] == 1
        assert (await store.query(battery_query("power_w")))["power_w"].to_list() == [7.0]
        assert len(list((tmp_path / "spool").glob("quarantine-*.json"))) == 1  # kept on disk
    finally:
        await store.close()
