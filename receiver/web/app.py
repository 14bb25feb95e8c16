"""``create_app()`` and the ``Receiver`` Flask extension; configuration from ``RECEIVER_*``.

Settings (environment variables, or keys of the ``config`` mapping):

``RECEIVER_PATH``          the webhook's path, default ``/webhook``
``RECEIVER_AUTH_HEADERS``  JSON object: header name to a value or a list of accepted values
``RECEIVER_MAX_BODY``      the body size cap in bytes, default 1 MiB
``RECEIVER_HANDLERS``      comma-separated module names to import, which register handlers
``RECEIVER_LOG_LEVEL``     the ``receiver`` logger's level, default ``INFO`` (one line a request)
``RECEIVER_QUEUE``         where events wait for handlers: ``sqlite:///PATH`` (default under
                           ``$XDG_DATA_HOME/receiver``), ``redis://HOST:PORT/DB``, or ``sync``
``RECEIVER_WORKERS``       handler threads per process, default 2; 0: only queue
``RECEIVER_HANDLER_ATTEMPTS``  runs of one job before it is dead, default 5
``RECEIVER_HANDLER_BACKOFF``   the first retry's delay in seconds, default 2
``RECEIVER_LEASE``         seconds a running job may go without a heartbeat, default 30
``RECEIVER_DEDUP_WINDOW``  seconds during which the same event id is a duplicate, default 86400
``RECEIVER_LOG_RETENTION`` days to keep finished jobs, default 30
``RECEIVER_LOG_FORMAT``    ``text`` (default) or ``json``: one JSON object per log line
``RECEIVER_PROXY_HOPS``    reverse proxies in front, whose X-Forwarded-For is trusted; default 0
``RECEIVER_METRICS``       ``false``: no ``/metrics`` and nothing counted; default true
``RECEIVER_METRICS_AUTH_HEADERS``  what a scrape must send; default the webhook's auth headers
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import sys
import traceback
import typing as t

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from ..handlers import signals
from ..handlers.dispatch import Handlers
from ..jobs import QueueError, QueueUnavailable, open_queue
from .auth import AuthConfigError, HeaderAuth, parse_auth_headers
from .endpoint import bp
from .logs import configure_logging, log_event
from .settings import MAX_SECONDS, ConfigError, ReceiverState, flag, load_config, number

if t.TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["ConfigError", "Receiver", "ReceiverState", "create_app"]

log = logging.getLogger("receiver")

DEFAULT_PATH = "/webhook"
DEFAULT_MAX_BODY = 1024 * 1024


_UNSET: t.Any = object()


class Receiver:
    """Mounts the webhook endpoint in a Flask app, with its own path and auth.

    ``Receiver(app)`` or ``ext = Receiver(); ext.init_app(app)``. Arguments left out are read
    from the app's ``RECEIVER_*`` config, then the defaults. One object can serve many apps.

    :param path: the endpoint's path, default ``/webhook``.
    :param auth_headers: header name to a value or list of accepted values; ``{}`` for none.
    :param max_body: the body size cap in bytes, default 1 MiB.
    :param handlers: a :class:`~receiver.handlers.dispatch.Handlers` registry: the app runs its
        handlers only; default, the process-wide ones registered with ``on()``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        path: str | None = None,
        auth_headers: t.Mapping[str, str | t.Sequence[str]] | None = None,
        max_body: int | None = None,
        handlers: Handlers | None = None,
    ) -> None:
        if handlers is not None and not isinstance(handlers, Handlers):
            raise TypeError(f"handlers= takes a receiver.Handlers registry, not "
                            f"{type(handlers).__name__}")
        self.path = path
        self.auth_headers = auth_headers
        self.max_body = max_body
        self.handlers = handlers
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the endpoint on *app* and keep its settings in ``app.extensions``."""
        state = _state_from(
            app.config,
            path=self.path,
            auth_headers=self.auth_headers,
            max_body=self.max_body,
        )
        if self.handlers is not None:
            # Set before any worker thread starts and looks a handler up.
            state = dataclasses.replace(state, handlers=self.handlers)
        if state.queue is not None:
            from ..handlers.runner import make_pool

            state = dataclasses.replace(state, pool=make_pool(app, state.queue, app.config))
        app.extensions["receiver"] = state
        app.register_blueprint(bp, url_prefix=state.path)
        if state.pool is not None:
            if _in_gunicorn_master():
                state.pool.start_after_fork = True  # --preload: each worker starts its own
            else:
                state.pool.start()
        if state.auth.enabled:
            log.info(
                "receiver on %s checks auth headers: %s",
                state.path, ", ".join(state.auth.header_names),
            )
        else:
            log.warning(
                "receiver on %s has NO AUTH: every request is accepted; "
                "set RECEIVER_AUTH_HEADERS to check the trigger's headers",
                state.path,
            )


def _state_from(config: t.Mapping[str, t.Any], **given: t.Any) -> ReceiverState:
    def setting(name: str, default: t.Any) -> t.Any:
        value = given[name]
        return config.get(f"RECEIVER_{name.upper()}", default) if value is None else value

    path = setting("path", DEFAULT_PATH)
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigError(f"RECEIVER_PATH must start with '/', got {path!r}")
    max_body = setting("max_body", DEFAULT_MAX_BODY)
    if isinstance(max_body, str) and max_body.strip().isascii() and max_body.strip().isdigit():
        max_body = int(max_body)
    if isinstance(max_body, bool) or not isinstance(max_body, int) or max_body <= 0:
        raise ConfigError(f"RECEIVER_MAX_BODY must be a positive number of bytes, got {max_body!r}")
    try:
        auth = HeaderAuth(parse_auth_headers(setting("auth_headers", None)))
    except AuthConfigError as exc:
        raise ConfigError(str(exc)) from None
    url = config.get("RECEIVER_QUEUE")
    queue = None
    if url != "sync":
        try:
            queue = open_queue(url)
        except QueueError as exc:
            raise ConfigError(str(exc)) from None
        if queue.url.startswith("sqlite:"):
            # A local file that cannot be created or written is a mistake in the setting, not
            # an outage to wait out: say so now. (A Redis that is down may come back: the
            # server starts, and answers 503 until it does.)
            try:
                queue.check()
            except QueueUnavailable as exc:
                raise ConfigError(f"RECEIVER_QUEUE: {exc}") from None
            finally:
                queue.close()
    window = number(config, "RECEIVER_DEDUP_WINDOW", 86400, minimum=0, maximum=MAX_SECONDS)
    metrics, metrics_auth = None, auth
    if flag(config, "RECEIVER_METRICS", True):
        metrics = _metrics()
        if "RECEIVER_METRICS_AUTH_HEADERS" in config:
            try:
                metrics_auth = HeaderAuth(parse_auth_headers(
                    config["RECEIVER_METRICS_AUTH_HEADERS"],
                    "RECEIVER_METRICS_AUTH_HEADERS"))
            except AuthConfigError as exc:
                raise ConfigError(str(exc)) from None
    return ReceiverState(path=path.rstrip("/") or "/", auth=auth, max_body=max_body,
                         queue=queue, window=window, metrics=metrics, metrics_auth=metrics_auth)


def _metrics() -> Metrics:
    from .metrics import Metrics

    try:
        return Metrics.get()
    except OSError as exc:
        raise ConfigError(f"RECEIVER_METRICS: cannot keep the metrics of the workers: {exc}; "
                          "set PROMETHEUS_MULTIPROC_DIR to a private directory, or "
                          "RECEIVER_METRICS=false") from None


def _in_gunicorn_master() -> bool:
    """Whether gunicorn's arbiter is loading the app before it forks (``--preload``)."""
    arbiter = sys.modules.get("gunicorn.arbiter")
    if arbiter is None:
        return False
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is arbiter.Arbiter.setup.__code__:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


