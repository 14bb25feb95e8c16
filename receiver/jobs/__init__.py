"""The durable queue: events wait here for their handlers, one job per handler.

``open_queue(url)`` picks the engine from ``RECEIVER_QUEUE``: ``sqlite:///PATH`` (the
default, one machine), ``redis://HOST:PORT/DB`` or ``rediss://...`` (several hosts).
:class:`~receiver.jobs.worker.Pool` runs the jobs in threads.
"""

from __future__ import annotations

import os
import pathlib
import re
from urllib.parse import urlsplit

from ..core.text import hide_userinfo
from .base import (
    JOB_STATUSES,
    Claim,
    EventRecord,
    Job,
    NotHere,
    Queue,
    QueueStats,
    QueueUnavailable,
    Submitted,
)

__all__ = [
    "JOB_STATUSES",
    "Claim",
    "EventRecord",
    "Job",
    "NotHere",
    "Queue",
    "QueueError",
    "QueueStats",
    "QueueUnavailable",
    "Submitted",
    "default_queue_url",
    "open_queue",
    "shown_url",
    "url_secrets",
]


class QueueError(ValueError):
    """``RECEIVER_QUEUE`` is not a queue URL this version knows; the message says why."""


def default_queue_url() -> str:
    """``sqlite:///$XDG_DATA_HOME/receiver/queue.db`` (``~/.local/share/receiver/queue.db``)."""
    base = (os.environ.get("XDG_DATA_HOME")
            or os.path.join(os.path.expanduser("~"), ".local", "share"))
    return f"sqlite:///{pathlib.Path(base) / 'receiver' / 'queue.db'}"


#: A query parameter whose value is a secret (redis-py reads ``?password=...``, and
#: ``ssl_password``): its value is never shown.
_SECRET_PARAM = re.compile(r"([?&][^=&#]*(?:pass|secret|token)[^=&#]*=)[^&#]*", re.IGNORECASE)


def shown_url(url: str) -> str:
    """*url* without its credentials, for messages and logs: whatever stands between
    ``//`` and the last ``@`` may hold a password, even one with an unescaped ``/``; and
    the values of query parameters such as ``password``."""
    return hide_userinfo(_SECRET_PARAM.sub(r"\1***", url))


def url_secrets(url: str) -> list[str]:
    """The secrets written into *url* (its password, and secret query values), as written
    and decoded, for scrubbing them out of a library's messages."""
    from urllib.parse import unquote

    found = [m.group(0).split("=", 1)[1] for m in _SECRET_PARAM.finditer(url)]
    try:
        found.append(urlsplit(url).password or "")
    except ValueError:  # a URL urlsplit refuses: the guess below covers it
        pass
    _, sep, rest = url.partition("//")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    for where in (authority, rest):  # a password may hold an unescaped '/', '?' or '#'
        if sep and "@" in where:
            found.append(where.rsplit("@", 1)[0].partition(":")[2])
    # Very short values are left alone: replacing every "ab" would garble the message.
    return sorted({v for s in found if s for v in (s, unquote(s)) if len(v) >= 4},
                  key=len, reverse=True)


def open_queue(url: str | None = None) -> Queue:
    """The queue at *url* (default :func:`default_queue_url`). Nothing is connected yet:
    an unreachable queue shows at first use, or in :meth:`Queue.check`.

    :raises QueueError: *url* names no engine, or names one badly.
    """
    url = url or default_queue_url()
    if not isinstance(url, str):
        raise QueueError(f"RECEIVER_QUEUE must be a URL, got {url!r}")
    scheme = url.partition(":")[0].lower()
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
            raise QueueError(
                f"RECEIVER_QUEUE {url!r}: write an SQLite queue as sqlite:///PATH "
                "(three slashes, then the file's path; four for an absolute path)"
            )
        from .sqlite import SQLiteQueue

        return SQLiteQueue(url[len("sqlite:///"):])
    if scheme in ("redis", "rediss"):
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # "Invalid IPv6 URL": a bracket left open
            raise QueueError(f"RECEIVER_QUEUE {shown_url(url)!r}: {exc}") from None
        try:
            parts.port  # noqa: B018  (raises ValueError for a bad port)
        except ValueError:
            raise QueueError(
                f"RECEIVER_QUEUE {shown_url(url)!r}: the port must be a number from 1 to "
                "65535") from None
        database = parts.path.strip("/")
        if not parts.hostname or (database and not database.isdigit()):
            raise QueueError(
                f"RECEIVER_QUEUE {shown_url(url)!r}: write a Redis queue as "
                "redis://[:PASSWORD@]HOST[:PORT][/DB], DB a number"
            )
        try:
            from .redis import RedisQueue
        except ImportError:
            raise QueueError(f"RECEIVER_QUEUE {shown_url(url)!r} needs redis-py: "
                             "pip install 'receiver[redis]'") from None
        return RedisQueue(url)
    raise QueueError(
        f"RECEIVER_QUEUE {shown_url(url)!r} is not a queue URL: use sqlite:///PATH, "
        "redis://HOST:PORT/DB, rediss://HOST:PORT/DB or sync"
    )
