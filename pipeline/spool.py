"""Durable on-disk spool for batches the store could not take.

A batch is acknowledged once it is in the store or here, so this file format is what keeps the
promise "nothing acknowledged is lost" across a kill -9 and a full disk.  Layout: numbered segment
files in one directory, each an append-only sequence of records ``[u32 length][u32 crc32][payload]``.

Writing.  ``append`` returns only when every byte of the record is written and fsync'd.  A write the
disk cuts short (a full volume writes part of a record, then says ENOSPC) is taken back -- the
segment is truncated to where the record began -- and the batch is refused with ``SpoolWriteFailed``:
it was never acknowledged, and the spool's idea of each file's size stays the size on disk.  If even
the truncation fails, the segment is closed for good and the next append opens a new one.  Appends
always go to a segment this process opened, never after a tail a previous process may have torn, and
only once the directory entry naming it is fsync'd (a roll whose directory fsync fails is undone).

Replaying.  ``peek_record`` hands out the oldest unreplayed batch, its CRC checked first: a record
damaged on disk after it was acknowledged is skipped, counted and logged as lost (``spool_corrupt``),
never half-delivered and never a reason to stop.  ``commit`` marks it done, ``release`` gives it back
(the store did not take it).  ``peek_records`` hands out the oldest batches, several at once (a home
gateway uploads a backlog in few requests), with the same checks; the bookkeeping stays per batch:
each one handed out is committed or released on its own, oldest first.  A segment whose last
record is done is deleted *before* the cursor (a small file, atomically replaced) is written, so a
full volume gets space back from replay itself; a cursor that cannot be written is counted and
logged, and replay goes on from the position kept in memory (after a restart the worst case is
replaying a few batches again, which the stores' upserts make harmless).

Starting.  Each segment is scanned; a record that fails its check (the tail of a write a crash cut
short) is counted with its size and logged, a torn *tail* is cut off the file at the last good
record (so it is reported once, not at every start), and whole records after a damaged stretch are
found again and kept.

Limits.  ``max_bytes`` bounds the segment files.  ``policy`` says what happens when a batch would
exceed it (or the volume itself is full): ``refuse`` raises ``SpoolFull`` (``SpoolWriteFailed`` for
the volume) and keeps what is spooled; ``drop_oldest`` deletes the oldest segments, counting and
logging every reading lost (``spool_dropped_oldest``).  At ``warn_fraction`` (80 %) full, one warning
is logged and counted (``fill_warnings``); it re-arms once the spool is back under 70 %.

Public interface (the writer's replayer and a gateway's uploader use only this): ``append``,
``peek_record``/``peek_records``/``commit``/``release``/``quarantine``, ``close``; ``depth_batches``,
``depth_points``, ``size_bytes``, ``max_bytes``, ``fill_ratio``, ``stats.events`` and ``losses`` for
/metrics.  The methods are blocking (the writer runs them on a worker thread) and thread-safe.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import struct
import threading
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

from pipeline.errors import PipelineError
from pipeline.losses import SPOOL_CORRUPT, SPOOL_DROPPED_OLDEST, STORE_REFUSED, Losses
from pipeline.points import Point

log = logging.getLogger(__name__)

_HEADER: Final = struct.Struct(">II")
_SEG_PREFIX: Final = "spool-"
_SEG_SUFFIX: Final = ".seg"
_CURSOR: Final = "cursor.json"
_MAX_RECORD: Final = 256 * 1024 * 1024
# Every payload is a JSON list of points, so a record's payload starts with these two bytes: what a
# scan looks for to find whole records again after a damaged stretch.
_PAYLOAD_START: Final = b"[["
_REARM_BELOW: Final = 0.1  # the fill warning re-arms this far under its threshold

FullPolicy = Literal["refuse", "drop_oldest"]
RecordId = tuple[int, int]  # (segment, byte offset)


class SpoolFull(PipelineError):
    """The spool is at its size limit and the policy is to refuse: the batch was NOT acknowledged."""


class SpoolWriteFailed(PipelineError):
    """The spool's disk failed to take the batch (a full volume, an I/O error): NOT acknowledged."""


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


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written: a full disk first writes part, then raises."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - POSIX says write() raises rather than return 0 for a file
            raise OSError(errno.EIO, "write wrote nothing")
        view = view[n:]


