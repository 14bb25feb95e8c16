"""Pin a pushed image by digest in a GitOps repository: edit, commit and push with real git.

Run it from the project's directory (``git`` on the PATH, with access to the repository
by a credential helper, an SSH key, or credentials in the URL)::

    RECEIVER_HANDLERS=gitops_bump \\
    RECEIVER_AUTH_HEADERS='{"Authentication": "s3cret"}' \\
    GITOPS_REPO=git@git.example.com:team/deploy.git \\
    GITOPS_FILE=overlays/prod/kustomization.yaml gunicorn --pythonpath examples wsgi:app

A push of ``prod/api:v1.2.0`` then, under a file lock:

1. clones ``GITOPS_REPO`` (branch ``GITOPS_BRANCH``) into the work directory the first
   time, and later fetches and resets it to the remote's branch (dropping whatever a
   failed run left behind);
2. sets the image's digest in ``GITOPS_FILE``, a Kustomize ``kustomization.yaml`` or a
   Helm ``values.yaml`` (below), keeping the file's comments, key order and quotes;
3. commits, with the message
   ``deploy prod/api v1.2.0 (sha256:89a4c1b2d3e4) from pushImage event 42a6a48e...``,
   and pushes. When the push is refused because the remote's branch moved meanwhile,
   ``git pull --rebase`` puts the commit on top and it is pushed again
   (``GITOPS_PUSH_ATTEMPTS``).

When the file already pins that digest, nothing is committed or pushed, and the log
says ``already at``: a retry, a redelivery or the same image pushed under a new tag
change nothing. Any failure raises :class:`GitOpsError`, with git's own error (never a
password or token from the URL), so the job is retried (``RECEIVER_HANDLER_ATTEMPTS``,
``RECEIVER_HANDLER_BACKOFF``) and then ends ``dead``, its error readable in
``receiver jobs show ID``. A retry starts again from the remote's branch.

What is written:

- **Kustomize** (``kind: Kustomization``): in the ``images:`` list, the entry whose
  ``name`` is the image's name (``harbor.example.com/prod/api``, or the map's ``name``)
  gets ``newName: harbor.example.com/prod/api`` and ``digest: sha256:...``, and loses a
  ``newTag`` (the digest pins the image; a stale tag beside it would mislead). A missing
  entry, or a missing ``images:`` list, is added.
- **Helm** (any other file): the value at the dotted key ``GITOPS_VALUES_KEY``
  (``image.digest``, ``api.image``; missing mappings on the way are added). A key whose
  last part is ``digest`` gets the digest alone (``sha256:...``), as charts with an
  ``image.digest`` value expect; any other key gets the whole reference
  (``harbor.example.com/prod/api@sha256:...``), for charts that take one ``image`` string.

Settings (read once, at start; a bad one stops the server with a line naming it):

``GITOPS_REPO`` (required)
    The repository to commit to: a URL git understands (``https://...``,
    ``ssh://...``, ``git@host:team/deploy.git``) or a local path. Credentials in an
    ``https://user:token@`` URL work, but are stored in the clone's ``.git/config``
    (the work directory is readable by its owner only) and never logged; prefer a
    credential helper or an SSH key.
``GITOPS_BRANCH`` (``main``)
    The branch to commit to; it must exist on the remote.
``GITOPS_FILE`` (``kustomization.yaml``)
    The file to edit, relative to the repository's root.
``GITOPS_KIND`` (unset: by the file's name)
    ``kustomize`` or ``helm``. Unset, a file named ``kustomization.yaml``,
    ``kustomization.yml`` or ``Kustomization`` is Kustomize's, any other Helm values.
``GITOPS_VALUES_KEY`` (``image.digest``)
    For Helm values: the dotted key to set (see above).
``GITOPS_NAMESPACE`` (``prod``)
    The registry namespace to follow, exactly, as in a trigger rule; empty for all.
``GITOPS_REPOSITORY`` (empty: every repository)
    A repository pattern in the registry's language, relative to the namespace
    (``/app*/**``, ``{api,web}``).
``GITOPS_TAG`` (``v*``)
    A tag pattern. An image pushed by digest has no tag and never matches a pattern:
    set ``GITOPS_TAG=`` (empty) to follow every push, by digest too.
``GITOPS_MAP`` (unset)
    Where each repository's digest goes, when several images share the repository: a
    JSON object, or the path of a JSON file holding one. Keys are full repository names
    (``prod/api``) or patterns matched against the full name (``prod/team/*``); an exact
    name wins, then the first pattern in the file's order. A value is an object with
    the optional keys ``file`` (default ``GITOPS_FILE``), ``name`` (Kustomize: the
    entry's ``name``, default the image's ``host/namespace/repository``) and ``key``
    (Helm: default ``GITOPS_VALUES_KEY``). **With a map, a repository that no key
    matches is not committed** (one log line says so). Without a map, every matching
    push edits ``GITOPS_FILE``: with Helm values, narrow ``GITOPS_REPOSITORY`` to one
    repository, or every image would write the same key.
``GITOPS_REGISTRY_HOST`` (unset: the host in the event)
    The registry host the cluster pulls from, when it is not the one the registry
    reports (TCR's VPC domain, a pull-through mirror).
``GITOPS_AUTHOR`` (``receiver <receiver@localhost>``)
    The commits' author and committer, ``Name <email>``; no git configuration is needed.
``GITOPS_WORKDIR`` (``$XDG_DATA_HOME/receiver/gitops/<repo>-<hash>``)
    The clone. One per repository and branch is shared by every worker process and
    thread of the machine: a lock file beside it (``<workdir>.lock``, ``fcntl.flock``)
    serialises the whole fetch, edit, commit and push.
``GITOPS_PUSH_ATTEMPTS`` (``4``)
    Pushes per run: a push refused because the remote moved is rebased and tried again,
    up to this many pushes in all.
``GITOPS_GIT_TIMEOUT`` (``60``)
    Seconds each git command may take before it is killed and counts as failed.

Caveats:

- **Order.** Jobs of two pushes of one repository may be retried after each other, and
  nothing here knows which push is newer: an old push's retry can pin an older digest
  after a newer one. ``git log`` says which event did what; revert there.
- A rebase that conflicts (another commit changed the same lines) is aborted and
  raised; the retry edits the remote's new version of the file.

Every action is one line on the ``receiver.examples.gitops_bump`` logger.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import io
import itertools
import json
import logging
import os
import pathlib
import re
import shutil
import subprocess
import time
import typing as t

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import ScalarString

from receiver import PushImage, on
from receiver.core.matcher import PatternError, compile_pattern, repository_matches
from receiver.core.text import printable

log = logging.getLogger("receiver.examples.gitops_bump")

__all__ = ["GitOpsError", "Place", "bump", "mask"]


class GitOpsError(RuntimeError):
    """A commit did not happen; the message says which and why (never a credential)."""


@dataclasses.dataclass(frozen=True)
class Place:
    """Where an image's digest goes: a file of the repository, its kind, and the
    Kustomize image name (``None``: the image's own) or the Helm values key."""

    file: str
    kind: str
    name: str | None = None
    key: str | None = None


_KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_KINDS = ("kustomize", "helm")
_ENTRY_KEYS = ("file", "name", "key")
_HOST = re.compile(r"[A-Za-z0-9.-]+(:[0-9]+)?")
_REFERENCE = re.compile(r"([A-Za-z0-9.-]+(?::[0-9]+)?/[a-z0-9._/-]+)@([a-z0-9]+:[a-f0-9]{32,})")
_AUTHOR = re.compile(r"([^<>\n]+?)\s*<([^<>\s]+)>")
# The user information of a URL (user:password@, token@): never in a message.
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")  # up to the last @
# A line that opens a block: "key:", perhaps with a comment; not a "- key:" item.
_KEY_LINE = re.compile(r"\s*[^\s#-][^#]*:\s*(#.*)?")
_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# `git push --porcelain` refusals that mean "the remote moved": rebase and push again.
_MOVED = re.compile(r"\[rejected\] \((fetch first|non-fast-forward|stale info)\)"
                    r"|\[remote rejected\] \((cannot lock ref|incorrect old value)")


def mask(text: str) -> str:
    """*text* with the credentials of any URL in it replaced by ``***``."""
    return _USERINFO.sub(r"\1***@", text)


def _positive(name: str, default: str, kind: type[int | float]) -> t.Any:
    raw = os.environ.get(name, "").strip() or default
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if not 0 < value < float("inf"):
        raise ValueError(f"{name} must be a positive {'whole ' if kind is int else ''}number, "
                         f"got {raw!r}")
    return value


def _pattern(name: str, value: str) -> str:
    try:
        compile_pattern(value)
    except PatternError as exc:
        raise ValueError(f"{name}: {exc}") from None
    return value


def _relative_file(value: t.Any, where: str) -> str:
    path = pathlib.PurePosixPath(value) if isinstance(value, str) and value.strip() else None
    if path is None or path.is_absolute() or ".." in path.parts or str(path) == ".":
        raise ValueError(f"{where} must be a file path relative to the repository's root, "
                         f"got {value!r}")
    return str(path)


def _values_key(value: t.Any, where: str) -> str:
    if not isinstance(value, str) or not all(value.split(".")):
        raise ValueError(f"{where} must be a dotted key such as image.digest, got {value!r}")
    return value


def _kind_of(file: str) -> str:
    if KIND:
        return KIND
    return "kustomize" if pathlib.PurePosixPath(file).name in _KUSTOMIZATION_NAMES else "helm"


def _place(file: str, name: t.Any, key: t.Any, where: str) -> Place:
    kind = _kind_of(file)
    if kind == "kustomize" and key is not None:
        raise ValueError(f"{where}: 'key' is for Helm values, and {file} is a Kustomization")
    if kind == "helm" and name is not None:
        raise ValueError(f"{where}: 'name' is for a Kustomization, and {file} is Helm values")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ValueError(f"{where}.name must be an image name, got {name!r}")
    return Place(file, kind, name, _values_key(key, f"{where}.key") if key is not None
                 else VALUES_KEY if kind == "helm" else None)


def _load_map(raw: str) -> list[tuple[str, Place]]:
    """``GITOPS_MAP`` as ``[(key, place), ...]`` in its order, checked now."""
    if raw.lstrip().startswith("{"):
        text, source = raw, "GITOPS_MAP"
    else:
        try:
            text, source = pathlib.Path(raw).read_text(encoding="utf-8"), f"GITOPS_MAP file {raw}"
        except OSError as exc:
            raise ValueError(f"GITOPS_MAP: cannot read {raw!r} ({exc.strerror or exc}); give a "
                             "JSON object or the path of a file holding one") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{source} must be a JSON object mapping repositories to files")
    places = []
    for key, entry in data.items():
        where = f"{source}[{key!r}]"
        _pattern(where, key)
        if not isinstance(entry, dict):
            raise ValueError(
                f"{where} must be an object with the optional keys {', '.join(_ENTRY_KEYS)}")
        unknown = sorted(set(entry) - set(_ENTRY_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r}; expected "
                             f"{', '.join(_ENTRY_KEYS)}")
        file = _relative_file(entry["file"], f"{where}.file") if "file" in entry else FILE
        places.append((key, _place(file, entry.get("name"), entry.get("key"), where)))
    return places


def _default_workdir(repo: str, branch: str) -> pathlib.Path:
    data = pathlib.Path(os.environ.get("XDG_DATA_HOME") or pathlib.Path.home() / ".local/share")
    stem = re.sub(r"\.git$", "", mask(repo).rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1])
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip(".-") or "repo"
    digest = hashlib.sha256(f"{repo}\0{branch}".encode()).hexdigest()[:12]
    return data / "receiver" / "gitops" / f"{stem}-{digest}"


