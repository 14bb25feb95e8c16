"""Handlers as durable jobs, in process: queueing, dedup, retries, dead jobs, async handlers."""

from __future__ import annotations

import json
import threading

import pytest

from receiver import PushImage, create_app, on, signals
from receiver.schemas import event_id
from receiver.testing import capture_events, make_body, run_jobs
from servers import wait_for


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
            202, {"action": "pushImage", "event_id": event_id(body), "handlers": 1})
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
    assert again == (200, {"action": "pushImage", "event_id": event_id(body),
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
    assert post(sync, make_body())[1] == {"action": "pushImage", "handlers": 1}
    assert seen == ["pushImage", "pushImage"]


def test_a_handler_missing_in_the_worker_fails_the_job_with_a_clear_error(queued_app):
    """A job whose handler this process no longer has fails with a message saying so."""
    from receiver import off

    @on("pushImage")
    def gone(event):
        pass

    post(queued_app, make_body())
    off(gone)
    [job] = run_jobs(queued_app, limit=1)
    assert "is not registered in this process" in job.error


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


def test_an_unwritable_sqlite_queue_stops_start_up(tmp_path):
    """An SQLite queue that cannot be created is a configuration error at start."""
    from receiver import ConfigError

    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ConfigError, match="RECEIVER_QUEUE: the queue sqlite:///.* cannot be opened"):
        create_app({"RECEIVER_QUEUE": f"sqlite:///{blocked / 'q.db'}"})


def test_sync_mode_has_no_queue():
    """RECEIVER_QUEUE=sync: /readyz says so and run_jobs finds nothing to run."""
    app = create_app({"RECEIVER_QUEUE": "sync"})
    assert app.test_client().get("/readyz").get_json() == {"status": "ready", "queue": "sync"}
    assert run_jobs(app) == []
