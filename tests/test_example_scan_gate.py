"""examples/scan_gate.py under gunicorn: Harbor's scan events block a digest at or above
GATE_SEVERITY, and a (fake, signed) Feishu bot hears of each change once."""

from __future__ import annotations

import json
import os
import pathlib
import sys
import typing as t

import pytest
from servers import ROOT, gunicorn, wait_for
from test_example_chat import HOOK_AUTH, FakeChat, cli, jobs, run_all

if str(ROOT / "examples") not in sys.path:
    sys.path.insert(0, str(ROOT / "examples"))
import gate_state


class Setup(t.NamedTuple):
    env: dict[str, str]
    url: str
    log: pathlib.Path
    fake: FakeChat
    state: pathlib.Path


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A fake Feishu bot with a signing secret, a server running scan_gate (gate: High), and
    two rules sending scan events, one in Harbor's default format, one in CloudEvents."""
    tmp = tmp_path_factory.mktemp("gate")
    queue = f"sqlite:///{tmp / 'queue.db'}"
    state = tmp / "gate.db"
    with FakeChat("feishu", "feishu-token-never-logged", "feishu-secret-never-logged") as fake:
        server_env = {
            "RECEIVER_HANDLERS": "scan_gate", "RECEIVER_QUEUE": queue,
            "RECEIVER_AUTH_HEADERS": json.dumps({"Authorization": HOOK_AUTH}),
            "RECEIVER_HANDLER_ATTEMPTS": "2", "RECEIVER_HANDLER_BACKOFF": "0.05",
            "GATE_STATE": str(state), "NOTIFY_URL": fake.url, "NOTIFY_KIND": "feishu",
            "NOTIFY_SECRET": fake.secret,
        }
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")},
               "RECEIVER_DB": str(tmp / "rules.db"), "RECEIVER_SEND_BACKOFF": "0.01",
               "RECEIVER_QUEUE": queue}
        with gunicorn(server_env, tmp, paths=[ROOT / "examples"]) as (url, log, _):
            run_all(env, [["rules", "create", f"scans-{fmt}", "--url", url + "/webhook",
                           "--format", fmt, "--header", f"Authorization: {HOOK_AUTH}",
                           "--action", "scanningCompleted", "--action", "scanningFailed"]
                          for fmt in ("harbor", "cloudevents")])
            yield Setup(env, url, log, fake, state)


@pytest.fixture()
def gate(setup, monkeypatch):
    """The gate's record, as deploy_on_push reads it."""
    monkeypatch.setenv("GATE_STATE", str(setup.state))
    return gate_state


def ended(env: dict[str, str], repository: str, count: int) -> list[dict]:
    """The jobs of *repository*, once there are *count* and each has ended."""
    def done() -> list[dict] | None:
        mine = [j for j in jobs(env, env["RECEIVER_QUEUE"]) if j["repository"] == repository]
        return mine if len(mine) == count and all(
            j["status"] in ("succeeded", "dead") for j in mine) else None
    return wait_for(done, what=f"{count} jobs of {repository}")


def told(fake: FakeChat, about: str) -> list[str]:
    return [text for text in fake.texts() if about in text]


def emit(env: dict[str, str], *args: str) -> list[str]:
    fired = cli(env, "emit", *args)
    assert fired.returncode == 0, fired.stdout + fired.stderr
    return fired.stdout.splitlines()


def test_a_critical_scan_blocks_the_digest_and_is_told_once(setup, gate):
    """A scan finding Critical, sent in both formats, blocks the digest with its reason and
    posts one message; the same body three times, and a later scan at the same severity,
    post nothing more."""
    env, log, fake = setup.env, setup.log, setup.fake
    d = digest(1)
    lines = emit(env, "scanningCompleted", f"prod/api:v1@{d}", "--vulnerabilities",
                 "Critical=1,High=4", "--operator", "admin")
    # One line per delivery, printed as each ends: in either order.
    by_rule = {line.split()[3]: line for line in lines}
    assert sorted(by_rule) == ["scans-cloudevents", "scans-harbor"] and len(lines) == 2
    assert all("success  HTTP 202" in line for line in lines), lines
    assert {j["status"] for j in ended(env, "prod/api", 2)} == {"succeeded"}
    assert gate.blocked(d) == "Critical: 1 Critical, 4 High (Trivy)"
    [message] = told(fake, d)
    assert message.splitlines()[:4] == [
        "scan gate blocked prod/api:v1", f"digest: {d}",
        "found: Critical: 1 Critical, 4 High (Trivy)",
        "gate: High and above; deploys of this digest are refused"]
    assert "operator: admin" in message

    task = by_rule["scans-harbor"].split()[1]  # sent twice more: the same bytes
    again = [cli(env, "redeliver", task) for _ in range(2)]
    assert all("success  HTTP 200" in r.stdout for r in again), [r.stdout for r in again]
    emit(env, "scanningCompleted", f"prod/api:v1@{d}", "--vulnerabilities", "Critical=2")
    assert {j["status"] for j in ended(env, "prod/api", 4)} == {"succeeded"}
    assert gate.blocked(d) == "Critical: 2 Critical (Trivy)"  # the latest scan's reason
    assert len(told(fake, d)) == 1
    assert f"blocked prod/api@{d}: Critical: 2 Critical (Trivy) (gate High) (announced already" \
        in log.read_text()


