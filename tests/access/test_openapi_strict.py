"""The OpenAPI document is exactly as strict as the server's parsers: what a documented pattern or enum
admits, the parser accepts, and the other way round (so generated requests reach the handlers, and a
request the document calls invalid is refused).  Its response schemas are made from the handlers'
TypedDicts."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from access.api import models, params
from access.api.cursor import CursorCodec
from access.api.openapi import document, upto
from access.api.problems import ApiProblem
from access.api.schema import keywords, schema_of
from access.ledger_anchor import KeptHead
from pipeline.query import AGGS, COUNTER_FIELDS, QUERYABLE_FIELDS
from seeds.vocabulary import ACTIONS, CATEGORIES, STORED_CATEGORIES

SERIES = "/api/v1/households/{household}/series/{category}"


def _param(path: str, name: str, method: str = "get") -> dict[str, Any]:
    for p in document()["paths"][path][method]["parameters"]:
        if p["name"] == name:
            schema: dict[str, Any] = p["schema"]
            return schema
    raise KeyError(name)


def _accepts(parse: Any, value: str) -> bool:
    try:
        parse(value)
    except ApiProblem:
        return False
    return True


def _matches(schema: dict[str, Any], value: str) -> bool:
    """The pattern as ECMA-262 reads it: for these patterns (classes, groups, counted repeats) Python
    agrees, except that Python's final ``$`` also matches before a trailing newline."""
    pattern: str = schema["pattern"]
    if pattern.endswith("$"):
        pattern = pattern[:-1] + r"\Z"
    return re.search(pattern, value) is not None


def test_enums_are_the_vocabularies() -> None:
    assert _param(SERIES, "category")["enum"] == list(STORED_CATEGORIES)
    assert _param(SERIES, "agg")["enum"] == list(AGGS)
    assert _param(SERIES, "format")["enum"] == list(params.FORMATS)
    assert set(_param("/api/v1/households/{household}/daily/{category}", "field")["enum"]) == COUNTER_FIELDS
    assert _param("/api/v1/explain", "category")["enum"] == list(CATEGORIES)
    assert _param("/api/v1/explain", "action")["enum"] == list(ACTIONS)
    limit = _param(SERIES, "limit")
    assert (limit["minimum"], limit["maximum"]) == (1, params.MAX_LIMIT)


_near = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.-,:+ \n²", max_size=70)


_counts = st.builds(lambda n, unit: f"{n}{unit}", st.integers(-5, 10**7), st.sampled_from("smhdx"))
_samples = st.sampled_from(["sps.pv_after_maintenance", "a.b", "1m", "31d", "32d", "744h", "745h", "raw"])


@settings(max_examples=800, deadline=None)
@given(value=st.one_of(_near, _counts, st.text(max_size=20), _samples))
def test_purpose_every_and_kept_patterns_are_the_parsers(value: str) -> None:
    assert _matches(_param(SERIES, "purpose"), value) == _accepts(params.purpose, value), value
    assert _matches(_param(SERIES, "X-Purpose"), value) == _accepts(params.purpose, value), value
    assert _matches(_param(SERIES, "every"), value) == _accepts(params.every, value), value
    kept = _param("/api/v1/households/{household}/ledger", "kept")
    assert _matches(kept, value) == (KeptHead.parse(value) is not None), value


@settings(max_examples=300, deadline=None)
@given(names=st.lists(st.sampled_from([*sorted(QUERYABLE_FIELDS), "rain", ""]), max_size=18))
def test_fields_pattern_is_the_parser_but_for_repeats(names: list[str]) -> None:
    value = ",".join(names)
    documented = _matches(_param(SERIES, "fields"), value)
    accepted = _accepts(lambda v: params.fields("pv", v), value)
    if accepted:
        assert documented, value
    if documented and len(set(names)) == len(names):
        assert accepted, value  # a field named twice is the one thing a pattern cannot say


def test_cursor_pattern_admits_every_signed_cursor() -> None:
    codec = CursorCodec(b"x" * 32)
    asked = ("h1", "pv", ("power_w",), "a", "b", None, "mean")
    for t in (946_684_800_000_000, 1_780_000_000_123_456, 7_258_118_399_999_999):
        for device in ("d", "inverter-1.a_b", "x" * 64):
            assert _matches(_param(SERIES, "cursor"), codec.encode(t, device, asked))


def test_response_schemas_come_from_the_handlers_models() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    ok = doc["paths"]["/api/v1/households/{household}/ledger"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/LedgerPage"}
    rebuilt: dict[str, Any] = {}
    schema_of(models.LedgerPage, rebuilt)
    assert (
        rebuilt["LedgerPage"] == schemas["LedgerPage"] and rebuilt["LedgerRecord"] == schemas["LedgerRecord"]
    )
    page = schemas["SeriesPage"]
    assert page["additionalProperties"] is False and "columns" in page["required"]
    assert page["properties"]["every"] == {"type": ["integer", "null"]}
    assert page["properties"]["agg"] == {"enum": [*AGGS, None]}
    # Keys a body may omit are not required, though PEP 563 hides NotRequired from the runtime.
    assert schemas["ConsentChange"]["required"] == ["suspended"]
    assert schemas["HouseholdItem"]["required"] == ["household", "roles"]


def test_the_generator_refuses_what_it_cannot_describe() -> None:
    import pytest

    with pytest.raises(TypeError):
        schema_of(set[str], {})
    with pytest.raises(TypeError):
        schema_of(tuple[int, str], {})
    assert schema_of(list[int], {}) == {"type": "array", "items": {"type": "integer"}}
    assert keywords(enum=["a"]).schema() == {"enum": ["a"]}


def test_upto_matches_exactly_one_to_the_limit() -> None:
    for limit in [*range(1, 120), 744, 1000, 1001, 44640, 999_999]:
        pattern = re.compile(f"^{upto(limit)}$")
        assert [n for n in range(limit + 40) if pattern.match(str(n))] == list(range(1, limit + 1)), limit
        assert not pattern.match(f"0{limit}")
