"""Event types: frozen dataclasses, derived names, and the event factory."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

import pytest

from receiver.events import ACTIONS, PushImage, Repository, Resource, build_event, event_class


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
    event = PushImage(datetime(2020, 1, 1, tzinfo=timezone.utc), Repository("n", "r"),
                      (Resource(None, "a", "u"), Resource(None, "b", "u")))
    narrowed = event.with_resources(event.resources[1:])
    assert type(narrowed) is PushImage and narrowed.tags == ("b",)
