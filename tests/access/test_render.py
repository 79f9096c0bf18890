"""The JSON columns of a page are what ``frame_columns`` (polars' own values) says, whatever the numbers:
the fast writers (orjson over numpy views, memoised time stamps) must never change a value."""

from __future__ import annotations

import gzip
import itertools
import json
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
from hypothesis import example, given, settings
from hypothesis import strategies as st
from isal import isal_zlib

from access.api.render import (
    _STAMPS_LOOKED_UP,
    _YEAR_10000_US,
    _deflate,
    _GzipStream,
    _Segments,
    _stamps,
    column_pieces,
    frame_columns,
    gzip_json,
    iso,
    join_columns,
    json_columns,
    live_json,
    pieces_of_runs,
)

T0 = datetime(2026, 6, 1, tzinfo=UTC)
floats = st.floats(allow_nan=False, allow_infinity=False)  # a NaN never reaches a store (validation)
row = st.tuples(
    floats,
    st.one_of(st.none(), floats),
    st.integers(-(2**63), 2**63 - 1),
    st.one_of(st.none(), st.booleans()),
)


@given(
    values=st.lists(row, max_size=40),
    step_s=st.sampled_from([1, 60, 3600]),
    devices=st.sampled_from([("inv1",), ("inv1", "inv2")]),
)
@settings(max_examples=150, deadline=None)
def test_json_columns_read_back_as_the_frame(
    values: list[tuple[float, float | None, int, bool | None]], step_s: int, devices: tuple[str, ...]
) -> None:
    n = len(values)
    df = pl.DataFrame(
        {
            "time": [T0 + timedelta(seconds=step_s * i) for i in range(n)],
            "household": ["h1"] * n,
            "device": [devices[i % len(devices)] for i in range(n)],
            "power_w": [v[0] for v in values],
            "reactive_var": [v[1] for v in values],
            "count": [v[2] for v in values],
            "fault": [v[3] for v in values],
        },
        schema_overrides={"time": pl.Datetime("us", "UTC"), "count": pl.Int64},
    )
    got = json.loads(json_columns(df))
    want = frame_columns(df)
    assert got == want
    # Same floats bit for bit (``==`` alone would take -0.0 for 0.0).
    assert [math.copysign(1, v) for v in got["power_w"]] == [math.copysign(1, v) for v in want["power_w"]]
    for cut in (0, n // 2, n):
        pieces = [column_pieces(df.slice(0, cut)), column_pieces(df.slice(cut))]
        assert join_columns(pieces) == json_columns(df)


def test_a_column_of_32_bit_floats_reads_back_as_its_values() -> None:
    df = pl.DataFrame({"x": pl.Series([0.1, 1e30, None], dtype=pl.Float32), "y": [1, 2, 3]})
    assert json.loads(json_columns(df)) == frame_columns(df)


@given(
    kept=st.lists(st.booleans(), min_size=2, max_size=200),
    step_s=st.sampled_from([1, 60, 900, 3600]),
    start_s=st.integers(0, 3 * 86_400),
)
@settings(max_examples=150, deadline=None)
def test_time_stamps_with_gaps_read_back_as_the_frame(kept: list[bool], step_s: int, start_s: int) -> None:
    """Windows of a device that was offline at times (runs of stamps with holes between them), also
    across midnight: every stamp as polars formats it."""
    start = T0 + timedelta(seconds=start_s // step_s * step_s)
    times = [start + timedelta(seconds=step_s * i) for i, keep in enumerate(kept) if keep]
    df = pl.DataFrame({"time": times, "power_w": [float(i) for i in range(len(times))]},
                      schema={"time": pl.Datetime("us", "UTC"), "power_w": pl.Float64})  # fmt: skip
    assert json.loads(json_columns(df)) == frame_columns(df)


@given(
    us=st.lists(
        st.one_of(
            st.integers(0, _YEAR_10000_US - 1),
            # Days where the civil calendar turns: leap days, ends of months, centuries, the range's ends.
            st.sampled_from(
                [
                    0,
                    951_782_400_000_000,
                    951_868_799_999_999,
                    4_107_542_400_000_000,
                    253_402_300_799_999_999,
                    68_256_000_000_000,
                    1_709_164_800_123_456,
                ]
            ),
        ),
        min_size=1,
        max_size=40,
    ),
    many=st.booleans(),
)
@settings(max_examples=300, deadline=None)
def test_stamps_are_what_iso_writes_for_any_instant_of_years_1970_to_9999(us: list[int], many: bool) -> None:
    """A time column's stamps, looked up (a few) or worked out with numpy (many), are ``iso``'s text of
    each instant (milliseconds cut, not rounded), quoted and followed by a comma."""
    values = us * (_STAMPS_LOOKED_UP // len(us) + 1) if many else us
    assert (len(values) > _STAMPS_LOOKED_UP) == many
    expected = b"".join(
        f'"{iso(datetime.fromtimestamp(v // 1_000_000, UTC).replace(microsecond=v % 1_000_000))}",'.encode()
        for v in values
    )
    assert _stamps(np.array(values, dtype=np.int64)) == expected


def _day_page(household: str, start: datetime, minutes: int = 1440, gap_at: int | None = None) -> bytes:
    times = [start + timedelta(minutes=m) for m in range(minutes) if m != gap_at]
    df = pl.DataFrame(
        {
            "time": times,
            "household": [household] * len(times),
            "device": ["inv1"] * len(times),
            "power_w": [float(i) * 1.25 for i in range(len(times))],
        }
    ).with_columns(pl.col("time").dt.cast_time_unit("us"))
    return b'{"household":"' + household.encode() + b'","columns":' + json_columns(df) + b"}"


def test_gzip_reads_back_as_the_page_and_compresses_a_shared_time_column_once() -> None:
    """Pages of one window share their time column (compressed once); a column of the same length and
    the same first and last stamps but other stamps between is not taken for it; a short page, a body
    without a time column and an empty one are gzip'd whole."""
    first = _day_page("h1", T0)
    hits = _Segments.hits
    assert gzip.decompress(gzip_json(first)) == first
    for household in ("h2", "h3"):
        other = _day_page(household, T0)
        assert gzip.decompress(gzip_json(other)) == other
    assert _Segments.hits == hits + 2
    # 1,441 minutes with one left out: the same length, first and last stamp as no other page here,
    # so compare with a page of the same shape whose gap is elsewhere.
    gap_a, gap_b = _day_page("h1", T0, 1441, gap_at=100), _day_page("h1", T0, 1441, gap_at=900)
    assert gzip.decompress(gzip_json(gap_a)) == gap_a
    assert gzip.decompress(gzip_json(gap_b)) == gap_b
    for body in (_day_page("h1", T0, 10), b'{"columns":{"power_w":[1,2]}}', b"", b'{"time":[' + b"1," * 5000):
        assert gzip.decompress(gzip_json(body)) == body


@given(
    values=st.lists(row, max_size=30),
    devices=st.sampled_from([("inv1",), ("inv1", 'inv\u00e9 "2"')]),
    cuts=st.lists(st.integers(0, 30), max_size=4),
)
@settings(max_examples=150, deadline=None)
def test_pieces_of_runs_are_the_pieces_of_each_slice(
    values: list[tuple[float, float | None, int, bool | None]], devices: tuple[str, ...], cuts: list[int]
) -> None:
    """The open parts of many live charts are written from one frame: each must be the very bytes its
    own frame gives, whatever the values, missing ones, texts (one or several) and types."""
    n = len(values)
    df = pl.DataFrame(
        {
            # (microseconds too: a stamp shows milliseconds, cut as ``iso`` cuts them)
            "time": [T0 + timedelta(minutes=i // 2, microseconds=i * 7919 % 10**6) for i in range(n)],
            "household": [f"h{i // 7}" for i in range(n)],
            "device": [devices[i % len(devices)] for i in range(n)],
            "power_w": [v[0] for v in values],
            "reactive_var": [v[1] for v in values],
            "count": [v[2] for v in values],
            "fault": [v[3] for v in values],
            "day": [(T0 + timedelta(days=i)).date() for i in range(n)],  # written by ``column_texts``
            "small": pl.Series([v[0] for v in values], dtype=pl.Float32),
            "note": [None if i % 3 else f"n{i}" for i in range(n)],
        },
        schema_overrides={"time": pl.Datetime("us", "UTC"), "count": pl.Int64},
    )
    bounds = sorted({0, n, *(min(c, n) for c in cuts)})
    runs = [(a, b - a) for a, b in itertools.pairwise(bounds)] + [(0, 0), (0, n)]
    assert pieces_of_runs(df, runs) == [column_pieces(df.slice(a, k)) for a, k in runs]


@given(values=st.lists(row, max_size=30), cuts=st.lists(st.integers(0, 30), min_size=3, max_size=3))
@settings(max_examples=150, deadline=None)
def test_a_live_answer_is_the_joined_page_plain_or_gzipd(
    values: list[tuple[float, float | None, int, bool | None]], cuts: list[int]
) -> None:
    """A live chart's answer made from its parts (the first hour, the whole hours kept compressed,
    the last hour and the open windows, any of them empty) is the whole page's JSON; gzip'd, it
    reads back to the same bytes (its closed part's blocks made once and reused)."""
    n = len(values)
    df = pl.DataFrame(
        {
            "time": [T0 + timedelta(minutes=i) for i in range(n)],
            "device": ["inv1"] * n,
            "power_w": [v[0] for v in values],
            "reactive_var": [v[1] for v in values],
        },
        schema_overrides={"time": pl.Datetime("us", "UTC")},
    )
    a, b, c = sorted(min(x, n) for x in cuts)
    first, closed = column_pieces(df.slice(0, a)), column_pieces(df.slice(a, b - a))
    last, live = column_pieces(df.slice(b, c - b)), column_pieces(df.slice(c))
    head, tail = b'{"count":' + str(n).encode() + b',"columns":', b"}"
    whole = head + json_columns(df) + tail
    for before, after in (([first], [last, live]), ([], [column_pieces(df.slice(b))])):
        middle = closed if before else column_pieces(df.slice(0, b))
        assert live_json(head, before, middle, after, tail, gzipped=False) == whole
        for _ in range(2):  # the second time from the memo
            assert gzip.decompress(live_json(head, before, middle, after, tail, gzipped=True) or b"") == whole
    other = column_pieces(df.select("time", "power_w"))
    assert live_json(head, [first], closed, [other], tail, gzipped=True) is None
    assert live_json(head, [other], closed, [live], tail, gzipped=True) is None


@given(
    st.lists(
        st.tuples(st.booleans(), st.binary(max_size=3000), st.integers(min_value=0, max_value=30)),
        max_size=8,
    )
)
@example([(False, b"x" * 3000, 30), (True, b"y", 1)])  # 90,000 bytes stored: two blocks
@example([])
def test_a_gzip_stream_of_stored_text_and_blocks_made_before_reads_back_whole(
    parts: list[tuple[bool, bytes, int]],
) -> None:
    """Text sent as it is (stored blocks, cut at 65,535 bytes) between deflate blocks made apart reads
    back as the whole, check value and length included (``gzip`` verifies both)."""
    stream, whole = _GzipStream(), b""
    for compressed, data, repeat in parts:
        data *= repeat
        if compressed:
            stream.blocks(_deflate(data, last=False), isal_zlib.crc32(data), len(data))
        else:
            stream.text(data)
        whole += data
    assert gzip.decompress(stream.close()) == whole
