"""Round trips through a real `gunicorn wsgi:app` on 127.0.0.1, configured as a user would."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import stat
import subprocess
import sys
import textwrap

import pytest
from conftest import SECRET
from servers import ROOT, gunicorn, post, wait_for

from receiver.core.schemas import event_id
from receiver.testing import make_body

RECORDER = textwrap.dedent('''
    import json, os
    from receiver import on

    @on(["pushImage", "deleteImage", "uploadChart", "deleteChart"])
    def record(event):
        with open(os.environ["RECORD_FILE"], "a") as f:
            f.write(json.dumps({"action": event.action, "repo": event.repository.full_name,
                                "tags": list(event.tags), "id": event.id}) + "\\n")

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
           "RECEIVER_AUTH_HEADERS": json.dumps({"Authentication": SECRET}),
           "RECEIVER_HANDLER_ATTEMPTS": "2", "RECEIVER_HANDLER_BACKOFF": "0.05"}
    with gunicorn(env, tmp, workers=2) as (url, log, _):
        yield url, record, log


def records(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_seed_body_is_queued_and_reaches_the_handler(server, seed_body):
    """The documented body, posted with the header, is answered 202 and runs the handler."""
    url, record, log = server
    status, answer = post(url + "/webhook", seed_body, {"Authentication": SECRET})
    eid = event_id(json.loads(seed_body))
    assert (status, answer) == (202, {"action": "pushImage", "format": "tcr", "event_id": eid, "handlers": 1})
    wait_for(lambda: any(r["id"] == eid for r in records(record)), what="the handler's record")
    assert {"action": "pushImage", "repo": "public/nginx", "tags": ["v1.10.0"],
            "id": eid} in records(record)


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


def test_the_same_body_three_times_across_two_workers_runs_once(server):
    """A registry retrying the same bytes 3 times, over new connections that two gunicorn
    workers share, gets one 202 and two duplicates; the handler runs once."""
    url, record, log = server
    body = json.dumps(make_body("pushImage", "prod/once", ["v9"])).encode()
    answers = [post(url + "/webhook", body, {"Authentication": SECRET}) for _ in range(3)]
    eid = event_id(json.loads(body))
    assert answers[0] == (202, {"action": "pushImage", "format": "tcr", "event_id": eid, "handlers": 1})
    assert answers[1:] == [(200, {"action": "pushImage", "format": "tcr", "event_id": eid, "duplicate": True,
                                  "handlers": 0})] * 2
    wait_for(lambda: any(r["id"] == eid for r in records(record)))
    # Give a wrongly queued second job every chance to run before counting.
    post(url + "/webhook", make_body("pushImage", "prod/after", ["v1"]), {"Authentication": SECRET})
    wait_for(lambda: any(r["repo"] == "prod/after" for r in records(record)))
    assert [r["id"] for r in records(record)].count(eid) == 1


def test_a_failing_handler_does_not_run_its_sibling_again(server):
    """One handler failing is retried alone until dead; the recorder ran once, and the log
    says each attempt failed without the secret."""
    url, record, log = server
    status, answer = post(url + "/webhook", make_body("deleteChart", "charts/web", ["1.0.0"]),
                          {"Authentication": SECRET})
    assert status == 202 and answer["handlers"] == 2
    wait_for(lambda: "attempt 2 of 2, dead" in log.read_text(), what="the job to be dead")
    text = log.read_text()
    assert "handler recording_handlers.broken failed on deleteChart charts/web" in text
    assert "attempt 1 of 2, will retry" in text
    assert [r["repo"] for r in records(record)].count("charts/web") == 1


def test_log_has_a_line_per_request_and_no_secret(server):
    """gunicorn's output has the per-request line, and the secret never appears."""
    url, record, log = server
    post(url + "/webhook", make_body("pushImage", "ns/logged", ["t1"]), {"Authentication": SECRET})
    post(url + "/webhook", make_body(), {"Authentication": "not-" + SECRET})
    wait_for(lambda: "pushImage ns/logged tags=t1 format=tcr status=202 handlers=1 duration=" in log.read_text())
    text = log.read_text()
    assert "rejected status=401 reason=\"wrong value for auth header 'Authentication'\"" in text
    assert SECRET not in text


