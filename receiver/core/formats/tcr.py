"""TCR and Harbor 1.9/1.10: ``{"type", "occur_at", "event_data", "operator"}``.

TCR's trigger page documents ``pushImage``, ``deleteImage``, ``uploadChart`` and
``deleteChart``; Harbor 1.x adds the pulls and downloads, ``scanningCompleted``,
``scanningFailed`` and (1.10) ``projectQuota``. ``resources`` and ``repository`` are always
there. Times are Unix seconds.
"""

from __future__ import annotations

import typing as t

from marshmallow import fields, validate

from ..events import Event, QuotaEvent, RepositoryEvent
from . import fast
from .base import Envelope, Format
from .common import Bounded, RepositorySchema, ResourceSchema, _resources, build, event_data
from .fields import UnixTime

__all__ = ["TCR"]

#: Wire type to action. ``projectQuota`` is decided by its details text (see TcrFormat.event).
TYPES = {
    "pushImage": "pushImage",
    "pullImage": "pullImage",
    "deleteImage": "deleteImage",
    "uploadChart": "uploadChart",
    "downloadChart": "downloadChart",
    "deleteChart": "deleteChart",
    "scanningCompleted": "scanningCompleted",
    "scanningFailed": "scanningFailed",
    "projectQuota": "quotaExceed",
}


#: The media type Harbor 1.10 keys a scan summary by (2.x has its own).
REPORT_1_10 = "application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0"


def is_warning(details: str) -> bool:
    """Whether a ``projectQuota`` details text is a warning. Harbor 1.10 only ever sends the
    "... will exceed the configured upper limit ..." text of an exceeded quota; a warning
    reads "quota usage reach 85%: ..." (Harbor 2.x's words)."""
    text = details.lower()
    return "will exceed" not in text and ("reach" in text or "warn" in text)


class TcrResource(ResourceSchema):
    """A resource; its ``scan_overview`` is Harbor 1.10's map of report summaries, or 1.9's
    Clair object (whose ``severity`` is a number), so its values are left free."""

    scan_overview = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True),
                                allow_none=True)


class TcrEventData(Bounded):
    """``event_data``: both keys are always sent."""

    resources = fields.List(fields.Nested(TcrResource), required=True, validate=_resources)
    repository = fields.Nested(RepositorySchema, required=True)
    custom_attributes = fields.Dict(keys=fields.String(), values=fields.String(allow_none=True),
                                    allow_none=True)


class TcrEnvelope(Envelope):
    """The whole body, in TCR's order."""

    TYPES = TYPES

    type = fields.String(required=True, validate=validate.OneOf(list(TYPES)))
    occur_at = UnixTime(required=True)
    event_data = fields.Nested(TcrEventData, required=True)
    operator = fields.String(allow_none=True)


class TcrFormat(Format):
    name = "tcr"
    schema = TcrEnvelope()

    def wire_type(self, action: str) -> str:
        if action == "quotaWarning":
            return "projectQuota"
        return super().wire_type(action)

    def event(self, loaded: dict[str, t.Any], *, id: str, raw: t.Any) -> Event:
        action = TYPES[loaded["type"]]
        data = loaded["event_data"]
        if loaded["type"] == "projectQuota":
            details = (data.get("custom_attributes") or {}).get("Details") or ""
            action = "quotaWarning" if is_warning(details) else "quotaExceed"
        return build(action, self.name, loaded["occur_at"], loaded.get("operator"), data,
                     id=id, raw=raw)

    def wire(self, event: Event) -> dict[str, t.Any]:
        if not isinstance(event, RepositoryEvent):
            raise ValueError(f"the tcr format has no {event.action} event")
        data = event_data(event, report=REPORT_1_10)
        if isinstance(event, QuotaEvent):
            # One wire type for both levels: write a text that reads back as this level.
            details = event.details or ""
            warning = event.action == "quotaWarning"
            if is_warning(details) != warning:
                if warning:
                    details = ("quota usage reach the warning level: "
                               + details.replace("will exceed", "would exceed"))
                else:
                    details += " (this push will exceed the configured upper limit)"
                data["custom_attributes"] = {"Details": details}
        return {"type": self.wire_type(event.action), "occur_at": event.occurred_at,
                "event_data": data, "operator": event.operator}

    def fast(self, data: dict[str, t.Any], id: str) -> Event | None:
        return _FAST.load(data, id)


TCR = TcrFormat()
_FAST = fast.FastPath(TCR.schema, TCR.name, TYPES)
