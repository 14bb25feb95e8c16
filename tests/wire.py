"""The wire contract's reference: the registry's documented body, and what 'same shape' means."""

from __future__ import annotations

import json
import pathlib
import typing as t

#: The push body from the registry's documentation, its "xxxx" digest redaction filled with hex.
SEED_PATH = pathlib.Path(__file__).parent / "data" / "seed_push.json"
SEED: dict[str, t.Any] = json.loads(SEED_PATH.read_text())


def shape(value: t.Any) -> t.Any:
    """Keys in order and value types, recursively: what 'the same wire format' means."""
    if isinstance(value, dict):
        return [(k, shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [shape(v) for v in value]
    return type(value).__name__