REPO = os.environ.get("GITOPS_REPO", "").strip()
if not REPO:
    raise ValueError("GITOPS_REPO is not set: give the URL or path of the repository to "
                     "commit to")
if os.path.exists(REPO):  # a local path: absolute, since git runs in the work directory
    REPO = os.path.abspath(REPO)
SHOWN_REPO = mask(REPO)
BRANCH = os.environ.get("GITOPS_BRANCH", "").strip() or "main"
if BRANCH.startswith("-") or re.search(r"[\s~^:?*\[\\]|\.\.|@\{|//|\.lock$|^/|/$", BRANCH):
    raise ValueError(f"GITOPS_BRANCH: {BRANCH!r} is not a valid git branch name")
KIND = os.environ.get("GITOPS_KIND", "").strip() or None
if KIND is not None and KIND not in _KINDS:
    raise ValueError(f"GITOPS_KIND must be kustomize or helm, got {KIND!r}")
FILE = _relative_file(os.environ.get("GITOPS_FILE", "").strip() or "kustomization.yaml",
                      "GITOPS_FILE")
VALUES_KEY = _values_key(os.environ.get("GITOPS_VALUES_KEY", "").strip() or "image.digest",
                         "GITOPS_VALUES_KEY")
NAMESPACE = os.environ.get("GITOPS_NAMESPACE", "prod").strip()
REPOSITORY = _pattern("GITOPS_REPOSITORY", os.environ.get("GITOPS_REPOSITORY", ""))
TAG = _pattern("GITOPS_TAG", os.environ.get("GITOPS_TAG", "v*"))
DEFAULT_PLACE = _place(FILE, None, None, "GITOPS_FILE")
MAP = _load_map(os.environ["GITOPS_MAP"]) if os.environ.get("GITOPS_MAP", "").strip() else None
REGISTRY_HOST = os.environ.get("GITOPS_REGISTRY_HOST", "").strip() or None
if REGISTRY_HOST and not _HOST.fullmatch(REGISTRY_HOST):
    raise ValueError(f"GITOPS_REGISTRY_HOST must be a host[:port], got {REGISTRY_HOST!r}")
