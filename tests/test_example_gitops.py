"""examples/gitops_bump.py under `gunicorn wsgi:app` (two workers), with real git and a local
bare repository as the remote, and pushes fired by `receiver send` and `receiver redeliver`."""

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
from servers import ROOT, free_port, gunicorn, queued_jobs, settled_jobs

from receiver.testing import make_event

SECRET = "gitops-s3cret-never-logged"
HOST = "harbor.example.com"
KUSTOMIZATION = "deploy/prod/kustomization.yaml"
VALUES = "charts/values.yaml"

SEED_KUSTOMIZATION = textwrap.dedent("""\
    # Production overlay: the receiver pins images here by digest.
    apiVersion: kustomize.config.k8s.io/v1beta1
    kind: Kustomization
    resources:
      - ../../base  # the shared manifests
    images:
      # api: written by the receiver, do not edit by hand
      - name: harbor.example.com/prod/api
        newTag: v0.9.0
      - name: web   # the name in base/web.yaml
        newName: harbor.example.com/prod/web
        digest: sha256:{zero}
    """).format(zero="0" * 64)

SEED_VALUES = textwrap.dedent("""\
    # Values of the prod release.
    replicaCount: 2
    image:
      repository: harbor.example.com/prod/ui
      digest: ""  # set by the receiver
    worker:
      image: harbor.example.com/prod/worker@sha256:{zero}  # a whole reference
      replicas: 1
    """).format(zero="0" * 64)

# Pushes the remote refuses while the FROZEN file beside it exists, as a hook on a real
# server would (a release freeze).
PRE_RECEIVE = textwrap.dedent("""\
    #!/bin/sh
    if [ -e "{frozen}" ]; then
        echo "the branch is frozen for the release" >&2
        exit 1
    fi
    """)

# Installed in the example's clone: right after its commit (once), another clone pushes an
# unrelated commit, so the example's push finds that the remote has moved.
RACING_POST_COMMIT = textwrap.dedent("""\
    #!{python} -I
    import os, pathlib, subprocess

    marker = pathlib.Path({marker!r})
    if not marker.exists():
        marker.touch()
        env = {{k: v for k, v in os.environ.items() if not k.startswith("GIT_")}}
        env.update(GIT_AUTHOR_NAME="Dana Ops", GIT_AUTHOR_EMAIL="dana@example.com",
                   GIT_COMMITTER_NAME="Dana Ops", GIT_COMMITTER_EMAIL="dana@example.com")

        def git(*args):
            subprocess.run(["git", "-C", {other!r}, *args], env=env, check=True,
                           capture_output=True, timeout=30)

        git("pull", "--quiet", "--ff-only", "origin", "main")
        pathlib.Path({other!r}, "README.md").write_text("On call this week: Dana\\n")
        git("commit", "--quiet", "-am", "README: who is on call")
        git("push", "--quiet", "origin", "HEAD:main")
    """)


def digest(n: int) -> str:
    return "sha256:" + f"{n:02x}" * 32


class Remote:
    """The bare repository the example pushes to, and a second clone of it (a colleague)."""

    def __init__(self, where: pathlib.Path) -> None:
        home = where / "home"  # no ~/.gitconfig: the identity comes from the environment
        home.mkdir()
        self.env = {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
                    "GIT_AUTHOR_NAME": "Seed", "GIT_AUTHOR_EMAIL": "seed@example.com",
                    "GIT_COMMITTER_NAME": "Seed", "GIT_COMMITTER_EMAIL": "seed@example.com"}
        self.bare = where / "deploy.git"
        self.other = where / "colleague"
        self.frozen = where / "FROZEN"
        self.git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        hook = self.bare / "hooks" / "pre-receive"
        hook.write_text(PRE_RECEIVE.format(frozen=self.frozen))
        hook.chmod(0o755)
        self.git("clone", "--quiet", str(self.bare), str(self.other))
        for path, text in {KUSTOMIZATION: SEED_KUSTOMIZATION, VALUES: SEED_VALUES,
                           "README.md": "Deploy repository\n"}.items():
            (self.other / path).parent.mkdir(parents=True, exist_ok=True)
            (self.other / path).write_text(text)
        self.git("-C", str(self.other), "add", ".")
        self.git("-C", str(self.other), "commit", "--quiet", "-m", "seed")
        self.git("-C", str(self.other), "push", "--quiet", "origin", "HEAD:main")

    def git(self, *args: str) -> str:
        return subprocess.run(["git", *args], env=self.env, check=True, capture_output=True,
                              text=True, timeout=30).stdout

    def show(self, path: str) -> str:
        """The file at *path* on the remote's main."""
        return self.git("--git-dir", str(self.bare), "show", f"main:{path}")

    def commits(self) -> list[dict[str, t.Any]]:
        """The remote's main, newest first: sha, parents, author, message."""
        out = self.git("--git-dir", str(self.bare), "log", "main",
                       "--format=%H%x00%P%x00%an <%ae>%x00%B%x1e")
        return [dict(zip(("sha", "parents", "author", "message"), entry.strip("\n").split("\0"),
                         strict=True))
                for entry in out.split("\x1e") if entry.strip()]

    def commit_from_other(self, path: str, change: t.Callable[[str], str], subject: str) -> None:
        """The colleague edits *path* on an up-to-date main, commits and pushes."""
        self.git("-C", str(self.other), "pull", "--quiet", "--ff-only", "origin", "main")
        file = self.other / path
        file.write_text(change(file.read_text()))
        self.git("-C", str(self.other), "commit", "--quiet", "-am", subject)
        self.git("-C", str(self.other), "push", "--quiet", "origin", "HEAD:main")


