"""SeriesQuery refuses malformed requests up front and names the offending parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.query import QueryError, SeriesQuery

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make(**kw: object) -> SeriesQuery:
    args: dict[str, object] = {
        "households": ("hh-1",),
        "category": "pv",
        "fields": ("power_w",),
        "start": T0,
        "stop": T0 + timedelta(hours=1),
    }
    args.update(kw)
    return SeriesQuery(**args)  # type: ignore[arg-type]


def test_valid_query_exposes_exact_nanoseconds() -> None:
    q = make(every=timedelta(seconds=10), start=T0 + timedelta(microseconds=7))
    assert q.start_ns == 1_767_225_600_000_007_000
    assert q.every_ns == 10_000_000_000


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"households": ()}, "households"),
        ({"households": ["hh-1"]}, "households"),
        ({"households": ('hh") |> drop() //',)}, "households"),
        ({"households": ("x" * 65,)}, "households"),
        ({"households": ("a", "a")}, "households"),
        ({"category": "identity"}, "category"),
        ({"fields": ("watts",)}, "fields"),
        ({"fields": ()}, "fields"),
        ({"start": datetime(2026, 1, 1)}, "start"),
        ({"stop": T0}, "stop"),
        ({"every": timedelta(0)}, "every"),
        ({"every": timedelta(seconds=-1)}, "every"),
        ({"agg": "median"}, "agg"),
        ({"fields": ("state",), "every": timedelta(hours=1), "agg": "mean"}, "agg"),
        ({"devices": ()}, "devices"),
        ({"devices": ("inv 1",)}, "devices"),
    ],
)
def test_bad_parameters_are_named(kw: dict[str, object], field: str) -> None:
    with pytest.raises(QueryError) as err:
        make(**kw)
    assert err.value.field == field
    assert isinstance(err.value, ValueError)


def test_raw_counter_fields_are_queryable() -> None:
    assert make(fields=("raw_import_wh_total", "import_wh_total")).fields[0] == "raw_import_wh_total"
