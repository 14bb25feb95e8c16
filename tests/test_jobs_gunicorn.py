"""Durable jobs under real gunicorn: crashes, restarts, shutdown, several servers, Redis down."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import urllib.request

import pytest
from servers import free_port, gunicorn, post, redis_server, wait_for

from receiver.testing import make_body

HANDLERS = textwrap.dedent('''
    import json, os, time
    from receiver import on

    def note(what, event):
        with open(os.environ["RECORD_FILE"], "a") as f:
            f.write(json.dumps({"what": what, "pid": os.getpid(), "id": event.id,
                                "repo": event.repository.full_name}) + "\\n")

    @on("pushImage")
    def work(event):
        note("start", event)
        if event.repository.name.startswith("slow"):
            time.sleep(float(os.environ.get("SLOW_SECONDS", "1.5")))
        note("done", event)
''')


def records(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def cli(*args: str, env: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "receiver", *args], env=full,
                          capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def queue_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'queue.db'}"
    url = request.getfixturevalue("redis_url")
    from receiver.jobs import open_queue

    q = open_queue(url)
    q._client().flushdb()  # type: ignore[attr-defined]
    q.close()
    return url


def handler_env(tmp_path: pathlib.Path, queue: str, **more: str) -> dict[str, str]:
    (tmp_path / "job_handlers.py").write_text(HANDLERS)
    return {"RECEIVER_HANDLERS": "job_handlers", "RECORD_FILE": str(tmp_path / "record.jsonl"),
            "RECEIVER_QUEUE": queue, **more}


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-load", "preload"])
def test_a_job_whose_worker_is_killed_runs_again_after_the_lease(tmp_path, queue_url, preload):
    """kill -9 of the gunicorn worker running a slow handler: gunicorn starts a new worker,
    which takes the job over once the lease has expired and runs it to completion."""
    env = handler_env(tmp_path, queue_url, RECEIVER_LEASE="1")
    record = tmp_path / "record.jsonl"
    args = ["--preload"] if preload else []
    with gunicorn(env, tmp_path, args=args) as (url, log, proc):
        status, answer = post(url + "/webhook", make_body("pushImage", "ns/slow-app", ["v1"]))
        assert status == 202
        [start] = wait_for(lambda: [r for r in records(record) if r["what"] == "start"])
        os.kill(start["pid"], signal.SIGKILL)
        done = wait_for(lambda: [r for r in records(record) if r["what"] == "done"],
                        what="the job to run again after the lease")
        listed = cli("jobs", "--json", env={"RECEIVER_QUEUE": queue_url})
    starts = [r["pid"] for r in records(record) if r["what"] == "start"]
    assert len(starts) == 2 and starts[0] == start["pid"] != starts[1]
    assert [r["pid"] for r in done] == [starts[1]]
    [job] = json.loads(listed.stdout)
    assert (job["status"], job["attempts"]) == ("succeeded", 2)
    assert "lost" in job["error"]


def test_two_servers_sharing_redis_run_a_thrice_sent_body_once(tmp_path, redis_url):
    """The same body three times across two servers on one Redis: one 202, two duplicates,
    and the handler runs once."""
    from receiver.jobs import open_queue

    open_queue(redis_url)._client().flushdb()  # type: ignore[attr-defined]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    record = tmp_path / "record.jsonl"
    env_one = {**handler_env(one, redis_url), "RECORD_FILE": str(record)}
    env_two = {**handler_env(two, redis_url), "RECORD_FILE": str(record)}
    body = json.dumps(make_body("pushImage", "ns/app", ["v1"])).encode()
    with gunicorn(env_one, one) as (url_one, _, _), gunicorn(env_two, two) as (url_two, _, _):
        statuses = [post(url + "/webhook", body)[0] for url in (url_one, url_two, url_one)]
        wait_for(lambda: any(r["what"] == "done" for r in records(record)))
        # A later event through the other server shows both have run their queues dry.
        post(url_two + "/webhook", make_body("pushImage", "ns/later", ["v1"]))
        wait_for(lambda: any(r["repo"] == "ns/later" for r in records(record)))
    assert statuses == [202, 200, 200]
    assert [r["repo"] for r in records(record) if r["what"] == "start"].count("ns/app") == 1


def test_with_no_worker_threads_jobs_wait_for_receiver_worker(tmp_path, queue_url):
    """RECEIVER_WORKERS=0: the server only queues; `receiver worker` runs the jobs and stops
    cleanly on SIGTERM."""
    env = handler_env(tmp_path, queue_url, RECEIVER_WORKERS="0")
    record = tmp_path / "record.jsonl"
    with gunicorn(env, tmp_path) as (url, log, _):
        for n in range(3):
            assert post(url + "/webhook", make_body("pushImage", f"ns/app{n}", ["v1"]))[0] == 202
        queued = cli("jobs", "--status", "queued", "--json", env={"RECEIVER_QUEUE": queue_url})
    assert len(json.loads(queued.stdout)) == 3 and not record.exists()

    worker_env = {**os.environ, **env, "PYTHONPATH": str(tmp_path)}
    worker_env.pop("RECEIVER_WORKERS")
    with subprocess.Popen([sys.executable, "-m", "receiver", "worker", "--threads", "2"],
                          env=worker_env, stderr=subprocess.PIPE, text=True) as worker:
        wait_for(lambda: sum(r["what"] == "done" for r in records(record)) == 3)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "worker: stopped" in err
    done = cli("jobs", "--status", "succeeded", "--json", env={"RECEIVER_QUEUE": queue_url})
    assert len(json.loads(done.stdout)) == 3


def test_sigterm_finishes_the_running_job_and_leaves_the_rest_queued(tmp_path):
    """On SIGTERM a server lets its running job finish within the graceful timeout; the
    jobs not started stay queued, and the next start runs them."""
    queue = f"sqlite:///{tmp_path / 'queue.db'}"
    env = handler_env(tmp_path, queue, RECEIVER_WORKERS="1", SLOW_SECONDS="1")
    record = tmp_path / "record.jsonl"
    with gunicorn(env, tmp_path, args=["--graceful-timeout", "20"]) as (url, log, proc):
        for n in range(3):
            post(url + "/webhook", make_body("pushImage", f"ns/slow{n}", ["v1"]))
        wait_for(lambda: any(r["what"] == "start" for r in records(record)))
        proc.terminate()
        proc.wait(timeout=30)
    assert [r["what"] for r in records(record)] == ["start", "done"]
    statuses = sorted(j["status"] for j in json.loads(
        cli("jobs", "--json", env={"RECEIVER_QUEUE": queue}).stdout))
    assert statuses == ["queued", "queued", "succeeded"]
    with gunicorn(env, tmp_path) as (url, log, proc):
        wait_for(lambda: sum(r["what"] == "done" for r in records(record)) == 3)


def test_healthz_answers_while_a_handler_runs(tmp_path):
    """With one gunicorn worker busy running a slow handler, /healthz still answers, before
    the handler is done."""
    env = handler_env(tmp_path, f"sqlite:///{tmp_path / 'queue.db'}", SLOW_SECONDS="3")
    record = tmp_path / "record.jsonl"
    with gunicorn(env, tmp_path) as (url, log, proc):
        post(url + "/webhook", make_body("pushImage", "ns/slow", ["v1"]))
        wait_for(lambda: records(record))
        with urllib.request.urlopen(url + "/healthz", timeout=10) as resp:
            assert resp.status == 200
        assert [r["what"] for r in records(record)] == ["start"]


def test_redis_down_is_503_on_the_webhook_and_readyz(tmp_path):
    """A Redis queue that cannot be reached: 503 (the registry retries) and a reason on
    /readyz, never a 500."""
    down = f"redis://127.0.0.1:{free_port()}/0"
    env = handler_env(tmp_path, down)
    with gunicorn(env, tmp_path) as (url, log, proc):
        status, answer = post(url + "/webhook", make_body())
        try:
            urllib.request.urlopen(url + "/readyz", timeout=10)
        except urllib.error.HTTPError as err:
            ready = (err.code, json.loads(err.read()))
    assert (status, answer) == (503, {"error": "the queue is unavailable; retry later"})
    assert ready[0] == 503 and ready[1]["status"] == "unavailable"
    assert ready[1]["error"] == "Error 111 connecting to the server. Connection refused."


def test_jobs_cli_shows_and_retries_dead_jobs(tmp_path, queue_url):
    """`receiver jobs show` prints a dead job's error and body; `jobs retry` runs it again."""
    (tmp_path / "job_handlers.py").write_text(textwrap.dedent('''
        import os
        from receiver import on

        @on("pushImage")
        def deploy(event):
            if not os.path.exists(os.environ["FIXED"]):
                raise RuntimeError("rollout of " + event.repository.full_name + " failed")
            open(os.environ["FIXED"] + ".ran", "w").close()
    '''))
    fixed = tmp_path / "fixed"
    env = {"RECEIVER_HANDLERS": "job_handlers", "RECEIVER_QUEUE": queue_url, "FIXED": str(fixed),
           "RECEIVER_HANDLER_ATTEMPTS": "2", "RECEIVER_HANDLER_BACKOFF": "0.05"}
    qenv = {"RECEIVER_QUEUE": queue_url}
    with gunicorn(env, tmp_path) as (url, log, proc):
        post(url + "/webhook", make_body("pushImage", "prod/api", ["v1"]))
        wait_for(lambda: json.loads(cli("jobs", "--status", "dead", "--json", env=qenv).stdout))
        shown = cli("jobs", "show", "1", env=qenv)
        shown_json = json.loads(cli("jobs", "show", "1", "--json", env=qenv).stdout)
        fixed.write_text("")
        retried = cli("jobs", "retry", "1", env=qenv)
        wait_for(lambda: pathlib.Path(str(fixed) + ".ran").exists())
        not_dead = cli("jobs", "retry", "1", env=qenv)
        missing = cli("jobs", "show", "99", env=qenv)
    assert shown.returncode == 0
    assert "status:      dead" in shown.stdout
    assert "error:       RuntimeError: rollout of prod/api failed" in shown.stdout
    assert shown_json["body"]["event_data"]["repository"]["repo_full_name"] == "prod/api"
    assert (retried.returncode, retried.stdout) == (0, "job 1 queued again\n")
    assert not_dead.returncode == 1 and "not dead" in not_dead.stderr
    assert (missing.returncode, missing.stderr) == (2, "error: no job 99\n")


