"""The pytest plugin, registered as ``receiver`` through the ``pytest11`` entry point: with
``receiver`` installed, a project's tests can use these fixtures without a conftest.py.

``receiver_app``       ``create_app()`` as in production (a queue, and the answers the registry
                       gets: ``202``, ``200`` with ``"duplicate": true``), on a queue of its
                       own in a temporary directory, without worker threads and without auth;
                       configured by ``receiver_config`` alone
``receiver_client``    its Flask test client
``deliver``            ``deliver("pushImage", "prod/api:v1", format="harbor")`` posts a
                       realistic body (or a body given as a dict), runs the jobs it queued,
                       and returns the response, with ``.jobs``
``received_events``    the events ``receiver_app`` accepted during the test
``receiver_config``    override it: more ``RECEIVER_*`` settings for ``receiver_app``
``receiver_handlers``  override it: a ``receiver.Handlers`` registry for ``receiver_app``

Every test, whether it uses the fixtures or not: handlers registered with ``on()`` during
the test (in it, or in its function-scoped fixtures) are removed after it. Those registered
before it (at import, when pytest collects the test files) stay, as do those of the
``RECEIVER_HANDLERS`` modules that ``receiver_app`` imports.

``receiver_app`` is hermetic: the ``RECEIVER_*`` environment variables of the shell running
pytest are not read (``create_app(config, env=False)``); its settings are the plugin's
(``RECEIVER_QUEUE=sqlite:///<tmp>/queue.db``, ``RECEIVER_WORKERS=0``,
``RECEIVER_HANDLER_BACKOFF=0``, ``RECEIVER_AUTH_HEADERS={}``) and ``receiver_config``'s,
which win, and the defaults.

``receiver_app`` answers as a server does: ``202`` with the number of jobs queued, and
``200`` with ``"duplicate": true`` for a body it has had before (nothing runs). ``deliver``
runs the queued jobs in the test's thread before it returns; a handler that raises is
retried at once until it succeeds or is ``dead`` (``resp.jobs`` says which). With
``"RECEIVER_QUEUE": "sync"`` in ``receiver_config``, handlers run in the request instead:
``200``, ``500`` when one failed, and no duplicates are detected.

Strict mode (drift detection): ``deliver`` fails the test when a body holds keys that its
format does not declare, at any depth, or a ``type`` that no format knows. Turn it on with
``--receiver-strict``, the ini option ``receiver_strict = true``, the marker
``@pytest.mark.receiver_strict`` (``receiver_strict(False)`` turns it off for one test), or
``deliver(..., strict=True)``, which wins over the others.

Cost: pytest loads this module in every run of a project where ``receiver`` is installed.
It imports nothing of the receiver (the package root imports its parts on first use), so a
run that uses no fixture pays a few milliseconds (``python -X importtime -c "import
receiver.pytest_plugin"``): the queue, the formats and the test helpers are imported when a
fixture is first used, and the clean-up around every test touches the receiver's handlers
only if ``receiver.handlers.dispatch`` was imported.
"""

from __future__ import annotations

import json
import sys
import typing as t
from datetime import datetime, timedelta, timezone

import pytest

if t.TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

    from receiver.core.events import Event
    from receiver.handlers.dispatch import Handlers

__all__ = [
    "deliver",
    "received_events",
    "receiver_app",
    "receiver_client",
    "receiver_config",
    "receiver_handlers",
]

#: ``deliver()``'s repository and tag when none is given.
DEFAULT_TARGET = "prod/api:v1"

_STRICT_HELP = ("fail a test when a body posted with the deliver fixture has keys its format "
                "does not declare, or a type no format knows (drift detection)")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("receiver", "receiver (TCR / Harbor webhooks)")
    group.addoption("--receiver-strict", action="store_true", default=False,
                    dest="receiver_strict", help=_STRICT_HELP)
    parser.addini("receiver_strict", _STRICT_HELP, type="bool", default=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "receiver_strict(on=True): strict mode for this test's deliver() calls: " + _STRICT_HELP,
    )


def pytest_report_header(config: pytest.Config) -> str | None:
    if _strict_default(config):
        return "receiver: strict mode (unknown keys in delivered bodies fail the test)"
    return None


def _strict_default(config: pytest.Config) -> bool:
    return bool(config.getoption("receiver_strict") or config.getini("receiver_strict"))


@pytest.fixture(autouse=True)
def _receiver_isolated_handlers() -> t.Iterator[None]:
    """Every test: the ``on()`` handlers registered during it are removed after it.

    Autouse and function-scoped, so it is set up before the test's other function-scoped
    fixtures and torn down after them: their registrations go too; those made at collection
    (module imports) and in wider-scoped fixtures stay.
    """
    dispatch = sys.modules.get("receiver.handlers.dispatch")
    if dispatch is None:
        # The receiver's handlers were never imported: nothing to keep, and nothing to pay
        # for. If the test imports them, every registration is the test's own.
        yield
        dispatch = sys.modules.get("receiver.handlers.dispatch")
        if dispatch is not None:
            dispatch._forget_all()
        return
    with dispatch.isolated_handlers():
        yield