class Server(t.NamedTuple):
    url: str
    log: pathlib.Path
    queue: str
    remote: Remote
    cli_env: dict[str, str]
    tmp: pathlib.Path

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "receiver", *args], check=False,
                              env=self.cli_env, capture_output=True, text=True, timeout=60)

    def send(self, ref: str, fmt: str) -> int:
        """`receiver send pushImage REF --format FMT`; the task id."""
        done = self.cli("send", "pushImage", ref, "--url", self.url + "/webhook", "--format", fmt,
                        "--host", HOST, "--operator", "robot$prod+ci",
                        "--header", f"Authentication: {SECRET}")
        assert done.returncode == 0, done.stdout + done.stderr
        return int(re.match(r"task (\d+)", done.stdout).group(1))

    def jobs(self, repository: str) -> list:
        return queued_jobs(self.queue, repository)

    def settled(self, repository: str, count: int = 1) -> list:
        return settled_jobs(self.queue, repository, count)

    def fire(self, ref: str, fmt: str) -> tuple[int, t.Any, list[dict[str, t.Any]]]:
        """Send one push, wait for its one job; the task, the job and the new commits."""
        repository = ref.split(":")[0].split("@")[0]
        before, earlier = len(self.remote.commits()), len(self.jobs(repository))
        task = self.send(ref, fmt)
        job = max(self.settled(repository, earlier + 1), key=lambda j: j.job_id)
        commits = self.remote.commits()
        return task, job, commits[: len(commits) - before]

    def workdir(self) -> pathlib.Path:
        """The example's clone, at its default place under the server's XDG_DATA_HOME."""
        [found] = [p for p in self.tmp.glob("xdg-*/receiver/gitops/*") if p.is_dir()]
        return found


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> t.Iterator[Server]:
    """The example with a GITOPS_MAP: prod/api and prod/web (named web) in a kustomization,
    prod/ui's digest and prod/worker's whole reference in Helm values; two workers."""
    tmp = tmp_path_factory.mktemp("gitops")
    remote = Remote(tmp)
    gitops_map = tmp / "gitops-map.json"
    gitops_map.write_text(json.dumps({
        "prod/api": {},
        "prod/web": {"name": "web"},
        "prod/ui": {"file": VALUES},
        "prod/worker": {"file": VALUES, "key": "worker.image"},
    }))
    queue = f"sqlite:///{tmp / 'queue.db'}"
    env = {"RECEIVER_HANDLERS": "gitops_bump", "RECEIVER_QUEUE": queue,
           "RECEIVER_AUTH_HEADERS": json.dumps({"Authentication": SECRET}),
           "RECEIVER_HANDLER_ATTEMPTS": "2", "RECEIVER_HANDLER_BACKOFF": "0.05",
           "HOME": remote.env["HOME"], "GIT_CONFIG_NOSYSTEM": "1",
           "GITOPS_REPO": str(remote.bare), "GITOPS_FILE": KUSTOMIZATION,
           "GITOPS_MAP": str(gitops_map)}
    cli_env = {**os.environ, "RECEIVER_DB": str(tmp / "rules.db"), "RECEIVER_QUEUE": queue,
               "RECEIVER_SEND_BACKOFF": "0.01"}
    with gunicorn(env, tmp, workers=2, paths=[ROOT / "examples"]) as (url, log, _):
        yield Server(url, log, queue, remote, cli_env, tmp)
    assert SECRET not in log.read_text()


