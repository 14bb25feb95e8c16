"""Roll out a Kubernetes deployment, pinned by digest, when a matching image is pushed.

Run it from the project's directory (``kubectl`` on the PATH, pointed at your cluster by
its kubeconfig or ``KUBECONFIG``)::

    RECEIVER_HANDLERS=deploy_on_push \\
    RECEIVER_AUTH_HEADERS='{"Authentication": "s3cret"}' \\
    DEPLOY_NAMESPACE=prod DEPLOY_TAG='v*' gunicorn --pythonpath examples wsgi:app

It imports ``gate_state`` (the scan gate's record, beside it in ``examples/``): copy both.

A push of ``prod/team/api:v1.4.0`` runs, one after the other::

    kubectl get deployment/api -o jsonpath=...           # what does container api run now?
    kubectl set image deployment/api api=<host>/prod/team/api@sha256:...
    kubectl rollout status deployment/api --timeout=120s

and, when the rollout fails, ``kubectl rollout undo deployment/api`` before raising, so
the job is retried (``RECEIVER_HANDLER_ATTEMPTS``, ``RECEIVER_HANDLER_BACKOFF``) and then
ends ``dead``, its error readable in ``receiver jobs show ID``. The image is pinned by
digest, so a tag moved later cannot change what runs.

Settings (read once, at start; a bad one stops the server with a line naming it):

``DEPLOY_NAMESPACE`` (``prod``)
    The registry namespace to deploy from, exactly, as in a trigger rule; empty for all.
``DEPLOY_REPOSITORY`` (empty: every repository)
    A repository pattern in the registry's language, relative to the namespace
    (``/app*/**``, ``{api,web}``).
``DEPLOY_TAG`` (``v*``)
    A tag pattern. An image pushed by digest has no tag, so it never matches a pattern:
    set ``DEPLOY_TAG=`` (empty) to deploy every push, by digest too. (``DEPLOY_TAGS``,
    the first version's name, is still read when ``DEPLOY_TAG`` is not set.)
``DEPLOY_MAP`` (unset)
    Which deployment and container each repository feeds: a JSON object, or the path of
    a JSON file holding one. Keys are full repository names (``prod/team/api``) or
    patterns matched against the full name (``prod/team/*``); an exact name wins, then
    the first pattern in the file's order. A value is an object, or a list of them for
    an image that several deployments run, with the keys ``deployment``, ``container``
    and ``namespace`` (Kubernetes'), each optional: a missing one takes the value it
    would have without a map. **With a map, a repository that no key matches is not
    deployed** (one line in the log says so): a map is the list of what may roll out,
    and an image that merely shares a name with a deployment must not replace it. End
    the map with ``"**": {}`` to deploy every other repository by its name.
    Without ``DEPLOY_MAP``, the repository's last path segment names both the
    deployment and its container (``prod/team/api`` → ``deployment/api``, container
    ``api``).
``DEPLOY_K8S_NAMESPACE`` (unset: kubectl's own, from the kubeconfig's context)
    The Kubernetes namespace, given as ``kubectl -n NS``; a map entry's ``namespace``
    overrides it.
``DEPLOY_TIMEOUT`` (``120s``)
    How long ``kubectl rollout status`` waits (kubectl's duration: ``90s``, ``5m``).
``DEPLOY_KUBECTL_TIMEOUT`` (``30``)
    Seconds each other ``kubectl`` call may take before it is killed and counts as
    failed; ``rollout status`` gets ``DEPLOY_TIMEOUT`` plus this.
``DEPLOY_REGISTRY_HOST`` (unset: the host in the event)
    The registry host the cluster pulls from, when it is not the one the registry
    reports (TCR's VPC domain, a pull-through mirror).
``GATE_STATE``
    The scan gate's record of blocked digests (see ``gate_state``); give the gate and
    this handler the same path.

What a run does, and why:

- **Idempotent with no state of its own.** Handlers run at least once (a retry, a worker
  that died), so each run first asks ``kubectl get`` what the container runs; when it
  already runs that digest, the run logs ``already running``, sets nothing, and only waits
  for its rollout (``rollout status``; undone and raised if it fails, as below). Several
  deliveries of one push (the registry's retries, ``receiver redeliver``) are one job in
  the first place, since the receiver drops duplicates.
- **A failed rollout is undone, then raised.** ``rollout status`` failing or timing out
  runs ``kubectl rollout undo`` and raises :class:`DeployError`; the retry sets the image
  again. A failed ``get`` or ``set image`` raises without an undo, since nothing rolled.
- **A digest blocked by the scan gate is refused**: a WARNING line
  ``refusing to deploy prod/team/api@sha256:... : blocked by the scan gate: REASON``,
  no kubectl call, and :class:`DeployRefused` is raised. A refusal is a decision rather
  than a fault, but it is raised all the same, for two reasons: a job that did not deploy
  must not say ``succeeded`` in ``receiver jobs``, and a ``dead`` job is the way back:
  after ``gate_state.unblock(digest)`` (an exception granted), ``receiver jobs retry ID``
  deploys exactly that push, whereas ``receiver redeliver`` would be dropped as a
  duplicate. A block lifted while the job is still being retried deploys on the next
  attempt. Each attempt logs the refusal again; it calls no kubectl.
- **One image per event.** A push carries one image; if an event lists several digests
  (``receiver emit`` with several tags and no ``--digest``), the last is deployed and a
  warning names the others.
- **Caveat: order.** Jobs of two pushes to one deployment may run concurrently or be
  retried after each other, and nothing here knows which push is newer: an old push's
  retry can replace a newer image. If that matters, run ``RECEIVER_WORKERS=1`` and few
  ``RECEIVER_HANDLER_ATTEMPTS``, or deploy through git (``gitops_bump``).

Every action is one line on the ``receiver.examples.deploy_on_push`` logger.
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
import time
import typing as t

import gate_state

from receiver import PushImage, on
from receiver.core.matcher import PatternError, compile_pattern, repository_matches
from receiver.core.text import printable

log = logging.getLogger("receiver.examples.deploy_on_push")

__all__ = ["DeployError", "DeployRefused", "Target", "rollout"]


class DeployError(RuntimeError):
    """A deploy did not happen; the message says which and why (never a secret)."""


class DeployRefused(DeployError):
    """The scan gate has blocked the digest."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Where an image goes: a container of a deployment, in a Kubernetes namespace
    (``None``: kubectl's own)."""

    deployment: str
    container: str
    namespace: str | None

    def describe(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        return f"deployment/{self.deployment} container {self.container}{where}"


# Kubernetes names: a deployment is a DNS-1123 subdomain, a container and a namespace a label.
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DURATION_PART = r"(\d+(?:\.\d+)?)(h|ms|m|s)"
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]+)?")
_REFERENCE = re.compile(r"[A-Za-z0-9.-]+(:[0-9]+)?/[a-z0-9._/-]+@[a-z0-9]+:[a-f0-9]{32,}")
_ENTRY_KEYS = ("deployment", "container", "namespace")
# What `kubectl get` prints: one "CONTAINER<tab>IMAGE" line per container.
_IMAGES = 'jsonpath={range .spec.template.spec.containers[*]}{.name}{"\\t"}{.image}{"\\n"}{end}'


