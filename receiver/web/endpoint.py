"""The HTTP endpoint: guard, auth, schema, then the queue (or the handlers, in ``sync`` mode).

:func:`receive` is the receiving path as named steps. Status codes (docs/design.md): 202
queued; 200 a duplicate, the ping, or ``sync`` mode done; 400 not JSON / not UTF-8; 401 auth;
411 a chunked body this server cannot read; 413 too large; 415 not a JSON content type (or
encoded); 422 not a valid event; 503 the queue cannot be reached; 500 only in ``sync`` mode,
when a handler failed.
Per-app settings live in ``app.extensions["receiver"]``, put there by :class:`Receiver`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import typing as t

from flask import Blueprint, Request, Response, current_app, request

from ..core.events import Event, subject
from ..core.formats.cloudevents import is_binary, structured
from ..core.schemas import UnknownAction, ValidationError, load_event
from ..core.text import cut, field
from ..handlers import signals
from ..handlers.dispatch import dispatch, matching_handlers, send_isolated
from ..jobs import EventRecord, QueueUnavailable
from .logs import log_other, log_rejection, log_request

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


#: One decoder for every request (``json.loads`` with an argument makes a new one per call).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


#: ASCII escapes: a lone surrogate from the request ("\ud800") cannot be encoded as UTF-8.
_encode = json.JSONEncoder(check_circular=False).encode


def _json(payload: t.Any, status: int) -> Response:
    return Response(_encode(payload), status=status, mimetype="application/json")


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


def _read_exactly(stream: t.Any, length: int) -> bytes:
    """*length* bytes of *stream*; :class:`_Unreadable` if it ends or fails first."""
    try:
        data = stream.read(length)
        if len(data) == length:
            return data
        parts, got = [data], len(data)
        while got < length:  # a stream may hand the body over in parts
            more = stream.read(length - got)
            if not more:
                raise _Unreadable(f"cut short: {got} of {length} bytes")
            parts.append(more)
            got += len(more)
    except _Unreadable:
        raise
    except Exception as exc:  # the client went away mid-body, say
        raise _Unreadable(type(exc).__name__) from exc
    return b"".join(parts)


def _read_body(req: Request, limit: int) -> bytes | None:
    """The request body, or ``None`` when it is over *limit* bytes (chunked bodies too)."""
    length = req.content_length
    environ = req.environ
    if length is not None:
        if length > limit:
            return None
        # Straight from the server's stream (PEP 3333: read no more than CONTENT_LENGTH),
        # without Werkzeug's wrapper streams, which cost as much as the rest of the read.
        # CONTENT_LENGTH is the body's length even where the server also sets
        # wsgi.input_terminated (gunicorn does, always): a middleware that changes the
        # body must change CONTENT_LENGTH with it.
        return _read_exactly(environ["wsgi.input"], length)
    if not environ.get("wsgi.input_terminated"):
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            raise _LengthRequired()
        return b""  # no length and no end the server vouches for: there is no body to read
    # Chunked: read to the end ourselves. (Werkzeug's max_content_length would cut such a
    # body at the limit without an error, turning "too large" into "malformed".)
    stream, total = environ["wsgi.input"], 0
    chunks: list[bytes] = []
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
    """Receive one delivery from the registry. Each step passes or refuses the request with
    a :class:`Rejection`; the answer is counted and logged once, whatever it is."""
    started = time.perf_counter()
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    state: ReceiverState = app.extensions["receiver"]
    try:
        response = receive(app, state, req, started)
    except Rejection as rejection:
        response = refuse(app, req, rejection, started)
    if state.metrics is not None:
        state.metrics.request(response.status_code)
    return response


def receive(app: Flask, state: ReceiverState, req: Request, started: float) -> Response:
    """The receiving path, step by step."""
    body = read_body(req, state.max_body)
    binary = is_binary(req.headers)  # a binary-mode CloudEvent: its attributes are headers
    if is_ping(body, binary):
        return ping(req, started)
    check_content_type(req)
    authenticate(state, req)
    text, data = parse(state, req, body, binary)
    try:
        event = load(data)
    except UnknownAction as unknown:
        return ignore(app, req, unknown, started)
    if state.queue is None:
        return run_now(app, state, req, event, started)
    return enqueue(app, state, req, event, text, started)


def refuse(app: Flask, req: Request, rejection: Rejection, started: float) -> Response:
    """The answer to a refused request: its status and a message naming the problem."""
    send_isolated(signals.request_rejected, app, status=rejection.status,
                  reason=rejection.reason)
    log_rejection(rejection.status, rejection.reason, started, req.remote_addr)
    return _json({"error": rejection.reason, **rejection.extra}, rejection.status)


def is_ping(body: bytes, binary: bool) -> bool:
    """The registry's "test endpoint" button: an empty POST, sent without auth headers.
    (A binary-mode CloudEvent may have an empty body: it is not the ping.)"""
    return not binary and not body.strip()


def ping(req: Request, started: float) -> Response:
    log_other("ping", 200, started, req.remote_addr)
    return _json({"ping": True}, 200)


def authenticate(state: ReceiverState, req: Request) -> None:
    """401 unless every configured auth header is present with an accepted value."""
    problem = state.auth.check(req.headers)
    if problem is not None:
        raise Rejection(401, problem)


def parse(state: ReceiverState, req: Request, body: bytes, binary: bool
          ) -> tuple[str, t.Any]:
    """The body as the text to queue and its decoded JSON.

    A binary-mode CloudEvent's attributes are headers and its body is its data: it is
    turned into the structured body, so that a job's event is read from the body alone,
    never with the auth headers' values.
    """
    if not binary:
        return decode(body)
    data = decode(body)[1] if body.strip() else None
    data = structured(req.headers, data, skip={n.lower() for n in state.auth.header_names})
    return json.dumps(data, ensure_ascii=False), data


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
    """415 unless the body is ``application/json`` or ``application/*+json``, sent without
    a content encoding (gzip and the like are not decoded here)."""
    environ = req.environ
    encoding = environ.get("HTTP_CONTENT_ENCODING")
    if encoding is not None and encoding.strip().lower() not in ("", "identity"):
        raise Rejection(415, f"content encoding {encoding.strip()[:64]!r} is not supported; "
                             "send the body uncompressed")
    if environ.get("CONTENT_TYPE") == "application/json":
        return  # what registries send, checked without parsing
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
        data = _DECODER.decode(text)
    except RecursionError:
        raise Rejection(400, "body is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # Python's limit, with advice to Python
            digits = getattr(sys, "get_int_max_str_digits", lambda: 4300)()
            raise Rejection(400, "body is not valid JSON here: it holds a number of more than "
                                 f"{digits} digits") from None
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


def ignore(app: Flask, req: Request, unknown: UnknownAction, started: float) -> Response:
    """202 for a well-formed body of a type no format knows; no handler runs."""
    send_isolated(signals.event_ignored, app, action=unknown.action, data=unknown.data,
                  format=unknown.format)
    log_other("ignored", 202, started, req.remote_addr, type=unknown.action,
              format=unknown.format)
    kind = cut(unknown.action)  # from the body: echoed cut short if it is long
    return _json({"ignored": True, "type": kind, "format": unknown.format, "handlers": 0}, 202)


def run_now(app: Flask, state: ReceiverState, req: Request, event: Event,
            started: float) -> Response:
    """``sync`` mode: run the handlers in the request; 500 when one failed."""
    outcome = dispatch(app, event)
    status = 500 if outcome.failed else 200
    if state.metrics is not None:
        state.metrics.event(event)
    log_request(event, status, outcome.ran, started, req.remote_addr,
                level=logging.ERROR if outcome.failed else logging.INFO)
    answer: dict[str, t.Any] = {"action": event.action, "format": event.format,
                                "handlers": outcome.ran}
    if outcome.failed:
        answer["error"] = "handler failed"
        answer["failed"] = outcome.failed
    return _json(answer, status)


def enqueue(app: Flask, state: ReceiverState, req: Request, event: Event, text: str,
            started: float) -> Response:
    """Queue the event and a job per matching handler (202), or answer 200 for a duplicate."""
    assert state.queue is not None
    handlers = matching_handlers(app, event)
    full_name, tags = subject(event)
    record = EventRecord(event.id, event.action, full_name, tags, text)
    pool = state.pool
    hold = pool.hold(len(handlers)) if pool is not None and handlers else None
    try:
        submitted = state.queue.submit(record, handlers, state.window, hold)
    except QueueUnavailable as exc:
        log.error("cannot queue %s %s: %s", event.action, field(full_name or "-"), exc)
        raise Rejection(503, "the queue is unavailable; retry later") from None
    if submitted.duplicate:
        send_isolated(signals.event_duplicate, app, event=event)
        if state.metrics is not None:
            state.metrics.duplicate(event)
        log_request(event, 200, 0, started, req.remote_addr, duplicate=True)
        return _json({"action": event.action, "format": event.format, "event_id": event.id,
                      "duplicate": True, "handlers": 0}, 200)
    send_isolated(signals.event_received, app, event=event)  # before any handler runs
    if state.metrics is not None:
        state.metrics.event(event)
    if submitted.claims:
        assert pool is not None
        pool.accept(submitted.claims, event)
    log_request(event, 202, len(submitted.job_ids), started, req.remote_addr)
    return _json({"action": event.action, "format": event.format, "event_id": event.id,
                  "handlers": len(submitted.job_ids)}, 202)
