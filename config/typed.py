"""Settings classes as the schema: a dataclass's field types say what each key of its section takes.

So a setting is declared once, with its type and default, and the check cannot drift from it:
``int``, ``float`` (an integer is accepted: ``max_delay_s = 2``), ``str``, ``bool`` (never taken for
a number), ``Literal[...]`` for closed choices, and ``X | None`` -- whose default ``None`` no longer
switches the check off (``influx_url = 42`` is refused).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Collection, Mapping
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from config.errors import ConfigError

T = TypeVar("T")


def _describe(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " or ".join(repr(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(annotation) if a is not type(None))
    if annotation is float:
        return "a number"
    if dict in (annotation, origin):
        return "a table"
    if list in (annotation, origin):
        return "an array"
    return getattr(annotation, "__name__", str(annotation))


def _fits(value: Any, annotation: Any) -> tuple[bool, Any]:
    """(whether ``value`` fits, the value as the setting holds it)."""
    origin = get_origin(annotation)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in get_args(annotation)), value
    if origin in (Union, types.UnionType):
        for option in get_args(annotation):
            if option is type(None):
                continue  # a file cannot say None: leaving the key out does
            ok, held = _fits(value, option)
            if ok:
                return True, held
        return False, value
    if annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, float(value)
        return False, value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if origin in (dict, list):  # a sub-table or array whose owner checks the inside
        return isinstance(value, origin), value
    if isinstance(annotation, type):
        return isinstance(value, annotation), value
    raise TypeError(f"settings of type {annotation!r} are not supported by the loader")


def check_value(
    value: Any,
    annotation: Any,
    *,
    file: str | None = None,
    section: str | None = None,
    key: str | None = None,
) -> Any:
    """``value`` as the setting holds it, or ``ConfigError`` saying what was expected."""
    ok, held = _fits(value, annotation)
    if not ok:
        raise ConfigError(
            f"expected {_describe(annotation)}, got {value!r}", file=file, section=section, key=key
        )
    return held


def setting_types(cls: type) -> dict[str, Any]:
    """The settable fields of a settings dataclass and their resolved types."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def settings(
    cls: type,
    table: Mapping[str, Any],
    *,
    file: str | None = None,
    section: str | None = None,
    exclude: Collection[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The keys of ``table`` checked against ``cls``'s fields (minus ``exclude``, plus ``extra``: keys
    of the section that are not fields, with their types): unknown keys are refused with the list of
    known ones, and every value with the type its field declares."""
    types_ = {k: v for k, v in setting_types(cls).items() if k not in exclude} | dict(extra or {})
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in types_:
            raise ConfigError(
                f"unknown setting; known: {', '.join(sorted(types_))}", file=file, section=section, key=key
            )
        out[key] = check_value(value, types_[key], file=file, section=section, key=key)
    return out


def build(
    cls: type[T],
    table: Mapping[str, Any],
    *,
    file: str | None = None,
    section: str | None = None,
    **fixed: Any,
) -> T:
    """``cls(**checked table, **fixed)``; a ``ConfigError`` from the class's own checks (ranges,
    combinations) gets the file and section it came from."""
    values = settings(cls, table, file=file, section=section, exclude=fixed)
    try:
        return cls(**values, **fixed)
    except ConfigError as exc:
        raise exc.located(file=file, section=section) from None
