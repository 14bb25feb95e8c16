"""Every wire format: the shipped samples, the declaration against its fast path and its JSON
Schema, the digest rules, detection, and the typed events of the new actions."""

from __future__ import annotations

import copy
import json
import pathlib

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schema_strategy import from_schema, json_any

from receiver import on
from receiver.core.events import (
    SEVERITIES,
    QuotaWarning,
    Replication,
    RepositoryEvent,
    ScanCompleted,
    TagRetention,
    event_class,
    severity_rank,
)
from receiver.core.formats import FORMATS, detect
from receiver.core.formats.jsonschema import json_schema
from receiver.core.formats.strict import unknown_keys
from receiver.core.schemas import UnknownAction, ValidationError, dump_event, load_event

SAMPLES = pathlib.Path(__file__).parent.parent / "receiver" / "samples"
SAMPLE_FILES = sorted(SAMPLES.glob("*/*.json"))
DIGEST = "sha256:" + "ab" * 32


def sample(path: pathlib.Path) -> dict:
    return json.loads(path.read_text())


def validator(fmt: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        json_schema(FORMATS[fmt]), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_every_format_has_samples_of_every_action_it_carries():
    """The samples cover each format's every action (tcr's projectQuota as both levels)."""
    have = {(p.parent.name, p.stem.split("-")[0]) for p in SAMPLE_FILES}
    for name, fmt in FORMATS.items():
        actions = set(fmt.types.values()) | ({"quotaWarning"} if name == "tcr" else set())
        assert {a for f, a in have if f == name} == actions, name


@pytest.mark.parametrize("path", SAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_samples_load_validate_and_round_trip(path):
    """Each sample loads into its action's class and format, passes its format's JSON Schema
    with no unknown key, and dumps back to a body that loads into the same event."""
    fmt, action = path.parent.name, path.stem.split("-")[0]
    body = sample(path)
    event = load_event(body)
    assert type(event) is event_class(action)
    assert (event.format, event.raw) == (fmt, body)
    validator(fmt).validate(body)
    assert unknown_keys(FORMATS[fmt], body) == []
    again = dump_event(event)
    validator(fmt).validate(again)
    assert load_event(again) == event


# --- one declaration: the fast path and the JSON Schema agree with the loader -------------

def _check_generated(fmt, body):
    event = fmt.load(body, "id")  # whatever the schema allows, the loader takes
    fast = fmt.fast(body, "id")
    assert fast is None or fast == event
    dumped = json.loads(json.dumps(fmt.dump(event)))
    validator(fmt.name).validate(dumped)
    again = fmt.load(dumped, "id")
    if fmt.name == "tcr" and isinstance(event, QuotaWarning):
        assert type(again) is QuotaWarning  # tcr writes a warning's level into its text
    else:
        assert again == event


_settings = settings(max_examples=int(__import__("os").environ.get("FORMATS_EXAMPLES", 30)), deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))


@_settings
@given(from_schema(json_schema(FORMATS["tcr"])))
def test_tcr_declaration_fast_path_and_dump_agree(body):
    """Bodies made from the JSON Schema (written from the declaration) load, take the fast
    path to the same event when they take it, and dump to a body that loads back."""
    _check_generated(FORMATS["tcr"], body)


@_settings
@given(from_schema(json_schema(FORMATS["harbor"])))
def test_harbor_declaration_fast_path_and_dump_agree(body):
    """As for tcr, in Harbor 2.x's format."""
    _check_generated(FORMATS["harbor"], body)


@_settings
@given(from_schema(json_schema(FORMATS["cloudevents"])))
def test_cloudevents_declaration_and_dump_agree(body):
    """As for tcr, in the CloudEvents format (which has no fast path)."""
    _check_generated(FORMATS["cloudevents"], body)


@pytest.mark.parametrize("name", ["tcr", "harbor"])
def test_the_common_bodies_take_the_fast_path(name):
    """A plain push, pull or delete takes the fast path, or the receiver would be slower."""
    fmt = FORMATS[name]
    for action in ("pushImage", "pullImage", "deleteImage", "uploadChart"):
        body = sample(SAMPLES / name / f"{action}.json")
        assert fmt.fast(body, "id") == fmt.load(body, "id")


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, (*prefix, i))