def subject(ref: str, n: int, event_id: str) -> str:
    return f"deploy {ref} ({digest(n)[:19]}) from pushImage event {event_id}"


def test_a_push_in_each_format_pins_the_digest_in_one_commit(server):
    """A v* push in tcr, harbor and cloudevents each makes one commit naming the event, by
    the configured author, that pins the digest and keeps every comment; the tcr body
    redelivered twice more makes no other commit."""
    task, job, [commit] = server.fire(f"prod/api:v1.2.0@{digest(1)}", "tcr")
    assert (job.status, job.attempts) == ("succeeded", 1)
    assert commit["author"] == "receiver <receiver@localhost>"
    assert commit["message"] == (
        f"{subject('prod/api v1.2.0', 1, job.event_id)}\n\n"
        f"Pins {HOST}/prod/api@{digest(1)}\nin {KUSTOMIZATION}.\n\n"
        f"Receiver-Event: {job.event_id} (pushImage, tcr format, operator robot$prod+ci)")
    expected = SEED_KUSTOMIZATION.replace(
        "    newTag: v0.9.0\n", f"    newName: {HOST}/prod/api\n    digest: {digest(1)}\n")
    assert server.remote.show(KUSTOMIZATION) == expected

    again = [server.cli("redeliver", str(task), "--header", f"Authentication: {SECRET}")
             for _ in range(2)]
    assert all(r.returncode == 0 and "HTTP 200" in r.stdout for r in again)  # duplicates
    assert len(server.jobs("prod/api")) == 1
    assert server.remote.commits()[0]["sha"] == commit["sha"]

    _, job, [commit] = server.fire(f"prod/web:v2.0.0@{digest(2)}", "harbor")
    assert job.status == "succeeded"
    assert commit["message"].startswith(subject("prod/web v2.0.0", 2, job.event_id) + "\n")
    expected = expected.replace(f"digest: sha256:{'0' * 64}", f"digest: {digest(2)}")
    assert server.remote.show(KUSTOMIZATION) == expected

    _, job, [commit] = server.fire(f"prod/ui:v3.1.0@{digest(3)}", "cloudevents")
    assert job.status == "succeeded"
    assert commit["message"].startswith(subject("prod/ui v3.1.0", 3, job.event_id) + "\n")
    assert "cloudevents format" in commit["message"]
    assert server.remote.show(VALUES) == SEED_VALUES.replace(
        'digest: ""  # set by', f'digest: "{digest(3)}" # set by')  # quotes and comment kept
    log = server.log.read_text()
    assert (f"INFO receiver.examples.gitops_bump: pushed {commit['sha'][:7]} to "
            f"{server.remote.bare} main: {subject('prod/ui v3.1.0', 3, job.event_id)}") in log
    assert f"cloning {server.remote.bare} (branch main) into " in log


def test_a_race_with_another_commit_is_rebased_and_both_land(server):
    """When the remote moves between the example's commit and its push, the refused push is
    rebased with git pull --rebase and pushed again: both commits are on the remote."""
    _, job, [_] = server.fire(f"prod/worker:v1.0.0@{digest(4)}", "harbor")
    assert job.status == "succeeded"  # the whole reference, for a key not named digest
    assert (f"  image: {HOST}/prod/worker@{digest(4)}  # a whole reference\n"
            in server.remote.show(VALUES))

    hook = server.workdir() / ".git" / "hooks" / "post-commit"
    hook.write_text(RACING_POST_COMMIT.format(python=sys.executable, other=str(server.remote.other),
                                              marker=str(server.tmp / "raced")))
    hook.chmod(0o755)
    _, job, [ours, theirs] = server.fire(f"prod/api:v1.3.0@{digest(5)}", "tcr")
    assert (job.status, job.attempts) == ("succeeded", 1)
    assert theirs["message"] == "README: who is on call"
    assert theirs["author"] == "Dana Ops <dana@example.com>"
    assert ours["parents"] == theirs["sha"]
    assert ours["message"].startswith(subject("prod/api v1.3.0", 5, job.event_id) + "\n")
    assert server.remote.show("README.md") == "On call this week: Dana\n"
    assert f"    digest: {digest(5)}\n" in server.remote.show(KUSTOMIZATION)
    assert ("refused: [rejected] (fetch first), the remote moved; rebasing onto it with git pull "
            "--rebase (push 2 of 4)") in server.log.read_text()


