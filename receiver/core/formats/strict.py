"""Drift detection: the keys of a body that its format's declaration does not know, at any
depth. The registry's payload grows between versions; a loader ignores what it does not
know, so a contract test asks this module instead (``receiver validate --strict``)."""

from __future__ import annotations

import typing as t

from marshmallow import Schema, fields

from .base import Format

__all__ = ["unknown_keys"]


def unknown_keys(fmt: Format, data: t.Any) -> list[str]:
    """The paths (``event_data.resources[0].size``) of every key of *data* that *fmt* does
    not declare, in the body's order. Values the declaration leaves free (a retention rule's
    ``params``) are not looked into."""
    found: list[str] = []
    _schema(fmt.schema, data, "", found)
    return found


def _schema(schema: Schema, data: t.Any, path: str, found: list[str]) -> None:
    if not isinstance(data, dict):
        return
    by_key = {field.data_key or name: field for name, field in schema.fields.items()}
    for key, value in data.items():
        where = f"{path}.{key}" if path else str(key)
        field = by_key.get(key)
        if field is None:
            found.append(where)
        else:
            _field(field, value, where, found)


def _field(field: fields.Field, value: t.Any, path: str, found: list[str]) -> None:
    if isinstance(field, fields.Nested):
        _schema(field.schema, value, path, found)
    elif isinstance(field, fields.List) and isinstance(value, list):
        for i, item in enumerate(value):
            _field(field.inner, item, f"{path}[{i}]", found)
    elif (isinstance(field, fields.Dict) and field.value_field is not None
          and isinstance(value, dict)):
        for key, item in value.items():
            _field(field.value_field, item, f"{path}[{key!r}]", found)
