"""The whole round trip from a shell: rules and emit into a real `gunicorn wsgi:app`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from servers import gunicorn

RECORDER = textwrap.dedent('''
    import json, os
    from receiver import on
    from receiver.events import ACTIONS

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
    with gunicorn(server_env, tmp_path) as (url, log):
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
    assert push.stdout.splitlines() == [  # in rule-name order
        "task 1  rule bad-secret  failed  HTTP 401  attempts 1",
        "task 2  rule deploy  success  HTTP 200  attempts 1",
    ]
    assert chart.returncode == 0 and "rule charts  success  HTTP 200" in chart.stdout
    assert other.returncode == 0 and other.stdout == ""
    assert "no enabled rule matches pushImage staging/app:v1" in other.stderr

    received = [json.loads(line) for line in record.read_text().splitlines()]
    assert received == [
        {"action": "pushImage", "repo": "prod/app-api/web", "tags": ["v1.2.0"],
         "digests": [digest], "operator": "100012345"},
        {"action": "uploadChart", "repo": "charts/web", "tags": ["0.3.1"], "digests": [None],
         "operator": None},
    ]
    rows = json.loads(logs.stdout)
    assert sorted((r["rule"], r["status"], r["http_status"]) for r in rows) == [
        ("bad-secret", "failed", 401), ("charts", "success", 200), ("deploy", "success", 200)]
    assert "s3cret" not in logs.stdout and "s3cret" not in log.read_text()
    assert "wrong" not in logs.stdout
