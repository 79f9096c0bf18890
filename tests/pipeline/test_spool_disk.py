"""The spool when its own disk fails, on real small filesystems (tests/volumes.py): a 160 KiB tmpfs
that fills up mid-record (a short write, then ENOSPC), a volume left with no byte free while the
spool replays, and a segment whose tail a crash cut short."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import pytest

from pipeline.points import Point
from pipeline.spool import Spool, SpoolWriteFailed, encode_points
from tests.volumes import Mount, disk_bytes, fill

MiB = 1024 * 1024


def big_batch(k: int, n: int = 24) -> list[Point]:
    """About 2.5 KB encoded: several records per 4 KiB page, so the volume fills inside a record."""
    return [
        Point(
            "electricity",
            f"hh-{k:04d}",
            "meter",
            "echonet",
            1_700_000_000_000_000_000 + k * 1000 + i,
            {"power_w": float(k * 1000 + i), "import_wh_total": 12345.5 + i},
        )
        for i in range(n)
    ]


def drain(spool: Spool) -> list[list[Point]]:
    out = []
    while (found := spool.peek_record()) is not None:
        record, points = found
        out.append(points)
        assert spool.commit(record)
    return out


def fill_spool(spool: Spool, start: int = 0, limit: int = 400) -> tuple[list[list[Point]], int]:
    """Append until the volume refuses three times; (acknowledged batches, next k)."""
    acked: list[list[Point]] = []
    failures = 0
    k = start
    while failures < 3 and k < start + limit:
        b = big_batch(k)
        k += 1
        try:
            spool.append(b)
        except SpoolWriteFailed:
            failures += 1
            continue
        acked.append(b)
    assert failures == 3, "the volume never filled"
    return acked, k


@pytest.fixture
def full_spool(small_volume: Mount) -> tuple[Spool, Path, list[list[Point]]]:
    """A spool on a 160 KiB volume appended to until the volume refused three times (its own limit
    is far above the volume: the disk is what runs out); with the batches it acknowledged."""
    directory = small_volume("160k") / "spool"
    spool = Spool(directory, max_bytes=64 * MiB, segment_bytes=48 * 1024)
    acked, _ = fill_spool(spool)
    assert acked
    return spool, directory, acked


def test_enospc_mid_record_acknowledges_only_whole_records(
    full_spool: tuple[Spool, Path, list[list[Point]]],
) -> None:
    spool, directory, acked = full_spool
    # Its idea of the size is what is on disk, to the byte, after three failed writes.
    assert spool.size_bytes == disk_bytes(directory)
    assert spool.depth_batches == len(acked)
    assert spool.depth_points == sum(len(b) for b in acked)

    # Replaying frees the volume; appends work again and land after the rest.
    assert drain(spool) == acked
    assert spool.stats.events["append_failed"] == 3  # refused, counted, never acknowledged
    assert disk_bytes(directory) == 0
    again = big_batch(10_000)
    spool.append(again)
    spool.close()

    # A restart finds exactly the acknowledged record, nothing torn.
    reopened = Spool(directory, max_bytes=64 * MiB, segment_bytes=48 * 1024)
    assert reopened.stats.events["torn_records"] == 0
    assert drain(reopened) == [again]
    reopened.close()


def test_restart_after_enospc_finds_every_acknowledged_record(
    full_spool: tuple[Spool, Path, list[list[Point]]],
) -> None:
    spool, directory, acked = full_spool
    spool.close()  # the process stops with the volume still full
    reopened = Spool(directory, max_bytes=64 * MiB, segment_bytes=48 * 1024)
    assert reopened.stats.events["torn_records"] == 0
    assert reopened.size_bytes == disk_bytes(directory)
    assert drain(reopened) == acked
    reopened.close()


def test_full_volume_during_replay_still_drains_and_frees_space(small_volume: Mount) -> None:
    vol = small_volume("160k")
    directory = vol / "spool"
    spool = Spool(directory, max_bytes=64 * MiB, segment_bytes=16 * 1024)
    acked, _ = fill_spool(spool)
    fill(vol)  # another program takes the last byte: not even the cursor file can be written
    assert len(list(directory.glob("*.seg"))) > 2
    # Every acknowledged batch comes out, in order; replayed segments are deleted as they finish.
    assert drain(spool) == acked
    assert spool.stats.events["cursor_save_failed"] > 0
    assert list(directory.glob("*.seg")) == [] or disk_bytes(directory) == 0
    assert spool.size_bytes == disk_bytes(directory)
    spool.close()
    reopened = Spool(directory, max_bytes=64 * MiB, segment_bytes=16 * 1024)
    assert reopened.depth_batches == 0  # position kept: nothing replayed twice, nothing skipped
    reopened.close()


def _records(path: Path) -> list[tuple[int, int]]:
    """(offset, size) of each record in a segment file."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos < len(data):
        length, _ = struct.unpack_from(">II", data, pos)
        out.append((pos, 8 + length))
        pos += 8 + length
    return out


