"""The blinker signals the receiver sends; handlers registered with ``on()`` ride on these.

Every signal is sent with the Flask app as sender. Write receivers as
``def receiver(sender, **extra)`` and take the keyword arguments you need, so that new ones
do not break you. Receivers of the per-action signals get ``event=``.
"""

from __future__ import annotations

from blinker import Namespace

from ..core.events import ACTIONS

__all__ = [
    "action_signals",
    "delete_chart",
    "delete_image",
    "download_chart",
    "event_duplicate",
    "event_ignored",
    "event_received",
    "handler_failed",
    "handler_finished",
    "pull_image",
    "push_image",
    "quota_exceed",
    "quota_warning",
    "replication",
    "request_rejected",
    "scanning_completed",
    "scanning_failed",
    "scanning_stopped",
    "tag_retention",
    "upload_chart",
]

_signals = Namespace()

event_received = _signals.signal(
    "event-received",
    doc="Every valid event that is accepted (not a duplicate), before its handlers run. "
    "Keyword: ``event``.",
)
event_duplicate = _signals.signal(
    "event-duplicate",
    doc="An event whose id was queued within RECEIVER_DEDUP_WINDOW; no job runs. "
    "Keyword: ``event``.",
)
push_image = _signals.signal("pushImage", doc="An image was pushed. Keyword: ``event``.")
pull_image = _signals.signal("pullImage", doc="An image was pulled. Keyword: ``event``.")
delete_image = _signals.signal("deleteImage", doc="Image tags were deleted. Keyword: ``event``.")
upload_chart = _signals.signal("uploadChart", doc="A chart was uploaded. Keyword: ``event``.")
download_chart = _signals.signal(
    "downloadChart", doc="A chart was downloaded. Keyword: ``event``."
)
delete_chart = _signals.signal(
    "deleteChart", doc="Chart versions were deleted. Keyword: ``event``.")
event_ignored = _signals.signal(
    "event-ignored",
    doc="A well-formed body whose ``type`` this version does not know; no handler runs. "
    "Keywords: ``action`` (the body's type), ``data`` (the decoded body) and ``format`` "
    "(the format it looks like).",
)
handler_failed = _signals.signal(
    "handler-failed",
    doc="A handler raised. Keywords: ``handler`` (the function), ``event``, ``exception``, "
    "``attempt`` (1 for the first run) and ``final`` (true when no retry follows).",
)
handler_finished = _signals.signal(
    "handler-finished",
    doc="A handler ran. Keywords: ``handler`` (its name, ``module.qualname``), ``action``, "
    "``outcome`` (``succeeded``; ``failed`` in sync mode; ``retry`` or ``dead`` for a job) "
    "and ``seconds``.",
)
request_rejected = _signals.signal(
    "request-rejected",
    doc="A request was refused. Keywords: ``status`` (the HTTP status) and ``reason`` "
    "(the message sent back, which never holds a secret).",
)

scanning_completed = _signals.signal(
    "scanningCompleted", doc="A scan completed. Keyword: ``event``.")
scanning_failed = _signals.signal("scanningFailed", doc="A scan failed. Keyword: ``event``.")
scanning_stopped = _signals.signal("scanningStopped", doc="A scan was stopped. Keyword: ``event``.")
quota_exceed = _signals.signal("quotaExceed", doc="A push exceeded a quota. Keyword: ``event``.")
quota_warning = _signals.signal("quotaWarning", doc="A quota's warning level was passed. "
                                "Keyword: ``event``.")
replication = _signals.signal("replication", doc="A replication task ended. Keyword: ``event``.")
tag_retention = _signals.signal("tagRetention", doc="A tag retention run finished. "
                                "Keyword: ``event``.")

#: The signal for each action's name.
action_signals = {
    "pushImage": push_image,
    "pullImage": pull_image,
    "deleteImage": delete_image,
    "uploadChart": upload_chart,
    "downloadChart": download_chart,
    "deleteChart": delete_chart,
    "scanningCompleted": scanning_completed,
    "scanningFailed": scanning_failed,
    "scanningStopped": scanning_stopped,
    "quotaExceed": quota_exceed,
    "quotaWarning": quota_warning,
    "replication": replication,
    "tagRetention": tag_retention,
}
assert tuple(action_signals) == ACTIONS
