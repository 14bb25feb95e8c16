"""What the three formats share: the ``event_data`` declaration, and the mapping between its
loaded form and the typed events.

Harbor 2.x's ``event_data`` (the default format's, and CloudEvents' ``data``) is declared here
once; TCR / Harbor 1.x declares a stricter ``event_data`` from the same parts in :mod:`.tcr`.
Loading gives plain dicts keyed by wire names; :func:`build` makes the typed event of them,
and :func:`event_data` is its inverse for dumping.
"""

from __future__ import annotations

import json
import threading
import typing as t
from datetime import datetime, timezone

import marshmallow
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_dump, pre_load, validate

from ..events import (
    DIGEST,
    MAX_REPOSITORY,
    MAX_RESOURCES,
    MAX_TAG,
    ArtifactOutcome,
    Endpoint,
    Event,
    QuotaEvent,
    Replication,
    Repository,
    RepositoryEvent,
    Resource,
    RetentionRule,
    ScanEvent,
    ScannedResource,
    TagRetention,
    event_class,
    is_digest,
)
from .fields import Bool, Int, Pattern, TagOrDigest, TextOrInt, UnixTime, is_integral, whole

#: A digest on the wire, as a JSON Schema pattern.
DIGEST_PATTERN = whole(DIGEST.pattern)
#: The media type Harbor keys a vulnerability report's summary by.
VULNERABILITY_REPORT = "application/vnd.security.vulnerability.report; version=1.1"

_name = validate.Length(min=1, max=MAX_REPOSITORY, error="Must be 1 to {max} characters long.")
_digest = Pattern(DIGEST_PATTERN, "Not a valid digest: expected 'sha256:' and 64 lower-case "
                  "hex digits (or 'sha512:' and 128, or 'blake3:' and 64).")
_tag = TagOrDigest(MAX_TAG, DIGEST_PATTERN)


class Wire(Schema):
    """Every schema of the wire: unknown keys are ignored (the registry's payload grows; see
    ``receiver validate --strict``), loads give dicts, and a dump leaves out what is ``None``,
    as Harbor's ``omitempty`` does."""

    class Meta:
        unknown = EXCLUDE

    @post_dump
    def _omit_none(self, data: dict[str, t.Any], **kwargs: t.Any) -> dict[str, t.Any]:
        return {k: v for k, v in data.items() if v is not None}


class Bounded(Wire):
    """An ``event_data``: refuses an oversized ``resources`` list before validating its
    items, so half a million bad resources cost one check and one message."""

    @pre_load
    def _bounded(self, data: t.Any, **kwargs: t.Any) -> t.Any:
        if isinstance(data, dict):
            resources = data.get("resources")
            if isinstance(resources, list) and len(resources) > MAX_RESOURCES:
                raise ValidationError(f"More than {MAX_RESOURCES} resources.", "resources")
        return data


class Scanner(Wire):
    name = fields.String()
    vendor = fields.String()
    version = fields.String()


class VulnerabilitySummary(Wire):
    total = Int()
    fixable = Int()
    summary = fields.Dict(keys=fields.String(), values=Int(), allow_none=True)


class ReportSummary(Wire):
    """One value of a resource's ``scan_overview``, keyed by the report's media type.
    (Harbor 1.9 wrote Clair's object instead, with ``severity`` a number.)"""

    report_id = fields.String()
    scan_status = fields.String()
    severity = TextOrInt()
    duration = Int()
    summary = fields.Nested(VulnerabilitySummary, allow_none=True)
    start_time = fields.String()
    end_time = fields.String()
    scanner = fields.Nested(Scanner, allow_none=True)
    complete_percent = Int()


class ResourceSchema(Wire):
    """One entry of ``event_data.resources``."""

    digest = fields.String(allow_none=True, validate=_digest)
    tag = fields.String(allow_none=True, validate=_tag)
    resource_url = fields.String(allow_none=True)
    scan_overview = fields.Dict(keys=fields.String(), values=fields.Nested(ReportSummary),
                                allow_none=True)
    sbom_overview = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True),
                                allow_none=True)


