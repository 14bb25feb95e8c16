"""The webhook endpoint through app.test_client(): every status code and what runs."""

from __future__ import annotations

import copy
import json
import logging
import re

import pytest
from conftest import AUTH, SECRET
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import ROOT
from wire import SEED

from receiver import PushImage, on, signals
from receiver.testing import capture_events, make_body

JSON = {"Content-Type": "application/json"}
R = pytest.param


def post(client, body, headers=None, content_type="application/json"):
    data = json.dumps(body) if isinstance(body, (dict, list)) else body
    return client.post("/webhook", data=data, headers={**AUTH, **(headers or {})},
                       content_type=content_type)


def test_seed_example_is_accepted(client, seed_body):
    """The documented push body with the right header gets 200, the action and the handler count."""
    got = []

    @on("pushImage")
    def deploy(event):
        got.append(event)

    resp = post(client, seed_body)
    assert resp.status_code == 200
    assert resp.get_json() == {"action": "pushImage", "format": "tcr", "handlers": 1}
    assert len(got) == 1
    event = got[0]
    assert isinstance(event, PushImage)
    assert event.repository.full_name == "public/nginx"
    assert event.resources[0].tag == "v1.10.0"
    assert event.occurred_at.tzinfo is not None and event.occurred_at.timestamp() == 1589106605


@pytest.mark.parametrize(
    "headers, reason",
    [
        R({}, "missing auth header 'Authentication'", id="missing"),
        R({"Authentication": "wrong"}, "wrong value for auth header 'Authentication'", id="wrong"),
        R({"Authentication": SECRET + "x"}, "wrong value for auth header 'Authentication'", id="longer"),
        R({"Authentication": ""}, "wrong value for auth header 'Authentication'", id="empty"),
    ],
)
def test_bad_auth_is_401(app, seed_body, headers, reason, caplog):
    """A missing or wrong auth header gets a 401 naming the header, never a secret, and no handler runs."""
    ran = []
    on("pushImage")(ran.append)
    caplog.set_level(logging.DEBUG)
    resp = app.test_client().post("/webhook", data=seed_body, headers={**JSON, **headers})
    assert resp.status_code == 401
    assert resp.get_json() == {"error": reason}
    assert ran == []
    assert SECRET not in resp.get_data(as_text=True) and SECRET not in caplog.text
    assert "wrong" not in caplog.text.replace("wrong value", "")


def test_any_accepted_value_passes(client, seed_body):
    """Either value of a rotating secret is accepted."""
    assert post(client, seed_body, {"Authentication": "old-secret"}).status_code == 200
    assert post(client, seed_body, {"Authentication": SECRET}).status_code == 200


def test_every_configured_header_is_required(seed_body):
    """With two headers configured, one alone is not enough."""
    from receiver import create_app

    app = create_app({"RECEIVER_AUTH_HEADERS": {"X-One": "1", "X-Two": ["2", "two"]}})
    c = app.test_client()
    assert c.post("/webhook", data=seed_body, headers={**JSON, "X-One": "1"}).status_code == 401
    assert c.post("/webhook", data=seed_body,
                  headers={**JSON, "X-One": "1", "X-Two": "two"}).status_code == 202


def test_header_names_are_case_insensitive(client, seed_body):
    """HTTP header names are matched without regard to case."""
    resp = client.post("/webhook", data=seed_body, headers={**JSON, "authentication": SECRET})
    assert resp.status_code == 200


@pytest.mark.parametrize(
    "body, error",
    [
        R(b"{not json", "body is not valid JSON", id="not-json"),
        R(b'{"type": "pushImage"', "body is not valid JSON", id="truncated"),
        R(b"\xff\xfe{}", "body is not UTF-8", id="not-utf8"),
        R('{"type": "pushImage", "x": "caf\u00e9"}'.encode("latin-1"), "body is not UTF-8", id="latin-1"),
        R(b"[" * 60000 + b"]" * 60000, "nested too deeply", id="nested-60000"),
        R(b'{"a":' * 60000 + b"1" + b"}" * 60000, "nested too deeply", id="nested-objects"),
        R(b'{"type": NaN}', "body is not valid JSON", id="nan"),
        R(b'{"occur_at": ' + b"9" * 5000 + b"}",
          "body is not valid JSON here: it holds a number of more than 4300 digits",
          id="huge-number"),
    ],
)
def test_unparseable_body_is_400(client, body, error):
    """A body that is not UTF-8 JSON gets a 400 that says why."""
    resp = post(client, body)
    assert resp.status_code == 400
    assert error in resp.get_json()["error"]


def _seed() -> dict:
    return copy.deepcopy(SEED)


