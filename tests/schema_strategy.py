"""Hypothesis strategies for the bodies a JSON Schema allows, for the subset of JSON Schema
that receiver.core.formats.jsonschema writes.

The tests generate bodies from each format's JSON Schema (itself written from the format's
declaration) and hold the loader, the fast path and the dump to them. Every strategy ends
with the schema's own validator as a filter, so what it yields is valid whatever this
module gets wrong; what it gets right only makes the generation efficient.
"""

from __future__ import annotations

import copy
import typing as t

import jsonschema
from hypothesis import strategies as st

json_leaf = st.none() | st.booleans() | st.integers(-2, 2**40) | st.floats(allow_nan=False) \
    | st.text(max_size=8)
json_any = st.recursive(json_leaf, lambda c: st.lists(c, max_size=2) | st.dictionaries(
    st.text(max_size=4), c, max_size=2), max_leaves=4)

_TYPES = ("null", "boolean", "integer", "string", "array", "object")


def from_schema(schema: dict[str, t.Any], max_items: int = 3) -> st.SearchStrategy[t.Any]:
    """Instances of *schema* (a whole format's schema, with its ``allOf`` of if/then)."""
    check = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER).is_valid
    branches = [_strategy(branch, max_items) for branch in _split(schema)]
    return st.one_of(branches).filter(check)


def _split(schema: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    """The schema without its ``allOf`` of ``if: {properties: {K: {enum}}} then: ...``: one
    schema where K is in the enum and ``then`` holds, one where K is not in it."""
    base = {k: v for k, v in schema.items() if k not in ("allOf", "$schema", "$id")}
    for rule in schema.get("allOf", ()):
        (key, cond), = rule["if"]["properties"].items()
        enum = base["properties"][key]["enum"]
        inside = _merge(copy.deepcopy(base), rule["then"])
        inside["properties"][key] = {"enum": [v for v in enum if v in cond["enum"]]}
        outside = copy.deepcopy(base)
        outside["properties"][key] = {"enum": [v for v in enum if v not in cond["enum"]]}
        return [s for s in (inside, outside) if s["properties"][key]["enum"]]
    return [base]


def _merge(into: dict[str, t.Any], extra: dict[str, t.Any]) -> dict[str, t.Any]:
    for key, value in extra.items():
        if key == "properties":
            props = into.setdefault("properties", {})
            for name, sub in value.items():
                props[name] = _merge(props.get(name, {}), sub)
        elif key == "required":
            into["required"] = sorted(set(into.get("required", ())) | set(value))
        elif key == "type":
            have = into.get("type", list(_TYPES))
            have = [have] if isinstance(have, str) else have
            want = [value] if isinstance(value, str) else value
            into["type"] = [x for x in have if x in want]
        else:
            into[key] = value
    return into


def _strategy(schema: dict[str, t.Any], max_items: int) -> st.SearchStrategy[t.Any]:
    if "not" in schema:  # {"not": {"type": "null"}}: anything but null
        return json_any.filter(lambda v: v is not None)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        return st.one_of([_strategy(_merge(copy.deepcopy(rest), branch), max_items)
                          for branch in schema["anyOf"]])
    kinds = schema.get("type")
    if kinds is None:
        return json_any
    if isinstance(kinds, list):
        return st.one_of([_strategy({**schema, "type": kind}, max_items) for kind in kinds])
    if kinds == "null":
        return st.none()
    if kinds == "boolean":
        return st.booleans()
    if kinds == "integer":
        return st.integers(schema.get("minimum", -(2**40)), schema.get("maximum", 2**40))
    if kinds == "string":
        return _string(schema)
    if kinds == "array":
        items = _strategy(schema.get("items", {}), max_items)
        return st.lists(items, min_size=schema.get("minItems", 0),
                        max_size=min(schema.get("maxItems", max_items), max_items))
    if kinds == "object":
        return _object(schema, max_items)
    raise ValueError(f"no strategy for {schema!r}")


def _string(schema: dict[str, t.Any]) -> st.SearchStrategy[str]:
    low, high = schema.get("minLength", 0), schema.get("maxLength", 40)
    if "pattern" in schema:
        strategy = st.from_regex(schema["pattern"])
        return strategy.filter(lambda s: low <= len(s) <= high)
    return st.text(min_size=low, max_size=min(high, 40))


def _object(schema: dict[str, t.Any], max_items: int) -> st.SearchStrategy[dict[str, t.Any]]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    fixed = st.fixed_dictionaries(
        {k: _strategy(v, max_items) for k, v in properties.items() if k in required},
        optional={k: _strategy(v, max_items) for k, v in properties.items() if k not in required},
    )
    if "additionalProperties" in schema:
        extra = st.dictionaries(st.text(max_size=8).filter(lambda k: k not in properties),
                                _strategy(schema["additionalProperties"], max_items),
                                max_size=max_items)
    else:  # unknown keys are allowed, and ignored
        extra = st.dictionaries(st.text(min_size=1, max_size=6).filter(
            lambda k: k not in properties), json_any, max_size=1)
    return st.tuples(fixed, extra).map(lambda pair: {**pair[1], **pair[0]})
