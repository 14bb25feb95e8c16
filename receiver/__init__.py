"""receiver: the consumer side of Tencent Container Registry (TCR) and Harbor webhooks.

Write handlers with :func:`on`, serve them with :func:`create_app` (or mount
:class:`Receiver` in your own Flask app), and get typed, validated events.
"""

from __future__ import annotations

import importlib
import typing as t

__version__ = "0.1.0"

# Names are imported on first use (PEP 562), so that importing a submodule (the pytest
# plugin, say) does not import Flask and marshmallow.
_WHERE = {
    "signals": None,
    **dict.fromkeys(("ConfigError", "Receiver", "create_app"), "app"),
    **dict.fromkeys(("Handlers", "off", "on"), "dispatch"),
    **dict.fromkeys((
        "ACTIONS", "DeleteChart", "DeleteImage", "DownloadChart", "Event", "PullImage",
        "PushImage", "QuotaExceeded", "QuotaWarning", "Replication", "Repository",
        "RepositoryEvent", "Resource", "ScanCompleted", "ScanFailed", "ScanStopped",
        "TagRetention", "UploadChart"), "events"),
    **dict.fromkeys(("PatternError", "compile_pattern", "repository_matches",
                     "tag_matches"), "matcher"),
    **dict.fromkeys(("dump_event", "load_event"), "schemas"),
}

__all__ = sorted([*_WHERE, "__version__"])


def __getattr__(name: str) -> t.Any:
    where = _WHERE.get(name, ...)
    if where is ...:
        raise AttributeError(f"module 'receiver' has no attribute {name!r}")
    if where is None:
        value = importlib.import_module(f".{name}", __name__)
    else:
        value = getattr(importlib.import_module(f".{where}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if t.TYPE_CHECKING:
    from . import signals
    from .app import ConfigError, Receiver, create_app
    from .dispatch import Handlers, off, on
    from .events import (ACTIONS, DeleteChart, DeleteImage, DownloadChart, Event, PullImage,
                         PushImage, QuotaExceeded, QuotaWarning, Replication, Repository,
                         RepositoryEvent, Resource, ScanCompleted, ScanFailed, ScanStopped,
                         TagRetention, UploadChart)
    from .matcher import PatternError, compile_pattern, repository_matches, tag_matches
    from .schemas import dump_event, load_event
