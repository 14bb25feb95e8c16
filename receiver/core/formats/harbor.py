"""Harbor 2.x's default format: the 1.10 envelope with upper-case types, in Harbor's order
``{"type", "occur_at", "operator", "event_data"}``; anything inside ``event_data`` may be
missing (replication and retention have no resources or repository)."""

from __future__ import annotations

import typing as t

from marshmallow import fields, validate

from ..events import Event
from . import fast
from .base import Envelope, Format
from .common import EventData, build, event_data
from .fields import UnixTime

__all__ = ["HARBOR"]

TYPES = {
    "PUSH_ARTIFACT": "pushImage",
    "PULL_ARTIFACT": "pullImage",
    "DELETE_ARTIFACT": "deleteImage",
    "UPLOAD_CHART": "uploadChart",
    "DOWNLOAD_CHART": "downloadChart",
    "DELETE_CHART": "deleteChart",
    "SCANNING_COMPLETED": "scanningCompleted",
    "SCANNING_FAILED": "scanningFailed",
    "SCANNING_STOPPED": "scanningStopped",
    "QUOTA_EXCEED": "quotaExceed",
    "QUOTA_WARNING": "quotaWarning",
    "REPLICATION": "replication",
    "TAG_RETENTION": "tagRetention",
}


class HarborEnvelope(Envelope):
    TYPES = TYPES

    type = fields.String(required=True, validate=validate.OneOf(list(TYPES)))
    occur_at = UnixTime(required=True)
    operator = fields.String(allow_none=True)
    event_data = fields.Nested(EventData, required=True)


class HarborFormat(Format):
    name = "harbor"
    schema = HarborEnvelope()

    def event(self, loaded: dict[str, t.Any], *, id: str, raw: t.Any) -> Event:
        return build(TYPES[loaded["type"]], self.name, loaded["occur_at"],
                     loaded.get("operator"), loaded["event_data"], id=id, raw=raw)

    def wire(self, event: Event) -> dict[str, t.Any]:
        return {"type": self.wire_type(event.action), "occur_at": event.occurred_at,
                "operator": event.operator, "event_data": event_data(event)}

    def fast(self, data: dict[str, t.Any], id: str) -> Event | None:
        return _FAST.load(data, id)


HARBOR = HarborFormat()
_FAST = fast.FastPath(HARBOR.schema, HARBOR.name, TYPES)
