"""create_app() configuration and the Receiver extension in an existing Flask app."""

from __future__ import annotations

import json

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder, run_wsgi_app

from receiver import ConfigError, Receiver, create_app
from receiver.core.schemas import event_id
from receiver.testing import capture_events, make_body, run_jobs


def test_settings_come_from_the_environment(monkeypatch):
    """RECEIVER_PATH, RECEIVER_AUTH_HEADERS and RECEIVER_MAX_BODY are read from the env."""
    monkeypatch.setenv("RECEIVER_PATH", "/hooks/tcr")
    monkeypatch.setenv("RECEIVER_AUTH_HEADERS", '{"X-Token": ["a", "b"]}')
    monkeypatch.setenv("RECEIVER_MAX_BODY", "2048")
    client = create_app().test_client()
    body = json.dumps(make_body())
    assert client.post("/webhook", data=body, content_type="application/json").status_code == 404
    assert client.post("/hooks/tcr", data=body, content_type="application/json").status_code == 401
    assert client.post("/hooks/tcr", data=body, content_type="application/json",
                       headers={"X-Token": "b"}).status_code == 202
    assert client.post("/hooks/tcr", data=" " * 3000 + body, content_type="application/json",
                       headers={"X-Token": "b"}).status_code == 413


def test_config_mapping_overrides_the_environment(monkeypatch):
    """Keys passed to create_app() win over the environment."""
    monkeypatch.setenv("RECEIVER_PATH", "/from-env")
    client = create_app({"RECEIVER_PATH": "/from-config"}).test_client()
    assert client.post("/from-config").status_code == 200


def test_env_false_reads_the_config_alone(monkeypatch):
    """create_app(config, env=False): RECEIVER_* variables are not read, not even to be
    refused (the pytest plugin's receiver_app is made so)."""
    monkeypatch.setenv("RECEIVER_PATH", "/from-env")
    monkeypatch.setenv("RECEIVER_HANDLERS", "no_such_module_xyz")
    monkeypatch.setenv("RECEIVER_MAX_BODY", "lots")
    client = create_app({"RECEIVER_QUEUE": "sync"}, env=False).test_client()
    assert client.post("/from-env", json=make_body()).status_code == 404
    assert client.post("/webhook", json=make_body()).status_code == 200
    with pytest.raises(ConfigError, match="cannot import 'no_such_module_xyz'"):
        create_app({"RECEIVER_QUEUE": "sync"})


def test_handler_modules_are_imported(monkeypatch, tmp_path):
    """RECEIVER_HANDLERS imports each module, so their on() registrations take effect."""
    (tmp_path / "my_handlers_a.py").write_text(
        "from receiver import on\nseen = []\non('pushImage')(seen.append)\n")
    (tmp_path / "my_handlers_b.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = create_app({"RECEIVER_HANDLERS": "my_handlers_a, my_handlers_b",
                      "RECEIVER_WORKERS": 0})
    body = make_body()
    resp = app.test_client().post("/webhook", json=body)
    assert (resp.status_code, resp.get_json()) == (
        202, {"action": "pushImage", "format": "tcr", "event_id": event_id(body), "handlers": 1})
    import my_handlers_a  # type: ignore[import-not-found]

    assert my_handlers_a.seen == []  # queued, not yet run
    assert [job.status for job in run_jobs(app)] == ["succeeded"]
    assert len(my_handlers_a.seen) == 1 and my_handlers_a.seen[0].id == event_id(body)


@pytest.mark.parametrize("config, message", [
    ({"RECEIVER_HANDLERS": "no_such_module_xyz"}, "RECEIVER_HANDLERS: cannot import 'no_such_module_xyz'"),
    ({"RECEIVER_PATH": "webhook"}, "RECEIVER_PATH must start with '/'"),
    ({"RECEIVER_MAX_BODY": "lots"}, "RECEIVER_MAX_BODY must be a positive number of bytes"),
    ({"RECEIVER_MAX_BODY": 0}, "RECEIVER_MAX_BODY must be a positive number of bytes"),
    ({"RECEIVER_MAX_BODY": "\u00b2"}, "RECEIVER_MAX_BODY must be a positive number of bytes"),
    ({"RECEIVER_AUTH_HEADERS": '{"A": "topsecret"'}, "got text that is not JSON"),
    ({"RECEIVER_QUEUE": "postgres://db/x"}, "is not a queue URL: use sqlite:///PATH"),
    ({"RECEIVER_QUEUE": "redis://:topsecret@h/0x"}, "write a Redis queue as redis://"),
    ({"RECEIVER_QUEUE": "redis://:topsecret@[::1:6379/0"}, "redis://***@[::1:6379/0': Invalid IPv6 URL"),
    ({"RECEIVER_QUEUE": "redis://:topsecret@h:99999/0"}, "the port must be a number from 1 to 65535"),
    ({"RECEIVER_AUTH_HEADERS": '{"A": " topsecret"}'}, "begins or ends with white space"),
    ({"RECEIVER_QUEUE": "sqlite://q.db"}, "write an SQLite queue as sqlite:///PATH"),
    ({"RECEIVER_WORKERS": -1}, "RECEIVER_WORKERS must be a whole number at least 0 and at most 256, got -1"),
    ({"RECEIVER_WORKERS": "two"}, "RECEIVER_WORKERS must be a whole number at least 0"),
    ({"RECEIVER_HANDLER_ATTEMPTS": 0}, "RECEIVER_HANDLER_ATTEMPTS must be a whole number at least 1"),
    ({"RECEIVER_HANDLER_BACKOFF": "NaN"}, "RECEIVER_HANDLER_BACKOFF must be a number at least 0"),
    ({"RECEIVER_LEASE": 0}, "RECEIVER_LEASE must be a number above 0"),
    ({"RECEIVER_DEDUP_WINDOW": -5}, "RECEIVER_DEDUP_WINDOW must be a number at least 0"),
    ({"RECEIVER_DEDUP_WINDOW": 1e306}, "RECEIVER_DEDUP_WINDOW must be a number at least 0 and at most 315360000"),
    ({"RECEIVER_LEASE": "1e20"}, "RECEIVER_LEASE must be a number above 0 and at most 86400"),
    ({"RECEIVER_QUEUE": "sqlite:////etc/hostname/q.db"}, "RECEIVER_QUEUE: the queue sqlite:////etc/hostname/q.db cannot be opened"),
])
def test_bad_settings_fail_at_start_with_the_setting_named(config, message):
    """A wrong setting stops start-up with a message naming it, and no secret."""
    with pytest.raises(ConfigError) as info:
        create_app(config)
    assert message in str(info.value)
    assert "topsecret" not in str(info.value)


