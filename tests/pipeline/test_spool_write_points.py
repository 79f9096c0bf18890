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


def drain(spool: Spool) -> list[list[Point]]:
    out = []
    while (found := spool.peek_record()) is not None:
        record, points = found
        out.append(points)
        assert spool.commit(record)
    return out


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
