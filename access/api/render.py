"""JSON bodies shared by the API's handlers: responses, instants and data frames as columns."""

from __future__ import annotations

import functools
import json
import struct
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import orjson
import polars as pl
from aiohttp import web
from isal import isal_zlib
from numpy.typing import NDArray

_ISO_MEMO_SIZE: Final = 200_000
# Dtypes orjson writes from a numpy view exactly as from Python values (others go through a list).
_NUMPY_VIEWED: Final = frozenset({pl.Float64, pl.Int64, pl.Int32, pl.Boolean})


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


@functools.lru_cache(maxsize=4096)
def iso(ts: datetime | float) -> str:
    """UTC with milliseconds and a ``Z``: what JavaScript's ``Date`` parses everywhere.  ``ts`` is an
    aware datetime or epoch seconds.  Remembered: every answer's envelope names its window and served
    periods, the same instants for every request of a minute, and formatting costs a few times the
    look-up."""
    if not isinstance(ts, datetime):
        ts = datetime.fromtimestamp(ts, UTC)
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


def frame_columns(df: pl.DataFrame) -> dict[str, list[Any]]:
    """Column-oriented JSON (charts want arrays); times as ISO UTC strings with milliseconds."""
    out = df.with_columns(
        pl.col(c).dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")
        for c, t in df.schema.items()
        if isinstance(t, pl.Datetime)
    )
    out = out.with_columns(pl.col(c).cast(pl.Utf8) for c, t in out.schema.items() if isinstance(t, pl.Date))
    return out.to_dict(as_series=False)


class _IsoMemo(dict[int, str]):
    """Epoch microseconds -> the quoted ISO text ``frame_columns`` gives: pages of one resolution share
    their window starts (a day of minutes is 1,440 of them for every home), and a dictionary look-up is
    a fraction of formatting a date."""

    def __missing__(self, us: int) -> str:
        if len(self) >= _ISO_MEMO_SIZE:
            self.clear()
        text = self[us] = (
            '"' + iso(datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)) + '"'
        )
        return text


_ISO_MEMO: Final = _IsoMemo()
_DAY_US: Final = 86_400_000_000
_STAMP_WIDTH: Final = len('"2026-01-01T00:00:00.000Z",')
_YEAR_10000_US: Final = 253_402_300_800_000_000


