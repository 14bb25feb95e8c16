"""Handlers as durable jobs, in process: queueing, dedup, retries, dead jobs, async handlers."""

from __future__ import annotations

import json
import threading
import time

import pytest
from servers import wait_for

from receiver import PushImage, create_app, on, signals
from receiver.core.schemas import event_id
from receiver.testing import capture_events, make_body, run_jobs


@pytest.fixture()
def queued_app(tmp_path):
    """An app with an SQLite queue in a temporary file and no worker threads."""
    return create_app({"RECEIVER_QUEUE": f"sqlite:///{tmp_path / 'q.db'}", "RECEIVER_WORKERS": 0,
                       "RECEIVER_HANDLER_BACKOFF": 0, "RECEIVER_HANDLER_ATTEMPTS": 3})


def post(app, body):
    resp = app.test_client().post("/webhook", json=body)
    return resp.status_code, resp.get_json()


def test_event_is_queued_and_answered_202_before_any_handler_runs(queued_app):
    """The answer comes before the handler runs; run_jobs then runs it with the same event."""
    seen = []
    on("pushImage")(seen.append)
    body = make_body("pushImage", "prod/api", ["v1"])
    with capture_events(queued_app) as received:
        assert post(queued_app, body) == (
            202, {"action": "pushImage", "format": "tcr", "event_id": event_id(body), "handlers": 1})
    assert seen == [] and [e.id for e in received] == [event_id(body)]
    [job] = run_jobs(queued_app)
    assert (job.status, job.attempts, job.handler) == ("succeeded", 1, "list.append")
    assert [e.tags for e in seen] == [("v1",)] and seen[0].id == event_id(body)


def test_duplicate_is_answered_200_and_signalled(queued_app):
    """The same body again within the window: 200 duplicate, no job, event_duplicate sent."""
    on("pushImage")(lambda e: None)
    body = make_body()
    dups = []
    with signals.event_duplicate.connected_to(lambda s, event, **kw: dups.append(event.id)):
        first = post(queued_app, body)
        again = post(queued_app, body)
    assert first[0] == 202
    assert again == (200, {"action": "pushImage", "format": "tcr", "event_id": event_id(body),
                           "duplicate": True, "handlers": 0})
    assert dups == [event_id(body)]
    assert len(run_jobs(queued_app)) == 1


def test_event_id_is_stable_and_content_based():
    """The same content gives the same id whatever its spacing or key order; other content
    gives another id."""
    body = make_body(digest="sha256:" + "a" * 64)
    spaced = json.loads(json.dumps(body, indent=4, sort_keys=True))
    assert event_id(body) == event_id(spaced)
    other = json.loads(json.dumps(body))
    other["occur_at"] += 1
    assert event_id(other) != event_id(body)
    assert len(event_id(body)) == 32


def test_only_matching_handlers_get_jobs(queued_app):
    """A job per handler whose filters match, narrowed to the matching tags as in sync mode."""
    got = {}
    on("pushImage", tag="v*")(lambda e: got.setdefault("v", e.tags))
    on("pushImage", namespace="other")(lambda e: got.setdefault("other", e.tags))
    status, answer = post(queued_app, make_body("pushImage", "prod/api", ["v1", "latest"]))
    assert (status, answer["handlers"]) == (202, 1)
    run_jobs(queued_app)
    assert got == {"v": ("v1",)}


def test_failing_twice_then_succeeding_runs_three_times_and_the_sibling_once(queued_app):
    """A failing job is retried alone: it runs 3 times and succeeds; its sibling ran once."""
    runs = {"flaky": 0, "sibling": 0}
    failures = []

    @on("pushImage")
    def flaky(event):
        runs["flaky"] += 1
        if runs["flaky"] < 3:
            raise RuntimeError(f"try {runs['flaky']}")

    @on("pushImage")
    def sibling(event):
        runs["sibling"] += 1

    def record(sender, handler, event, exception, attempt, final, **extra):
        failures.append((handler.__name__, attempt, final, str(exception)))

    with signals.handler_failed.connected_to(record):
        post(queued_app, make_body())
        jobs = run_jobs(queued_app)
    assert runs == {"flaky": 3, "sibling": 1}
    assert failures == [("flaky", 1, False, "try 1"), ("flaky", 2, False, "try 2")]
    final = {j.handler.rsplit(".", 1)[-1]: j for j in jobs}
    assert (final["flaky"].status, final["flaky"].attempts) == ("succeeded", 3)
    assert final["flaky"].error == "RuntimeError: try 2"  # the last error is kept
    assert (final["sibling"].status, final["sibling"].attempts) == ("succeeded", 1)


def test_always_failing_ends_dead_and_retry_runs_it_again(queued_app):
    """After the last attempt the job is dead, with the error; requeue runs it again."""
    calls = []
    finals = []

    @on("pushImage")
    def broken(event):
        calls.append(1)
        raise ValueError("no cluster")

    with signals.handler_failed.connected_to(
            lambda s, final, **kw: finals.append(final)):
        post(queued_app, make_body())
        [job] = run_jobs(queued_app)
    queue = queued_app.extensions["receiver"].queue
    assert (job.status, job.attempts, job.error) == ("dead", 3, "ValueError: no cluster")
    assert finals == [False, False, True] and len(calls) == 3
    assert queue.requeue([job.job_id]) == [job.job_id]
    run_jobs(queued_app)
    assert len(calls) == 6


