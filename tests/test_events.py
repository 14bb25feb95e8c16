"""Event types: frozen dataclasses, derived names, and the event factory."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from receiver.core.events import ACTIONS, PushImage, Repository, Resource, build_event, event_class

R = pytest.param


def test_events_are_frozen():
    """An event cannot be changed after it is made."""
    event = build_event("pushImage", "ns/app", ["v1"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.operator = "x"  # type: ignore[misc]


def test_each_action_has_its_class():
    """Every wire name maps to a class whose action is that name."""
    for action in ACTIONS:
        assert event_class(action).action == action


def test_full_name_and_digest_reference():
    """A deploy gets namespace/name and the image pinned by digest."""
    digest = "sha256:" + "c" * 64
    event = build_event("pushImage", "prod/team/api", ["v2"], digest=digest, host="reg.io:5000")
    assert event.repository.full_name == "prod/team/api"
    assert event.repository.name == "team/api"
    assert event.resources[0].url == "reg.io:5000/prod/team/api:v2"
    assert event.resources[0].digest_reference == f"reg.io:5000/prod/team/api@{digest}"
    assert event.tags == ("v2",)


def test_charts_have_no_digest_and_a_tgz_url():
    """Chart events carry the version as tag, no digest and the chart's .tgz URL."""
    event = build_event("uploadChart", "charts/web", ["1.2.3"], host="reg.io")
    resource = event.resources[0]
    assert resource.digest is None and resource.digest_reference is None
    assert resource.url == "https://reg.io/chartrepo/charts/charts/web-1.2.3.tgz"
    assert event.repository.created_at is None


def test_build_event_times_are_aware_utc():
    """occurred_at is timezone-aware UTC, in whole seconds."""
    event = build_event("deleteImage", "a/b", ["x"])
    assert event.occurred_at.tzinfo is timezone.utc and event.occurred_at.microsecond == 0
    assert event.repository.created_at is None  # the repository may be gone on delete


@pytest.mark.parametrize("action, name, message", [
    ("pushimage", "a/b", "unknown action 'pushimage'"),
    ("pushImage", "ab", "repository must be 'namespace/name'"),
    ("pushImage", "/b", "repository must be 'namespace/name'"),
    ("pushImage", "Prod/App", "'Prod/App' is not a valid name"),
    ("pushImage", "prod/app:v1", "'prod/app:v1' is not a valid name"),
    ("pushImage", "prod/app@sha256", "is not a valid name"),
    ("pushImage", "prod//app", "is not a valid name"),
])
def test_build_event_refuses_bad_input(action, name, message):
    """Unknown actions and names without a namespace are refused with a clear message."""
    with pytest.raises(ValueError, match=message):
        build_event(action, name)


@pytest.mark.parametrize("action, tag, host, message", [
    ("pushImage", "v 1", "h", "tag 'v 1' is not valid"),
    ("pushImage", "v1;rm", "h", "tag 'v1;rm' is not valid"),
    ("pushImage", "-v1", "h", "tag '-v1' is not valid"),
    ("pushImage", "1.0+b", "h", "tag '1.0+b' is not valid"),
    ("pushImage", "v1", "my host/evil", "host 'my host/evil' is not a valid registry host"),
])
def test_build_event_refuses_bad_tags_and_hosts(action, tag, host, message):
    """Tags and hosts follow the registry's grammar."""
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        build_event(action, "ns/app", [tag], host=host)


def test_one_tag_as_a_string_and_digest_checks():
    """A lone tag string is one tag; a digest the receiver would refuse is refused here too."""
    assert build_event("pushImage", "ns/r", "v1").tags == ("v1",)
    with pytest.raises(ValueError, match="digest 'sha256:AB' must be"):
        build_event("pushImage", "ns/r", ["v1"], digest="sha256:AB")


def test_chart_versions_may_carry_build_metadata():
    """A chart version is SemVer, so '+' is allowed there."""
    assert build_event("uploadChart", "charts/web", ["1.0.0+build.5"]).tags == ("1.0.0+build.5",)