def test_pushes_at_once_are_committed_one_after_the_other(server):
    """Three pushes sent at once, whose jobs run in both workers' threads, take turns in the
    shared clone (its lock file): three commits in a row, each job done at its first try."""
    refs = {"prod/api": f"prod/api:v1.4.0@{digest(9)}", "prod/ui": f"prod/ui:v5.0.0@{digest(10)}",
            "prod/worker": f"prod/worker:v2.0.0@{digest(11)}"}
    earlier = {repository: len(server.jobs(repository)) for repository in refs}
    before = server.remote.commits()
    sends = [subprocess.Popen(
        [sys.executable, "-m", "receiver", "send", "pushImage", ref, "--url", server.url + "/webhook",
         "--format", fmt, "--host", HOST, "--header", f"Authentication: {SECRET}"],
        env=server.cli_env, stdout=subprocess.DEVNULL) for ref, fmt in zip(
            refs.values(), ("tcr", "harbor", "cloudevents"), strict=True)]
    assert [send.wait(timeout=60) for send in sends] == [0, 0, 0]
    for repository in refs:
        job = max(server.settled(repository, earlier[repository] + 1), key=lambda j: j.job_id)
        assert (job.status, job.attempts) == ("succeeded", 1), job.error
    commits = server.remote.commits()
    new = commits[: len(commits) - len(before)]
    assert len(new) == 3
    assert [c["parents"] for c in new] == [c["sha"] for c in commits[1:4]]
    assert sorted(c["message"].split(" ")[1] for c in new) == sorted(refs)
    values = server.remote.show(VALUES)
    assert f'digest: "{digest(10)}"' in values and f"prod/worker@{digest(11)}" in values
    assert f"digest: {digest(9)}" in server.remote.show(KUSTOMIZATION)


def test_a_digest_already_pinned_makes_no_commit(server):
    """A push of the digest the file already pins (the same image under a new tag) succeeds
    with no commit and no push, and logs `already at`."""
    server.remote.commit_from_other(
        KUSTOMIZATION, lambda text: re.sub(r"(name: web.*\n.*\n    digest: )\S+",
                                           rf"\g<1>{digest(6)}", text),
        "web: pin by hand")
    _, job, new = server.fire(f"prod/web:v2.1.0@{digest(6)}", "cloudevents")
    assert (job.status, new) == ("succeeded", [])
    assert (f"{KUSTOMIZATION} already at web = {HOST}/prod/web@{digest(6)} (prod/web:v2.1.0); "
            "nothing to commit") in server.log.read_text()


def test_a_push_the_remote_refuses_ends_dead_with_gits_error(server):
    """A push the remote's hook declines is not retried as a race: each attempt fails with
    git's own error, the job ends dead, and `receiver jobs show` gives that error."""
    server.remote.frozen.touch()
    try:
        _, job, new = server.fire(f"prod/ui:v4.0.0@{digest(7)}", "harbor")
    finally:
        server.remote.frozen.unlink()
    assert (job.status, job.attempts, new) == ("dead", 2, [])
    bare = server.remote.bare
    assert job.error == (f"GitOpsError: git push to {bare} main failed: [remote rejected] "
                         "(pre-receive hook declined); remote: the branch is frozen for the "
                         f"release; error: failed to push some refs to '{bare}'")
    shown = server.cli("jobs", "show", str(job.job_id))
    assert "status:      dead" in shown.stdout and "the branch is frozen" in shown.stdout