class _GridMemo(dict[tuple[int, int], str]):
    """(day, step in us) -> the quoted ISO stamps of that day's windows joined by commas.  Every stamp
    has the same width, so the text of a run of consecutive windows is one slice of it."""

    def __missing__(self, key: tuple[int, int]) -> str:
        if len(self) >= 64:
            self.clear()
        day, step = key
        start = day * _DAY_US
        text = self[key] = ",".join(_ISO_MEMO[start + i * step] for i in range(_DAY_US // step))
        _ISO_MEMO.clear()  # a day of seconds would fill it with stamps no page asks for again
        return text


_GRID_MEMO: Final = _GridMemo()


_GRID_RUNS: Final = 64  # more runs than this (a grid full of holes): stamp by stamp


def _grid_text(us: NDArray[np.int64]) -> str | None:
    """The JSON text of a time column (epoch us, no null) on a grid of windows (``step`` dividing a
    day, every stamp a multiple of it, increasing), made of slices of ``_GridMemo`` (one per run of
    consecutive windows: a device that was offline leaves a gap); None for any other column."""
    n = len(us)
    if n < 2:
        return None
    gaps = np.diff(us)
    step = int(gaps.min())
    first, last = int(us[0]), int(us[-1])
    if step < 1_000_000 or _DAY_US % step or first % step or (gaps % step).any():
        return None
    if first < 0 or last >= _YEAR_10000_US:  # stamps of other years differ in width
        return None
    breaks = np.flatnonzero(gaps != step)
    if len(breaks) >= _GRID_RUNS:
        return None
    starts = [first, *(int(us[b + 1]) for b in breaks)]
    ends = [*(int(us[b]) for b in breaks), last]
    return ",".join(_run_text(a, b, step) for a, b in zip(starts, ends, strict=True))


def _run_text(first: int, last: int, step: int) -> str:
    """The stamps ``first, first + step, ..., last`` as slices of ``_GridMemo`` (one per day)."""
    pieces = []
    day = first // _DAY_US
    while True:
        begin = day * _DAY_US
        lo = max(first, begin)
        hi = min(last, begin + _DAY_US - step)
        text = _GRID_MEMO[(day, step)]
        at = (lo - begin) // step * _STAMP_WIDTH
        pieces.append(text[at : ((hi - begin) // step + 1) * _STAMP_WIDTH - 1])
        if hi == last:
            return ",".join(pieces)
        day += 1


def _number_text(column: pl.Series) -> str:
    """A numeric or boolean column's items as JSON (``null`` for a missing value), by orjson: the
    shortest text that reads back to the same float, 3-4x faster than polars' own cast to text, and
    from the column's memory without a Python object per value where numpy can view it."""
    if column.null_count() == 0 and column.dtype in _NUMPY_VIEWED:
        data = orjson.dumps(column.to_numpy(), option=orjson.OPT_SERIALIZE_NUMPY)
    else:
        data = orjson.dumps(column.to_list())
    return data[1:-1].decode()


def column_texts(df: pl.DataFrame) -> list[tuple[str, str]]:
    """``frame_columns(df)`` column by column as (JSON name, the array's items as JSON text without
    brackets), written without a Python object per value where it can be avoided (a page of 1,440
    windows is mostly this cost): numbers and flags are written by ``_number_text``, a text column
    holding one value is repeated, times come from ``_GridMemo`` (one device's windows) or
    ``_IsoMemo``."""
    parts = []
    n = df.height
    for column in df.get_columns():
        name, dtype = column.name, column.dtype
        # (Series methods only: those that go through polars' expression engine cost tens of us each.)
        if isinstance(dtype, pl.Datetime):
            if dtype.time_unit != "us":
                column = column.dt.cast_time_unit("us")
            us = column.cast(pl.Int64)
            grid = None if us.null_count() else _grid_text(us.to_numpy())
            if grid is not None:
                text = grid
            elif us.null_count():
                text = ",".join("null" if v is None else _ISO_MEMO[v] for v in us.to_list())
            else:
                text = ",".join(map(_ISO_MEMO.__getitem__, us.to_list()))
        elif dtype.is_numeric() or dtype == pl.Boolean:
            text = _number_text(column)
        elif dtype == pl.Utf8 and n and column.null_count() == 0 and column.min() == column.max():
            one = json.dumps(column[0])
            text = (one + ",") * (n - 1) + one
        else:
            text = json.dumps(frame_columns(df.select(name))[name], separators=(",", ":"))[1:-1]
        parts.append((json.dumps(name), text))
    return parts


def json_columns(df: pl.DataFrame) -> bytes:
    """``frame_columns(df)`` as compact JSON (``column_texts``).  ``json.loads`` of the result equals
    ``frame_columns(df)``."""
    return ("{" + ",".join(f"{name}:[{text}]" for name, text in column_texts(df)) + "}").encode()


# Separates the pieces of ``column_pieces``: JSON text never holds a raw NUL (it is escaped in strings).
_SEP: Final = "\x00"


def column_pieces(df: pl.DataFrame) -> bytes:
    """The JSON columns of ``df`` kept apart (name, items, name, items, ...), so pages of consecutive
    time ranges can be joined into one columns object by ``join_columns`` without rendering again."""
    return _SEP.join(piece for pair in column_texts(df) for piece in pair).encode()


def pieces_of_runs(df: pl.DataFrame, runs: Sequence[tuple[int, int]]) -> list[bytes]:
    """``column_pieces(df.slice(first, n))`` for each ``(first, n)`` of ``runs``, the items of each
    column written once for the whole frame.  For many small pages cut from one frame (the open
    windows of every live chart, read by one query; at a whole minute the new first and last hours
    of every chart): ``column_texts`` costs tens of microseconds a frame, however few its rows.

    Each column is written as one text with its items' bounds found by numpy (``_Cutter``), so a run
    is one slice: no Python object per item (a frame of 100 homes' hour, 12,000 items, was written
    item by item and cost the event loop tens of milliseconds at every whole minute).  Columns of a
    type ``column_texts`` writes by a way of its own (not a time, number, flag or text) are written
    slice by slice by it."""
    cutters = [(json.dumps(column.name).encode(), _Cutter.of(column)) for column in df.get_columns()]
    out = []
    for first, n in runs:
        pieces = []
        for i, (name, cutter) in enumerate(cutters):
            if cutter is None:
                text = column_texts(df.select(df.columns[i]).slice(first, n))[0][1].encode()
            else:
                text = cutter.cut(first, n)
            pieces += [name, text]
        out.append(b"\x00".join(pieces))
    return out


class _Cutter:
    """A column's JSON items as one text (each item followed by a comma) and where each item starts,
    so the items of rows ``[first, first + n)`` are one slice; a text column of runs of one value
    repeats that value's JSON instead (the household and device columns of many homes' frame)."""

    __slots__ = ("column", "items", "one", "starts", "text", "values")

    def __init__(self, text: bytes, starts: NDArray[np.int64] | None) -> None:
        self.text = text
        self.starts = starts  # None: fixed-width items (``_STAMP_WIDTH``)
        self.column: pl.Series | None = None
        self.values: NDArray[np.int64] | None = None  # a text column: the rows where a new value begins
        self.one: dict[str | None, bytes] = {}
        self.items: list[bytes] | None = None

    @classmethod
    def of(cls, column: pl.Series) -> _Cutter | None:
        dtype = column.dtype
        if isinstance(dtype, pl.Datetime):
            us = (column.dt.cast_time_unit("us") if dtype.time_unit != "us" else column).cast(pl.Int64)
            values = us.to_numpy()
            if not us.null_count() and (not len(us) or (values.min() >= 0 and values.max() < _YEAR_10000_US)):
                return cls(_stamps(values), None)
            items = [b"null" if v is None else _ISO_MEMO[v].encode() for v in us.to_list()]
            return cls._of_items(items)
        if dtype.is_numeric() or dtype == pl.Boolean:
            if column.null_count() == 0 and dtype in _NUMPY_VIEWED:
                data = orjson.dumps(column.to_numpy(), option=orjson.OPT_SERIALIZE_NUMPY)
            else:
                data = orjson.dumps(column.to_list())
            text = data[1:-1] + b","  # numbers hold no comma: the commas are the bounds
            commas = (
                np.flatnonzero(np.frombuffer(text, np.uint8) == 44) if len(column) else np.zeros(0, np.int64)
            )
            return cls(text, np.concatenate(([0], commas + 1)))
        if dtype == pl.Utf8:
            cutter = cls(b"", None)
            cutter.column = column
            if column.null_count() == 0:
                new = column.ne_missing(column.shift(1)).to_numpy()
                cutter.values = np.flatnonzero(new)
            return cutter
        return None

    @classmethod
    def _of_items(cls, items: list[bytes]) -> _Cutter:
        cutter = cls(b"", None)
        cutter.items = items
        return cutter

    def cut(self, first: int, n: int) -> bytes:
        if not n:
            return b""
        if self.column is not None:  # text
            if self.values is not None:
                k = int(np.searchsorted(self.values, first, "right"))
                if k == len(self.values) or self.values[k] >= first + n:  # one value over the run
                    value = self.column[first]
                    one = self.one.get(value)
                    if one is None:
                        one = self.one[value] = json.dumps(value).encode()
                    return (one + b",") * (n - 1) + one
            if self.items is None:
                texts: dict[str | None, bytes] = {None: b"null"}
                self.items = [
                    texts.get(v) or texts.setdefault(v, json.dumps(v).encode()) for v in self.column.to_list()
                ]
        if self.items is not None:
            return b",".join(self.items[first : first + n])
        if self.starts is None:
            return self.text[first * _STAMP_WIDTH : (first + n) * _STAMP_WIDTH - 1]
        return self.text[int(self.starts[first]) : int(self.starts[first + n]) - 1]


def _stamps(us: NDArray[np.int64]) -> bytes:
    """``_ISO_MEMO``'s quoted stamps of ``us`` (epoch microseconds, years 1970-9999), each followed by
    a comma: ``_STAMP_WIDTH`` bytes each (milliseconds, cut as ``iso`` cuts them).

    A few stamps are looked up (``_STAMP_MEMO``: a live chart's hour, or the open windows of a hundred
    homes, are the same few stamps for every chart); many are worked out with numpy's integer
    arithmetic, the civil date from the day number by H. Hinnant's ``civil_from_days``.
    (``numpy.datetime_as_string`` took 0.6 us a stamp: 40 to 110 us for those small pieces.)"""
    if len(us) <= _STAMPS_LOOKED_UP:
        return b"".join([_STAMP_MEMO[v] for v in us.tolist()])
    days, ms = np.divmod(us // 1000, 86_400_000)
    z = days + 719_468  # days since 0000-03-01
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    sec, milli = np.divmod(ms, 1000)
    out = np.frombuffer(bytearray(_STAMP_FRAME * len(us)), _STAMP_FIELDS)
    out["century"] = _TWO_DIGITS[year // 100]
    out["year"] = _TWO_DIGITS[year % 100]
    out["month"] = _TWO_DIGITS[month]
    out["day"] = _TWO_DIGITS[doy - (153 * mp + 2) // 5 + 1]
    out["hour"] = _TWO_DIGITS[sec // 3600]
    out["minute"] = _TWO_DIGITS[sec // 60 % 60]
    out["second"] = _TWO_DIGITS[sec % 60]
    out["centis"] = _TWO_DIGITS[milli // 10]
    out["milli"] += (milli % 10).astype(np.uint8)
    return out.tobytes()


class _StampMemo(dict[int, bytes]):
    """Epoch microseconds -> ``_stamps``' text of it (``_ISO_MEMO``'s, with its comma)."""

    def __missing__(self, us: int) -> bytes:
        if len(self) >= _STAMP_MEMO_SIZE:
            self.clear()
        text = self[us] = _ISO_MEMO[us].encode() + b","
        return text


_STAMP_MEMO: Final = _StampMemo()
_STAMP_MEMO_SIZE: Final = 16_384  # a day of minutes and a few open windows for each resolution in use
_STAMPS_LOOKED_UP: Final = 512
_STAMP_FRAME: Final = b'"0000-00-00T00:00:00.000Z",'
# A stamp's digit pairs as 2-byte fields (one numpy take and one strided store each), ``_TWO_DIGITS``
# holding the text of 00 to 99 as such 2-byte values.
_STAMP_FIELDS: Final = np.dtype(
    {
        "names": ["century", "year", "month", "day", "hour", "minute", "second", "centis", "milli"],
        "formats": ["<u2"] * 8 + ["u1"],
        "offsets": [1, 3, 6, 9, 12, 15, 18, 21, 23],
        "itemsize": _STAMP_WIDTH,
    }
)
_TWO_DIGITS: Final = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), "<u2")


def join_pieces(pieces: Sequence[bytes]) -> bytes | None:
    """``column_pieces`` of frames that follow each other in page order (the rows of the first, then
    the second's, ...) as the ``column_pieces`` of them all; None when their columns differ."""
    split = [p.split(b"\x00") for p in pieces]
    names = split[0][0::2]
    if any(s[0::2] != names for s in split[1:]):
        return None
    out = []
    for i, name in enumerate(names):
        out += [name, b",".join(t for s in split if (t := s[2 * i + 1]))]
    return b"\x00".join(out)


def join_columns(pieces: Sequence[bytes]) -> bytes | None:
    """One JSON columns object from ``column_pieces`` of frames that follow each other in page order;
    None when their columns differ."""
    joined = join_pieces(pieces)
    if joined is None:
        return None
    split = joined.split(b"\x00")
    return (
        b"{"
        + b",".join(name + b":[" + items + b"]" for name, items in zip(split[0::2], split[1::2], strict=True))
        + b"}"
    )


GZIP_LEVEL: Final = 1  # ISA-L's level 1: a day of minutes shrinks about as much as zlib's level 6
_GZIP_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, time 0, any OS
_TIME_ITEMS: Final = b'{"time":['
_SEGMENT_MIN: Final = 4096  # a time column shorter than this is compressed with the rest
_SEGMENT_MEMO_SIZE: Final = 64


class _Segments(dict[tuple[int, bytes, bytes], tuple[bytes, bytes]]):
    """(length, first and last stamp) of a time column's items -> (the items, their deflate blocks).
    Every home's page of the same window has the same time column (a rolling day: the same 1,440
    stamps for every dashboard within a minute), about half of a page's text."""

    hits = 0


_SEGMENTS: Final = _Segments()


def _deflate(data: bytes | memoryview, last: bool) -> bytes:
    """Raw deflate blocks of ``data``; a part before the last ends on a byte boundary (a sync flush),
    so parts compressed apart follow each other as one stream."""
    if last:
        return isal_zlib.compress(data, GZIP_LEVEL, wbits=-15)
    c = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(isal_zlib.Z_SYNC_FLUSH)


def _time_blocks(items: bytes | memoryview) -> bytes:
    """The deflate blocks (ending on a sync flush) of a time column's items, from ``_SEGMENTS`` when
    another page had the same column."""
    key = (len(items), bytes(items[:32]), bytes(items[-32:]))
    found = _SEGMENTS.get(key)
    if found is not None and found[0] == items:
        _Segments.hits += 1
        return found[1]
    if len(_SEGMENTS) >= _SEGMENT_MEMO_SIZE:
        _SEGMENTS.clear()
    blocks = _deflate(items, last=False)
    _SEGMENTS[key] = (bytes(items), blocks)
    return blocks


def gzip_json(body: bytes) -> bytes:
    """``body`` gzip'd (ISA-L, ``GZIP_LEVEL``).  A JSON page's time column is compressed once per
    distinct column (``_SEGMENTS``) and the rest around it each time, one deflate stream of three
    parts (each part's back-references stay within it: the output is slightly larger, not different
    when read).  The check value covers the whole body (ISA-L's CRC-32 costs about 1 us for a page)."""
    at = body.find(_TIME_ITEMS)
    end = -1 if at < 0 else body.find(b"]", at)
    start = at + len(_TIME_ITEMS)
    if end - start < _SEGMENT_MIN:
        return isal_zlib.compress(body, GZIP_LEVEL, wbits=31)
    middle = _time_blocks(body[start:end])
    crc = isal_zlib.crc32(body)
    return b"".join(
        (
            _GZIP_HEADER,
            _deflate(body[:start], last=False),
            middle,
            _deflate(body[end:], last=True),
            struct.pack("<II", crc, len(body) & 0xFFFFFFFF),
        )
    )


class _Part:
    """The ``column_pieces`` of a part of a live page (its closed part, or its first or last hour), split
    into column names and items once (the items are views of the pieces, not copies), and the deflate
    blocks of each column's items with the items' check value, made on the first gzip'd answer that
    needs them."""

    __slots__ = ("blocks", "items", "names", "weight")

    def __init__(self, pieces: bytes) -> None:
        view, bounds, at = memoryview(pieces), [], 0
        while (end := pieces.find(b"\x00", at)) >= 0:
            bounds.append((at, end))
            at = end + 1
        bounds.append((at, len(pieces)))
        self.names = [pieces[a:b] for a, b in bounds[0::2]]
        self.items = [view[a:b] for a, b in bounds[1::2]]
        self.blocks: list[tuple[bytes, int] | None] = [None] * len(self.items)
        # The pieces (this memo's key, which its items view) and their blocks, about a quarter as much.
        self.weight = len(pieces) + len(pieces) // 4

    def deflated(self, i: int) -> tuple[bytes, int]:
        """Column ``i``'s items as deflate blocks, and their CRC-32."""
        blocks = self.blocks[i]
        if blocks is None:
            items = self.items[i]
            made = _time_blocks(items) if self.names[i] == b'"time"' else _deflate(items, last=False)
            blocks = self.blocks[i] = (made, isal_zlib.crc32(items))
        return blocks


class _Parts(OrderedDict[bytes, _Part]):
    """Parts by their pieces (the page cache hands out the same ``bytes`` object while the part is
    current, and a ``bytes`` object keeps its hash), least recently used first, ``max_bytes`` at most."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.size = 0

    def of(self, pieces: bytes) -> _Part:
        closed = self.get(pieces)
        if closed is not None:
            self.move_to_end(pieces)
            return closed
        closed = self[pieces] = _Part(pieces)
        self.size += closed.weight
        while self.size > self.max_bytes and len(self) > 1:
            _, old = self.popitem(last=False)
            self.size -= old.weight
        return closed


# Two generations (this hour's and, made ahead, the next one's) of a few hundred day-long live charts:
# one smaller than that evicts the parts answers still need while the next hour's are made.
CLOSED_MEMO_BYTES: Final = 64 * 2**20
_CLOSED_PARTS: Final = _Parts(CLOSED_MEMO_BYTES)
# A live answer's first and last hours (the same for every answer of a minute), compressed once too;
# parts shorter than ``_STORED_UNDER`` (its open windows, made again by every write) go out stored.
EDGE_MEMO_BYTES: Final = 8 * 2**20
_EDGE_PARTS: Final = _Parts(EDGE_MEMO_BYTES)
_STORED_UNDER: Final = 1024
_STORED_MAX: Final = 65_535  # the most one stored deflate block holds


class _GzipStream:
    """A gzip member built from text sent as it is (deflate's stored blocks) and from deflate blocks
    made before (each ending on a byte boundary, referring to nothing before it), with the check value
    and length of all of it."""

    __slots__ = ("crc", "out", "pending", "size")

    def __init__(self) -> None:
        self.out = [_GZIP_HEADER]
        self.pending: list[bytes | memoryview] = []
        self.crc = 0
        self.size = 0

    def text(self, *data: bytes | memoryview) -> None:
        self.pending += data

    def blocks(self, blocks: bytes, crc: int, size: int) -> None:
        """Deflate ``blocks`` that inflate to ``size`` bytes whose CRC-32 is ``crc`` (combined with the
        check value so far: the text itself is not read again)."""
        self._stored(last=False)
        self.out.append(blocks)
        self.crc = isal_zlib.crc32_combine(self.crc, crc, size)
        self.size += size

    def close(self) -> bytes:
        self._stored(last=True)
        self.out.append(struct.pack("<II", self.crc, self.size & 0xFFFFFFFF))
        return b"".join(self.out)

    def _stored(self, last: bool) -> None:
        data = b"".join(self.pending)
        self.pending = []
        if not data and not last:
            return
        self.crc = isal_zlib.crc32(data, self.crc)
        self.size += len(data)
        at = 0
        while True:
            chunk = data[at : at + _STORED_MAX]
            at += len(chunk)
            final = last and at >= len(data)
            n = len(chunk)
            self.out += [struct.pack("<BHH", 1 if final else 0, n, n ^ 0xFFFF), chunk]
            if at >= len(data):
                return


def prepare_closed(closed: bytes) -> None:
    """Split and compress a live page's closed part (``column_pieces``) before an answer needs it, as
    the first gzip'd ``live_json`` of it would (``series.prepare_next_windows``, ahead of the minute
    when every chart's closed part is new)."""
    part = _CLOSED_PARTS.of(closed)
    for i, items in enumerate(part.items):
        if items:
            part.deflated(i)


def live_json(
    prefix: bytes,
    before: Sequence[bytes],
    closed: bytes,
    after: Sequence[bytes],
    suffix: bytes,
    gzipped: bool,
) -> bytes | None:
    """``prefix + join_columns([*before, closed, *after]) + suffix``, gzip'd (as ``gzip_json`` would,
    read back) when asked; None when the columns of the parts differ.

    A live chart's answer is the part of its day that stays the same all hour (``closed``) between a
    few small parts: its first hour and its last one (the same all minute) and its open windows (made
    again after every write).  The columns of the closed part and of the hours are split, and
    compressed, once, with their check values (``_Parts``); the envelope, the open windows and the
    brackets between go out as they are (deflate's stored blocks: a few hundred bytes), so an answer
    made again after a write compresses nothing and reads only those few hundred bytes: the check
    value of the whole is combined from its parts' (every live chart's answer is made again after
    each write, all in the same few milliseconds)."""
    if not gzipped:  # (no compression to save: the parts joined as any pages' pieces are)
        joined = join_columns([*before, closed, *after])
        return None if joined is None else prefix + joined + suffix
    part = _CLOSED_PARTS.of(closed)
    names = part.names
    segments: list[_Part | list[bytes]] = []
    for pieces in (*before, None, *after):
        if pieces is None:
            segments.append(part)
        elif len(pieces) >= _STORED_UNDER:
            edge = _EDGE_PARTS.of(pieces)
            if edge.names != names:
                return None
            segments.append(edge)
        else:
            split = pieces.split(b"\x00")
            if split[0::2] != names:
                return None
            segments.append(split[1::2])
    stream = _GzipStream()
    stream.text(prefix, b"{")
    for i, name in enumerate(names):
        stream.text(b"," if i else b"", name, b":[")
        first = True
        for segment in segments:
            items = segment[i] if isinstance(segment, list) else segment.items[i]
            if not items:
                continue
            if not first:
                stream.text(b",")
            first = False
            if isinstance(segment, list):
                stream.text(items)
            else:
                stream.blocks(*segment.deflated(i), len(items))
        stream.text(b"]")
    stream.text(b"}", suffix)
    return stream.close()
