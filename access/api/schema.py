"""JSON Schema from Python types: the OpenAPI document's schemas are made from the TypedDicts the
handlers build their bodies as (``access.api.models``), so the document cannot drift from the code
and mypy checks every body against its model.

Covers what the models use: ``str``, ``int``, ``float``, ``bool``, ``None``, ``Literal``, unions,
``list``/``tuple``, ``dict[str, X]``, ``Any``, ``NotRequired``, nested TypedDicts (as ``$ref`` to
a component, named by the class, described by its docstring) and ``Annotated[X, keywords(...)]``,
which adds schema keywords (a pattern, a format, an enum).  Anything else is a ``TypeError`` when the
document is built, not a silently loose schema.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired, Required, Union, get_args, get_origin, get_type_hints

Schema = dict[str, Any]


@dataclass(frozen=True)
class Keywords:
    """Schema keywords for ``Annotated`` (hashable, as ``Annotated`` metadata in a union must be)."""

    items: tuple[tuple[str, Any], ...]

    def schema(self) -> Schema:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.items}


def keywords(**kw: Any) -> Keywords:
    return Keywords(tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in kw.items()))


_PRIMITIVES: dict[object, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_NONE = type(None)


def schema_of(tp: object, components: dict[str, Schema]) -> Schema:
    """The schema of ``tp``; TypedDicts are added to ``components`` and referenced."""
    origin = get_origin(tp)
    if tp is Any:
        return {}
    if tp is _NONE or tp is None:
        return {"type": "null"}
    if tp in _PRIMITIVES:
        return {"type": _PRIMITIVES[tp]}
    if origin is Annotated:
        base, *extras = get_args(tp)
        out = dict(schema_of(base, components))
        for extra in extras:
            if not isinstance(extra, Keywords):
                raise TypeError(f"Annotated metadata must be keywords(...), not {extra!r}")
            out.update(extra.schema())
        return out
    if origin is Literal:
        values = list(get_args(tp))
        kinds = {_PRIMITIVES.get(type(v), "null") for v in values}
        return {"type": kinds.pop(), "enum": values} if len(kinds) == 1 else {"enum": values}
    if origin is Union or origin is types.UnionType:
        return _union(get_args(tp), components)
    if origin in (list, tuple):
        args = get_args(tp)
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypeError(f"only tuple[X, ...] has a schema, not {tp}")
        return {"type": "array", "items": schema_of(args[0], components)}
    if origin is dict:
        key, value = get_args(tp)
        if key is not str:
            raise TypeError(f"JSON object keys are strings, not {key}")
        return {"type": "object", "additionalProperties": schema_of(value, components)}
    if isinstance(tp, type) and typing.is_typeddict(tp):
        return _typed_dict(tp, components)
    raise TypeError(f"no JSON schema for {tp!r}")


def _union(members: tuple[object, ...], components: dict[str, Schema]) -> Schema:
    parts = [schema_of(m, components) for m in members]
    # Primitive types and enums merge into one schema; anything else stays a choice.
    if all(set(p) == {"type"} for p in parts):
        return {"type": [p["type"] for p in parts]}
    if all(set(p) <= {"type", "enum"} for p in parts) and any("enum" in p for p in parts):
        values: list[object] = []
        for p in parts:
            if "enum" in p:
                values += p["enum"]
            elif p["type"] == "null":
                values.append(None)
            else:
                return {"anyOf": parts}
        return {"enum": values}
    return {"anyOf": parts}


def _typed_dict(tp: type, components: dict[str, Schema]) -> Schema:
    name = tp.__name__
    ref = {"$ref": f"#/components/schemas/{name}"}
    if name in components:
        return ref
    components[name] = {}  # placeholder: a model may refer to itself
    properties: dict[str, Schema] = {}
    required: list[str] = []
    for key, hint in get_type_hints(tp, include_extras=True).items():
        # Read from the hints, not ``__required_keys__``: with postponed annotations (PEP 563) Python
        # 3.11 cannot see NotRequired when the class is made and counts every key as required.
        needed = bool(tp.__total__)  # type: ignore[attr-defined]
        while get_origin(hint) in (NotRequired, Required):
            needed = get_origin(hint) is Required
            hint = get_args(hint)[0]
        properties[key] = schema_of(hint, components)
        if needed:
            required.append(key)
    schema: Schema = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    doc = inspect.getdoc(tp)
    if doc and doc != inspect.getdoc(dict):
        schema["description"] = " ".join(doc.split())
    components[name] = schema
    return ref
