"""The wire formats of the registry family, each declared once (see docs/design.md):

- ``tcr``: TCR and Harbor 1.9/1.10 (:mod:`.tcr`);
- ``harbor``: Harbor 2.x's default format (:mod:`.harbor`);
- ``cloudevents``: Harbor 2.8+'s CloudEvents format (:mod:`.cloudevents`).

A body's format is detected from the body itself: ``specversion`` means CloudEvents, and the
``type`` names the rest.
"""

from __future__ import annotations

import typing as t

from .base import Format, UnknownType
from .cloudevents import CLOUDEVENTS
from .harbor import HARBOR
from .tcr import TCR

__all__ = ["FORMATS", "Format", "UnknownType", "detect", "get", "guess"]

#: Every format by name, TCR first (the sender's default).
FORMATS: dict[str, Format] = {f.name: f for f in (TCR, HARBOR, CLOUDEVENTS)}


def get(name: str) -> Format:
    """The format called *name*; ValueError naming the choices for another."""
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown format {name!r}; expected one of: {', '.join(FORMATS)}") from None


def detect(data: t.Any) -> Format | None:
    """The format of a decoded body, or ``None`` when no format knows its type."""
    if type(data) is not dict:
        return None
    if "specversion" in data:
        return CLOUDEVENTS
    type_ = data.get("type")
    if type(type_) is not str:
        return None
    if type_ in TCR.types:
        return TCR
    if type_ in HARBOR.types:
        return HARBOR
    return None


def guess(data: dict[str, t.Any]) -> str:
    """The format a body of an unknown type is most likely in, for messages and logs."""
    if "specversion" in data:
        return "cloudevents"
    type_ = data.get("type")
    return "harbor" if isinstance(type_, str) and type_.isupper() else "tcr"