def _with(path: list, value) -> dict:
    body = _seed()
    node = body
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return body


@pytest.mark.parametrize(
    "body, messages",
    [
        R([1, 2], {"_schema": ["The body must be a JSON object."]}, id="array"),
        R(b"\"string\"", {"_schema": ["The body must be a JSON object."]}, id="json-string"),
        R(_with(["occur_at"], "yesterday"),
          {"occur_at": ["Not a valid Unix time: expected whole seconds as a number."]}, id="wrong-type"),
        R(_with(["occur_at"], KeyError), {"occur_at": ["Missing data for required field."]},
          id="missing-field"),
        R(_with(["type"], KeyError), {"type": ["Missing data for required field."]}, id="missing-type"),
        R(_with(["type"], 7), {"type": ["Not a valid string."]}, id="type-not-string"),
        R(_with(["event_data", "resources", 0, "digest"], "sha256:1234"),
          {"event_data": {"resources": {"0": {"digest": [
              "Not a valid digest: expected 'sha256:' and 64 lower-case hex digits "
              "(or 'sha512:' and 128, or 'blake3:' and 64)."]}}}},
          id="bad-digest"),
        R(_with(["event_data", "repository", "repo_full_name"], 5),
          {"event_data": {"repository": {"repo_full_name": ["Not a valid string."]}}},
          id="bad-full-name"),
        R(_with(["event_data", "resources"], {"a": 1}),
          {"event_data": {"resources": ["Not a valid list."]}}, id="resources-not-list"),
    ],
)
def test_invalid_event_is_422(client, body, messages):
    """JSON that is not a valid event gets a 422 with marshmallow's messages keyed by field path."""
    ran = []
    on("pushImage")(ran.append)
    resp = post(client, body)
    assert resp.status_code == 422
    assert resp.get_json() == {"error": "body is not a valid event", "messages": messages}
    assert ran == []


def test_body_over_the_cap_is_413(seed_body):
    """A body over RECEIVER_MAX_BODY gets a 413, whether Content-Length says so or not."""
    from receiver import create_app

    app = create_app({"RECEIVER_MAX_BODY": 100})
    resp = app.test_client().post("/webhook", data=seed_body, headers=JSON)
    assert resp.status_code == 413
    assert resp.get_json() == {"error": "body is larger than the limit of 100 bytes"}


def test_default_cap_is_one_mebibyte(client):
    """The default cap is 1 MiB."""
    assert post(client, b" " * (1024 * 1024) + b"{}").status_code == 413


@pytest.mark.parametrize(
    "content_type",
    [R("application/x-www-form-urlencoded", id="form"), R("text/plain", id="text"),
     R("multipart/form-data; boundary=x", id="multipart")],
)
def test_non_json_content_type_is_415(client, seed_body, content_type):
    """A form or text body gets a 415 naming the content type."""
    resp = post(client, seed_body, content_type=content_type)
    assert resp.status_code == 415
    assert content_type.split(";")[0] in resp.get_json()["error"]


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate, gzip"])
def test_an_encoded_body_is_415_naming_the_encoding(client, seed_body, encoding):
    """A body sent with a Content-Encoding (which the receiver does not decode) gets a 415
    naming it, not a 400 about the bytes or a 202 for a body read as if plain."""
    resp = post(client, seed_body, headers={"Content-Encoding": encoding})
    assert resp.status_code == 415
    assert resp.get_json()["error"] == (
        f"content encoding {encoding!r} is not supported; send the body uncompressed")


def test_identity_encoding_is_plain(client, seed_body):
    assert post(client, seed_body, headers={"Content-Encoding": "identity"}).status_code == 200


def test_json_suffix_types_are_accepted(client, seed_body):
    """application/*+json (CloudEvents, say) counts as JSON."""
    assert post(client, seed_body, content_type="application/cloudevents+json").status_code == 200


def test_empty_body_is_a_ping(app):
    """An empty POST without auth is the registry's test ping: 200, no handler."""
    ran = []
    on("pushImage")(ran.append)
    with capture_events() as events:
        resp = app.test_client().post("/webhook", headers={"Content-Type": "application/json"})
    assert resp.status_code == 200
    assert resp.get_json() == {"ping": True}
    assert ran == [] and events == []


def test_unknown_type_is_acknowledged_and_ignored(client):
    """A well-formed body with an unknown type gets a 202, event_ignored, and no handler."""
    ran, ignored = [], []
    on("pushImage")(ran.append)

    def record(sender, action, data, format, **extra):
        ignored.append((sender, action, data, format))

    body = {"type": "ARTIFACT_SIGNED", "occur_at": 1, "event_data": {}}
    with signals.event_ignored.connected_to(record):
        resp = post(client, body)
    assert resp.status_code == 202
    assert resp.get_json() == {"ignored": True, "type": "ARTIFACT_SIGNED", "format": "harbor",
                               "handlers": 0}
    assert ran == []
    assert ignored == [(client.application, "ARTIFACT_SIGNED", body, "harbor")]