def _declared_keys():
    """Every key any format declares, at any depth."""
    from marshmallow import fields

    keys, seen, stack = set(), set(), [f.schema for f in FORMATS.values()]
    while stack:
        schema = stack.pop()
        if id(schema) in seen:
            continue
        seen.add(id(schema))
        for name, field in schema.fields.items():
            keys.add(field.data_key or name)
            while isinstance(field, (fields.List, fields.Dict)):
                field = field.inner if isinstance(field, fields.List) else field.value_field
            if isinstance(field, fields.Nested):
                stack.append(field.schema)
    return sorted(keys)


DECLARED = _declared_keys()


@st.composite
def mutated_samples(draw):
    """A sample with up to three changes: a key removed, a value replaced by any JSON, or a
    declared key (of any part of any format) added with any JSON value."""
    path = draw(st.sampled_from(SAMPLE_FILES))
    body = sample(path)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(body) if p]
        if not paths:
            break
        where = draw(st.sampled_from(paths))
        parent = body
        for key in where[:-1]:
            parent = parent[key]
        change = draw(st.sampled_from(["delete", "replace", "add"]))
        if change == "add" and isinstance(parent, dict):
            parent[draw(st.sampled_from(DECLARED))] = draw(json_any)
        elif change == "delete" and isinstance(parent, dict):
            del parent[where[-1]]
        else:
            parent[where[-1]] = draw(json_any)
    return path.parent.name, body


@settings(max_examples=10 * int(__import__("os").environ.get("FORMATS_EXAMPLES", 30)), deadline=None, database=None)
@given(mutated_samples())
def test_json_schema_and_loader_accept_and_refuse_the_same_bodies(case):
    """The JSON Schema a team gets is the loader's contract: on samples with keys removed or
    replaced by any JSON, both accept or both refuse; and the fast path, where it takes a
    body, gives the loader's event."""
    name, body = case
    fmt = FORMATS[name]
    schema_ok = validator(name).is_valid(body)
    try:
        event = load_event(body, format=name)
    except ValidationError:
        assert not schema_ok
        assert fmt.fast(body, "x") is None if isinstance(body, dict) else True
        return
    assert schema_ok
    fast = fmt.fast(body, "x")
    assert fast is None or fast == event


def test_a_field_added_to_the_declaration_is_never_skipped_by_the_fast_path():
    """The fast path reads the declaration: a body holding a declared key it does not check
    goes to the schema, and a declaration requiring such a key turns the fast path off."""
    from marshmallow import fields

    from receiver.core.formats.common import ResourceSchema
    from receiver.core.formats.fast import FastPath
    from receiver.core.formats.harbor import TYPES, HarborEnvelope

    body = sample(SAMPLES / "harbor" / "pushImage.json")
    fmt = FORMATS["harbor"]
    assert fmt.fast(body, "id") is not None
    body["event_data"]["resources"][0]["sbom_overview"] = 5  # declared, not checked by hand
    assert fmt.fast(body, "id") is None
    with pytest.raises(ValidationError):
        load_event(body)

    class Resource(ResourceSchema):
        size = fields.Integer(required=True)

    class Envelope(HarborEnvelope):
        event_data = fields.Nested(type("Data", (type(fmt.schema.fields["event_data"].schema),), {
            "resources": fields.List(fields.Nested(Resource))}), required=True)

    fast = FastPath(Envelope(), "harbor", TYPES)
    assert fast.deferred["resource"] == ("scan_overview", "sbom_overview", "size")
    assert not fast.enabled


def test_the_json_schemas_are_valid_draft_2020_12():
    for fmt in FORMATS.values():
        jsonschema.Draft202012Validator.check_schema(json_schema(fmt))


# --- detection ---------------------------------------------------------------------------

def test_format_is_detected_from_the_body():
    tcr, harbor, ce = (sample(SAMPLES / f / "pushImage.json") for f in ("tcr", "harbor", "cloudevents"))
    assert [detect(b).name for b in (tcr, harbor, ce)] == ["tcr", "harbor", "cloudevents"]
    assert detect([]) is None and detect({"type": 3}) is None


