"""One field table: units, validation, store columns, queries and the policy's items all come from it."""

from __future__ import annotations

import dataclasses
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.reading import COUNTER_FIELDS, FIELD_UNITS, Reading
from pipeline import query
from pipeline.sqlite_schema import FIELD_COLUMNS, POINTS_SCHEMA
from pipeline.validate import Validator
from seeds.vocabulary import (
    FIELDS,
    SERIES_CATEGORIES,
    FieldSpec,
    category_items,
    check_table,
    item_of,
)


def test_every_package_reads_the_same_table() -> None:
    assert {f.name: f.unit for f in FIELDS} == FIELD_UNITS
    assert {f.name for f in FIELDS if f.counter} == COUNTER_FIELDS
    assert {f.name for f in FIELDS if f.type == "bool"} == query.BOOL_FIELDS
    assert {f.name for f in FIELDS if f.type == "text"} == query.TEXT_FIELDS
    assert {f.name for f in FIELDS} | {f"raw_{n}" for n in COUNTER_FIELDS} == query.QUERYABLE_FIELDS
    assert set(FIELD_COLUMNS) == query.QUERYABLE_FIELDS


def test_the_sqlite_schema_has_a_typed_column_per_stored_field(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.sqlite")
    conn.execute(POINTS_SCHEMA)
    types = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(points)")}
    conn.close()
    for spec in FIELDS:
        assert types[spec.name] == {"float": "REAL", "bool": "INTEGER", "text": "TEXT"}[spec.type]
    assert all(types[f"raw_{n}"] == "REAL" for n in COUNTER_FIELDS)


NOW = datetime(2026, 11, 26, tzinfo=UTC)


@pytest.mark.parametrize(
    "spec", [f for f in FIELDS if f.type == "float" and not f.derived], ids=lambda f: f.name
)
def test_validation_ranges_are_the_tables(spec: FieldSpec) -> None:
    v = Validator()
    category = spec.categories[0]
    low = max(spec.low, 0.0) if category in ("pv", "external_generation") else spec.low  # generation >= 0

    def fields_kept(value: float) -> set[str]:
        reading = Reading("hh-1", "d", category, NOW, {spec.name: value, "fault": False})
        return set(v.check(reading, NOW).fields)

    assert spec.name in fields_kept(low) and spec.name in fields_kept(spec.high)
    assert spec.name not in fields_kept(spec.high + abs(spec.high) * 0.01 + 1)


def test_category_items_list_what_each_series_carries() -> None:
    assert category_items("water") == ("volume_l_total",)
    assert category_items("electricity") == (
        "power_w",
        "import_wh_total",
        "export_wh_total",
        "current_a",
        "voltage_v",
        "frequency_hz",
        "generation_sold_w",
        "demand_procured_w",
        "baseline_w",
        "demand_reduction_w",
    )
    assert "soc_pct" in category_items("ev") and "connected" in category_items("ev")
    assert all(category_items(c) for c in SERIES_CATEGORIES)
    with pytest.raises(ValueError, match="not a series category"):
        category_items("identity")
    assert item_of("raw_import_wh_total") == "import_wh_total" and item_of("power_w") == "power_w"


def test_a_device_cannot_report_a_derived_item() -> None:
    """The negawatt items are the pipeline's computation (the terms make the contractor answer for them,
    from the metering): a reading that carries one loses that field, counted."""
    v = Validator()
    reading = Reading("hh-1", "meter", "electricity", NOW, {"power_w": 300.0, "baseline_w": 900.0})
    assert set(v.check(reading, NOW).fields) == {"power_w"}
    assert v.stats.dropped_fields["derived_field"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"categories": ("steam",)}, "not series"),
        ({"name": "Power"}, "lower-case ASCII identifier"),
        ({"name": "raw_power_w"}, "lower-case ASCII identifier"),
        ({"name": "power; DROP TABLE points"}, "lower-case ASCII identifier"),
        ({"counter": True}, "only counters, end in '_total'"),
        ({"wraps": True}, "only a counter wraps"),
        ({"low": 5.0, "high": 5.0}, "low must be below high"),
    ],
)
def test_a_bad_row_is_refused(change: dict[str, object], message: str) -> None:
    power = FIELDS[0]
    bad = dataclasses.replace(power, **change)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        check_table((*FIELDS[1:], bad))
    with pytest.raises(ValueError, match="listed twice"):
        check_table((*FIELDS, power))
