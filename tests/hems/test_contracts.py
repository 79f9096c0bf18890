"""The shared records every package relies on refuse what would corrupt data downstream."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from collector.reading import COUNTER_FIELDS, FIELD_UNITS, Reading
from seeds.vocabulary import CATEGORIES, RECORD_CATEGORIES, SERIES_CATEGORIES


def test_reading_requires_aware_timestamp() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Reading("hh-1", "solar", "pv", datetime(2026, 1, 1), {"power_w": 1.0})
    ok = Reading("hh-1", "solar", "pv", datetime(2026, 1, 1, tzinfo=UTC), {"power_w": 1.0})
    assert ok.quality == "ok"


def test_counter_fields_are_cumulative_units() -> None:
    assert {n for n in FIELD_UNITS if n.endswith("_total")} == COUNTER_FIELDS
    assert all(FIELD_UNITS[n] in {"Wh", "L"} for n in COUNTER_FIELDS)


def test_categories_do_not_overlap() -> None:
    assert not set(SERIES_CATEGORIES) & set(RECORD_CATEGORIES)
    assert len(set(CATEGORIES)) == len(CATEGORIES)
