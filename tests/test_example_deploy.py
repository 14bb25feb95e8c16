"""examples/deploy_on_push.py under `gunicorn wsgi:app`, against a fake kubectl on the PATH,
with pushes fired by `receiver send` and `receiver redeliver` as a user fires them."""

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
from servers import ROOT, gunicorn, queued_jobs, settled_jobs, wait_for

SECRET = "deploy-s3cret-never-logged"
HOST = "registry.example.com"
OLD = "old.example.com/base@sha256:" + "0" * 64

# A kubectl that keeps its deployments in a JSON file (FAKE_KUBECTL_STATE), appends each argv
# as a JSON line to FAKE_KUBECTL_LOG, and answers as kubectl does. A deployment it has not
# heard of exists, with one container of its own name running OLD. The state's "failing" lists
# "NS/DEPLOYMENT"s whose rollout never completes, "slow" those whose `get` takes 5 s.
FAKE_KUBECTL = textwrap.dedent('''\
    #!{python} -I
    import fcntl, json, os, sys, time

    argv = sys.argv[1:]
    ns, args = (argv[1], argv[2:]) if argv[:1] == ["-n"] else ("default", argv)
    path = os.environ["FAKE_KUBECTL_STATE"]
    key = ns + "/" + next(a for a in args if a.startswith("deployment/")).split("/", 1)[1]
    def locked():
        lock = open(path + ".lock", "w")
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock

    with locked():
        with open(os.environ["FAKE_KUBECTL_LOG"], "a") as log:
            log.write(json.dumps(argv) + "\\n")
        with open(path) as f:
            slow = key in json.load(f)["slow"]
    if slow:
        time.sleep(5)  # outside the lock: the other calls go on
    with locked():
        with open(path) as f:
            state = json.load(f)
        name = key.split("/", 1)[1]
        dep = state["deployments"].setdefault(key, {{"containers": {{name: {old!r}}}}})
        history = dep.setdefault("history", [])
        out, err, code = "", "", 0
        if args[0] == "get":
            out = "".join(c + "\\t" + image + "\\n" for c, image in dep["containers"].items())
        elif args[:2] == ["set", "image"]:
            container, image = args[3].split("=", 1)
            if container not in dep["containers"]:
                err, code = 'error: unable to find container named "%s"' % container, 1
            else:
                history.append(dict(dep["containers"]))
                dep["containers"][container] = image
                out = "deployment.apps/%s image updated" % name
        elif args[:2] == ["rollout", "status"]:
            if key in state["failing"]:
                err = 'error: deployment "%s" exceeded its progress deadline' % name
                code = 1
            else:
                out = 'deployment "%s" successfully rolled out' % name
        elif args[:2] == ["rollout", "undo"]:
            dep["containers"] = history.pop()
            out = "deployment.apps/%s rolled back" % name
        with open(path, "w") as f:
            json.dump(state, f)
    print(out, end="")
    print(err, file=sys.stderr)
    sys.exit(code)
''')


class Cluster:
    """The fake kubectl's directory, state and log."""

    def __init__(self, where: pathlib.Path) -> None:
        where.mkdir()
        self.bin = where / "bin"
        self.bin.mkdir()
        kubectl = self.bin / "kubectl"
        kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable, old=OLD))
        kubectl.chmod(0o755)
        self.state = where / "state.json"
        self.log = where / "kubectl.jsonl"
        self.state.write_text(json.dumps({"deployments": {}, "failing": [], "slow": []}))
        self.log.touch()

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
                "FAKE_KUBECTL_STATE": str(self.state), "FAKE_KUBECTL_LOG": str(self.log)}

    def set(self, key: str, value: t.Any) -> None:
        state = json.loads(self.state.read_text())
        if key == "deployments":
            state[key].update(value)
        else:
            state[key] += value
        self.state.write_text(json.dumps(state))

    def calls(self, deployment: str) -> list[list[str]]:
        """The kubectl argvs naming *deployment*, in order."""
        lines = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [argv for argv in lines if f"deployment/{deployment}" in argv]

    def image(self, key: str, container: str) -> str:
        return json.loads(self.state.read_text())["deployments"][key]["containers"][container]