def _k8s_name(value: t.Any, kind: str, where: str) -> str:
    pattern, limit = (_SUBDOMAIN, 253) if kind == "deployment" else (_LABEL, 63)
    if not isinstance(value, str) or not pattern.fullmatch(value) or len(value) > limit:
        raise ValueError(f"{where}: {value!r} is not a valid Kubernetes {kind} name")
    return value


def _seconds(name: str, default: str) -> float:
    """A duration setting: a number of seconds, or kubectl's ``1m30s`` form."""
    raw = os.environ.get(name, "").strip() or default
    try:
        seconds = float(raw)
    except ValueError:
        if not re.fullmatch(f"(?:{_DURATION_PART})+", raw):
            raise ValueError(f"{name} must be seconds or a duration such as 90s or 5m, "
                             f"got {raw!r}") from None
        unit = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
        seconds = sum(float(n) * unit[u] for n, u in re.findall(_DURATION_PART, raw))
    if not 0 < seconds < math.inf:
        raise ValueError(f"{name} must be more than 0 and finite, got {raw!r}")
    return seconds


def _duration(seconds: float) -> str:
    """*seconds* as kubectl writes a duration: ``120s``, ``1.5s``."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _load_map(raw: str) -> list[tuple[str, list[dict[str, t.Any]]]]:
    """``DEPLOY_MAP`` as ``[(key, [entry, ...]), ...]`` in its order, checked now."""
    if raw.lstrip().startswith(("{", "[")):
        text, source = raw, "DEPLOY_MAP"
    else:
        try:
            text, source = pathlib.Path(raw).read_text(encoding="utf-8"), f"DEPLOY_MAP file {raw}"
        except OSError as exc:
            raise ValueError(f"DEPLOY_MAP: cannot read {raw!r} ({exc.strerror or exc}); give a "
                             "JSON object or the path of a file holding one") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        # A setting's mistake, whatever its type: ValueError, as for every setting here.
        raise ValueError(
            f"{source} must be a JSON object mapping repositories to targets")
    mapping = []
    for key, value in data.items():
        where = f"{source}[{key!r}]"
        try:
            compile_pattern(key)
        except PatternError as exc:
            raise ValueError(f"{where}: {exc}") from None
        entries = value if isinstance(value, list) else [value]
        if not entries or not all(isinstance(e, dict) for e in entries):
            raise ValueError(f"{where} must be an object ({', '.join(_ENTRY_KEYS)}) or a "
                             "non-empty list of them")
        for entry in entries:
            unknown = sorted(set(entry) - set(_ENTRY_KEYS))
            if unknown:
                raise ValueError(f"{where}: unknown key {unknown[0]!r}; expected "
                                 f"{', '.join(_ENTRY_KEYS)}")
            for name in _ENTRY_KEYS:
                if name in entry:
                    _k8s_name(entry[name], name, f"{where}.{name}")
        mapping.append((key, entries))
    return mapping


def _pattern(name: str, value: str) -> str:
    try:
        compile_pattern(value)
    except PatternError as exc:
        raise ValueError(f"{name}: {exc}") from None
    return value


NAMESPACE = os.environ.get("DEPLOY_NAMESPACE", "prod")
REPOSITORY = _pattern("DEPLOY_REPOSITORY", os.environ.get("DEPLOY_REPOSITORY", ""))
TAG = _pattern("DEPLOY_TAG", os.environ.get("DEPLOY_TAG", os.environ.get("DEPLOY_TAGS", "v*")))
K8S_NAMESPACE = os.environ.get("DEPLOY_K8S_NAMESPACE") or None
if K8S_NAMESPACE:
    _k8s_name(K8S_NAMESPACE, "namespace", "DEPLOY_K8S_NAMESPACE")
ROLLOUT_TIMEOUT = _seconds("DEPLOY_TIMEOUT", "120s")
KUBECTL_TIMEOUT = _seconds("DEPLOY_KUBECTL_TIMEOUT", "30")
REGISTRY_HOST = os.environ.get("DEPLOY_REGISTRY_HOST", "").strip() or None
if REGISTRY_HOST and not _HOST.fullmatch(REGISTRY_HOST):
    raise ValueError(f"DEPLOY_REGISTRY_HOST must be a host[:port], got {REGISTRY_HOST!r}")
MAP = _load_map(os.environ["DEPLOY_MAP"]) if os.environ.get("DEPLOY_MAP") else None


def targets_for(full_name: str) -> list[Target] | None:
    """Where an image of *full_name* goes; ``None`` when ``DEPLOY_MAP`` has no entry for it.

    :raises DeployError: a name taken from the repository is not a valid Kubernetes name.
    """
    last = full_name.rsplit("/", 1)[-1]
    if MAP is None:
        entries: list[dict[str, t.Any]] = [{}]
    else:
        found = next((e for k, e in MAP if k.lstrip("/") == full_name), None)
        if found is None:
            found = next((e for k, e in MAP if repository_matches(k, full_name)), None)
        if found is None:
            return None
        entries = found
    targets = []
    for entry in entries:
        deployment = entry.get("deployment", last)
        container = entry.get("container", last)
        try:
            _k8s_name(deployment, "deployment", f"the deployment for {full_name}")
            _k8s_name(container, "container", f"the container for {full_name}")
        except ValueError as exc:
            raise DeployError(f"{exc}; name it in DEPLOY_MAP") from None
        targets.append(Target(deployment, container, entry.get("namespace", K8S_NAMESPACE)))
    return targets


def _reference(event: PushImage) -> tuple[str, str]:
    """The digest and the image reference to deploy: the last resource's."""
    pinned = [(r.digest, r.digest_reference) for r in event.resources
              if r.digest is not None and r.digest_reference is not None]
    if not pinned:
        raise DeployError(f"push of {printable(event.repository.full_name)} carries no digest "
                          "reference to deploy")
    digest, reference = pinned[-1]
    others = sorted({d for d, _ in pinned} - {digest})
    if others:
        log.warning("push of %s lists several digests; deploying the last, %s, not %s",
                    printable(event.repository.full_name), digest, ", ".join(others))
    if REGISTRY_HOST:
        reference = REGISTRY_HOST + "/" + reference.split("/", 1)[1]
    if not _REFERENCE.fullmatch(reference):
        raise DeployError(f"not an image reference to deploy: {printable(reference)}")
    return digest, reference


