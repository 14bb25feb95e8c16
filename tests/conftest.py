"""Shared fixtures: apps, clients, handler clean-up, and real servers on 127.0.0.1."""

from __future__ import annotations

import os
import typing as t

import pytest

from receiver import create_app, off
from receiver import dispatch as dispatch_module
from wire import SEED_PATH

SECRET = "s3cret-value-never-logged"
AUTH = {"Authentication": SECRET}


@pytest.fixture()
def seed_body() -> bytes:
    """The body from the registry's documentation, its 'xxxx' redaction filled with hex."""
    return SEED_PATH.read_bytes()


@pytest.fixture(autouse=True)
def _forget_handlers() -> t.Iterator[None]:
    """Handlers registered with on() during a test are removed after it."""
    before = set(dispatch_module._registered)
    yield
    for fn in set(dispatch_module._registered) - before:
        off(fn)


@pytest.fixture()
def app(monkeypatch: pytest.MonkeyPatch):
    for key in list(os.environ):
        if key.startswith("RECEIVER_"):
            monkeypatch.delenv(key)
    return create_app({"RECEIVER_AUTH_HEADERS": {"Authentication": ["old-secret", SECRET]}})


@pytest.fixture()
def client(app):
    return app.test_client()
