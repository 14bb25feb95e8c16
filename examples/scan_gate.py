"""A vulnerability gate: a digest whose scan finds ``GATE_SEVERITY`` or worse is blocked,
and the chat is told.

Run it (with ``deploy_on_push``, which refuses a blocked digest)::

    RECEIVER_HANDLERS=scan_gate,deploy_on_push \\
    RECEIVER_AUTH_HEADERS='{"Authorization": "Bearer s3cret"}' \\
    GATE_SEVERITY=High NOTIFY_URL='https://open.feishu.cn/open-apis/bot/v2/hook/...' \\
    NOTIFY_SECRET='...' gunicorn --pythonpath examples wsgi:app

Settings (environment variables, read at import; a bad one stops the server at start):

=====================  =======================================================================
``GATE_SEVERITY``      the lowest severity that blocks (default ``High``): one of ``Unknown``,
                       ``Negligible``, ``Low``, ``Medium``, ``High``, ``Critical``, in any case
``GATE_NAMESPACE``     only this namespace; default: all
``GATE_REPOSITORY``    only repositories matching this pattern (``/app*/**``); default: all
``GATE_STATE``         the record of blocked digests, an SQLite file shared with
                       ``deploy_on_push`` (default ``$XDG_DATA_HOME/receiver/scan_gate.db``);
                       give every process the same path
``NOTIFY_*``           the chat to tell, as for ``notify_chat`` (``NOTIFY_URL`` required,
                       ``NOTIFY_KIND``, ``NOTIFY_SECRET``, ``NOTIFY_TIMEOUT``)
=====================  =======================================================================

For each scanned artifact of a ``scanningCompleted`` event (Harbor's ``SCANNING_COMPLETED``,
``harbor.scan.completed``, TCR's ``scanningCompleted``):

- **at or above the gate** (``severity_rank(severity) >= severity_rank(GATE_SEVERITY)``): the
  digest is blocked, with a reason such as ``Critical: 1 Critical, 4 High (Trivy)``, which
  ``deploy_on_push`` gives when it refuses it;
- **below the gate**: a digest blocked before is unblocked. A digest's content never changes,
  so a new scan finds less only because the findings changed: a CVE allow-listed in the
  project, re-rated or withdrawn. The gate follows the latest completed scan. A fixed image is
  a new digest, and the old one stays blocked.

A ``scanningFailed`` event (or an artifact whose scan did not succeed) changes nothing: a
blocked digest stays blocked, and one that is not stays deployable (the gate blocks on
findings, as a digest never scanned is not blocked either). The chat is told, so that someone
scans it again.

The chat hears of changes only: a digest blocked, blocked at another severity, or unblocked.
The gate remembers, per digest, the last state it announced (a table next to the record), so
the registry's retries (duplicates, which queue nothing), another scan of the same digest at
the same severity, and the same scan sent in two formats post one message. A digest is
blocked *before* the chat is told: a chat that is down never lets a blocked digest through.
Its error fails the job, the announced state is rolled back, and the retry posts the message
(``receiver jobs show`` has the vendor's answer once the job is ``dead``; ``receiver jobs
retry`` posts it later). A worker killed between the two loses that one message, not the
block. Scan failures are told once per ``scanningFailed`` event.

What it does not stop: the first deploy of a push. Harbor sends the push's webhook when the
image is pushed and the scan result later, so ``deploy_on_push`` has usually deployed a new
digest before it can be blocked; the gate stops every later deploy of that digest and tells
the chat. To deploy only scanned digests, deploy on ``scanningCompleted`` instead.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
import typing as t

import chat
import gate_state

from receiver import on
from receiver.core.events import SEVERITIES, ScanEvent, ScanFailed, ScannedResource, severity_rank

log = logging.getLogger("receiver.examples.scan_gate")

#: The announced state of a digest that is not blocked.
CLEAR = "clear"


def _threshold(value: str) -> str:
    for name in SEVERITIES[1:]:
        if name.lower() == value.strip().lower():
            return name
    raise ValueError(f"GATE_SEVERITY is {value!r}; it must be one of {', '.join(SEVERITIES[1:])}")


GATE_SEVERITY = _threshold(os.environ.get("GATE_SEVERITY", "High"))
SETTINGS = chat.Settings.from_env()


@on(["scanningCompleted", "scanningFailed"],
    namespace=os.environ.get("GATE_NAMESPACE") or None,
    repository=os.environ.get("GATE_REPOSITORY") or None)
def gate(event: ScanEvent) -> None:
    """Block or unblock each scanned digest, and tell the chat what changed."""
    for resource in event.resources:
        if resource.digest is None:
            continue
        if isinstance(event, ScanFailed) or resource.status not in (None, "Success"):
            _failed(event, resource)
        elif severity_rank(resource.severity) >= severity_rank(GATE_SEVERITY):
            _block(event, resource)
        else:
            _pass(event, resource)


def reason_for(resource: ScannedResource) -> str:
    """``Critical: 1 Critical, 4 High (Trivy)``: what a refused deploy says."""
    return f"{resource.severity}: {chat.counts_text(resource)}"


def _block(event: ScanEvent, resource: ScannedResource) -> None:
    assert resource.digest is not None and resource.severity is not None
    reason = reason_for(resource)
    gate_state.block(resource.digest, reason, event.repository.full_name)

    def message(previous: Announced) -> chat.Message:
        lines = [f"digest: {resource.digest}", f"found: {reason}",
                 f"gate: {GATE_SEVERITY} and above; deploys of this digest are refused"]
        if previous.state != CLEAR:
            lines.append(f"was blocked for: {previous.reason}")
        return chat.Message(f"scan gate blocked {_name(event, resource)}", tuple(lines))

    told = _tell(event, resource, Announced(resource.severity, reason), message)
    log.info("blocked %s@%s: %s (gate %s) %s event=%s", event.repository.full_name,
             resource.digest, reason, GATE_SEVERITY, told, event.id)


def _pass(event: ScanEvent, resource: ScannedResource) -> None:
    assert resource.digest is not None
    found = reason_for(resource)
    unblocked = gate_state.unblock(resource.digest)
    if not unblocked and _announced(resource.digest).state == CLEAR:
        # Never blocked: nothing changes, nothing to say.
        log.info("passed %s@%s: %s (gate %s) event=%s", event.repository.full_name,
                 resource.digest, found, GATE_SEVERITY, event.id)
        return

    def message(previous: Announced) -> chat.Message:
        return chat.Message(f"scan gate unblocked {_name(event, resource)}", (
            f"digest: {resource.digest}", f"found: {found}, below the gate ({GATE_SEVERITY})",
            f"was blocked for: {previous.reason}"))

    told = _tell(event, resource, Announced(CLEAR, found), message)
    log.info("unblocked %s@%s: %s (gate %s) %s event=%s", event.repository.full_name,
             resource.digest, found, GATE_SEVERITY, told, event.id)


def _failed(event: ScanEvent, resource: ScannedResource) -> None:
    assert resource.digest is not None
    before = gate_state.blocked(resource.digest)
    kept = f"still blocked for: {before}" if before else "not blocked: deploys are allowed"
    message = chat.Message(
        f"scan gate: scan failed for {_name(event, resource)}",
        (f"digest: {resource.digest}", f"status: {resource.status or 'Error'}",
         f"the gate changes nothing: {kept}; scan it again", *_who(event)))
    chat.post(message, SETTINGS)
    log.warning("scan failed %s@%s: %s; told %s event=%s", event.repository.full_name,
                resource.digest, kept, SETTINGS.kind, event.id)


def _name(event: ScanEvent, resource: ScannedResource) -> str:
    name = event.repository.full_name
    return f"{name}:{resource.tag}" if resource.tag else f"{name}@{resource.digest}"


def _who(event: ScanEvent) -> tuple[str, ...]:
    who = (f"operator: {event.operator}",) if event.operator else ()
    return (*who, f"at: {event.occurred_at:%Y-%m-%d %H:%M:%S} UTC")


def _tell(event: ScanEvent, resource: ScannedResource, now: Announced,
          message: t.Callable[[Announced], chat.Message]) -> str:
    """Post the message for the change from the last announced state to *now*, unless *now*
    is that state already; what was done, for the log line. On a chat error the
    announcement is rolled back, and the error raised."""
    assert resource.digest is not None
    previous = _claim(resource.digest, now)
    if previous is None:
        return f"(announced already: {now.state})"
    said = message(previous)
    try:
        chat.post(chat.Message(said.title, (*said.lines, *_who(event))), SETTINGS)
    except BaseException:
        _release(resource.digest, now, previous)
        raise
    return f"told {SETTINGS.kind}"


# --- what the chat was last told, per digest -------------------------------------------------

class Announced(t.NamedTuple):
    """The state of a digest that the chat was last told: a severity (blocked) or
    :data:`CLEAR`, and the findings."""

    state: str
    reason: str


def _connect() -> sqlite3.Connection:
    where = gate_state.path()
    where.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(where, timeout=10, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS scan_gate_announced (digest TEXT PRIMARY KEY,"
               " state TEXT NOT NULL, reason TEXT NOT NULL, announced_at REAL NOT NULL)")
    return db


def _read(db: sqlite3.Connection, digest: str) -> Announced:
    row = db.execute("SELECT state, reason FROM scan_gate_announced WHERE digest = ?",
                     (digest,)).fetchone()
    return Announced(CLEAR, "") if row is None else Announced(str(row[0]), str(row[1]))


def _announced(digest: str) -> Announced:
    db = _connect()
    try:
        return _read(db, digest)
    finally:
        db.close()


def _claim(digest: str, now: Announced) -> Announced | None:
    """Record *now* as announced; the announcement it replaces, or ``None`` if the state was
    *now*'s already (in one transaction, so that two workers never both claim a change)."""
    db = _connect()
    try:
        db.execute("BEGIN IMMEDIATE")
        previous = _read(db, digest)
        if previous.state == now.state:
            db.execute("COMMIT")
            return None
        db.execute("INSERT OR REPLACE INTO scan_gate_announced VALUES (?, ?, ?, ?)",
                   (digest, now.state, now.reason, time.time()))
        db.execute("COMMIT")
        return previous
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    finally:
        db.close()


def _release(digest: str, now: Announced, previous: Announced) -> None:
    """Undo :func:`_claim` after the chat refused, unless another worker has moved on."""
    db = _connect()
    try:
        db.execute("UPDATE scan_gate_announced SET state = ?, reason = ?, announced_at = ? "
                   "WHERE digest = ? AND state = ? AND reason = ?",
                   (previous.state, previous.reason, time.time(), digest, now.state, now.reason))
    finally:
        db.close()
