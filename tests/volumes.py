"""Small real filesystems for the disk-fault tests: a tmpfs of a few KiB fills up for real (short
writes, ENOSPC), and a read-only mount refuses writes for real (EROFS), even to root.

Mounting needs root; without it the tests that need a volume are skipped with that reason (never
passed silently).  Each volume is mounted under the test's own temp dir and unmounted in teardown,
so two test runs never share one.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

Mount = Callable[..., Path]


def _mount(where: Path, size: str, read_only: bool) -> None:
    options = f"size={size},mode=0755" + (",ro" if read_only else "")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "hems-test", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


def _unmount(where: Path) -> None:
    done = subprocess.run(["umount", str(where)], capture_output=True, check=False)
    if done.returncode != 0:  # something still holds a file open: detach it now, freed when closed
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Mount]:
    """``small_volume("160k")`` -> a fresh tmpfs of that size; ``read_only=True`` mounts it read-only
    (``populate`` may fill it first: it is called while the volume is still writable)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root; this test run is not root")
    mounted: list[Path] = []

    def mount(
        size: str = "160k", *, read_only: bool = False, populate: Callable[[Path], None] | None = None
    ) -> Path:
        where = tmp_path / f"vol{len(mounted)}"
        where.mkdir()
        _mount(where, size, False)
        mounted.append(where)
        if populate is not None:
            populate(where)
        if read_only:
            done = subprocess.run(
                ["mount", "-o", "remount,ro", str(where)], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                pytest.skip(f"cannot remount read-only: {done.stderr.strip()}")
        return where

    try:
        yield mount
    finally:
        for where in reversed(mounted):
            _unmount(where)


def fill(volume: Path, name: str = "ballast") -> int:
    """Write a file until the volume has no byte left (what another program sharing the volume
    does); returns how many bytes it took."""
    written = 0
    chunk = b"\0" * 4096
    with open(volume / name, "ab", buffering=0) as fh:
        while True:
            try:
                n = fh.write(chunk)
            except OSError:
                break
            written += n or 0
            if not n or n < len(chunk):
                with contextlib.suppress(OSError):
                    while fh.write(b"\0"):
                        written += 1
                break
    return written


def disk_bytes(directory: Path, pattern: str = "*.seg") -> int:
    return sum(p.stat().st_size for p in directory.glob(pattern))
