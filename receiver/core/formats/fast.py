"""The receiver's hot path: the common artifact and chart bodies of the TCR and Harbor 2.x
formats, loaded without marshmallow's per-field cost.

It gives the very event the format's schema would, or ``None`` for anything even slightly
unusual, which then goes through the schema (the authority, and the source of error
messages). It checks a few keys by hand and reads every other key from the declaration:
a body holding any declared key it does not check (``scan_overview``, a field added
tomorrow) goes through the schema, and a declaration that requires such a key turns the
fast path off. ``tests/test_formats.py`` holds the two to the same result.
"""

from __future__ import annotations

import re
import typing as t
from datetime import datetime, timezone

from marshmallow import Schema, fields

from ..events import (
    CHART_ACTIONS,
    IMAGE_ACTIONS,
    MAX_REPOSITORY,
    MAX_RESOURCES,
    MAX_TAG,
    Event,
    Repository,
    event_class,
)
from .common import DIGEST_PATTERN, _resource
from .fields import MAX_SECONDS

__all__ = ["FastPath"]

_PLAIN = frozenset(IMAGE_ACTIONS + CHART_ACTIONS)
_digest = re.compile(DIGEST_PATTERN).search
_from_timestamp = datetime.fromtimestamp
_UTC = timezone.utc

#: The keys of each part of a body that the fast path checks itself.
CHECKED = {
    "envelope": ("type", "occur_at", "operator", "event_data"),
    "event_data": ("resources", "repository"),
    "repository": ("date_created", "name", "namespace", "repo_full_name", "repo_type"),
    "resource": ("digest", "tag", "resource_url"),
}


def _nested(field: fields.Field) -> Schema:
    if isinstance(field, fields.List):
        field = field.inner
    assert isinstance(field, fields.Nested)
    return field.schema


class FastPath:
    """The fast path of one format, built from its envelope schema."""

    def __init__(self, envelope: Schema, fmt: str, types: t.Mapping[str, str]) -> None:
        self.fmt = fmt
        self.types = types
        event_data = _nested(envelope.fields["event_data"])
        self.parts = {
            "envelope": envelope,
            "event_data": event_data,
            "repository": _nested(event_data.fields["repository"]),
            "resource": _nested(event_data.fields["resources"]),
        }
        #: Per part, the declared keys not in CHECKED: present in a body, they send it to
        #: the schema.
        self.deferred = {
            part: tuple(k for k in _keys(schema) if k not in CHECKED[part])
            for part, schema in self.parts.items()
        }
        self.resources_required = event_data.fields["resources"].required
        # A key the fast path does not check but the declaration requires: no fast path.
        self.enabled = not any(
            f.required for part, schema in self.parts.items() for k, f in _fields(schema)
            if k in self.deferred[part]
        )

    def load(self, data: dict[str, t.Any], id: str) -> Event | None:
        if not self.enabled:
            return None
        try:
            action = self.types.get(data["type"])
        except (KeyError, TypeError):
            return None
        if action not in _PLAIN or self._defer(data, "envelope"):
            return None
        occur_at, operator = data.get("occur_at"), data.get("operator")
        event_data = data.get("event_data")
        if (
            type(occur_at) is not int
            or not 0 <= occur_at <= MAX_SECONDS
            or not (operator is None or type(operator) is str)
            or type(event_data) is not dict
            or self._defer(event_data, "event_data")
        ):
            return None
        repo, resources = event_data.get("repository"), event_data.get("resources")
        if resources is None and not self.resources_required and "resources" not in event_data:
            resources = []
        if type(repo) is not dict or type(resources) is not list or len(resources) > MAX_RESOURCES:
            return None
        namespace, name = repo.get("namespace"), repo.get("name")
        full_name, repo_type = repo.get("repo_full_name"), repo.get("repo_type")
        created = repo.get("date_created")
        if (
            self._defer(repo, "repository")
            or type(namespace) is not str
            or type(name) is not str
            or not 0 < len(namespace) <= MAX_REPOSITORY
            or not 0 < len(name) <= MAX_REPOSITORY
            or not (full_name is None or type(full_name) is str)
            or not (repo_type is None or type(repo_type) is str)
            or not (created is None or (type(created) is int and 0 <= created <= MAX_SECONDS))
        ):
            return None
        loaded = []
        for resource in resources:
            if type(resource) is not dict or self._defer(resource, "resource"):
                return None
            digest, tag = resource.get("digest"), resource.get("tag")
            url = resource.get("resource_url")
            if (
                not (url is None or type(url) is str)
                or not (
                    tag is None or (type(tag) is str and (len(tag) <= MAX_TAG or _digest(tag)))
                )
                or not (digest is None or (type(digest) is str and _digest(digest)))
            ):
                return None
            loaded.append(_resource(resource))
        return event_class(action)(  # type: ignore[call-arg]
            occurred_at=_from_timestamp(occur_at, _UTC),
            operator=operator or "",
            id=id,
            format=self.fmt,
            raw=data,
            repository=Repository(
                namespace, name, repo_type,
                None if created is None else _from_timestamp(created, _UTC),
            ),
            resources=tuple(loaded),
        )

    def _defer(self, data: dict[str, t.Any], part: str) -> bool:
        for key in self.deferred[part]:
            if key in data:
                return True
        return False


def _fields(schema: Schema) -> t.Iterator[tuple[str, fields.Field]]:
    for name, field in schema.fields.items():
        yield field.data_key or name, field


def _keys(schema: Schema) -> list[str]:
    return [key for key, _ in _fields(schema)]
