"""Upgrade a Helm release when a new version of its chart reaches the registry.

Run it (``helm`` 3.8+ on the PATH, pointed at your cluster by its kubeconfig)::

    RECEIVER_HANDLERS=helm_upgrade \\
    RECEIVER_AUTH_HEADERS='{"Authentication": "s3cret"}' \\
    HELM_RELEASES='{"prod/api": {"release": "api", "namespace": "prod"}}' \\
    gunicorn --pythonpath examples wsgi:app

Two kinds of chart upload are deployed:

- **A chart repository upload** (``uploadChart``: TCR, Harbor 2.0 to 2.7 with ChartMuseum).
  An upload of ``prod/api`` version ``0.3.1`` runs::

      helm list --filter ^api$ --namespace prod --output json     # what runs now?
      helm repo update prod                                        # learn of 0.3.1
      helm upgrade --install api prod/api --version 0.3.1 --atomic --wait --timeout 300s \\
          --namespace prod

  ``prod/api`` is ``REPO/CHART``: a Helm repository that you add once, on the machine and
  as the user that runs the receiver, with credentials that can read the project::

      helm repo add prod https://harbor.example.com/chartrepo/prod \\
          --username 'robot$prod+helm' --password ...

  The helm repository is named after the registry project unless ``HELM_REPO_NAME`` (or
  the release's ``repo``) says otherwise. Installing from the event's ``.tgz`` URL would
  need the credentials on helm's command line, where ``ps`` shows them; a repository added
  once keeps them in helm's own configuration.
- **An OCI chart** (``pushImage``: Harbor 2.8+, which stores charts as OCI artifacts; TCR
  too). A push is an image push to the receiver, as the body carries no media type, so a
  repository holds charts only if ``HELM_OCI_REPOSITORY`` says so. A push of
  ``charts/api:0.3.1`` runs ``helm upgrade --install api oci://HOST/charts/api --version
  0.3.1 ...`` (no ``repo update``). Log in once with ``helm registry login HOST``. Helm
  pushes a version ``1.0.0+build.7`` as the tag ``1.0.0_build.7``; the handler turns it
  back into the version. Tags that are not a version (``latest``) and pushes by digest
  are skipped.

Settings (read once, at start; a bad one stops the server with a line naming it):

``HELM_RELEASES`` (unset: no chart is deployed)
    Which release each chart repository feeds: a JSON object, or the path of a JSON file
    holding one. Keys are full repository names (``prod/api``) or patterns in the
    registry's language matched against the full name (``charts/**``); an exact name wins,
    then the first pattern in the object's order. A value is an object with the keys, each
    optional: ``release`` (the Helm release; default the chart's name; ``{chart}`` in it is
    replaced by the chart's name), ``namespace`` (the Kubernetes namespace, given as
    ``--namespace``; default helm's own, from the kubeconfig's context), ``values`` (a list
    of values files, each given as ``--values``; relative paths are relative to the JSON
    file, or to the server's working directory for inline JSON) and ``repo`` (the helm
    repository, for chart repository uploads). A chart that no key matches is not
    deployed; one log line says so.
``HELM_OCI_REPOSITORY`` (unset: no push is a chart)
    A pattern of full repository names whose pushes are OCI charts (``charts/**``,
    ``{prod,stage}/charts/*``). With a literal namespace first (``charts/...``), pushes to
    other namespaces queue no job at all.
``HELM_REPO_NAME`` (``{namespace}``)
    The helm repository a chart repository upload is installed from: ``{namespace}`` is
    replaced by the registry project.
``HELM_REGISTRY_HOST`` (unset: the host in the event)
    The registry host in ``oci://`` references, when helm must reach the registry by
    another name than the one it reports (TCR's VPC domain, a mirror).
``HELM_TIMEOUT`` (``300s``)
    helm's ``--timeout`` for ``upgrade`` (seconds, or ``90s``, ``5m``): how long ``--wait``
    waits for the release's resources. ``--atomic`` then rolls back, waiting as long
    again, so the upgrade is killed only after twice this plus ``HELM_COMMAND_TIMEOUT``.
``HELM_ROLLBACK_FLAG`` (``--atomic``)
    The flag that makes a failed upgrade roll back: ``--atomic`` (helm 3, and 4.1.3+,
    where it is a deprecated name), or ``--rollback-on-failure`` (helm 4, required by
    4.0 to 4.1.2, which refuse ``--atomic``).
``HELM_COMMAND_TIMEOUT`` (``60``)
    Seconds each other helm call (``list``, ``repo update``) may take before it is killed
    and counts as failed.

What a run does, and why:

- **Idempotent with no state of its own.** Handlers run at least once, so each run first
  asks ``helm list`` which chart the release runs. When it is ``deployed`` at that chart
  and version, the run logs ``already runs`` and does nothing (a release whose last
  upgrade failed is upgraded again). When it runs a *newer*
  version (an old upload's job retried after a new one), the run logs ``not
  downgrading`` and does nothing: roll back with ``helm rollback``, not with an upload.
  Several deliveries of one upload are one job in the first place, since the receiver
  drops duplicates. Within one process, upgrades of one release run one at a time; across
  processes helm refuses a second one while the first runs, and that job is retried.
- **A failure raises** :class:`HelmError` with helm's last error line, so the job is
  retried (``RECEIVER_HANDLER_ATTEMPTS``) and then ends ``dead``, readable in ``receiver
  jobs show ID``. ``--atomic`` has rolled the release back by then.
- **One version per event.** An event listing several versions deploys the highest;
  a warning names the others.

Every action is one line on the ``receiver.examples.helm_upgrade`` logger. No credentials
pass through this module: helm keeps them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import re
import subprocess
import threading
import time
import typing as t

from receiver import PushImage, UploadChart, on
from receiver.core.matcher import compile_pattern, repository_matches
from receiver.core.text import printable

log = logging.getLogger("receiver.examples.helm_upgrade")

__all__ = ["HelmError", "Release", "release_for", "upgrade"]


class HelmError(RuntimeError):
    """An upgrade did not happen; the message says which and why (never a secret)."""


@dataclasses.dataclass(frozen=True)
class Release:
    """Where a chart goes: a Helm release in a Kubernetes namespace (``None``: helm's own),
    with its values files and, for chart repository uploads, the helm repository."""

    name: str
    namespace: str | None
    values: tuple[str, ...] = ()
    repo: str | None = None

    def describe(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"release {self.name}{where}"


# Helm's own rule for release names (a DNS-1123 subdomain of at most 53 characters), and
# Kubernetes' for a namespace (a label). Checking them also keeps a '-' from starting an argument.
_RELEASE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_REPO_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_CHART = re.compile(r"[a-z0-9][a-z0-9._-]*")
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(h|ms|m|s))+")
# A chart version as helm reads it (SemVer 2, with helm's leniency: a 'v', a missing minor or
# patch).
_VERSION = re.compile(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?"
                      r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?")
_ENTRY_KEYS = ("release", "namespace", "values", "repo")


def _seconds(name: str, default: str) -> float:
    """A duration setting: a number of seconds, or helm's ``1m30s`` form."""
    raw = os.environ.get(name, "").strip() or default
    try:
        seconds = float(raw)
    except ValueError:
        if not _DURATION.fullmatch(raw):
            raise ValueError(f"{name} must be seconds or a duration such as 90s or 5m, "
                             f"got {raw!r}") from None
        unit = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
        seconds = sum(float(n) * unit[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", raw))
    if not 0 < seconds < math.inf:
        raise ValueError(f"{name} must be more than 0 and finite, got {raw!r}")
    return seconds


def _check_release(value: t.Any, where: str) -> str:
    # {chart} stands for a chart name, itself lower-case letters, digits, '.', '_' and '-'.
    name = value.replace("{chart}", "chart") if isinstance(value, str) else value
    if not isinstance(name, str) or not _RELEASE.fullmatch(name) or len(name) > 53:
        raise ValueError(f"{where}: {value!r} is not a valid Helm release name (lower-case "
                         "letters, digits, '-' and '.', at most 53 characters)")
    return t.cast(str, value)


def _load_releases(raw: str) -> list[tuple[str, dict[str, t.Any]]]:
    """``HELM_RELEASES`` as ``[(key, entry), ...]`` in its order, checked now."""
    base = pathlib.Path.cwd()
    if raw.lstrip().startswith("{"):
        text, source = raw, "HELM_RELEASES"
    else:
        try:
            text = pathlib.Path(raw).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"HELM_RELEASES: cannot read {raw!r} ({exc.strerror or exc}); give "
                             "a JSON object or the path of a file holding one") from None
        source, base = f"HELM_RELEASES file {raw}", pathlib.Path(raw).resolve().parent
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{source} must be a JSON object mapping chart repositories to releases")
    releases = []
    for key, entry in data.items():
        where = f"{source}[{key!r}]"
        compile_pattern(key)  # a malformed pattern raises PatternError, naming it
        if not isinstance(entry, dict):
            raise ValueError(
                f"{where} must be an object with the keys {', '.join(_ENTRY_KEYS)}")
        unknown = sorted(set(entry) - set(_ENTRY_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r}; expected "
                             f"{', '.join(_ENTRY_KEYS)}")
        if "release" in entry:
            _check_release(entry["release"], f"{where}.release")
        namespace = entry.get("namespace")
        if namespace is not None and (not isinstance(namespace, str)
                                      or not _LABEL.fullmatch(namespace)
                                      or len(namespace) > 63):
            raise ValueError(
                f"{where}.namespace: {namespace!r} is not a valid Kubernetes namespace")
        repo = entry.get("repo")
        if repo is not None and (not isinstance(repo, str) or not _REPO_NAME.fullmatch(repo)):
            raise ValueError(f"{where}.repo: {repo!r} is not a helm repository name")
        values = entry.get("values", [])
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            raise ValueError(f"{where}.values must be a list of file paths")
        files = []
        for value in values:
            path = base / value  # an absolute path stays as it is
            if not path.is_file():
                raise ValueError(f"{where}.values: no file {str(path)!r}")
            files.append(str(path))
        releases.append((key, {**entry, "values": tuple(files)}))
    return releases


def _literal_namespace(pattern: str) -> tuple[str, str] | None:
    """``(namespace, repository pattern)`` when *pattern* starts with a literal namespace."""
    first, sep, rest = pattern.lstrip("/").partition("/")
    if sep and rest and re.fullmatch(r"[a-z0-9][a-z0-9._-]*", first):
        return first, rest
    return None


RELEASES = _load_releases(os.environ["HELM_RELEASES"]) if os.environ.get("HELM_RELEASES") else []
OCI_REPOSITORY = os.environ.get("HELM_OCI_REPOSITORY", "").strip() or None
if OCI_REPOSITORY:
    compile_pattern(OCI_REPOSITORY)
REPO_NAME = os.environ.get("HELM_REPO_NAME", "").strip() or "{namespace}"
if not _REPO_NAME.fullmatch(REPO_NAME.replace("{namespace}", "ns")):
    raise ValueError(f"HELM_REPO_NAME: {REPO_NAME!r} is not a helm repository name")
REGISTRY_HOST = os.environ.get("HELM_REGISTRY_HOST", "").strip() or None
TIMEOUT = _seconds("HELM_TIMEOUT", "300s")
COMMAND_TIMEOUT = _seconds("HELM_COMMAND_TIMEOUT", "60")
ROLLBACK_FLAG = os.environ.get("HELM_ROLLBACK_FLAG", "").strip() or "--atomic"
if ROLLBACK_FLAG not in ("--atomic", "--rollback-on-failure"):
    raise ValueError(f"HELM_ROLLBACK_FLAG must be --atomic or --rollback-on-failure, "
                     f"got {ROLLBACK_FLAG!r}")
if not RELEASES:
    log.warning("HELM_RELEASES is empty or unset: no chart will be deployed")

_locks: dict[tuple[str | None, str], threading.Lock] = {}
_locks_lock = threading.Lock()


def release_for(full_name: str, oci: bool) -> Release | None:
    """The release that the chart repository *full_name* feeds; ``None`` when
    ``HELM_RELEASES`` has no entry for it."""
    entry = next((e for k, e in RELEASES if k.lstrip("/") == full_name), None)
    if entry is None:
        entry = next((e for k, e in RELEASES if repository_matches(k, full_name)), None)
    if entry is None:
        return None
    chart = full_name.rsplit("/", 1)[-1]
    name = entry.get("release", "{chart}").replace("{chart}", chart)
    try:
        _check_release(name, f"the release for {full_name}")
    except ValueError as exc:
        raise HelmError(f"{exc}; name it in HELM_RELEASES") from None
    repo = None if oci else entry.get("repo") or REPO_NAME.replace(
        "{namespace}", full_name.split("/", 1)[0])
    # Names from the event reach helm's command line: none may read as an option.
    if not _CHART.fullmatch(chart):
        raise HelmError(f"chart name {printable(chart)!r} is not one helm can install")
    if repo is not None and not _REPO_NAME.fullmatch(repo):
        raise HelmError(f"helm repository name {printable(repo)!r} (from the registry project) "
                        "is not valid; set HELM_REPO_NAME or the entry's repo")
    return Release(name, entry.get("namespace"), entry["values"], repo)


def _precedence(version: str) -> tuple[t.Any, ...] | None:
    """SemVer precedence of *version*, to compare two; ``None`` when it is not a version."""
    m = _VERSION.fullmatch(version)
    if m is None:
        return None
    core = tuple(int(n or 0) for n in m.group(1, 2, 3))
    if m.group(4) is None:
        return (core, 1, ())
    return (core, 0, tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                           for p in m.group(4).split(".")))


def _helm(*args: str, timeout: float, what: str) -> str:
    """Run ``helm ARGS``; its stdout.

    :param what: the call, for messages (``helm list for release api``).
    :raises HelmError: helm is missing, timed out, or failed (with its last error line).
    """
    try:
        done = subprocess.run(["helm", *args], check=False, capture_output=True, text=True,
                              timeout=timeout)
    except FileNotFoundError:
        raise HelmError("helm is not on the PATH of the receiver's process") from None
    except subprocess.TimeoutExpired:
        raise HelmError(f"{what} did not finish within {timeout:g}s") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit status {done.returncode}"
        raise HelmError(f"{what} failed: {reason}")
    return done.stdout


def _namespace_args(release: Release) -> list[str]:
    return ["--namespace", release.namespace] if release.namespace else []


def _deployed(release: Release) -> tuple[str, str] | None:
    """``(status, "chart-version")`` of *release* as ``helm list`` reports it, or ``None``."""
    # --filter is a regular expression; a release name's only special character is '.'.
    pattern = "^" + release.name.replace(".", "\\.") + "$"
    out = _helm("list", "--filter", pattern, *_namespace_args(release),
                "--output", "json", timeout=COMMAND_TIMEOUT,
                what=f"helm list for {release.describe()}")
    try:
        rows = json.loads(out or "[]")
        found = [r for r in rows if r["name"] == release.name]
    except (ValueError, TypeError, KeyError):
        raise HelmError(f"helm list for {release.describe()} did not print a JSON list of "
                        "releases") from None
    return (str(found[0]["status"]), str(found[0]["chart"])) if found else None


def upgrade(release: Release, chart_ref: str, chart: str, version: str, what: str) -> None:
    """Bring *release* to *version* of *chart* (installed from *chart_ref*), unless it runs
    that version or a newer one already.

    :param what: the upload, for the log (``prod/api:0.3.1``).
    :raises HelmError: a helm call failed; ``--atomic`` has rolled the release back.
    """
    key = (release.namespace, release.name)
    with _locks_lock:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        deployed = _deployed(release)
        if deployed is not None and deployed[0] == "deployed":
            running = deployed[1]
            if running == f"{chart}-{version}":
                log.info("%s already runs %s (%s); nothing to do", release.describe(), running,
                         what)
                return
            older = (_precedence(running[len(chart) + 1:]) if running.startswith(chart + "-")
                     else None)
            newer = _precedence(version)
            if older is not None and newer is not None and older > newer:
                log.info("%s runs %s, newer than %s (%s); not downgrading", release.describe(),
                         running, version, what)
                return
        if release.repo:
            _helm("repo", "update", release.repo, timeout=COMMAND_TIMEOUT,
                  what=f"helm repo update {release.repo}")
        command = ["upgrade", "--install", release.name, chart_ref, "--version", version,
                   ROLLBACK_FLAG, "--wait", "--timeout", f"{TIMEOUT:g}s", *_namespace_args(release)]
        for path in release.values:
            command += ["--values", path]
        log.info("upgrading %s to %s %s (%s): helm %s", release.describe(), chart, version, what,
                 " ".join(command))
        started = time.monotonic()
        _helm(*command, timeout=2 * TIMEOUT + COMMAND_TIMEOUT,
              what=f"helm upgrade of {release.describe()} to {chart} {version}")
        log.info("upgraded %s to %s %s in %.1fs", release.describe(), chart, version,
                 time.monotonic() - started)


def _one_version(versions: list[str], what: str) -> str:
    """The highest of *versions* (the last, if one is not a version); a warning names the rest."""
    ranked = [(_precedence(v), v) for v in versions]
    if all(p is not None for p, _ in ranked):
        chosen = max(ranked, key=lambda pv: pv[0])[1]  # type: ignore[arg-type,return-value]
    else:
        chosen = versions[-1]
    others = sorted(set(versions) - {chosen})
    if others:
        log.warning("%s lists several versions; deploying %s, not %s", what, chosen,
                    ", ".join(others))
    return chosen


@on(UploadChart)
def upgrade_uploaded_chart(event: UploadChart) -> None:
    """A chart repository upload (TCR, Harbor 2.0 to 2.7): upgrade its release."""
    full_name = event.repository.full_name
    versions = [r.tag for r in event.resources if r.tag]
    what = printable(f"{full_name}:{','.join(versions)}")
    release = release_for(full_name, oci=False)
    if release is None:
        log.info("not deploying %s: no HELM_RELEASES entry matches it", what)
        return
    if not versions:
        raise HelmError(f"upload of {printable(full_name)} carries no chart version")
    chart = full_name.rsplit("/", 1)[-1]
    upgrade(release, f"{release.repo}/{chart}", chart, _one_version(versions, what), what)


def upgrade_pushed_chart(event: PushImage) -> None:
    """An OCI chart push (Harbor 2.8+) to a ``HELM_OCI_REPOSITORY``: upgrade its release."""
    full_name = event.repository.full_name
    tags = [r.tag for r in event.resources if r.tag]
    what = printable(f"{full_name}:{','.join(tags)}" if tags else full_name)
    if OCI_REPOSITORY is None or not repository_matches(OCI_REPOSITORY, full_name):
        log.debug("not a chart: %s is not in HELM_OCI_REPOSITORY", what)
        return
    release = release_for(full_name, oci=True)
    if release is None:
        log.info("not deploying %s: no HELM_RELEASES entry matches it", what)
        return
    # helm pushes the version 1.0.0+build.7 as the tag 1.0.0_build.7 (a tag has no '+').
    versions = [tag.replace("_", "+") for tag in tags if _precedence(tag.replace("_", "+"))]
    if not versions:
        log.info("not deploying %s: no tag is a chart version", what)
        return
    host = REGISTRY_HOST or next((r.url.split("/", 1)[0] for r in event.resources if r.url), None)
    if not host:
        raise HelmError(
            f"push of {printable(full_name)} names no registry host; set HELM_REGISTRY_HOST")
    chart = full_name.rsplit("/", 1)[-1]
    upgrade(release, f"oci://{host}/{full_name}", chart, _one_version(versions, what), what)


if OCI_REPOSITORY:
    _split = _literal_namespace(OCI_REPOSITORY)
    if _split is None:
        on(PushImage)(upgrade_pushed_chart)
    else:
        on(PushImage, namespace=_split[0], repository=_split[1])(upgrade_pushed_chart)
