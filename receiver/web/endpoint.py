"""The HTTP endpoint: guard, auth, schema, then the queue (or the handlers, in ``sync`` mode).

Status codes (DESIGN.md): 202 queued; 200 a duplicate, the ping, or ``sync`` mode done;
400 not JSON / not UTF-8; 401 auth; 413 too large; 415 not a JSON content type; 422 not a
valid event; 503 the queue cannot be reached; 500 only in ``sync`` mode, when a handler failed.
Per-app settings live in ``app.extensions["receiver"]``, put there by :class:`Receiver`.
"""

from __future__ import annotations

import json
import logging
import time
import typing as t

from flask import Blueprint, Request, Response, current_app, request

from ..handlers import signals
from ..handlers.dispatch import dispatch, matching_handlers, send_isolated
from ..core.events import Event, subject
from ..core.formats.cloudevents import is_binary, structured
from ..jobs import EventRecord, QueueUnavailable
from ..core.schemas import UnknownAction, ValidationError, load_event
from ..core.text import printable

if t.TYPE_CHECKING:
    from flask import Flask

    from .settings import ReceiverState

log = logging.getLogger("receiver")

bp = Blueprint("receiver", __name__)

#: How many of a 422's field errors the answer lists; the rest are counted.
MAX_ERRORS = 20


class Rejection(Exception):
    """A step refuses the request: the status, the reason (never a secret) and extra keys."""

    def __init__(self, status: int, reason: str, **extra: t.Any) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


def _reject_constant(name: str) -> t.NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _json(payload: t.Any, status: int) -> Response:
    # ASCII escapes: a lone surrogate from the request ("\ud800") cannot be encoded as UTF-8.
    return Response(json.dumps(payload), status=status, mimetype="application/json")


def has_lone_surrogate(data: t.Any) -> bool:
    """Whether any string in *data* (keys included) holds a lone UTF-16 surrogate.

    Walks with a stack, not recursion: a body nested as deep as ``json.loads`` allows must
    not turn this check into a RecursionError.
    """
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def bounded_messages(messages: t.Any, limit: int = MAX_ERRORS) -> tuple[t.Any, int]:
    """The first *limit* field errors of marshmallow's *messages*, in its nested shape, and
    the total count, so that a body with thousands of bad items gets a small answer."""
    count = 0

    def walk(node: t.Any) -> t.Any:
        nonlocal count
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                kept = walk(value)
                if kept is not None:
                    out[key] = kept
            return out or None
        if isinstance(node, list) and all(isinstance(m, str) for m in node):
            count += len(node)
            keep = max(0, limit - (count - len(node)))
            return node[:keep] or None
        count += 1
        return node if count <= limit else None

    return walk(messages) or {}, count


class _LengthRequired(Exception):
    """A chunked body that the WSGI server does not terminate for us."""


class _Unreadable(Exception):
    """The body could not be read: malformed chunks, or a body cut short."""


def _read_body(req: Request, limit: int) -> bytes | None:
    """The request body, or ``None`` when it is over *limit* bytes (chunked bodies too)."""
    length = req.content_length
    if length is not None:
        if length > limit:
            return None
        try:
            return req.get_data(cache=False)
        except Exception as exc:  # the client went away mid-body, say
            raise _Unreadable(type(exc).__name__) from exc
    environ = req.environ
    if not environ.get("wsgi.input_terminated"):
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            raise _LengthRequired()
        return b""  # no length and no end the server vouches for: there is no body to read
    # Chunked: read to the end ourselves. (Werkzeug's max_content_length would cut such a
    # body at the limit without an error, turning "too large" into "malformed".)
    stream, chunks, total = environ["wsgi.input"], [], 0
    while True:
        try:
            chunk = stream.read(min(65536, limit + 1 - total))
        except Exception as exc:  # malformed chunks: each server raises its own parse error
            raise _Unreadable(type(exc).__name__) from exc
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
        if total > limit:
            return None


@bp.post("")
def webhook() -> Response:
    """Receive one delivery from the registry."""
    started = time.perf_counter()
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    state: ReceiverState = app.extensions["receiver"]
    try:
        body = read_body(req, state.max_body)
        binary = is_binary(req.headers)
        if not body.strip() and not binary:
            # The registry's "test endpoint" button: an empty POST, sent without auth headers.
            log.info("ping status=200 duration=%.1fms", (time.perf_counter() - started) * 1e3)
            return _json({"ping": True}, 200)
        check_content_type(req)
        problem = state.auth.check(req.headers)
        if problem is not None:
            raise Rejection(401, problem)
        if binary:
            # A binary-mode CloudEvent: its attributes are headers, its body is its data.
            # Queue the structured body, so that a job's event is read from the body alone;
            # never the auth headers' values.
            data = decode(body)[1] if body.strip() else None
            data = structured(req.headers, data, skip={n.lower() for n in state.auth.header_names})
            text = json.dumps(data, ensure_ascii=False)
        else:
            text, data = decode(body)
        try:
            event = load(data)
        except UnknownAction as unknown:
            return ignore(app, unknown, started)
        if state.queue is None:
            return run_now(app, event, started)
        return enqueue(app, state, event, text, started)
    except Rejection as rejection:
        send_isolated(signals.request_rejected, app, status=rejection.status,
                      reason=rejection.reason)
        log.warning(
            "rejected status=%d reason=%s duration=%.1fms", rejection.status,
            printable(rejection.reason), (time.perf_counter() - started) * 1e3,
        )
        return _json({"error": rejection.reason, **rejection.extra}, rejection.status)


