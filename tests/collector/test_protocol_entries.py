"""Every registered class and model speaks the collector's vocabulary: each field it carries is a known
field in that field's unit, and each category is a series category."""

from __future__ import annotations

from collector.reading import FIELD_UNITS
from protocols.echonet.classes import CLASSES
from protocols.sunspec.models import MODELS
from seeds.vocabulary import SERIES_CATEGORIES


def test_echonet_fields_and_units_are_the_vocabularys() -> None:
    assert len(CLASSES) >= 7
    for cls in CLASSES.values():
        assert cls.category in SERIES_CATEGORIES, cls.name
        for prop in cls.props:
            if prop.field is not None:
                assert FIELD_UNITS.get(prop.field) == prop.unit, (cls.name, hex(prop.epc), prop.field)


def test_sunspec_fields_and_units_are_the_vocabularys() -> None:
    read = [m for m in MODELS.values() if m.emits]
    assert {m.id for m in read} >= {101, 103, 201, 203, 124, 802}
    for model in read:
        assert model.category in SERIES_CATEGORIES, model.id
        for emit in model.emits:
            assert FIELD_UNITS.get(emit.field) == emit.unit, (model.id, emit.point, emit.field)
