"""The trigger log in depth: a row per attempt, `logs --task`, what emit and send say as they
go, secrets kept out of every row and output, retention, the delivery counters and their
Prometheus text, and stores made by an earlier version."""

from __future__ import annotations

import http.server
import json
import os
import selectors
import sqlite3
import subprocess
import sys
import time
import typing as t

import pytest
from servers import LoopbackServer, Target, wait_for

from receiver.registry.rules import TriggerRule
from receiver.registry.sender import Sender
from receiver.registry.store import Store, iso
from receiver.testing import make_event

R = pytest.param
SECRET = "s3cret-echoed-value"


class Scripted(LoopbackServer):
    """A real HTTP/1.1 server on 127.0.0.1 that answers each POST from a script of
    ``(status, body)`` (the last one repeats); with *echo*, the body is the request's headers
    as JSON, as a debugging endpoint would answer."""

    def __init__(self, answers: t.Sequence[tuple[int, bytes]] = ((200, b""),), *,
                 echo: bool = False) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.requests.append((dict(self.headers), body))
                status, answer = outer.answers[min(len(outer.requests), len(outer.answers)) - 1]
                if echo:
                    answer = json.dumps({"you sent": dict(self.headers)}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: t.Any) -> None:
                pass

        super().__init__(Handler)


def test_each_attempt_is_a_row_with_the_start_of_its_answer(tmp_path):
    """Every attempt is logged: its number, start, duration, status, error and the first
    4 KiB of the answer; the delivery's row keeps its usual fields."""
    big = b"x" * 10_000
    with Scripted([(503, b'{"error": "busy"}'), (500, big), (202, b'{"ok": true}')]) as target, \
            Store(tmp_path / "r.db") as store, Sender(store, backoff=0.01) as sender:
        store.add_rule(TriggerRule("r", target.url))
        [d] = sender.emit(make_event())
        attempts = store.attempts(d.task_id)
    assert (d.status, d.http_status, d.attempts, d.error) == ("success", 202, 3, None)
    assert [(a.attempt, a.http_status, a.error) for a in attempts] == [
        (1, 503, "HTTP 503"), (2, 500, "HTTP 500"), (3, 202, None)]
    assert [a.answer for a in attempts] == [b'{"error": "busy"}', big[:4096], b'{"ok": true}']
    assert all(a.duration_ms >= 0 for a in attempts)
    assert [a.started_at for a in attempts] == sorted(a.started_at for a in attempts)
    assert d.created_at <= attempts[0].started_at


def test_logs_task_shows_the_body_and_every_attempt(cli):
    """`logs --task ID` prints the task, the body it sent and its attempts; with --json one
    object: the usual fields plus attempt_log."""
    with Scripted([(500, b'{"error": "boom"}'), (202, b"queued")]) as target:
        cli("rules", "create", "deploy", "--url", target.url)
        assert cli("emit", "pushImage", "prod/api:v1")[0] == 0
        sent = json.loads(target.requests[0][1])
    code, out, err = cli("logs", "--task", "1", "--json")
    assert (code, err) == (0, "")
    task = json.loads(out)
    usual = json.loads(cli("logs", "--json")[1])[0]
    assert {k: v for k, v in task.items() if k != "attempt_log"} == usual
    assert task["attempts"] == 2 and task["body"] == sent
    assert [set(a) for a in task["attempt_log"]] == [
        {"attempt", "started_at", "duration_ms", "http_status", "error", "answer"}] * 2
    assert [(a["attempt"], a["http_status"], a["error"], a["answer"])
            for a in task["attempt_log"]] == [(1, 500, "HTTP 500", '{"error": "boom"}'),
                                              (2, 202, None, "queued")]
    code, out, _ = cli("logs", "--task", "1")
    assert code == 0
    lines = out.splitlines()
    assert "status:     success" in lines and "body:" in lines
    assert '    "type": "pushImage",' in lines
    first = next(i for i, line in enumerate(lines) if line.startswith("attempt 1: "))
    assert lines[first].endswith("HTTP 500  error: HTTP 500")
    assert lines[first + 1] == '  answer: {"error": "boom"}'
    assert lines[first + 2].startswith("attempt 2: ")
    assert lines[first + 2].endswith("HTTP 202  error: -")
    assert lines[first + 3] == "  answer: queued"


