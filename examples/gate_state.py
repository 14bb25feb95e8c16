"""The scan gate's record of blocked digests: ``scan_gate`` writes it, ``deploy_on_push``
reads it. It has no handlers, so importing it registers nothing.

One SQLite file, ``GATE_STATE`` (default ``$XDG_DATA_HOME/receiver/scan_gate.db``), shared
safely by every gunicorn worker and ``receiver worker`` process of one machine. Give every
process the same path.
"""

from __future__ import annotations

import os
import pathlib
import sqlite3
import time

__all__ = ["block", "blocked", "path", "unblock"]


def path() -> pathlib.Path:
    """Where the record is: ``GATE_STATE``, or the receiver's data directory."""
    if os.environ.get("GATE_STATE"):
        return pathlib.Path(os.environ["GATE_STATE"])
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return pathlib.Path(base) / "receiver" / "scan_gate.db"


def _connect() -> sqlite3.Connection:
    where = path()
    where.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(where, timeout=10, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS blocked (digest TEXT PRIMARY KEY, repository TEXT,"
               " reason TEXT NOT NULL, blocked_at REAL NOT NULL)")
    return db


def block(digest: str, reason: str, repository: str = "") -> None:
    """Record *digest* as blocked, with the reason a deploy will give (the last one wins)."""
    with _connect() as db:
        db.execute("INSERT OR REPLACE INTO blocked VALUES (?, ?, ?, ?)",
                   (digest, repository, reason, time.time()))


def unblock(digest: str) -> bool:
    """Forget *digest*; whether it was blocked."""
    with _connect() as db:
        return db.execute("DELETE FROM blocked WHERE digest = ?", (digest,)).rowcount > 0


def blocked(digest: str) -> str | None:
    """The reason *digest* is blocked, or ``None``."""
    with _connect() as db:
        row = db.execute("SELECT reason FROM blocked WHERE digest = ?", (digest,)).fetchone()
    return None if row is None else str(row[0])
