"""The durable spool on real files: order, restart, torn tail, size policy."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.points import Point
from pipeline.spool import Spool, SpoolFull, SpoolLocked, encode_points


def batch(start: int, n: int = 3) -> list[Point]:
    return [
        Point("pv", "hh-1", "inv", "modbus", i, {"power_w": float(i), "running": True, "state": "mppt"})
        for i in range(start, start + n)
    ]


def drain(spool: Spool) -> list[list[Point]]:
    out = []
    while (b := spool.peek()) is not None:
        out.append(b)
        spool.commit()
    return out


def test_roundtrip_in_order_with_types(tmp_path: Path) -> None:
    s = Spool(tmp_path, segment_bytes=400)  # small segments: several files
    for k in range(5):
        s.append(batch(k * 10))
    assert len(list(tmp_path.glob("*.seg"))) > 1
    assert s.depth_batches == 5 and s.depth_points == 15
    got = drain(s)
    assert got == [batch(k * 10) for k in range(5)]
    assert isinstance(got[0][0].fields["running"], bool)
    assert s.depth_batches == 0
    assert list(tmp_path.glob("*.seg")) == []


def test_restart_resumes_after_last_commit(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    for k in range(4):
        s.append(batch(k * 10))
    assert s.peek() == batch(0)
    s.commit()
    s.close()  # process ends here (no further bookkeeping)
    again = Spool(tmp_path)
    assert again.depth_batches == 3
    again.append(batch(100))  # appends go to a new segment, after the old ones
    assert drain(again) == [batch(10), batch(20), batch(30), batch(100)]


def test_torn_last_record_is_skipped_and_counted(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.append(batch(0))
    s.append(batch(10))
    s.close()
    seg = next(tmp_path.glob("*.seg"))
    data = seg.read_bytes()
    seg.write_bytes(data[:-7])  # crash in the middle of writing the second record
    again = Spool(tmp_path)
    assert again.stats.events["torn_records"] == 1
    assert drain(again) == [batch(0)]


def test_flipped_byte_fails_crc(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.append(batch(0))
    s.close()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    data[-2] ^= 0xFF
    seg.write_bytes(bytes(data))
    again = Spool(tmp_path)
    assert again.stats.events["torn_records"] == 1
    assert again.peek() is None


def test_full_spool_refuses_loudly(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1000, segment_bytes=1000)
    appended = 0
    with pytest.raises(SpoolFull):
        for k in range(100):
            s.append(batch(k * 10))
            appended += 1
    assert 0 < appended < 100
    assert s.stats.events["full_refused_batches"] == 1
    assert s.stats.events["full_refused_points"] == 3
    assert s.depth_batches == appended  # what was acknowledged is still there
    assert s.size_bytes <= 1000


def test_drop_oldest_policy_counts_losses(tmp_path: Path) -> None:
    s = Spool(tmp_path, max_bytes=1200, segment_bytes=400, policy="drop_oldest")
    for k in range(20):
        s.append(batch(k * 10))
    dropped = s.stats.events["full_dropped_batches"]
    assert dropped > 0
    assert s.stats.events["full_dropped_points"] == 3 * dropped
    got = drain(s)
    assert len(got) == 20 - dropped
    assert got[-1] == batch(190)  # newest kept, oldest gone
    assert s.size_bytes <= 1200


@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=8), cut=st.floats(0.0, 1.0))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_torn_tail_keeps_every_complete_record(tmp_path: Path, sizes: list[int], cut: float) -> None:
    """Cut the file anywhere inside the last record (a crash during its write): every earlier record
    comes back intact, the torn one is counted and never half-delivered."""
    d = tmp_path / f"s{len(list(tmp_path.iterdir()))}"
    s = Spool(d)
    batches = [batch(k * 10, n) for k, n in enumerate(sizes)]
    for b in batches:
        s.append(b)
    s.close()
    seg = next(d.glob("*.seg"))
    data = seg.read_bytes()
    last_len = len(data) - sum(len(encode_points(b)) + 8 for b in batches[:-1])
    keep = len(data) - last_len + int(cut * (last_len - 1))  # strictly inside the last record
    seg.write_bytes(data[:keep])
    again = Spool(d)
    assert drain(again) == batches[:-1]
    assert again.stats.events["torn_records"] == (1 if keep > len(data) - last_len else 0)
    again.close()


def test_stale_commit_never_skips_an_unwritten_batch(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    s.append(batch(0))
    s.append(batch(10))
    found = s.peek_record()
    assert found is not None
    record, points = found
    assert points == batch(0)
    assert s.commit(record) is True
    assert s.commit(record) is False  # a repeated commit (e.g. after a cancelled replay) is a no-op
    assert s.quarantine(record) is None
    assert s.peek() == batch(10)


def test_one_process_per_spool(tmp_path: Path) -> None:
    s = Spool(tmp_path)
    with pytest.raises(SpoolLocked):
        Spool(tmp_path)  # a second writer (here: a second open) would interleave records
    s.close()
    Spool(tmp_path).close()  # released on close (and by the kernel when a process dies)