def test_with_resources_keeps_the_type():
    """Narrowing an event's resources keeps its class and other fields."""
    event = PushImage(occurred_at=datetime(2020, 1, 1, tzinfo=timezone.utc),
                      repository=Repository("n", "r"),
                      resources=(Resource(None, "a", "u"), Resource(None, "b", "u")))
    narrowed = event.with_resources(event.resources[1:])
    assert type(narrowed) is PushImage and narrowed.tags == ("b",)


DIGEST = "sha256:" + "d" * 64


def test_build_event_makes_every_action():
    """build_event makes each of the 13 actions, as its own class, with a string operator:
    empty, but for replication and retention what Harbor 2.2 to 2.8 write (the trigger)."""
    from receiver.core.events import REPOSITORY_ACTIONS

    for action in ACTIONS:
        name = "prod/api" if action in REPOSITORY_ACTIONS else None
        event = build_event(action, name, ["v1"] if name else None)
        assert type(event) is event_class(action)
        assert event.operator == ("" if name else "MANUAL"), action


def test_an_artifact_by_digest_has_no_tag():
    """No tag and a digest: one resource without a tag, its URL pinned by the digest."""
    event = build_event("pushImage", "prod/api", (), digest=DIGEST, host="reg.io")
    [resource] = event.resources
    assert (resource.tag, resource.digest) == (None, DIGEST)
    assert resource.url == f"reg.io/prod/api@{DIGEST}"
    assert resource.digest_reference == f"reg.io/prod/api@{DIGEST}" and event.tags == ()
    with pytest.raises(ValueError, match="give a tag, or a digest"):
        build_event("pushImage", "prod/api", ())


def test_scan_events_carry_their_report():
    """A completed scan's severity is the highest it found; failed scans have no results."""
    from receiver.core.events import ScannedResource

    event = build_event("scanningCompleted", "prod/api", ["v1"],
                        vulnerabilities={"Low": 5, "High": 2})
    [r] = event.resources
    assert isinstance(r, ScannedResource)
    assert (r.severity, dict(r.counts), r.total, r.scanner, r.status) == (
        "High", {"Low": 5, "High": 2}, 7, "Trivy", "Success")
    assert build_event("scanningCompleted", "prod/api", ["v1"]).resources[0].severity == "None"
    # A severity without counts is one finding at that severity, not a High scan of nothing.
    [high] = build_event("scanningCompleted", "prod/api", ["v1"], severity="High").resources
    assert (high.severity, dict(high.counts), high.total, high.fixable) == ("High", {"High": 1}, 1, 0)
    [clean] = build_event("scanningCompleted", "prod/api", ["v1"], severity="None").resources
    assert (clean.severity, dict(clean.counts), clean.total) == ("None", {}, 0)
    failed = build_event("scanningFailed", "prod/api", ["v1"]).resources[0]
    assert (failed.severity, failed.status) == (None, "Error")
    assert build_event("scanningStopped", "prod/api", ["v1"]).resources[0].status == "Stopped"


def test_quota_events_have_details_and_no_url():
    """Quota resources carry no URL, as the registry sends them; details have a default."""
    event = build_event("quotaExceed", "prod/api", ["v1"], details="over the limit")
    assert event.details == "over the limit" and event.resources[0].url is None
    assert "85%" in build_event("quotaWarning", "prod/api", ["v1"]).details


def test_replication_and_retention_have_no_repository():
    """Replication and tag retention are built from their own options, with no repository."""
    rep = build_event("replication", status="Error", trigger="SCHEDULE", project="prod",
                      operator="admin")
    assert (rep.status, rep.trigger, rep.source.namespace, rep.operator) == (
        "Error", "SCHEDULE", "prod", "admin")
    ret = build_event("tagRetention", project="prod", retained=3, deleted=["api:v1", "api:v2"])
    assert (ret.project, ret.total, ret.retained, ret.status) == ("prod", 5, 3, "SUCCESS")
    assert [d.name_tag for d in ret.deleted] == ["api:v1", "api:v2"]
    assert build_event("tagRetention").project == "library"


