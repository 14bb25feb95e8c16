"""RECEIVER_LOG_FORMAT: the request line as text or as one JSON object per line."""

from __future__ import annotations

import json
import pathlib

import pytest
from servers import ROOT, gunicorn, post, wait_for

from receiver import ConfigError, create_app
from receiver.testing import make_body

SECRET = {"Authentication": "s3cret"}


def receiver_lines(log_path: pathlib.Path) -> list[str]:
    return [line for line in log_path.read_text().splitlines() if "receiver" in line]


def test_json_lines_carry_the_text_lines_fields(tmp_path):
    """Under gunicorn, each receiver line is one JSON object; a request line has the same
    fields as the text line: event id, action, format, repository, tags, status, handlers,
    duration and the client's address. The secret is in none of them."""
    env = {"RECEIVER_AUTH_HEADERS": json.dumps(SECRET), "RECEIVER_LOG_FORMAT": "json",
           "RECEIVER_QUEUE": "sync"}
    with gunicorn(env, tmp_path) as (url, log_path, _):
        assert post(url + "/webhook", make_body("pushImage", "prod/api", ["v1", "v2"]),
                    SECRET)[0] == 200
        assert post(url + "/webhook", make_body("pushImage", "prod/api", ["v1"]),
                    {"Authentication": "wrong"})[0] == 401
        lines = wait_for(lambda: len(found := [ln for ln in receiver_lines(log_path)
                                               if '"status"' in ln]) == 2 and found)
    accepted, rejected = (json.loads(line) for line in lines)
    assert accepted["level"] == "INFO" and accepted["logger"] == "receiver"
    assert accepted["time"].startswith("20")
    assert {k: accepted[k] for k in ("action", "format", "repository", "tags", "status",
                                     "handlers", "client")} == {
        "action": "pushImage", "format": "tcr", "repository": "prod/api",
        "tags": ["v1", "v2"], "status": 200, "handlers": 0, "client": "127.0.0.1"}
    assert len(accepted["event_id"]) == 32 and accepted["duration_ms"] >= 0
    assert accepted["message"].startswith("pushImage prod/api tags=v1,v2 format=tcr status=200")
    assert rejected["status"] == 401 and rejected["client"] == "127.0.0.1"
    assert rejected["reason"] == "wrong value for auth header 'Authentication'"
    assert "s3cret" not in log_path.read_text() and "wrong" not in rejected["message"][:8]


def test_shipped_config_makes_every_line_json(tmp_path):
    """With the shipped gunicorn.conf.py, gunicorn's own lines are JSON too."""
    env = {"RECEIVER_AUTH_HEADERS": json.dumps(SECRET), "RECEIVER_LOG_FORMAT": "json"}
    with gunicorn(env, tmp_path, workers=2,
                  args=["-c", str(ROOT / "gunicorn.conf.py")]) as (url, log_path, _):
        assert post(url + "/webhook", make_body("pushImage", "prod/api", ["v1"]), SECRET)[0] \
            == 202
        wait_for(lambda: '"status": 202' in log_path.read_text())
    lines = log_path.read_text().splitlines()
    assert len(lines) >= 5  # gunicorn's start, two workers, the request, the stop
    for line in lines:
        assert isinstance(json.loads(line), dict), line


def test_bad_log_format_is_a_config_error():
    with pytest.raises(ConfigError, match="RECEIVER_LOG_FORMAT must be text or json, got 'xml'"):
        create_app({"RECEIVER_QUEUE": "sync", "RECEIVER_LOG_FORMAT": "xml"}, env=False)


def test_proxy_hops_log_the_address_the_proxy_passes(caplog):
    """Behind RECEIVER_PROXY_HOPS proxies, the request line names the client they saw."""
    import logging

    caplog.set_level(logging.INFO, logger="receiver")
    app = create_app({"RECEIVER_QUEUE": "sync", "RECEIVER_PROXY_HOPS": 1}, env=False)
    app.test_client().post("/webhook", json=make_body("pushImage", "prod/api", ["v1"]),
                           headers={"X-Forwarded-For": "203.0.113.7"})
    lines = [r.getMessage() for r in caplog.records if "status=200" in r.getMessage()]
    assert lines and lines[0].endswith("client=203.0.113.7")

    app = create_app({"RECEIVER_QUEUE": "sync"}, env=False)
    caplog.clear()
    app.test_client().post("/webhook", json=make_body("pushImage", "prod/api", ["v2"]),
                           headers={"X-Forwarded-For": "203.0.113.7"})
    lines = [r.getMessage() for r in caplog.records if "status=200" in r.getMessage()]
    assert lines and lines[0].endswith("client=127.0.0.1")  # not trusted without hops