def read_body(req: Request, limit: int) -> bytes:
    """The whole body, or a rejection: 411, 400 unreadable, 413 over *limit*."""
    try:
        body = _read_body(req, limit)
    except _LengthRequired:
        raise Rejection(411, "chunked body without Content-Length: this server cannot read "
                        "it; send Content-Length or run under gunicorn") from None
    except _Unreadable as exc:
        raise Rejection(400, f"body could not be read ({exc})") from None
    if body is None:
        raise Rejection(413, f"body is larger than the limit of {limit} bytes")
    return body


def check_content_type(req: Request) -> None:
    """415 unless the body is ``application/json`` or ``application/*+json``."""
    mimetype = req.mimetype
    if mimetype != "application/json" and not (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    ):
        raise Rejection(415, f"content type must be application/json, not {mimetype or '(none)'}")


def decode(body: bytes) -> tuple[str, t.Any]:
    """The body as text and as decoded JSON, or a 400 naming what is wrong."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Rejection(400, f"body is not UTF-8 (invalid byte at offset {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise Rejection(400, "body is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise Rejection(400, f"body is not valid JSON: {exc}") from None
    if "\\u" in text and has_lone_surrogate(data):
        raise Rejection(400, "body is not valid JSON text: it escapes a lone UTF-16 surrogate")
    return text, data


def load(data: t.Any) -> Event:
    """The typed event, or a 422 listing the first field errors (or 400 if too deep)."""
    try:
        return load_event(data)
    except ValidationError as exc:
        messages, count = bounded_messages(exc.messages)
        extra: dict[str, t.Any] = {"messages": messages}
        if count > MAX_ERRORS:
            extra["errors"] = count
        raise Rejection(422, "body is not a valid event", **extra) from None
    except RecursionError:
        raise Rejection(400, "body is nested too deeply") from None


def ignore(app: Flask, unknown: UnknownAction, started: float) -> Response:
    """202 for a well-formed body of a type no format knows; no handler runs."""
    send_isolated(signals.event_ignored, app, action=unknown.action, data=unknown.data,
                  format=unknown.format)
    log.info("ignored type=%s format=%s status=202 duration=%.1fms", printable(unknown.action),
             unknown.format, (time.perf_counter() - started) * 1e3)
    return _json({"ignored": True, "type": unknown.action, "format": unknown.format,
                  "handlers": 0}, 202)


def run_now(app: Flask, event: Event, started: float) -> Response:
    """``sync`` mode: run the handlers in the request; 500 when one failed."""
    outcome = dispatch(app, event)
    status = 500 if outcome.failed else 200
    _log_request(event, status, outcome.ran, started, logging.ERROR if outcome.failed else logging.INFO)
    answer: dict[str, t.Any] = {"action": event.action, "format": event.format,
                                "handlers": outcome.ran}
    if outcome.failed:
        answer["error"] = "handler failed"
        answer["failed"] = outcome.failed
    return _json(answer, status)


def enqueue(app: Flask, state: ReceiverState, event: Event, text: str, started: float) -> Response:
    """Queue the event and a job per matching handler (202), or answer 200 for a duplicate."""
    assert state.queue is not None
    handlers = matching_handlers(app, event)
    full_name, tags = subject(event)
    record = EventRecord(event.id, event.action, full_name, tags, text)
    pool = state.pool
    try:
        submitted = state.queue.submit(record, handlers, state.window,
                                       pool.hold(len(handlers)) if pool is not None and handlers else None)
    except QueueUnavailable as exc:
        log.error("cannot queue %s %s: %s", event.action, printable(full_name or "-"), exc)
        raise Rejection(503, "the queue is unavailable; retry later") from None
    if submitted.duplicate:
        send_isolated(signals.event_duplicate, app, event=event)
        _log_request(event, 200, 0, started, logging.INFO, duplicate=True)
        return _json({"action": event.action, "format": event.format, "event_id": event.id,
                      "duplicate": True, "handlers": 0}, 200)
    send_isolated(signals.event_received, app, event=event)  # before any handler runs
    if submitted.claims:
        pool.accept(submitted.claims, event)  # type: ignore[union-attr]
    _log_request(event, 202, len(submitted.job_ids), started, logging.INFO)
    return _json({"action": event.action, "format": event.format, "event_id": event.id,
                  "handlers": len(submitted.job_ids)}, 202)


def _log_request(event: Event, status: int, handlers: int, started: float, level: int,
                 duplicate: bool = False) -> None:
    if not log.isEnabledFor(level):
        return
    full_name, tags = subject(event)
    # The request line is on every request's path: build the record directly, skipping
    # Logger.findCaller's stack walk (a few percent of a request under gunicorn).
    log.handle(log.makeRecord(
        log.name, level, __file__, 0,
        "%s %s tags=%s format=%s status=%d handlers=%d duration=%.1fms event=%s%s",
        (event.action, printable(full_name or "-"),
         printable(",".join(tags) or "-"), event.format, status, handlers,
         (time.perf_counter() - started) * 1e3, event.id, " duplicate" if duplicate else ""),
        None, "webhook",
    ))
