"""Harbor 2.8+'s CloudEvents format (CloudEvents 1.0, JSON event format).

Structured mode, as Harbor sends it: ``Content-Type: application/cloudevents+json`` and the
attributes in the body, with ``data`` holding the default format's ``event_data``. Binary mode
(the attributes in ``ce-*`` headers, the body being ``data``) is accepted too: the receiver
turns it into the structured body with :func:`structured` before anything else, so the queue
keeps one shape.

We read the ``cloudevents`` SDK first; we do not depend on it: what a receiver needs here is
one loop over the headers, and its parser would add a dependency without checking anything
this schema does not.
"""

from __future__ import annotations

import typing as t
from urllib.parse import unquote

from marshmallow import fields, validate

from ..events import Event
from .base import Envelope, Format
from .common import EventData, build, event_data
from .fields import RFC3339

__all__ = ["CLOUDEVENTS", "CONTENT_TYPE", "is_binary", "structured"]

CONTENT_TYPE = "application/cloudevents+json"

TYPES = {
    "harbor.artifact.pushed": "pushImage",
    "harbor.artifact.pulled": "pullImage",
    "harbor.artifact.deleted": "deleteImage",
    "harbor.scan.completed": "scanningCompleted",
    "harbor.scan.failed": "scanningFailed",
    "harbor.scan.stopped": "scanningStopped",
    "harbor.quota.exceeded": "quotaExceed",
    "harbor.quota.warned": "quotaWarning",
    "harbor.replication.status.changed": "replication",
    "harbor.tag_retention.finished": "tagRetention",
}

_text = validate.Length(min=1, error="Must not be empty.")


class CloudEventEnvelope(Envelope):
    """The attributes Harbor sets, in the order its SDK writes them: the context attributes,
    ``data``, then the extensions ``operator`` and ``requestid``."""

    TYPES = TYPES
    DATA_KEY = "data"

    specversion = fields.String(required=True, validate=validate.OneOf(["1.0"]))
    id = fields.String(required=True, validate=_text)
    source = fields.String(required=True, validate=_text)
    type = fields.String(required=True, validate=validate.OneOf(list(TYPES)))
    datacontenttype = fields.String(allow_none=True)
    dataschema = fields.String(allow_none=True)  # optional in CloudEvents; Harbor sends none
    subject = fields.String(allow_none=True)  # likewise
    time = RFC3339(required=True)
    data = fields.Nested(EventData, required=True)
    operator = fields.String(allow_none=True)
    requestid = fields.String(allow_none=True)


class CloudEventsFormat(Format):
    name = "cloudevents"
    content_type = CONTENT_TYPE
    schema = CloudEventEnvelope()

    def event(self, loaded: dict[str, t.Any], *, id: str, raw: t.Any) -> Event:
        return build(TYPES[loaded["type"]], self.name, loaded["time"], loaded.get("operator"),
                     loaded["data"], id=id, raw=raw)

    def wire(self, event: Event) -> dict[str, t.Any]:
        """A new CloudEvent for *event*: a fresh ``id`` and ``requestid``, as Harbor makes
        one per delivery policy."""
        import uuid

        return {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/projects/1/webhook/policies/1",
            "type": self.wire_type(event.action),
            "datacontenttype": "application/json",
            "time": event.occurred_at,
            "data": event_data(event),
            "operator": event.operator,
            "requestid": str(uuid.uuid4()),
        }


CLOUDEVENTS = CloudEventsFormat()


# Headers: a mapping, or werkzeug's Headers (case-insensitive keys).
Headers = t.Mapping[str, str] | t.Any


def is_binary(headers: Headers) -> bool:
    """Whether a request carries a CloudEvent in binary mode: a ``ce-specversion`` header,
    and a content type other than ``application/cloudevents...``, which the HTTP binding
    reserves for structured mode (whatever ``ce-*`` headers come with it)."""
    if "ce-specversion" not in headers:
        return False
    content_type = headers.get("content-type") or ""
    return not content_type.strip().lower().startswith("application/cloudevents")


def structured(headers: Headers, data: t.Any, skip: t.Collection[str] = ()) -> dict[str, t.Any]:
    """The structured-mode body of a binary-mode CloudEvent: each ``ce-<name>`` header
    (percent-decoded, as the HTTP binding says) becomes attribute ``<name>``, the content
    type becomes ``datacontenttype``, and the decoded body becomes ``data``.

    :param skip: header names (lower-case) to leave out: the auth headers, whose values
        must not be queued.
    """
    out: dict[str, t.Any] = {}
    for key, value in headers.items():
        key = key.lower()
        if key.startswith("ce-") and len(key) > 3 and key not in skip:
            out[key[3:]] = unquote(value)
    content_type = headers.get("content-type")
    if content_type and "datacontenttype" not in out:
        out["datacontenttype"] = content_type
    out["data"] = data
    return out