@dataclass
class SpoolStats:
    appended_batches: int = 0
    appended_points: int = 0
    appended_bytes: int = 0  # record bytes: with appended_points, what one reading costs on disk
    replayed_batches: int = 0
    events: Counter[str] = field(default_factory=Counter)


@dataclass
class _Record:
    offset: int
    length: int  # payload bytes
    points: int

    @property
    def end(self) -> int:
        return self.offset + _HEADER.size + self.length


class Spool:
    """See the module docstring; ``max_bytes`` bounds the segment files, ``policy`` says what a full
    spool does, ``warn_fraction`` when it warns."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = 256 * 1024 * 1024,
        segment_bytes: int = 4 * 1024 * 1024,
        policy: FullPolicy = "refuse",
        warn_fraction: float = 0.8,
    ) -> None:
        if policy not in ("refuse", "drop_oldest"):
            raise ValueError(f"unknown spool policy {policy!r}")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        _check_writable(self.dir)
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
        self.warn_fraction = warn_fraction
        self.stats = SpoolStats()
        self.losses = Losses(log)
        # The writer appends from one worker thread while the replayer peeks/commits from another.
        self._lock = threading.RLock()
        self._active: int | None = None  # segment number this process appends to
        self._active_fd: int | None = None
        # Bytes of every segment file on disk, kept equal to the files (never estimated).
        self._sizes: dict[int, int] = {}
        self._size = 0
        # Replay position: (segment, byte offset of the next unreplayed record).
        self._cursor = self._load_cursor()
        self._cursor_failing = False
        # Records not yet replayed, per segment, oldest first.
        self._pending: dict[int, list[_Record]] = {}
        # The batches ``peek_record``/``peek_records`` last handed out, each until it is committed or
        # released; and those of them whose segment ``drop_oldest`` deleted meanwhile, with their
        # sizes: each lost only if it is not committed after all (the replayer may be writing it to
        # the store right now).
        self._handed: set[RecordId] = set()
        self._orphans: dict[RecordId, int] = {}
        self._scan()
        # Kept as plain ints so /metrics can read them from another thread without walking _pending.
        self._depth_batches = sum(len(v) for v in self._pending.values())
        self._depth_points = sum(r.points for v in self._pending.values() for r in v)
        self._fill_warned = False
        self._check_fill()

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
        except (ValueError, KeyError, TypeError) as exc:
            # A damaged cursor costs a re-replay (idempotent upserts), never data; said, so that a
            # backlog replayed again has a reason in the log.
            self.stats.events["cursor_damaged"] += 1
            log.warning(
                "spool %s: the replay position (%s) is damaged (%s); every spooled batch is replayed "
                "again from the oldest",
                self.dir,
                _CURSOR,
                exc,
            )
            return (0, 0)

    def _save_cursor(self) -> None:
        """Write the replay position; on failure keep going from the position in memory."""
        tmp = self.dir / (_CURSOR + ".tmp")
        try:
            with open(tmp, "w") as fh:
                json.dump({"segment": self._cursor[0], "offset": self._cursor[1]}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.dir / _CURSOR)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self.stats.events["cursor_save_failed"] += 1
            if not self._cursor_failing:
                log.warning(
                    "spool %s: cannot save the replay position (%s); replay goes on from memory, and a "
                    "restart before it is saved replays a few batches again",
                    self.dir,
                    exc.strerror or exc,
                )
            self._cursor_failing = True
            return
        if self._cursor_failing:
            log.info("spool %s: replay position saved again", self.dir)
        self._cursor_failing = False

    def _fsync_dir(self) -> None:
        fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _forget_segment(self, seg: int) -> None:
        """Delete a segment file and its bytes from the bookkeeping."""
        self._seg_path(seg).unlink(missing_ok=True)
        self._size -= self._sizes.pop(seg, 0)

    def _scan(self) -> None:
        cur_seg, cur_off = self._cursor
        for seg in self._segments():
            if seg < cur_seg:
                self._seg_path(seg).unlink(missing_ok=True)  # replayed, deletion was interrupted
                continue
            records, size = self._read_index(seg)
            if seg == cur_seg:
                records = [r for r in records if r.offset >= cur_off]
            if records:
                self._pending[seg] = records
                self._sizes[seg] = size
                self._size += size
            else:
                self._seg_path(seg).unlink(missing_ok=True)

    def _read_index(self, seg: int) -> tuple[list[_Record], int]:
        """The intact records of a segment and the file's size after cutting a torn tail.

        A stretch that is not a whole record (torn by a crash, or left by an older release that
        acknowledged short writes) is counted and logged; the scan then looks for the next whole
        record after it, so a damaged record never takes good ones with it."""
        path = self._seg_path(seg)
        data = path.read_bytes()
        out: list[_Record] = []
        pos = 0
        while pos < len(data):
            found = _record_at(data, pos)
            if isinstance(found, _Record):
                out.append(found)
                pos = found.end
                continue
            if found == "undecodable":  # CRC matched but the payload is not ours: skip just it
                length = _HEADER.unpack_from(data, pos)[0]
                self.stats.events["corrupt_records"] += 1
                log.error("spool %s at %d: a record passed its CRC but cannot be decoded", path.name, pos)
                pos += _HEADER.size + length
                continue
            nxt = _next_record(data, pos + 1)
            self.stats.events["torn_records"] += 1
            self.stats.events["torn_bytes"] += nxt - pos
            if nxt < len(data):
                log.warning(
                    "spool %s: %d bytes at offset %d are a torn record (not whole); skipped, the "
                    "records after them are kept",
                    path.name,
                    nxt - pos,
                    pos,
                )
            else:
                log.warning(
                    "spool %s: torn tail of %d bytes at offset %d (a write cut short by a crash or a "
                    "full disk, never acknowledged); cut at the last good record",
                    path.name,
                    nxt - pos,
                    pos,
                )
                try:
                    os.truncate(path, pos)
                    self.stats.events["torn_tails_cut"] += 1
                except OSError as exc:
                    log.warning("spool %s: could not cut the torn tail: %s", path.name, exc)
                    return out, len(data)
                return out, pos
            pos = nxt
        return out, len(data)

    def _check_fill(self) -> None:
        ratio = self.fill_ratio
        if ratio >= self.warn_fraction and not self._fill_warned:
            self._fill_warned = True
            self.stats.events["fill_warnings"] += 1
            log.warning(
                "spool %s is %.0f%% full (%d of %d bytes, %d readings waiting for the store); when it is "
                "full, policy %r %s",
                self.dir,
                100 * ratio,
                self._size,
                self.max_bytes,
                self._depth_points,
                self.policy,
                "refuses new readings" if self.policy == "refuse" else "drops the oldest readings",
            )
        elif ratio < self.warn_fraction - _REARM_BELOW:
            self._fill_warned = False

    # -- public API -------------------------------------------------------------------------------

    @property
    def depth_batches(self) -> int:
        return self._depth_batches

    @property
    def depth_points(self) -> int:
        return self._depth_points

    @property
    def size_bytes(self) -> int:
        """Bytes of the segment files on disk (what ``max_bytes`` limits)."""
        return self._size

    @property
    def fill_ratio(self) -> float:
        return self._size / self.max_bytes if self.max_bytes else 1.0

    def __len__(self) -> int:
        return self.depth_batches

    def append(self, points: Sequence[Point], *, make_room: bool = True) -> None:
        """Durably add one batch; returns only after every byte is fsync'd.  Raises ``SpoolFull``
        (at ``max_bytes`` under ``refuse``) or ``SpoolWriteFailed`` (the disk refused): then the
        batch is not in the spool.  ``make_room=False`` refuses the same way instead of dropping the
        oldest under ``drop_oldest``, so a caller can first offer the batch elsewhere (the store)."""
        with self._lock:
            self._append_unlocked(points, make_room)

    def _append_unlocked(self, points: Sequence[Point], make_room: bool) -> None:
        payload = encode_points(points)
        record = _HEADER.pack(len(payload), zlib.crc32(payload)) + payload
        may_drop = make_room and self.policy == "drop_oldest"
        if self._size + len(record) > self.max_bytes:
            self._make_room(len(record), len(points), may_drop)
        while True:
            try:
                offset = self._write_record(record)
                break
            except OSError as exc:
                # A full volume is a full spool too: drop_oldest makes room on it the same way.
                if exc.errno == errno.ENOSPC and may_drop and self._drop_oldest():
                    continue
                self.stats.events["append_failed"] += 1
                raise SpoolWriteFailed(
                    f"spool {self.dir} could not write {len(points)} points: {exc.strerror or exc}"
                ) from exc
        assert self._active is not None
        self._pending.setdefault(self._active, []).append(_Record(offset, len(payload), len(points)))
        self._depth_batches += 1
        self._depth_points += len(points)
        self.stats.appended_batches += 1
        self.stats.appended_points += len(points)
        self.stats.appended_bytes += len(record)
        self._check_fill()

    def _write_record(self, record: bytes) -> int:
        """Append ``record`` to the active segment and fsync; returns its offset.  On failure the
        segment is as it was before (or closed for good, if it could not be put back)."""
        active_size = self._sizes.get(self._active, 0) if self._active is not None else 0
        if self._active_fd is None or active_size + len(record) > self.segment_bytes:
            self._rotate()
            active_size = 0
        fd, seg = self._active_fd, self._active
        assert fd is not None and seg is not None
        try:
            _write_all(fd, record)
            os.fsync(fd)
        except OSError:
            self._take_back(fd, seg, active_size)
            raise
        self._sizes[seg] = active_size + len(record)
        self._size += len(record)
        return active_size

    def _take_back(self, fd: int, seg: int, offset: int) -> None:
        """Truncate a failed write off the segment; if that fails too, leave the segment for good
        with its true size booked (the next start cuts the torn tail)."""
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
            return
        except OSError as exc:
            log.error("spool %s: could not take back a failed write: %s", self._seg_path(seg).name, exc)
        self.stats.events["abandoned_segments"] += 1
        try:
            actual = os.fstat(fd).st_size
        except OSError:
            actual = offset
        self._size += actual - self._sizes.get(seg, 0)
        self._sizes[seg] = actual
        self._close_active()
        if seg not in self._pending:
            with contextlib.suppress(OSError):
                self._forget_segment(seg)

    def _make_room(self, need: int, n_points: int, may_drop: bool) -> None:
        if may_drop:
            while self._size + need > self.max_bytes and self._drop_oldest():
                pass
        if self._size + need > self.max_bytes:
            if may_drop or self.policy == "refuse":  # not a mere "would have to drop" answer
                self.stats.events["full_refused_batches"] += 1
                self.stats.events["full_refused_points"] += n_points
            raise SpoolFull(f"spool {self.dir} is full ({self._size} of {self.max_bytes} bytes)")

    def _drop_oldest(self) -> bool:
        """Delete the oldest segment with unreplayed records, counting what it held; False when
        there is nothing left to drop."""
        if not self._pending:
            return False
        oldest = min(self._pending)
        lost = self._pending.pop(oldest)
        self._depth_batches -= len(lost)
        self._depth_points -= sum(r.points for r in lost)
        held = [r for r in lost if (oldest, r.offset) in self._handed]
        for r in held:  # being replayed right now: each lost only if that write fails
            self._orphans[(oldest, r.offset)] = r.points
            self._handed.discard((oldest, r.offset))
        lost = [r for r in lost if (oldest, r.offset) not in self._orphans]
        self._count_dropped(len(lost), sum(r.points for r in lost))
        if oldest == self._active:
            self._close_active()
        self._forget_segment(oldest)
        return True

    def _count_dropped(self, batches: int, n_points: int) -> None:
        self.stats.events["full_dropped_batches"] += batches
        self.stats.events["full_dropped_points"] += n_points
        self.losses.add(
            SPOOL_DROPPED_OLDEST,
            n_points,
            f"spool {self.dir} at {self._size} of {self.max_bytes} bytes, policy drop_oldest",
        )

    def _close_active(self) -> None:
        if self._active_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._active_fd)
        self._active_fd = None
        self._active = None

    def _rotate(self) -> None:
        previous = self._active
        self._close_active()
        if previous is not None and previous not in self._pending:
            self._forget_segment(previous)  # an empty segment (its records all replayed)
        existing = self._segments()
        seg = max([*existing, self._cursor[0], -1]) + 1
        path = self._seg_path(seg)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            self._fsync_dir()
        except OSError:
            # The new file's name is not durable: a crash could take the file and every record
            # acknowledged in it.  It never becomes the active segment; the next append rolls again
            # and syncs the directory again.
            os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            self.stats.events["segment_roll_failed"] += 1
            raise
        self._active_fd, self._active = fd, seg
        self._sizes[seg] = 0

    # -- replay -----------------------------------------------------------------------------------

    def _oldest(self) -> RecordId | None:
        if not self._pending:
            return None
        seg = min(self._pending)
        return (seg, self._pending[seg][0].offset)

    def peek(self) -> list[Point] | None:
        """The oldest unreplayed batch, or None when the spool is empty."""
        found = self.peek_record()
        return None if found is None else found[1]

    def peek_record(self) -> tuple[RecordId, list[Point]] | None:
        """The oldest unreplayed batch with its id (pass the id to ``commit`` or ``release``).  A
        record that fails its check is counted as lost (``spool_corrupt``), logged and skipped."""
        found = self._hand_out(max_points=0, max_records=1)
        return found[0] if found else None

    def peek_records(self, max_points: int) -> list[tuple[RecordId, list[Point]]]:
        """The oldest unreplayed batches in order, as many as hold at most ``max_points`` together
        (always the oldest one, however large): a gateway uploads a backlog in few requests.  Each
        is checked like ``peek_record``'s; commit them one by one, oldest first, or release each."""
        return self._hand_out(max_points=max_points, max_records=None)

    def _hand_out(self, *, max_points: int, max_records: int | None) -> list[tuple[RecordId, list[Point]]]:
        """The oldest intact batches, within the limits; a damaged one is skipped (counted and
        logged) while it is the oldest, and ends the hand-out otherwise (it is skipped once the
        batches before it are committed, so the cursor never jumps over an unwritten batch)."""
        out: list[tuple[RecordId, list[Point]]] = []
        total = 0
        with self._lock:
            self._settle_orphans()
            for seg in sorted(self._pending):
                for rec in list(self._pending.get(seg, ())):
                    if out and (total + rec.points > max_points or len(out) == max_records):
                        break
                    points = self._checked(seg, rec)
                    if points is None:
                        if out:
                            break
                        self._skip_corrupt(seg, rec)
                        continue
                    out.append(((seg, rec.offset), points))
                    total += rec.points
                else:
                    continue
                break
            self._handed = {record for record, _ in out}
        return out

    def _checked(self, seg: int, rec: _Record) -> list[Point] | None:
        """The record's points if it passes its check, else None."""
        body = self._read_body(seg, rec)
        if body is None:
            return None
        try:
            return decode_points(body)
        except SpoolCorrupt:
            return None

    def _skip_corrupt(self, seg: int, rec: _Record) -> None:
        """Move past the oldest record, which failed its check: lost, counted and logged."""
        self.stats.events["corrupt_records"] += 1
        self.losses.add(
            SPOOL_CORRUPT,
            rec.points,
            f"record at {rec.offset} of {self._seg_path(seg).name} failed its check at replay",
        )
        self._advance(seg)

    def _settle_orphans(self) -> None:
        """Batches handed out before ``drop_oldest`` deleted their segment and not committed since:
        their write failed, so they are lost now."""
        if self._orphans:
            n_points = sum(self._orphans.values())
            batches = len(self._orphans)
            self._orphans.clear()
            self._count_dropped(batches, n_points)

    def release(self, record: RecordId) -> None:
        """The store did not take a batch handed out by ``peek_record``/``peek_records``: it stays
        where it is, or, if ``drop_oldest`` deleted it meanwhile, it is lost now and counted at once
        (not at the next replay, which may be an outage later)."""
        with self._lock:
            n_points = self._orphans.pop(record, None)
            if n_points is not None:
                self._count_dropped(1, n_points)
            else:
                self._handed.discard(record)

    def _read_body(self, seg: int, rec: _Record) -> bytes | None:
        """The record's payload if its header and CRC still hold, else None."""
        try:
            with open(self._seg_path(seg), "rb") as fh:
                fh.seek(rec.offset)
                raw = fh.read(_HEADER.size + rec.length)
        except OSError as exc:
            log.error("spool %s: cannot read a record: %s", self._seg_path(seg).name, exc)
            return None
        if len(raw) != _HEADER.size + rec.length:
            return None
        length, crc = _HEADER.unpack_from(raw)
        body = raw[_HEADER.size :]
        if length != rec.length or zlib.crc32(body) != crc:
            return None
        return body

    def _is_oldest(self, record: RecordId | None) -> bool:
        oldest = self._oldest()
        return oldest is not None and (record is None or record == oldest)

    def commit(self, record: RecordId | None = None) -> bool:
        """Mark the oldest batch as stored.  With ``record`` (from ``peek_record``) only if that
        batch is still the oldest: a stale or repeated commit must never skip an unwritten batch."""
        with self._lock:
            if record is not None and self._orphans.pop(record, None) is not None:
                # its segment was dropped meanwhile, but the batch got through
                self.stats.replayed_batches += 1
                return True
            if not self._is_oldest(record):
                return False
            self._advance(min(self._pending))
            self.stats.replayed_batches += 1
            self._check_fill()
            return True

    def _advance(self, seg: int) -> None:
        """Move past the oldest record of ``seg``; a segment with nothing left is deleted before
        the cursor is written, so replay on a full volume frees space instead of needing it."""
        records = self._pending[seg]
        rec = records.pop(0)
        self._handed.discard((seg, rec.offset))
        self._depth_batches -= 1
        self._depth_points -= rec.points
        self._cursor = (seg, rec.end)
        if not records:
            del self._pending[seg]
            if seg == self._active:
                self._close_active()
            self._cursor = (seg + 1, 0)
            try:
                self._forget_segment(seg)
            except OSError as exc:  # deleted at the next start (it lies before the cursor)
                log.warning("spool %s: cannot delete a replayed segment: %s", self._seg_path(seg).name, exc)
        self._save_cursor()

    def quarantine(self, record: RecordId | None = None) -> Path | None:
        """Move the oldest batch (one the store refuses outright) to a side file and go on.

        The data stays on disk for a human to look at; its readings are counted as lost to the
        store (``store_refused``) and logged, never silent."""
        with self._lock:
            if not self._is_oldest(record):
                return None
            seg = min(self._pending)
            rec = self._pending[seg][0]
            body = self._read_body(seg, rec)
            target = self.dir / f"quarantine-{seg:012d}-{rec.offset:012d}.json"
            try:
                if body is None:
                    raise OSError(errno.EIO, "the record failed its check")
                with open(target, "wb") as fh:
                    fh.write(body)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                self.stats.events["quarantine_failed"] += 1
                with contextlib.suppress(OSError):
                    target.unlink()
                self.losses.add(STORE_REFUSED, rec.points, f"refused by the store; not set aside: {exc}")
                self._advance(seg)
                return None
            self.stats.events["quarantined_batches"] += 1
            self.losses.add(STORE_REFUSED, rec.points, f"refused by the store; set aside in {target}")
            self._advance(seg)
            return target

    def close(self) -> None:
        with self._lock:
            self._settle_orphans()
            self.losses.flush()
            self._close_active()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = None

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _check_writable(directory: Path) -> None:
    """Refuse a directory this process cannot write (read-only volume, missing permission) at once,
    not at the first outage; needs no free space, so a full spool volume still opens."""
    if os.access(directory, os.W_OK | os.X_OK):
        return
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(directory))
    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(directory))


def _record_at(data: bytes, pos: int) -> _Record | Literal["torn", "undecodable"]:
    if pos + _HEADER.size > len(data):
        return "torn"
    length, crc = _HEADER.unpack_from(data, pos)
    end = pos + _HEADER.size + length
    if length > _MAX_RECORD or end > len(data):
        return "torn"
    body = data[pos + _HEADER.size : end]
    if zlib.crc32(body) != crc:
        return "torn"
    try:
        n = len(decode_points(body))
    except SpoolCorrupt:
        return "undecodable"
    return _Record(pos, length, n)


def _next_record(data: bytes, start: int) -> int:
    """Offset of the first whole record at or after ``start`` (``len(data)`` if none)."""
    i = data.find(_PAYLOAD_START, start + _HEADER.size)
    while i != -1:
        if isinstance(_record_at(data, i - _HEADER.size), _Record):
            return i - _HEADER.size
        i = data.find(_PAYLOAD_START, i + 1)
    return len(data)