def closed_segment(directory: Path, n: int) -> tuple[list[list[Point]], Path]:
    """``n`` batches spooled and the spool closed: the batches and their one segment file."""
    spool = Spool(directory)
    batches = [big_batch(k, 3) for k in range(n)]
    for b in batches:
        spool.append(b)
    spool.close()
    return batches, next(directory.glob("*.seg"))


def test_restart_after_a_torn_tail_cuts_it_once_and_says_what_was_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    batches, seg = closed_segment(tmp_path, 4)
    data = seg.read_bytes()
    last_offset, last_size = _records(seg)[-1]
    # What a crash in the middle of writing the last record leaves on disk (the bytes before it, and
    # part of it); produced by cutting the file, as a kill -9 inside write() cannot be timed.
    seg.write_bytes(data[: last_offset + last_size // 2])
    with caplog.at_level(logging.WARNING, logger="pipeline.spool"):
        again = Spool(tmp_path)
    assert again.stats.events["torn_records"] == 1
    assert again.stats.events["torn_bytes"] == last_size // 2
    logged = [r.getMessage() for r in caplog.records if "torn" in r.getMessage()]
    assert logged and str(last_size // 2) in logged[0] and seg.name in logged[0]
    assert seg.stat().st_size == last_offset  # cut at the last good record
    assert drain(again) == batches[:-1]
    again.close()


def test_a_cut_tail_is_not_counted_again_at_the_next_start(tmp_path: Path) -> None:
    _, seg = closed_segment(tmp_path, 3)
    seg.write_bytes(seg.read_bytes()[:-5])
    Spool(tmp_path).close()
    again = Spool(tmp_path)
    assert again.stats.events["torn_records"] == 0
    assert again.depth_batches == 2
    again.close()


def test_whole_records_after_a_torn_one_are_kept(tmp_path: Path) -> None:
    """A short record followed by whole ones (what acknowledging short writes used to leave): the
    whole records after it are found again, not dropped with the rest of the segment."""
    batches, seg = closed_segment(tmp_path, 4)
    data = seg.read_bytes()
    (o1, s1) = _records(seg)[1]
    seg.write_bytes(data[: o1 + s1 // 3] + data[o1 + s1 :])  # record 1 cut short, 2 and 3 whole
    again = Spool(tmp_path)
    assert again.stats.events["torn_records"] == 1
    assert drain(again) == [batches[0], batches[2], batches[3]]
    again.close()


def test_a_record_damaged_after_it_was_spooled_is_counted_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path)
    batches = [big_batch(k, 3) for k in range(3)]
    for b in batches:
        spool.append(b)
    seg = next(tmp_path.glob("*.seg"))
    (o1, s1) = _records(seg)[1]
    with open(seg, "r+b") as fh:  # a bit flips on disk while the spool is open
        fh.seek(o1 + s1 - 3)
        byte = fh.read(1)
        fh.seek(o1 + s1 - 3)
        fh.write(bytes([byte[0] ^ 0x20]))
    with caplog.at_level(logging.ERROR, logger="pipeline.spool"):
        got = drain(spool)
    assert got == [batches[0], batches[2]]
    assert spool.losses.counts() == {"spool_corrupt": 3}
    assert any("spool_corrupt" in r.getMessage() for r in caplog.records)
    spool.close()


def test_fill_warning_at_80_percent(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sizes = [len(encode_points(big_batch(k, 3))) + 8 for k in range(10)]
    spool = Spool(tmp_path, max_bytes=sum(sizes), segment_bytes=sum(sizes))
    with caplog.at_level(logging.WARNING, logger="pipeline.spool"):
        for k in range(9):  # climbs to 90 %: one warning, when it passes 80 %
            spool.append(big_batch(k, 3))
            assert spool.stats.events["fill_warnings"] == (1 if spool.fill_ratio >= 0.8 else 0)
    assert spool.fill_ratio > 0.85
    warned = [r.getMessage() for r in caplog.records if "% full" in r.getMessage()]
    assert len(warned) == 1 and "readings waiting" in warned[0]
    spool.close()