def _load(monkeypatch: pytest.MonkeyPatch, **env: str) -> t.Any:
    for key in [k for k in os.environ if k.startswith("GITOPS_")]:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    spec = importlib.util.spec_from_file_location("gitops_bump_checked",
                                                  ROOT / "examples" / "gitops_bump.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_credentials_in_the_url_are_never_in_an_error_or_the_log(tmp_path, monkeypatch, caplog):
    """A clone that fails names the repository with its credentials masked, in the error and
    in the log, and gives git's reason."""
    port = free_port()  # nothing listens there
    module = _load(monkeypatch, GITOPS_REPO=f"http://robot:{SECRET}@127.0.0.1:{port}/deploy.git",
                   GITOPS_WORKDIR=str(tmp_path / "clone"), GITOPS_GIT_TIMEOUT="20")
    event = make_event("pushImage", "prod/api", ["v1.0.0"], digest=digest(8))
    caplog.set_level("INFO", "receiver.examples.gitops_bump")
    with pytest.raises(module.GitOpsError) as failed:
        module.bump(event)
    message = str(failed.value)
    assert message.startswith(f"git clone http://***@127.0.0.1:{port}/deploy.git (branch main) "
                              "failed: fatal: unable to access ")
    assert SECRET not in message and SECRET not in caplog.text
    assert f"cloning http://***@127.0.0.1:{port}/deploy.git" in caplog.text
    assert not (tmp_path / "clone").exists()


@pytest.mark.parametrize(("env", "message"), [
    pytest.param({"GITOPS_REPO": " "}, "GITOPS_REPO is not set", id="repo"),
    pytest.param({"GITOPS_AUTHOR": "receiver"}, "GITOPS_AUTHOR must be 'Name <email>'",
                 id="author"),
    pytest.param({"GITOPS_KIND": "argo"}, "GITOPS_KIND must be kustomize or helm", id="kind"),
    pytest.param({"GITOPS_FILE": "../values.yaml"}, "GITOPS_FILE must be a file path relative",
                 id="file"),
    pytest.param({"GITOPS_BRANCH": "main..x"}, "GITOPS_BRANCH: 'main..x' is not a valid",
                 id="branch"),
    pytest.param({"GITOPS_TAG": "v{1"}, "GITOPS_TAG: unclosed '{'", id="tag"),
    pytest.param({"GITOPS_MAP": '{"prod/api": {"fil": "x.yaml"}}'},
                 "GITOPS_MAP['prod/api']: unknown key 'fil'", id="map-key"),
    pytest.param({"GITOPS_MAP": '{"prod/api": {"key": "image.digest"}}'},
                 "GITOPS_MAP['prod/api']: 'key' is for Helm values, and kustomization.yaml is "
                 "a Kustomization", id="map-kind"),
    pytest.param({"GITOPS_PUSH_ATTEMPTS": "0"}, "GITOPS_PUSH_ATTEMPTS must be a positive whole",
                 id="attempts"),
])
def test_a_bad_setting_stops_the_import_naming_it(monkeypatch, tmp_path, env, message):
    """A wrong setting fails at import (so gunicorn does not start), with a message naming it."""
    with pytest.raises(ValueError, match=re.escape(message)):
        _load(monkeypatch, **{"GITOPS_REPO": str(tmp_path), **env})


@pytest.mark.parametrize(("place", "before", "after"), [
    pytest.param(
        {"kind": "kustomize"},
        "---\nimages:   # pinned\n- name: old\n  newTag: v1\n- name: H/prod/api\n  newTag: v1\n"
        "metadata:\n    name: prod  # four spaces\n",
        "---\nimages:   # pinned\n- name: old\n  newTag: v1\n- name: H/prod/api\n"
        "  newName: H/prod/api\n  digest: D\nmetadata:\n    name: prod  # four spaces\n",
        id="kustomize-entry"),
    pytest.param(
        {"kind": "kustomize", "name": "api"},
        "kind: Kustomization\n",
        "kind: Kustomization\nimages:\n- name: api\n  newName: H/prod/api\n  digest: D\n",
        id="kustomize-no-images"),
    pytest.param(
        {"kind": "helm", "key": "api.image.ref"},
        "# values\napi:\n    replicas: 2\n    env:\n        - A\n",
        "# values\napi:\n    replicas: 2\n    env:\n        - A\n    image:\n        ref: H/prod/api@D\n",
        id="helm-new-key"),
    pytest.param(
        {"kind": "helm", "key": "image.digest"},
        "image:\n  digest: 'old'  # quoted\n",
        "image:\n  digest: 'D'    # quoted\n",  # the comment keeps its column
        id="helm-quoted"),
])
def test_edit_keeps_the_files_style(monkeypatch, tmp_path, place, before, after):
    """The edit keeps the file's indentation, comments, order, quotes and `---`, adds what
    is missing, and reports no change when run again."""
    module = _load(monkeypatch, GITOPS_REPO=str(tmp_path))
    path = tmp_path / "file.yaml"
    path.write_text(before)
    where = module.Place("file.yaml", place["kind"], place.get("name"), place.get("key"))
    assert module.edit(path, where, "H/prod/api", "D")[0] is True
    assert path.read_text() == after
    assert module.edit(path, where, "H/prod/api", "D")[0] is False
