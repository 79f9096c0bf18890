"""Validation: every rejection is counted by reason and a bad field costs only that field."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.reading import Reading
from pipeline.columns import ColumnBatch
from pipeline.points import Point
from pipeline.query import datetime_to_ns
from pipeline.validate import RejectedReading, Validator

NOW = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)


def reading(**kw: object) -> Reading:
    base: dict[str, object] = {
        "household": "hh-1",
        "device": "meter",
        "category": "electricity",
        "ts_utc": NOW,
        "fields": {"power_w": 1200.0},
    }
    base.update(kw)
    return Reading(**base)  # type: ignore[arg-type]


def test_good_reading_passes_unchanged() -> None:
    v = Validator()
    r = reading(fields={"power_w": -300.0, "import_wh_total": 12_345.6, "fault": False})
    assert v.check(r, NOW) is r
    assert v.stats.accepted == 1
    assert not v.stats.rejected and not v.stats.dropped_fields


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"category": "identity"}, "unknown_category"),
        ({"category": "electricty"}, "unknown_category"),
        ({"household": "a b"}, "bad_household_id"),
        ({"device": ""}, "bad_device_id"),
        ({"ts_utc": NOW.astimezone(timezone(timedelta(hours=9)))}, "non_utc_timestamp"),
        ({"ts_utc": NOW + timedelta(minutes=6)}, "timestamp_in_future"),
        ({"ts_utc": datetime(1999, 12, 31, 23, 59, tzinfo=UTC)}, "timestamp_too_old"),
        ({"fields": {"power_w": float("nan")}}, "no_valid_fields"),
    ],
)
def test_whole_reading_rejections_are_counted(kw: dict[str, object], reason: str) -> None:
    v = Validator()
    with pytest.raises(RejectedReading) as err:
        v.check(reading(**kw), NOW)
    assert err.value.reason == reason
    assert v.stats.rejected == {reason: 1}
    assert v.stats.accepted == 0


def test_future_skew_is_configurable() -> None:
    r = reading(ts_utc=NOW + timedelta(minutes=4))
    assert Validator().check(r, NOW) is r
    with pytest.raises(RejectedReading):
        Validator(max_future_skew=timedelta(minutes=1)).check(r, NOW)


def test_bad_fields_are_dropped_and_counted_rest_survives() -> None:
    v = Validator()
    r = reading(
        category="battery",
        fields={
            "power_w": -2500.0,  # discharging: fine for a battery
            "soc_pct": 101.0,
            "charge_wh_total": float("inf"),
            "discharge_wh_total": -1.0,
            "fault": 1,  # not a bool
            "colour": "red",
            "temperature_c": 25,
        },
    )
    out = v.check(r, NOW)
    assert out.fields == {"power_w": -2500.0, "temperature_c": 25}
    assert v.stats.dropped_fields == {
        "out_of_range": 2,
        "not_finite": 1,
        "bad_type": 1,
        "unknown_field": 1,
    }
    assert v.stats.accepted == 1


def test_negative_pv_power_is_impossible_beyond_standby_draw() -> None:
    v = Validator()
    assert v.check(reading(category="pv", fields={"power_w": -20.0}), NOW).fields == {"power_w": -20.0}
    with pytest.raises(RejectedReading):
        v.check(reading(category="pv", fields={"power_w": -500.0}), NOW)
    with pytest.raises(RejectedReading):
        v.check(reading(category="external_generation", fields={"power_w": -1.0}), NOW)
    assert v.stats.dropped_fields == {"out_of_range": 2}
    assert v.stats.rejected == {"no_valid_fields": 2}


def test_absurd_magnitude_and_bool_as_number() -> None:
    v = Validator()
    out = v.check(reading(fields={"power_w": 5e9, "voltage_v": True, "current_a": 12.5}), NOW)
    assert out.fields == {"current_a": 12.5}
    assert v.stats.dropped_fields == {"out_of_range": 1, "bad_type": 1}


def test_bad_counter_wrap_is_ignored_and_counted() -> None:
    v = Validator()
    r = reading(fields={"import_wh_total": 10.0}, counter_wrap={"import_wh_total": -5.0, "power_w": 10.0})
    out = v.check(r, NOW)
    assert out.counter_wrap == {}
    assert v.stats.dropped_fields == {"bad_counter_wrap": 2}
    assert v.stats.as_dict()["dropped_fields"] == {"bad_counter_wrap": 2}


# -- a batch in columns (an upload) is checked exactly as its points -----------------------------------

_NOW_NS = datetime_to_ns(NOW)
_column_values = (
    st.floats(min_value=-1e7, max_value=1e7)
    | st.sampled_from([math.nan, math.inf, -1e12, 1e12, 0.0, 55.5])
    | st.integers(min_value=-(10**6), max_value=10**6)
    | st.booleans()
    | st.sampled_from(["ok", "a\nb", "x" * 80])
)
_column_rows = st.lists(
    st.tuples(
        st.sampled_from(["hh-1", "hh-2", "h h"]),
        st.sampled_from(["meter", "pv", "bad/id"]),
        st.sampled_from(["electricity", "pv", "battery", "identity"]),
        st.sampled_from(["echonet", "modbus", "bacnet"]),
        st.sampled_from([0, -(10**9), 10**15, -(10**20), 1.5]),
        st.dictionaries(
            st.sampled_from(
                ["power_w", "import_wh_total", "raw_import_wh_total", "fault", "soc_pct", "bogus"]
            ),
            _column_values,
            min_size=1,
            max_size=4,
        ),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(rows=_column_rows)
def test_a_batch_in_columns_is_checked_exactly_as_its_points(
    rows: list[tuple[str, str, str, str, int | float, dict[str, object]]],
) -> None:
    points = [
        Point(category, hh, device, source, _NOW_NS + offset, fields)  # type: ignore[arg-type]
        for hh, device, category, source, offset, fields in rows
    ]
    by_points, by_columns = Validator(), Validator()
    good, refused = by_points.check_points(points, NOW)
    batch = ColumnBatch(points)
    kept, refused_in_columns = by_columns.check_batch(batch, NOW)
    assert list(kept) == good
    assert refused_in_columns == refused
    assert by_columns.stats == by_points.stats
    if len(good) == len(points) and all(g is p for g, p in zip(good, points, strict=True)):
        assert kept is batch  # nothing to drop: the batch goes on as it is, no point made


def test_a_clean_upload_batch_passes_whole_and_is_counted() -> None:
    points = [
        Point("electricity", "hh-1", "meter", "echonet", _NOW_NS - i, {"power_w": 1.0 * i, "fault": False})
        for i in range(100)
    ]
    v = Validator()
    batch = ColumnBatch(points)
    assert v.check_batch(batch, NOW) == (batch, [])
    assert v.stats.accepted == 100


# -- the writer's intake loop is ``accept`` reading by reading -----------------------------------------

_readings = st.lists(
    st.builds(
        Reading,
        household=st.sampled_from(["hh-1", "hh-2", "h h"]),
        device=st.sampled_from(["meter", "pv"]),
        category=st.sampled_from(["electricity", "pv", "identity"]),
        ts_utc=st.sampled_from(
            [
                NOW,
                NOW - timedelta(minutes=1),
                NOW + timedelta(hours=1),
                datetime(1999, 1, 1, tzinfo=UTC),
                NOW.astimezone(timezone(timedelta(hours=9))),
                NOW.astimezone(timezone(timedelta(0))),
            ]
        ),
        fields=st.dictionaries(
            st.sampled_from(["power_w", "import_wh_total", "fault", "soc_pct", "bogus", "net_power_w"]),
            _column_values,
            max_size=4,
        ),
        counter_wrap=st.sampled_from(
            [{}, {"import_wh_total": 1e6}, {"power_w": 5.0}, {"import_wh_total": -1.0}]
        ),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(readings=_readings)
def test_the_intake_loop_accepts_exactly_what_accept_does(readings: list[Reading]) -> None:
    now_ns = datetime_to_ns(NOW)
    one_by_one, in_a_loop = Validator(), Validator()
    expected_added: list[tuple[object, ...]] = []
    expected_refused: list[tuple[int, str]] = []
    for i, r in enumerate(readings):
        try:
            clean, ts_ns = one_by_one.accept(r, now_ns)
        except RejectedReading as exc:
            expected_refused.append((i, exc.reason))
            continue
        if clean.fields:
            expected_added.append(
                (clean.category, clean.household, clean.device, clean.source, ts_ns, clean.fields)
            )
        else:
            expected_refused.append((i, "no_valid_fields"))
    added: list[tuple[object, ...]] = []
    refused = in_a_loop.accept_into(
        readings, now_ns, lambda r, ts: r.fields, lambda *row: added.append((*row[:5], dict(row[5])))
    )
    assert refused == expected_refused
    assert added == [(*row[:5], dict(row[5])) for row in expected_added]  # type: ignore[call-overload]
    assert in_a_loop.stats == one_by_one.stats


def test_refusals_and_dropped_fields_are_logged_once_then_tallied(caplog: pytest.LogCaptureFixture) -> None:
    """Every refusal is counted and logged (before: counted only): the first of a reason at once, the
    rest as one tally (at close here), and an id a device sent is quoted, so it cannot forge a line."""
    v = Validator()
    caplog.set_level(logging.WARNING, logger="pipeline.validate")
    for _ in range(6):
        with pytest.raises(RejectedReading):
            v.check(reading(household="hh\nforged line"), NOW)
    v.check(reading(fields={"power_w": 1200.0, "voltage_v": -5.0}), NOW)
    lines = [rec.getMessage() for rec in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("readings refused (bad_household_id): 1, 1 in all")
    assert "'hh\\nforged line'" in lines[0] and "\n" not in lines[0]
    assert lines[1].startswith("fields dropped (") and "'voltage_v'" in lines[1]
    caplog.clear()
    v.stats.flush_log()
    assert [rec.getMessage() for rec in caplog.records] == [
        "readings refused (bad_household_id): 5 in the last 60 s, 6 in all: "
        "'hh\\nforged line'/'meter': 'hh\\nforged line'"
    ]
    assert v.stats.rejected["bad_household_id"] == 6


def test_a_reading_the_counters_leave_empty_is_refused_not_accepted(caplog: pytest.LogCaptureFixture) -> None:
    """A reading whose only fields are counters the tracker refuses (a sample older than one it kept)
    is refused whole, counted and logged; before, the intake counted it accepted and nowhere refused."""
    v = Validator()
    counter_only = reading(fields={"import_wh_total": 12_345.0})
    slow_path = reading(fields={"import_wh_total": 12_345.0, "voltage_v": -5.0})  # one field dropped first
    refused = v.accept_into(
        [counter_only, slow_path], datetime_to_ns(NOW), lambda r, ts: {}, lambda *row: None
    )
    assert refused == [(0, "no_valid_fields"), (1, "no_valid_fields")]
    assert v.stats.accepted == 0 and v.stats.rejected["no_valid_fields"] == 2
    assert any("no field left after the counter checks" in rec.getMessage() for rec in caplog.records)
