"""Validation: every rejection is counted by reason and a bad field costs only that field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from collector.reading import Reading
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
