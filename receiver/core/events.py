"""The typed events: frozen dataclasses for what the registry reports.

This module owns the shape of an event in Python. It knows nothing of JSON, Flask or
marshmallow; :mod:`receiver.core.schemas` maps the wire format onto these classes.
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
    "DIGEST",
    "IMAGE_ACTIONS",
    "MAX_REPOSITORY",
    "MAX_RESOURCES",
    "MAX_TAG",
    "QUOTA_ACTIONS",
    "REPOSITORY_ACTIONS",
    "SCAN_ACTIONS",
    "SEVERITIES",
    "ArtifactOutcome",
    "DeleteChart",
    "DeleteImage",
    "DownloadChart",
    "Endpoint",
    "Event",
    "PullImage",
    "PushImage",
    "QuotaEvent",
    "QuotaExceeded",
    "QuotaWarning",
    "Replication",
    "Repository",
    "RepositoryEvent",
    "Resource",
    "RetentionRule",
    "ScanCompleted",
    "ScanEvent",
    "ScanFailed",
    "ScanStopped",
    "ScannedResource",
    "TagRetention",
    "UploadChart",
    "build_event",
    "event_class",
    "is_digest",
    "parse_reference",
    "severity_rank",
    "subject",
]


#: Scan severities from least to most severe, as Harbor names them (``None``: nothing found).
SEVERITIES: tuple[str, ...] = ("None", "Unknown", "Negligible", "Low", "Medium", "High", "Critical")


def severity_rank(severity: str | None) -> int:
    """A severity's place in :data:`SEVERITIES` (-1 for ``None``/unknown text), to compare
    them: ``severity_rank(r.severity) >= severity_rank("High")``."""
    try:
        return SEVERITIES.index(severity)
    except ValueError:
        return -1


#: A digest: the OCI grammar's registered algorithms with their encodings.
DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}|blake3:[a-f0-9]{64}")


def is_digest(value: t.Any) -> bool:
    """Whether *value* is a digest (``sha256:``/``sha512:``/``blake3:`` and lower-case hex)."""
    return type(value) is str and DIGEST.fullmatch(value) is not None


@dataclasses.dataclass(frozen=True)
class Resource:
    """One image tag, artifact or chart version that the event is about.

    :param digest: the image's digest; ``None`` for charts.
    :param tag: the image tag or chart version; ``None`` for an artifact pushed or pulled by
        digest (Harbor 2.x then sends the digest as the tag; it is not a tag).
    :param url: as the registry sent it: ``host/ns/repo:tag`` (or ``@digest``) for images,
        no scheme; the ``.tgz`` URL for charts; ``None`` when it sends none (quota events).
    """

    digest: str | None
    tag: str | None
    url: str | None = None

    @property
    def digest_reference(self) -> str | None:
        """The image pinned by digest, ``host/ns/repo@sha256:...``, for a deploy to pull.

        ``None`` without a digest (charts) or a URL (quota events). Pulling by digest is
        immune to the tag being moved between the event and the deploy.
        """
        if self.digest is None or self.url is None:
            return None
        base = self.url
        for suffix in ("@" + self.digest, ":" + self.digest, ":" + (self.tag or "")):
            if base.endswith(suffix):  # the digest, the tag, or nothing (2.0-2.2: "repo:")
                base = base[: -len(suffix)]
                break
        return f"{base}@{self.digest}"


@dataclasses.dataclass(frozen=True)
class ScannedResource(Resource):
    """A resource of a scan event, with its vulnerability report's summary.

    :param severity: the highest severity found, one of :data:`SEVERITIES`; ``None`` when the
        report gives none (a failed or stopped scan).
    :param counts: vulnerabilities found per severity, ``{"High": 2, ...}``.
    :param total: vulnerabilities found; ``fixable``: how many have a fix.
    :param scanner: the scanner's name (``Trivy``).
    :param status: the report's ``scan_status`` (``Success``, ``Error``, ``Stopped``).
    """

    severity: str | None = None
    counts: t.Mapping[str, int] = dataclasses.field(default_factory=dict, hash=False)
    total: int | None = None
    fixable: int | None = None
    scanner: str | None = None
    status: str | None = None


@dataclasses.dataclass(frozen=True)
class Repository:
    """The repository an event happened in.

    :param namespace: the TCR namespace (Harbor project), e.g. ``public``.
    :param name: the name relative to the namespace; may contain ``/``.
    :param type: ``public`` or ``private`` as the registry reports it, or ``None``.
    :param created_at: when the repository was created; ``None`` when the registry omits it
        (deletes, charts, scans, quotas).
    """

    namespace: str
    name: str
    type: str | None = None
    created_at: datetime | None = None

    @property
    def full_name(self) -> str:
        """``namespace/name``, as the wire's ``repo_full_name``."""
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Event:
    """Something that happened in the registry. Each action has its own subclass.

    :param occurred_at: when it happened, timezone-aware UTC.
    :param operator: who did it: an account id or name; ``""`` when the registry names nobody.
    :param id: a stable id of the delivery's content (see :func:`receiver.core.schemas.event_id`):
        the same body gives the same id, so handlers can use it as an idempotency key.
        Empty for an event that was built rather than received.
    :param format: the wire format it came in: ``"tcr"`` (TCR, Harbor 1.x), ``"harbor"``
        (Harbor 2.x) or ``"cloudevents"`` (Harbor 2.8+).
    :param raw: the decoded body, for fields the event does not model; ``None`` when built.
    """

    #: The action's name, e.g. ``"pushImage"``; the same in every format.
    action: t.ClassVar[str] = ""

    occurred_at: datetime
    operator: str = ""
    id: str = dataclasses.field(default="", compare=False)
    format: str = "tcr"
    raw: t.Any = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RepositoryEvent(Event):
    """An event about a repository and some of its tags, artifacts or chart versions.

    :param repository: where it happened.
    :param resources: the tags or chart versions concerned; a delete may carry several.
    """

    repository: Repository
    resources: tuple[Resource, ...] = ()

    @property
    def tags(self) -> tuple[str, ...]:
        """The tags (chart versions) of the resources, in order, without empty ones and
        without digests (a push by digest has no tag)."""
        return tuple(r.tag for r in self.resources if r.tag)

    def with_resources(self, resources: t.Iterable[Resource]) -> RepositoryEvent:
        """This event carrying only *resources*: itself when they are all it has."""
        resources = tuple(resources)
        if resources == self.resources:
            return self
        return dataclasses.replace(self, resources=resources)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PushImage(RepositoryEvent):
    """An image (any OCI artifact, in Harbor 2.x) was pushed."""

    action = "pushImage"


