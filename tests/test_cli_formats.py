"""Every wire format from the command line: emit and send in each format, rules with a
format, `receiver validate` and `receiver schema`, run as a user runs them."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from jsonschema import Draft202012Validator
from servers import ROOT, Target, serve

from receiver import create_app
from receiver.core.events import ACTIONS, event_class
from receiver.core.formats import FORMATS
from receiver.core.schemas import load_event

R = pytest.param
DIGEST = "sha256:" + "5" * 64
SAMPLES = ROOT / "receiver" / "samples"

#: What each action is fired on, and with which options, in these tests.
FIRE = {
    "pushImage": ["prod/api:v1,latest"],
    "pullImage": [f"prod/api@{DIGEST}"],
    "deleteImage": ["prod/api:v0.9"],
    "uploadChart": ["charts/web:0.3.1"],
    "downloadChart": ["charts/web:0.3.1"],
    "deleteChart": ["charts/web:0.2.0,0.3.1"],
    "scanningCompleted": ["prod/api:v1", "--vulnerabilities", "high=2,Low=5", "--scanner", "Grype"],
    "scanningFailed": [f"prod/api@{DIGEST}"],
    "scanningStopped": ["prod/api:v1"],
    "quotaExceed": ["prod/api:v1", "--details", "adding 1 GiB will exceed the limit"],
    "quotaWarning": ["prod/api:v1", "--details", "quota usage reach 85%"],
    "replication": ["--status", "Error", "--trigger", "SCHEDULE", "--project", "prod"],
    "tagRetention": ["--project", "prod", "--retained", "10", "--deleted", "api:v0.8",
                     "--deleted", "api:v0.9"],
}


def carried(fmt: str) -> list[str]:
    """The actions the format has events for."""
    return [a for a in ACTIONS if a in FORMATS[fmt].types.values() or
            (fmt == "tcr" and a == "quotaWarning")]


# --- emit and send in every format --------------------------------------------------------

@pytest.mark.parametrize("fmt", list(FORMATS))
def test_emit_sends_every_action_the_format_carries(cli, fmt):
    """A rule with --format gets each of its actions in that format, with its Content-Type,
    and the body received loads into the action's class, in that format."""
    actions = carried(fmt)
    with Target() as target:
        args = ["rules", "create", "all", "--url", target.url, "--format", fmt]
        for action in actions:
            args += ["--action", action]
        assert cli(*args)[0] == 0
        for action in actions:
            code, out, err = cli("emit", action, *FIRE[action], "--operator", "ci")
            assert (code, err) == (0, ""), action
            assert "success  HTTP 200" in out
        requests = target.requests
    assert len(requests) == len(actions)
    for action, (headers, _, raw) in zip(actions, requests, strict=True):
        event = load_event(json.loads(raw))
        assert (type(event), event.format, event.operator) == (event_class(action), fmt, "ci")
        assert headers["Content-Type"] == FORMATS[fmt].content_type


def test_what_emit_options_put_in_the_events(cli):
    """The event options reach the body: scan report, quota details, digest-only artifacts,
    replication and retention fields."""
    with Target() as target:
        cli("rules", "create", "all", "--url", target.url, "--format", "harbor",
            *[arg for action in ACTIONS for arg in ("--action", action)])
        for action in ("scanningCompleted", "quotaWarning", "pullImage", "replication",
                       "tagRetention"):
            assert cli("emit", action, *FIRE[action])[0] == 0
        events = [load_event(body) for body in target.bodies()]
        bodies = target.bodies()
    scan, quota, pull, replication, retention = events
    [report] = scan.resources
    assert (report.severity, dict(report.counts), report.total, report.scanner) == (
        "High", {"High": 2, "Low": 5}, 7, "Grype")
    assert quota.details == "quota usage reach 85%" and quota.resources[0].url is None
    # By digest, Harbor 2.2+ sends the digest as the tag and pins the URL by it.
    [resource] = bodies[2]["event_data"]["resources"]
    assert resource["tag"] == DIGEST
    assert resource["resource_url"] == f"registry.example.com/prod/api@{DIGEST}"
    assert (pull.resources[0].tag, pull.resources[0].digest, pull.tags) == (None, DIGEST, ())
    assert (replication.status, replication.trigger, replication.source.namespace) == (
        "Error", "SCHEDULE", "prod")
    assert replication.operator == "SCHEDULE"  # Harbor 2.2 to 2.8: the trigger
    assert [(a.status, a.name_tag) for a in replication.failed] == [
        ("Error", "api [1 item(s) in total]")] and replication.succeeded == ()
    assert (retention.project, retention.retained, retention.total) == ("prod", 10, 12)
    assert [d.name_tag for d in retention.deleted] == ["api:v0.8", "api:v0.9"]