def test_extension_mounts_in_an_existing_app():
    """Receiver(app, ...) adds the endpoint with its own path and auth to the user's app."""
    app = Flask("mine")

    @app.get("/")
    def index():
        return "mine"

    Receiver(app, path="/registry/events", auth_headers={"Authorization": "Bearer t"})
    client = app.test_client()
    assert client.get("/").get_data(as_text=True) == "mine"
    with capture_events(app) as events:
        assert client.post("/registry/events", json=make_body()).status_code == 401
        resp = client.post("/registry/events", json=make_body(),
                           headers={"Authorization": "Bearer t"})
    assert resp.status_code == 202
    assert [e.action for e in events] == ["pushImage"]


def test_one_extension_serves_several_apps():
    """init_app keeps state per app, so one Receiver object works with app factories."""
    ext = Receiver(path="/hook")
    first, second = Flask("one"), Flask("two")
    second.config["RECEIVER_AUTH_HEADERS"] = {"X-Key": "k"}
    ext.init_app(first)
    ext.init_app(second)
    assert first.test_client().post("/hook", json=make_body()).status_code == 202
    assert second.test_client().post("/hook", json=make_body()).status_code == 401
    assert not hasattr(ext, "app")


def test_wsgi_module_serves_the_app(monkeypatch):
    """wsgi.py exposes `app`, ready for gunicorn."""
    import importlib
    import sys

    sys.modules.pop("wsgi", None)
    wsgi = importlib.import_module("wsgi")
    assert wsgi.app.test_client().get("/healthz").status_code == 200


def test_log_level_setting(caplog):
    """RECEIVER_LOG_LEVEL=WARNING drops the per-request line; a bad level is named."""
    import logging

    caplog.set_level(logging.DEBUG)
    app = create_app({"RECEIVER_LOG_LEVEL": "warning"})
    try:
        app.test_client().post("/webhook", json=make_body("pushImage", "quiet/repo"))
        assert "quiet/repo" not in caplog.text
    finally:
        logging.getLogger("receiver").setLevel(logging.INFO)
    with pytest.raises(ConfigError, match="RECEIVER_LOG_LEVEL must be"):
        create_app({"RECEIVER_LOG_LEVEL": "loud"})


class _Trickle:
    """A WSGI input stream that hands the body over a few bytes per read, as some servers'
    streams do; *end* bytes in, it ends."""

    def __init__(self, data: bytes, step: int = 7, end: int | None = None) -> None:
        self.data, self.step, self.end, self.at = data, step, len(data) if end is None else end, 0

    def read(self, size: int = -1) -> bytes:
        size = self.step if size < 0 else min(size, self.step)
        chunk = self.data[self.at:min(self.at + size, self.end)]
        self.at += len(chunk)
        return chunk


def test_a_body_read_in_parts_is_whole_and_one_cut_short_is_refused():
    app = create_app({"RECEIVER_QUEUE": "sync", "RECEIVER_AUTH_HEADERS": {}}, env=False)
    body = json.dumps(make_body("pushImage", "prod/api", ["v1"])).encode()

    def post(stream: _Trickle) -> tuple[str, dict]:
        # As a WSGI server calls the app: its own input stream, and the body's length.
        environ = EnvironBuilder("/webhook", method="POST", content_type="application/json",
                                 data=body).get_environ()
        environ["wsgi.input"] = stream
        app_iter, status, _ = run_wsgi_app(app, environ)
        return status, json.loads(b"".join(app_iter))

    status, answer = post(_Trickle(body))
    assert status == "200 OK", answer
    assert answer["action"] == "pushImage"
    status, answer = post(_Trickle(body, end=30))
    assert status == "400 BAD REQUEST"
    assert answer == {"error": f"body could not be read (cut short: 30 of {len(body)} bytes)"}


def test_an_import_error_names_the_line_of_the_users_module(tmp_path, monkeypatch):
    """A handler module that fails inside the receiver's code (a malformed pattern) is
    reported at its own line, not at the receiver's frame that raised."""
    (tmp_path / "badpat_mod.py").write_text(
        "from receiver import on\non('pushImage', repository='/{a')(print)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        create_app({"RECEIVER_HANDLERS": "badpat_mod"})
    assert str(info.value).endswith(f"({tmp_path / 'badpat_mod.py'}, line 2)"), info.value