def _kubectl(target: Target, *args: str, waits: bool = False) -> str:
    """Run ``kubectl [-n NS] ARGS``; its stdout.

    :param waits: the call waits for the rollout: its timeout is ``DEPLOY_TIMEOUT`` longer.
    :raises DeployError: kubectl is missing, timed out, or failed (with its last error line).
    """
    command = ["kubectl", *(["-n", target.namespace] if target.namespace else []), *args]
    # For messages, the command up to the deployment: kubectl -n apps rollout status deployment/a
    end = next(i for i, arg in enumerate(command) if arg.startswith("deployment/"))
    shown = " ".join(command[: end + 1])
    timeout = KUBECTL_TIMEOUT + (ROLLOUT_TIMEOUT if waits else 0)
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True,
                              timeout=timeout)
    except FileNotFoundError:
        raise DeployError("kubectl is not on the PATH of the receiver's process") from None
    except subprocess.TimeoutExpired:
        setting = "DEPLOY_TIMEOUT + DEPLOY_KUBECTL_TIMEOUT" if waits else "DEPLOY_KUBECTL_TIMEOUT"
        raise DeployError(f"{shown} did not finish within {_duration(timeout)} "
                          f"({setting})") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        reason = printable(lines[-1][:300]) if lines else f"exit status {done.returncode}"
        raise DeployError(f"{shown} failed: {reason}")
    return done.stdout


