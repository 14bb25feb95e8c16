"""receiver: the consumer side of Tencent Container Registry (TCR) and Harbor webhooks.

Write handlers with :func:`on`, serve them with :func:`create_app` (or mount
:class:`Receiver` in your own Flask app), and get typed, validated events.

The package's layout (see ``docs/design.md``): ``core`` (events, formats, schemas, the
pattern matcher: shared by both sides, no Flask), ``handlers`` (``on()``, signals and the
job runner), ``web`` (the Flask app), ``jobs`` (the durable queue), ``registry`` (the
reference sender: rules, store, trigger log) and ``cli`` (the ``receiver`` command).
"""

from __future__ import annotations

import importlib
import typing as t

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

# Names are imported on first use (PEP 562): `import receiver` loads nothing else, and
# Flask only when the app is asked for (`create_app`, `Receiver`).
_WHERE = {
    "signals": "handlers.signals",
    "ConfigError": "core.settings",
    **dict.fromkeys(("Receiver", "create_app"), "web.app"),
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
    from .core.events import (
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
    from .core.matcher import PatternError, compile_pattern, repository_matches, tag_matches
    from .core.schemas import dump_event, load_event
    from .core.settings import ConfigError
    from .handlers import signals
    from .handlers.dispatch import Handlers, off, on
    from .web.app import Receiver, create_app
