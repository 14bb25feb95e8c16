"""The receiver's hot path: the common artifact and chart bodies of the TCR and Harbor 2.x
formats, loaded without marshmallow's per-field cost.

It gives the very event the format's schema would, or ``None`` for anything even slightly
unusual, which then goes through the schema (the authority, and the source of error
messages). ``tests/test_formats.py`` holds the two to the same result on bodies that
hypothesis generates from each format's JSON Schema, itself written from the declaration,
so a field added to the declaration and not here fails that test.
"""

from __future__ import annotations

import re
import typing as t
from datetime import UTC, datetime

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

_PLAIN = frozenset(IMAGE_ACTIONS + CHART_ACTIONS)
_REPOSITORY_KEYS = frozenset(("date_created", "name", "namespace", "repo_full_name", "repo_type"))
_RESOURCE_KEYS = ("digest", "tag", "resource_url")
_OTHER_DATA_KEYS = ("replication", "retention", "scan", "custom_attributes")
_digest = re.compile(DIGEST_PATTERN).search
_UTC = UTC
_from_timestamp = datetime.fromtimestamp


def load(data: dict[str, t.Any], id: str, fmt: str, types: t.Mapping[str, str],
         resources_required: bool) -> Event | None:
    try:
        action = types.get(data["type"])
    except (KeyError, TypeError):
        return None
    if action not in _PLAIN:
        return None
    occur_at, operator, event_data = data.get("occur_at"), data.get("operator"), data.get("event_data")
    if (
        type(occur_at) is not int
        or not 0 <= occur_at <= MAX_SECONDS
        or not (operator is None or type(operator) is str)
        or type(event_data) is not dict
    ):
        return None
    repo, resources = event_data.get("repository"), event_data.get("resources")
    if resources is None and not resources_required and "resources" not in event_data:
        resources = []
    if type(repo) is not dict or type(resources) is not list or len(resources) > MAX_RESOURCES:
        return None
    for key in _OTHER_DATA_KEYS:
        if event_data.get(key) is not None:
            return None
    namespace, name = repo.get("namespace"), repo.get("name")
    full_name, repo_type, created = repo.get("repo_full_name"), repo.get("repo_type"), repo.get("date_created")
    if (
        type(namespace) is not str
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
        if type(resource) is not dict or resource.get("scan_overview") is not None:
            return None
        digest, tag, url = (resource.get(k) for k in _RESOURCE_KEYS)
        if (
            not (url is None or type(url) is str)
            or not (tag is None or (type(tag) is str and (len(tag) <= MAX_TAG or _digest(tag))))
            or not (digest is None or (type(digest) is str and _digest(digest)))
        ):
            return None
        loaded.append(_resource(resource))
    return event_class(action)(  # type: ignore[call-arg]
        occurred_at=_from_timestamp(occur_at, _UTC),
        operator=operator or "",
        id=id,
        format=fmt,
        raw=data,
        repository=Repository(
            namespace, name, repo_type, None if created is None else _from_timestamp(created, _UTC)
        ),
        resources=tuple(loaded),
    )