@pytest.mark.parametrize("body, fmt", [
    ({"type": "PROJECT_DELETED", "occur_at": 1, "event_data": {}}, "harbor"),
    ({"type": "someNewThing"}, "tcr"),
    ({"specversion": "1.0", "type": "harbor.project.created", "id": "1", "source": "/x",
      "time": "2026-01-01T00:00:00Z", "data": {}}, "cloudevents"),
])
def test_an_unknown_type_is_unknown_action_with_its_likely_format(body, fmt):
    with pytest.raises(UnknownAction) as info:
        load_event(body)
    assert (info.value.action, info.value.format) == (body["type"], fmt)


def test_a_forced_format_refuses_another_formats_body():
    with pytest.raises(ValidationError) as info:
        load_event(sample(SAMPLES / "tcr" / "pushImage.json"), format="harbor")
    assert "type" in info.value.messages


# --- digests ------------------------------------------------------------------------------

def _harbor_push(tag, url, digest=DIGEST):
    body = sample(SAMPLES / "harbor" / "pushImage.json")
    body["event_data"]["resources"] = [{"digest": digest, "tag": tag, "resource_url": url}]
    return body


@pytest.mark.parametrize("url", [
    f"harbor.example.com/prod/api@{DIGEST}",  # Harbor 2.2+
    f"harbor.example.com/prod/api:{DIGEST}",  # Harbor 2.0-2.1
])
def test_a_digest_sent_as_the_tag_is_no_tag(url):
    """Pushed by digest, Harbor sends the digest as the tag: the event has no tag, and the
    pullable reference names the digest once."""
    event = load_event(_harbor_push(DIGEST, url))
    (resource,) = event.resources
    assert (resource.tag, resource.digest, event.tags) == (None, DIGEST, ())
    assert resource.digest_reference == f"harbor.example.com/prod/api@{DIGEST}"


@pytest.mark.parametrize("where, value", [
    ("digest", DIGEST + "\n"),
    ("tag", DIGEST + "\n" + "x" * 130),  # longer than a tag, and not a digest either
])
def test_a_digest_with_a_trailing_newline_is_refused(where, value):
    """Python's ``$`` matches before a final newline; the declaration's patterns do not,
    and neither does the JSON Schema's."""
    body = _harbor_push("v1", "harbor.example.com/prod/api:v1")
    body["event_data"]["resources"][0][where] = value
    with pytest.raises(ValidationError):
        load_event(body)
    assert not validator("harbor").is_valid(body)


def test_a_tagged_resource_keeps_its_tag_and_pins_its_digest():
    event = load_event(_harbor_push("v1", "harbor.example.com/prod/api:v1"))
    assert event.tags == ("v1",)
    assert event.resources[0].digest_reference == f"harbor.example.com/prod/api@{DIGEST}"


def test_an_untagged_scan_url_ending_in_a_colon_still_gives_a_reference():
    """Harbor 2.0-2.2 wrote an untagged artifact's URL as ``repo:``."""
    body = sample(SAMPLES / "harbor" / "scanningCompleted.json")
    resource = body["event_data"]["resources"][0]
    resource.pop("tag")
    resource["resource_url"] = "harbor.example.com/prod/api:"
    event = load_event(body)
    assert event.resources[0].digest_reference == f"harbor.example.com/prod/api@{resource['digest']}"


@pytest.mark.parametrize("digest, ok", [
    ("sha512:" + "c" * 128, True),
    ("sha256:" + "A" * 64, False),
    ("sha256:" + "a" * 63, False),
    ("md5:" + "a" * 32, False),
    ("", False),
])
def test_digests_follow_the_oci_grammar(digest, ok):
    body = _harbor_push("v1", "harbor.example.com/prod/api:v1", digest)
    if ok:
        assert load_event(body).resources[0].digest == digest
    else:
        with pytest.raises(ValidationError) as info:
            load_event(body)
        assert "digest" in info.value.messages["event_data"]["resources"][0]


# --- the new events -----------------------------------------------------------------------