class Server(t.NamedTuple):
    url: str
    log: pathlib.Path
    queue: str
    cluster: Cluster
    cli_env: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "receiver", *args], check=False,
                              env=self.cli_env, capture_output=True, text=True, timeout=60)

    def send(self, ref: str, fmt: str = "tcr") -> int:
        """`receiver send pushImage REF`; the task id."""
        done = self.cli("send", "pushImage", ref, "--url", self.url + "/webhook", "--format", fmt,
                        "--header", f"Authentication: {SECRET}")
        assert done.returncode == 0, done.stdout + done.stderr
        return int(re.match(r"task (\d+)", done.stdout).group(1))

    def jobs(self, repository: str) -> list:
        return queued_jobs(self.queue, repository)

    def settled(self, repository: str, count: int = 1) -> list:
        return settled_jobs(self.queue, repository, count)


def _start(tmp: pathlib.Path, **settings: str) -> t.Iterator[Server]:
    cluster = Cluster(tmp / "cluster")
    queue = f"sqlite:///{tmp / 'queue.db'}"
    env = {"RECEIVER_HANDLERS": "deploy_on_push", "RECEIVER_QUEUE": queue,
           "RECEIVER_AUTH_HEADERS": json.dumps({"Authentication": SECRET}),
           "RECEIVER_HANDLER_ATTEMPTS": "2", "RECEIVER_HANDLER_BACKOFF": "0.05",
           "GATE_STATE": str(tmp / "gate.db"), **cluster.env(), **settings}
    cli_env = {**os.environ, "RECEIVER_DB": str(tmp / "rules.db"), "RECEIVER_QUEUE": queue,
               "RECEIVER_SEND_BACKOFF": "0.01"}
    with gunicorn(env, tmp, paths=[ROOT / "examples"]) as (url, log, _):
        yield Server(url, log, queue, cluster, cli_env)
    assert SECRET not in log.read_text()


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> t.Iterator[Server]:
    """The example with its defaults (namespace prod, tags v*) and a DEPLOY_MAP file."""
    tmp = tmp_path_factory.mktemp("deploy")
    deploy_map = tmp / "deploy-map.json"
    deploy_map.write_text(json.dumps({
        "prod/shop/api": {"deployment": "web", "container": "app", "namespace": "apps"},
        "prod/shop/job-*": [{"deployment": "worker"}, {"deployment": "cron", "container": "task"}],
        "prod/team/**": {},
    }))
    yield from _start(tmp, DEPLOY_MAP=str(deploy_map))


@pytest.fixture(scope="module")
def everything(tmp_path_factory) -> t.Iterator[Server]:
    """Every push deploys (DEPLOY_TAG and DEPLOY_NAMESPACE empty), into Kubernetes namespace
    stage, with no map, and kubectl calls cut at 1 s."""
    yield from _start(tmp_path_factory.mktemp("everything"), DEPLOY_TAG="", DEPLOY_NAMESPACE="",
                      DEPLOY_K8S_NAMESPACE="stage", DEPLOY_KUBECTL_TIMEOUT="1",
                      DEPLOY_TIMEOUT="1m")


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