def test_emit_format_overrides_the_rules_format(cli):
    """--format sends every delivery in that format, whatever the rule's."""
    with Target() as target:
        cli("rules", "create", "r", "--url", target.url, "--format", "harbor")
        assert cli("emit", "pushImage", "prod/api:v1", "--format", "cloudevents")[0] == 0
        assert cli("emit", "pushImage", "prod/api:v2")[0] == 0
        [first, second] = target.requests
    assert json.loads(first[2])["type"] == "harbor.artifact.pushed"
    assert first[0]["Content-Type"] == "application/cloudevents+json"
    assert json.loads(second[2])["type"] == "PUSH_ARTIFACT"


def test_send_in_each_format_reaches_a_real_receiver(cli):
    """send --format delivers a body that the receiver itself accepts, in every format,
    a digest-only push included."""
    with serve(create_app({"RECEIVER_QUEUE": "sync"})) as url:
        for fmt in FORMATS:
            for ref in ("prod/api:v1", f"prod/api@{DIGEST}"):
                code, out, err = cli("send", "pushImage", ref, "--url", url, "--format", fmt)
                assert (code, err) == (0, ""), (fmt, ref)
                assert out.split()[4:7] == ["success", "HTTP", "200"]
        code, out, _ = cli("send", "replication", "--url", url, "--format", "cloudevents")
        assert code == 0
    rows = json.loads(cli("logs", "--json", "--limit", "100")[1])
    assert {r["status"] for r in rows} == {"success"}
    assert rows[0]["action"] == "replication" and rows[0]["repository"] == ""


def test_operator_defaults_to_the_user_and_is_always_a_string(cli, monkeypatch):
    """Without --operator the body names the OS user, or for replication and retention
    what Harbor 2.2 to 2.8 write (the trigger); --operator '' sends an empty string."""
    monkeypatch.setenv("LOGNAME", "alice")
    with Target() as target:
        for args in (["pushImage", "prod/api:v1"], ["pushImage", "prod/api:v1", "--operator", ""],
                     ["tagRetention"], ["replication"], ["replication", "--trigger", "EVENT"],
                     ["replication", "--trigger", "EVENT", "--operator", "alice"]):
            assert cli("send", *args, "--url", target.url, "--format", "harbor")[0] == 0
        bodies = target.bodies()
    assert [b["operator"] for b in bodies] == ["alice", "", "MANUAL", "MANUAL", "EVENT", "alice"]