def test_a_scan_below_the_gate_blocks_nothing_and_says_nothing(setup, gate):
    """A scan finding Low only leaves the digest deployable, and the chat is not told."""
    env, log, fake = setup.env, setup.log, setup.fake
    d = digest(2)
    emit(env, "scanningCompleted", f"prod/web:v2@{d}", "--vulnerabilities", "Medium=2,Low=3")
    assert {j["status"] for j in ended(env, "prod/web", 2)} == {"succeeded"}
    assert gate.blocked(d) is None
    assert told(fake, d) == []
    assert f"passed prod/web@{d}: Medium: 2 Medium, 3 Low (Trivy) (gate High)" in log.read_text()


def test_a_rescan_below_the_gate_unblocks_and_says_so(setup, gate):
    """A digest blocked at High is unblocked by a later scan finding less (a CVE allow-listed,
    say), and the chat hears both."""
    env, fake = setup.env, setup.fake
    d = digest(3)
    emit(env, "scanningCompleted", f"prod/worker:v3@{d}", "--vulnerabilities", "High=1")
    ended(env, "prod/worker", 2)
    assert gate.blocked(d) == "High: 1 High (Trivy)"
    emit(env, "scanningCompleted", f"prod/worker:v3@{d}", "--vulnerabilities", "Low=1")
    assert {j["status"] for j in ended(env, "prod/worker", 4)} == {"succeeded"}
    assert gate.blocked(d) is None
    blocked, unblocked = told(fake, d)
    assert blocked.startswith("scan gate blocked prod/worker:v3\n")
    assert unblocked.splitlines()[:4] == [
        "scan gate unblocked prod/worker:v3", f"digest: {d}",
        "found: Low: 1 Low (Trivy), below the gate (High)", "was blocked for: High: 1 High (Trivy)"]


def test_a_failed_scan_keeps_the_decision_and_says_so(setup, gate):
    """scanningFailed blocks nothing and unblocks nothing; the chat is asked for a rescan."""
    env, url, fake = setup.env, setup.url, setup.fake
    d = digest(4)
    gate.block(d, "Critical: 1 Critical (Trivy)", "prod/batch")
    sent = cli(env, "send", "scanningFailed", f"prod/batch:v4@{d}", "--url", url + "/webhook",
               "--format", "harbor", "--header", f"Authorization: {HOOK_AUTH}")
    assert "HTTP 202" in sent.stdout, sent.stdout + sent.stderr
    assert {j["status"] for j in ended(env, "prod/batch", 1)} == {"succeeded"}
    assert gate.blocked(d) == "Critical: 1 Critical (Trivy)"
    [message] = told(fake, d)
    assert message.startswith("scan gate: scan failed for prod/batch:v4\n")
    assert "still blocked for: Critical: 1 Critical (Trivy); scan it again" in message


def test_a_chat_error_keeps_the_block_and_the_retry_tells(setup, gate):
    """With the bot's secret rotated, Feishu answers 19021: the digest is blocked all the
    same, the job ends dead with Feishu's answer, and retried once the secret is right it
    posts the message."""
    env, url, log, fake = setup.env, setup.url, setup.log, setup.fake
    d = digest(5)
    old, fake.secret = fake.secret, "rotated-in-the-console"
    try:
        sent = cli(env, "send", "scanningCompleted", f"prod/pay:v5@{d}", "--url", url + "/webhook",
                   "--format", "cloudevents", "--vulnerabilities", "Critical=3",
                   "--header", f"Authorization: {HOOK_AUTH}")
        assert "HTTP 202" in sent.stdout, sent.stdout + sent.stderr
        [job] = ended(env, "prod/pay", 1)
    finally:
        fake.secret = old
    assert (job["status"], job["attempts"]) == ("dead", 2)
    assert gate.blocked(d) == "Critical: 3 Critical (Trivy)"
    assert told(fake, d) == []
    shown = cli(env, "jobs", "show", str(job["job_id"]))
    assert "error 19021: sign match fail" in shown.stdout, shown.stdout
    assert fake.token not in shown.stdout + log.read_text() and old not in log.read_text()

    retried = cli(env, "jobs", "retry", str(job["job_id"]))
    assert retried.returncode == 0, retried.stderr
    wait_for(lambda: [j for j in jobs(env, env["RECEIVER_QUEUE"], "--status", "succeeded")
                      if j["job_id"] == job["job_id"]], what="the retried job")
    [message] = told(fake, d)
    assert message.startswith("scan gate blocked prod/pay:v5\n")
