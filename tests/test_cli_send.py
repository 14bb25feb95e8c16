"""The rules, emit, send, logs and redeliver commands, run as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from servers import Target, wait_for

R = pytest.param


def test_rules_lifecycle(cli):
    """Create, show, update, disable, enable, list and delete a rule."""
    assert cli("rules", "create", "deploy", "--url", "http://127.0.0.1:1/h", "--namespace", "prod",
               "--repository", "/app*/**", "--tag", "v*", "--header", "Authentication: s3cret",
               "--description", "部署")[:2] == (0, "created rule deploy\n")
    code, out, _ = cli("rules", "show", "deploy", "--json")
    assert code == 0
    assert json.loads(out) == {
        "name": "deploy", "description": "部署",
        "actions": ["pushImage", "deleteImage", "uploadChart", "deleteChart"],
        "namespace": "prod", "repository": "/app*/**", "tag": "v*", "url": "http://127.0.0.1:1/h",
        "format": "tcr", "headers": [["Authentication", "******"]], "enabled": True,
    }
    assert "s3cret" not in cli("rules", "show", "deploy")[1]
    assert cli("rules", "update", "deploy", "--tag", "release-*", "--action", "pushImage")[0] == 0
    rule = json.loads(cli("rules", "show", "deploy", "--json")[1])
    assert rule["tag"] == "release-*" and rule["actions"] == ["pushImage"]
    assert rule["repository"] == "/app*/**" and rule["headers"] == [["Authentication", "******"]]
    assert cli("rules", "disable", "deploy")[:2] == (0, "disabled rule deploy\n")
    assert json.loads(cli("rules", "list", "--json")[1])[0]["enabled"] is False
    assert cli("rules", "enable", "deploy")[0] == 0
    code, out, _ = cli("rules", "list")
    assert out.splitlines()[0].split() == ["NAME", "ENABLED", "FORMAT", "ACTIONS", "NAMESPACE",
                                           "REPOSITORY", "TAG", "URL"]
    assert out.splitlines()[1].split()[:3] == ["deploy", "yes", "tcr"]
    assert cli("rules", "delete", "deploy")[:2] == (0, "deleted rule deploy\n")
    assert json.loads(cli("rules", "list", "--json")[1]) == []


@pytest.mark.parametrize("args, message", [
    R(["rules", "create", "Bad", "--url", "http://h/"], "error: name 'Bad' is invalid", id="bad-name"),
    R(["rules", "create", "dup", "--url", "http://h/"], "error: a rule named 'dup' already exists", id="duplicate"),
    R(["rules", "create", "x", "--url", "http://h/", "--repository", "/{a"],
      "error: repository pattern: unclosed '{' at position 1 in '/{a'", id="bad-pattern"),
    R(["rules", "create", "x", "--url", "http://h/", "--action", "push"],
      "error: action 'push' is unknown", id="bad-action"),
    R(["rules", "create", "x", "--url", "ftp://h/"], "error: url: 'ftp://h/' must start with http", id="bad-url"),
    R(["rules", "create", "x", "--url", "http://h/", "--header", "Authentication s3cret"],
      "error: a header must be written 'Key: Value'", id="malformed-header"),
    R(["rules", "show", "nope"], "error: no rule named 'nope'", id="unknown-rule"),
    R(["rules", "update", "nope", "--tag", "x"], "error: no rule named 'nope'", id="update-unknown"),
    R(["rules", "enable", "nope"], "error: no rule named 'nope'", id="enable-unknown"),
    R(["rules", "delete", "nope"], "error: no rule named 'nope'", id="delete-unknown"),
    R(["redeliver", "999"], "error: no delivery with task id 999", id="unknown-task"),
    R(["emit", "push", "a/b:c"], "error: receiver emit: Invalid value for 'ACTION'", id="emit-bad-action"),
    R(["emit", "pushImage", "ab"], "error: repository must be 'namespace/name', got 'ab'", id="emit-bad-ref"),
    R(["emit", "pushImage", "prod/api:"], "error: 'prod/api:' has no tag after ':'", id="emit-empty-tag"),
    R(["emit", "pushImage", "prod/api:v1,,v2"], "error: 'prod/api:v1,,v2' has an empty tag",
      id="emit-empty-tag-in-list"),
    R(["emit", "tagRetention", "--project", "prod", "--retained", "1", "--deleted", "nocolon"],
      "error: deleted artifact 'nocolon' must be written 'repo:tag'", id="deleted-without-tag"),
    R(["emit", "pushImage", ":v1"], "error: ':v1' must be NS/REPO, NS/REPO:TAG[,TAG...], NS/REPO@DIGEST",
      id="emit-no-repository"),
    R(["emit", "pushImage", "a/b:v1", "--digest", "sha256:1"], "error: digest 'sha256:1' must be", id="bad-digest"),
    R(["emit", "uploadChart", "a/b:1.0", "--digest", "sha256:" + "a" * 64], "error: charts have no digest",
      id="chart-digest"),
    R(["send", "pushImage", "a/b:v1", "--url", "gopher://x"], "error: url: 'gopher://x' must start", id="send-bad-url"),
    R(["logs", "--status", "weird"], "error: receiver logs: Invalid value for '--status'", id="bad-status"),
    R(["logs", "nope"], "error: no rule named 'nope', and no trigger log for one", id="logs-unknown-rule"),
    R(["emit", "pushImage", "a/b:v1", "--timeout", "nan"], "error: receiver emit: Invalid value for '--timeout'",
      id="nan-timeout"),
    R(["emit", "pushImage", "a/b:v1", "--backoff", "1e308"], "error: receiver emit: Invalid value for '--backoff'",
      id="huge-backoff"),
    R(["emit", "pushImage", "a/b:v1", "--attempts", "99999999999"], "error: receiver emit: Invalid value for '--attempts'",
      id="huge-attempts"),
    R(["redeliver", "99999999999999999999"], "error: receiver redeliver: Invalid value for 'TASK_ID'",
      id="huge-task-id"),
    R(["send", "pushImage", "a/b:v1", "--url", "http://h/", "Authentication: s3cret"],
      "error: receiver send: unexpected extra arguments (a header needs --header 'Key: Value')",
      id="forgotten-header-flag"),
    R(["schema", "extra"], "error: receiver schema: unexpected extra arguments (see --help)",
      id="extra-argument-no-header-hint"),
    R(["rules", "update", "dup"], "error: nothing to change in rule dup: give the fields to change",
      id="update-without-fields"),
    R(["rules", "show", "bad\udcff"], "error: an argument is not valid UTF-8 text", id="not-utf8-arg"),
    R(["emit", "pushImage", "prod/app:v1:v2"], "error: repository 'prod/app:v1' is not a valid name", id="two-colons"),
    R(["emit", "pushImage", "Prod/App:V1"], "error: repository 'Prod/App' is not a valid name", id="upper-case"),
    R(["emit", "pushImage", "prod/app:v 1"], "error: tag 'v 1' is not valid", id="tag-space"),
    R(["emit", "pushImage", "prod/app@sha256:abc"], "error: digest 'sha256:abc' must be", id="digest-ref"),
    R(["emit", "pushImage", "prod/app:v1", "--host", "my host/x"], "error: host 'my host/x' is not", id="bad-host"),
    R(["rules", "create", "x", "--url", "http://h/", "--header", "Authentication: s3cret\x7f"],
      "error: header 'Authentication': the value may not contain control characters", id="control-header"),
    R(["rules", "create", "x", "--url", "http://127.0.\x01.1/"],
      "error: url: 'http://127.0.\\x01.1/' contains a control character", id="control-url"),
    R(["rules", "create", "x", "--url", "http://h/", "--header", "Content-Length: 5"],
      "error: header 'Content-Length' is not allowed", id="framing-header"),
    R(["send", "pushImage", "a/b:v1", "--url", "http://h/", "--header", "Host: s3cret"],
      "error: header 'Host' is not allowed", id="send-framing-header"),
    R(["logs", "7"], "error: no rule named '7', and no trigger log for one (to show task 7: "
      "receiver logs --task 7)", id="logs-task-id-as-rule"),
    R(["logs", "--task", "7"], "error: no delivery with task id 7", id="logs-unknown-task"),
])
def test_every_mistake_is_one_line_and_exit_2(cli, args, message):
    """Each mistake prints one clear line on stderr and exits 2, with no traceback."""
    cli("rules", "create", "dup", "--url", "http://h/")
    code, out, err = cli(*args)
    assert code == 2
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "s3cret" not in err


def test_emit_send_logs_and_redeliver(cli):
    """emit goes through matching rules; send goes to a URL; logs and redeliver read the log."""
    with Target() as target:
        cli("rules", "create", "deploy", "--url", target.url, "--tag", "v*",
            "--header", "Authentication: s3cret")
        cli("rules", "create", "charts", "--url", target.url, "--action", "uploadChart")
        code, out, _ = cli("emit", "pushImage", "prod/app:v1,latest", "--operator", "42")
        assert code == 0
        assert out.splitlines() == ["task 1  rule deploy  success  HTTP 200  attempts 1"]
        code, out, _ = cli("emit", "uploadChart", "charts/web:0.3.1")
        assert out.splitlines() == ["task 2  rule charts  success  HTTP 200  attempts 1"]
        code, out, err = cli("emit", "downloadChart", "charts/web:0.3.1", "--json")
        assert (code, json.loads(out)) == (0, [])
        assert cli("emit", "pullImage", "prod/app:v1")[2] == "no enabled rule matches pullImage prod/app:v1\n"
        code, out, _ = cli("send", "deleteChart", "charts/web:0.3.1", "--url", target.url,
                           "--header", "X-Token: t")
        assert out.splitlines() == ["task 3  rule -  success  HTTP 200  attempts 1"]
        code, out, _ = cli("redeliver", "1")
        assert out.splitlines() == ["task 4  rule deploy  success  HTTP 200  attempts 1"]
        bodies = target.bodies()
    assert [b["type"] for b in bodies] == ["pushImage", "uploadChart", "deleteChart", "pushImage"]
    assert bodies[0] == bodies[3]
    assert [r["tag"] for r in bodies[0]["event_data"]["resources"]] == ["v1"]
    assert bodies[0]["operator"] == "42"
    assert bodies[1]["event_data"]["resources"][0]["resource_url"] == (
        "https://registry.example.com/chartrepo/charts/charts/web-0.3.1.tgz")

    code, out, _ = cli("logs", "--json")
    rows = json.loads(out)
    assert [r["task_id"] for r in rows] == [4, 3, 2, 1]
    assert set(rows[0]) == {"task_id", "rule", "action", "repository", "tags", "status", "http_status",
                            "attempts", "error", "created_at", "updated_at", "url", "body"}
    assert rows[3]["body"] == bodies[0] and rows[3]["tags"] == ["v1"]
    assert "s3cret" not in out
    code, out, _ = cli("logs", "deploy", "--limit", "1")
    lines = out.splitlines()
    assert lines[0].split()[:6] == ["TASK", "RULE", "ACTION", "REPOSITORY", "TAGS", "STATUS"]
    assert lines[1].split()[:6] == ["4", "deploy", "pushImage", "prod/app", "v1", "success"]
    assert len(lines) == 2


def test_redeliver_refuses_headers_for_a_rules_task(cli):
    """A rule's task is sent with the rule's headers; --header there is a mistake, not ignored."""
    with Target() as target:
        cli("rules", "create", "r", "--url", target.url)
        cli("emit", "pushImage", "ns/app:v1")
        code, out, err = cli("redeliver", "1", "--header", "X: y")
    assert code == 2 and "--header is only for tasks sent without a rule" in err


def test_failed_delivery_exits_1_and_is_logged(cli):
    """A delivery that fails makes emit exit 1; the row says failed with the HTTP status."""
    with Target(statuses=[401]) as target:
        cli("rules", "create", "r", "--url", target.url, "--header", "Authentication: wrong")
        code, out, _ = cli("emit", "pushImage", "ns/app:v1")
    assert code == 1
    assert out.strip() == "task 1  rule r  failed  HTTP 401  attempts 1"
    [row] = json.loads(cli("logs", "--status", "failed", "--json")[1])
    assert (row["status"], row["http_status"], row["error"]) == ("failed", 401, "HTTP 401")


@pytest.mark.parametrize("sig, code, message", [
    R(signal.SIGINT, 1, "aborted", id="ctrl-c"),
    R(signal.SIGTERM, 143, "terminated", id="sigterm"),
    R(signal.SIGHUP, 143, "terminated", id="sighup"),
])
def test_interrupting_emit_leaves_no_pending_row(tmp_path, sig, code, message):
    """Ctrl-C or SIGTERM while two targets hang ends the command within a timeout, and
    every row is closed as failed, not left pending and not retried."""
    env = {**os.environ, "RECEIVER_DB": str(tmp_path / "r.db")}
    with Target(hang=60) as a, Target(hang=60) as b:
        for name, target in (("a", a), ("b", b)):
            subprocess.run([sys.executable, "-m", "receiver", "rules", "create", name, "--url",
                            target.url], env=env, check=True, capture_output=True)
        proc = subprocess.Popen([sys.executable, "-m", "receiver", "emit", "pushImage", "ns/a:v1",
                                 "--timeout", "3", "--attempts", "5", "--backoff", "0"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 20
        while not (a.requests and b.requests) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        attempts = len(a.requests) + len(b.requests)
    assert proc.returncode == code and err.strip() == message
    assert attempts == 2  # nothing was retried after the signal
    logs = subprocess.run([sys.executable, "-m", "receiver", "logs", "--json"], env=env,
                          capture_output=True, text=True, check=True)
    rows = json.loads(logs.stdout)
    assert [(r["status"], r["error"]) for r in rows] == [("failed", "interrupted before a final answer")] * 2


@pytest.mark.parametrize("sig", [R(signal.SIGINT, id="ctrl-c"), R(signal.SIGTERM, id="sigterm")])
def test_interrupting_a_single_delivery_logs_the_attempt_it_cut(tmp_path, sig):
    """One delivery runs in the command's own thread, so the signal cuts its POST at once;
    the attempt that was sent is logged, interrupted, and the row ends failed with it."""
    env = {**os.environ, "RECEIVER_DB": str(tmp_path / "r.db")}
    with Target(hang=60) as target:
        proc = subprocess.Popen([sys.executable, "-m", "receiver", "send", "pushImage", "ns/a:v1",
                                 "--url", target.url, "--timeout", "10", "--attempts", "1"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: target.requests, what="the POST")
        proc.send_signal(sig)
        proc.communicate(timeout=30)
    shown = subprocess.run([sys.executable, "-m", "receiver", "logs", "--task", "1", "--json"],
                           env=env, capture_output=True, text=True, check=True)
    task = json.loads(shown.stdout)
    assert (task["status"], task["attempts"], task["error"]) == (
        "failed", 1, "interrupted before a final answer")
    [attempt] = task["attempt_log"]
    assert (attempt["attempt"], attempt["http_status"], attempt["error"]) == (
        1, None, "interrupted before a final answer")
    assert 0 <= attempt["duration_ms"] < 10_000


def test_a_ref_without_a_tag_means_latest(cli):
    """`emit pushImage prod/api` fires for the tag latest, as deliver("pushImage", "prod/api")
    does; a digest with it pins latest to that digest."""
    digest = "sha256:" + "7" * 64
    with Target() as target:
        cli("rules", "create", "r", "--url", target.url)
        assert cli("emit", "pushImage", "prod/api")[0] == 0
        assert cli("emit", "pushImage", "prod/api", "--digest", digest)[0] == 0
        code, _, err = cli("emit", "pushImage", f"prod/api:v1@{digest}", "--digest", digest)
        assert (code, err) == (2, "error: give the digest once: in NS/REPO@DIGEST or with --digest\n")
        bodies = target.bodies()
    assert [[(r["tag"], r["resource_url"]) for r in b["event_data"]["resources"]] for b in bodies] == [
        [("latest", "registry.example.com/prod/api:latest")]] * 2
    assert bodies[1]["event_data"]["resources"][0]["digest"] == digest
    [row, _] = json.loads(cli("logs", "--json")[1])
    assert (row["repository"], row["tags"]) == ("prod/api", ["latest"])


def test_the_help_shows_harbors_auth_header_with_harbor_formats(cli):
    """Wherever --help pairs --format harbor or cloudevents with a header, the header is
    Harbor's only one, Authorization."""
    for command in (["rules", "create"], ["emit"], ["send"]):
        code, out, _ = cli(*command, "--help")
        assert code == 0
        text = " ".join(out.split())
        for fmt in ("harbor", "cloudevents"):
            assert f"'Authentication: s3cret' --format {fmt}" not in text, command
    assert "--header 'Authorization: Bearer s3cret' --format harbor" in " ".join(
        cli("rules", "create", "--help")[1].split())
    assert "--header 'Authorization: Bearer s3cret' --format cloudevents" in " ".join(
        cli("send", "--help")[1].split())
