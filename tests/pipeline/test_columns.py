"""A batch kept by shape is, to everyone who reads it, the sequence of its points: the encoder, the
embedded store, the spool and the writer see the same points in the same order as a list of them."""

from __future__ import annotations

import gc
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from pipeline.columns import ColumnBatch
from pipeline.lineproto import LineEncoder
from pipeline.points import Point
from pipeline.query import SeriesQuery
from pipeline.sqlite_store import SQLiteStore, UnknownFieldError
from tests.pipeline.test_lineproto import TS, fleet, pt


def test_a_column_batch_is_the_sequence_of_its_points() -> None:
    points = fleet(2, homes=3)
    batch = ColumnBatch(points)
    assert list(batch) == points and len(batch) == len(points)
    assert batch[4] == points[4] and batch[-1] == points[-1]
    assert list(batch[3:9]) == points[3:9]
    batch.add("water", "hh-9", "wm", "echonet", TS, {"volume_l_total": 1.5})
    assert batch[-1] == Point("water", "hh-9", "wm", "echonet", TS, {"volume_l_total": 1.5})


@pytest.mark.parametrize("size", [1, 7, 50, 1000])
def test_chunks_are_the_batch_in_order(size: int) -> None:
    points = fleet(3, homes=20)
    batch = ColumnBatch(points)
    chunks = batch.chunks(size)
    assert [list(c) for c in chunks] == [points[i : i + size] for i in range(0, len(points), size)]
    enc = LineEncoder(vector_min=1)
    assert b"\n".join(enc.encode(c) for c in chunks) == enc.encode(batch)


async def test_the_embedded_store_writes_a_batch_as_its_points(tmp_path: Path) -> None:
    points = fleet(12, homes=4)
    points.append(pt({"power_w": 9.0, "state": "idle"}, measurement="pv", device="inverter", ts_ns=TS + 1))
    as_list, as_batch = SQLiteStore(tmp_path / "list.sqlite"), SQLiteStore(tmp_path / "batch.sqlite")
    await as_list.write(points)
    await as_batch.write(ColumnBatch(points))
    span = (
        pl.Series([TS - 1]).cast(pl.Datetime("ns", "UTC"))[0],
        pl.Series([TS + 10**12]).cast(pl.Datetime("ns", "UTC"))[0],
    )
    for category, fields in (
        ("electricity", ("power_w", "import_wh_total", "export_wh_total")),
        ("pv", ("power_w", "running", "energy_wh_total", "state")),
        ("battery", ("power_w", "soc_pct")),
    ):
        q = SeriesQuery(("hh-00000", "hh-00003", "hh-1"), category, fields, *span)
        assert_frame_equal(await as_batch.query(q), await as_list.query(q))
    with pytest.raises(UnknownFieldError):
        await as_batch.write(ColumnBatch([pt({"no_such_field": 1.0})]))
    await as_list.close()
    await as_batch.close()


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_a_batch_extended_by_another_is_both_in_order(size: int) -> None:
    """What the ingest does with an upload: its rows join the batch being filled, after the points
    already there, in the upload's order (also when the upload is a chunk of a larger batch)."""
    first, second = fleet(2, homes=3), fleet(3, homes=2)
    batch = ColumnBatch(first)
    upload = ColumnBatch(second).chunks(size)[-1]
    batch.extend(upload)
    assert list(batch) == first + list(upload)
    batch.add("water", "hh-9", "wm", "echonet", TS, {"volume_l_total": 1.5})
    assert len(batch) == len(first) + len(upload) + 1 and batch[-1].household == "hh-9"
    enc = LineEncoder(vector_min=1)
    assert enc.encode(batch) == LineEncoder(vector_min=10**9).encode(list(batch))
    assert batch.households() == {p.household for p in batch}


def test_points_added_after_extend_and_chunks_join_their_shapes_buffer() -> None:
    """``add`` finds shapes through its own cache; a shape that reached the batch another way (``extend``,
    ``chunks``) or arrived with its fields in another order is still one buffer, in first-arrival order."""
    points = fleet(2, homes=3)
    batch = ColumnBatch(points[:3])
    batch.extend(ColumnBatch(points[3:]))
    late = Point("pv", "hh-7", "inverter", "modbus", TS, {"power_w": 5.0})
    swapped = Point("battery", "hh-7", "battery", "echonet", TS, {"soc_pct": 50.0, "power_w": 1.0})
    for p in (late, swapped, *points[:2]):
        batch.add(p.measurement, p.household, p.device, p.source, p.ts_ns, p.fields)
    expected = [*points, late, swapped, *points[:2]]
    assert list(batch) == expected
    shapes = [(s.measurement, s.names) for s in batch.shapes()]
    assert len(shapes) == len(set(shapes)) == len(ColumnBatch(expected).shapes())
    assert shapes == [(s.measurement, s.names) for s in ColumnBatch(expected).shapes()]
    for chunk in batch.chunks(4):
        first = chunk[0]
        chunk.add(first.measurement, "hh-8", first.device, first.source, TS, first.fields)
        assert list(chunk)[-1] == Point(
            first.measurement, "hh-8", first.device, first.source, TS, first.fields
        )
        assert len(chunk.shapes()) == len({(p.measurement, *p.fields) for p in chunk})


def test_a_filling_batch_gives_the_garbage_collector_nothing_to_scan_per_point() -> None:
    """A fleet's writer holds several batches of 20,000 readings while they are written: kept as a
    tracked tuple per row, each young collection walked every row not yet promoted (~8% of the
    ingest's CPU in ``bench.ingest`` (d)).  Flat, the rows add no object the collector tracks."""
    points = fleet(40, homes=50)  # 6,000 points
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        batch = ColumnBatch(points)
        added = len(gc.get_objects()) - before
    finally:
        gc.enable()
    assert len(batch) == len(points) and list(batch) == points
    assert added < 50  # the batch, its shapes and their lists; none per point
