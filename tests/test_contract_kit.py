"""The contract-test kit as a user meets it: the shipped samples, and the pytest plugin run on
a user's project through its entry point, with no conftest.py."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap

import pytest

from receiver import on
from receiver.dispatch import Handlers
from receiver.events import event_class
from receiver.schemas import load_event
from receiver.testing import sample, samples

SHIPPED = samples()

HANDLERS = '''
from receiver import on

deployed = []

@on("pushImage", namespace="prod", tag="v*")
def deploy(event):
    deployed.extend(event.tags)
'''

TESTS = '''
import pytest

import handlers
from receiver import on
from receiver.testing import sample


def test_a_push_runs_the_handler_in_the_request(deliver, received_events):
    before = len(handlers.deployed)
    resp = deliver("pushImage", "prod/api:v1,latest", format="harbor")
    assert (resp.status_code, resp.get_json()["handlers"]) == (200, 1)
    assert handlers.deployed[before:] == ["v1"]
    assert [e.tags for e in received_events] == [("v1", "latest")]


def test_a_handler_registered_in_a_test(deliver):
    seen = []
    on("deleteImage")(seen.append)
    assert deliver("deleteImage", "prod/api:v1").get_json()["handlers"] == 1
    assert len(seen) == 1


def test_is_gone_in_the_next(deliver):
    assert deliver("deleteImage", "prod/api:v1").get_json()["handlers"] == 0


def test_a_sample_posted_as_is(receiver_client, deliver):
    assert deliver(sample("pushImage", format="cloudevents")).status_code == 200
    assert receiver_client.get("/healthz").status_code == 200


def test_a_new_key_passes_when_not_strict(deliver):
    body = sample("pushImage")
    body["event_data"]["resources"][0]["size"] = 1234
    assert deliver(body).status_code == 200


@pytest.mark.receiver_strict
def test_a_new_key_fails_when_strict(deliver):
    body = sample("pushImage")
    body["event_data"]["resources"][0]["size"] = 1234
    deliver(body)
'''

AUTH_TESTS = '''
import pytest


@pytest.fixture()
def receiver_config():
    return {"RECEIVER_AUTH_HEADERS": {"Authentication": "s3cret"}}


def test_auth_from_receiver_config(deliver):
    assert deliver("pushImage").status_code == 401
    assert deliver("pushImage", headers={"Authentication": "s3cret"}).status_code == 200
'''

DRIFT_TESTS = '''
from receiver.testing import sample


def test_recorded_delivery(deliver):
    body = sample("pushImage", format="harbor")
    body["event_data"]["repository"]["labels"] = []
    body["event_data"]["resources"][0]["size"] = 1234
    deliver(body)


def test_opted_out(deliver):
    body = sample("pushImage", format="harbor")
    body["event_data"]["repository"]["labels"] = []
    assert deliver(body, strict=False).status_code == 200
'''


def _entry_point_installed() -> bool:
    return any(ep.value == "receiver.pytest_plugin"
               for ep in importlib.metadata.entry_points(group="pytest11"))


needs_entry_point = pytest.mark.skipif(
    not _entry_point_installed(),
    reason="receiver is not installed with its entry points: pip install -e .",
)


@pytest.fixture()
def project(tmp_path):
    """A user's project: a handlers module and tests, a pytest.ini, and no conftest.py."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "handlers.py").write_text(textwrap.dedent(HANDLERS))
    return tmp_path


def run_pytest(project, *args):
    """``python -m pytest`` in *project*, as its user runs it; returns (status, output)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RECEIVER_", "PYTEST_")) and k != "PYTHONPATH"}
    env["XDG_DATA_HOME"] = str(project / "xdg")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


@needs_entry_point
def test_a_users_project_uses_the_fixtures_without_a_conftest(project):
    """Installed receiver is enough: the fixtures work, handlers registered in a test are gone
    in the next, and a strict-marked test fails naming the unknown key's path."""
    (project / "test_hooks.py").write_text(textwrap.dedent(TESTS))
    (project / "test_auth.py").write_text(textwrap.dedent(AUTH_TESTS))
    status, out = run_pytest(project)

    assert status == 1, out
    assert "6 passed" in out and "1 failed" in out, out
    assert "FAILED test_hooks.py::test_a_new_key_fails_when_strict" in out, out
    assert "receiver strict mode: the tcr body has 1 key(s) its format does not declare" in out
    assert "event_data.resources[0].size" in out
    assert not (project / "xdg").exists()  # sync mode: no queue file was made


@needs_entry_point
@pytest.mark.parametrize("how", [
    pytest.param({"ini": "receiver_strict = true\n"}, id="ini"),
    pytest.param({"args": ["--receiver-strict"]}, id="command-line"),
])
def test_strict_mode_for_a_whole_run(project, how):
    """The ini option or --receiver-strict makes every deliver() strict unless the call opts
    out; the failure lists every unknown key's path."""
    (project / "pytest.ini").write_text("[pytest]\n" + how.get("ini", ""))
    (project / "test_drift.py").write_text(textwrap.dedent(DRIFT_TESTS))
    status, out = run_pytest(project, *how.get("args", []))

    assert status == 1, out
    assert "1 failed, 1 passed" in out, out
    assert "receiver: strict mode" in out  # the report header
    failure = [line.removeprefix("E").strip() for line in out.splitlines()
               if line.startswith("E ")]
    start = failure.index("Failed: receiver strict mode: the harbor body has 2 key(s) its "
                          "format does not declare:")
    assert failure[start + 1:start + 3] == [
        "event_data.resources[0].size", "event_data.repository.labels"], out