class RepositorySchema(Wire):
    """``event_data.repository``. ``repo_full_name`` is ``namespace/name``; the event uses
    those two."""

    date_created = UnixTime(allow_none=True)
    name = fields.String(required=True, validate=_name)
    namespace = fields.String(required=True, validate=_name)
    repo_full_name = fields.String(allow_none=True)
    repo_type = fields.String(allow_none=True)


class EndpointSchema(Wire):
    registry_name = fields.String(allow_none=True)
    registry_type = fields.String(allow_none=True)
    endpoint = fields.String(allow_none=True)
    provider = fields.String(allow_none=True)
    namespace = fields.String(allow_none=True)


class ArtifactInfo(Wire):
    type = fields.String(allow_none=True)
    status = fields.String(allow_none=True)
    name_tag = fields.String(allow_none=True)
    references = fields.List(fields.String(), allow_none=True)
    fail_reason = fields.String(allow_none=True)


class ReplicationSchema(Wire):
    """``event_data.replication`` (Harbor 2.x ``REPLICATION``)."""

    harbor_hostname = fields.String(allow_none=True)
    job_status = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    artifact_type = fields.String(allow_none=True)
    authentication_type = fields.String(allow_none=True)
    override_mode = Bool(allow_none=True)
    trigger_type = fields.String(allow_none=True)
    policy_creator = fields.String(allow_none=True)
    execution_timestamp = UnixTime(allow_none=True)
    src_resource = fields.Nested(EndpointSchema, allow_none=True)
    dest_resource = fields.Nested(EndpointSchema, allow_none=True)
    successful_artifact = fields.List(fields.Nested(ArtifactInfo), allow_none=True)
    failed_artifact = fields.List(fields.Nested(ArtifactInfo), allow_none=True)
    execution_id = Int(allow_none=True)
    task_id = Int(allow_none=True)


class RetentionRuleSchema(Wire):
    template = fields.String(allow_none=True)
    params = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True), allow_none=True)
    tag_selectors = fields.List(
        fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True)), allow_none=True)
    scope_selectors = fields.Dict(
        keys=fields.String(), values=fields.List(fields.Dict(keys=fields.String(),
                                                             values=fields.Raw(allow_none=True))),
        allow_none=True)


class RetentionSchema(Wire):
    """``event_data.retention`` (Harbor 2.x ``TAG_RETENTION``)."""

    total = Int(allow_none=True)
    retained = Int(allow_none=True)
    harbor_hostname = fields.String(allow_none=True)
    project_name = fields.String(allow_none=True)
    retention_policy_id = Int(allow_none=True)
    retention_rule = fields.List(fields.Nested(RetentionRuleSchema), allow_none=True)
    result = fields.String(allow_none=True)
    deleted_artifact = fields.List(fields.Nested(ArtifactInfo), allow_none=True)


class ScanSchema(Wire):
    scan_type = fields.String(allow_none=True)


_resources = validate.Length(max=MAX_RESOURCES, error="More than {max} resources.")


class EventData(Bounded):
    """Harbor 2.x ``event_data``: every key may be missing. That events with a repository
    need one is the envelope's rule (:meth:`Envelope.repository_types`)."""

    resources = fields.List(fields.Nested(ResourceSchema), allow_none=True, validate=_resources)
    repository = fields.Nested(RepositorySchema, allow_none=True)
    replication = fields.Nested(ReplicationSchema, allow_none=True)
    retention = fields.Nested(RetentionSchema, allow_none=True)
    scan = fields.Nested(ScanSchema, allow_none=True)
    custom_attributes = fields.Dict(keys=fields.String(), values=fields.String(allow_none=True),
                                    allow_none=True)


# Loaded event_data to a typed event, and back.

_UTC = timezone.utc