@pytest.mark.parametrize("action, name, kwargs, message", [
    R("pushImage", "a/b", {"severity": "High"}, "severity is only for scanningCompleted", id="severity-on-push"),
    R("quotaExceed", "a/b", {"vulnerabilities": {"High": 1}}, "vulnerabilities is only for", id="counts-on-quota"),
    R("pushImage", "a/b", {"details": "x"}, "details is only for quotaExceed, quotaWarning", id="details-on-push"),
    R("tagRetention", None, {"trigger": "manual"}, "trigger is only for replication", id="trigger-on-retention"),
    R("replication", "a/b", {}, "replication has no repository", id="replication-with-repository"),
    R("tagRetention", None, {"digest": DIGEST}, "tagRetention has no repository", id="retention-with-digest"),
    R("pushImage", None, {}, "pushImage needs a repository", id="push-without-repository"),
    R("scanningCompleted", "a/b", {"severity": "Severe"}, "severity 'Severe' is unknown", id="unknown-severity"),
    R("scanningCompleted", "a/b", {"vulnerabilities": {"Bad": 1}}, "severity 'Bad' is unknown", id="unknown-count-key"),
    R("scanningCompleted", "a/b", {"vulnerabilities": {"High": -1}}, "a count is a whole number", id="negative-count"),
    R("scanningCompleted", "a/b", {"severity": "Low", "vulnerabilities": {"High": 1}},
      "contradicts the vulnerabilities", id="contradiction"),
    R("scanningFailed", "a/b", {"severity": "High"}, "scanningFailed has no results", id="failed-with-results"),
    R("tagRetention", None, {"retained": -1}, "retained must be 0 or more", id="negative-retained"),
    R("tagRetention", None, {"project": "Prod"}, "project 'Prod' is not a valid name", id="bad-project"),
    R("tagRetention", None, {"deleted": ["a b"]}, "must be written 'repo:tag'", id="bad-deleted"),
])
def test_build_event_refuses_options_the_action_has_not(action, name, kwargs, message):
    """An option the action does not have, or a value out of its range, is a ValueError."""
    with pytest.raises(ValueError, match=message):
        build_event(action, name, **kwargs)


def test_replication_is_built_as_harbor_2_2_to_2_8_sends_it():
    """Defaults are Harbor 2.2+'s: trigger MANUAL, which is also the operator (up to 2.8);
    a Success lists the copied artifact, an Error the failed one, other statuses neither;
    the hostname drops the port, as Harbor does."""
    from receiver.core.events import ArtifactOutcome

    rep = build_event("replication", host="harbor.example.com:8443", project="prod")
    assert (rep.status, rep.trigger, rep.operator, rep.hostname) == (
        "Success", "MANUAL", "MANUAL", "harbor.example.com")
    artifact = ArtifactOutcome(type="image", status="Success", name_tag="api [1 item(s) in total]",
                               references=("latest",))
    assert (rep.succeeded, rep.failed) == ((artifact,), ())
    error = build_event("replication", status="Error", trigger="EVENT")
    assert error.operator == "EVENT" and error.succeeded == ()
    assert [(a.status, a.name_tag) for a in error.failed] == [("Error", "api [1 item(s) in total]")]
    for status in ("Running", "Stopped"):
        assert build_event("replication", status=status).succeeded == ()
        assert build_event("replication", status=status).failed == ()
    assert build_event("replication", operator="").operator == ""


def test_retention_operator_is_a_manual_runs():
    """Harbor 2.2 to 2.8 write a manual retention run's trigger, MANUAL, as the operator."""
    assert build_event("tagRetention").operator == "MANUAL"
    assert build_event("tagRetention", operator="Schedule").operator == "Schedule"
