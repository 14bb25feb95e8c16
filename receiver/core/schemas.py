"""The receiver's and sender's way between bodies and events, in every wire format.

``load_event`` is the receiver's way in (a JSON-decoded body to a typed :class:`Event`,
whatever format it is in); ``dump_event`` is the sender's way out. The formats themselves are
declared in :mod:`receiver.core.formats`. Nothing here does I/O or knows about Flask.
"""

from __future__ import annotations

import hashlib
import json
import typing as t

from marshmallow import ValidationError

from .events import Event
from .formats import FORMATS, UnknownType, detect, get, guess
from .formats.tcr import TcrEnvelope

__all__ = [
    "EventSchema",
    "UnknownAction",
    "ValidationError",
    "dump_event",
    "event_id",
    "load_event",
]

#: A well-formed body whose ``type`` no format knows (``UnknownType``, by its older name).
UnknownAction = UnknownType
#: The TCR format's schema (by its older name); each format's is ``FORMATS[name].schema``.
EventSchema = TcrEnvelope


def event_id(data: t.Any) -> str:
    """The stable id of a delivery's decoded body: 32 hex digits of the SHA-256 of its
    canonical JSON (keys sorted, no white space, UTF-8).

    The same body, re-sent byte for byte by a registry retry or a redelivery, gives the same
    id, and so does the same content written with other spacing or key order; any other
    content (another push, another second) gives another id.

    :raises RecursionError: *data* is nested too deeply to encode.
    """
    text = _canonical(data)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


#: One encoder for every id (``json.dumps`` with arguments makes a new one per call). A
#: decoded body has no cycles to check for; one nested too deeply raises RecursionError.
_canonical = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, check_circular=False
).encode


def load_event(data: t.Any, format: str = "auto") -> Event:
    """Validate a decoded JSON body into its typed :class:`Event`.

    :param format: ``"auto"`` (detect it from the body), or ``"tcr"``, ``"harbor"`` or
        ``"cloudevents"`` to accept that format only.
    :raises UnknownAction: in ``auto``, an object whose ``type`` is a string that no format
        knows: well-formed, but not for handlers.
    :raises ValidationError: anything else is wrong; ``.messages`` is keyed by field path.
    :raises ValueError: an unknown *format*.

    The event's ``id`` is :func:`event_id` of *data*, its ``raw`` is *data*.
    """
    if format == "auto":
        fmt = detect(data)
        if fmt is None:
            if type(data) is dict:
                kind = data.get("type")
                if isinstance(kind, str):
                    raise UnknownType(kind, data, guess(data))
            fmt = FORMATS["tcr"]  # its messages name what a body lacks
        elif fmt.name == "cloudevents" and isinstance(data.get("type"), str) \
                and data["type"] not in fmt.types:
            raise UnknownType(data["type"], data, fmt.name)
    else:
        fmt = get(format)
    if type(data) is not dict:
        raise ValidationError({"_schema": ["The body must be a JSON object."]})
    id = event_id(data)
    event = fmt.fast(data, id)
    if event is not None:
        return event
    return fmt.load(data, id)


def dump_event(event: Event, format: str | None = None) -> dict[str, t.Any]:
    """The body *format* (default: the event's own, ``tcr`` for a built one) sends for
    *event*, in the registry's key order, with what it leaves out (``omitempty``) left out.

    :raises ValueError: the format has no such event (``tcr`` has no replication).
    """
    return get(format or event.format).dump(event)