@pytest.mark.parametrize("body", [
    R(b'{"type": "\\ud800"}', id="type"),
    R(b'{"type": "pushImage", "operator": "a\\udc00b"}', id="operator"),
])
def test_lone_surrogate_is_400(client, body):
    """A JSON escape that is no character ("\\ud800") is refused: handlers could not print it."""
    resp = post(client, body)
    assert resp.status_code == 400
    assert "lone UTF-16 surrogate" in resp.get_json()["error"]


def test_surrogate_pairs_are_fine(client):
    """An escaped pair is one real character (an emoji here) and passes."""
    body = json.dumps(make_body("pushImage", "ns/app", ["v1"], operator="\U0001F600"))
    assert "\\ud83d\\ude00" in body
    assert post(client, body).status_code == 200


def test_failing_signal_observers_never_turn_bad_input_into_a_500(client, seed_body):
    """A broken request_rejected or event_ignored receiver is logged, not a 500."""
    def broken(sender, **extra):
        raise RuntimeError("observer")

    with signals.request_rejected.connected_to(broken), signals.event_ignored.connected_to(broken):
        assert post(client, b"{").status_code == 400
        assert post(client, {"type": "artifactSigned"}).status_code == 202


def test_chunked_body_the_server_cannot_read_is_411(client, seed_body):
    """A chunked body under a server that does not end it for us is 411, not an empty ping."""
    import io

    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path="/webhook", method="POST", data=seed_body,
                             headers={**AUTH, "Content-Type": "application/json"}).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input"] = io.BytesIO(seed_body)
    environ.pop("wsgi.input_terminated", None)
    resp = client.open(environ)
    assert resp.status_code == 411
    assert "send Content-Length" in resp.get_json()["error"]


def test_failing_handler_does_not_stop_others(client, seed_body, caplog):
    """One handler raising still runs the rest; the answer is 500 and handler_failed is sent."""
    ran, failures = [], []

    @on("pushImage")
    def broken(event):
        raise RuntimeError("deploy failed")

    @on("pushImage")
    def fine(event):
        ran.append(event)

    def record(sender, handler, event, exception, **extra):
        failures.append((handler, event.action, str(exception)))

    with signals.handler_failed.connected_to(record):
        resp = post(client, seed_body)
    assert resp.status_code == 500
    answer = resp.get_json()
    assert answer["handlers"] == 2 and answer["error"] == "handler failed"
    assert answer["failed"] == [f"{__name__}.test_failing_handler_does_not_stop_others.<locals>.broken"]
    assert len(ran) == 1
    assert failures == [(broken, "pushImage", "deploy failed")]
    assert "deploy failed" in caplog.text


def test_filters_choose_handlers(client):
    """on() filters by namespace, repository and tag; the count reports only handlers that ran."""
    calls = []
    on("pushImage", namespace="prod", repository="/app*/**", tag="v*")(
        lambda e: calls.append(("filtered", e.tags)))
    on(["pushImage", "deleteImage"])(lambda e: calls.append(("all", e.tags)))
    resp = post(client, make_body("pushImage", "prod/app-api/web", ["latest", "v2"]))
    assert resp.get_json() == {"action": "pushImage", "format": "tcr", "handlers": 2}
    assert sorted(calls) == [("all", ("latest", "v2")), ("filtered", ("v2",))]
    calls.clear()
    for body in (make_body("pushImage", "test/app-api", ["v2"]),
                 make_body("pushImage", "prod/web", ["v2"]),
                 make_body("pushImage", "prod/app", ["latest"])):
        assert post(client, body).get_json()["handlers"] == 1
    assert [c[0] for c in calls] == ["all", "all", "all"]


