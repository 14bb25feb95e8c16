"""The whole round trip from a shell: rules and emit into a real `gunicorn wsgi:app`."""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import textwrap

from servers import ROOT, gunicorn, wait_for

RECORDER = textwrap.dedent('''
    import json, os
    from receiver import on
    from receiver.core.events import ACTIONS

    @on(ACTIONS)
    def record(event):
        with open(os.environ["RECORD_FILE"], "a") as f:
            f.write(json.dumps({"action": event.action, "repo": event.repository.full_name,
                                "tags": list(event.tags),
                                "digests": [r.digest for r in event.resources],
                                "operator": event.operator}) + "\\n")
''')


def receiver_cli(env, *args):
    return subprocess.run([sys.executable, "-m", "receiver", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_round_trip_through_gunicorn(tmp_path):
    """Rules created from the shell fire real deliveries that the user's handler receives."""
    (tmp_path / "recording_handlers.py").write_text(RECORDER)
    record = tmp_path / "record.jsonl"
    server_env = {"RECEIVER_HANDLERS": "recording_handlers", "RECORD_FILE": str(record),
                  "RECEIVER_AUTH_HEADERS": json.dumps({"Authentication": "s3cret"})}
    env = {**os.environ, "RECEIVER_DB": str(tmp_path / "r.db"), "RECEIVER_SEND_BACKOFF": "0.01"}
    digest = "sha256:" + "e" * 64
    with gunicorn(server_env, tmp_path) as (url, log, _):
        hook = url + "/webhook"
        for args in (
            ["rules", "create", "deploy", "--url", hook, "--namespace", "prod",
             "--repository", "/app*/**", "--tag", "v*", "--header", "Authentication: s3cret"],
            ["rules", "create", "charts", "--url", hook, "--action", "uploadChart",
             "--action", "deleteChart", "--header", "Authentication: s3cret"],
            ["rules", "create", "bad-secret", "--url", hook, "--namespace", "prod",
             "--repository", "/app*/**", "--header", "Authentication: wrong"],
            ["rules", "create", "silent", "--url", hook, "--disabled",
             "--header", "Authentication: s3cret"],
        ):
            assert receiver_cli(env, *args).returncode == 0
        push = receiver_cli(env, "emit", "pushImage", "prod/app-api/web:v1.2.0,latest",
                            "--digest", digest, "--operator", "100012345")
        chart = receiver_cli(env, "emit", "uploadChart", "charts/web:0.3.1")
        other = receiver_cli(env, "emit", "pushImage", "staging/app:v1")
        logs = receiver_cli(env, "logs", "--json")

    assert push.returncode == 1  # the bad-secret rule's delivery failed
    assert sorted(push.stdout.splitlines()) == [  # a line as each ends; rows in rule-name order
        "task 1  rule bad-secret  failed  HTTP 401  attempts 1",
        "task 2  rule deploy  success  HTTP 202  attempts 1",
    ]
    assert chart.returncode == 0 and "rule charts  success  HTTP 202" in chart.stdout
    assert other.returncode == 0 and other.stdout == ""
    assert "no enabled rule matches pushImage staging/app:v1" in other.stderr

    wait_for(lambda: len(record.read_text().splitlines()) >= 2 if record.exists() else False)
    received = [json.loads(line) for line in record.read_text().splitlines()]
    assert sorted(received, key=lambda r: r["action"]) == [
        {"action": "pushImage", "repo": "prod/app-api/web", "tags": ["v1.2.0"],
         "digests": [digest], "operator": "100012345"},
        {"action": "uploadChart", "repo": "charts/web", "tags": ["0.3.1"], "digests": [None],
         "operator": getpass.getuser()},  # the sender's default: the OS user, never null
    ]
    rows = json.loads(logs.stdout)
    assert sorted((r["rule"], r["status"], r["http_status"]) for r in rows) == [
        ("bad-secret", "failed", 401), ("charts", "success", 202), ("deploy", "success", 202)]
    assert "s3cret" not in logs.stdout and "s3cret" not in log.read_text()
    assert "wrong" not in logs.stdout


def test_slow_rollout_runs_once_and_the_trigger_log_says_success(tmp_path):
    """examples/deploy_on_push.py with a kubectl slower than the sender's timeout, driven by
    `receiver emit`: the delivery is answered at once (success, one attempt), the rollout
    runs exactly once, and emitting the same body again is a duplicate."""
    from test_gunicorn import fake_program

    calls = tmp_path / "kubectl-calls"
    fake_program(tmp_path / "bin", "kubectl",
                 f'[ "$1" != set ] || sleep 2\nprintf "%s\\n" "$*" >> {calls}\n'
                 '[ "$1" != get ] || printf "api\\told\\n"\n')
    server_env = {"RECEIVER_HANDLERS": "deploy_on_push", "DEPLOY_NAMESPACE": "prod",
                  "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env = {**os.environ, "RECEIVER_DB": str(tmp_path / "r.db"), "RECEIVER_SEND_TIMEOUT": "1",
           "RECEIVER_SEND_BACKOFF": "0.01"}
    digest = "sha256:" + "f" * 64
    with gunicorn(server_env, tmp_path, paths=[ROOT / "examples"]) as (url, log, _):
        assert receiver_cli(env, "rules", "create", "deploy", "--url", url + "/webhook",
                            "--namespace", "prod").returncode == 0
        emit = receiver_cli(env, "emit", "pushImage", "prod/api:v1.0.0", "--digest", digest)
        again = receiver_cli(env, "redeliver", "1")
        wait_for(calls.exists, what="the rollout")
        wait_for(lambda: "succeeded attempt=1" in log.read_text(), what="the job to succeed")
    assert emit.returncode == 0, emit.stderr
    assert emit.stdout.splitlines() == ["task 1  rule deploy  success  HTTP 202  attempts 1"]
    assert again.returncode == 0 and "HTTP 200" in again.stdout  # the duplicate
    get, *rest = calls.read_text().splitlines()
    assert get.startswith("get deployment/api -o jsonpath=")
    assert rest == [f"set image deployment/api api=registry.example.com/prod/api@{digest}",
                    "rollout status deployment/api --timeout=120s"]
