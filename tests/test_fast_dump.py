"""The sender's fast dump (``receiver.core.formats.common.fast_json``) against the schema's:
the same body, byte for byte, for every action in every format, and marshmallow's dump for
whatever the fast dump leaves to it."""

from __future__ import annotations

import dataclasses
import itertools
import json
import uuid
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from marshmallow import fields, pre_dump
from schema_strategy import from_schema

from receiver.core.events import (
    REPOSITORY_ACTIONS,
    Repository,
    RepositoryEvent,
    Resource,
    build_event,
)
from receiver.core.formats import FORMATS
from receiver.core.formats.common import ResourceSchema, Wire, compact, fast_json
from receiver.core.formats.fields import UnixTime
from receiver.core.formats.jsonschema import json_schema
from receiver.core.schemas import dump_event
from receiver.registry.sender import encode_body

DIGEST = "sha256:" + "ab" * 32
PLAIN = ("pushImage", "pullImage", "deleteImage", "uploadChart", "downloadChart", "deleteChart")
CHARTS = ("uploadChart", "downloadChart", "deleteChart")
ACTIONS = sorted({*REPOSITORY_ACTIONS, "replication", "tagRetention"})


@pytest.fixture(autouse=True)
def fixed_uuids(monkeypatch):
    """CloudEvents' ids are made per dump: the same one each time, so that two dumps of one
    event can be compared."""
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=7))


def marshmallow_body(event, format):
    """What encode_body wrote before the fast dump: the schema's dump, compact."""
    if event.operator is None:
        event = dataclasses.replace(event, operator="")
    return json.dumps(dump_event(event, format), separators=(",", ":"), ensure_ascii=False)


def carries(fmt, action):
    try:
        fmt.wire_type(action)
    except ValueError:
        return False
    return True


def assert_same(event, format, *, fast=True):
    """encode_body gives the schema's body; with *fast*, by the fast dump."""
    fmt = FORMATS[format]
    wire = fmt.wire(event)
    mine = fast_json(fmt.schema, wire)
    if fast:
        assert mine is not None, (event, format)
    if mine is not None:
        assert mine == compact(fmt.schema.dump(wire))
    assert encode_body(event, format) == marshmallow_body(event, format)


def variants(action):
    """One action's events: with and without tags and digests, several resources, every
    operator, unicode and odd names, missing parts."""
    chart = action in CHARTS
    for tags, digest, operator in itertools.product(
        [(), ("v1",), ("1.2.3", "latest", "v2-rc.1")],
        [None, DIGEST],
        [None, "", "admin", "张三 <zh@example.com>", 'quote " back\\slash \n tab\t'],
    ):
        if chart and (digest or not tags):
            continue
        if not tags and not digest:
            tags = None  # build_event's default: latest
        yield build_event(action, "prod/team/app", tags, digest=digest, operator=operator)
    event = build_event(action, "prod/app", ["v1", "v2"])
    assert isinstance(event, RepositoryEvent)
    yield dataclasses.replace(
        event,
        repository=Repository("prod", "ünïcødé/名前/😀", None, None),
        resources=(Resource(None, "ü-tag", None), Resource(DIGEST, None, "h/p/a@" + DIGEST),
                   Resource(DIGEST, DIGEST, "h/p/a:" + DIGEST), Resource(None, None, None)),
    )
    yield dataclasses.replace(event, resources=())
    yield dataclasses.replace(
        event, occurred_at=datetime(1970, 1, 1, tzinfo=timezone.utc),
        repository=Repository("p", "a", "public", datetime(2038, 1, 19, 3, 14, 8,
                                                            tzinfo=timezone.utc)))
    yield dataclasses.replace(event, occurred_at=datetime(2026, 11, 27, 8, 0, 0, 999999,
                                                          tzinfo=timezone.utc))


@pytest.mark.parametrize("action, format", [
    (action, format) for action in PLAIN for format in sorted(FORMATS)
    if carries(FORMATS[format], action)
])
def test_the_common_events_take_the_fast_dump_to_the_same_body(action, format):
    for event in variants(action):
        assert_same(event, format)