@dataclasses.dataclass(frozen=True, kw_only=True)
class PullImage(RepositoryEvent):
    """An image was pulled."""

    action = "pullImage"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeleteImage(RepositoryEvent):
    """One or more image tags (an artifact, in Harbor 2.x) were deleted."""

    action = "deleteImage"


@dataclasses.dataclass(frozen=True, kw_only=True)
class UploadChart(RepositoryEvent):
    """A Helm chart version was uploaded to the chart repository."""

    action = "uploadChart"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DownloadChart(RepositoryEvent):
    """A Helm chart version was downloaded."""

    action = "downloadChart"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeleteChart(RepositoryEvent):
    """One or more Helm chart versions were deleted (a whole chart lists every version)."""

    action = "deleteChart"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScanEvent(RepositoryEvent):
    """A vulnerability scan of some artifacts ended; its resources are
    :class:`ScannedResource` objects."""

    resources: tuple[ScannedResource, ...] = ()

    @property
    def severity(self) -> str | None:
        """The highest severity of all the resources, or ``None`` when none has one."""
        found = [r.severity for r in self.resources if r.severity]
        return max(found, key=severity_rank) if found else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScanCompleted(ScanEvent):
    """A scan completed."""

    action = "scanningCompleted"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScanFailed(ScanEvent):
    """A scan failed."""

    action = "scanningFailed"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScanStopped(ScanEvent):
    """A scan was stopped (Harbor 2.4+)."""

    action = "scanningStopped"


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuotaEvent(RepositoryEvent):
    """A push met the project's storage quota. Resources carry no URL.

    :param details: the registry's text, e.g. ``"adding 1.2 MiB of storage resource, which
        when updated to current usage of ... will exceed the configured upper limit of ..."``.
    """

    details: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuotaExceeded(QuotaEvent):
    """A push was refused: it would exceed the project's quota."""

    action = "quotaExceed"


@dataclasses.dataclass(frozen=True, kw_only=True)
class QuotaWarning(QuotaEvent):
    """The project's usage passed the quota's warning threshold."""

    action = "quotaWarning"


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """One side of a replication: a registry and a namespace in it."""

    registry_name: str | None = None
    registry_type: str | None = None
    endpoint: str | None = None
    provider: str | None = None
    namespace: str | None = None