@needs_entry_point
def test_a_project_that_never_uses_the_fixtures_is_not_disturbed(project):
    """The plugin loads in every run; a plain test suite passes as before."""
    (project / "test_plain.py").write_text("def test_one():\n    assert 1 + 1 == 2\n")
    status, out = run_pytest(project)

    assert status == 0, out
    assert "1 passed" in out


@pytest.mark.parametrize("fmt", ["tcr", "harbor", "cloudevents"])
def test_deliver_posts_each_format(deliver, received_events, fmt):
    """deliver() builds the format's body, which the app accepts as that format."""
    resp = deliver("pushImage", "prod/api:v1,v2", format=fmt)
    assert (resp.status_code, resp.get_json()["format"]) == (200, fmt)
    assert [(e.format, e.repository.full_name, e.tags) for e in received_events] == [
        (fmt, "prod/api", ("v1", "v2"))]


def test_deliver_targets(deliver, received_events):
    """A target by digest has no tag; replication needs none; a format lacking the action
    says so."""
    digest = "sha256:" + "a" * 64
    assert deliver("pushImage", f"prod/api@{digest}", format="harbor").status_code == 200
    assert deliver("replication", format="harbor", project="prod").status_code == 200
    assert [(e.action, getattr(e, "tags", None)) for e in received_events] == [
        ("pushImage", ()), ("replication", None)]
    assert received_events[0].resources[0].digest == digest
    with pytest.raises(ValueError, match="the tcr format has no replication event"):
        deliver("replication", format="tcr")
    with pytest.raises(ValueError, match="target 'prod/api:' has no tag"):
        deliver("pushImage", "prod/api:")
    with pytest.raises(TypeError, match="posts the body as it is"):
        deliver(sample("pushImage"), "prod/api:v1")


def test_deliver_strict_per_call(deliver):
    """strict=True fails the test, listing the unknown key; strict=False posts it."""
    body = sample("pushImage")
    body["event_data"]["size"] = 1
    assert deliver(body, strict=False).status_code == 200
    with pytest.raises(pytest.fail.Exception, match=r"1 key\(s\) .*\n  event_data.size$"):
        deliver(body, strict=True)
    unknown = {**body, "type": "pushSignature"}
    with pytest.raises(pytest.fail.Exception, match="no format knows the body's type "
                                                    "'pushSignature'"):
        deliver(unknown, strict=True)


class TestWithARegistry:
    """Overriding receiver_handlers gives receiver_app one registry's handlers only."""

    @pytest.fixture()
    def seen(self):
        return []

    @pytest.fixture()
    def receiver_handlers(self, seen):
        handlers = Handlers()
        handlers.on("pushImage", tag="v*")(seen.append)
        return handlers

    def test_only_the_registry_runs(self, deliver, seen):
        """A process-wide on() handler does not run in an app made with handlers=."""
        everywhere = []
        on("pushImage")(everywhere.append)
        assert deliver("pushImage", "prod/api:v1,latest").get_json()["handlers"] == 1
        assert [e.tags for e in seen] == [("v1",)] and everywhere == []


@pytest.mark.skipif(not SHIPPED, reason="no samples shipped yet")
@pytest.mark.parametrize("fmt, name", [pytest.param(f, n, id=f"{f}-{n}") for f, n in SHIPPED])
def test_every_sample_loads_into_its_action(fmt, name):
    """Each shipped sample is an event of its action, in its format, with no undeclared key."""
    from receiver.formats import FORMATS
    from receiver.formats.strict import unknown_keys

    body = sample(name, format=fmt)
    event = load_event(body)
    action = name.partition("-")[0]
    assert (type(event), event.action, event.format) == (event_class(action), action, fmt)
    assert unknown_keys(FORMATS[fmt], body) == []


@pytest.mark.skipif(not SHIPPED, reason="no samples shipped yet")
def test_sample_is_a_fresh_copy_and_names_what_exists():
    """Changing a sample does not change the next one; a missing one lists those there are."""
    fmt, name = SHIPPED[0]
    sample(name, format=fmt)["type"] = "changed"
    assert sample(name, format=fmt)["type"] != "changed"
    with pytest.raises(ValueError, match=rf"no {fmt} sample for 'nothing'; the {fmt} samples "
                                         rf"are: .*{name}"):
        sample("nothing", format=fmt)
    with pytest.raises(ValueError, match="no samples in format 'yaml'; the formats with "
                                         "samples are: cloudevents, harbor, tcr"):
        sample("pushImage", format="yaml")
