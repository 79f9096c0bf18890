"""The spool when its disk fails at each write point it has: the record write, its fsync, the segment
roll (the new file and the directory entry that names it), the cursor.  EIO cannot be produced on
demand by a real filesystem here, so these faults are INJECTED: the one system call named in each test
is replaced for its duration (``failing``); everything else runs on real files.  After every fault the
promise is checked the same way: a restart finds exactly the batches that were acknowledged."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pipeline import spool as spool_module
from pipeline.points import Point
from pipeline.spool import Spool, SpoolWriteFailed
from tests.pipeline.test_spool_disk import drain


def batch(k: int, n: int = 3) -> list[Point]:
    return [
        Point(
            "electricity",
            f"hh-{k}",
            "meter",
            "echonet",
            1_700_000_000_000_000_000 + k * 1000 + i,
            {"power_w": float(i)},
        )
        for i in range(n)
    ]


def _is_dir_fd(fd: int, *_: Any) -> bool:
    return stat.S_ISDIR(os.fstat(fd).st_mode)


@contextmanager
def failing(name: str, when: Callable[..., bool] = lambda *a: True, times: int = 1) -> Iterator[list[bool]]:
    """INJECTED FAULT: ``os.<name>`` raises EIO for the next ``times`` calls that ``when`` accepts.  The
    yielded list gets, for every call made meanwhile, whether ``when`` accepted it (and whether it
    succeeded is: after the failures were used up)."""
    real = getattr(os, name)
    calls: list[bool] = []
    left = [times]

    def fake(*args: Any, **kw: Any) -> Any:
        chosen = when(*args)
        if chosen and left[0] > 0:
            left[0] -= 1
            calls.append(False)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        result = real(*args, **kw)
        if chosen:
            calls.append(True)
        return result

    mp = pytest.MonkeyPatch()
    mp.setattr(spool_module.os, name, fake)
    try:
        yield calls
    finally:
        mp.undo()


def test_a_directory_fsync_failing_at_a_segment_roll_is_retried_before_an_acknowledgement(
    tmp_path: Path,
) -> None:
    """The fsync that makes a new segment's directory entry durable fails (EIO): that batch is refused.
    The next batch may go to a new file only once a directory fsync has succeeded since; without it a
    crash can take the file, and every acknowledged record in it, away (before: the file stayed the
    active segment and its directory was never synced again)."""
    with Spool(tmp_path / "spool", segment_bytes=1 << 20) as spool:
        with failing("fsync", when=_is_dir_fd) as dir_syncs:
            with pytest.raises(SpoolWriteFailed):
                spool.append(batch(0))
            assert dir_syncs == [False]
            spool.append(batch(1))
        assert dir_syncs[1:] == [True], (
            "batch 1 acknowledged in a file whose directory entry was never synced"
        )
    with Spool(tmp_path / "spool") as again:
        assert drain(again) == [batch(1)]


def _is_file_fd(fd: int, *_: Any) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def test_a_record_fsync_failing_refuses_that_batch_only(tmp_path: Path) -> None:
    """The record's fsync fails (EIO): the record is taken back and its batch refused; the batches
    before and after it are acknowledged and found after a restart."""
    with Spool(tmp_path / "spool") as spool:
        spool.append(batch(0))
        with failing("fsync", when=_is_file_fd), pytest.raises(SpoolWriteFailed):
            spool.append(batch(1))
        spool.append(batch(2))
    with Spool(tmp_path / "spool") as again:
        assert drain(again) == [batch(0), batch(2)]
        assert again.stats.events["torn_records"] == 0


def test_a_write_that_cannot_be_taken_back_abandons_its_segment(tmp_path: Path) -> None:
    """The record write fails (EIO) and so does the truncate that would take it back: the segment is
    left for good; later batches go to a new one; a restart cuts the torn tail and finds every
    acknowledged batch."""
    with Spool(tmp_path / "spool") as spool:
        spool.append(batch(0))
        with (
            failing("write", when=lambda fd, data: len(data) > 0),
            failing("ftruncate"),
            pytest.raises(SpoolWriteFailed),
        ):
            spool.append(batch(1))
        spool.append(batch(2))
        assert spool.stats.events["abandoned_segments"] == 1
    with Spool(tmp_path / "spool") as again:
        assert drain(again) == [batch(0), batch(2)]


def test_a_new_segment_that_cannot_be_created_refuses_the_batch(tmp_path: Path) -> None:
    """Creating the next segment file fails (EIO) at a roll: that batch is refused, the next roll works."""
    with Spool(tmp_path / "spool", segment_bytes=1) as spool:  # every record rolls
        spool.append(batch(0))
        with (
            failing("open", when=lambda path, *_: str(path).endswith(".seg")),
            pytest.raises(SpoolWriteFailed),
        ):
            spool.append(batch(1))
        spool.append(batch(2))
    with Spool(tmp_path / "spool") as again:
        assert drain(again) == [batch(0), batch(2)]


def test_a_cursor_that_cannot_be_written_keeps_replay_going(tmp_path: Path) -> None:
    """Writing the replay position fails (EIO at its fsync): replay goes on, counted; a restart replays
    at most the batches since the last saved position, never fewer than were not yet committed."""
    with Spool(tmp_path / "spool", segment_bytes=1 << 20) as spool:
        for k in range(4):
            spool.append(batch(k))
        record, _ = spool.peek_record() or (None, None)
        assert spool.commit(record)
        with failing("fsync", when=_is_file_fd, times=10):
            record, _ = spool.peek_record() or (None, None)
            assert spool.commit(record)
        assert spool.stats.events["cursor_save_failed"] == 1
    with Spool(tmp_path / "spool") as again:
        assert drain(again) == [batch(1), batch(2), batch(3)]


def test_a_damaged_cursor_is_counted_logged_and_costs_only_a_replay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The cursor file holds garbage (a disk that corrupted it): every spooled batch is replayed again
    (the stores' upserts make that harmless), never skipped, and the damage is counted and logged
    (before: counted only, no log line said why a backlog was being replayed again)."""
    with Spool(tmp_path / "spool") as spool:
        for k in range(3):
            spool.append(batch(k))
        record, _ = spool.peek_record() or (None, None)
        assert spool.commit(record)
    (tmp_path / "spool" / "cursor.json").write_bytes(b"\x00\xff{garbage")
    with caplog.at_level("WARNING", logger="pipeline.spool"), Spool(tmp_path / "spool") as again:
        assert again.stats.events["cursor_damaged"] == 1
        assert drain(again) == [batch(0), batch(1), batch(2)]
    assert any("cursor" in r.getMessage() and "replay" in r.getMessage() for r in caplog.records), caplog.text
