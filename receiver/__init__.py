"""receiver: the consumer side of Tencent Container Registry (TCR) and Harbor webhooks.

Write handlers with :func:`on`, serve them with :func:`create_app` (or mount
:class:`Receiver` in your own Flask app), and get typed, validated events.
"""

from __future__ import annotations

from . import signals
from .app import ConfigError, Receiver, create_app
from .dispatch import Handlers, off, on
from .events import (
    ACTIONS,
    DeleteChart,
    DeleteImage,
    DownloadChart,
    Event,
    PullImage,
    PushImage,
    QuotaExceeded,
    QuotaWarning,
    Replication,
    Repository,
    RepositoryEvent,
    Resource,
    ScanCompleted,
    ScanFailed,
    ScanStopped,
    TagRetention,
    UploadChart,
)
from .matcher import PatternError, compile_pattern, repository_matches, tag_matches
from .schemas import dump_event, load_event

__version__ = "0.1.0"

__all__ = [
    "ACTIONS",
    "ConfigError",
    "DeleteChart",
    "DeleteImage",
    "DownloadChart",
    "Event",
    "Handlers",
    "PatternError",
    "PullImage",
    "PushImage",
    "QuotaExceeded",
    "QuotaWarning",
    "Receiver",
    "Replication",
    "Repository",
    "RepositoryEvent",
    "Resource",
    "ScanCompleted",
    "ScanFailed",
    "ScanStopped",
    "TagRetention",
    "UploadChart",
    "__version__",
    "compile_pattern",
    "create_app",
    "dump_event",
    "load_event",
    "off",
    "on",
    "repository_matches",
    "signals",
    "tag_matches",
]