@pytest.mark.parametrize("exc", [SystemExit(1), KeyboardInterrupt()], ids=["exit", "interrupt"])
def test_system_exit_in_a_handler_is_a_job_failure(queued_app, exc):
    """sys.exit() or KeyboardInterrupt in a handler fails that job only."""
    ran = []

    @on("pushImage")
    def quits(event):
        raise exc

    on("pushImage")(ran.append)
    post(queued_app, make_body())
    jobs = {j.handler.rsplit(".", 1)[-1]: j.status for j in run_jobs(queued_app)}
    assert jobs["quits"] == "dead" and len(ran) == 1


def test_async_handlers_are_awaited(queued_app):
    """An `async def` handler is awaited, in queue and sync mode, and on(EventClass) works."""
    seen = []

    @on(PushImage)
    async def handler(event):
        seen.append(event.action)

    post(queued_app, make_body())
    assert run_jobs(queued_app)[0].status == "succeeded"
    sync = create_app({"RECEIVER_QUEUE": "sync"})
    assert post(sync, make_body())[1] == {"action": "pushImage", "format": "tcr", "handlers": 1}
    assert seen == ["pushImage", "pushImage"]


def test_a_handler_missing_in_the_worker_leaves_the_job_for_another_process(queued_app):
    """A job whose handler this process does not have is not a failed run: it goes back to
    the queue, its attempt uncounted, with a message saying why, for a process that has
    the handler. Passed over more often than it may run (no process has the handler), it
    ends dead, as a job whose worker keeps dying does."""
    from receiver import off

    @on("pushImage")
    def gone(event):
        pass

    post(queued_app, make_body())
    off(gone)
    [job] = run_jobs(queued_app, limit=1)
    assert (job.status, job.attempts) == ("queued", 0)
    assert ".<locals>.gone is not registered in this process" in job.error
    [job] = run_jobs(queued_app)  # RECEIVER_HANDLER_BACKOFF=0: due again at once
    assert job.status == "dead"
    assert job.error == ("lost with its worker, or passed over by a worker without its "
                         "handler, 4 times; not run again")


def test_worker_threads_run_jobs_without_help(tmp_path):
    """With RECEIVER_WORKERS threads the app runs its jobs by itself."""
    done = threading.Event()
    on("pushImage")(lambda e: done.set())
    app = create_app({"RECEIVER_QUEUE": f"sqlite:///{tmp_path / 'q.db'}"})
    assert post(app, make_body())[0] == 202
    assert done.wait(10)
    queue = app.extensions["receiver"].queue
    wait_for(lambda: queue.jobs()[0].status == "succeeded")


def test_readyz_reports_an_unreachable_queue():
    """/readyz is 503 with the reason, and no address, when the queue cannot be reached; the
    webhook is 503 too, so the registry retries."""
    from servers import free_port

    app = create_app({"RECEIVER_QUEUE": f"redis://:pw@127.0.0.1:{free_port()}/0",
                      "RECEIVER_WORKERS": 0})
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    answer = resp.get_json()
    assert answer["status"] == "unavailable" and "refused" in answer["error"].lower()
    assert "127.0.0.1" not in answer["error"] and "pw" not in str(answer)
    on("pushImage")(lambda e: None)
    assert post(app, make_body()) == (503, {"error": "the queue is unavailable; retry later"})
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert "\nreceiver_queue_up 0.0\n" in metrics and "receiver_jobs{" not in metrics


def test_an_unwritable_sqlite_queue_stops_start_up(tmp_path):
    """An SQLite queue that cannot be created is a configuration error at start."""
    from receiver import ConfigError

    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ConfigError, match=r"RECEIVER_QUEUE: the queue sqlite:///.* cannot be opened"):
        create_app({"RECEIVER_QUEUE": f"sqlite:///{blocked / 'q.db'}"})


def test_sync_mode_has_no_queue():
    """RECEIVER_QUEUE=sync: /readyz says so and run_jobs finds nothing to run."""
    app = create_app({"RECEIVER_QUEUE": "sync"})
    assert app.test_client().get("/readyz").get_json() == {"status": "ready", "queue": "sync"}
    assert run_jobs(app) == []


def test_handlers_made_by_a_factory_get_their_own_names(queued_app):
    """Two handlers with one module.qualname (made by a factory) are told apart: the one
    whose filter matches is the one that runs."""
    ran = []

    def make(pattern):
        @on("pushImage", tag=pattern)
        def deploy(event):
            ran.append(pattern)
        return deploy

    make("v1*")
    make("v2*")
    assert post(queued_app, make_body("pushImage", "ns/app", ["v2.0"]))[1]["handlers"] == 1
    [job] = run_jobs(queued_app)
    assert job.handler.endswith("make.<locals>.deploy#2") and ran == ["v2*"]