def test_worker_on_a_password_redis_and_a_busy_server_leaves_jobs_to_it(tmp_path):
    """A `receiver worker` on a Redis that needs a password runs jobs; a server whose only
    thread is busy does not keep a new job to itself, so the idle worker runs it at once."""
    with redis_server(tmp_path, password="hunter2") as url:
        env = handler_env(tmp_path, url, RECEIVER_WORKERS="1", SLOW_SECONDS="4")
        record = tmp_path / "record.jsonl"
        worker_env = {**os.environ, **env, "PYTHONPATH": str(tmp_path)}
        worker_env.pop("RECEIVER_WORKERS")
        with gunicorn(env, tmp_path) as (server, log, _):
            post(server + "/webhook", make_body("pushImage", "ns/slow", ["v1"]))
            wait_for(lambda: records(record))  # the server's thread is busy now
            with subprocess.Popen([sys.executable, "-m", "receiver", "worker"], env=worker_env,
                                  stderr=subprocess.PIPE, text=True) as worker:
                post(server + "/webhook", make_body("pushImage", "ns/quick", ["v1"]))
                quick = wait_for(lambda: [r for r in records(record)
                                          if r["repo"] == "ns/quick" and r["what"] == "done"])
                slow_done = [r for r in records(record) if r["repo"] == "ns/slow" and r["what"] == "done"]
                worker.send_signal(signal.SIGTERM)
                _, err = worker.communicate(timeout=30)
    assert slow_done == []  # the quick job did not wait behind the slow one
    assert quick[0]["pid"] == worker.pid
    assert worker.returncode == 0 and "hunter2" not in err


