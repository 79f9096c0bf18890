"""Durable on-disk spool for batches the store could not take.

A batch is acknowledged once it is in the store or here, so this file format is what keeps the
promise "nothing acknowledged is lost" across a kill -9.  Layout: numbered segment files in one
directory, each an append-only sequence of records ``[u32 length][u32 crc32][payload]``; a record is
fsync'd before ``append`` returns.  Appends always go to a segment opened by this process, never
after a tail a previous process may have torn.  Replay reads records oldest first; ``commit`` marks
the oldest record done (a small cursor file, atomically replaced) and deletes fully replayed
segments.  A record that fails its CRC (a torn tail after a crash) is skipped and counted; because
appends are fsync'd one by one, only the last record of a segment can be torn, so the rest of that
segment is dropped with it (counted).

The methods are blocking; the writer runs them on a worker thread.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from pipeline.errors import PipelineError
from pipeline.points import Point

_HEADER: Final = struct.Struct(">II")
_SEG_PREFIX: Final = "spool-"
_SEG_SUFFIX: Final = ".seg"
_CURSOR: Final = "cursor.json"
_MAX_RECORD: Final = 256 * 1024 * 1024

FullPolicy = Literal["refuse", "drop_oldest"]
RecordId = tuple[int, int]  # (segment, byte offset)


class SpoolFull(PipelineError):
    """The spool is at its size limit and the policy is to refuse: the batch was NOT acknowledged."""


class SpoolLocked(PipelineError):
    """Another live process already uses this spool directory (two writers would interleave)."""


class SpoolCorrupt(PipelineError):
    """A record could not be decoded although its CRC matched (a bug, not a crash artefact)."""


def encode_points(points: Sequence[Point]) -> bytes:
    # JSON keeps int/float/bool/str apart and round-trips floats exactly; batches are small enough
    # that a binary format would not pay for its extra code.
    rows = [[p.measurement, p.household, p.device, p.source, p.ts_ns, dict(p.fields)] for p in points]
    return json.dumps(rows, separators=(",", ":"), allow_nan=False).encode()


def decode_points(payload: bytes) -> list[Point]:
    try:
        rows = json.loads(payload)
        return [Point(m, h, d, s, int(ts), f) for m, h, d, s, ts, f in rows]
    except (ValueError, TypeError) as exc:
        raise SpoolCorrupt(f"undecodable spool record: {exc}") from exc


@dataclass
class SpoolStats:
    appended_batches: int = 0
    appended_points: int = 0
    replayed_batches: int = 0
    events: Counter[str] = field(default_factory=Counter)


class Spool:
    """``max_bytes`` bounds the files on disk; ``policy`` says what happens when a batch would exceed
    it: ``refuse`` (the default: raise ``SpoolFull``, the caller reports backpressure) or
    ``drop_oldest`` (delete the oldest unreplayed segments, counting every point lost)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 256 * 1024 * 1024,
        segment_bytes: int = 4 * 1024 * 1024,
        policy: FullPolicy = "refuse",
    ) -> None:
        if policy not in ("refuse", "drop_oldest"):
            raise ValueError(f"unknown spool policy {policy!r}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        # One process per spool: the kernel drops this lock when the holder dies, even by kill -9.
        self._lock_fd: int | None = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock_fd)
            raise SpoolLocked(f"spool {self.dir} is in use by another process") from exc
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.policy: FullPolicy = policy
        self.stats = SpoolStats()
        # The writer appends from one worker thread while the replayer peeks/commits from another.
        self._lock = threading.RLock()
        self._active: int | None = None  # segment number this process appends to
        self._active_fd: int | None = None
        self._active_size = 0
        # Replay position: (segment, byte offset of the next unreplayed record).
        self._cursor = self._load_cursor()
        # Records (with point counts) not yet replayed, per segment, found by scanning on open.
        self._pending: dict[int, list[tuple[int, int, int]]] = {}  # seg -> [(offset, length, n_points)]
        self._scan()
        # Kept as plain ints so /metrics can read them from another thread without walking _pending.
        self._depth_batches = sum(len(v) for v in self._pending.values())
        self._depth_points = sum(n for v in self._pending.values() for _, _, n in v)

    # -- bookkeeping -------------------------------------------------------------------------------

    def _seg_path(self, seg: int) -> Path:
        return self.dir / f"{_SEG_PREFIX}{seg:012d}{_SEG_SUFFIX}"

    def _segments(self) -> list[int]:
        out = []
        for p in self.dir.iterdir():
            name = p.name
            if name.startswith(_SEG_PREFIX) and name.endswith(_SEG_SUFFIX):
                digits = name[len(_SEG_PREFIX) : -len(_SEG_SUFFIX)]
                if digits.isdigit():
                    out.append(int(digits))
        return sorted(out)

    def _load_cursor(self) -> tuple[int, int]:
        try:
            data = json.loads((self.dir / _CURSOR).read_text())
            return (int(data["segment"]), int(data["offset"]))
        except FileNotFoundError:
            return (0, 0)
        except (ValueError, KeyError, TypeError):
            # A damaged cursor costs a re-replay (idempotent upserts), never data.
            self.stats.events["cursor_damaged"] += 1
            return (0, 0)

    def _save_cursor(self) -> None:
        tmp = self.dir / (_CURSOR + ".tmp")
        with open(tmp, "w") as fh:
            json.dump({"segment": self._cursor[0], "offset": self._cursor[1]}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.dir / _CURSOR)

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _scan(self) -> None:
        cur_seg, cur_off = self._cursor
        for seg in self._segments():
            if seg < cur_seg:
                self._seg_path(seg).unlink(missing_ok=True)  # replayed, deletion was interrupted
                continue
            records = self._read_index(seg)
            if seg == cur_seg:
                records = [r for r in records if r[0] >= cur_off]
            if records:
                self._pending[seg] = records
            elif seg != self._active:
                self._seg_path(seg).unlink(missing_ok=True)

    def _read_index(self, seg: int) -> list[tuple[int, int, int]]:
        """(offset, length, n_points) of each intact record; counts and stops at a torn/bad one."""
        out: list[tuple[int, int, int]] = []
        with open(self._seg_path(seg), "rb") as fh:
            data = fh.read()
        pos = 0
        while pos < len(data):
            if pos + _HEADER.size > len(data):
                self.stats.events["torn_records"] += 1
                break
            length, crc = _HEADER.unpack_from(data, pos)
            body = data[pos + _HEADER.size : pos + _HEADER.size + length]
            if length > _MAX_RECORD or len(body) != length or zlib.crc32(body) != crc:
                self.stats.events["torn_records"] += 1
                break
            try:
                n = len(decode_points(body))
            except SpoolCorrupt:
                self.stats.events["corrupt_records"] += 1
                break
            out.append((pos, length, n))
            pos += _HEADER.size + length
        return out

    # -- public API -------------------------------------------------------------------------------

    @property
    def depth_batches(self) -> int:
        return self._depth_batches

    @property
    def depth_points(self) -> int:
        return self._depth_points

    @property
    def size_bytes(self) -> int:
        total = 0
        for seg in self._segments():
            try:
                total += self._seg_path(seg).stat().st_size
            except FileNotFoundError:
                continue
        return total

    def __len__(self) -> int:
        return self.depth_batches

    def append(self, points: Sequence[Point]) -> None:
        with self._lock:
            self._append_unlocked(points)

    def _append_unlocked(self, points: Sequence[Point]) -> None:
        """Durably add one batch; returns only after fsync.  Raises ``SpoolFull`` under ``refuse``."""
        payload = encode_points(points)
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        if self.size_bytes + len(record) > self.max_bytes:
            self._make_room(len(record), len(points))
        if self._active_fd is None or self._active_size + len(record) > self.segment_bytes:
            self._rotate()
        assert self._active_fd is not None and self._active is not None
        offset = self._active_size
        os.write(self._active_fd, record)
        os.fsync(self._active_fd)
        self._active_size += len(record)
        self._pending.setdefault(self._active, []).append((offset, len(payload), len(points)))
        self._depth_batches += 1
        self._depth_points += len(points)
        self.stats.appended_batches += 1
        self.stats.appended_points += len(points)

    def _make_room(self, need: int, n_points: int) -> None:
        if self.policy == "refuse":
            self.stats.events["full_refused_batches"] += 1
            self.stats.events["full_refused_points"] += n_points
            raise SpoolFull(f"spool {self.dir} is full ({self.size_bytes} of {self.max_bytes} bytes)")
        while self.size_bytes + need > self.max_bytes and self._pending:
            oldest = min(self._pending)
            lost = self._pending.pop(oldest)
            self._depth_batches -= len(lost)
            self._depth_points -= sum(n for _, _, n in lost)
            self.stats.events["full_dropped_batches"] += len(lost)
            self.stats.events["full_dropped_points"] += sum(n for _, _, n in lost)
            if oldest == self._active:
                self._close_active()
            self._seg_path(oldest).unlink(missing_ok=True)
        if self.size_bytes + need > self.max_bytes:
            self.stats.events["full_refused_batches"] += 1
            self.stats.events["full_refused_points"] += n_points
            raise SpoolFull(f"batch of {need} bytes cannot fit in a spool of {self.max_bytes} bytes")

    def _close_active(self) -> None:
        if self._active_fd is not None:
            os.close(self._active_fd)
        self._active_fd = None
        self._active = None
        self._active_size = 0

    def _rotate(self) -> None:
        self._close_active()
        existing = self._segments()
        seg = max([*existing, self._cursor[0], -1]) + 1
        self._active_fd = os.open(
            self._seg_path(seg), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644
        )
        self._active = seg
        self._active_size = 0
        self._fsync_dir()

    def peek(self) -> list[Point] | None:
        """The oldest unreplayed batch, or None when the spool is empty."""
        found = self.peek_record()
        return None if found is None else found[1]

    def peek_record(self) -> tuple[RecordId, list[Point]] | None:
        """The oldest unreplayed batch with its id (pass the id to ``commit``)."""
        with self._lock:
            found = self._oldest_body()
        return None if found is None else (found[0], decode_points(found[1]))

    def _oldest_body(self) -> tuple[RecordId, bytes] | None:
        if not self._pending:
            return None
        seg = min(self._pending)
        offset, length, _ = self._pending[seg][0]
        with open(self._seg_path(seg), "rb") as fh:
            fh.seek(offset + _HEADER.size)
            body = fh.read(length)
        return (seg, offset), body

    def _is_oldest(self, record: RecordId | None) -> bool:
        if not self._pending:
            return False
        seg = min(self._pending)
        return record is None or record == (seg, self._pending[seg][0][0])

    def commit(self, record: RecordId | None = None) -> bool:
        """Mark the oldest batch as stored.  With ``record`` (from ``peek_record``) only if that
        batch is still the oldest: a stale or repeated commit must never skip an unwritten batch."""
        with self._lock:
            if not self._is_oldest(record):
                return False
            self._commit_unlocked()
            return True

    def _commit_unlocked(self) -> None:
        seg = min(self._pending)
        records = self._pending[seg]
        offset, length, n = records.pop(0)
        self._depth_batches -= 1
        self._depth_points -= n
        self.stats.replayed_batches += 1
        self._cursor = (seg, offset + _HEADER.size + length)
        if not records:
            del self._pending[seg]
            if seg == self._active:
                self._close_active()
            self._cursor = (seg + 1, 0)
            self._save_cursor()
            self._seg_path(seg).unlink(missing_ok=True)
        else:
            self._save_cursor()

    def quarantine(self, record: RecordId | None = None) -> Path | None:
        """Move the oldest batch (one the store refuses outright) to a side file and go on.

        The data stays on disk for a human to look at; the event is counted, never silent."""
        with self._lock:
            if not self._is_oldest(record):
                return None
            found = self._oldest_body()
            assert found is not None
            (seg, offset), body = found
            return self._quarantine_unlocked(seg, offset, body)

    def _quarantine_unlocked(self, seg: int, offset: int, body: bytes) -> Path:
        target = self.dir / f"quarantine-{seg:012d}-{offset:012d}.json"
        with open(target, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        self.stats.events["quarantined_batches"] += 1
        self._commit_unlocked()
        self.stats.replayed_batches -= 1
        return target

    def close(self) -> None:
        with self._lock:
            self._close_unlocked()

    def _close_unlocked(self) -> None:
        self._close_active()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
