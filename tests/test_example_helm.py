"""examples/helm_upgrade.py under `gunicorn wsgi:app`, against a fake helm on the PATH, with
chart uploads and OCI chart pushes fired by `receiver send` and `receiver redeliver`."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import typing as t

import pytest
from servers import ROOT, gunicorn, queued_jobs, settled_jobs

SECRET = "helm-s3cret-never-logged"
HOST = "harbor.example.com"

# A helm that keeps its releases in a JSON file (FAKE_HELM_STATE: "releases" by
# "NAMESPACE/NAME", the helm "repos" added, the "failing" releases whose upgrade fails),
# appends each argv as a JSON line to FAKE_HELM_LOG, and answers list, repo update and
# upgrade as helm 3 does.
FAKE_HELM = textwrap.dedent('''\
    #!{python} -I
    import fcntl, json, os, re, sys

    argv = sys.argv[1:]

    def option(name, default=None):
        return argv[argv.index(name) + 1] if name in argv else default

    path = os.environ["FAKE_HELM_STATE"]
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(os.environ["FAKE_HELM_LOG"], "a") as log:
            log.write(json.dumps(argv) + "\\n")
        with open(path) as f:
            state = json.load(f)
        namespace = option("--namespace", "default")
        out, err, code = "", "", 0
        if argv[0] == "list":
            rows = [{{"name": key.split("/", 1)[1], "namespace": namespace,
                      "revision": str(r["revision"]), "updated": "2026-03-14 09:26:49 +0000 UTC",
                      "status": r["status"], "chart": r["chart"], "app_version": "1.0"}}
                    for key, r in sorted(state["releases"].items())
                    if key.split("/", 1)[0] == namespace
                    and re.search(option("--filter", ""), key.split("/", 1)[1])]
            out = json.dumps(rows)
        elif argv[:2] == ["repo", "update"]:
            if argv[2] not in state["repos"]:
                err, code = "Error: no repositories found matching '%s'.  Nothing will be updated." % argv[2], 1
            else:
                out = ("Hang tight while we grab the latest from your chart repositories...\\n"
                       '...Successfully got an update from the "%s" chart repository\\n'
                       "Update Complete. Happy Helming!" % argv[2])
        elif argv[:2] == ["upgrade", "--install"]:
            name, ref, version = argv[2], argv[3], option("--version")
            key = namespace + "/" + name
            if key in state["failing"]:
                err = ("Error: UPGRADE FAILED: release %s failed, and has been rolled back due "
                       "to atomic being set: context deadline exceeded" % name)
                code = 1
            else:
                before = state["releases"].get(key, {{"revision": 0}})
                state["releases"][key] = {{"chart": ref.rsplit("/", 1)[1] + "-" + version,
                                          "status": "deployed", "revision": before["revision"] + 1}}
                out = 'Release "%s" has been upgraded. Happy Helming!' % name
        else:
            err, code = "Error: unknown command %r for helm" % argv[0], 1
        with open(path, "w") as f:
            json.dump(state, f)
    print(out)
    print(err, file=sys.stderr)
    sys.exit(code)
''')


class Helm:
    """The fake helm's directory, state and log."""

    def __init__(self, where: pathlib.Path) -> None:
        self.bin = where / "bin"
        self.bin.mkdir(parents=True)
        helm = self.bin / "helm"
        helm.write_text(FAKE_HELM.format(python=sys.executable))
        helm.chmod(0o755)
        self.state = where / "helm-state.json"
        self.log = where / "helm.jsonl"
        self.state.write_text(json.dumps({"releases": {}, "repos": ["prod"], "failing": []}))
        self.log.touch()

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
                "FAKE_HELM_STATE": str(self.state), "FAKE_HELM_LOG": str(self.log)}

    def update(self, **changes: t.Any) -> None:
        state = json.loads(self.state.read_text())
        state.update(changes)
        self.state.write_text(json.dumps(state))

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def release(self, key: str) -> dict[str, t.Any]:
        return json.loads(self.state.read_text())["releases"][key]