def test_jobs_cli_mistakes_and_choices(tmp_path):
    """The subcommands use the group's --queue over RECEIVER_QUEUE; --event takes the short
    id the table shows; a queue file that does not exist and a worker without handlers are
    refused with one line."""
    from receiver.jobs import EventRecord, open_queue

    path = tmp_path / "q.db"
    queue = open_queue(f"sqlite:///{path}")
    queue.submit(EventRecord("ab" * 16, "pushImage", "ns/app", ("v1",), "{}"), ["m.f"], 60)
    elsewhere = {"RECEIVER_QUEUE": f"sqlite:///{tmp_path / 'other.db'}"}
    shown = cli("jobs", "--queue", f"sqlite:///{path}", "show", "1", env=elsewhere)
    assert shown.returncode == 0 and "handler:     m.f" in shown.stdout
    short = cli("jobs", "--queue", f"sqlite:///{path}", "--event", "abababababab", "--json")
    assert [j["job_id"] for j in json.loads(short.stdout)] == [1]
    missing = cli("jobs", env=elsewhere)
    assert missing.returncode == 2 and missing.stderr.startswith("error: no queue at ")
    assert not (tmp_path / "other.db").exists()
    worker = cli("worker", env={"RECEIVER_QUEUE": f"sqlite:///{path}", "RECEIVER_HANDLERS": ""})
    assert worker.returncode == 2 and "RECEIVER_HANDLERS is not set" in worker.stderr
    handler_env(tmp_path, "unused")  # writes job_handlers.py
    typo = cli("worker", env={**elsewhere, "RECEIVER_HANDLERS": "job_handlers",
                              "PYTHONPATH": str(tmp_path)})
    assert typo.returncode == 2 and typo.stderr.startswith("error: no queue at ")
    assert not (tmp_path / "other.db").exists()


def test_receiver_worker_lines_are_json_with_the_json_log_format(tmp_path):
    """RECEIVER_LOG_FORMAT=json: `receiver worker`'s own lines (start, stop) are JSON too,
    like every other line it writes."""
    import threading

    from receiver.jobs import open_queue

    env = {**os.environ, **handler_env(tmp_path, f"sqlite:///{tmp_path / 'q.db'}"),
           "RECEIVER_LOG_FORMAT": "json", "PYTHONPATH": str(tmp_path)}
    open_queue(env["RECEIVER_QUEUE"]).check()  # the queue a server would have made
    lines: list[str] = []
    with subprocess.Popen([sys.executable, "-m", "receiver", "worker"], env=env,
                          stderr=subprocess.PIPE, text=True) as worker:
        reader = threading.Thread(target=lambda: lines.extend(worker.stderr or ()))
        reader.start()
        try:
            wait_for(lambda: any("Ctrl-C to stop" in line for line in lines),
                     what="the worker's start line")
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
            reader.join(timeout=30)
    assert worker.returncode == 0, lines
    messages = [json.loads(line)["message"] for line in lines]
    assert any(m.startswith("worker: 2 thread(s) on sqlite:///") for m in messages), messages
    assert messages[-2:] == ["worker: stopping; waiting for the running jobs", "worker: stopped"]
