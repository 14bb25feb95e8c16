"""Post a chat message for each push, deletion, chart event and scan result.

Run it::

    RECEIVER_HANDLERS=notify_chat \\
    RECEIVER_AUTH_HEADERS='{"Authorization": "Bearer s3cret"}' \\
    NOTIFY_URL='https://oapi.dingtalk.com/robot/send?access_token=...' NOTIFY_SECRET='SEC...' \\
    gunicorn --pythonpath examples wsgi:app

Settings (environment variables, read at import: a bad one stops the server at start with
a line naming it):

======================  ======================================================================
``NOTIFY_URL``          the webhook's URL (required); never logged (shown masked)
``NOTIFY_KIND``         ``slack``, ``wecom``, ``dingtalk`` or ``feishu``; default: told by the
                        URL's host
``NOTIFY_SECRET``       DingTalk's or Feishu's signing secret, if the robot has one
``NOTIFY_TIMEOUT``      seconds for one post (default ``10``)
``NOTIFY_ACTIONS``      comma-separated actions (default ``pushImage,deleteImage,uploadChart,
                        deleteChart,scanningCompleted,scanningFailed``); any action about a
                        repository (not ``replication`` or ``tagRetention``)
``NOTIFY_NAMESPACE``    only this namespace (exactly); default: all
``NOTIFY_REPOSITORY``   only repositories matching this pattern, in the registry's language
                        (``/app*/**``); default: all
``NOTIFY_TAG``          only tags (chart versions) matching this pattern (``v*``); default:
                        all. An artifact pushed by digest alone has no tag, and never matches.
======================  ======================================================================

A message names the action, the repository, each tag with its digest (or the digest alone),
the operator and the time; a scan's adds the highest severity to its title, and the counts
per severity to each artifact (``v1.2.0 sha256:...: 1 Critical, 4 High (Trivy)``). See
``chat.py`` for each vendor's format, its signature, and how its answer is read.

The receiver answers the registry at once and runs :func:`notify` as a job. The registry's
retries of the same body are duplicates that queue nothing, so one push is one message. A
vendor's error (DingTalk's ``310000 sign not match``, Feishu's ``19021``, a Slack ``404
channel_not_found``, a timeout) raises: the job is retried with backoff
(``RECEIVER_HANDLER_ATTEMPTS``), then ``dead`` with the vendor's answer in ``receiver jobs
show``. Mind the vendors' rate limits (WeCom and DingTalk: 20 messages a minute per robot):
on a busy registry, narrow ``NOTIFY_ACTIONS`` and the filters.

Running ``scan_gate`` too? It posts about scans itself; leave the scan actions out of
``NOTIFY_ACTIONS`` to get one message per scan.
"""

from __future__ import annotations

import logging
import os

import chat

from receiver import on
from receiver.core.events import ACTIONS, RepositoryEvent, event_class

log = logging.getLogger("receiver.examples.notify_chat")

DEFAULT_ACTIONS = "pushImage,deleteImage,uploadChart,deleteChart,scanningCompleted,scanningFailed"


def _actions(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise ValueError("NOTIFY_ACTIONS is empty: name at least one action, e.g. pushImage")
    unknown = [name for name in names if name not in ACTIONS]
    if unknown:
        raise ValueError(f"NOTIFY_ACTIONS: {unknown[0]!r} is not an action; the actions are "
                         + ", ".join(ACTIONS))
    elsewhere = [name for name in names if not issubclass(event_class(name), RepositoryEvent)]
    if elsewhere:
        raise ValueError(f"NOTIFY_ACTIONS: {elsewhere[0]!r} is not about a repository; "
                         "notify_chat posts about repository events only")
    return names


SETTINGS = chat.Settings.from_env()
ACTIONS_NOTIFIED = _actions(os.environ.get("NOTIFY_ACTIONS", DEFAULT_ACTIONS))


@on(ACTIONS_NOTIFIED,
    namespace=os.environ.get("NOTIFY_NAMESPACE") or None,
    repository=os.environ.get("NOTIFY_REPOSITORY") or None,
    tag=os.environ.get("NOTIFY_TAG") or None)
def notify(event: RepositoryEvent) -> None:
    """Post the event to the chat; raise (and so be retried) unless the vendor accepted it."""
    message = chat.describe(event)
    chat.post(message, SETTINGS)
    log.info("posted %s %s tags=%s to %s %s event=%s", event.action,
             event.repository.full_name, ",".join(event.tags) or "-", SETTINGS.kind,
             SETTINGS.where, event.id)