class Server(t.NamedTuple):
    url: str
    log: pathlib.Path
    queue: str
    helm: Helm
    cli_env: dict[str, str]
    values: pathlib.Path

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "receiver", *args], check=False,
                              env=self.cli_env, capture_output=True, text=True, timeout=60)

    def send(self, action: str, ref: str, fmt: str) -> int:
        """`receiver send ACTION REF --format FMT`; the task id."""
        done = self.cli("send", action, ref, "--url", self.url + "/webhook", "--format", fmt,
                        "--host", HOST, "--header", f"Authentication: {SECRET}")
        assert done.returncode == 0, done.stdout + done.stderr
        return int(re.match(r"task (\d+)", done.stdout).group(1))

    def jobs(self, repository: str) -> list:
        return queued_jobs(self.queue, repository)

    def settled(self, repository: str, count: int = 1) -> list:
        return settled_jobs(self.queue, repository, count)

    def fire(self, action: str, ref: str, fmt: str, count: int = 1) -> tuple[int, list, list]:
        """Send one event, wait for its repository's *count* jobs to end; the task id, the
        jobs and the helm calls made meanwhile (events are fired one at a time)."""
        mark = len(self.helm.calls())
        task = self.send(action, ref, fmt)
        jobs = self.settled(ref.split(":")[0], count)
        return task, jobs, self.helm.calls()[mark:]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> t.Iterator[Server]:
    """The example with a HELM_RELEASES file: prod/api by name, with a values file; the other
    prod charts by pattern; OCI charts in charts/ (HELM_OCI_REPOSITORY) into namespace apps."""
    tmp = tmp_path_factory.mktemp("helm")
    helm = Helm(tmp)
    (tmp / "values").mkdir()
    values = tmp / "values" / "api.yaml"
    values.write_text("replicaCount: 2\n")
    releases = tmp / "releases.json"
    releases.write_text(json.dumps({
        "prod/api": {"release": "api-prod", "namespace": "prod", "values": ["values/api.yaml"]},
        "prod/**": {"namespace": "prod"},
        "charts/**": {"release": "{chart}-oci", "namespace": "apps"},
    }))
    queue = f"sqlite:///{tmp / 'queue.db'}"
    env = {"RECEIVER_HANDLERS": "helm_upgrade", "RECEIVER_QUEUE": queue,
           "RECEIVER_AUTH_HEADERS": json.dumps({"Authentication": SECRET}),
           "RECEIVER_HANDLER_ATTEMPTS": "2", "RECEIVER_HANDLER_BACKOFF": "0.05",
           "HELM_RELEASES": str(releases), "HELM_OCI_REPOSITORY": "charts/**",
           "HELM_TIMEOUT": "2m", **helm.env()}
    cli_env = {**os.environ, "RECEIVER_DB": str(tmp / "rules.db"), "RECEIVER_QUEUE": queue,
               "RECEIVER_SEND_BACKOFF": "0.01"}
    with gunicorn(env, tmp, paths=[ROOT / "examples"]) as (url, log, _):
        yield Server(url, log, queue, helm, cli_env, values)
    assert SECRET not in log.read_text()


def listed(release: str, namespace: str) -> list[str]:
    return ["list", "--filter", f"^{release}$", "--namespace", namespace, "--output", "json"]


def upgraded(release: str, chart: str, version: str, namespace: str, *more: str) -> list[str]:
    return ["upgrade", "--install", release, chart, "--version", version, "--atomic", "--wait",
            "--timeout", "120s", "--namespace", namespace, *more]


def test_an_uploaded_chart_upgrades_its_release_once_in_tcr_and_harbor(server):
    """uploadChart in tcr and harbor asks helm list, updates the helm repo, and upgrades the
    release HELM_RELEASES names to the version; the tcr body redelivered twice does nothing."""
    task, [job], calls = server.fire("uploadChart", "prod/api:0.3.1", "tcr")
    assert (job.status, job.attempts) == ("succeeded", 1)
    assert calls == [listed("api-prod", "prod"), ["repo", "update", "prod"],
                     upgraded("api-prod", "prod/api", "0.3.1", "prod", "--values", str(server.values))]
    again = [server.cli("redeliver", str(task), "--header", f"Authentication: {SECRET}")
             for _ in range(2)]
    assert all(r.returncode == 0 and "HTTP 200" in r.stdout for r in again)  # duplicates
    assert len(server.jobs("prod/api")) == 1

    _, [job], calls = server.fire("uploadChart", "prod/web:1.0.0-rc.1", "harbor")
    assert job.status == "succeeded"
    assert calls == [listed("web", "prod"), ["repo", "update", "prod"],
                     upgraded("web", "prod/web", "1.0.0-rc.1", "prod")]
    assert server.helm.release("prod/web")["chart"] == "web-1.0.0-rc.1"
    log = server.log.read_text()
    assert ("INFO receiver.examples.helm_upgrade: upgrading release api-prod in namespace prod "
            "to api 0.3.1 (prod/api:0.3.1): helm upgrade --install api-prod prod/api --version "
            "0.3.1 --atomic --wait --timeout 120s --namespace prod --values ") in log
    assert "upgraded release web in namespace prod to web 1.0.0-rc.1 in " in log


def test_an_oci_chart_push_upgrades_from_its_oci_reference(server):
    """A push to a HELM_OCI_REPOSITORY, in harbor and cloudevents, upgrades from oci://HOST/...
    without a repo update, turning helm's tag 1.3.0_build.7 back into 1.3.0+build.7; a push
    elsewhere queues no job, and a tag that is no version upgrades nothing."""
    _, [job], calls = server.fire("pushImage", "charts/team/web:1.2.0", "harbor")
    assert job.status == "succeeded"
    assert calls == [listed("web-oci", "apps"),
                     upgraded("web-oci", f"oci://{HOST}/charts/team/web", "1.2.0", "apps")]
    _, [job], calls = server.fire("pushImage", "charts/ui:1.3.0_build.7", "cloudevents")
    assert job.status == "succeeded"
    assert calls == [listed("ui-oci", "apps"),
                     upgraded("ui-oci", f"oci://{HOST}/charts/ui", "1.3.0+build.7", "apps")]
    assert server.helm.release("apps/ui-oci")["chart"] == "ui-1.3.0+build.7"

    _, jobs, calls = server.fire("pushImage", "charts/ui:latest", "cloudevents", count=2)
    assert ([j.status for j in jobs], calls) == (["succeeded", "succeeded"], [])
    server.send("pushImage", "prod/app:v1", "harbor")
    log = server.log.read_text()
    assert "not deploying charts/ui:latest: no tag is a chart version" in log
    assert re.search(r"pushImage prod/app .*status=202 handlers=0", log)
    assert server.jobs("prod/app") == []


