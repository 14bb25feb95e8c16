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
    "signals": "handlers.signals",
    **dict.fromkeys(("ConfigError", "Receiver", "create_app"), "web.app"),
    **dict.fromkeys(("Handlers", "off", "on"), "handlers.dispatch"),
    **dict.fromkeys((
        "ACTIONS", "DeleteChart", "DeleteImage", "DownloadChart", "Event", "PullImage",
        "PushImage", "QuotaExceeded", "QuotaWarning", "Replication", "Repository",
        "RepositoryEvent", "Resource", "ScanCompleted", "ScanFailed", "ScanStopped",
        "TagRetention", "UploadChart"), "core.events"),
    **dict.fromkeys(("PatternError", "compile_pattern", "repository_matches",
                     "tag_matches"), "core.matcher"),
    **dict.fromkeys(("dump_event", "load_event"), "core.schemas"),
}

__all__ = sorted([*_WHERE, "__version__"])


def __getattr__(name: str) -> t.Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'receiver' has no attribute {name!r}")
    module = importlib.import_module(f".{where}", __name__)
    value = module if where.endswith(f".{name}") else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if t.TYPE_CHECKING:
    from .handlers import signals
    from .web.app import ConfigError, Receiver, create_app
    from .handlers.dispatch import Handlers, off, on
    from .core.events import (ACTIONS, DeleteChart, DeleteImage, DownloadChart, Event, PullImage,
                         PushImage, QuotaExceeded, QuotaWarning, Replication, Repository,
                         RepositoryEvent, Resource, ScanCompleted, ScanFailed, ScanStopped,
                         TagRetention, UploadChart)
    from .core.matcher import PatternError, compile_pattern, repository_matches, tag_matches
    from .core.schemas import dump_event, load_event