@pytest.mark.parametrize("args, message", [
    R(["logs", "3"], "error: no rule named '3', and no trigger log for one (to show task 3: "
                     "receiver logs --task 3)", id="digits-hint-at-task"),
    R(["logs", "--task", "3"], "error: no delivery with task id 3", id="unknown-task"),
    R(["logs", "--task", "3", "deploy"], "error: --task shows one task: leave out RULE",
      id="task-and-rule"),
    R(["logs", "--task", "3", "--limit", "5"], "error: --task shows one task: leave out --limit",
      id="task-and-limit"),
    R(["logs", "--metrics", "--json"], "error: --metrics prints every counter", id="metrics-json"),
    R(["logs", "--task", "0"], "error: receiver logs: Invalid value for '--task'", id="task-0"),
])
def test_logs_mistakes_are_one_line(cli, args, message):
    """A task id given where a rule name goes, and options that do not go together, are one
    line on stderr, exit status 2."""
    code, out, err = cli(*args)
    assert (code, out) == (2, "")
    assert err.startswith(message) and len(err.splitlines()) == 1, err


def test_emit_and_send_say_what_they_wait_for(cli):
    """Each retry is a line on stderr (the attempt, what failed, the start of the answer, the
    wait); each delivery a line on stdout when it ends. With --json, stdout is the JSON."""
    with Scripted([(500, b'{"error": "database is down"}'), (200, b"")]) as target:
        cli("rules", "create", "r", "--url", target.url)
        code, out, err = cli("emit", "pushImage", "ns/app:v1")
        assert (code, out) == (0, "task 1  rule r  success  HTTP 200  attempts 2\n")
        [retry] = err.splitlines()
        assert retry.startswith('task 1  rule r  attempt 1 of 3 failed: HTTP 500 (answer: '
                                '{"error": "database is down"}); next try in ')
        assert retry.endswith("ms")
        target.requests.clear()
        code, out, err = cli("send", "pushImage", "ns/app:v1", "--url", target.url, "--json")
        assert code == 0
        assert [d["status"] for d in json.loads(out)] == ["success"]
        assert err.startswith("task 2  rule -  attempt 1 of 3 failed: HTTP 500")
    code, out, err = cli("send", "pushImage", "ns/app:v1", "--url", target.url,
                         "--attempts", "2", "--timeout", "0.5")
    assert code == 1
    assert out == "task 3  rule -  failed  no answer  attempts 2  (connection refused)\n"
    assert err.startswith("task 3  rule -  attempt 1 of 2 failed: connection refused; next try")


def _read_line(stream: t.IO[str], timeout: float) -> str:
    """The next line of a pipe, or "" if none came within *timeout* seconds."""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return stream.readline()


