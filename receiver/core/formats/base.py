"""A wire format: its envelope declaration, its type names, and the way to and from events."""

from __future__ import annotations

import typing as t

from marshmallow import ValidationError, validates_schema

from ..events import REPOSITORY_ACTIONS, Event
from .common import Wire

__all__ = ["Envelope", "Format", "UnknownType"]


class UnknownType(Exception):
    """A well-formed body whose type no format this version knows names.

    :param type: the body's type; :param data: the decoded body; :param format: the format
        the body is in.
    """

    def __init__(self, type: str, data: t.Any, format: str) -> None:
        super().__init__(f"unknown event type {type!r}")
        self.type = type
        #: The same as ``type`` (the name this exception had before the formats).
        self.action = type
        self.data = data
        self.format = format


class Envelope(Wire):
    """A format's whole body. ``TYPES`` maps each wire type to its action; an event type
    whose action has a repository requires ``<DATA>.repository`` (declared here once, for
    loading and for the JSON Schema alike)."""

    TYPES: t.ClassVar[dict[str, str]] = {}
    TYPE_KEY: t.ClassVar[str] = "type"
    DATA_KEY: t.ClassVar[str] = "event_data"

    @classmethod
    def repository_types(cls) -> list[str]:
        """The wire types whose data must hold a repository."""
        return [w for w, a in cls.TYPES.items() if a in REPOSITORY_ACTIONS]

    @validates_schema(skip_on_field_errors=True)
    def _repository(self, data: dict[str, t.Any], **kwargs: t.Any) -> None:
        if (data.get(self.TYPE_KEY) in self.repository_types()
                and (data.get(self.DATA_KEY) or {}).get("repository") is None):
            raise ValidationError({"repository": ["Missing data for required field."]},
                                      self.DATA_KEY)


class Format:
    """One wire format: ``name``, the envelope schema that declares it, and the conversions.

    Subclasses implement :meth:`event` (loaded envelope to typed event) and :meth:`wire`
    (typed event to the envelope's python shape, which the schema dumps).
    """

    name: str = ""
    content_type: str = "application/json"
    schema: Envelope

    @property
    def types(self) -> dict[str, str]:
        """Wire type to action."""
        return self.schema.TYPES

    def wire_type(self, action: str) -> str:
        """The wire type for *action*; ValueError if this format cannot carry it."""
        for wire, act in self.types.items():
            if act == action:
                return wire
        raise ValueError(f"the {self.name} format has no {action} event")

    def load(self, data: t.Any, id: str = "") -> Event:
        """The typed event of a decoded body; ValidationError names what is wrong."""
        loaded = self.schema.load(data)
        return self.event(loaded, id=id, raw=data)

    def dump(self, event: Event) -> dict[str, t.Any]:
        """The body this format sends for *event*; ValueError if it cannot carry it."""
        return t.cast(dict[str, t.Any], self.schema.dump(self.wire(event)))

    def event(self, loaded: dict[str, t.Any], *, id: str, raw: t.Any) -> Event:
        raise NotImplementedError

    def wire(self, event: Event) -> dict[str, t.Any]:
        raise NotImplementedError

    def fast(self, data: dict[str, t.Any], id: str) -> Event | None:
        """The event :meth:`load` gives, for the common case, or ``None`` to use :meth:`load`."""
        return None