@dataclasses.dataclass(frozen=True)
class ArtifactOutcome:
    """An artifact that a replication copied or failed to copy, or a retention run deleted.

    :param name_tag: ``repo:tag`` as the registry writes it.
    :param references: the tags or digests concerned (replication only).
    """

    type: str | None = None
    status: str | None = None
    name_tag: str | None = None
    references: tuple[str, ...] = ()
    fail_reason: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Replication(Event):
    """A replication task's status changed: Harbor 2.x fires one per task, not per
    execution, and from 2.2 on every change (``Running`` too), not only at the end.

    There is no repository: the artifacts are named in :attr:`succeeded`/:attr:`failed`
    (``name_tag`` reads ``api [2 item(s) in total]``).

    :param status: the task's ``job_status``: ``Success``, ``Error``, ``Stopped`` or
        ``Running``.
    :param trigger: ``MANUAL``, ``SCHEDULE`` or ``EVENT`` (2.2+; ``manual``,
        ``scheduled``, ``event_based`` in 2.0 and 2.1).
    """

    action = "replication"

    status: str | None = None
    trigger: str | None = None
    description: str | None = None
    artifact_type: str | None = None
    override: bool | None = None
    policy_creator: str | None = None
    executed_at: datetime | None = None
    source: Endpoint | None = None
    destination: Endpoint | None = None
    succeeded: tuple[ArtifactOutcome, ...] = ()
    failed: tuple[ArtifactOutcome, ...] = ()
    hostname: str | None = None
    execution_id: int | None = None
    task_id: int | None = None


@dataclasses.dataclass(frozen=True)
class RetentionRule:
    """One rule of a tag retention policy."""

    template: str | None = None
    params: t.Mapping[str, t.Any] = dataclasses.field(default_factory=dict, hash=False)
    tag_selectors: tuple[t.Mapping[str, t.Any], ...] = dataclasses.field(default=(), hash=False)
    scope_selectors: t.Mapping[str, t.Any] = dataclasses.field(default_factory=dict, hash=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class TagRetention(Event):
    """A tag retention run finished in a project. There is no repository.

    :param status: the run's ``result`` (``SUCCESS``...).
    :param total: artifacts considered; ``retained``: kept.
    :param deleted: the artifacts it deleted.
    """

    action = "tagRetention"

    status: str | None = None
    project: str | None = None
    policy_id: int | None = None
    total: int | None = None
    retained: int | None = None
    rules: tuple[RetentionRule, ...] = ()
    deleted: tuple[ArtifactOutcome, ...] = ()
    hostname: str | None = None


_CLASSES: dict[str, type[Event]] = {
    cls.action: cls
    for cls in (
        PushImage, PullImage, DeleteImage, UploadChart, DownloadChart, DeleteChart,
        ScanCompleted, ScanFailed, ScanStopped, QuotaExceeded, QuotaWarning,
        Replication, TagRetention,
    )
}

#: Every action's name, in the order of the README's table.
ACTIONS: tuple[str, ...] = tuple(_CLASSES)
IMAGE_ACTIONS: tuple[str, ...] = ("pushImage", "pullImage", "deleteImage")
CHART_ACTIONS: tuple[str, ...] = ("uploadChart", "downloadChart", "deleteChart")
SCAN_ACTIONS: tuple[str, ...] = ("scanningCompleted", "scanningFailed", "scanningStopped")
QUOTA_ACTIONS: tuple[str, ...] = ("quotaExceed", "quotaWarning")
#: The actions whose events carry a repository (:class:`RepositoryEvent`): every one but
#: ``replication`` and ``tagRetention``.
REPOSITORY_ACTIONS: tuple[str, ...] = tuple(
    a for a, cls in _CLASSES.items() if issubclass(cls, RepositoryEvent)
)


def event_class(action: str) -> type[Event]:
    """The event class for an action's name; raises KeyError for an unknown one."""
    return _CLASSES[action]


def parse_reference(ref: str) -> tuple[str, list[str] | None, str | None]:
    """What a reference names, as ``(namespace/name, tags, digest)``; the grammar of
    ``receiver emit`` and the ``deliver`` fixture:

    - ``NS/REPO:TAG`` and ``NS/REPO:TAG1,TAG2``: those tags;
    - ``NS/REPO``: ``tags`` is ``None``, :func:`build_event`'s default (``latest``);
    - ``NS/REPO@DIGEST``: by digest alone, no tag (``tags == []``);
    - ``NS/REPO:TAG@DIGEST``: that tag, pinned to that digest.

    The parts are checked by :func:`build_event`. :raises ValueError: a reference with an
    empty part (``NS/REPO:``, ``NS/REPO@``, ``:TAG``, ``NS/REPO:v1,,v2``).
    """
    name, at, digest = ref.partition("@")
    if at and not digest:
        raise ValueError(f"{ref!r} has no digest after '@'")
    repo, sep, tags = name.rpartition(":")
    if sep and "/" not in tags:
        split = tags.split(",")
        if not tags:
            raise ValueError(f"{ref!r} has no tag after ':'")
        if "" in split:
            raise ValueError(f"{ref!r} has an empty tag: write the tags as TAG1,TAG2")
        tag_list: list[str] | None = split
    else:
        repo, tag_list = name, ([] if at else None)
    if not repo:
        raise ValueError(f"{ref!r} must be NS/REPO, NS/REPO:TAG[,TAG...], NS/REPO@DIGEST "
                         "or NS/REPO:TAG@DIGEST")
    return repo, tag_list, digest or None


def subject(event: Event) -> tuple[str, tuple[str, ...]]:
    """``(repository full name, tags)`` for logs and records; ``("", ())`` for an event
    without a repository."""
    if isinstance(event, RepositoryEvent):
        return event.repository.full_name, event.tags
    return "", ()


#: The longest tag or chart version accepted (the OCI distribution spec's limit for tags).
MAX_TAG = 128
#: The longest repository full name (``namespace/name``) accepted, as Docker's distribution.
MAX_REPOSITORY = 255
#: The most resources one event may carry; a push or delete lists a few, not thousands.
MAX_RESOURCES = 1000

# The OCI distribution names that build_event accepts.
#: A name component as OCI distribution (and so a registry's namespace) writes it.
NAME_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"\w[\w.-]{0,127}", re.ASCII)
_VERSION = re.compile(r"\w[\w.+-]{0,127}", re.ASCII)  # chart versions are SemVer: '+' allowed
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?(?::[0-9]{1,5})?")