def build(action: str, fmt: str, occurred_at: datetime, operator: str | None,
          data: t.Mapping[str, t.Any], *, id: str = "", raw: t.Any = None) -> Event:
    """The typed event of a loaded ``event_data`` (*data*, keyed by wire names)."""
    cls = event_class(action)
    common: dict[str, t.Any] = {"occurred_at": occurred_at, "operator": operator or "",
                                "id": id, "format": fmt, "raw": raw}
    if issubclass(cls, RepositoryEvent):
        repo = data["repository"]
        common["repository"] = Repository(repo["namespace"], repo["name"], repo.get("repo_type"),
                                          repo.get("date_created"))
        resources = data.get("resources") or ()
        if issubclass(cls, ScanEvent):
            common["resources"] = tuple(_scanned(r) for r in resources)
        else:
            common["resources"] = tuple(_resource(r) for r in resources)
        if issubclass(cls, QuotaEvent):
            common["details"] = (data.get("custom_attributes") or {}).get("Details")
        return cls(**common)
    if cls is Replication:
        return Replication(**common, **_replication(data.get("replication") or {}))
    return TagRetention(**common, **_retention(data.get("retention") or {}))


def _resource(r: t.Mapping[str, t.Any]) -> Resource:
    digest, tag = r.get("digest"), r.get("tag")
    if tag is not None and is_digest(tag):  # Harbor 2.x: the digest stands in for no tag
        digest, tag = digest or tag, None
    return Resource(digest, tag or None, r.get("resource_url"))


# Harbor 1.9's Clair overview gives the severity as a number (its models.Severity).
_CLAIR_SEVERITY = {1: "None", 2: "Unknown", 3: "Low", 4: "Medium", 5: "High"}


def _scanned(r: t.Mapping[str, t.Any]) -> ScannedResource:
    """A scanned resource. The TCR format leaves ``scan_overview``'s values unchecked (Harbor
    1.9 and 1.10 differ), so every value is taken only when it has the expected type."""
    base = _resource(r)
    overview = r.get("scan_overview") or {}
    report = overview.get(VULNERABILITY_REPORT) or next(iter(overview.values()), None)
    if not isinstance(report, dict):  # Harbor 1.9's Clair object is not keyed by media type
        report = overview
    severity = report.get("severity")
    if not isinstance(severity, str):
        severity = _CLAIR_SEVERITY.get(int(severity)) if is_integral(severity) else None
    summary = _dict(report.get("summary"))
    counts = {k: int(v) for k, v in _dict(summary.get("summary")).items() if is_integral(v)}
    return ScannedResource(
        base.digest, base.tag, base.url,
        severity=severity or None,
        counts=counts,
        total=_int(summary.get("total")),
        fixable=_int(summary.get("fixable")),
        scanner=_str(_dict(report.get("scanner")).get("name")),
        status=_str(report.get("scan_status")),
    )


def _dict(value: t.Any) -> dict[str, t.Any]:
    return value if isinstance(value, dict) else {}


def _int(value: t.Any) -> int | None:
    return int(value) if is_integral(value) else None


def _str(value: t.Any) -> str | None:
    return value if isinstance(value, str) else None


def _outcomes(items: t.Any) -> tuple[ArtifactOutcome, ...]:
    return tuple(
        ArtifactOutcome(i.get("type"), i.get("status"), i.get("name_tag"),
                        tuple(i.get("references") or ()), i.get("fail_reason"))
        for i in items or ()
    )


def _endpoint(e: t.Any) -> Endpoint | None:
    return None if e is None else Endpoint(**e)


