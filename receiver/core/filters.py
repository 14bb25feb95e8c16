"""Filters: which resources of an event a namespace, repository and tag filter keeps.

The registry's rule semantics, shared by the sender's trigger rules and the receiver's
``on()`` handlers, so both sides select the same resources. See ``docs/patterns.md``.
"""

from __future__ import annotations

from .events import Event, RepositoryEvent, Resource
from .matcher import repository_fullmatch, tag_fullmatch

__all__ = ["select_resources"]


def select_resources(
    event: Event, *, namespace: str | None, repository: str | None, tag: str | None
) -> tuple[Resource, ...] | None:
    """The resources of *event* that a filter keeps, or ``None`` when it does not fire.

    The registry's rule semantics, shared by trigger rules and ``on()`` handlers: the
    namespace must be equal, the repository pattern must match the name relative to the
    namespace, and with a tag pattern at least one resource's tag must match; only those
    resources are kept. Empty or ``None`` filters match everything.
    """
    if not isinstance(event, RepositoryEvent):
        # Replication and retention events have no repository: only an empty filter fires.
        return () if namespace is None and not repository and not tag else None
    repo = event.repository
    if namespace is not None and repo.namespace != namespace:
        return None
    if repository and repository_fullmatch(repository)(repo.name) is None:
        return None
    if not tag:
        return event.resources
    fullmatch = tag_fullmatch(tag)
    # A resource without a tag (an artifact pushed by digest) never matches a tag pattern.
    matched = tuple(r for r in event.resources if r.tag and fullmatch(r.tag) is not None)
    return matched or None