def import_handlers(setting: t.Any) -> list[str]:
    if not setting:
        return []
    if isinstance(setting, str):
        names = [n.strip() for n in setting.split(",") if n.strip()]
    elif isinstance(setting, (list, tuple)):
        names = [str(n) for n in setting]
    else:
        raise ConfigError("RECEIVER_HANDLERS must be comma-separated module names")
    for name in names:
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as exc:  # a syntax error, a bad pattern, sys.exit() ...
            raise ConfigError(
                f"RECEIVER_HANDLERS: cannot import {name!r}: {_describe_error(exc)}"
            ) from exc
    return names


def _describe_error(exc: BaseException) -> str:
    """One line for an import's failure: the error and where in the user's code it was."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, ImportError) and exc.__traceback__ is None:
        return text
    package = os.path.dirname(os.path.dirname(__file__)) + os.sep  # receiver's own frames
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(package) and "importlib" not in f.filename]
    if frames:
        text += f" ({frames[-1].filename}, line {frames[-1].lineno})"
    return " ".join(text.split())


def create_app(config: t.Mapping[str, t.Any] | None = None, *,
               handlers: Handlers | None = None, env: bool = True) -> Flask:
    """The receiver as a Flask app, configured from ``RECEIVER_*`` and then *config*.

    Imports the ``RECEIVER_HANDLERS`` modules (with none, every event is logged), mounts the
    endpoint, starts the worker threads, and adds ``GET /healthz`` and ``GET /readyz``.

    :param handlers: a :class:`~receiver.handlers.dispatch.Handlers` registry: the app runs its
        handlers only, not those registered with ``on()`` (nor another app's). Default: the
        process-wide ``on()`` handlers, from the ``RECEIVER_HANDLERS`` modules and any other.
    :param env: ``False``: *config* alone configures the app, and the ``RECEIVER_*``
        environment variables are not read (the pytest plugin's ``receiver_app``: a test
        must not depend on the shell that runs it). Settings left out take their defaults.

    :raises ConfigError: a setting is wrong or a handler module fails to import. Called by
        gunicorn as ``receiver:create_app()``, it prints that one line and exits with
        status 3 instead, which stops gunicorn rather than restarting workers forever.
    """
    try:
        return _create_app(config, handlers, env)
    except ConfigError as exc:
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if caller.startswith("gunicorn."):
            stop_gunicorn(exc)
        raise


def stop_gunicorn(exc: ConfigError) -> t.NoReturn:
    """Stop gunicorn because the app cannot be made: print *exc* as one line and exit with
    status 3, gunicorn's "worker failed to boot", which stops the server rather than
    restarting workers forever.

    Each worker loads the app, so each fails alike. gunicorn halts on the first worker that
    exits with 3, and one more such exit while it halts ends it in a traceback (exit status 1).
    So, per master, the first worker to fail says why and exits with 3; the others exit
    with 0, silent, and gunicorn replaces them until it halts. The first is the one that
    creates a marker file named after the master (its pid and start time); the shipped
    gunicorn.conf.py removes it at exit, and the next failure removes those of masters
    that are gone. With ``RECEIVER_LOG_FORMAT=json`` the line is JSON.
    """
    if "gunicorn.workers.base" in sys.modules and not _in_gunicorn_master():
        import tempfile

        from .metrics import _start_time, remove_stale

        master = os.getppid()
        prefix = f"receiver-boot-{os.getuid()}-"
        path = os.path.join(tempfile.gettempdir(), f"{prefix}{master}-{_start_time(master)}")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            if _fresh(path):  # another worker is saying it and exiting with 3
                os._exit(0)  # quietly: gunicorn replaces such a worker until it halts
            # A marker left by an earlier master with this pid (no start time to tell them
            # apart, or no gunicorn.conf.py to remove it): this worker says it, and makes
            # the marker fresh for the others.
            with contextlib.suppress(OSError):
                os.utime(path)
        except OSError:
            pass  # no marker: every worker says it, as gunicorn alone would
        else:
            remove_stale(os.path.dirname(path), prefix, keep=path)
    line = f"receiver: configuration error: {exc}"
    if os.environ.get("RECEIVER_LOG_FORMAT", "").strip().lower() == "json":
        from .logs import json_formatter  # every line of the output parses, this one too

        record = logging.LogRecord("receiver", logging.ERROR, __file__, 0,
                                   f"configuration error: {exc}", None, None)
        line = json_formatter().format(record)
    print(line, file=sys.stderr, flush=True)
    sys.exit(3)


def _fresh(path: str) -> bool:
    """Whether the marker at *path* was made in the last few seconds (by this master's
    workers, which fail within moments of each other)."""
    import time

    try:
        return time.time() - os.stat(path).st_mtime < 10
    except OSError:
        return False


def _create_app(config: t.Mapping[str, t.Any] | None, handlers: Handlers | None,
                env: bool) -> Flask:
    app = Flask("receiver")
    app.config.update(load_config(config, env=env))
    configure_logging(app.config.get("RECEIVER_LOG_LEVEL"), app.config.get("RECEIVER_LOG_FORMAT"))
    hops = number(app.config, "RECEIVER_PROXY_HOPS", 0, minimum=0, maximum=10, integer=True)
    if hops:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # The client address logged is the one the last *hops* proxies vouch for.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops)  # type: ignore[method-assign]
    if handlers is not None and app.config.get("RECEIVER_HANDLERS"):
        raise ConfigError(
            "RECEIVER_HANDLERS is set, but create_app(handlers=...) was given: the app "
            "would run only the given handlers, not the modules' on() ones; leave one out"
        )
    handler_modules = import_handlers(app.config.get("RECEIVER_HANDLERS"))
    Receiver(app, handlers=handlers)
    if not handler_modules and handlers is None:
        signals.event_received.connect(log_event, sender=app, weak=False)

    @app.get("/healthz")
    def healthz() -> Response:
        """Liveness: the process answers."""
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz() -> tuple[Response, int]:
        """Readiness: the queue can be read and written now (503 with the reason if not)."""
        queue = app.extensions["receiver"].queue
        if queue is None:
            return jsonify(status="ready", queue="sync"), 200
        try:
            queue.check()
        except QueueUnavailable as exc:
            return jsonify(status="unavailable", error=exc.reason), 503
        return jsonify(status="ready"), 200

    state: ReceiverState = app.extensions["receiver"]
    if state.metrics is not None:
        metrics, metrics_auth = state.metrics, state.metrics_auth
        assert metrics_auth is not None

        @app.get("/metrics")
        def metrics_view() -> Response:
            """Prometheus metrics, behind the webhook's auth headers (or
            RECEIVER_METRICS_AUTH_HEADERS)."""
            problem = metrics_auth.check(request.headers)
            if problem is not None:
                return Response(json.dumps({"error": problem}), 401,
                                mimetype="application/json")
            body, content_type = metrics.render(state.queue)
            return Response(body, 200, content_type=content_type)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(error=exc.description), exc.code or 500

    return app