@pytest.fixture()
def receiver_config() -> dict[str, t.Any]:
    """Settings for ``receiver_app``, over the plugin's own (a queue in a temporary
    directory, ``RECEIVER_WORKERS=0``, ``RECEIVER_HANDLER_BACKOFF=0``, no auth). The
    ``RECEIVER_*`` environment variables are not read: this is all there is.

    Override it in a conftest.py or a test module::

        @pytest.fixture()
        def receiver_config():
            return {"RECEIVER_AUTH_HEADERS": {"Authentication": "s3cret"}}
    """
    return {}


@pytest.fixture()
def receiver_handlers() -> Handlers | None:
    """The ``receiver.Handlers`` registry ``receiver_app`` runs; ``None`` (the default): the
    process-wide handlers registered with ``on()``. Override it to test one registry."""
    return None


@pytest.fixture()
def receiver_app(receiver_config: dict[str, t.Any], receiver_handlers: Handlers | None,
                 tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[Flask]:
    """The receiver as in production, with its own queue in a temporary directory and no
    worker threads (``deliver`` runs the jobs), without auth unless ``receiver_config`` says
    otherwise. Only ``receiver_config`` configures it, not the ``RECEIVER_*`` environment.

    The ``RECEIVER_HANDLERS`` modules it imports keep their ``on()`` handlers after the
    test; handlers registered with ``on()`` during the test are removed after it.
    """
    from receiver import create_app
    from receiver.handlers.dispatch import _lasting

    config: dict[str, t.Any] = {"RECEIVER_WORKERS": 0, "RECEIVER_HANDLER_BACKOFF": 0,
                                "RECEIVER_AUTH_HEADERS": {}, **receiver_config}
    if "RECEIVER_QUEUE" not in config:
        folder = tmp_path_factory.mktemp("receiver-queue")
        config["RECEIVER_QUEUE"] = f"sqlite:///{folder / 'queue.db'}"
    with _lasting():  # handler modules imported here register for the whole run
        app = create_app(config, handlers=receiver_handlers, env=False)
    try:
        yield app
    finally:
        state = app.extensions["receiver"]
        if state.pool is not None:
            state.pool.stop(timeout=10)  # threads, if receiver_config asked for some
            state.queue.close()


@pytest.fixture()
def receiver_client(receiver_app: Flask) -> FlaskClient:
    """``receiver_app``'s Flask test client. What you post with it is queued; run the jobs
    with ``receiver.testing.run_jobs(receiver_app)`` (``deliver`` does it for you)."""
    return receiver_app.test_client()


@pytest.fixture()
def received_events(receiver_app: Flask) -> t.Iterator[list[Event]]:
    """The events ``receiver_app`` accepted during the test (duplicates and rejected bodies
    are not), in the order they came."""
    from receiver.testing import capture_events

    with capture_events(receiver_app) as events:
        yield events


class Deliver(t.Protocol):
    def __call__(self, action: str | t.Mapping[str, t.Any], target: str | None = None, *,
                 format: str | None = None, headers: t.Mapping[str, str] | None = None,
                 strict: bool | None = None, **build_kwargs: t.Any) -> TestResponse: ...


@pytest.fixture()
def deliver(request: pytest.FixtureRequest, receiver_app: Flask,
            receiver_client: FlaskClient) -> Deliver:
    """``deliver(action, target="prod/api:v1", *, format=None, headers=None, strict=None,
    **build_kwargs)`` posts to ``receiver_app`` the body the registry would send, with the
    format's content type, runs the jobs it queued (in this thread), and returns the
    response. Its ``.jobs`` are the jobs that ran, as ``receiver.testing.run_jobs`` returns
    them: ``[job.status for job in resp.jobs] == ["succeeded"]``.

    *target* is ``NS/REPO:TAG`` (``NS/REPO:TAG1,TAG2`` for several tags), ``NS/REPO@DIGEST``
    for an image pushed by digest alone, ``NS/REPO:TAG@DIGEST`` for a tag pinned to a
    digest, or ``NS/REPO`` for the tag ``latest``; leave it out for ``replication`` and
    ``tagRetention``, which have no repository. *format* defaults to ``tcr``, or ``harbor``
    for the actions TCR has not. *build_kwargs* go to :func:`receiver.core.events.build_event`
    (``operator=``, ``severity=``, ``project=`` ...). A mistake in these fails the test
    with one line naming it.

    Each call with an action builds a new event, with an id of its own. Instead of an
    action, give a body as a dict (a :func:`receiver.testing.sample`, a recorded delivery)
    to post it as it is: the same body twice is a redelivery, answered as a duplicate.
    *strict* turns strict mode on or off for this call.
    """
    marker = request.node.get_closest_marker("receiver_strict")
    if marker is not None:
        default_strict = bool(marker.args[0]) if marker.args else True
    else:
        default_strict = _strict_default(request.config)
    path = receiver_app.extensions["receiver"].path
    delivered: set[str] = set()  # the ids posted: a new event must not pass for one of them

    def deliver(action: str | t.Mapping[str, t.Any], target: str | None = None, *,
                format: str | None = None, headers: t.Mapping[str, str] | None = None,
                strict: bool | None = None, **build_kwargs: t.Any) -> TestResponse:
        __tracebackhide__ = True
        from receiver.core.formats import detect
        from receiver.core.schemas import event_id
        from receiver.testing import run_jobs

        if isinstance(action, t.Mapping):
            problem = None
            if target is not None or format is not None or build_kwargs:
                problem = ("deliver(body) posts the body as it is: leave out the target, "
                           "the format and the event's keywords")
            body = dict(action)
        else:
            body, problem = _build(action, target, format, build_kwargs, delivered)
        if problem is not None:
            pytest.fail(f"{_shown_call(action, target, format, build_kwargs)}: {problem}")
        fmt = detect(body)
        if default_strict if strict is None else strict:
            _fail_on_drift(body, fmt)
        sent = dict(headers or {})
        if not any(key.lower() == "content-type" for key in sent):
            sent["Content-Type"] = fmt.content_type if fmt is not None else "application/json"
        try:
            delivered.add(event_id(body))
        except RecursionError:
            pass  # a body too deep to have an id: the receiver answers 400
        response = receiver_client.post(path, data=json.dumps(body), headers=sent)
        response.jobs = run_jobs(receiver_app)  # type: ignore[attr-defined]
        return response

    return deliver


def _build(action: str, target: str | None, format: str | None,
           build_kwargs: dict[str, t.Any], delivered: set[str]
           ) -> tuple[dict[str, t.Any], str | None]:
    """The body ``deliver`` posts for *action*, and ``None``; or ``{}`` and what is wrong.

    A body whose id was already delivered in this test (a chart, a replication or a pinned
    digest built twice in one second) is built again a second later: each call is a new
    event. Given ``occurred_at=``, it is posted as it is.
    """
    from receiver.core.events import REPOSITORY_ACTIONS, parse_reference
    from receiver.core.schemas import event_id
    from receiver.testing import make_body

    kwargs = dict(build_kwargs)
    full_name: str | None = None
    tags: list[str] | None = None
    try:
        if target is not None or action in REPOSITORY_ACTIONS:
            try:
                full_name, tags, digest = parse_reference(
                    DEFAULT_TARGET if target is None else target)
            except ValueError as exc:
                return {}, f"target {exc}"
            if digest is not None:
                if "digest" in kwargs:
                    return {}, f"target {target!r} has a digest: leave out digest="
                kwargs["digest"] = digest
        body = make_body(action, full_name, tags, format=format, **kwargs)
        if "occurred_at" not in kwargs:
            shift = 0
            while event_id(body) in delivered:
                shift += 1
                later = datetime.now(timezone.utc) + timedelta(seconds=shift)
                body = make_body(action, full_name, tags, format=format, occurred_at=later,
                                 **kwargs)
    except (ValueError, TypeError) as exc:
        return {}, str(exc)
    return body, None


def _shown_call(action: t.Any, target: str | None, format: str | None,
                build_kwargs: t.Mapping[str, t.Any]) -> str:
    """``deliver('pushImage', 'prod/api:', format='harbor')``, for a failure's message."""
    if isinstance(action, t.Mapping):
        args = ["{...}"]
    else:
        args = [repr(action)]
    if target is not None:
        args.append(repr(target))
    if format is not None:
        args.append(f"format={format!r}")
    args += [f"{key}={value!r}" for key, value in build_kwargs.items()]
    return f"deliver({', '.join(args)})"


def _fail_on_drift(body: dict[str, t.Any], fmt: t.Any) -> None:
    """Fail the test if *body* has keys *fmt* does not declare, or a type no format knows."""
    __tracebackhide__ = True
    from receiver.core.formats.strict import unknown_keys

    if fmt is None:
        kind = body.get("type")
        if isinstance(kind, str):
            pytest.fail(f"receiver strict mode: no format knows the body's type {kind!r}")
        return  # not an event at all: the receiver's answer says what is wrong
    found = unknown_keys(fmt, body)
    if found:
        pytest.fail(f"receiver strict mode: the {fmt.name} body has {len(found)} key(s) its "
                    "format does not declare:\n  " + "\n  ".join(found))
