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
from receiver.core.events import REPOSITORY_ACTIONS, event_class
from receiver.core.formats import detect
from receiver.core.schemas import load_event
from receiver.handlers.dispatch import Handlers
from receiver.testing import make_body, make_event, sample, samples

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


def test_a_push_is_queued_and_its_handler_has_run(deliver, received_events):
    before = len(handlers.deployed)
    resp = deliver("pushImage", "prod/api:v1,latest", format="harbor")
    assert (resp.status_code, resp.get_json()["handlers"]) == (202, 1)
    assert [job.status for job in resp.jobs] == ["succeeded"]
    assert handlers.deployed[before:] == ["v1"]
    assert [e.tags for e in received_events] == [("v1", "latest")]


def test_a_redelivery_is_a_duplicate(deliver):
    before = len(handlers.deployed)
    body = sample("pushImage")  # prod/api:v1.4.2
    first, again = deliver(body), deliver(body)
    assert (first.status_code, first.get_json()["handlers"]) == (202, 1)
    assert (again.status_code, again.get_json()["duplicate"], again.jobs) == (200, True, [])
    assert handlers.deployed[before:] == ["v1.4.2"]


def test_a_handler_registered_in_a_test(deliver):
    seen = []
    on("deleteImage")(seen.append)
    assert deliver("deleteImage", "prod/api:v1").get_json()["handlers"] == 1
    assert len(seen) == 1


def test_is_gone_in_the_next(deliver):
    assert deliver("deleteImage", "prod/api:v1").get_json()["handlers"] == 0


def test_a_sample_posted_as_is(receiver_client, deliver):
    assert deliver(sample("pushImage", format="cloudevents")).status_code == 202
    assert receiver_client.get("/healthz").status_code == 200


def test_a_new_key_passes_when_not_strict(deliver):
    body = sample("pushImage")
    body["event_data"]["resources"][0]["size"] = 1234
    assert deliver(body).status_code == 202


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
    assert deliver("pushImage", headers={"Authentication": "s3cret"}).status_code == 202
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
    assert deliver(body, strict=False).status_code == 202
'''

LEAK_TESTS = '''
import pytest

from receiver import on

seen = []


@pytest.fixture()
def registered():
    on("deleteImage")(seen.append)  # a fixture that does not use receiver_app


def test_a_registers_without_fixtures():
    on("pullImage")(seen.append)


def test_b_registers_in_a_fixture(registered):
    pass


def test_c_sees_none_of_them(deliver):
    assert deliver("pullImage", "prod/api:v1").get_json()["handlers"] == 0
    assert deliver("deleteImage", "prod/api:v1").get_json()["handlers"] == 0
    assert seen == []


class TestModulesListedInTheConfig:
    @pytest.fixture()
    def receiver_config(self):
        return {"RECEIVER_HANDLERS": "listed"}

    @pytest.mark.parametrize("n", [1, 2])
    def test_keep_their_handlers_in_every_test(self, deliver, n):
        import listed

        resp = deliver("pushImage", "prod/api:v1")
        assert (resp.get_json()["handlers"], len(listed.seen)) == (1, n)
'''

LISTED = '''
from receiver import on

seen = []
on("pushImage")(seen.append)
'''

ENV_TESTS = '''
import sys

import pytest

from receiver import Handlers


def test_the_shells_settings_are_not_read(deliver, receiver_app):
    resp = deliver("pushImage", "prod/api:v1")
    assert (resp.status_code, resp.get_json()["handlers"]) == (202, 0)
    assert "handlers" not in sys.modules
    assert receiver_app.extensions["receiver"].path == "/webhook"


class TestARegistry:
    @pytest.fixture()
    def receiver_handlers(self):
        handlers = Handlers()
        handlers.on("pushImage")(lambda event: None)
        return handlers

    def test_runs_with_handlers_in_the_environment(self, deliver):
        assert deliver("pushImage", "prod/api:v1").get_json()["handlers"] == 1
'''

MISTAKE_TESTS = '''
def test_a_format_without_the_event(deliver):
    deliver("replication", format="tcr")


def test_a_bad_target(deliver):
    deliver("pushImage", "prod/api:")
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


def run_pytest(project, *args, env=None):
    """``python -m pytest`` in *project*, as its user runs it, with *env* exported too;
    returns (status, output)."""
    exported = env or {}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RECEIVER_", "PYTEST_")) and k != "PYTHONPATH"}
    env["XDG_DATA_HOME"] = str(project / "xdg")
    env.update(exported)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


