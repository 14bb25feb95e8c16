"""Shared fixtures: apps, clients, handler clean-up, and real servers on 127.0.0.1."""

from __future__ import annotations

import os
import typing as t

import pytest
from wire import SEED_PATH

from receiver import create_app, off
from receiver.handlers import dispatch as dispatch_module

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


@pytest.fixture(autouse=True)
def _own_data_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test touches the user's default queue or store: XDG_DATA_HOME is a fresh directory,
    and RECEIVER_* variables of the shell running pytest are ignored."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg")))
    for key in list(os.environ):
        if key.startswith("RECEIVER_"):
            monkeypatch.delenv(key)


@pytest.fixture(autouse=True)
def _stop_pools() -> t.Iterator[None]:
    """Worker threads started by apps made during a test end with it."""
    from receiver.jobs import worker

    before = set(worker._pools)
    yield
    for pool in set(worker._pools) - before:
        pool.stop(timeout=10)
        pool.queue.close()


@pytest.fixture()
def app():
    """The receiver in ``sync`` mode: handlers run in the request, as in the first version."""
    return create_app({"RECEIVER_AUTH_HEADERS": {"Authentication": ["old-secret", SECRET]},
                       "RECEIVER_QUEUE": "sync"})


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    """Run `receiver ...` in-process against a fresh store; returns (exit code, stdout, stderr).
    Deliveries retry after 10 ms, not the default half second."""
    from click.testing import CliRunner

    from receiver.cli import main

    monkeypatch.setenv("RECEIVER_DB", str(tmp_path / "r.db"))
    monkeypatch.setenv("RECEIVER_SEND_BACKOFF", "0.01")
    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None) -> tuple[int, str, str]:
        result = runner.invoke(main, list(args), prog_name="receiver", catch_exceptions=False,
                               input=input)
        return result.exit_code, result.stdout, result.stderr

    return run