def test_scan_events_carry_severity_counts_and_scanner():
    event = load_event(sample(SAMPLES / "harbor" / "scanningCompleted.json"))
    assert isinstance(event, ScanCompleted)
    (r,) = event.resources
    assert r.severity in SEVERITIES and r.scanner == "Trivy" and r.status == "Success"
    assert sum(r.counts.values()) == r.total
    assert event.severity == r.severity
    assert severity_rank("Critical") > severity_rank("High") > severity_rank("None") >= 0
    assert severity_rank("nonsense") == -1


def test_harbor_1_9_clair_severity_numbers_are_named():
    body = sample(SAMPLES / "tcr" / "scanningCompleted.json")
    body["event_data"]["resources"][0]["scan_overview"] = {
        "image_digest": DIGEST, "scan_status": "finished", "severity": 5}
    assert load_event(body).resources[0].severity == "High"


def test_tcr_project_quota_is_told_apart_by_its_text():
    exceeded = load_event(sample(SAMPLES / "tcr" / "quotaExceed.json"))
    warned = load_event(sample(SAMPLES / "tcr" / "quotaWarning.json"))
    assert (exceeded.action, warned.action) == ("quotaExceed", "quotaWarning")
    assert "exceed" in exceeded.details and exceeded.resources[0].url is None


def test_replication_and_retention_have_no_repository():
    """Their classes do not pretend: no repository, no tags; typed attributes instead."""
    rep = load_event(sample(SAMPLES / "harbor" / "replication.json"))
    ret = load_event(sample(SAMPLES / "cloudevents" / "tagRetention.json"))
    assert isinstance(rep, Replication) and isinstance(ret, TagRetention)
    for event in (rep, ret):
        assert not isinstance(event, RepositoryEvent)
        assert not hasattr(event, "repository") and not hasattr(event, "tags")
    assert rep.status and rep.trigger and rep.source and rep.destination.endpoint
    assert rep.succeeded or rep.failed
    assert ret.status == "SUCCESS" and ret.deleted and ret.project


def test_filters_on_actions_without_a_repository_are_refused():
    with pytest.raises(ValueError, match="replication events have no repository"):
        on("replication", namespace="prod")(lambda event: None)
    on("replication")(lambda event: None)  # without filters, fine


def test_cloudevents_times_keep_fractions_and_offsets():
    body = sample(SAMPLES / "cloudevents" / "pushImage.json")
    body["time"] = "2026-03-14T17:26:49.5+08:00"
    event = load_event(body)
    assert event.occurred_at.isoformat() == "2026-03-14T09:26:49.500000+00:00"
    body["time"] = "2026-02-30T00:00:00Z"
    with pytest.raises(ValidationError, match="time"):
        load_event(body)


def test_dump_refuses_what_a_format_cannot_carry():
    rep = load_event(sample(SAMPLES / "harbor" / "replication.json"))
    with pytest.raises(ValueError, match="tcr format has no replication"):
        dump_event(rep, "tcr")
    chart = load_event(sample(SAMPLES / "harbor" / "uploadChart.json"))
    with pytest.raises(ValueError, match="cloudevents format has no uploadChart"):
        dump_event(chart, "cloudevents")


def test_raw_keeps_what_the_event_does_not_model():
    body = copy.deepcopy(sample(SAMPLES / "cloudevents" / "pushImage.json"))
    body["data"]["resources"][0]["size"] = 123
    event = load_event(body)
    assert event.raw["data"]["resources"][0]["size"] == 123
    assert unknown_keys(FORMATS["cloudevents"], body) == ["data.resources[0].size"]


@pytest.mark.parametrize("overview", [
    {"application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0":
        {"severity": [], "summary": "x", "scanner": 3, "scan_status": {}}},
    {"k": "not an object"},
    {},
])
def test_a_tcr_scan_overview_of_odd_shape_gives_empty_fields_not_an_error(overview):
    """TCR's scan_overview is left free (1.9 and 1.10 differ); odd values read as unknown."""
    body = sample(SAMPLES / "tcr" / "scanningCompleted.json")
    body["event_data"]["resources"][0]["scan_overview"] = overview
    (r,) = load_event(body).resources
    assert (r.severity, r.counts, r.total, r.scanner, r.status) == (None, {}, None, None, None)