@needs_entry_point
def test_a_users_project_uses_the_fixtures_without_a_conftest(project):
    """Installed receiver is enough: the fixtures work, deliver() answers as production does
    (202, and a duplicate for a redelivery) with the handlers run, handlers registered in a
    test are gone in the next, and a strict-marked test fails naming the unknown key's
    path."""
    (project / "test_hooks.py").write_text(textwrap.dedent(TESTS))
    (project / "test_auth.py").write_text(textwrap.dedent(AUTH_TESTS))
    status, out = run_pytest(project)

    assert status == 1, out
    assert "7 passed" in out and "1 failed" in out, out
    assert "FAILED test_hooks.py::test_a_new_key_fails_when_strict" in out, out
    assert "receiver strict mode: the tcr body has 1 key(s) its format does not declare" in out
    assert "event_data.resources[0].size" in out
    assert not (project / "xdg").exists()  # each test's queue is in a temporary directory


@needs_entry_point
def test_handlers_registered_in_a_test_never_outlive_it(project):
    """With or without the fixtures, a test's on() registrations (in it or in its fixtures)
    are removed after it; the modules listed in RECEIVER_HANDLERS keep theirs."""
    (project / "test_leak.py").write_text(textwrap.dedent(LEAK_TESTS))
    (project / "listed.py").write_text(textwrap.dedent(LISTED))
    status, out = run_pytest(project)

    assert status == 0, out
    assert "5 passed" in out, out


@needs_entry_point
def test_receiver_app_ignores_the_shells_receiver_settings(project):
    """RECEIVER_* variables exported in the shell running pytest neither break a test that
    gives its own registry nor import their modules into the others."""
    (project / "test_env.py").write_text(textwrap.dedent(ENV_TESTS))
    status, out = run_pytest(project, env={
        "RECEIVER_HANDLERS": "handlers", "RECEIVER_PATH": "/elsewhere",
        "RECEIVER_AUTH_HEADERS": '{"Authentication": "s3cret"}'})

    assert status == 0, out
    assert "2 passed" in out, out


@needs_entry_point
def test_a_mistake_in_deliver_is_one_line(project):
    """A target, format or option deliver() cannot build fails the test with one line that
    names the call and the problem, not a traceback through the receiver."""
    (project / "test_mistakes.py").write_text(textwrap.dedent(MISTAKE_TESTS))
    status, out = run_pytest(project)

    assert status == 1, out
    assert "2 failed" in out, out
    failures = [line.removeprefix("E").strip() for line in out.splitlines()
                if line.startswith("E ")]
    assert failures == [
        "Failed: deliver('replication', format='tcr'): the tcr format has no replication event",
        "Failed: deliver('pushImage', 'prod/api:'): target 'prod/api:' has no tag after ':'",
    ], out
    frames = ("pytest_plugin.py", "events.py", "formats/", "Traceback", "During handling")
    assert not [frame for frame in frames if frame in out], out


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
    assert (resp.status_code, resp.get_json()["format"]) == (202, fmt)
    assert [(e.format, e.repository.full_name, e.tags) for e in received_events] == [
        (fmt, "prod/api", ("v1", "v2"))]


@pytest.mark.parametrize("action, fmt", [
    ("pushImage", "tcr"), ("quotaWarning", "tcr"), ("quotaExceed", "tcr"),
    ("scanningStopped", "harbor"), ("replication", "harbor"), ("tagRetention", "harbor"),
])
def test_one_format_default_for_every_builder(deliver, action, fmt):
    """deliver(), make_body() and make_event() build tcr when the tcr format carries the
    action, else harbor."""
    target = "prod/api:v1" if action in REPOSITORY_ACTIONS else None
    assert deliver(action, target).get_json()["format"] == fmt
    full_name = "prod/api" if target else None
    assert detect(make_body(action, full_name, None)).name == fmt
    assert make_event(action).format == fmt


def test_deliver_targets(deliver, received_events):
    """A target by digest has no tag; a tag pinned to a digest keeps both; replication
    needs none."""
    digest = "sha256:" + "a" * 64
    assert deliver("pushImage", f"prod/api@{digest}", format="harbor").status_code == 202
    assert deliver("pushImage", f"prod/api:v1@{digest}").status_code == 202
    assert deliver("replication", project="prod").status_code == 202
    assert [(e.action, getattr(e, "tags", None)) for e in received_events] == [
        ("pushImage", ()), ("pushImage", ("v1",)), ("replication", None)]
    assert {e.resources[0].digest for e in received_events[:2]} == {digest}