@pytest.mark.parametrize("args, message", [
    R(["emit", "uploadChart", "charts/web:1.0", "--format", "cloudevents"],
      "error: the cloudevents format has no uploadChart event", id="chart-as-cloudevent"),
    R(["send", "replication", "--url", "http://h/"], "error: the tcr format has no replication event",
      id="replication-as-tcr"),
    R(["emit", "replication", "prod/api:v1"], "error: replication has no repository: leave out 'prod/api:v1'",
      id="replication-with-ref"),
    R(["emit", "tagRetention", "--digest", DIGEST], "error: tagRetention has no repository, so no --digest",
      id="retention-with-digest"),
    R(["emit", "pushImage"], "error: pushImage needs what it is about: NS/REPO[:TAG] or NS/REPO@DIGEST",
      id="push-without-ref"),
    R(["emit", "pushImage", "prod/api:v1", "--severity", "High"],
      "error: severity is only for scanningCompleted, scanningFailed, scanningStopped, not pushImage",
      id="severity-on-push"),
    R(["emit", "scanningCompleted", "prod/api:v1", "--severity", "severe"],
      "error: receiver emit: Invalid value for '--severity': 'severe' is not one of None,",
      id="unknown-severity"),
    R(["emit", "scanningCompleted", "prod/api:v1", "--vulnerabilities", "High:2"],
      "error: receiver emit: Invalid value for '--vulnerabilities': 'High:2' must be SEVERITY=COUNT",
      id="bad-vulnerabilities"),
    R(["emit", "scanningCompleted", "prod/api:v1", "--severity", "Low", "--vulnerabilities", "Critical=1"],
      "error: severity 'Low' contradicts the vulnerabilities", id="contradiction"),
    R(["emit", "pushImage", f"prod/api@{DIGEST}", "--digest", DIGEST], "error: give the digest once",
      id="digest-twice"),
    R(["emit", "pushImage", "prod/api@"], "error: 'prod/api@' has no digest after '@'", id="empty-digest"),
    R(["emit", "pushImage", "prod/api", "--format", "json"],
      "error: receiver emit: Invalid value for '--format'", id="unknown-format"),
    R(["emit", "quotaExceed", "prod/api:v1", "--trigger", "manual"],
      "error: trigger is only for replication, not quotaExceed", id="trigger-on-quota"),
    R(["rules", "create", "ce", "--url", "http://h/", "--format", "cloudevents", "--action", "deleteChart"],
      "error: the cloudevents format has no deleteChart event", id="rule-format-cannot-carry"),
    R(["rules", "create", "x", "--url", "http://h/", "--action", "replication"],
      "error: the tcr format has no replication event", id="rule-replication-in-tcr"),
    R(["rules", "update", "dup", "--format", "cloudevents"],
      "error: the cloudevents format has no uploadChart, deleteChart events", id="update-format-cannot-carry"),
    R(["rules", "create", "x", "--url", "http://h/", "--format", "harbor", "--action", "replication",
       "--namespace", "prod"],
      "error: namespace: replication events have no repository, so a rule with a namespace, "
      "repository or tag never fires for them", id="replication-rule-with-namespace"),
    R(["rules", "create", "x", "--url", "http://h/", "--format", "harbor", "--action", "pushImage",
       "--action", "tagRetention", "--repository", "/app*", "--tag", "v*"],
      "error: repository and tag: tagRetention events have no repository", id="retention-rule-with-patterns"),
])
def test_impossible_combinations_are_one_line_and_exit_2(cli, args, message):
    """A format that has no such event, an option the action has not, or a malformed REF:
    one line on stderr, exit status 2, and nothing sent."""
    cli("rules", "create", "dup", "--url", "http://h/")
    code, out, err = cli(*args)
    assert (code, out) == (2, "")
    assert err.startswith(message), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert json.loads(cli("logs", "--json")[1]) == []


# --- rules with a format ------------------------------------------------------------------

def test_rules_show_and_list_the_format(cli):
    """rules create --format harbor is shown by rules show, rules list and their --json."""
    assert cli("rules", "create", "h", "--url", "http://h/", "--format", "harbor")[:2] == (
        0, "created rule h\n")
    cli("rules", "create", "ce", "--url", "http://h/", "--format", "cloudevents")
    assert json.loads(cli("rules", "show", "h", "--json")[1])["format"] == "harbor"
    assert "format:      harbor" in cli("rules", "show", "h")[1].splitlines()
    ce = json.loads(cli("rules", "show", "ce", "--json")[1])
    assert (ce["format"], ce["actions"]) == ("cloudevents", ["pushImage", "deleteImage"])
    lines = cli("rules", "list")[1].splitlines()
    assert lines[0].split()[:4] == ["NAME", "ENABLED", "FORMAT", "ACTIONS"]
    assert [line.split()[:3] for line in lines[1:]] == [["ce", "yes", "cloudevents"], ["h", "yes", "harbor"]]
    assert [r["format"] for r in json.loads(cli("rules", "list", "--json")[1])] == ["cloudevents", "harbor"]
    assert cli("rules", "update", "h", "--format", "cloudevents", "--action", "pushImage")[0] == 0
    assert json.loads(cli("rules", "show", "h", "--json")[1])["format"] == "cloudevents"


