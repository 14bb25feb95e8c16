"""JSON Schema (draft 2020-12) of each wire format, written from its marshmallow declaration.

Nothing here restates the format: every field type and validator the declarations use knows
its own fragment (``json_schema``), and a field this module cannot translate raises, so a new
kind of field cannot slip into the declaration without a schema.
"""

from __future__ import annotations

import typing as t

from marshmallow import Schema, fields, validate

from .base import Envelope, Format

__all__ = ["json_schema"]

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def json_schema(fmt: Format) -> dict[str, t.Any]:
    """The JSON Schema of *fmt*'s bodies."""
    schema = fmt.schema
    out: dict[str, t.Any] = {
        "$schema": DIALECT,
        "$id": f"https://receiver.invalid/schemas/{fmt.name}.json",
        "title": f"{fmt.name} webhook body",
        "description": (type(schema).__doc__ or "").strip().splitlines()[0]
        if type(schema).__doc__ else f"A {fmt.name} webhook body.",
    }
    out.update(_object(schema))
    if isinstance(schema, Envelope):
        types = schema.repository_types()
        data = out["properties"][schema.DATA_KEY]
        if types and "repository" not in data.get("required", ()):
            out["allOf"] = [{
                "if": {"properties": {schema.TYPE_KEY: {"enum": types}},
                       "required": [schema.TYPE_KEY]},
                "then": {"properties": {schema.DATA_KEY: {
                    "properties": {"repository": {"type": "object"}},
                    "required": ["repository"]}}},
            }]
    return out


def _object(schema: Schema) -> dict[str, t.Any]:
    properties = {}
    required = []
    for name, field in schema.fields.items():
        key = field.data_key or name
        properties[key] = _field(field)
        if field.required:
            required.append(key)
    out: dict[str, t.Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    return out


def _field(field: fields.Field) -> dict[str, t.Any]:
    if type(field) is fields.Raw and not field.validators:
        return {} if field.allow_none else {"not": {"type": "null"}}
    out = _base(field)
    for v in field.validators:
        fragment = _validator(v, field)
        clash = set(fragment) & set(out) - {"type"}
        if clash:  # two rules for one keyword: the schema would keep only the last
            raise TypeError(f"validators of {field!r} both set {sorted(clash)}")
        out.update(fragment)
    if field.allow_none:
        out = _nullable(out)
    return out


def _nullable(out: dict[str, t.Any]) -> dict[str, t.Any]:
    kind = out.get("type")
    if isinstance(kind, str):
        return {**out, "type": [kind, "null"]}
    if isinstance(kind, list):
        return {**out, "type": [*kind, "null"]}
    return {"anyOf": [out, {"type": "null"}]}


def _base(field: fields.Field) -> dict[str, t.Any]:
    own = getattr(field, "json_schema", None)
    if own is not None:
        return dict(own)
    if isinstance(field, fields.Nested):
        nested = field.schema
        return _object(nested)
    if isinstance(field, fields.List):
        return {"type": "array", "items": _field(field.inner)}
    if isinstance(field, fields.Dict):
        out: dict[str, t.Any] = {"type": "object"}
        if field.value_field is not None:
            out["additionalProperties"] = _field(field.value_field)
        return out
    if isinstance(field, fields.String):
        return {"type": "string"}
    raise TypeError(f"no JSON Schema for the field type {type(field).__name__}")


def _validator(v: t.Any, field: fields.Field) -> dict[str, t.Any]:
    own = getattr(v, "json_schema", None)
    if own is not None:
        return dict(own)
    if isinstance(v, validate.OneOf):
        return {"enum": list(v.choices)}
    if isinstance(v, validate.Length):
        array = isinstance(field, fields.List)
        out = {}
        if v.min is not None and v.min > 0:
            out["minItems" if array else "minLength"] = v.min
        if v.max is not None:
            out["maxItems" if array else "maxLength"] = v.max
        return out
    raise TypeError(f"no JSON Schema for the validator {v!r}")
