"""The TCR format against its documented body; round trips of the first version's actions in
every format. (tests/test_formats.py holds the formats to their declaration.)"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wire import SEED, shape

from receiver.core.events import CHART_ACTIONS, IMAGE_ACTIONS, Repository, Resource, event_class
from receiver.core.schemas import UnknownAction, ValidationError, dump_event, load_event


def test_seed_loads_into_typed_event():
    """The documented body loads into a PushImage with aware UTC times."""
    event = load_event(SEED)
    assert event.action == "pushImage"
    assert event.operator == "332133xxxx"
    assert event.repository == Repository(
        namespace="public", name="nginx", type="public",
        created_at=datetime(2020, 4, 17, 10, 25, 37, tzinfo=timezone.utc),
    )
    assert event.resources == (Resource(digest=SEED["event_data"]["resources"][0]["digest"],
                                        tag="v1.10.0",
                                        url="xxx-bj.tencentcloudcr.com/public/nginx:v1.10.0"),)
    assert event.occurred_at == datetime(2020, 5, 10, 10, 30, 5, tzinfo=timezone.utc)


def test_dump_is_the_seed_byte_for_byte_in_structure():
    """Dumping the loaded seed gives the seed back: same keys, same order, same types."""
    dumped = dump_event(load_event(SEED))
    assert dumped == SEED
    assert shape(dumped) == shape(SEED)
    assert list(json.loads(json.dumps(dumped))) == ["type", "occur_at", "event_data", "operator"]


def test_dump_leaves_out_what_the_registry_leaves_out():
    """As Harbor's omitempty: no date_created, digest or URL when there is none, and the
    operator always a string."""
    event = load_event({
        "type": "deleteChart", "occur_at": 5,
        "event_data": {"resources": [{"tag": "0.1.0"}],
                       "repository": {"name": "c", "namespace": "n", "repo_full_name": "n/c"}},
    })
    dumped = dump_event(event)
    assert dumped["operator"] == ""
    assert list(dumped["event_data"]["repository"]) == ["name", "namespace", "repo_full_name"]
    assert dumped["event_data"]["resources"] == [{"tag": "0.1.0"}]


def test_whole_seconds_as_float_are_accepted():
    """1589106605.0 is the same time as 1589106605."""
    assert load_event({**SEED, "occur_at": 1589106605.0}) == load_event(SEED)


def test_unknown_keys_are_ignored():
    """New keys from a newer registry are ignored, at every level."""
    body = json.loads(json.dumps(SEED))
    body["new_top"] = 1
    body["event_data"]["custom_attributes"] = {"a": "1"}
    body["event_data"]["repository"]["stars"] = 5
    body["event_data"]["resources"][0]["scan_overview"] = {}
    assert load_event(body) == load_event(SEED)


def test_unknown_type_raises_unknown_action():
    """A string type this version does not know is UnknownAction, not a validation error."""
    with pytest.raises(UnknownAction) as info:
        load_event({"type": "artifactSigned"})
    assert info.value.action == "artifactSigned"


@pytest.mark.parametrize("occur_at", [True, "1", -1, 10**12, float("inf"), 1.5])
def test_bad_times_are_refused(occur_at):
    """Times must be Unix seconds within datetime's range; booleans are not numbers."""
    with pytest.raises(ValidationError) as info:
        load_event({**SEED, "occur_at": occur_at})
    assert "occur_at" in info.value.messages


@pytest.mark.parametrize("digest", ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "md5:" + "a" * 64, ""])
def test_bad_digests_are_refused(digest):
    """A digest must be sha256: and 64 lower-case hex digits (or another registered one)."""
    body = json.loads(json.dumps(SEED))
    body["event_data"]["resources"][0]["digest"] = digest
    with pytest.raises(ValidationError) as info:
        load_event(body)
    assert info.value.messages == {"event_data": {"resources": {0: {"digest": [
        "Not a valid digest: expected 'sha256:' and 64 lower-case hex digits "
        "(or 'sha512:' and 128, or 'blake3:' and 64)."]}}}}


# --- round trip --------------------------------------------------------------------------

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._", min_size=1, max_size=12)
times = st.integers(min_value=0, max_value=4_102_444_800).map(
    lambda s: datetime.fromtimestamp(s, tz=timezone.utc))
digests = st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())


@st.composite
def events(draw):
    action = draw(st.sampled_from(IMAGE_ACTIONS + CHART_ACTIONS))
    chart = action in CHART_ACTIONS
    namespace = draw(names)
    name = "/".join(draw(st.lists(names, min_size=1, max_size=3)))
    resources = tuple(
        Resource(digest=None if chart else draw(st.none() | digests),
                 tag=draw(st.none() | names), url=draw(st.text(max_size=40)))
        for _ in range(draw(st.integers(0, 3)))
    )
    return event_class(action)(
        occurred_at=draw(times),
        repository=Repository(namespace=namespace, name=name,
                              type=draw(st.sampled_from([None, "public", "private"])),
                              created_at=draw(st.none() | times)),
        resources=resources,
        operator=draw(st.text(max_size=20)),
    )


@given(events())
def test_round_trip(event):
    """load(dump(event)) == event for every action of the first version, through real JSON
    text, in every format that carries it."""
    for name in ("tcr", "harbor", "cloudevents"):
        if name == "cloudevents" and event.action in CHART_ACTIONS:
            continue
        wire = json.loads(json.dumps(dump_event(event, name)))
        loaded = load_event(wire)
        assert loaded.format == name
        assert dataclasses.replace(loaded, format="tcr") == event