def test_a_store_from_before_formats_still_works(cli, tmp_path):
    """A store whose rules table has no format column (an earlier version's) is migrated:
    its rules show as tcr, send tcr, and take a format."""
    with sqlite3.connect(tmp_path / "r.db") as conn:
        conn.executescript("""
            CREATE TABLE rules (name TEXT PRIMARY KEY, description TEXT NOT NULL DEFAULT '',
                actions TEXT NOT NULL, namespace TEXT, repository TEXT NOT NULL DEFAULT '',
                tag TEXT NOT NULL DEFAULT '', url TEXT NOT NULL,
                headers TEXT NOT NULL DEFAULT '[]', enabled INTEGER NOT NULL DEFAULT 1,
                created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
        """)
    conn.close()
    with Target() as target:
        with sqlite3.connect(tmp_path / "r.db") as conn:
            conn.execute("INSERT INTO rules (name, actions, url, created_at, updated_at) "
                         "VALUES ('old', '[\"pushImage\"]', ?, 'then', 'then')", (target.url,))
        conn.close()
        assert json.loads(cli("rules", "show", "old", "--json")[1])["format"] == "tcr"
        assert cli("emit", "pushImage", "prod/api:v1")[0] == 0
        assert cli("rules", "update", "old", "--format", "harbor")[0] == 0
        assert cli("emit", "pushImage", "prod/api:v2")[0] == 0
        types = [b["type"] for b in target.bodies()]
    assert types == ["pushImage", "PUSH_ARTIFACT"]


# --- validate -----------------------------------------------------------------------------

def write(path, body) -> str:
    path.write_bytes(body if isinstance(body, bytes) else json.dumps(body).encode())
    return str(path)


def harbor_push() -> dict:
    return json.loads((SAMPLES / "harbor" / "pushImage.json").read_text())


def test_validate_good_files(cli):
    """Each shipped sample is ok, one line each naming action, repository, tags and format."""
    files = sorted(str(p) for p in SAMPLES.glob("*/*.json"))
    code, out, err = cli("validate", *files, "--strict")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == len(files)
    assert f"{SAMPLES}/harbor/pushImage.json: ok pushImage prod/api tags=v1.4.2 (harbor)" in lines
    assert f"{SAMPLES}/harbor/replication.json: ok replication (harbor)" in lines


def test_validate_bad_unknown_and_undecodable_files(cli, tmp_path):
    """Invalid files list each field error by path; an unknown type is reported as ignored;
    bytes that are not UTF-8 JSON are invalid with the reason; the exit status is 1."""
    bad = harbor_push()
    bad["event_data"]["resources"][0]["digest"] = "sha256:zz"
    del bad["occur_at"]
    files = [
        write(tmp_path / "bad.json", bad),
        write(tmp_path / "new.json", {"type": "ARTIFACT_LABELED", "occur_at": 1}),
        write(tmp_path / "latin1.json", b'{"type": "pushImage\xe9"}'),
        write(tmp_path / "broken.json", b'{"type": '),
        write(tmp_path / "list.json", []),
        write(tmp_path / "ok.json", harbor_push()),
    ]
    code, out, err = cli("validate", *files)
    assert (code, err) == (1, "")
    assert out.splitlines() == [
        (f"{files[0]}: invalid: occur_at: Missing data for required field.; "
         "event_data.resources[0].digest: Not a valid digest: expected 'sha256:' and 64 "
         "lower-case hex digits (or 'sha512:' and 128, or 'blake3:' and 64)."),
        f"{files[1]}: ignored: unknown type 'ARTIFACT_LABELED'",
        f"{files[2]}: invalid: body is not UTF-8 (invalid byte at offset 19)",
        f"{files[3]}: invalid: body is not valid JSON: Expecting value: line 1 column 10 (char 9)",
        f"{files[4]}: invalid: The body must be a JSON object.",
        f"{files[5]}: ok pushImage prod/api tags=v1.4.2 (harbor)",
    ]