_author = _AUTHOR.fullmatch(os.environ.get("GITOPS_AUTHOR", "").strip()
                            or "receiver <receiver@localhost>")
if _author is None:
    raise ValueError(f"GITOPS_AUTHOR must be 'Name <email>', got "
                     f"{os.environ.get('GITOPS_AUTHOR')!r}")
AUTHOR_NAME, AUTHOR_EMAIL = _author.groups()
WORKDIR = pathlib.Path(os.environ.get("GITOPS_WORKDIR", "").strip()
                       or _default_workdir(REPO, BRANCH)).absolute()
PUSH_ATTEMPTS = _positive("GITOPS_PUSH_ATTEMPTS", "4", int)
GIT_TIMEOUT = _positive("GITOPS_GIT_TIMEOUT", "60", float)


# --- git --------------------------------------------------------------------------------

def _env() -> dict[str, str]:
    """git's environment: our identity, and never a prompt for a password."""
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0",
            "GIT_AUTHOR_NAME": AUTHOR_NAME, "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
            "GIT_COMMITTER_NAME": AUTHOR_NAME, "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL}


def _reason(done: subprocess.CompletedProcess | subprocess.CalledProcessError) -> str:
    """What git said went wrong: its stderr's lines, without hints, masked and cut short."""
    stderr = _ESCAPE.sub("", done.stderr or "")  # the sideband's "erase line"
    lines = [line.strip() for line in stderr.splitlines()
             if line.strip() and not line.startswith("hint:")]
    text = "; ".join(lines[-6:]) or f"exit status {done.returncode}"
    return printable(mask(text if len(text) <= 600 else "..." + text[-600:]))