@pytest.mark.parametrize("call, message", [
    (lambda d: d("replication", format="tcr"),
     "deliver('replication', format='tcr'): the tcr format has no replication event"),
    (lambda d: d("pushImage", "prod/api:"),
     "deliver('pushImage', 'prod/api:'): target 'prod/api:' has no tag after ':'"),
    (lambda d: d("pushImage", "prod/api@"),
     "deliver('pushImage', 'prod/api@'): target 'prod/api@' has no digest after '@'"),
    (lambda d: d("pushImage", "Prod/API:v1"),
     "deliver('pushImage', 'Prod/API:v1'): repository 'Prod/API' is not a valid name"),
    (lambda d: d("pushImage", severity="High"),
     "deliver('pushImage', severity='High'): severity is only for scanningCompleted"),
    (lambda d: d("pushImage", colour="red"),
     ("deliver('pushImage', colour='red'): build_event() got an unexpected keyword "
      "argument 'colour'")),
    (lambda d: d("pushImage", format="yaml"),
     "deliver('pushImage', format='yaml'): unknown format 'yaml'"),
    (lambda d: d("push"), "deliver('push'): unknown action 'push'"),
    (lambda d: d(sample("pushImage"), "prod/api:v1"),
     "deliver({...}, 'prod/api:v1'): deliver(body) posts the body as it is"),
])
def test_a_mistake_in_deliver_fails_the_test_naming_it(deliver, call, message):
    """What deliver() cannot build fails the test with the call and the problem, without an
    exception from inside the receiver chained to it."""
    with pytest.raises(pytest.fail.Exception) as info:
        call(deliver)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
    assert info.value.__context__ is None and info.value.__cause__ is None


def test_each_built_delivery_is_a_new_event(deliver, received_events):
    """An action delivered twice is two events, even a chart or a replication built twice
    in one second, whose bodies would otherwise be alike."""
    for action, target in (("uploadChart", "prod/chart:1.0.0"), ("replication", None)):
        first, second = deliver(action, target), deliver(action, target)
        assert (first.status_code, second.status_code) == (202, 202)
    assert len({e.id for e in received_events}) == 4


def test_a_redelivered_body_is_a_duplicate_and_runs_nothing(deliver, received_events):
    """As in production: the same body again is answered 200 "duplicate": true, and the
    handler has run once."""
    seen = []
    on("pushImage")(seen.append)
    body = sample("pushImage", format="harbor")
    first = deliver(body)
    again = deliver(body)
    assert (first.status_code, first.get_json()["handlers"]) == (202, 1)
    assert (again.status_code, again.get_json()) == (200, {
        "action": "pushImage", "format": "harbor", "event_id": first.get_json()["event_id"],
        "duplicate": True, "handlers": 0})
    assert (len(seen), len(received_events), again.jobs) == (1, 1, [])


def test_a_failing_handler_is_retried_until_dead(deliver):
    """deliver() runs the jobs with the retries production would make, at once; .jobs says
    how they ended."""
    runs = []

    def fails(event):
        runs.append(event)
        raise RuntimeError("cannot deploy")

    on("pushImage")(fails)
    resp = deliver("pushImage")
    assert (resp.status_code, resp.get_json()["handlers"]) == (202, 1)
    [job] = resp.jobs
    assert (job.status, job.attempts, len(runs)) == ("dead", 5, 5)
    assert "RuntimeError: cannot deploy" in job.error


class TestSyncMode:
    """receiver_config may still choose sync mode: handlers run in the request."""

    @pytest.fixture()
    def receiver_config(self):
        return {"RECEIVER_QUEUE": "sync"}

    def test_answers_200_and_has_no_jobs(self, deliver):
        seen = []
        on("pushImage")(seen.append)
        resp = deliver("pushImage")
        assert (resp.status_code, resp.get_json()["handlers"], resp.jobs) == (200, 1, [])
        assert len(seen) == 1


def test_deliver_strict_per_call(deliver):
    """strict=True fails the test, listing the unknown key; strict=False posts it."""
    body = sample("pushImage")
    body["event_data"]["size"] = 1
    assert deliver(body, strict=False).status_code == 202
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
    from receiver.core.formats import FORMATS
    from receiver.core.formats.strict import unknown_keys

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