def test_healthz_and_readyz(server):
    """/healthz is alive; /readyz says the queue is ready."""
    url, record, log = server
    import urllib.request

    with urllib.request.urlopen(url + "/readyz", timeout=5) as resp:
        answer = json.loads(resp.read())
    assert answer == {"status": "ready"}


def test_sync_mode_answers_500_when_a_handler_failed(tmp_path):
    """RECEIVER_QUEUE=sync runs handlers in the request, as the first version did: 500 when
    one failed, and the other still ran."""
    (tmp_path / "recording_handlers.py").write_text(RECORDER)
    record = tmp_path / "record.jsonl"
    env = {"RECEIVER_HANDLERS": "recording_handlers", "RECORD_FILE": str(record),
           "RECEIVER_QUEUE": "sync"}
    with gunicorn(env, tmp_path) as (url, log, _):
        status, answer = post(url + "/webhook", make_body("deleteChart", "charts/web", ["1.0.0"]))
        ok = post(url + "/webhook", make_body("pushImage", "ns/ok", ["v1"]))
    assert status == 500 and answer["handlers"] == 2
    assert answer["failed"] == ["recording_handlers.broken"]
    assert ok == (200, {"action": "pushImage", "format": "tcr", "handlers": 1})
    assert [r["repo"] for r in records(record)] == ["charts/web", "ns/ok"]


def fake_program(bin_dir: pathlib.Path, name: str, script: str) -> None:
    """An executable *name* on *bin_dir* running the shell *script*."""
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / name
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)


def test_example_deploy_on_push_runs_kubectl(tmp_path):
    """examples/deploy_on_push.py runs `kubectl set image` with the digest for a v* push."""
    calls = tmp_path / "kubectl-calls"
    # It records each call, and answers `get` as a deployment whose container api runs
    # another image.
    fake_program(tmp_path / "bin", "kubectl",
                 f'printf "%s\\n" "$*" >> {calls}\n[ "$1" != get ] || printf "api\\told\\n"\n')
    env = {"RECEIVER_HANDLERS": "deploy_on_push", "DEPLOY_NAMESPACE": "prod",
           "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    digest = "sha256:" + "d" * 64
    with gunicorn(env, tmp_path, paths=[ROOT / "examples"]) as (url, log, _):
        ok = post(url + "/webhook", make_body("pushImage", "prod/team/api", ["v1.4.0", "latest"],
                                              digest=digest, host="reg.io"))
        skipped = post(url + "/webhook", make_body("pushImage", "staging/api", ["v2"]))
        wait_for(lambda: calls.exists() and len(calls.read_text().splitlines()) == 3,
                 what="kubectl get, set image and rollout status")
    assert ok[0] == 202 and ok[1]["handlers"] == 1
    assert skipped[0] == 202 and skipped[1]["handlers"] == 0
    get, *rest = calls.read_text().splitlines()
    assert get.startswith("get deployment/api -o jsonpath=")
    assert rest == [f"set image deployment/api api=reg.io/prod/team/api@{digest}",
                    "rollout status deployment/api --timeout=120s"]


def _answer(sock: socket.socket) -> str:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks).decode()


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

    with gunicorn({"RECEIVER_MAX_BODY": "1000"}, tmp_path) as (url, log, _):
        host, port = url.removeprefix("http://").split(":")
        status, answer = send([seed_body[:100], seed_body[100:]])
        assert (status, answer["action"], answer["handlers"]) == (202, "pushImage", 0)
        assert send([b" " * 600] * 4) == (413, {"error": "body is larger than the limit of 1000 bytes"})

        # A malformed chunk size is the client's mistake: 400, not a 500.
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Connection: close\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n")
            answer = _answer(sock)
        assert answer.startswith("HTTP/1.1 400 "), answer
        assert "body could not be read" in answer