class _AnyJsonpath(str):
    """Equal to any `-o jsonpath=...` argument."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith("jsonpath=")

    __hash__ = str.__hash__


ANY_JSONPATH = _AnyJsonpath("jsonpath=...")


def rolled_out(deployment: str, container: str, reference: str, ns: tuple[str, ...] = ()) -> list:
    """The kubectl calls of one rollout: get, set image, rollout status."""
    return [[*ns, "get", f"deployment/{deployment}", "-o", ANY_JSONPATH],
            [*ns, "set", "image", f"deployment/{deployment}", f"{container}={reference}"],
            [*ns, "rollout", "status", f"deployment/{deployment}", "--timeout=120s"]]


def test_a_push_in_each_format_rolls_out_once_by_digest(server):
    """A v* push in tcr, harbor and cloudevents sets the image to the digest reference and
    waits for the rollout, once; the tcr body redelivered twice more changes nothing."""
    formats = {"tcr": 1, "harbor": 2, "cloudevents": 3}
    tasks = {fmt: server.send(f"prod/team/api-{fmt}:v1.0.{n}@{digest(n)}", fmt)
             for fmt, n in formats.items()}
    again = [server.cli("redeliver", str(tasks["tcr"]), "--header", f"Authentication: {SECRET}")
             for _ in range(2)]
    assert all(r.returncode == 0 and "HTTP 200" in r.stdout for r in again)  # duplicates
    for fmt, n in formats.items():
        [job] = server.settled(f"prod/team/api-{fmt}")
        assert (job.status, job.attempts) == ("succeeded", 1)
        name, reference = f"api-{fmt}", f"{HOST}/prod/team/api-{fmt}@{digest(n)}"
        assert server.cluster.calls(name) == rolled_out(name, name, reference)
        assert server.cluster.image(f"default/{name}", name) == reference
    log = server.log.read_text()
    assert f"rolling out deployment/api-tcr container api-tcr to {HOST}/prod/team/api-tcr@" in log
    assert "rolled out deployment/api-harbor container api-harbor to " in log


def test_deploy_map_names_deployments_containers_and_namespaces(server):
    """DEPLOY_MAP sends an image to its deployment, container and namespace, to every
    deployment of a list, and not at all when no key matches; a push without a v* tag,
    or by digest, is no job."""
    server.cluster.set("deployments", {"apps/web": {"containers": {"app": OLD, "sidecar": OLD}},
                                       "default/worker": {"containers": {"job-mail": OLD}},
                                       "default/cron": {"containers": {"task": OLD}}})
    server.send(f"prod/shop/api:v2@{digest(10)}", "harbor")
    server.send(f"prod/shop/job-mail:v3@{digest(11)}")
    server.send(f"prod/other/api:v1@{digest(12)}")
    server.send(f"prod/team/api-latest:latest@{digest(13)}")
    server.send(f"prod/team/api-untagged@{digest(14)}", "harbor")
    api = f"{HOST}/prod/shop/api@{digest(10)}"
    job = f"{HOST}/prod/shop/job-mail@{digest(11)}"
    assert [j.status for j in server.settled("prod/shop/api")] == ["succeeded"]
    assert server.cluster.calls("web") == rolled_out("web", "app", api, ("-n", "apps"))
    assert server.cluster.image("apps/web", "sidecar") == OLD
    assert [j.status for j in server.settled("prod/shop/job-mail")] == ["succeeded"]
    assert server.cluster.calls("worker") == rolled_out("worker", "job-mail", job)
    assert server.cluster.calls("cron") == rolled_out("cron", "task", job)
    assert [j.status for j in server.settled("prod/other/api")] == ["succeeded"]
    assert server.cluster.calls("api") == []
    log = server.log.read_text()
    assert "not deploying prod/other/api:v1: no DEPLOY_MAP entry matches it" in log
    for repo in ("prod/team/api-latest", "prod/team/api-untagged"):
        assert re.search(rf"pushImage {repo} .*status=202 handlers=0", log), repo
        assert server.jobs(repo) == []


def test_a_digest_already_running_is_not_rolled_out_again(server):
    """When the container already runs the digest (also written repo:tag@digest), the job
    asks kubectl get, logs it, sets nothing, and only checks that its rollout is done."""
    reference = f"{HOST}/prod/team/steady@{digest(20)}"
    server.cluster.set("deployments", {"default/steady": {"containers": {
        "steady": f"{HOST}/prod/team/steady:v1@{digest(20)}"}}})
    server.send(f"prod/team/steady:v1@{digest(20)}", "cloudevents")
    [job] = server.settled("prod/team/steady")
    assert job.status == "succeeded"
    assert [argv[:2] for argv in server.cluster.calls("steady")] == [
        ["get", "deployment/steady"], ["rollout", "status"]]
    assert (f"deployment/steady container steady already running {reference} "
            "(prod/team/steady:v1); checking its rollout") in server.log.read_text()


def test_a_failed_rollout_is_undone_and_the_job_ends_dead(server):
    """A rollout that never completes is undone each attempt; after RECEIVER_HANDLER_ATTEMPTS
    the job is dead, and `receiver jobs show` gives the reason and the rollback."""
    server.cluster.set("failing", ["default/broken"])
    server.send(f"prod/team/broken:v9@{digest(30)}")
    [job] = server.settled("prod/team/broken")
    reference = f"{HOST}/prod/team/broken@{digest(30)}"
    undo = ["rollout", "undo", "deployment/broken"]
    one_attempt = [*rolled_out("broken", "broken", reference), undo]
    assert server.cluster.calls("broken") == one_attempt * 2
    assert server.cluster.image("default/broken", "broken") == OLD
    shown = server.cli("jobs", "show", str(job.job_id))
    assert "status:      dead" in shown.stdout and "attempts:    2" in shown.stdout
    assert (f"error:       DeployError: rollout of deployment/broken container broken to "
            f"{reference} failed: kubectl rollout status deployment/broken failed: error: "
            'deployment "broken" exceeded its progress deadline; rolled back with kubectl '
            "rollout undo") in shown.stdout


def test_a_blocked_digest_is_refused_until_unblocked(server, monkeypatch):
    """A digest the scan gate blocked is refused with a log line and no kubectl call; the
    job ends dead with the reason, and once unblocked, `receiver jobs retry` deploys it."""
    spec = importlib.util.spec_from_file_location("gate_state", ROOT / "examples" / "gate_state.py")
    gate_state = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gate_state)
    monkeypatch.setenv("GATE_STATE", str(server.log.parent / "gate.db"))
    gate_state.block(digest(40), "2 Critical vulnerabilities (Trivy)", "prod/team/risky")
    server.send(f"prod/team/risky:v1@{digest(40)}", "harbor")
    [job] = server.settled("prod/team/risky")
    refusal = (f"refusing to deploy prod/team/risky@{digest(40)} : blocked by the scan gate: "
               "2 Critical vulnerabilities (Trivy)")
    assert f"WARNING receiver.examples.deploy_on_push: {refusal}" in server.log.read_text()
    assert (job.status, job.error) == ("dead", f"DeployRefused: {refusal}")
    assert server.cluster.calls("risky") == []

    assert gate_state.unblock(digest(40))
    assert server.cli("jobs", "retry", str(job.job_id)).returncode == 0
    wait_for(lambda: [j for j in server.jobs("prod/team/risky") if j.status == "succeeded"])
    assert server.cluster.calls("risky") == rolled_out("risky", "risky",
                                                       f"{HOST}/prod/team/risky@{digest(40)}")


def test_with_empty_filters_every_push_deploys_with_the_repository_name(everything):
    """DEPLOY_TAG and DEPLOY_NAMESPACE empty: a push by digest from any namespace deploys to
    the deployment its last path segment names, with -n DEPLOY_K8S_NAMESPACE; a kubectl that
    hangs is cut at DEPLOY_KUBECTL_TIMEOUT, and the job ends dead saying so."""
    everything.cluster.set("slow", ["stage/hung"])
    everything.send(f"dev/tools/cli@{digest(50)}", "harbor")
    everything.send(f"dev/hung:v1@{digest(51)}")
    [job] = everything.settled("dev/tools/cli")
    assert job.status == "succeeded"
    reference = f"{HOST}/dev/tools/cli@{digest(50)}"
    expected = rolled_out("cli", "cli", reference, ("-n", "stage"))
    expected[2][-1] = "--timeout=60s"
    assert everything.cluster.calls("cli") == expected
    [hung] = everything.settled("dev/hung")
    assert hung.status == "dead"
    assert hung.error == ("DeployError: kubectl -n stage get deployment/hung did not finish "
                          "within 1s (DEPLOY_KUBECTL_TIMEOUT)")
