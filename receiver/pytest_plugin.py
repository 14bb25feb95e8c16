"""The pytest plugin, registered as ``receiver`` through the ``pytest11`` entry point: with
``receiver`` installed, a project's tests can use these fixtures without a conftest.py.

``receiver_app``       ``create_app()`` in ``sync`` mode (handlers run in the request), no auth;
                       ``on()`` handlers registered during the test are removed after it
``receiver_client``    its Flask test client
``deliver``            ``deliver("pushImage", "prod/api:v1", format="harbor")`` posts a
                       realistic body (or a body given as a dict) and returns the response
``received_events``    the events ``receiver_app`` accepted during the test
``receiver_config``    override it: more ``RECEIVER_*`` settings for ``receiver_app``
``receiver_handlers``  override it: a ``receiver.Handlers`` registry for ``receiver_app``

Strict mode (drift detection): ``deliver`` fails the test when a body holds keys that its
format does not declare, at any depth, or a ``type`` that no format knows. Turn it on with
``--receiver-strict``, the ini option ``receiver_strict = true``, the marker
``@pytest.mark.receiver_strict`` (``receiver_strict(False)`` turns it off for one test), or
``deliver(..., strict=True)``, which wins over the others.

Beyond the ``receiver`` package itself, this module imports nothing of the receiver until
a fixture is used, so projects that never use the fixtures pay little for it.
"""

from __future__ import annotations

import json
import typing as t

import pytest

if t.TYPE_CHECKING:
    from flask import Flask
    from flask.testing import FlaskClient
    from werkzeug.test import TestResponse

    from receiver.dispatch import Handlers
    from receiver.events import Event

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


@pytest.fixture()
def receiver_config() -> dict[str, t.Any]:
    """Settings for ``receiver_app``, over its own (``RECEIVER_QUEUE=sync``, no auth).

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
def receiver_app(receiver_config: dict[str, t.Any],
                 receiver_handlers: Handlers | None) -> t.Iterator[Flask]:
    """The receiver, in ``sync`` mode and without auth unless ``receiver_config`` says
    otherwise. Handlers registered with ``on()`` from here to the end of the test (in the
    test, or in fixtures that use this one) are removed after it."""
    from receiver import create_app
    from receiver.testing import isolated_handlers

    config = {"RECEIVER_QUEUE": "sync", "RECEIVER_AUTH_HEADERS": {}, **receiver_config}
    # Created before the isolation starts: handler modules it imports stay registered.
    app = create_app(config, handlers=receiver_handlers)
    try:
        with isolated_handlers():
            yield app
    finally:
        state = app.extensions["receiver"]
        if state.pool is not None:  # receiver_config chose a queue: stop its threads
            state.pool.stop(timeout=10)
            state.queue.close()


@pytest.fixture()
def receiver_client(receiver_app: Flask) -> FlaskClient:
    """``receiver_app``'s Flask test client."""
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
                 format: str = "tcr", headers: t.Mapping[str, str] | None = None,
                 strict: bool | None = None, **build_kwargs: t.Any) -> TestResponse: ...


@pytest.fixture()
def deliver(request: pytest.FixtureRequest, receiver_app: Flask,
            receiver_client: FlaskClient) -> Deliver:
    """``deliver(action, target="prod/api:v1", *, format="tcr", headers=None, strict=None,
    **build_kwargs)`` posts to ``receiver_app`` the body the registry would send, with the
    format's content type, and returns the response.

    *target* is ``NS/REPO:TAG`` (``NS/REPO:TAG1,TAG2`` for several tags), ``NS/REPO@DIGEST``
    for an image pushed by digest alone, or ``NS/REPO`` for the tag ``latest``; leave it out
    for ``replication`` and ``tagRetention``, which have no repository. *build_kwargs* go to
    :func:`receiver.events.build_event` (``operator=``, ``severity=``, ``project=`` ...).
    Instead of an action, give a body as a dict (a :func:`receiver.testing.sample`, a
    recorded delivery) to post it as it is. *strict* turns strict mode on or off for this
    call.
    """
    marker = request.node.get_closest_marker("receiver_strict")
    if marker is not None:
        default_strict = bool(marker.args[0]) if marker.args else True
    else:
        default_strict = _strict_default(request.config)
    path = receiver_app.extensions["receiver"].path

    def deliver(action: str | t.Mapping[str, t.Any], target: str | None = None, *,
                format: str = "tcr", headers: t.Mapping[str, str] | None = None,
                strict: bool | None = None, **build_kwargs: t.Any) -> TestResponse:
        __tracebackhide__ = True
        from receiver.events import REPOSITORY_ACTIONS
        from receiver.formats import detect
        from receiver.testing import make_body

        if isinstance(action, t.Mapping):
            if target is not None or build_kwargs:
                raise TypeError("deliver(body) posts the body as it is: leave out the "
                                "target and the event's keywords")
            body = dict(action)
        elif target is None and action not in REPOSITORY_ACTIONS:
            body = make_body(action, None, None, format=format, **build_kwargs)
        else:
            full_name, tags, digest = _target(DEFAULT_TARGET if target is None else target)
            if digest is not None:
                if "digest" in build_kwargs:
                    raise TypeError(f"target {target!r} has a digest: leave out digest=")
                build_kwargs["digest"] = digest
            body = make_body(action, full_name, tags, format=format, **build_kwargs)
        fmt = detect(body)
        if default_strict if strict is None else strict:
            _fail_on_drift(body, fmt)
        sent = dict(headers or {})
        if not any(key.lower() == "content-type" for key in sent):
            sent["Content-Type"] = fmt.content_type if fmt is not None else "application/json"
        return receiver_client.post(path, data=json.dumps(body), headers=sent)

    return deliver


def _target(target: str) -> tuple[str, list[str] | None, str | None]:
    """``NS/REPO[:TAG[,TAG...]][@DIGEST]`` as a full name, tags and digest. ``None`` tags:
    ``build_event``'s default (``latest``); ``[]``: by digest alone."""
    ref, at, digest = target.partition("@")
    name, sep, tags = ref.rpartition(":")
    if sep and "/" not in tags:
        tag_list: list[str] | None = [tag for tag in tags.split(",") if tag]
        if not tag_list:
            raise ValueError(f"target {target!r} has no tag after ':'")
    else:
        name, tag_list = ref, ([] if at else None)
    if not name:
        raise ValueError(f"target {target!r} must be NS/REPO:TAG (several tags: "
                         "NS/REPO:TAG1,TAG2; by digest: NS/REPO@sha256:...)")
    return name, tag_list, (digest if at else None)


def _fail_on_drift(body: dict[str, t.Any], fmt: t.Any) -> None:
    """Fail the test if *body* has keys *fmt* does not declare, or a type no format knows."""
    __tracebackhide__ = True
    from receiver.formats.strict import unknown_keys

    if fmt is None:
        kind = body.get("type")
        if isinstance(kind, str):
            pytest.fail(f"receiver strict mode: no format knows the body's type {kind!r}")
        return  # not an event at all: the receiver's answer says what is wrong
    found = unknown_keys(fmt, body)
    if found:
        pytest.fail(f"receiver strict mode: the {fmt.name} body has {len(found)} key(s) its "
                    "format does not declare:\n  " + "\n  ".join(found))