def test_a_release_already_at_that_version_or_newer_is_not_upgraded(server):
    """When helm list says the release is deployed at that chart version, or a newer one, the
    job succeeds after helm list alone; a chart HELM_RELEASES does not name calls no helm."""
    server.helm.update(releases={"prod/steady": {"chart": "steady-0.6.0", "status": "deployed",
                                                 "revision": 4}})
    _, _, same = server.fire("uploadChart", "prod/steady:0.6.0", "tcr")
    _, jobs, older = server.fire("uploadChart", "prod/steady:0.5.10", "harbor", count=2)
    assert [j.status for j in jobs] == ["succeeded", "succeeded"]
    assert same == older == [listed("steady", "prod")]
    assert server.helm.release("prod/steady")["revision"] == 4
    _, [job], calls = server.fire("uploadChart", "other/thing:1.0.0", "tcr")
    assert (job.status, calls) == ("succeeded", [])
    log = server.log.read_text()
    assert ("release steady in namespace prod already runs steady-0.6.0 (prod/steady:0.6.0); "
            "nothing to do") in log
    assert ("release steady in namespace prod runs steady-0.6.0, newer than 0.5.10 "
            "(prod/steady:0.5.10); not downgrading") in log
    assert "not deploying other/thing:1.0.0: no HELM_RELEASES entry matches it" in log


def test_a_failing_upgrade_ends_the_job_dead_with_helms_error(server):
    """An upgrade that helm reports failed raises; after RECEIVER_HANDLER_ATTEMPTS the job is
    dead, and `receiver jobs show` gives helm's error."""
    server.helm.update(failing=["prod/broken"])
    _, [job], calls = server.fire("uploadChart", "prod/broken:0.7.0", "tcr")
    one_attempt = [listed("broken", "prod"), ["repo", "update", "prod"],
                   upgraded("broken", "prod/broken", "0.7.0", "prod")]
    assert calls == one_attempt * 2
    shown = server.cli("jobs", "show", str(job.job_id))
    assert "status:      dead" in shown.stdout and "attempts:    2" in shown.stdout
    assert ("error:       HelmError: helm upgrade of release broken in namespace prod to broken "
            "0.7.0 failed: Error: UPGRADE FAILED: release broken failed, and has been rolled "
            "back due to atomic being set: context deadline exceeded") in shown.stdout


def _load(monkeypatch: pytest.MonkeyPatch, **env: str) -> t.Any:
    for key in [k for k in os.environ if k.startswith("HELM_")]:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location("helm_upgrade_checked",
                                                  ROOT / "examples" / "helm_upgrade.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("env", "message"), [
    pytest.param({"HELM_RELEASES": "{nope"}, "HELM_RELEASES is not valid JSON", id="json"),
    pytest.param({"HELM_RELEASES": "/no/such/releases.json"},
                 "HELM_RELEASES: cannot read '/no/such/releases.json'", id="file"),
    pytest.param({"HELM_RELEASES": '{"prod/api": {"relase": "api"}}'},
                 "HELM_RELEASES['prod/api']: unknown key 'relase'", id="key"),
    pytest.param({"HELM_RELEASES": '{"prod/api": {"release": "API"}}'},
                 "HELM_RELEASES['prod/api'].release: 'API' is not a valid Helm release name",
                 id="release"),
    pytest.param({"HELM_RELEASES": '{"prod/api": {"values": ["/no/values.yaml"]}}'},
                 "HELM_RELEASES['prod/api'].values: no file '/no/values.yaml'", id="values"),
    pytest.param({"HELM_OCI_REPOSITORY": "charts/{a"}, "unclosed '{'", id="pattern"),
    pytest.param({"HELM_TIMEOUT": "soon"}, "HELM_TIMEOUT must be seconds or a duration",
                 id="timeout"),
    pytest.param({"HELM_ROLLBACK_FLAG": "--force"},
                 "HELM_ROLLBACK_FLAG must be --atomic or --rollback-on-failure", id="flag"),
])
def test_a_bad_setting_stops_the_import_naming_it(monkeypatch, env, message):
    """A wrong setting fails at import (so gunicorn does not start), with a message naming it."""
    with pytest.raises(ValueError, match=re.escape(message)):
        _load(monkeypatch, **env)