@pytest.mark.parametrize("format", sorted(FORMATS))
@pytest.mark.parametrize("action", ACTIONS)
def test_every_action_dumps_the_same(action, format):
    """Scans, quotas, replications and retentions too: their maps and numbers are made by
    the fields' own serialisation."""
    fmt = FORMATS[format]
    if not carries(fmt, action):
        with pytest.raises(ValueError, match=f"no {action} event"):
            encode_body(build_event(action, "prod/app" if action in REPOSITORY_ACTIONS
                                    else None), format)
        return
    full_name = "prod/app" if action in REPOSITORY_ACTIONS else None
    for operator, tags in itertools.product([None, "", "op"], [None, ["v1", "v2"]]):
        if full_name is None:
            tags = None
        assert_same(build_event(action, full_name, tags, operator=operator), format)
    if full_name is not None and action not in CHARTS:
        assert_same(build_event(action, full_name, [], digest=DIGEST), format)
    if action == "quotaExceed":
        assert_same(build_event(action, full_name, details="quota usage reach 85%"), format)


_settings = settings(max_examples=40, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("format", sorted(FORMATS))
def test_bodies_made_from_the_declaration_dump_the_same(format):
    """Any body the format's JSON Schema allows: its event dumps the same both ways."""
    fmt = FORMATS[format]

    @_settings
    @given(from_schema(json_schema(fmt)))
    def check(body):
        event = fmt.load(body, "id")
        assert_same(event, format, fast=False)

    check()


def test_unusual_values_are_left_to_marshmallow():
    """A value the fast dump does not copy as it is (a tag that is not text, a tuple of
    resources) makes it give up; encode_body then writes marshmallow's dump."""
    fmt = FORMATS["tcr"]
    event = build_event("pushImage", "prod/app", ["v1"])
    assert isinstance(event, RepositoryEvent)
    odd = dataclasses.replace(event, resources=(Resource(None, 5, None),))  # type: ignore[arg-type]
    assert fast_json(fmt.schema, fmt.wire(odd)) is None
    assert_same(odd, "tcr", fast=False)
    assert '"tag":"5"' in encode_body(odd)
    wire = fmt.wire(event)
    wire["event_data"]["resources"] = tuple(wire["event_data"]["resources"])
    assert fast_json(fmt.schema, wire) is None
    assert fast_json(fmt.schema, [wire]) is None


def test_the_declaration_is_read_as_marshmallow_reads_it():
    """Keys renamed (data_key) or read from elsewhere (attribute) come out where the schema
    puts them; a schema with a hook of its own, or a default to dump, gets no fast dump."""

    class Renamed(Wire):
        digest = fields.String()
        tag = fields.String(data_key="version", allow_none=True)
        url = fields.String(attribute="resource_url")
        when = UnixTime(attribute="date_created", data_key="created")

    wire = {"digest": DIGEST, "tag": "v1", "resource_url": "h/a:v1", "scan_overview": None,
            "date_created": datetime(2026, 1, 2, tzinfo=timezone.utc)}
    for schema in (Renamed(), Renamed(only=("tag", "url")), ResourceSchema(exclude=("tag",))):
        assert fast_json(schema, wire) == compact(schema.dump(wire))

    class Hooked(Wire):
        name = fields.String()

        @pre_dump
        def _upper(self, data, **kwargs):
            return {k: v.upper() for k, v in data.items()}

    class Defaulted(Wire):
        name = fields.String(dump_default="x")

    class Many(Wire):
        inner = fields.Nested(Hooked)

    for schema in (Hooked(), Defaulted(), Many(), Hooked(many=True)):
        assert fast_json(schema, {"name": "a", "inner": {"name": "b"}}) is None


def test_a_format_with_a_dump_of_its_own_is_not_bypassed(monkeypatch):
    """The fast dump stands in for Format.dump only: a format that overrides it is asked."""
    tcr = FORMATS["tcr"]

    class Special(type(tcr)):  # type: ignore[misc]
        def dump(self, event):
            return {"special": True}

    monkeypatch.setitem(FORMATS, "tcr", Special())
    assert encode_body(build_event("pushImage", "prod/app", ["v1"])) == '{"special":true}'