def _replication(r: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    return {
        "status": r.get("job_status"), "trigger": r.get("trigger_type"),
        "description": r.get("description"), "artifact_type": r.get("artifact_type"),
        "override": r.get("override_mode"), "policy_creator": r.get("policy_creator"),
        "executed_at": r.get("execution_timestamp"),
        "source": _endpoint(r.get("src_resource")),
        "destination": _endpoint(r.get("dest_resource")),
        "succeeded": _outcomes(r.get("successful_artifact")),
        "failed": _outcomes(r.get("failed_artifact")),
        "hostname": r.get("harbor_hostname"),
        "execution_id": r.get("execution_id"), "task_id": r.get("task_id"),
    }


def _retention(r: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    rules = tuple(
        RetentionRule(rule.get("template"), dict(rule.get("params") or {}),
                      tuple(rule.get("tag_selectors") or ()),
                      {k: tuple(v) for k, v in (rule.get("scope_selectors") or {}).items()})
        for rule in r.get("retention_rule") or ()
    )
    return {
        "status": r.get("result"), "project": r.get("project_name"),
        "policy_id": r.get("retention_policy_id"), "total": r.get("total"),
        "retained": r.get("retained"), "rules": rules,
        "deleted": _outcomes(r.get("deleted_artifact")), "hostname": r.get("harbor_hostname"),
    }


def event_data(event: Event, *, report: str = VULNERABILITY_REPORT) -> dict[str, t.Any]:
    """The ``event_data`` of *event*, ready for a schema's dump (the inverse of :func:`build`)."""
    if isinstance(event, RepositoryEvent):
        repo = event.repository
        plain = not isinstance(event, (ScanEvent, QuotaEvent))
        out: dict[str, t.Any] = {
            "resources": [_dump_resource(r, report, plain) for r in event.resources],
            "repository": {"date_created": repo.created_at, "name": repo.name,
                           "namespace": repo.namespace, "repo_full_name": repo.full_name,
                           "repo_type": repo.type},
        }
        if isinstance(event, QuotaEvent) and event.details is not None:
            out["custom_attributes"] = {"Details": event.details}
        return out
    if isinstance(event, Replication):
        return {"replication": {
            "harbor_hostname": event.hostname, "job_status": event.status,
            "description": event.description, "artifact_type": event.artifact_type,
            "override_mode": event.override, "trigger_type": event.trigger,
            "policy_creator": event.policy_creator, "execution_timestamp": event.executed_at,
            "src_resource": _dump_endpoint(event.source),
            "dest_resource": _dump_endpoint(event.destination),
            "successful_artifact": [_dump_outcome(a) for a in event.succeeded] or None,
            "failed_artifact": [_dump_outcome(a) for a in event.failed] or None,
            "execution_id": event.execution_id, "task_id": event.task_id,
        }}
    assert isinstance(event, TagRetention)
    return {"retention": {
        "total": event.total, "retained": event.retained, "harbor_hostname": event.hostname,
        "project_name": event.project, "retention_policy_id": event.policy_id,
        "retention_rule": [
            {"template": r.template, "params": dict(r.params) or None,
             "tag_selectors": list(r.tag_selectors) or None,
             "scope_selectors": {k: list(v) for k, v in r.scope_selectors.items()} or None}
            for r in event.rules
        ] or None,
        "result": event.status,
        "deleted_artifact": [_dump_outcome(a) for a in event.deleted] or None,
    }}


def _dump_resource(r: Resource, report: str, plain: bool) -> dict[str, t.Any]:
    # Harbor writes an untagged artifact's digest as its tag in artifact events only.
    out: dict[str, t.Any] = {"digest": r.digest, "tag": r.tag or (r.digest if plain else None),
                             "resource_url": r.url}
    if isinstance(r, ScannedResource):
        out["scan_overview"] = {report: {
            "scan_status": r.status, "severity": r.severity,
            "summary": None if r.total is None and r.fixable is None and not r.counts else {
                "total": r.total, "fixable": r.fixable, "summary": dict(r.counts)},
            "scanner": None if r.scanner is None else {"name": r.scanner},
        }}
    return out


def _dump_endpoint(e: Endpoint | None) -> dict[str, t.Any] | None:
    return None if e is None else {
        "registry_name": e.registry_name, "registry_type": e.registry_type,
        "endpoint": e.endpoint, "provider": e.provider, "namespace": e.namespace}


def _dump_outcome(a: ArtifactOutcome) -> dict[str, t.Any]:
    return {"type": a.type, "status": a.status, "name_tag": a.name_tag,
            "references": list(a.references), "fail_reason": a.fail_reason}


# A Wire schema's dump as compact JSON text, without marshmallow's per-field machinery: the
# sender's hot path.

#: Per field: the key it reads, the ``"key":`` it writes, its kind, and its field with its
#: name (or, when nested, the nested schema's plan).
_Plan = tuple[tuple[str, str, int, t.Any], ...]
_STR, _NESTED, _LIST, _OTHER = range(4)
#: Per schema, what :func:`fast_json` does with each of its fields; ``None``: it cannot.
_PLANS: dict[Schema, _Plan | None] = {}
_MISSING = object()
#: ``json.dumps(..., separators=(",", ":"), ensure_ascii=False)``, and its way with a string.
compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_string = json.encoder.encode_basestring


class _Unusual(Exception):
    """A value that the fast dump leaves to marshmallow."""


def fast_json(schema: Schema, obj: t.Any) -> str | None:
    """``compact(schema.dump(obj))`` for a :class:`Wire` schema and the plain dicts that a
    format's ``wire()`` makes, or ``None`` when it cannot tell (then ask ``schema.dump``).

    It reads the declaration as marshmallow does (the dump fields, their keys, in their
    order) and leaves out only the per-field machinery: strings and nested dicts are
    written here, and any other field's value is made by the field's own ``_serialize``. A
    schema with more hooks than ``Wire``'s, or a field that reads its value another way,
    turns it off. ``tests/test_fast_dump.py`` holds the two to the same text.
    """
    plan = _PLANS[schema] if schema in _PLANS else _plan(schema)
    if plan is None or type(obj) is not dict:
        return None
    try:
        return _json(plan, obj)
    except _Unusual:
        return None


def _json(plan: _Plan, obj: dict[str, t.Any]) -> str:
    parts = []
    for attr, key, kind, how in plan:
        value = obj.get(attr, _MISSING)
        if value is _MISSING:
            continue
        if kind == _OTHER:
            field, name = how
            value = field._serialize(value, name, obj)
            if value is None:  # left out, as Wire._omit_none does
                continue
            kind_of = type(value)
            text = (int.__repr__(value) if kind_of is int else
                    _string(value) if kind_of is str else compact(value))
        elif value is None:  # a string, nested or list field dumps None as None
            continue
        elif kind == _STR:
            if type(value) is not str:
                raise _Unusual
            text = _string(value)
        elif type(value) is dict and kind == _NESTED:
            text = _json(how, value)
        elif type(value) is list and kind == _LIST:
            items = []
            for item in value:
                if type(item) is not dict:
                    raise _Unusual
                items.append(_json(how, item))
            text = "[" + ",".join(items) + "]"
        else:
            raise _Unusual
        parts.append(key + text)
    return "{" + ",".join(parts) + "}"


def _plan(schema: Schema) -> _Plan | None:
    # Built under a lock: a thread that sees another's unfinished plan (None) only takes
    # marshmallow's way this once.
    with _PLANS_LOCK:
        if schema not in _PLANS:
            _PLANS[schema] = None  # a schema nested in itself gets no plan
            _PLANS[schema] = _make_plan(schema)
        return _PLANS[schema]


_PLANS_LOCK = threading.RLock()


def _make_plan(schema: Schema) -> _Plan | None:
    hooks = schema._hooks
    if (
        not isinstance(schema, Wire)
        or schema.many
        or schema.dict_class is not dict
        or type(schema).get_attribute is not Schema.get_attribute
        or hooks.get("pre_dump")
        or [name for name, _, _ in hooks.get("post_dump", ())] != ["_omit_none"]
        or type(schema)._omit_none is not Wire._omit_none
    ):
        return None
    plan: list[tuple[str, str, int, t.Any]] = []
    for attr, field in schema.dump_fields.items():
        source = field.attribute or attr
        if (
            field.dump_default is not marshmallow.missing
            or type(field).serialize is not fields.Field.serialize
            or type(field).get_value is not fields.Field.get_value
            or not field._CHECK_ATTRIBUTE
            or "." in source
            or hasattr(dict, source)  # marshmallow would read the dict's attribute
        ):
            return None
        key = _string(field.data_key if field.data_key is not None else attr) + ":"
        inner = field.inner if type(field) is fields.List else field
        if type(inner) is fields.Nested and not inner.many and not inner.schema.many:
            sub = _plan(inner.schema)
            if sub is None:
                return None
            plan.append((source, key, _NESTED if inner is field else _LIST, sub))
        elif type(field) is fields.String:
            plan.append((source, key, _STR, None))
        else:
            plan.append((source, key, _OTHER, (field, attr)))
    return tuple(plan)