def test_emit_prints_each_delivery_as_it_ends(tmp_path):
    """From a shell, the line of a delivery that ended comes while another still waits."""
    env = {**os.environ, "RECEIVER_DB": str(tmp_path / "r.db")}
    receiver = [sys.executable, "-m", "receiver"]
    with Target() as fast, Target(hang=30) as slow:
        for name, target in (("a-slow", slow), ("b-fast", fast)):
            subprocess.run([*receiver, "rules", "create", name, "--url", target.url], env=env,
                           check=True, capture_output=True)
        proc = subprocess.Popen([*receiver, "emit", "pushImage", "ns/a:v1", "--timeout", "20"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            first = _read_line(proc.stdout, timeout=15)
            # The slow target has the request (it may be logged a moment after the fast
            # one's answer), and is still holding it.
            wait_for(lambda: slow.requests, what="the slow target's request")
            assert not slow.release.is_set()
            slow.release.set()
            rest, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert first == "task 2  rule b-fast  success  HTTP 200  attempts 1\n", err
    assert rest == "task 1  rule a-slow  success  HTTP 200  attempts 1\n"
    assert proc.returncode == 0


def test_secrets_never_reach_a_row_an_output_or_an_error(cli, tmp_path):
    """A target that echoes the request's headers in its answers: the logged answers, every
    output and the trigger log's tables hold no header value."""
    with Scripted([(500, b""), (200, b"")], echo=True) as target:
        cli("rules", "create", "r", "--url", target.url, "--header", f"Authentication: {SECRET}")
        runs = [cli("emit", "pushImage", "ns/app:v1")]
        runs.append(cli("emit", "pushImage", "ns/app:v1", "--json"))
        runs.append(cli("send", "pushImage", "ns/app:v1", "--url", target.url,
                        "--header", f"X-Token: {SECRET}"))
        runs.append(cli("redeliver", "3", "--header", f"X-Token: {SECRET}"))
        assert all(h.get("Authentication") == SECRET or h.get("X-Token") == SECRET
                   for h, _ in target.requests)
    for args in (["logs", "--json"], ["logs"], ["logs", "--task", "1"],
                 ["logs", "--task", "1", "--json"], ["rules", "show", "r"], ["logs", "--metrics"]):
        runs.append(cli(*args))
    for _, out, err in runs:
        assert SECRET not in out and SECRET not in err
    task = json.loads(cli("logs", "--task", "1", "--json")[1])
    assert '"******"' in task["attempt_log"][0]["answer"]  # the echo, blotted out
    assert "attempt 1 of 3 failed: HTTP 500 (answer: " in runs[0][2]
    with sqlite3.connect(tmp_path / "r.db") as db:
        for table in ("deliveries", "attempts", "delivery_counts"):
            assert SECRET not in repr(db.execute(f"SELECT * FROM {table}").fetchall()), table
    db.close()


# --- retention ----------------------------------------------------------------------------

def _backdate(path, task_ids, days):
    """Make rows (and their attempts) look *days* old."""
    then = iso(time.time() - days * 86400)
    with sqlite3.connect(path) as db:
        for task_id in task_ids:
            db.execute("UPDATE deliveries SET created_at = ?, updated_at = ? WHERE task_id = ?",
                       (then, then, task_id))
            db.execute("UPDATE attempts SET started_at = ? WHERE task_id = ?", (then, task_id))
    db.close()


def test_retention_deletes_old_rows_and_their_attempts(cli, tmp_path, monkeypatch):
    """Rows older than RECEIVER_LOG_RETENTION days go, with their attempts, when a command
    opens the store; newer rows and the delivery counters stay."""
    with Scripted() as target:
        cli("rules", "create", "r", "--url", target.url)
        for _ in range(4):
            assert cli("emit", "pushImage", "ns/app:v1")[0] == 0
        _backdate(tmp_path / "r.db", [1, 2], days=10)
        _backdate(tmp_path / "r.db", [3], days=5)
        counters = cli("logs", "--metrics")[1]
        assert [r["task_id"] for r in json.loads(cli("logs", "--json")[1])] == [4, 3, 2, 1]
        monkeypatch.setenv("RECEIVER_LOG_RETENTION", "7")
        assert [r["task_id"] for r in json.loads(cli("logs", "--json")[1])] == [4, 3]
        with sqlite3.connect(tmp_path / "r.db") as db:
            assert db.execute("SELECT DISTINCT task_id FROM attempts ORDER BY 1").fetchall() == [
                (3,), (4,)]
        db.close()
        assert cli("logs", "--metrics")[1] == counters  # never pruned
        _backdate(tmp_path / "r.db", [3, 4], days=10)
        assert cli("emit", "pushImage", "ns/app:v1")[0] == 0  # it opens the store too
    assert [r["task_id"] for r in json.loads(cli("logs", "--json")[1])] == [5]  # ids not reused


@pytest.mark.parametrize("value, shown", [
    R("abc", "'abc'", id="text"), R("7d", "'7d'", id="unit"), R("0", "0", id="zero"),
    R("-1", "-1", id="negative"), R("nan", "nan", id="nan"), R("1e400", "inf", id="inf"),
    R("3651", "3651", id="too-long"), R("[30]", "[30]", id="list"), R("true", "True", id="bool"),
])
def test_a_bad_retention_is_one_line(cli, monkeypatch, value, shown):
    """RECEIVER_LOG_RETENTION must be a number of days above 0 and at most 3650, read and
    refused as the receiver reads and refuses it for its jobs."""
    monkeypatch.setenv("RECEIVER_LOG_RETENTION", value)
    code, out, err = cli("logs")
    assert (code, out, err) == (
        2, "", "error: configuration error: RECEIVER_LOG_RETENTION must be a number above 0 "
               f"and at most 3650, got {shown}\n")


@pytest.mark.parametrize("value, days", [("0.5", 0.5), ("7", 7.0), (" ", 30.0), ("3650", 3650.0)])
def test_the_retention_is_days(monkeypatch, value, days):
    from receiver.registry.store import log_retention

    monkeypatch.setenv("RECEIVER_LOG_RETENTION", value)
    assert log_retention() == days


def test_opening_a_store_is_cheap_when_there_is_nothing_to_tidy(tmp_path):
    """With nothing to close or delete, opening a store writes nothing: it opens even while
    another process holds the write lock."""
    with Store(tmp_path / "r.db") as store:
        store.add_rule(TriggerRule("r", "http://127.0.0.1:1/h"))
    locker = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    try:
        with Store(tmp_path / "r.db", busy_timeout=0.1) as store:
            assert store.tidy() == (0, 0)
            assert [r.name for r in store.list_rules()] == ["r"]
    finally:
        locker.execute("ROLLBACK")
        locker.close()


# --- the delivery counters ----------------------------------------------------------------

def test_metrics_are_prometheus_text(cli, tmp_path):
    """`logs --metrics` counts deliveries by rule and outcome, in the text format, with every
    rule at 0 until it has one, and label values escaped."""
    from prometheus_client.parser import text_string_to_metric_families

    with Scripted([(200, b""), (404, b"")]) as target:
        cli("rules", "create", "ok", "--url", target.url)
        cli("rules", "create", "idle", "--url", target.url, "--action", "deleteChart")
        assert cli("emit", "pushImage", "ns/app:v1")[0] == 0
        assert cli("emit", "pushImage", "ns/app:v1")[0] == 1
        assert cli("send", "pushImage", "ns/app:v1", "--url", target.url)[0] == 1
    with sqlite3.connect(tmp_path / "r.db") as db:  # a name only a hand-edited store has
        db.execute("INSERT INTO delivery_counts VALUES (?, 'failed', 2)", ('we"ird\\\n',))
    db.close()
    code, out, err = cli("logs", "--metrics")
    assert (code, err) == (0, "")
    assert out.startswith("# HELP receiver_sender_deliveries_total ")
    assert "# TYPE receiver_sender_deliveries_total counter\n" in out
    [family] = text_string_to_metric_families(out)
    got = {(s.labels["rule"], s.labels["outcome"]): s.value for s in family.samples}
    assert got == {("ok", "succeeded"): 1, ("ok", "failed"): 1, ("idle", "succeeded"): 0,
                   ("idle", "failed"): 0, ("", "succeeded"): 0, ("", "failed"): 1,
                   ('we"ird\\\n', "succeeded"): 0, ('we"ird\\\n', "failed"): 2}
    assert 'rule="we\\"ird\\\\\\n"' in out


# --- stores made before ---------------------------------------------------------------------

OLD_SCHEMA = """
CREATE TABLE rules (
    name TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '', actions TEXT NOT NULL,
    namespace TEXT, repository TEXT NOT NULL DEFAULT '', tag TEXT NOT NULL DEFAULT '',
    url TEXT NOT NULL, headers TEXT NOT NULL DEFAULT '[]', enabled INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL, updated_at TEXT NOT NULL, format TEXT NOT NULL DEFAULT 'tcr'
);
CREATE TABLE deliveries (
    task_id INTEGER PRIMARY KEY AUTOINCREMENT, rule TEXT, action TEXT NOT NULL,
    repository TEXT NOT NULL, tags TEXT NOT NULL DEFAULT '[]', url TEXT NOT NULL,
    status TEXT NOT NULL, http_status INTEGER, attempts INTEGER NOT NULL DEFAULT 0, error TEXT,
    body TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE INDEX deliveries_rule ON deliveries (rule, task_id);
"""


def test_a_store_from_before_the_attempt_log_is_migrated(cli, tmp_path):
    """A store of the previous version opens: its counters start from the rows it has, a
    row it left pending for hours is closed, and its tasks show with no attempt logged."""
    long_ago, recent = iso(time.time() - 7200), iso(time.time() - 60)
    with sqlite3.connect(tmp_path / "r.db") as db:
        db.executescript(OLD_SCHEMA)
        for rule, status, created in (("r", "success", long_ago), ("r", "failed", long_ago),
                                      (None, "success", long_ago), ("r", "pending", long_ago),
                                      ("r", "pending", recent)):
            db.execute("INSERT INTO deliveries (rule, action, repository, url, status, attempts,"
                       " body, created_at, updated_at) VALUES (?, 'pushImage', 'ns/app',"
                       " 'http://127.0.0.1:1/', ?, 1, '{}', ?, ?)", (rule, status, created, created))
    db.close()
    rows = json.loads(cli("logs", "--json")[1])
    assert [(r["task_id"], r["status"], r["error"]) for r in rows] == [
        (5, "pending", None), (4, "failed", "interrupted"), (3, "success", None),
        (2, "failed", None), (1, "success", None)]
    assert 'receiver_sender_deliveries_total{outcome="failed",rule="r"} 2.0' in cli(
        "logs", "--metrics")[1]
    code, out, _ = cli("logs", "--task", "1")
    assert code == 0 and out.splitlines()[-1] == "no attempt logged (logged before attempts were kept)"
    with Store(tmp_path / "r.db") as again:  # opening it again changes nothing
        assert again.delivery_counts() == {("r", "succeeded"): 1, ("r", "failed"): 2,
                                           ("", "succeeded"): 1}
