"""The receiver's log: one line per request, as text or as JSON (``RECEIVER_LOG_FORMAT``).

Every request the endpoint answers is logged once, by :func:`log_request` (or
:func:`log_rejection`), with the same fields in both formats: the event id, action, format,
repository, tags, status, handlers, duration and the client's address. The text line
puts them in its message; the JSON line (formatted by python-json-logger) has the same
message and each field as a key of its own.
"""

from __future__ import annotations

import logging
import sys
import time
import typing as t

from ..core.events import subject
from ..core.text import cut, field
from .settings import ConfigError

if t.TYPE_CHECKING:
    from ..core.events import Event

__all__ = ["LOG_FORMATS", "configure_logging", "log_event", "log_rejection", "log_request"]

log = logging.getLogger("receiver")

LOG_FORMATS = ("text", "json")

#: Whether the handler set up here formats JSON, so that records need their fields as
#: attributes (the text line needs only its message: no attributes to set on the hot path).
_structured = False
#: The text handler set up here, while it is the only place the receiver's lines go:
#: the request line is then written straight to it (see :func:`_emit`).
_direct: logging.StreamHandler[t.Any] | None = None


class TextFormatter(logging.Formatter):
    """``asctime level name: message``, formatting the date once per second, not per line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return self.stamp(record.created)

    def stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second, self._stamp = second, time.strftime(
                "%Y-%m-%d %H:%M:%S", self.converter(created)
            )
        return f"{self._stamp},{int((created - second) * 1000):03d}"


def json_formatter() -> logging.Formatter:
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, then the
    record's extra fields (a request line's ``event_id``, ``action``, ``status`` ...)."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",  # ISO 8601, UTC
        json_ensure_ascii=False,
    )


def configure_logging(level: t.Any, log_format: t.Any = None) -> None:
    """Give the ``receiver`` logger a stderr handler in *log_format* (``text``, the default,
    or ``json``), unless the application has set up logging itself.

    :raises ConfigError: *level* or *log_format* is not one of the known names.
    """
    global _structured, _direct
    if level is not None:
        name = str(level).upper()
        if not isinstance(logging.getLevelName(name), int):
            raise ConfigError(
                f"RECEIVER_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}"
            )
        log.setLevel(name)
    fmt = "text" if log_format is None else str(log_format).lower()
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"RECEIVER_LOG_FORMAT must be text or json, got {log_format!r}")
    ours = [h for h in log.handlers if getattr(h, "_receiver", False)]
    if ours:
        handler = ours[0]  # a second app in the process: same handler, maybe a new format
    elif log.handlers or logging.getLogger().handlers:
        # The application configured logging: leave it alone, but give records their
        # fields, in case its formatter is a JSON one.
        _structured, _direct = True, None
        return
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler._receiver = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        if level is None:
            log.setLevel(logging.INFO)
    handler.setFormatter(json_formatter() if fmt == "json" else TextFormatter())
    _structured = fmt == "json"
    _direct = None if _structured else t.cast("logging.StreamHandler[t.Any]", handler)


def _emit(level: int, msg: str, args: tuple[t.Any, ...], fields: dict[str, t.Any] | None
          ) -> None:
    """Log a request line: on every request's path, so made as cheap as it can be."""
    direct = _direct
    if (direct is not None and log.handlers == [direct] and not logging.root.handlers
            and not log.filters and not direct.filters and level >= direct.level):
        # Our own text handler is the only one: write the line it would format, without
        # a LogRecord (which costs as much as the rest of the line).
        formatter = t.cast(TextFormatter, direct.formatter)
        line = (f"{formatter.stamp(time.time())} {logging.getLevelName(level)} {log.name}: "
                f"{msg % args}{direct.terminator}")
        with direct.lock:  # type: ignore[union-attr]
            direct.stream.write(line)
            direct.stream.flush()
        return
    # Otherwise a record, built directly: no Logger.findCaller stack walk.
    record = log.makeRecord(log.name, level, __file__, 0, msg, args, None, "webhook")
    if fields is not None:
        record.__dict__.update(fields)
    log.handle(record)


def log_request(event: Event, status: int, handlers: int, started: float, client: str | None,
                *, level: int = logging.INFO, duplicate: bool = False) -> None:
    """The request line of an answered event."""
    if not log.isEnabledFor(level):
        return
    full_name, tags = subject(event)
    duration = (time.perf_counter() - started) * 1e3
    fields = None
    if _structured:
        fields = {"event_id": event.id, "action": event.action, "format": event.format,
                  "repository": full_name, "tags": list(tags), "status": status,
                  "handlers": handlers, "duration_ms": round(duration, 3), "client": client,
                  "duplicate": duplicate}
    _emit(
        level,
        "%s %s tags=%s format=%s status=%d handlers=%d duration=%.1fms event=%s client=%s%s",
        (event.action, field(full_name or "-"), field(",".join(tags) or "-"),
         event.format, status, handlers, duration, event.id, field(client or "-"),
         " duplicate" if duplicate else ""),
        fields,
    )


def log_rejection(status: int, reason: str, started: float, client: str | None) -> None:
    """The request line of a refused request (never with a secret: *reason* has none)."""
    if not log.isEnabledFor(logging.WARNING):
        return
    duration = (time.perf_counter() - started) * 1e3
    _emit(
        logging.WARNING, "rejected status=%d reason=%s duration=%.1fms client=%s",
        (status, field(reason), duration, field(client or "-")),  # quoted: it may quote the request
        {"status": status, "reason": reason, "duration_ms": round(duration, 3),
         "client": client},
    )


def log_other(kind: str, status: int, started: float, client: str | None,
              **fields: t.Any) -> None:
    """The request line of a ping or of a body of a type no format knows."""
    if not log.isEnabledFor(logging.INFO):
        return
    duration = (time.perf_counter() - started) * 1e3
    shown = "".join(f" {k}={field(v)}" for k, v in fields.items())
    _emit(
        logging.INFO, "%s%s status=%d duration=%.1fms client=%s",
        (kind, shown, status, duration, field(client or "-")),
        {**{k: cut(v) if isinstance(v, str) else v for k, v in fields.items()},
         "status": status, "duration_ms": round(duration, 3), "client": client},
    )


def log_event(sender: t.Any, event: t.Any, **extra: t.Any) -> None:
    """The default handler when no ``RECEIVER_HANDLERS`` is set: one log line per event."""
    from ..core.events import RepositoryEvent

    if not isinstance(event, RepositoryEvent):  # replication, retention
        log.info("event %s format=%s status=%s operator=%s", event.action, event.format,
                 field(getattr(event, "status", None) or "-"), field(event.operator or "-"))
        return
    for resource in event.resources or (None,):
        if resource is None:
            log.info("event %s %s (no resources)", event.action,
                     field(event.repository.full_name))
            continue
        log.info(
            "event %s %s tag=%s digest=%s url=%s operator=%s",
            event.action, field(event.repository.full_name), field(resource.tag or "-"),
            field(resource.digest or "-"), field(resource.url or "-"),
            field(event.operator or "-"),
        )
