"""The HTTP endpoint: guard, auth, schema, dispatch, and the status code of each outcome.

Status codes (DESIGN.md): 2xx accepted; 400 not JSON / not UTF-8; 401 auth; 413 too large;
415 not a JSON content type; 422 not a valid event; 500 only when a handler failed.
Per-app settings live in ``app.extensions["receiver"]``, put there by :class:`Receiver`.
"""

from __future__ import annotations

import json
import logging
import re
import time
import typing as t

from flask import Blueprint, Request, Response, current_app, request

from . import signals
from .dispatch import dispatch, send_isolated
from .schemas import UnknownAction, ValidationError, load_event

if t.TYPE_CHECKING:
    from .app import ReceiverState

log = logging.getLogger("receiver")

bp = Blueprint("receiver", __name__)


def _reject_constant(name: str) -> t.NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def printable(value: t.Any) -> str:
    """*value* for a log line: as is when printable, else its repr, so that a newline in a
    repository name or type cannot forge log lines."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def _json(payload: t.Any, status: int) -> Response:
    # ASCII escapes: a lone surrogate from the request ("\ud800") cannot be encoded as UTF-8.
    return Response(json.dumps(payload), status=status, mimetype="application/json")


# A JSON escape of a UTF-16 surrogate; pairs decode to one character, lone ones to none.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(data: t.Any) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


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
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    state: ReceiverState = app.extensions["receiver"]

    def reject(status: int, reason: str, **extra: t.Any) -> Response:
        send_isolated(signals.request_rejected, app, status=status, reason=reason)
        log.warning(
            "rejected status=%d reason=%s duration=%.1fms",
            status, reason, (time.perf_counter() - started) * 1e3,
        )
        return _json({"error": reason, **extra}, status)

    try:
        body = _read_body(req, state.max_body)
    except _LengthRequired:
        return reject(411, "chunked body without Content-Length: this server cannot read it; "
                      "send Content-Length or run under gunicorn")
    except _Unreadable as exc:
        return reject(400, f"body could not be read ({exc})")
    if body is None:
        return reject(413, f"body is larger than the limit of {state.max_body} bytes")
    if not body.strip():
        # The registry's "test endpoint" button: an empty POST, sent without auth headers.
        log.info("ping status=200 duration=%.1fms", (time.perf_counter() - started) * 1e3)
        return _json({"ping": True}, 200)
    mimetype = req.mimetype
    if mimetype != "application/json" and not (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    ):
        return reject(
            415, f"content type must be application/json, not {mimetype or '(none)'}"
        )
    problem = state.auth.check(req.headers)
    if problem is not None:
        return reject(401, problem)

    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return reject(400, f"body is not UTF-8 (invalid byte at offset {exc.start})")
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return reject(400, "body is not valid JSON: nested too deeply")
    except ValueError as exc:
        return reject(400, f"body is not valid JSON: {exc}")
    if "\\u" in text and _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(data):
        return reject(400, "body is not valid JSON text: it escapes a lone UTF-16 surrogate")

    try:
        event = load_event(data)
    except UnknownAction as unknown:
        send_isolated(signals.event_ignored, app, action=unknown.action, data=unknown.data)
        log.info(
            "ignored type=%s status=202 duration=%.1fms",
            printable(unknown.action), (time.perf_counter() - started) * 1e3,
        )
        return _json({"ignored": True, "type": unknown.action, "handlers": 0}, 202)
    except ValidationError as exc:
        return reject(422, "body is not a valid event", messages=exc.messages)
    except RecursionError:
        return reject(400, "body is nested too deeply")

    outcome = dispatch(app, event)
    status = 500 if outcome.failed else 200
    level = logging.ERROR if outcome.failed else logging.INFO
    if log.isEnabledFor(level):
        # The request line is on every request's path: build the record directly, skipping
        # Logger.findCaller's stack walk (a few percent of a request under gunicorn).
        log.handle(log.makeRecord(
            log.name, level, __file__, 0,
            "%s %s tags=%s status=%d handlers=%d duration=%.1fms",
            (event.action, printable(event.repository.full_name),
             printable(",".join(event.tags) or "-"),
             status, outcome.ran, (time.perf_counter() - started) * 1e3),
            None, "webhook",
        ))
    answer: dict[str, t.Any] = {"action": event.action, "handlers": outcome.ran}
    if outcome.failed:
        answer["error"] = "handler failed"
        answer["failed"] = outcome.failed
    return _json(answer, status)