def test_validate_strict_reports_unknown_keys(cli, tmp_path):
    """--strict makes every undeclared key, at any depth, an error; without it they pass."""
    body = harbor_push()
    body["event_data"]["resources"][0]["size"] = 1024
    body["extra"] = True
    path = write(tmp_path / "drift.json", body)
    assert cli("validate", path)[:2] == (0, f"{path}: ok pushImage prod/api tags=v1.4.2 (harbor)\n")
    code, out, _ = cli("validate", path, "--strict")
    assert (code, out) == (1, (f"{path}: invalid: unknown key event_data.resources[0].size; "
                               "unknown key extra\n"))
    [row] = json.loads(cli("validate", path, "--strict", "--json")[1])
    assert row == {"file": path, "ok": False, "status": "invalid", "format": "harbor",
                   "type": "PUSH_ARTIFACT", "action": "pushImage", "repository": "prod/api",
                   "tags": ["v1.4.2"],
                   "errors": [], "unknown_keys": ["event_data.resources[0].size", "extra"]}


def test_validate_json_and_format(cli, tmp_path):
    """--json prints one object per file, with the body's own type; an ignored body has no
    action, since the receiver runs none; --format accepts that format only."""
    path = write(tmp_path / "push.json", harbor_push())
    new = write(tmp_path / "new.json", {"type": "tagAdded"})
    bad = write(tmp_path / "bad.json", {"type": "QUOTA_WARNING", "occur_at": 1})
    ce = str(SAMPLES / "cloudevents" / "replication.json")
    code, out, _ = cli("validate", path, new, bad, ce, write(tmp_path / "list.json", []), "--json")
    assert code == 1
    rows = json.loads(out)
    assert rows[:2] == [
        {"file": path, "ok": True, "status": "ok", "format": "harbor", "type": "PUSH_ARTIFACT",
         "action": "pushImage", "repository": "prod/api", "tags": ["v1.4.2"], "errors": [],
         "unknown_keys": None},
        {"file": new, "ok": False, "status": "ignored", "format": "tcr", "type": "tagAdded",
         "action": None, "repository": None, "tags": [], "errors": ["unknown type 'tagAdded'"],
         "unknown_keys": None},
    ]
    assert [(r["status"], r["type"], r["action"]) for r in rows[2:]] == [
        ("invalid", "QUOTA_WARNING", "quotaWarning"),
        ("ok", "harbor.replication.status.changed", "replication"),
        ("invalid", None, None)]
    code, out, _ = cli("validate", path, "--format", "tcr")
    assert code == 1 and out.startswith(f"{path}: invalid: type: Must be one of: pushImage,")
    assert cli("validate", path, "--format", "harbor")[0] == 0


def test_validate_reads_standard_input(cli):
    """'-' reads the body from standard input."""
    body = json.dumps(harbor_push())
    assert cli("validate", "-", input=body)[:2] == (0, "-: ok pushImage prod/api tags=v1.4.2 (harbor)\n")
    assert cli("validate", "-", input="{}")[0] == 1


def test_validate_stops_at_the_receivers_body_limit(cli, monkeypatch):
    """A file over the receiver's body limit is invalid, as the receiver's 413 would say,
    and is not read to its end: /dev/zero ends at once."""
    code, out, _ = cli("validate", "/dev/zero")
    assert (code, out) == (1, "/dev/zero: invalid: body is larger than the receiver's limit "
                              "of 1048576 bytes (RECEIVER_MAX_BODY)\n")
    monkeypatch.setenv("RECEIVER_MAX_BODY", "10")
    body = json.dumps(harbor_push())
    assert cli("validate", "-", input=body)[1] == (
        "-: invalid: body is larger than the receiver's limit of 10 bytes (RECEIVER_MAX_BODY)\n")


@pytest.mark.parametrize("args, message", [
    R(["validate", "nope.json"], "error: receiver validate: Invalid value for 'FILE...': File 'nope.json' does not exist.",
      id="missing-file"),
    R(["validate"], "error: receiver validate: Missing argument 'FILE...'", id="no-file"),
    R(["validate", "-", "--format", "xml"], "error: receiver validate: Invalid value for '--format'", id="bad-format"),
    R(["schema", "--format", "xml"], "error: receiver schema: Invalid value for '--format'", id="schema-bad-format"),
])
def test_validate_and_schema_usage_errors_exit_2(cli, args, message):
    """A missing file or a bad option is a usage error: one line, exit status 2."""
    code, out, err = cli(*args)
    assert (code, out) == (2, "")
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err