@pytest.mark.parametrize("path", sorted((ROOT / "receiver" / "samples").glob("*/*.json")),
                         ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_action_of_every_format_reaches_its_signal(client, path):
    """Each sample body, posted with its format's content type, reaches its action's own
    signal as the typed event of its format."""
    from receiver.core.events import event_class
    from receiver.core.formats import FORMATS

    fmt, action = path.parent.name, path.stem.split("-")[0]
    seen = []
    on(action)(seen.append)
    resp = client.post("/webhook", data=path.read_bytes(), headers={
        "Content-Type": FORMATS[fmt].content_type, **AUTH})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json() == {"action": action, "format": fmt, "handlers": 1}
    assert type(seen[0]) is event_class(action) and seen[0].format == fmt


def test_signals_carry_the_app_as_sender(client, seed_body):
    """event_received is sent with the real app object before handlers run."""
    order = []
    on("pushImage")(lambda e: order.append("handler"))

    def received(sender, event, **extra):
        order.append(("received", sender))

    with signals.event_received.connected_to(received):
        post(client, seed_body)
    assert order == [("received", client.application), "handler"]


def test_request_rejected_signal(client):
    """request_rejected carries the status and the reason."""
    seen = []

    def record(sender, status, reason, **extra):
        seen.append((status, reason))

    with signals.request_rejected.connected_to(record):
        post(client, b"{", )
        client.post("/webhook", data="{}", content_type="application/json")
    assert seen == [(400, "body is not valid JSON: Expecting property name enclosed in double "
                     "quotes: line 1 column 2 (char 1)"), (401, "missing auth header 'Authentication'")]


def test_one_log_line_per_request(client, caplog):
    """Each request logs one line with action, repository, tags, status, handlers, duration,
    event id and the client's address."""
    caplog.set_level(logging.INFO, logger="receiver")
    on("pushImage")(lambda e: None)
    from receiver.web.app import log_event
    signals.event_received.disconnect(log_event)  # keep only the request line
    post(client, make_body("pushImage", "prod/api", ["v1", "v2"]))
    lines = [r.getMessage() for r in caplog.records if r.name == "receiver"]
    assert len(lines) == 1
    assert lines[0].startswith("pushImage prod/api tags=v1,v2 format=tcr status=200 handlers=1 duration=")
    assert re.search(r" duration=[0-9.]+ms event=[0-9a-f]{32} client=127\.0\.0\.1$", lines[0])


def test_log_lines_cannot_be_forged(client, caplog):
    """Newlines in a repository name, tag or unknown type are escaped in the log."""
    caplog.set_level(logging.INFO, logger="receiver")
    body = make_body("pushImage", "ns/app", ["v1"])
    body["event_data"]["repository"].update(name="app\nFORGED", repo_full_name="ns/app\nFORGED")
    assert post(client, body).status_code == 200
    assert post(client, {"type": "x\nFORGED"}).status_code == 202
    assert not any(line.startswith("FORGED") for line in caplog.text.splitlines())
    assert "'ns/app\\nFORGED'" in caplog.text


def test_no_handler_module_logs_each_event(monkeypatch, caplog):
    """With no RECEIVER_HANDLERS, every event is logged, so the bare server is useful."""
    from receiver import create_app

    caplog.set_level(logging.INFO, logger="receiver")
    monkeypatch.delenv("RECEIVER_HANDLERS", raising=False)
    app = create_app({})
    body = make_body("pushImage", "prod/api", ["v1"], digest="sha256:" + "ab" * 32)
    resp = app.test_client().post("/webhook", json=body)
    assert resp.status_code == 202
    assert f"event pushImage prod/api tag=v1 digest=sha256:{'ab' * 32}" in caplog.text


def test_no_auth_warns_at_start_up(caplog):
    """With no auth configured every request is accepted, and start-up says so."""
    from receiver import create_app

    caplog.set_level(logging.INFO, logger="receiver")
    app = create_app({"RECEIVER_AUTH_HEADERS": {}})
    assert "NO AUTH" in caplog.text
    assert app.test_client().post("/webhook", json=make_body()).status_code == 202


def test_healthz(client):
    """GET /healthz answers 200."""
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok"}


def test_wrong_method_is_json_405(client):
    """A GET on the webhook path gets a JSON 405."""
    resp = client.get("/webhook")
    assert resp.status_code == 405
    assert resp.get_json() == {"error": "The method is not allowed for the requested URL."}


# --- fuzz --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
seed_keys = st.sampled_from(["type", "occur_at", "event_data", "operator", "resources",
                             "repository", "digest", "tag", "resource_url", "name", "namespace",
                             "repo_full_name", "date_created", "repo_type"])
event_like = st.recursive(
    st.none() | st.integers() | st.text(max_size=5) | st.sampled_from(["pushImage", "uploadChart"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(seed_keys, children, max_size=5),
    max_leaves=25,
)
fuzz_settings = settings(max_examples=150, deadline=None,
                         suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz_settings
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_never_5xx(client, data):
    """Random bytes never get a 5xx."""
    assert post(client, data).status_code < 500


@fuzz_settings
@given(st.one_of(json_values, event_like))
def test_fuzz_random_json_never_5xx(client, value):
    """Random JSON, and random event-shaped JSON, never get a 5xx."""
    resp = post(client, json.dumps(value))
    assert resp.status_code < 500
    assert resp.status_code in (200, 202, 400, 422)
