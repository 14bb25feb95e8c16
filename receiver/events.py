"""The typed events: frozen dataclasses for what the registry reports.

This module owns the shape of an event in Python. It knows nothing of JSON, Flask or
marshmallow; :mod:`receiver.schemas` maps the wire format onto these classes.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
import typing as t
from datetime import datetime, timezone

__all__ = [
    "ACTIONS",
    "CHART_ACTIONS",
    "MAX_REPOSITORY",
    "MAX_RESOURCES",
    "MAX_TAG",
    "IMAGE_ACTIONS",
    "DeleteChart",
    "DeleteImage",
    "DownloadChart",
    "Event",
    "PullImage",
    "PushImage",
    "Repository",
    "Resource",
    "UploadChart",
    "build_event",
    "event_class",
]


@dataclasses.dataclass(frozen=True)
class Resource:
    """One image tag or chart version that the event is about.

    :param digest: ``sha256:`` + 64 hex digits for images; ``None`` for charts.
    :param tag: the image tag or chart version.
    :param url: ``host/ns/repo:tag`` for images (no scheme); the ``.tgz`` URL for charts.
    """

    digest: str | None
    tag: str | None
    url: str

    @property
    def digest_reference(self) -> str | None:
        """The image pinned by digest, ``host/ns/repo@sha256:...``, for a deploy to pull.

        ``None`` when there is no digest (charts). Pulling by digest is immune to the tag
        being moved between the event and the deploy.
        """
        if self.digest is None:
            return None
        base = self.url
        if self.tag and base.endswith(":" + self.tag):
            base = base[: -len(self.tag) - 1]
        return f"{base}@{self.digest}"


@dataclasses.dataclass(frozen=True)
class Repository:
    """The repository an event happened in.

    :param namespace: the TCR namespace (Harbor project), e.g. ``public``.
    :param name: the name relative to the namespace; may contain ``/``.
    :param type: ``public`` or ``private`` as the registry reports it, or ``None``.
    :param created_at: when the repository was created; ``None`` when the registry omits it
        (deletes, charts).
    """

    namespace: str
    name: str
    type: str | None = None
    created_at: datetime | None = None

    @property
    def full_name(self) -> str:
        """``namespace/name``, as the wire's ``repo_full_name``."""
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class Event:
    """Something that happened in the registry. Each action has its own subclass.

    :param occurred_at: when it happened, timezone-aware UTC.
    :param repository: where it happened.
    :param resources: the tags or chart versions concerned; a push or delete may carry several.
    :param operator: who did it (an account id), or ``None``.
    :param id: a stable id of the delivery's content (see :func:`receiver.schemas.event_id`):
        the same body gives the same id, so handlers can use it as an idempotency key.
        Empty for an event that was built rather than received.
    """

    #: The action's wire name, e.g. ``"pushImage"``.
    action: t.ClassVar[str] = ""

    occurred_at: datetime
    repository: Repository
    resources: tuple[Resource, ...] = ()
    operator: str | None = None
    id: str = dataclasses.field(default="", compare=False)

    @property
    def tags(self) -> tuple[str, ...]:
        """The tags (chart versions) of the resources, in order, without empty ones."""
        return tuple(r.tag for r in self.resources if r.tag)

    def with_resources(self, resources: t.Iterable[Resource]) -> Event:
        """This event carrying only *resources*: itself when they are all it has."""
        resources = tuple(resources)
        if resources == self.resources:
            return self
        return dataclasses.replace(self, resources=resources)


@dataclasses.dataclass(frozen=True)
class PushImage(Event):
    """An image was pushed."""

    action = "pushImage"


@dataclasses.dataclass(frozen=True)
class PullImage(Event):
    """An image was pulled."""

    action = "pullImage"


@dataclasses.dataclass(frozen=True)
class DeleteImage(Event):
    """One or more image tags were deleted."""

    action = "deleteImage"


@dataclasses.dataclass(frozen=True)
class UploadChart(Event):
    """A Helm chart version was uploaded."""

    action = "uploadChart"


@dataclasses.dataclass(frozen=True)
class DownloadChart(Event):
    """A Helm chart version was downloaded."""

    action = "downloadChart"


@dataclasses.dataclass(frozen=True)
class DeleteChart(Event):
    """One or more Helm chart versions were deleted (a whole chart lists every version)."""

    action = "deleteChart"


