"""The formats over HTTP: content types, CloudEvents' binary mode, Harbor's Authorization
header, and the queue keeping one body shape."""

from __future__ import annotations

import json

import pytest
from servers import ROOT

from receiver import create_app, on
from receiver.testing import capture_events, run_jobs

SAMPLES = ROOT / "receiver" / "samples"


def sample(name: str) -> dict:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def _binary(body: dict) -> tuple[dict, bytes]:
    """A structured CloudEvent in binary mode: attributes in ce-* headers, data as the body."""
    headers = {"Content-Type": body["datacontenttype"]}
    for key, value in body.items():
        if key not in ("data", "datacontenttype"):
            headers[f"ce-{key}"] = value
    return headers, json.dumps(body["data"]).encode()


@pytest.fixture()
def harbor_app():
    """As the README configures the receiver for Harbor: one Authorization header."""
    return create_app({"RECEIVER_QUEUE": "sync",
                       "RECEIVER_AUTH_HEADERS": json.dumps({"Authorization": "Bearer h4rb0r"})})


def test_harbor_authorization_header_is_checked(harbor_app):
    client = harbor_app.test_client()
    body = sample("harbor/pushImage")
    ok = client.post("/webhook", json=body, headers={"Authorization": "Bearer h4rb0r"})
    wrong = client.post("/webhook", json=body, headers={"Authorization": "Bearer nope"})
    missing = client.post("/webhook", json=body)
    assert ok.status_code == 200 and ok.get_json()["format"] == "harbor"
    assert (wrong.status_code, missing.status_code) == (401, 401)
    assert "h4rb0r" not in wrong.get_data(as_text=True)


def test_cloudevents_binary_mode_gives_the_same_event_as_structured(harbor_app):
    client = harbor_app.test_client()
    body = sample("cloudevents/pushImage")
    headers, data = _binary(body)
    headers["ce-operator"] = "robot%24prod%2Bci"  # percent-encoded, as the HTTP binding says
    with capture_events() as events:
        structured = client.post("/webhook", json=body, headers={
            "Content-Type": "application/cloudevents+json", "Authorization": "Bearer h4rb0r"})
        binary = client.post("/webhook", data=data,
                             headers={**headers, "Authorization": "Bearer h4rb0r"})
    assert (structured.status_code, binary.status_code) == (200, 200), binary.get_json()
    assert events[0].format == events[1].format == "cloudevents"
    assert events[1].operator == "robot$prod+ci"
    assert events[0].resources == events[1].resources
    assert events[0].repository == events[1].repository


def test_a_cloudevents_content_type_is_structured_mode_whatever_ce_headers_come(harbor_app):
    """The HTTP binding: application/cloudevents+json means structured mode, so stray ce-*
    headers (a proxy that copies them) do not turn the body into binary mode's data."""
    body = sample("cloudevents/pushImage")
    headers, _ = _binary(body)
    resp = harbor_app.test_client().post("/webhook", json=body, headers={
        **headers, "Content-Type": "application/cloudevents+json; charset=utf-8",
        "Authorization": "Bearer h4rb0r"})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["format"] == "cloudevents"


def test_binary_mode_is_queued_as_its_structured_body(tmp_path):
    """A job reads its event from the stored body alone, so binary mode is stored
    structured; the handler gets the CloudEvent's event."""
    app = create_app({"RECEIVER_QUEUE": f"sqlite:///{tmp_path}/q.db", "RECEIVER_WORKERS": 0})
    seen = []
    on("scanningCompleted")(seen.append)
    headers, data = _binary(sample("cloudevents/scanningCompleted"))
    resp = app.test_client().post("/webhook", data=data, headers=headers)
    assert resp.status_code == 202 and resp.get_json()["handlers"] == 1
    assert [job.status for job in run_jobs(app)] == ["succeeded"]
    assert seen[0].format == "cloudevents" and seen[0].resources[0].severity


def test_binary_mode_without_a_type_is_a_422_naming_it(harbor_app):
    headers, data = _binary(sample("cloudevents/pushImage"))
    del headers["ce-type"]
    resp = harbor_app.test_client().post(
        "/webhook", data=data, headers={**headers, "Authorization": "Bearer h4rb0r"})
    assert resp.status_code == 422
    assert "type" in resp.get_json()["messages"]


def test_a_harbor_2_type_is_no_longer_ignored(harbor_app):
    """The bug the issue names: PUSH_ARTIFACT used to get 202 ignored."""
    seen = []
    on("pushImage")(seen.append)
    resp = harbor_app.test_client().post("/webhook", json=sample("harbor/pushImage-digest"),
                                         headers={"Authorization": "Bearer h4rb0r"})
    assert resp.get_json() == {"action": "pushImage", "format": "harbor", "handlers": 1}
    (resource,) = seen[0].resources
    assert resource.tag is None and seen[0].tags == ()
    assert resource.digest_reference == resource.url  # host/ns/repo@sha256:..., once