def test_body_cut_short(tmp_path, seed_body):
    """A client that ends its body before its Content-Length gets a 400 saying how much came."""
    with gunicorn({}, tmp_path) as (url, log, _):
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 500\r\n\r\n" + seed_body[:100])
            sock.shutdown(socket.SHUT_WR)
            answer = _answer(sock)
        assert answer.startswith("HTTP/1.1 400 "), answer
        assert "body could not be read (cut short: 100 of 500 bytes)" in answer


@pytest.mark.parametrize("app", ["wsgi:app", "receiver:create_app()"])
@pytest.mark.parametrize("env, message", [
    pytest.param({"RECEIVER_MAX_BODY": "lots"},
                 "RECEIVER_MAX_BODY must be a positive number of bytes, got 'lots'", id="setting"),
    pytest.param({"RECEIVER_HANDLERS": "broken_syntax"},
                 "RECEIVER_HANDLERS: cannot import 'broken_syntax': SyntaxError: ", id="syntax"),
    pytest.param({"RECEIVER_HANDLERS": "bad_pattern"},
                 "RECEIVER_HANDLERS: cannot import 'bad_pattern': PatternError: unclosed '{' at "
                 "position 1 in '/{a'", id="pattern"),
    pytest.param({"RECEIVER_HANDLERS": "exits"},
                 "RECEIVER_HANDLERS: cannot import 'exits': SystemExit: bye", id="exit"),
    pytest.param({"RECEIVER_HANDLERS": "bad_action"},
                 "RECEIVER_HANDLERS: cannot import 'bad_action': ValueError: unknown action "
                 "'push'", id="action"),
])
def test_bad_setting_stops_gunicorn_with_one_line(tmp_path, app, env, message):
    """A wrong setting or a handler module that fails to import stops gunicorn (exit 3) with
    one line naming it, no traceback, whichever way gunicorn loads the app."""
    (tmp_path / "broken_syntax.py").write_text("def f(:\n")
    (tmp_path / "bad_pattern.py").write_text(
        "from receiver import on\non('pushImage', repository='/{a')(print)\n")
    (tmp_path / "bad_action.py").write_text("from receiver import on\non('push')(print)\n")
    (tmp_path / "exits.py").write_text("raise SystemExit('bye')\n")
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}, **env,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
            "XDG_DATA_HOME": str(tmp_path / "xdg")}
    proc = subprocess.run(
        [sys.executable, "-m", "gunicorn", app, "-b", "127.0.0.1:0", "--chdir", str(ROOT)],
        env=full, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 3
    assert f"receiver: configuration error: {message}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_setting_stops_several_workers_with_one_line(tmp_path):
    """Under the shipped config (three gevent workers here, JSON lines), every worker fails
    alike, but one says why and gunicorn stops with 3: without a second exit 3, which would
    end gunicorn in its own traceback, and with every line JSON."""
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")},
            "RECEIVER_HANDLERS": "no_such_module_xyz", "RECEIVER_LOG_FORMAT": "json",
            "RECEIVER_BIND": "127.0.0.1:0", "WEB_CONCURRENCY": "3",
            "XDG_DATA_HOME": str(tmp_path / "xdg")}
    proc = subprocess.run(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "-c", str(ROOT / "gunicorn.conf.py"),
         "--chdir", str(ROOT)],
        env=full, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 3, proc.stderr
    lines = [json.loads(line) for line in proc.stderr.splitlines()]
    errors = [ln["message"] for ln in lines if "configuration error" in ln["message"]]
    assert errors == ["configuration error: RECEIVER_HANDLERS: cannot import "
                      "'no_such_module_xyz': ModuleNotFoundError: No module named "
                      "'no_such_module_xyz'"]
    assert "Traceback" not in proc.stderr