def _git(*args: str, cwd: pathlib.Path | None = None, what: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    """Run ``git ARGS`` with ``GITOPS_GIT_TIMEOUT``.

    :param what: the command for messages (default: the masked command line).
    :param check: raise when git fails (else the caller reads ``returncode``).
    :raises GitOpsError: git is missing, timed out, or failed (with its error).
    """
    shown = what or mask(" ".join(["git", *args]))
    try:
        return subprocess.run(["git", *args], cwd=cwd, env=_env(), check=check,
                              capture_output=True, text=True, timeout=GIT_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise GitOpsError("git is not on the PATH of the receiver's process") from None
    except subprocess.TimeoutExpired:
        raise GitOpsError(f"{shown} did not finish within {GIT_TIMEOUT:g}s "
                          "(GITOPS_GIT_TIMEOUT)") from None
    except subprocess.CalledProcessError as exc:
        raise GitOpsError(f"{shown} failed: {_reason(exc)}") from None


@contextlib.contextmanager
def _locked(workdir: pathlib.Path) -> t.Iterator[None]:
    """Hold ``<workdir>.lock`` exclusively: one clone, edit, commit and push at a time
    among the processes and threads of this machine (each call opens its own lock)."""
    workdir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(f"{workdir}.lock", "a") as lock:
        # Poll rather than block: under gunicorn's gevent workers a blocking flock would
        # freeze every request and job of the process while another job holds the lock.
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _remote_branch() -> str:
    return f"refs/remotes/origin/{BRANCH}"


def checkout(workdir: pathlib.Path) -> None:
    """Make *workdir* a clean copy of the remote's branch: clone it the first time, else
    fetch and reset, dropping whatever an earlier run left (a commit, a rebase)."""
    git_dir = workdir / ".git"
    if not git_dir.is_dir():
        if workdir.exists() and any(workdir.iterdir()):
            raise GitOpsError(f"the work directory {workdir} is not empty and not a git clone; "
                              "remove it, or set GITOPS_WORKDIR to another directory")
        fresh = workdir.with_name(workdir.name + ".clone")
        shutil.rmtree(fresh, ignore_errors=True)
        log.info("cloning %s (branch %s) into %s", SHOWN_REPO, BRANCH, workdir)
        _git("clone", "--quiet", "--single-branch", "--branch", BRANCH, "--no-tags", "--",
             REPO, str(fresh), what=f"git clone {SHOWN_REPO} (branch {BRANCH})")
        fresh.chmod(0o700)  # .git/config holds the URL, credentials and all
        if workdir.exists():
            workdir.rmdir()
        fresh.rename(workdir)
        return
    # A git killed by its timeout leaves its lock; under our lock no other git runs here.
    (git_dir / "index.lock").unlink(missing_ok=True)
    if (git_dir / "rebase-merge").exists() or (git_dir / "rebase-apply").exists():
        _git("rebase", "--abort", cwd=workdir, check=False)
    _git("remote", "set-url", "origin", REPO, cwd=workdir, what="git remote set-url origin")
    _git("fetch", "--quiet", "--no-tags", "origin", f"+refs/heads/{BRANCH}:{_remote_branch()}",
         cwd=workdir, what=f"git fetch {SHOWN_REPO} (branch {BRANCH})")
    # The reset: the local branch, index and files become the remote's, whatever was there.
    _git("checkout", "--quiet", "--force", "-B", BRANCH, _remote_branch(), cwd=workdir)
    _git("clean", "--quiet", "-ffdx", cwd=workdir)


def _short_head(workdir: pathlib.Path) -> str:
    return _git("rev-parse", "--short", "HEAD", cwd=workdir).stdout.strip()


def _push(workdir: pathlib.Path) -> str | None:
    """Push HEAD to the branch, rebasing onto the remote when it moved; the commit pushed
    (``None``: the rebase dropped ours, as the remote had made the same change)."""
    commit = _short_head(workdir)
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        done = _git("push", "--porcelain", "origin", f"HEAD:refs/heads/{BRANCH}", cwd=workdir,
                    check=False)
        if done.returncode == 0:
            return commit
        refused = next((line.split("\t")[-1] for line in done.stdout.splitlines()
                        if line.startswith("!")), "")
        moved = _MOVED.search(refused)
        if not moved:
            raise GitOpsError(f"git push to {SHOWN_REPO} {BRANCH} failed: "
                              f"{printable(refused) + '; ' if refused else ''}{_reason(done)}")
        if attempt == PUSH_ATTEMPTS:
            raise GitOpsError(f"git push to {SHOWN_REPO} {BRANCH} was refused {attempt} times "
                              f"as the remote kept moving ({moved.group(0)}); "
                              "GITOPS_PUSH_ATTEMPTS")
        log.info("push of %s to %s refused: %s, the remote moved; rebasing onto it with "
                 "git pull --rebase (push %d of %d)", commit, BRANCH, moved.group(0),
                 attempt + 1, PUSH_ATTEMPTS)
        pulled = _git("pull", "--quiet", "--rebase", "--no-tags", "origin", BRANCH, cwd=workdir,
                      check=False)
        if pulled.returncode != 0:
            _git("rebase", "--abort", cwd=workdir, check=False)
            conflicts = [line.strip() for line in pulled.stdout.splitlines()
                         if line.startswith("CONFLICT")]
            raise GitOpsError(f"git pull --rebase of {commit} onto {SHOWN_REPO} {BRANCH} failed "
                              "(a retry edits the remote's version): "
                              f"{printable('; '.join(conflicts[:3]) + '; ' if conflicts else '')}"
                              f"{_reason(pulled)}")
        ahead = _git("rev-list", "--count", "FETCH_HEAD..HEAD", cwd=workdir)
        if ahead.stdout.strip() == "0":  # the rebase dropped our commit: same change upstream
            return None
        commit = _short_head(workdir)
    raise AssertionError("unreachable")


# --- YAML -------------------------------------------------------------------------------

def _indents(text: str) -> tuple[int, int, int]:
    """``(mapping, sequence, offset)`` for ruamel's ``indent()``, as the file has them:
    how far a nested mapping, and a sequence's dash, sit right of their parent key."""
    mapping = offset = None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for parent, child in itertools.pairwise(lines):
        if not _KEY_LINE.fullmatch(parent):
            continue
        step = (len(child) - len(child.lstrip())) - (len(parent) - len(parent.lstrip()))
        if step <= 0:
            continue
        if child.lstrip().startswith("- "):
            offset = step if offset is None else offset
        elif mapping is None:
            mapping = step
    offset = 0 if offset is None else offset
    return mapping or 2, offset + 2, offset


def _yaml(text: str) -> YAML:
    yaml = YAML()  # round-trip: comments, order and quotes are kept
    yaml.preserve_quotes = True
    yaml.width = 4096
    mapping, sequence, offset = _indents(text)
    yaml.indent(mapping=mapping, sequence=sequence, offset=offset)
    yaml.explicit_start = text.lstrip().startswith("---")
    return yaml


def _like(old: t.Any, new: str) -> str:
    """*new*, quoted as *old* was."""
    return type(old)(new) if isinstance(old, ScalarString) else new


def _set_kustomize(
    doc: dict[t.Any, t.Any], file: str, name: str, new_name: str, digest: str
) -> bool:
    images = doc.get("images")
    if images is None:
        images = doc["images"] = CommentedSeq()
    if not isinstance(images, list):
        raise GitOpsError(f"images: is not a list in {file}")
    entry = next((e for e in images if isinstance(e, dict) and e.get("name") == name), None)
    if entry is None:
        images.append(CommentedMap([("name", name), ("newName", new_name), ("digest", digest)]))
        return True
    if entry.get("newName") == new_name and entry.get("digest") == digest and "newTag" not in entry:
        return False
    entry["newName"] = _like(entry.get("newName"), new_name)
    entry["digest"] = _like(entry.get("digest"), digest)
    entry.pop("newTag", None)
    return True


def _set_helm(doc: dict[t.Any, t.Any], file: str, key: str, value: str) -> bool:
    *parents, last = key.split(".")
    node = doc
    for i, part in enumerate(parents):
        child = node.get(part)
        if child is None:
            child = node[part] = CommentedMap()
        if not isinstance(child, dict):
            raise GitOpsError(f"{'.'.join(parents[:i + 1])} is not a mapping in {file}, so "
                              f"{key} cannot be set")
        node = child
    if node.get(last) == value:
        return False
    node[last] = _like(node.get(last), value)
    return True


def edit(path: pathlib.Path, place: Place, name: str, digest: str) -> tuple[bool, str]:
    """Pin *name*@*digest* in the file at *path*; ``(changed, what was set)``."""
    text = path.read_text(encoding="utf-8")
    yaml = _yaml(text)
    try:
        doc = yaml.load(text)
    except YAMLError as exc:
        raise GitOpsError(f"{place.file} is not valid YAML: "
                          f"{printable(' '.join(str(exc).split()))}") from None
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, dict):
        raise GitOpsError(f"{place.file} does not hold a YAML mapping")
    if place.kind == "kustomize":
        image = place.name or name
        changed = _set_kustomize(doc, place.file, image, name, digest)
        what = f"{name}@{digest}" if image == name else f"{image} = {name}@{digest}"
    else:
        assert place.key is not None
        value = digest if place.key.rsplit(".", 1)[-1] == "digest" else f"{name}@{digest}"
        changed, what = _set_helm(doc, place.file, place.key, value), f"{place.key} = {value}"
    if changed:
        out = io.StringIO()
        yaml.dump(doc, out)
        path.write_text(out.getvalue(), encoding="utf-8")
    return changed, what


# --- the handler ------------------------------------------------------------------------

def place_for(full_name: str) -> Place | None:
    """Where *full_name*'s digest goes; ``None`` when ``GITOPS_MAP`` has no entry for it."""
    if MAP is None:
        return DEFAULT_PLACE
    found = next((p for k, p in MAP if k.lstrip("/") == full_name), None)
    if found is None:
        found = next((p for k, p in MAP if repository_matches(k, full_name)), None)
    return found


def _image(event: PushImage) -> tuple[str, str, list[str]]:
    """The image name, digest and tags to pin: the last digest's."""
    pinned = [(r.digest, r.digest_reference, r.tag) for r in event.resources
              if r.digest is not None and r.digest_reference is not None]
    if not pinned:
        raise GitOpsError(f"push of {printable(event.repository.full_name)} carries no digest "
                          "reference to pin")
    digest, reference, _ = pinned[-1]
    others = sorted({d for d, _, _ in pinned} - {digest})
    if others:
        log.warning("push of %s lists several digests; pinning the last, %s, not %s",
                    printable(event.repository.full_name), digest, ", ".join(others))
    if REGISTRY_HOST:
        reference = REGISTRY_HOST + "/" + reference.split("/", 1)[1]
    m = _REFERENCE.fullmatch(reference)
    if m is None or m.group(2) != digest:
        raise GitOpsError(f"not an image reference to pin: {printable(reference)}")
    tags = [tag for d, _, tag in pinned if d == digest and tag]
    return m.group(1), digest, tags


def message(event: PushImage, name: str, digest: str, tags: list[str], place: Place) -> str:
    """The commit message: a subject naming the push and the event, and the details."""
    full_name = printable(event.repository.full_name)
    algorithm, _, hexdigits = digest.partition(":")
    subject = (f"deploy {full_name}{' ' + printable(','.join(tags)) if tags else ''} "
               f"({algorithm}:{hexdigits[:12]}) from {event.action} event {event.id}")
    operator = f", operator {printable(event.operator)}" if event.operator else ""
    return (f"{subject}\n\nPins {name}@{digest}\nin {place.file}.\n\n"
            f"Receiver-Event: {event.id} ({event.action}, {event.format} format{operator})\n")


def bump(event: PushImage) -> None:
    """Pin the pushed image's digest in the GitOps repository, commit and push."""
    full_name = event.repository.full_name
    what = printable(f"{full_name}:{','.join(event.tags)}" if event.tags else full_name)
    place = place_for(full_name)
    if place is None:
        log.info("not committing %s: no GITOPS_MAP entry matches it", what)
        return
    name, digest, tags = _image(event)
    with _locked(WORKDIR):
        checkout(WORKDIR)
        path = (WORKDIR / place.file).resolve()
        if not path.is_relative_to(WORKDIR.resolve()):
            raise GitOpsError(f"{place.file} leads out of the repository (a symbolic link)")
        if not path.is_file():
            raise GitOpsError(f"no file {place.file} in {SHOWN_REPO} branch {BRANCH}")
        changed, set_what = edit(path, place, name, digest)
        if not changed:
            log.info("%s already at %s (%s); nothing to commit", place.file, set_what, what)
            return
        text = message(event, name, digest, tags, place)
        _git("add", "--", place.file, cwd=WORKDIR)
        _git("commit", "--quiet", "-m", text, cwd=WORKDIR, what="git commit")
        commit = _push(WORKDIR)
        if commit is None:
            log.info("%s already at %s on the remote (%s); nothing to push", place.file,
                     set_what, what)
            return
        log.info("pushed %s to %s %s: %s", commit, SHOWN_REPO, BRANCH, text.splitlines()[0])


on(PushImage, namespace=NAMESPACE or None, repository=REPOSITORY or None, tag=TAG or None)(bump)