def _running(target: Target) -> str:
    """The image the target's container runs now, as the deployment's spec says."""
    out = _kubectl(target, "get", f"deployment/{target.deployment}", "-o", _IMAGES)
    images = dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    if target.container not in images:
        raise DeployError(f"deployment/{target.deployment} has no container {target.container} "
                          f"(it has: {', '.join(images) or 'none'}); name it in DEPLOY_MAP")
    return images[target.container].strip()


def _same_image(running: str, reference: str) -> bool:
    """Whether *running* is *reference*, also when it is written ``repo:tag@digest``."""
    name, _, digest = running.partition("@")
    if not digest:
        return False
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    return f"{name}@{digest}" == reference


def deploy(target: Target, reference: str, what: str) -> None:
    """Set *target*'s image to *reference* and wait for the rollout; undo it if it fails.

    :param what: the push, for the log (``prod/team/api:v1.4.0``).
    :raises DeployError: any step failed; a failed rollout has been undone first.
    """
    if _same_image(_running(target), reference):
        # Set already, by an earlier run or attempt: do not set it again, but do check its
        # rollout, so that a retry after a rollout that failed (and could not be undone) or
        # a worker that died while waiting does not call it a success.
        log.info("%s already running %s (%s); checking its rollout", target.describe(),
                 reference, what)
    else:
        log.info("rolling out %s to %s (%s)", target.describe(), reference, what)
        _kubectl(target, "set", "image", f"deployment/{target.deployment}",
                 f"{target.container}={reference}")
    started = time.monotonic()
    try:
        _kubectl(target, "rollout", "status", f"deployment/{target.deployment}",
                 f"--timeout={_duration(ROLLOUT_TIMEOUT)}", waits=True)
    except DeployError as failed:
        try:
            _kubectl(target, "rollout", "undo", f"deployment/{target.deployment}")
        except DeployError as undo:
            undone = f"and the rollback failed too: {undo}"
        else:
            undone = "rolled back with kubectl rollout undo"
        message = f"rollout of {target.describe()} to {reference} failed: {failed}; {undone}"
        log.error("%s", message)
        raise DeployError(message) from None
    log.info("rolled out %s to %s in %.1fs", target.describe(), reference,
             time.monotonic() - started)


@on(PushImage, namespace=NAMESPACE or None, repository=REPOSITORY or None, tag=TAG or None)
def rollout(event: PushImage) -> None:
    """Deploy the pushed image to every target of its repository, refusing a blocked digest."""
    full_name = event.repository.full_name
    tags = [r.tag for r in event.resources if r.tag]
    what = printable(f"{full_name}:{','.join(tags)}" if tags else full_name)
    targets = targets_for(full_name)
    if targets is None:
        log.info("not deploying %s: no DEPLOY_MAP entry matches it", what)
        return
    digest, reference = _reference(event)
    reason = gate_state.blocked(digest)
    if reason is not None:
        message = (f"refusing to deploy {printable(full_name)}@{digest} : "
                   f"blocked by the scan gate: {printable(reason)}")
        log.warning("%s", message)
        raise DeployRefused(message)
    for target in targets:
        deploy(target, reference, what)
