"""The wire format: loading, dumping in the seed's order, and round trips for every action."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire import SEED, shape
from receiver.events import ACTIONS, CHART_ACTIONS, Repository, Resource, event_class
from receiver.schemas import UnknownAction, ValidationError, dump_event, load_event



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


def test_dump_keeps_every_key_when_values_are_absent():
    """date_created, digest and operator are dumped as null rather than left out."""
    event = load_event({
        "type": "deleteChart", "occur_at": 5,
        "event_data": {"resources": [{"tag": "0.1.0", "resource_url": "https://h/c.tgz"}],
                       "repository": {"name": "c", "namespace": "n", "repo_full_name": "n/c"}},
    })
    dumped = dump_event(event)
    assert dumped["operator"] is None
    assert list(dumped["event_data"]["repository"]) == [
        "date_created", "name", "namespace", "repo_full_name", "repo_type"]
    assert dumped["event_data"]["repository"]["date_created"] is None
    assert list(dumped["event_data"]["resources"][0]) == ["digest", "tag", "resource_url"]


def test_whole_seconds_as_float_are_accepted():
    """1589106605.0 is the same time as 1589106605."""
    assert load_event({**SEED, "occur_at": 1589106605.0}) == load_event(SEED)


def test_unknown_keys_are_ignored():
    """New keys from a newer registry are ignored, at every level."""
    body = json.loads(json.dumps(SEED))
    body["new_top"] = 1
    body["event_data"]["custom_attributes"] = {"a": 1}
    body["event_data"]["resources"][0]["scan_overview"] = {}
    assert load_event(body) == load_event(SEED)


def test_unknown_type_raises_unknown_action():
    """A string type this version does not know is UnknownAction, not a validation error."""
    with pytest.raises(UnknownAction) as info:
        load_event({"type": "projectQuota"})
    assert info.value.action == "projectQuota"


@pytest.mark.parametrize("occur_at", [True, "1", -1, 10**12, float("inf"), 1.5])
def test_bad_times_are_refused(occur_at):
    """Times must be Unix seconds within datetime's range; booleans are not numbers."""
    with pytest.raises(ValidationError) as info:
        load_event({**SEED, "occur_at": occur_at})
    assert "occur_at" in info.value.messages


@pytest.mark.parametrize("digest", ["sha256:" + "A" * 64, "sha256:" + "a" * 63, "md5:" + "a" * 64, ""])
def test_bad_digests_are_refused(digest):
    """A digest must be sha256: and 64 lower-case hex digits."""
    body = json.loads(json.dumps(SEED))
    body["event_data"]["resources"][0]["digest"] = digest
    with pytest.raises(ValidationError) as info:
        load_event(body)
    assert info.value.messages == {"event_data": {"resources": {0: {"digest": [
        "Not a valid digest: expected 'sha256:' and 64 lower-case hex digits."]}}}}


# --- round trip --------------------------------------------------------------------------

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._", min_size=1, max_size=12)
times = st.integers(min_value=0, max_value=4_102_444_800).map(
    lambda s: datetime.fromtimestamp(s, tz=timezone.utc))
digests = st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex())


@st.composite
def events(draw):
    action = draw(st.sampled_from(ACTIONS))
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
        operator=draw(st.none() | st.text(max_size=20)),
    )


@given(events())
def test_round_trip(event):
    """load(dump(event)) == event for every action, through real JSON text, on both the
    fast paths and marshmallow's."""
    from receiver.schemas import _schema

    wire = json.loads(json.dumps(dump_event(event)))
    assert load_event(wire) == event
    assert _schema.load(json.loads(json.dumps(_schema.dump(event)))) == event
    assert shape(wire)[0][0] == "type"


# --- the fast path -----------------------------------------------------------------------

json_leaf = st.none() | st.booleans() | st.integers(-2, 2**40) | st.floats() | st.text(max_size=8)
json_any = st.recursive(json_leaf, lambda c: st.lists(c, max_size=2) | st.dictionaries(
    st.text(max_size=4), c, max_size=2), max_leaves=4)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated_bodies(draw):
    body = json.loads(json.dumps(dump_event(draw(events()))))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(body) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = body
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_any)
    return body


@given(events(), st.none() | st.integers() | st.text(max_size=5), st.integers() | st.floats(allow_nan=False))
def test_fast_dump_is_the_schemas_dump_even_for_wrong_types(event, operator, tag):
    """Built by hand with non-str values, an event dumps as the schema dumps it: as text."""
    import dataclasses

    from receiver.schemas import _schema

    odd = dataclasses.replace(event, operator=operator,
                              resources=tuple(dataclasses.replace(r, tag=tag) for r in event.resources))
    assert json.dumps(dump_event(odd)) == json.dumps(_schema.dump(odd))


@given(events())
def test_fast_dump_is_the_schemas_dump(event):
    """dump_event builds exactly what the marshmallow schema dumps, key order included."""
    from receiver.schemas import _schema

    fast, slow = dump_event(event), _schema.dump(event)
    assert fast == slow
    assert json.dumps(fast) == json.dumps(slow)


@given(events())
def test_fast_path_takes_every_valid_body(event):
    """Every body the sender can produce takes the fast path, and yields the schema's event."""
    from receiver.schemas import _fast_load, _schema

    wire = json.loads(json.dumps(_schema.dump(event)))
    fast = _fast_load(wire, "id")
    assert fast is not None and fast == _schema.load(wire) == event


@given(mutated_bodies())
def test_fast_path_never_disagrees_with_the_schema(body):
    """Where the fast path accepts a body, the schema accepts it too, with the same event."""
    from receiver.schemas import _fast_load, _schema

    if not isinstance(body.get("type"), str) or body["type"] not in ACTIONS:
        return
    fast = _fast_load(body, "id")
    try:
        slow = _schema.load(body)
    except ValidationError:
        assert fast is None
    else:
        assert fast is None or fast == slow
