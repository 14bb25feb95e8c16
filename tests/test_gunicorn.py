"""Round trips through a real `gunicorn wsgi:app` on 127.0.0.1, configured as a user would."""

from __future__ import annotations

import json
import os
import pathlib
import stat
import textwrap

import pytest

from conftest import SECRET
from receiver.testing import make_body
from servers import ROOT, gunicorn, post

RECORDER = textwrap.dedent('''
    import json, os
    from receiver import on

    @on(["pushImage", "deleteImage", "uploadChart", "deleteChart"])
    def record(event):
        with open(os.environ["RECORD_FILE"], "a") as f:
            f.write(json.dumps({"action": event.action, "repo": event.repository.full_name,
                                "tags": list(event.tags)}) + "\\n")

    @on("deleteChart")
    def broken(event):
        raise RuntimeError("chart cleanup failed")
''')


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gunicorn")
    (tmp / "recording_handlers.py").write_text(RECORDER)
    record = tmp / "record.jsonl"
    env = {"RECEIVER_HANDLERS": "recording_handlers", "RECORD_FILE": str(record),
           "RECEIVER_AUTH_HEADERS": json.dumps({"Authentication": SECRET})}
    with gunicorn(env, tmp, workers=2) as (url, log):
        yield url, record, log


def records(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_seed_body_reaches_the_handler(server, seed_body):
    """The documented body, posted over HTTP with the header, runs the user's handler."""
    url, record, log = server
    status, answer = post(url + "/webhook", seed_body, {"Authentication": SECRET})
    assert (status, answer) == (200, {"action": "pushImage", "handlers": 1})
    assert {"action": "pushImage", "repo": "public/nginx", "tags": ["v1.10.0"]} in records(record)


def test_refusals_over_http(server):
    """Over real HTTP: 401 without the header, 415 for a form, 400 for deep nesting, 200 ping."""
    url, record, log = server
    before = len(records(record))
    assert post(url + "/webhook", make_body())[0] == 401
    assert post(url + "/webhook", b"a=b", {"Authentication": SECRET,
                "Content-Type": "application/x-www-form-urlencoded"})[0] == 415
    assert post(url + "/webhook", b"[" * 60000 + b"]" * 60000, {"Authentication": SECRET})[0] == 400
    assert post(url + "/webhook", b"", {})[0] == 200
    assert len(records(record)) == before


def test_failed_handler_answers_500_and_others_still_run(server):
    """A handler raising under gunicorn gives the registry a 500; the recorder still ran."""
    url, record, log = server
    status, answer = post(url + "/webhook", make_body("deleteChart", "charts/web", ["1.0.0"]),
                          {"Authentication": SECRET})
    assert status == 500 and answer["handlers"] == 2
    assert {"action": "deleteChart", "repo": "charts/web", "tags": ["1.0.0"]} in records(record)


def test_log_has_a_line_per_request_and_no_secret(server):
    """gunicorn's output has the per-request line, and the secret never appears."""
    url, record, log = server
    post(url + "/webhook", make_body("pushImage", "ns/logged", ["t1"]), {"Authentication": SECRET})
    post(url + "/webhook", make_body(), {"Authentication": "not-" + SECRET})
    text = log.read_text()
    assert "pushImage ns/logged tags=t1 status=200 handlers=1 duration=" in text
    assert "rejected status=401 reason=wrong value for auth header 'Authentication'" in text
    assert SECRET not in text


def test_example_deploy_on_push_runs_kubectl(tmp_path):
    """examples/deploy_on_push.py runs `kubectl set image` with the digest for a v* push."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "kubectl-calls"
    fake = bin_dir / "kubectl"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = {"RECEIVER_HANDLERS": "deploy_on_push", "DEPLOY_NAMESPACE": "prod",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    digest = "sha256:" + "d" * 64
    with gunicorn(env, tmp_path, paths=[ROOT / "examples"]) as (url, log):
        ok = post(url + "/webhook", make_body("pushImage", "prod/team/api", ["v1.4.0", "latest"],
                                              digest=digest, host="reg.io"))
        skipped = post(url + "/webhook", make_body("pushImage", "staging/api", ["v2"]))
    assert ok == (200, {"action": "pushImage", "handlers": 1})
    assert skipped == (200, {"action": "pushImage", "handlers": 0})
    assert calls.read_text().splitlines() == [
        f"set image deployment/api api=reg.io/prod/team/api@{digest}"]


def test_chunked_bodies(tmp_path, seed_body):
    """A chunked body (no Content-Length) is read whole, and held to RECEIVER_MAX_BODY."""
    import http.client

    def send(chunks):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", "/webhook", body=iter(chunks), encode_chunked=True,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        try:
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    with gunicorn({"RECEIVER_MAX_BODY": "1000"}, tmp_path) as (url, log):
        host, port = url.removeprefix("http://").split(":")
        assert send([seed_body[:100], seed_body[100:]]) == (200, {"action": "pushImage", "handlers": 0})
        assert send([b" " * 600] * 4) == (413, {"error": "body is larger than the limit of 1000 bytes"})

        # A malformed chunk size is the client's mistake: 400, not a 500.
        import socket

        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
            answer = sock.recv(65536).decode()
        assert answer.startswith("HTTP/1.1 400 "), answer
        assert "body could not be read" in answer


def test_bad_setting_stops_gunicorn_with_one_line(tmp_path):
    """A wrong RECEIVER_* setting stops gunicorn (exit 3) with one clear line, no traceback."""
    import subprocess
    import sys

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")},
           "RECEIVER_MAX_BODY": "lots", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "-b", "127.0.0.1:0", "--chdir", str(ROOT)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 3
    assert ("receiver: configuration error: RECEIVER_MAX_BODY must be a positive number of bytes,"
            " got 'lots'") in proc.stderr
    assert "Traceback" not in proc.stderr
