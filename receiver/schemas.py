"""The wire format, written down once: marshmallow schemas between TCR's JSON body and Events.

``load_event`` is the receiver's way in (JSON-decoded body to a typed :class:`Event`);
``dump_event`` is the sender's way out, with every key of the registry's example present, in
the example's order. Nothing here does I/O or knows about Flask.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing as t
from datetime import datetime, timezone

from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_dump,
    pre_load,
    validate,
    validates_schema,
)

from .events import (
    ACTIONS,
    DIGEST,
    MAX_REPOSITORY,
    MAX_RESOURCES,
    MAX_TAG,
    Event,
    Repository,
    Resource,
    event_class,
)

__all__ = [
    "EventSchema",
    "UnknownAction",
    "ValidationError",
    "dump_event",
    "event_id",
    "load_event",
]

# Unix seconds from 1970 up to the last second of year 9999, the range datetime can hold.
_MAX_SECONDS = 253402300799


class UnknownAction(Exception):
    """A well-formed body whose ``type`` is not one of the six actions this version knows.

    :param action: the body's ``type``.
    :param data: the decoded body.
    """

    def __init__(self, action: str, data: t.Mapping[str, t.Any]) -> None:
        super().__init__(f"unknown event type {action!r}")
        self.action = action
        self.data = data


class UnixTime(fields.Field):
    """Whole Unix seconds on the wire; a timezone-aware UTC datetime in Python."""

    default_error_messages = {
        "invalid": "Not a valid Unix time: expected whole seconds as a number.",
        "range": "Unix time out of range.",
    }

    def _serialize(self, value: datetime | None, attr: str | None, obj: t.Any, **kwargs: t.Any) -> int | None:
        if value is None:
            return None
        return int(value.timestamp())

    def _deserialize(self, value: t.Any, attr: str | None, data: t.Any, **kwargs: t.Any) -> datetime:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
            raise self.make_error("invalid")
        if not 0 <= value <= _MAX_SECONDS:
            raise self.make_error("range")
        return datetime.fromtimestamp(int(value), tz=timezone.utc)


def is_digest(value: str) -> bool:
    """Whether *value* is ``sha256:`` and 64 lower-case hex digits."""
    return DIGEST.fullmatch(value) is not None


def _digest(value: str) -> None:
    if not is_digest(value):
        raise ValidationError("Not a valid digest: expected 'sha256:' and 64 lower-case hex digits.")


_name = validate.Length(min=1, max=MAX_REPOSITORY,
                        error="Must be 1 to {max} characters long.")
_tag = validate.Length(max=MAX_TAG, error="Longer than {max} characters.")


class _Base(Schema):
    class Meta:
        unknown = EXCLUDE  # the registry's payload grows; unknown keys are ignored


class ResourceSchema(_Base):
    """One entry of ``event_data.resources``."""

    digest = fields.String(allow_none=True, load_default=None, validate=_digest)
    tag = fields.String(allow_none=True, load_default=None, validate=_tag)
    resource_url = fields.String(required=True, attribute="url")

    @post_load
    def _make(self, data: dict[str, t.Any], **kwargs: t.Any) -> Resource:
        return Resource(**data)


class RepositorySchema(_Base):
    """``event_data.repository``."""

    date_created = UnixTime(allow_none=True, load_default=None, attribute="created_at")
    name = fields.String(required=True, validate=_name)
    namespace = fields.String(required=True, validate=_name)
    repo_full_name = fields.String(required=True, attribute="full_name")
    repo_type = fields.String(allow_none=True, load_default=None, attribute="type")

    @validates_schema
    def _full_name(self, data: dict[str, t.Any], **kwargs: t.Any) -> None:
        namespace, name, full = data.get("namespace"), data.get("name"), data.get("full_name")
        if None not in (namespace, name, full) and full != f"{namespace}/{name}":
            raise ValidationError(
                f"Must be 'namespace/name', i.e. {namespace + '/' + name!r}.", "repo_full_name"
            )

    @post_load
    def _make(self, data: dict[str, t.Any], **kwargs: t.Any) -> Repository:
        del data["full_name"]
        return Repository(**data)


class EventDataSchema(_Base):
    """``event_data``."""

    resources = fields.List(
        fields.Nested(ResourceSchema), required=True,
        validate=validate.Length(max=MAX_RESOURCES, error="More than {max} resources."),
    )
    repository = fields.Nested(RepositorySchema, required=True)

    @pre_load
    def _bounded(self, data: t.Any, **kwargs: t.Any) -> t.Any:
        # Refuse an oversized list before validating its items, so that a body of half a
        # million bad resources costs one check and one message, not half a million.
        if isinstance(data, dict):
            resources = data.get("resources")
            if isinstance(resources, list) and len(resources) > MAX_RESOURCES:
                raise ValidationError(f"More than {MAX_RESOURCES} resources.", "resources")
        return data


class EventSchema(_Base):
    """The whole body: ``{"type", "occur_at", "event_data", "operator"}``, in that order."""

    type = fields.String(required=True, validate=validate.OneOf(ACTIONS))
    occur_at = UnixTime(required=True)
    event_data = fields.Nested(EventDataSchema, required=True)
    operator = fields.String(allow_none=True, load_default=None)

    @pre_dump
    def _wire_shape(self, event: Event, **kwargs: t.Any) -> dict[str, t.Any]:
        return {
            "type": event.action,
            "occur_at": event.occurred_at,
            "event_data": {"resources": event.resources, "repository": event.repository},
            "operator": event.operator,
        }

    @post_load
    def _make(self, data: dict[str, t.Any], **kwargs: t.Any) -> Event:
        event_data = data["event_data"]
        return event_class(data["type"])(
            occurred_at=data["occur_at"],
            repository=event_data["repository"],
            resources=tuple(event_data["resources"]),
            operator=data["operator"],
        )


_schema = EventSchema()
_UTC = timezone.utc
_from_timestamp = datetime.fromtimestamp
_digest_match = DIGEST.fullmatch


def _fast_load(data: dict[str, t.Any], id: str) -> Event | None:
    """The common case of :class:`EventSchema` ``.load``, without marshmallow's per-field cost.

    Returns the very Event that the schema would, or ``None`` for anything even slightly
    unusual, which then goes through the schema (the authority, and the source of error
    messages). ``tests/test_schemas.py`` holds the two to the same result with hypothesis.
    """
    try:
        cls = event_class(data["type"])
        occur_at = data["occur_at"]
        event_data = data["event_data"]
        repo = event_data["repository"]
        resources = event_data["resources"]
        namespace, name = repo["namespace"], repo["name"]
        full_name, repo_type = repo["repo_full_name"], repo.get("repo_type")
        created = repo.get("date_created")
        operator = data.get("operator")
    except (KeyError, TypeError, AttributeError):
        return None
    if (
        type(occur_at) is not int
        or not 0 <= occur_at <= _MAX_SECONDS
        or type(resources) is not list
        or type(namespace) is not str
        or type(name) is not str
        or not namespace
        or not name
        or full_name != f"{namespace}/{name}"
        or len(full_name) > MAX_REPOSITORY
        or len(resources) > MAX_RESOURCES
        or not (repo_type is None or type(repo_type) is str)
        or not (operator is None or type(operator) is str)
        or not (created is None or (type(created) is int and 0 <= created <= _MAX_SECONDS))
    ):
        return None
    loaded = []
    for resource in resources:
        if type(resource) is not dict:
            return None
        digest, tag, url = resource.get("digest"), resource.get("tag"), resource.get("resource_url")
        if (
            type(url) is not str
            or not (tag is None or (type(tag) is str and len(tag) <= MAX_TAG))
            or not (digest is None or (type(digest) is str and _digest_match(digest)))
        ):
            return None
        loaded.append(Resource(digest, tag, url))
    return cls(
        occurred_at=_from_timestamp(occur_at, _UTC),
        repository=Repository(
            namespace, name, repo_type, None if created is None else _from_timestamp(created, _UTC)
        ),
        resources=tuple(loaded),
        operator=operator,
        id=id,
    )


def event_id(data: t.Any) -> str:
    """The stable id of a delivery's decoded body: 32 hex digits of the SHA-256 of its
    canonical JSON (keys sorted, no white space, UTF-8).

    The same body, re-sent byte for byte by a registry retry or a redelivery, gives the same
    id, and so does the same content written with other spacing or key order; any other
    content (another push, another second) gives another id.

    :raises RecursionError: *data* is nested too deeply to encode.
    """
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def load_event(data: t.Any) -> Event:
    """Validate a decoded JSON body into its typed :class:`Event`.

    :raises UnknownAction: *data* is an object whose ``type`` is a string naming no action
        this version knows (``scanningCompleted``, say): well-formed, but not for handlers.
    :raises ValidationError: anything else is wrong; ``.messages`` is keyed by field path.

    The event's ``id`` is :func:`event_id` of *data*.
    """
    if type(data) is dict:
        action = data.get("type")
        if isinstance(action, str) and action not in ACTIONS:
            raise UnknownAction(action, data)
        event = _fast_load(data, event_id(data))
        if event is not None:
            return event
    event = _schema.load(data)
    return dataclasses.replace(event, id=event_id(data))


def _fast_dump(event: Event) -> dict[str, t.Any]:
    """What :class:`EventSchema` ``.dump`` gives, built directly; ``tests/test_schemas.py``
    holds the two to the same result with hypothesis."""
    repo = event.repository
    created = repo.created_at
    return {
        "type": event.action,
        "occur_at": int(event.occurred_at.timestamp()),
        "event_data": {
            "resources": [
                {"digest": _text(r.digest), "tag": _text(r.tag), "resource_url": _text(r.url)}
                for r in event.resources
            ],
            "repository": {
                "date_created": None if created is None else int(created.timestamp()),
                "name": _text(repo.name),
                "namespace": _text(repo.namespace),
                "repo_full_name": _text(repo.full_name),
                "repo_type": _text(repo.type),
            },
        },
        "operator": _text(event.operator),
    }


def _text(value: t.Any) -> str | None:
    """As marshmallow's String field dumps: ``None`` stays, anything else becomes ``str``."""
    return value if value is None or type(value) is str else str(value)


def dump_event(event: Event) -> dict[str, t.Any]:
    """The wire body for *event*: every key of the registry's example, in its order."""
    return _fast_dump(event)
