"""Counter rollover, meter replacement and gaps, with hand-computed totals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.reading import Reading
from pipeline.counters import CounterStateFile, CounterTracker
from pipeline.query import datetime_to_ns

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WRAP = 100_000_000.0  # 6 digits at 0.1 kWh = 99999.9 kWh -> modulus 100000 kWh in Wh


def feed(tracker: CounterTracker, minute: int, fields: dict[str, float], wrap: bool = True) -> dict:
    r = Reading(
        household="hh-1",
        device="meter",
        category="electricity",
        ts_utc=T0 + timedelta(minutes=minute),
        fields=dict(fields),
        counter_wrap={"import_wh_total": WRAP} if wrap else {},
    )
    return tracker.apply(r, datetime_to_ns(r.ts_utc))


def test_wrap_adds_the_modulus() -> None:
    t = CounterTracker()
    assert feed(t, 0, {"import_wh_total": 99_999_800.0})["import_wh_total"] == 99_999_800.0
    out = feed(t, 1, {"import_wh_total": 100.0})
    # 99,999,800 -> wrap -> 100: 300 Wh consumed, total 100,000,100
    assert out["import_wh_total"] == 100_000_100.0
    assert out["raw_import_wh_total"] == 100.0
    assert feed(t, 2, {"import_wh_total": 400.0})["import_wh_total"] == 100_000_400.0
    assert t.stats["wraps"] == 1 and t.stats["resets"] == 0


def test_drop_far_from_modulus_is_a_reset_without_spike() -> None:
    t = CounterTracker()
    feed(t, 0, {"import_wh_total": 50_000_000.0})
    feed(t, 1, {"import_wh_total": 50_000_500.0})
    # meter replaced: new meter reads 20 Wh. Total continues from 50,000,500 (no jump either way).
    out = feed(t, 2, {"import_wh_total": 20.0})
    assert out["import_wh_total"] == 50_000_500.0
    assert out["raw_import_wh_total"] == 20.0
    assert feed(t, 3, {"import_wh_total": 120.0})["import_wh_total"] == 50_000_600.0
    assert t.stats["resets"] == 1 and t.stats["wraps"] == 0
    assert t.states[("hh-1", "meter", "import_wh_total")].segment == 1


def test_drop_without_known_modulus_is_a_reset() -> None:
    t = CounterTracker()
    feed(t, 0, {"import_wh_total": 99_999_800.0}, wrap=False)
    out = feed(t, 1, {"import_wh_total": 100.0}, wrap=False)
    assert out["import_wh_total"] == 99_999_800.0
    assert t.stats["resets"] == 1


def test_gap_leaves_missing_values_missing() -> None:
    t = CounterTracker()
    feed(t, 0, {"import_wh_total": 1000.0, "power_w": 300.0})
    night = feed(t, 1, {"power_w": 0.0})  # counter not reported at this poll
    assert night == {"power_w": 0.0}
    # after a 3 h gap the next value continues from the last total, nothing filled in between
    assert feed(t, 180, {"import_wh_total": 1900.0})["import_wh_total"] == 1900.0


def test_out_of_order_sample_is_dropped_and_duplicate_is_stable() -> None:
    t = CounterTracker()
    feed(t, 5, {"import_wh_total": 1000.0})
    assert feed(t, 5, {"import_wh_total": 1000.0})["import_wh_total"] == 1000.0
    assert "import_wh_total" not in feed(t, 4, {"import_wh_total": 990.0})
    assert t.stats["out_of_order"] == 1


def test_state_survives_restart(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    t = CounterTracker()
    feed(t, 0, {"import_wh_total": 99_999_900.0})
    feed(t, 1, {"import_wh_total": 50.0})  # wrap: total 100,000,050
    store = CounterStateFile(path)
    store.save(t.take_dirty())
    store.close()

    reopened = CounterStateFile(path)
    t2 = CounterTracker(states=reopened.load())
    reopened.close()
    # A fresh tracker would report 80 here (a drop of 100 million Wh); the restored one continues.
    assert feed(t2, 2, {"import_wh_total": 80.0})["import_wh_total"] == 100_000_080.0
    assert t2.stats["wraps"] == 0 and t2.stats["resets"] == 0


@given(
    start=st.floats(0, WRAP * 0.999),
    steps=st.lists(
        st.tuples(st.floats(0, WRAP * 0.05), st.booleans(), st.floats(0, WRAP * 0.01)),
        min_size=1,
        max_size=60,
    ),
)
@settings(max_examples=150, deadline=None)
def test_totals_follow_true_consumption(start: float, steps: list[tuple[float, bool, float]]) -> None:
    """Against a simulated meter: each step consumes ``inc`` Wh (the meter wraps at WRAP), or the
    meter is replaced by one showing ``fresh``.  The total must grow by exactly the consumption,
    except across a replacement where the unknown consumption counts as 0 -- never negative."""
    t = CounterTracker()
    raw = start
    expected = start
    assert feed(t, 0, {"import_wh_total": raw})["import_wh_total"] == expected
    for minute, (inc, replace, fresh) in enumerate(steps, start=1):
        if replace and raw < WRAP * 0.85:  # near the top a replacement is indistinguishable from a wrap
            # A new meter showing more than the old one looks like consumption, and is counted so.
            expected += max(0.0, fresh - raw)
            raw = fresh
        else:
            raw = (raw + inc) % WRAP
            expected += inc
        out = feed(t, minute, {"import_wh_total": raw})
        assert out["import_wh_total"] == pytest.approx(expected, rel=1e-12, abs=1e-3)
