"""GET /metrics: Prometheus counts that add up across gunicorn's workers."""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import urllib.error
import urllib.request

import pytest
from servers import ROOT, gunicorn, post, wait_for

from receiver import create_app, on
from receiver.testing import make_body

SECRET = {"Authentication": "s3cret"}


def scrape(url: str, headers: dict[str, str] | None = None) -> dict[str, float]:
    """The samples of ``url/metrics``, by name and labels as written."""
    request = urllib.request.Request(url + "/metrics", headers=headers or SECRET)
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def deliver(url: str, n: int, prefix: str = "v") -> list[dict]:
    bodies = [make_body("pushImage", "prod/api", [f"{prefix}{i}"]) for i in range(n)]
    for body in bodies:
        status, _ = post(url + "/webhook", body, SECRET)
        assert status == 202
    return bodies


def worker_pids(log_path: os.PathLike) -> list[int]:
    text = pathlib.Path(log_path).read_text()
    return [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", text)]


@pytest.mark.parametrize("app", ["wsgi:app", "receiver:create_app()"])
def test_counts_add_up_across_two_workers(tmp_path, app):
    """Whichever worker a scrape lands on, it counts every worker's requests; also when the
    app is started as receiver:create_app() from another directory, with no config file.

    One delivery trickles its body, which keeps one (sync) worker busy reading it, so the
    other worker answers the rest: each worker has counted some, and every scrape must
    show them all.
    """
    env = {"RECEIVER_AUTH_HEADERS": json.dumps(SECRET)}
    with gunicorn(env, tmp_path, workers=2, app=app) as (url, _, _):
        body = json.dumps(make_body("pushImage", "prod/api", ["slow"])).encode()
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(b"POST /webhook HTTP/1.1\r\nHost: x\r\nAuthentication: s3cret\r\n"
                         b"Content-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body[:10])
            first = deliver(url, 12)[0]
            assert post(url + "/webhook", first, SECRET)[0] == 200  # the registry's retry
            post(url + "/webhook", make_body("pushImage", "prod/api", ["x"]), {})  # 401
            slow.sendall(body[10:])
            assert slow.recv(100).startswith(b"HTTP/1.1 202")
        for _ in range(6):  # each scrape is a new connection, taken by either worker
            samples = scrape(url)
            assert samples['receiver_requests_total{status="202"}'] == 13
            assert samples['receiver_requests_total{status="200"}'] == 1
            assert samples['receiver_requests_total{status="401"}'] == 1
            assert samples['receiver_events_total{action="pushImage",format="tcr"}'] == 13
            assert samples['receiver_duplicates_total{action="pushImage"}'] == 1


def test_counts_survive_a_worker_restart(tmp_path):
    """A worker that exits (killed, or recycled) leaves its counts behind."""
    env = {"RECEIVER_AUTH_HEADERS": json.dumps(SECRET)}
    with gunicorn(env, tmp_path, workers=1) as (url, log_path, _):
        deliver(url, 3)
        (first,) = worker_pids(log_path)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(worker_pids(log_path)) == 2, what="a new worker")
        wait_for(lambda: scrape(url), what="the new worker to answer")
        deliver(url, 2, prefix="w")
        samples = scrape(url)
        assert samples['receiver_requests_total{status="202"}'] == 5


def test_jobs_and_handler_runs(tmp_path):
    """Handler runs by handler and outcome, their durations, and the queue's dead jobs."""
    (tmp_path / "flaky.py").write_text(
        "from receiver import on\n"
        "@on('pushImage', tag='ok*')\n"
        "def works(event): pass\n"
        "@on('pushImage', tag='bad*')\n"
        "def fails(event): raise RuntimeError('no')\n"
    )
    env = {"RECEIVER_AUTH_HEADERS": json.dumps(SECRET), "RECEIVER_HANDLERS": "flaky",
           "RECEIVER_HANDLER_ATTEMPTS": "1"}
    with gunicorn(env, tmp_path, workers=2) as (url, _, _):
        deliver(url, 2, prefix="ok")
        deliver(url, 1, prefix="bad")
        samples = wait_for(lambda: (s := scrape(url)).get(
            'receiver_handler_duration_seconds_count{handler="flaky.fails",outcome="dead"}') == 1
            and s.get('receiver_handler_duration_seconds_count'
                      '{handler="flaky.works",outcome="succeeded"}') == 2
            and s, what="the three jobs to run")
        assert samples['receiver_handler_duration_seconds_bucket'
                       '{handler="flaky.works",le="+Inf",outcome="succeeded"}'] == 2
        assert samples['receiver_jobs{status="dead"}'] == 1
        assert samples['receiver_jobs{status="queued"}'] == 0
        assert samples["receiver_jobs_oldest_queued_age_seconds"] == 0
        assert samples["receiver_queue_up"] == 1


def test_metrics_need_the_webhooks_auth_or_their_own(tmp_path):
    app = create_app({"RECEIVER_AUTH_HEADERS": SECRET, "RECEIVER_QUEUE": "sync"}, env=False)
    client = app.test_client()
    resp = client.get("/metrics")
    assert resp.status_code == 401
    assert resp.json == {"error": "missing auth header 'Authentication'"}
    assert "s3cret" not in resp.text
    assert client.get("/metrics", headers=SECRET).status_code == 200

    app = create_app({"RECEIVER_AUTH_HEADERS": SECRET, "RECEIVER_QUEUE": "sync",
                      "RECEIVER_METRICS_AUTH_HEADERS": {"Authorization": "Bearer scrape"}},
                     env=False)
    client = app.test_client()
    assert client.get("/metrics", headers=SECRET).status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer scrape"}).status_code == 200

    app = create_app({"RECEIVER_AUTH_HEADERS": SECRET, "RECEIVER_QUEUE": "sync",
                      "RECEIVER_METRICS_AUTH_HEADERS": "{}"}, env=False)
    assert app.test_client().get("/metrics").status_code == 200


def test_metrics_false_turns_them_off(tmp_path):
    app = create_app({"RECEIVER_QUEUE": "sync", "RECEIVER_METRICS": "false"}, env=False)
    resp = app.test_client().get("/metrics")
    assert resp.status_code == 404


@pytest.mark.parametrize("setting, message", [
    ({"RECEIVER_METRICS": "maybe"}, "RECEIVER_METRICS must be true or false, got 'maybe'"),
    ({"RECEIVER_METRICS_AUTH_HEADERS": "[1]"},
     "RECEIVER_METRICS_AUTH_HEADERS must be a JSON object"),
])
def test_bad_metrics_settings(setting, message):
    from receiver import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        create_app({"RECEIVER_QUEUE": "sync", **setting}, env=False)


def test_sync_mode_counts_handler_runs():
    """In sync mode the handlers run in the request: counted as succeeded or failed."""
    seen = []

    @on("pushImage", tag="fine")
    def fine(event):
        seen.append(event)

    app = create_app({"RECEIVER_QUEUE": "sync"}, env=False)
    client = app.test_client()

    def count() -> float:
        samples = {}
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("receiver_handler_duration_seconds_count"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return sum(v for k, v in samples.items()
                   if k.endswith('<locals>.fine",outcome="succeeded"}'))

    before = count()
    resp = client.post("/webhook", json=make_body("pushImage", "prod/api", ["fine"]))
    assert resp.status_code == 200 and seen
    assert count() == before + 1


def test_wsgi_conf_directory_is_used(tmp_path):
    """Under the shipped gunicorn.conf.py the workers count into its directory."""
    env = {"RECEIVER_AUTH_HEADERS": json.dumps(SECRET)}
    with gunicorn(env, tmp_path, workers=2, args=["-c", str(ROOT / "gunicorn.conf.py")]) as (
            url, log_path, _):
        deliver(url, 4)
        assert scrape(url)['receiver_requests_total{status="202"}'] == 4