def test_a_tag_filter_never_matches_a_push_by_digest(harbor_app):
    """A push by digest has no tag, so a handler filtered on tags does not run."""
    seen = []
    on("pushImage", tag="*")(seen.append)
    harbor_app.test_client().post("/webhook", json=sample("harbor/pushImage-digest"),
                                  headers={"Authorization": "Bearer h4rb0r"})
    assert seen == []


RECORDER = '''
import json, os
from receiver import on
from receiver.core.events import ACTIONS, subject

@on(ACTIONS)
def record(event):
    repo, tags = subject(event)
    with open(os.environ["RECORD_FILE"], "a") as f:
        f.write(json.dumps([type(event).__name__, event.format, repo, list(tags)]) + "\\n")
'''


def test_every_sample_comes_out_typed_under_gunicorn(tmp_path):
    """Each sample posted over real HTTP to `gunicorn wsgi:app`, configured for Harbor's
    Authorization header, reaches the user's handler as its typed event; and a binary-mode
    CloudEvent too."""
    from servers import gunicorn, post, wait_for

    from receiver.core.events import event_class
    from receiver.core.formats import FORMATS

    (tmp_path / "recording_handlers.py").write_text(RECORDER)
    record = tmp_path / "record.jsonl"
    env = {"RECEIVER_HANDLERS": "recording_handlers", "RECORD_FILE": str(record),
           "RECEIVER_AUTH_HEADERS": json.dumps({"Authorization": "Bearer h4rb0r"})}
    paths = sorted(SAMPLES.glob("*/*.json"))
    expected = []
    with gunicorn(env, tmp_path) as (url, log, _):
        for path in paths:
            fmt, action = path.parent.name, path.stem.split("-")[0]
            status, answer = post(url + "/webhook", path.read_bytes(), {
                "Content-Type": FORMATS[fmt].content_type, "Authorization": "Bearer h4rb0r"})
            assert (status, answer["format"], answer["action"]) == (202, fmt, action), path
            expected.append([event_class(action).__name__, fmt])
        # In binary mode, as another event (the same one would be answered as a duplicate).
        headers, data = _binary({**sample("cloudevents/quotaWarning"), "id": "another"})
        status, answer = post(url + "/webhook", data, {**headers, "Authorization": "Bearer h4rb0r"})
        assert (status, answer["action"]) == (202, "quotaWarning")
        expected.append(["QuotaWarning", "cloudevents"])
        wait_for(lambda: record.exists() and len(record.read_text().splitlines()) == len(expected),
                 what="every event recorded")
    got = [json.loads(line)[:2] for line in record.read_text().splitlines()]
    assert sorted(got) == sorted(expected)
    assert "h4rb0r" not in log.read_text()


def test_binary_mode_never_queues_an_auth_header_and_an_empty_one_is_no_ping(tmp_path):
    """A ce-* auth header's value is not copied into the queued body; an empty binary-mode
    body is a CloudEvent without data (422 naming it), not the registry's ping."""
    app = create_app({"RECEIVER_QUEUE": f"sqlite:///{tmp_path}/q.db", "RECEIVER_WORKERS": 0,
                      "RECEIVER_AUTH_HEADERS": json.dumps({"ce-token": "t0p-s3cret"})})
    on("pushImage")(lambda event: None)
    client = app.test_client()
    headers, data = _binary(sample("cloudevents/pushImage"))
    resp = client.post("/webhook", data=data, headers={**headers, "ce-token": "t0p-s3cret"})
    assert resp.status_code == 202 and resp.get_json()["handlers"] == 1
    queue = app.extensions["receiver"].queue
    (job,) = queue.jobs()
    body = json.loads(queue.job(job.job_id).body)
    assert body["specversion"] == "1.0" and "token" not in body
    assert "t0p-s3cret" not in json.dumps(body)
    empty = client.post("/webhook", data=b"", headers={**headers, "ce-token": "t0p-s3cret"})
    assert empty.status_code == 422 and "data" in empty.get_json()["messages"]


def test_a_tcr_quota_event_reads_back_as_the_level_it_was_sent_as():
    """TCR has one quota type for both levels; the sender writes a text that says which."""
    from receiver.core.schemas import dump_event, load_event
    from receiver.testing import make_event

    for action, details in (("quotaExceed", "quota usage reach 85%: storage used 9 of 10"),
                            ("quotaWarning", "adding 1 GiB ... will exceed the upper limit"),
                            ("quotaExceed", None), ("quotaWarning", None)):
        event = make_event(action, "prod/api", ["v1"], details=details)
        assert load_event(dump_event(event, "tcr")).action == action, (action, details)