_CLASSES: dict[str, type[Event]] = {
    cls.action: cls
    for cls in (PushImage, PullImage, DeleteImage, UploadChart, DownloadChart, DeleteChart)
}

#: Every action's wire name, in the order the registry lists them.
ACTIONS: tuple[str, ...] = tuple(_CLASSES)
IMAGE_ACTIONS: tuple[str, ...] = ("pushImage", "pullImage", "deleteImage")
CHART_ACTIONS: tuple[str, ...] = ("uploadChart", "downloadChart", "deleteChart")


def event_class(action: str) -> type[Event]:
    """The event class for an action's wire name; raises KeyError for an unknown one."""
    return _CLASSES[action]


#: The longest tag or chart version accepted (the OCI distribution spec's limit for tags).
MAX_TAG = 128
#: The longest repository full name (``namespace/name``) accepted, as Docker's distribution.
MAX_REPOSITORY = 255
#: The most resources one event may carry; a push or delete lists a few, not thousands.
MAX_RESOURCES = 1000

#: An image digest as the registry sends it.
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

# The OCI distribution names that build_event accepts.
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"\w[\w.-]{0,127}", re.ASCII)
_VERSION = re.compile(r"\w[\w.+-]{0,127}", re.ASCII)  # chart versions are SemVer: '+' allowed
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?")


def build_event(
    action: str,
    full_name: str,
    tags: t.Sequence[str] = ("latest",),
    *,
    digest: str | None = None,
    operator: str | None = None,
    host: str = "registry.example.com",
    repo_type: str = "private",
    occurred_at: datetime | None = None,
) -> Event:
    """An event as the registry would make it, for tests, examples and ``receiver emit``.

    :param full_name: ``namespace/name``; the name may contain ``/``.
    :param tags: image tags or chart versions, one resource each.
    :param digest: for images, the digest of every resource; a random one per resource
        when not given. Charts have none.
    :raises ValueError: an unknown action or a name that is not ``namespace/name``.
    """
    cls = _CLASSES.get(action)
    if cls is None:
        raise ValueError(f"unknown action {action!r}; expected one of: {', '.join(ACTIONS)}")
    if isinstance(tags, str):
        tags = (tags,)  # one tag, not its characters
    if digest is not None and action in CHART_ACTIONS:
        raise ValueError("charts have no digest; leave out the digest")
    if digest is not None and not DIGEST.fullmatch(digest):
        raise ValueError(f"digest {digest!r} must be 'sha256:' and 64 lower-case hex digits")
    namespace, sep, name = full_name.partition("/")
    if not sep or not namespace or not name:
        raise ValueError(f"repository must be 'namespace/name', got {full_name!r}")
    if len(full_name) > MAX_REPOSITORY:
        raise ValueError(f"repository is longer than {MAX_REPOSITORY} characters")
    for component in full_name.split("/"):
        if not _COMPONENT.fullmatch(component):
            raise ValueError(
                f"repository {full_name!r} is not a valid name: each '/'-separated part is "
                "lower-case letters and digits, joined by '.', '_', '__' or '-'"
            )
    chart = action in CHART_ACTIONS
    tag_re = _VERSION if chart else _TAG
    for tag in tags:
        if not tag_re.fullmatch(tag):
            what = "chart version" if chart else "tag"
            raise ValueError(
                f"{what} {tag!r} is not valid: letters, digits, '_', '.', '-'"
                + (", '+'" if chart else "") + ", at most 128, not starting with '.' or '-'"
            )
    if not _HOST.fullmatch(host):
        raise ValueError(f"host {host!r} is not a valid registry host[:port]")
    now = (occurred_at or datetime.now(timezone.utc)).replace(microsecond=0)
    resources = []
    for tag in tags:
        if chart:
            url = f"https://{host}/chartrepo/{namespace}/charts/{name}-{tag}.tgz"
            resources.append(Resource(digest=None, tag=tag, url=url))
        else:
            d = digest or "sha256:" + secrets.token_hex(32)
            resources.append(Resource(digest=d, tag=tag, url=f"{host}/{full_name}:{tag}"))
    # The registry omits date_created for charts and for deleted repositories.
    created = None if chart or action == "deleteImage" else now
    return cls(
        occurred_at=now,
        repository=Repository(namespace=namespace, name=name, type=repo_type, created_at=created),
        resources=tuple(resources),
        operator=operator,
    )