def build_event(
    action: str,
    full_name: str | None = None,
    tags: t.Sequence[str] | None = None,
    *,
    digest: str | None = None,
    operator: str | None = None,
    host: str = "registry.example.com",
    repo_type: str = "private",
    occurred_at: datetime | None = None,
    severity: str | None = None,
    vulnerabilities: t.Mapping[str, int] | None = None,
    scanner: str | None = None,
    status: str | None = None,
    details: str | None = None,
    trigger: str | None = None,
    description: str | None = None,
    project: str | None = None,
    retained: int | None = None,
    deleted: t.Sequence[str] = (),
) -> Event:
    """An event as the registry would make it, for tests, examples and ``receiver emit``.

    :param full_name: ``namespace/name`` (the name may contain ``/``); ``None`` for
        ``replication`` and ``tagRetention``, which have no repository.
    :param tags: image tags or chart versions, one resource each (default ``latest``).
        ``()`` with a *digest*: one artifact pushed (pulled, scanned...) by digest, with no tag.
    :param digest: for images, the digest of every resource; a random one per resource
        when not given. Charts have none.
    :param operator: who did it. When not given: what Harbor 2.2 to 2.8 writes for a
        replication (its trigger) and a tag retention run (``MANUAL``, a manual run's;
        a scheduled run's is ``Schedule``), else ``""``.
    :param severity: scans: the highest severity found, one of :data:`SEVERITIES`
        (default: the highest of *vulnerabilities*, ``"None"`` for a clean image).
    :param vulnerabilities: scans: how many were found per severity, ``{"High": 2}``
        (default: one at *severity*, none for ``"None"``).
    :param scanner: scans: the scanner's name (default ``Trivy`` for a completed scan).
    :param status: the outcome as the registry writes it: a scan's ``scan_status``
        (default ``Success``, ``Error`` or ``Stopped`` by action), a replication's
        ``job_status`` (Harbor 2.2+: ``Success``, the default, ``Error``, ``Stopped`` or
        ``Running``), a retention run's ``result`` (``SUCCESS``). A ``Success``
        replication lists the artifact it copied, an ``Error`` one the artifact it failed to.
    :param details: quota events: the registry's text (a realistic one by default).
    :param trigger: replication: ``MANUAL`` (default), ``SCHEDULE`` or ``EVENT``, as
        Harbor 2.2+ writes it (2.0 and 2.1: ``manual``, ``scheduled``, ``event_based``).
    :param description: replication: the policy's description.
    :param project: replication and tagRetention: the project (namespace); ``library``
        by default for tagRetention.
    :param retained: tagRetention: artifacts kept (default 0).
    :param deleted: tagRetention: the artifacts deleted, as ``repo:tag`` (``api:v1``).
    :raises ValueError: an unknown action, a bad name, tag, digest or host, or an option
        that the action does not have (a severity on a push, a repository on a replication).
    """
    cls = _CLASSES.get(action)
    if cls is None:
        raise ValueError(f"unknown action {action!r}; expected one of: {', '.join(ACTIONS)}")
    only_for: dict[str, tuple[t.Any, tuple[str, ...]]] = {
        "severity": (severity, SCAN_ACTIONS),
        "vulnerabilities": (vulnerabilities, SCAN_ACTIONS),
        "scanner": (scanner, SCAN_ACTIONS),
        "status": (status, (*SCAN_ACTIONS, "replication", "tagRetention")),
        "details": (details, QUOTA_ACTIONS),
        "trigger": (trigger, ("replication",)),
        "description": (description, ("replication",)),
        "project": (project, ("replication", "tagRetention")),
        "retained": (retained, ("tagRetention",)),
        "deleted": (deleted or None, ("tagRetention",)),
    }
    for key, (value, actions) in only_for.items():
        if value is not None and action not in actions:
            raise ValueError(f"{key} is only for {', '.join(actions)}, not {action}")
    if not _HOST.fullmatch(host):
        raise ValueError(f"host {host!r} is not a valid registry host[:port]")
    if digest is not None and action in CHART_ACTIONS:
        raise ValueError("charts have no digest; leave out the digest")
    if digest is not None and not DIGEST.fullmatch(digest):
        raise ValueError(f"digest {digest!r} must be 'sha256:' and 64 lower-case hex digits "
                         "(or 'sha512:' and 128, or 'blake3:' and 64)")
    for key, value in (("status", status), ("trigger", trigger), ("scanner", scanner)):
        if value is not None and (not value or not value.isprintable()):
            raise ValueError(f"{key} must be printable text, not {value!r}")
    now = (occurred_at or datetime.now(timezone.utc)).replace(microsecond=0)

    if action not in REPOSITORY_ACTIONS:
        if full_name is not None or digest is not None:
            raise ValueError(f"{action} has no repository: leave out the repository and the "
                             "digest (project= names the project)")
        if project is not None and not NAME_COMPONENT.fullmatch(project):
            raise ValueError(f"project {project!r} is not a valid name: lower-case letters and "
                             "digits, joined by '.', '_', '__' or '-'")
        if cls is Replication:
            status, trigger = status or "Success", trigger or "MANUAL"
            # Harbor 2.2+ names the task's artifact on a Success or an Error only.
            artifact = (ArtifactOutcome(type="image", status=status,
                                        name_tag="api [1 item(s) in total]",
                                        references=("latest",)),)
            return Replication(
                # Harbor up to 2.8 writes the trigger as the operator (2.9+: the user).
                occurred_at=now, operator=trigger if operator is None else operator,
                status=status, trigger=trigger, description=description,
                artifact_type="image", override=True, policy_creator="admin",
                executed_at=now, hostname=host.partition(":")[0],  # Harbor drops the port
                source=Endpoint(registry_type="harbor", endpoint=f"https://{host}",
                                namespace=project),
                destination=Endpoint(registry_name="replica", registry_type="harbor",
                                     endpoint="https://replica.example.com", namespace=project),
                succeeded=artifact if status == "Success" else (),
                failed=artifact if status == "Error" else (),
            )
        if retained is not None and retained < 0:
            raise ValueError(f"retained must be 0 or more, not {retained}")
        if isinstance(deleted, str):
            deleted = (deleted,)  # one artifact, not its characters
        for name_tag in deleted:
            repo, colon, tag = (name_tag or "").rpartition(":")
            if (not colon or not repo or not tag or not name_tag.isprintable()
                    or " " in name_tag):
                raise ValueError(f"deleted artifact {name_tag!r} must be written 'repo:tag'")
        kept = retained or 0
        return TagRetention(
            # Harbor up to 2.8 writes the run's trigger as the operator: a manual run's.
            occurred_at=now, operator="MANUAL" if operator is None else operator,
            status=status or "SUCCESS",
            project=project or "library", total=kept + len(deleted), retained=kept,
            hostname=host,
            deleted=tuple(ArtifactOutcome(type="image", status="SUCCESS", name_tag=n)
                          for n in deleted),
        )

    operator = operator or ""
    if full_name is None:
        raise ValueError(f"{action} needs a repository, 'namespace/name'")
    if tags is None:
        tags = ("latest",)
    elif isinstance(tags, str):
        tags = (tags,)  # one tag, not its characters
    namespace, sep, name = full_name.partition("/")
    if not sep or not namespace or not name:
        raise ValueError(f"repository must be 'namespace/name', got {full_name!r}")
    if len(full_name) > MAX_REPOSITORY:
        raise ValueError(f"repository is longer than {MAX_REPOSITORY} characters")
    for component in full_name.split("/"):
        if not NAME_COMPONENT.fullmatch(component):
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
    if not tags and digest is None:
        raise ValueError("give a tag, or a digest for an artifact without one"
                         if not chart else "give a chart version")

    # One resource per tag; none given: the artifact by its digest (no tag, as Harbor 2.x).
    refs: list[tuple[str | None, str | None]] = []
    if chart:
        refs = [(None, tag) for tag in tags]
    elif tags:
        refs = [(digest or "sha256:" + secrets.token_hex(32), tag) for tag in tags]
    else:
        refs = [(digest, None)]

    def url(d: str | None, tag: str | None) -> str | None:
        if chart:
            return f"https://{host}/chartrepo/{namespace}/charts/{name}-{tag}.tgz"
        if action in QUOTA_ACTIONS:
            return None  # the registry sends quota resources without a URL
        return f"{host}/{full_name}:{tag}" if tag else f"{host}/{full_name}@{d}"

    extra: dict[str, t.Any] = {}
    if action in SCAN_ACTIONS:
        counts = dict(vulnerabilities or {})
        for key, n in counts.items():
            if key not in SEVERITIES[1:]:
                raise ValueError(f"vulnerability severity {key!r} is unknown; expected one of: "
                                 f"{', '.join(SEVERITIES[1:])}")
            if type(n) is not int or n < 0:
                raise ValueError(
                    f"vulnerabilities {key}={n!r}: a count is a whole number, 0 or more")
        found = max((k for k, n in counts.items() if n), key=severity_rank, default="None")
        if severity is not None and severity not in SEVERITIES:
            raise ValueError(f"severity {severity!r} is unknown; expected one of: "
                             f"{', '.join(SEVERITIES)}")
        completed = action == "scanningCompleted"
        if not completed and (severity is not None or counts):
            raise ValueError(f"{action} has no results: leave out severity and vulnerabilities")
        if completed and counts and severity is not None and severity != found:
            raise ValueError(f"severity {severity!r} contradicts the vulnerabilities, whose "
                             f"highest severity is {found!r}")
        if completed and not counts and severity not in (None, "None"):
            counts = {severity: 1}  # a severity is that of something found
        default_status = {"scanningCompleted": "Success", "scanningFailed": "Error",
                          "scanningStopped": "Stopped"}[action]
        report: dict[str, t.Any] = {
            "severity": (severity or found) if completed else None,
            "counts": counts,
            "total": sum(counts.values()) if completed else None,
            "fixable": 0 if completed else None,
            "scanner": scanner or ("Trivy" if completed else None),
            "status": status or default_status,
        }
        resources: tuple[Resource, ...] = tuple(
            ScannedResource(d, tag, url(d, tag), **report) for d, tag in refs)
    else:
        resources = tuple(Resource(d, tag, url(d, tag)) for d, tag in refs)
    if action in QUOTA_ACTIONS:
        extra["details"] = details if details is not None else (
            "adding 96.3 MiB of storage resource, which when updated to current usage of "
            "9.9 GiB will exceed the configured upper limit of 10.0 GiB."
            if action == "quotaExceed"
            else "quota usage reach 85%: resource storage used 8.7 GiB of 10.0 GiB")
    # The registry omits date_created for charts, deleted repositories, scans and quotas.
    created = now if action in ("pushImage", "pullImage") else None
    return t.cast("type[RepositoryEvent]", cls)(
        occurred_at=now,
        repository=Repository(namespace=namespace, name=name, type=repo_type, created_at=created),
        resources=resources,
        operator=operator,
        **extra,
    )