def test_validate_from_a_shell(tmp_path):
    """The installed command checks a body piped into it, and exits 1 on a bad one."""
    env = {**os.environ, "RECEIVER_DB": str(tmp_path / "r.db")}
    ok = subprocess.run([sys.executable, "-m", "receiver", "validate", "-", "--strict"],
                        input=(SAMPLES / "cloudevents" / "pushImage.json").read_bytes(),
                        capture_output=True, env=env, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.decode().startswith("-: ok pushImage ") and ok.stdout.decode().endswith(" (cloudevents)\n")
    bad = subprocess.run([sys.executable, "-m", "receiver", "validate", "-"], input=b"\xff",
                         capture_output=True, env=env, check=False)
    assert (bad.returncode, bad.stdout, bad.stderr) == (
        1, b"-: invalid: body is not UTF-8 (invalid byte at offset 0)\n", b"")


# --- schema -------------------------------------------------------------------------------

def test_schema_is_draft_2020_12_and_accepts_what_emit_sends(cli):
    """`receiver schema` prints valid draft 2020-12 schemas, one per format, and each accepts
    every body emit sends in that format (and refuses another format's)."""
    code, out, _ = cli("schema")
    assert code == 0
    schemas = json.loads(out)
    assert list(schemas) == list(FORMATS)
    for fmt, schema in schemas.items():
        Draft202012Validator.check_schema(schema)
        code, one, _ = cli("schema", "--format", fmt)
        assert json.loads(one) == schema and one.startswith('{\n  "$schema": ')
    with Target() as target:
        for fmt in FORMATS:
            cli("rules", "create", fmt, "--url", target.url, "--format", fmt,
                *[arg for action in carried(fmt) for arg in ("--action", action)])
        for action in ACTIONS:
            assert cli("emit", action, *FIRE[action])[0] == 0
        bodies = [(load_event(b).format, b) for b in target.bodies()]
    assert len(bodies) == sum(len(carried(fmt)) for fmt in FORMATS)
    for fmt, body in bodies:
        Draft202012Validator(schemas[fmt]).validate(body)
        others = [f for f in FORMATS if f != fmt]
        assert not any(Draft202012Validator(schemas[f]).is_valid(body) for f in others), (fmt, body)


# --- realistic bodies ---------------------------------------------------------------------

def test_replication_bodies_are_harbor_2_2s(cli):
    """A replication body has Harbor 2.2+'s values: trigger MANUAL by default and as the
    operator, the hostname without its port, and the task's artifact under
    successful_artifact for a Success, failed_artifact for an Error, neither while Running."""
    with Target() as target:
        for status in ("Success", "Error", "Running"):
            code, _, err = cli("send", "replication", "--url", target.url, "--format", "harbor",
                               "--status", status, "--project", "prod",
                               "--host", "harbor.example.com:8443")
            assert (code, err) == (0, ""), status
        bodies = target.bodies()
    sample = json.loads((SAMPLES / "harbor" / "replication.json").read_text())
    for body in bodies:
        assert (body["type"], body["operator"]) == ("REPLICATION", "MANUAL")
        replication = body["event_data"]["replication"]
        assert replication["trigger_type"] == "MANUAL"
        assert replication["harbor_hostname"] == "harbor.example.com"
        assert replication["src_resource"]["endpoint"] == "https://harbor.example.com:8443"
        # Every key is one Harbor writes: the sample's, or failed_artifact for an Error.
        assert set(replication) <= {*sample["event_data"]["replication"], "failed_artifact"}
    success, error, running = (b["event_data"]["replication"] for b in bodies)
    [copied] = success["successful_artifact"]
    assert (copied["type"], copied["status"], copied["name_tag"]) == (
        "image", "Success", "api [1 item(s) in total]")
    assert "failed_artifact" not in success
    [failed] = error["failed_artifact"]
    assert (failed["status"], failed["name_tag"]) == ("Error", "api [1 item(s) in total]")
    assert "successful_artifact" not in error
    assert "successful_artifact" not in running and "failed_artifact" not in running
    assert running["job_status"] == "Running"


def test_a_severity_alone_is_one_finding_at_that_severity(cli):
    """--severity High without --vulnerabilities reports one High vulnerability, never a
    High scan that found nothing; --severity None reports none."""
    with Target() as target:
        for severity in ("High", "None"):
            assert cli("send", "scanningCompleted", "prod/api:v1", "--url", target.url,
                       "--format", "harbor", "--severity", severity)[0] == 0
        bodies = target.bodies()
    reports = [next(iter(b["event_data"]["resources"][0]["scan_overview"].values()))
               for b in bodies]
    assert [(r["severity"], r["summary"]["total"], r["summary"]["summary"]) for r in reports] == [
        ("High", 1, {"High": 1}), ("None", 0, {})]
    events = [load_event(b) for b in bodies]
    assert [(e.severity, e.resources[0].total) for e in events] == [("High", 1), ("None", 0)]


def test_rules_for_replication_refuse_filters_when_updated_too(cli):
    """A filter added to a replication rule, or replication added to a filtered rule, is
    refused in one line: those events have no repository, so the rule would never fire."""
    assert cli("rules", "create", "dr", "--url", "http://h/", "--format", "harbor",
               "--action", "replication")[0] == 0
    assert cli("rules", "create", "deploy", "--url", "http://h/", "--format", "harbor",
               "--namespace", "prod")[0] == 0
    for args, message in (
        (["dr", "--tag", "v*"], "error: tag: replication events have no repository"),
        (["deploy", "--action", "pushImage", "--action", "tagRetention"],
         "error: namespace: tagRetention events have no repository"),
    ):
        code, out, err = cli("rules", "update", *args)
        assert (code, out) == (2, "")
        assert err.startswith(message) and len(err.splitlines()) == 1, err
    assert cli("rules", "update", "deploy", "--namespace", "", "--action", "tagRetention")[0] == 0
    assert json.loads(cli("rules", "show", "deploy", "--json")[1])["namespace"] is None


def test_emit_says_which_rule_it_skipped(cli, tmp_path):
    """A hand-edited rule whose format cannot carry the event is skipped with one line on
    stderr naming it and why, and the other rules still get their deliveries."""
    with Target() as target:
        for name in ("edited", "fine"):
            cli("rules", "create", name, "--url", target.url, "--format", "harbor",
                "--action", "replication")
        with sqlite3.connect(tmp_path / "r.db") as conn:
            conn.execute("UPDATE rules SET format = 'tcr' WHERE name = 'edited'")
        conn.close()
        code, out, err = cli("emit", "replication")
        assert len(target.requests) == 1
    assert code == 0
    assert err == "rule edited skipped: the tcr format has no replication event\n"
    assert out.startswith("task 1  rule fine  success")
    with sqlite3.connect(tmp_path / "r.db") as conn:
        conn.execute("DELETE FROM rules WHERE name = 'fine'")
    conn.close()
    assert cli("emit", "replication")[:3] == (
        0, "", "rule edited skipped: the tcr format has no replication event\n")


@pytest.mark.parametrize("action, details, cls", [
    R("quotaExceed", "quota usage reach 85%: x", "QuotaExceeded", id="exceed-with-warning-text"),
    R("quotaWarning", "adding 1 GiB of storage resource, which when updated to current usage of "
      "9.5 GiB will exceed the configured upper limit of 10 GiB.", "QuotaWarning",
      id="warning-with-exceed-text"),
])
def test_a_tcr_quota_event_reads_back_as_the_action_sent(cli, action, details, cls):
    """TCR has one quota type, projectQuota, told apart by its text: whatever --details
    says, a real receiver gets the action that was sent."""
    from receiver import Handlers

    handlers, seen = Handlers(), []
    handlers.on(["quotaExceed", "quotaWarning"])(seen.append)
    with serve(create_app({"RECEIVER_QUEUE": "sync"}, handlers=handlers)) as url:
        code, _, err = cli("send", action, "prod/api:v1", "--format", "tcr", "--details", details,
                           "--url", url)
    assert (code, err) == (0, "")
    [event] = seen
    assert (type(event).__name__, event.action, event.format) == (cls, action, "tcr")
    assert event.tags == ("v1",)
