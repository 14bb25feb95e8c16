"""The receiver's settings: ``RECEIVER_*`` environment variables and config keys, read
and checked, and the per-app state they make (``app.extensions["receiver"]``).

Kept apart from :mod:`receiver.web.app` so that the endpoint and the job runner read the
state without importing the app factory.
"""

from __future__ import annotations

import dataclasses
import typing as t

from ..core.settings import MAX_SECONDS, ConfigError, number

if t.TYPE_CHECKING:
    from ..handlers.dispatch import Handlers
    from ..jobs import Queue
    from ..jobs.worker import Pool
    from .auth import HeaderAuth
    from .metrics import Metrics

# ConfigError, MAX_SECONDS and number live in receiver.core.settings, shared with the sender.
__all__ = ["MAX_SECONDS", "ConfigError", "ReceiverState", "flag", "load_config", "number"]


@dataclasses.dataclass(frozen=True)
class ReceiverState:
    """One app's receiver settings, kept in ``app.extensions["receiver"]``."""

    path: str
    auth: HeaderAuth
    max_body: int
    #: ``None`` in ``sync`` mode: handlers run in the request.
    queue: Queue | None = None
    #: The worker threads of this process; ``None`` in ``sync`` mode.
    pool: Pool | None = None
    #: Seconds during which the same event id is a duplicate.
    window: float = 86400.0
    #: The app's own handlers; ``None``: the process-wide ones registered with ``on()``.
    #: The one place an app's registry is kept: :mod:`receiver.handlers.dispatch` reads it here.
    handlers: Handlers | None = None
    #: This process's metrics; ``None`` with ``RECEIVER_METRICS=false``.
    metrics: Metrics | None = None
    #: Who may read ``/metrics``: the webhook's auth, or RECEIVER_METRICS_AUTH_HEADERS.
    metrics_auth: HeaderAuth | None = None


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def flag(config: t.Mapping[str, t.Any], key: str, default: bool) -> bool:
    """The yes/no setting *key*: true/false, yes/no, on/off or 1/0 (JSON or text)."""
    value = config.get(key, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigError(f"{key} must be true or false, got {value!r}")


def load_config(config: t.Mapping[str, t.Any] | None = None, *,
                env: bool = True) -> dict[str, t.Any]:
    """``RECEIVER_*`` environment variables (values parsed as JSON where they are JSON,
    as Flask's ``from_prefixed_env`` does), overridden by *config*.

    :param env: ``False``: *config* alone; the environment is not read.
    """
    out: dict[str, t.Any] = {}
    if env:
        from flask import Config

        variables = Config("")
        variables.from_prefixed_env("RECEIVER")
        out = {f"RECEIVER_{key}": value for key, value in variables.items()}
    out.update(config or {})
    return out