def test_a_held_job_lost_before_it_ran_still_runs_once(tmp_path):
    """A job handed to a process that died before running it (its lease ran out) is taken
    over and run, even when only one attempt is allowed; a job that lost its worker more
    often than it may run is dead without running."""
    from receiver.jobs import EventRecord

    ran = []
    on("pushImage")(ran.append)
    app = create_app({"RECEIVER_QUEUE": f"sqlite:///{tmp_path / 'q.db'}", "RECEIVER_WORKERS": 0,
                      "RECEIVER_HANDLER_ATTEMPTS": 1, "RECEIVER_LEASE": 0.05})
    queue = app.extensions["receiver"].queue
    body = json.dumps(make_body())
    name = "list.append"
    queue.submit(EventRecord("e1", "pushImage", "public/nginx", ("v1",), body), [name], 60,
                 hold=("a-dead-process", 0.05))
    time.sleep(0.1)
    [job] = run_jobs(app)
    assert (job.status, job.attempts) == ("succeeded", 2) and len(ran) == 1

    queue.submit(EventRecord("e2", "pushImage", "public/nginx", ("v1",), body), [name], 60)
    for n in range(2):  # two workers die running it
        assert queue.claim(f"dying-{n}", lease=0.05) is not None
        time.sleep(0.1)
    [job] = run_jobs(app)
    assert job.status == "dead" and "lost with its worker, or passed over by a worker " \
        "without its handler, 2 times" in job.error
    assert len(ran) == 1


def test_worker_threads_survive_an_observer_that_exits(tmp_path):
    """A handler_failed receiver calling sys.exit() does not end the worker thread: later
    jobs still run."""
    import sys

    done = threading.Event()

    @on("pushImage", repository="bad")
    def fails(event):
        raise RuntimeError("no")

    @on("pushImage", repository="good")
    def works(event):
        done.set()

    def exits(sender, **extra):
        sys.exit(1)

    app = create_app({"RECEIVER_QUEUE": f"sqlite:///{tmp_path / 'q.db'}", "RECEIVER_WORKERS": 1,
                      "RECEIVER_HANDLER_ATTEMPTS": 1})
    with signals.handler_failed.connected_to(exits):
        post(app, make_body("pushImage", "ns/bad", ["v1"]))
        queue = app.extensions["receiver"].queue
        wait_for(lambda: queue.jobs(status="dead"))
        post(app, make_body("pushImage", "ns/good", ["v1"]))
        assert done.wait(10)


def test_many_quick_jobs_log_no_false_lease_losses(tmp_path, caplog):
    """Jobs that succeed between two heartbeats are not reported as lost leases."""
    import logging

    caplog.set_level(logging.WARNING, logger="receiver.jobs")
    on("pushImage")(lambda e: time.sleep(0.005))
    # A heartbeat every 0.5 s: long enough that a busy machine (the suite runs in two
    # processes) does not let a lease run out for real, short enough to beat during the run.
    app = create_app({"RECEIVER_QUEUE": f"sqlite:///{tmp_path / 'q.db'}", "RECEIVER_LEASE": 1.5})
    for n in range(60):
        post(app, make_body("pushImage", f"ns/app{n}", ["v1"]))
    queue = app.extensions["receiver"].queue
    wait_for(lambda: len(queue.jobs(status="succeeded", limit=100)) == 60)
    time.sleep(1.0)  # two more heartbeats, after every job has succeeded
    assert "lease lost" not in caplog.text


def test_a_handler_that_forks_does_not_start_workers_in_the_child(tmp_path):
    """The child of a handler's fork runs no worker threads of its own."""
    import os

    out = tmp_path / "child.txt"

    @on("pushImage")
    def forks(event):
        pid = os.fork()
        if pid == 0:
            time.sleep(0.3)
            me = threading.current_thread()  # the worker thread that forked
            names = [t.name for t in threading.enumerate() if t is not me]
            out.write_text(json.dumps(names))
            os._exit(0)
        os.waitpid(pid, 0)

    app = create_app({"RECEIVER_QUEUE": f"sqlite:///{tmp_path / 'q.db'}"})
    post(app, make_body())
    wait_for(out.exists)
    assert not any(name.startswith("receiver-") for name in json.loads(out.read_text()))


def test_a_queue_file_removed_under_the_server_is_not_ready(tmp_path):
    """rm -rf of the SQLite queue's directory while the server runs: /readyz says so and
    the webhook answers 503, rather than 202s for events written to a file that is gone."""
    import shutil

    app = create_app({"RECEIVER_QUEUE": f"sqlite:///{tmp_path / 'q' / 'q.db'}",
                      "RECEIVER_WORKERS": 0})
    on("pushImage")(lambda e: None)
    assert post(app, make_body(tags=["v1"]))[0] == 202
    assert app.test_client().get("/readyz").status_code == 200
    shutil.rmtree(tmp_path / "q")
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["error"] == ("the queue file was removed after this process opened "
                                        "it; restart the server to use the new one")
    # The webhook looks at the file at most once a second.
    wait_for(lambda: post(app, make_body(tags=["v2"]))[0] == 503, what="a 503")
