"""RECEIVER_LOG_RETENTION for the receiver's jobs: finished jobs past it are forgotten, with
their events, in both engines; queued and running jobs never are; the setting is checked.

Jobs are made old by moving their timestamps into the past, in the engine itself: no test
waits for time to pass.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
import typing as t

import pytest
from flask import Flask
from servers import redis_server

from receiver.handlers.runner import make_pool
from receiver.jobs import EventRecord, Queue, open_queue
from receiver.jobs import worker as worker_module
from receiver.jobs.worker import Pool
from receiver.web.settings import ConfigError

DAY = 86400.0


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def queue(request: pytest.FixtureRequest, tmp_path: t.Any) -> t.Iterator[Queue]:
    if request.param == "sqlite":
        q = open_queue(f"sqlite:///{tmp_path / 'queue.db'}")
    else:
        q = open_queue(request.getfixturevalue("redis_url"))
        q._client().flushdb()  # type: ignore[attr-defined]
    yield q
    q.close()


def record(event_id: str) -> EventRecord:
    return EventRecord(event_id, "pushImage", "prod/api", ("v1",), f'{{"id": "{event_id}"}}')


def age(queue: Queue, job_id: int, seconds: float) -> None:
    """Move every timestamp of job *job_id*, and of its event, *seconds* into the past."""
    if hasattr(queue, "path"):  # SQLite
        with sqlite3.connect(queue.path) as conn:
            conn.execute(
                "UPDATE jobs SET created_at = created_at - ?1, updated_at = updated_at - ?1, "
                "run_at = run_at - ?1 WHERE job_id = ?2", (seconds, job_id))
            conn.execute(
                "UPDATE events SET received_at = received_at - ?1 WHERE event_id = "
                "(SELECT event_id FROM jobs WHERE job_id = ?2)", (seconds, job_id))
        conn.close()
        return
    client, p = queue._client(), queue.prefix  # type: ignore[attr-defined]
    key = f"{p}job:{job_id}"
    for field in ("created_at", "updated_at", "run_at"):
        client.hset(key, field, f"{float(client.hget(key, field)) - seconds:.3f}")
    for index in ("succeeded", "dead_at"):  # the indexes scored by time
        if client.zscore(p + index, job_id) is not None:
            client.zincrby(p + index, -seconds, job_id)
    seen = f"{p}seen:{client.hget(key, 'event_id')}"  # the dedup id: milliseconds
    if client.get(seen) is not None:
        client.set(seen, int(client.get(seen)) - round(seconds * 1000), keepttl=True)


def finished(queue: Queue, event_id: str, outcome: str) -> int:
    """The id of a job of a new event, run to *outcome*: succeeded, dead, or still running."""
    [job_id] = queue.submit(record(event_id), ["m.a"], window=DAY).job_ids
    claim = queue.claim("w1", lease=300)
    assert claim is not None and claim.job_id == job_id
    if outcome == "succeeded":
        assert queue.succeed(claim)
    elif outcome == "dead":
        assert queue.bury(claim, "RuntimeError: boom")
    return job_id


def event_kept(queue: Queue, job_id: int, event_id: str) -> bool:
    """Whether the queue still holds the body of event *event_id* (kept with job *job_id*)."""
    if hasattr(queue, "path"):
        with sqlite3.connect(queue.path) as conn:
            found = conn.execute(
                "SELECT 1 FROM events WHERE event_id = ?", (event_id,)).fetchone()
        conn.close()
        return found is not None
    client, p = queue._client(), queue.prefix  # type: ignore[attr-defined]
    return bool(client.exists(f"{p}job:{job_id}"))


def pool_for(queue: Queue, **settings: t.Any) -> Pool:
    return make_pool(Flask("retention"), queue, settings)


def test_finished_jobs_past_the_retention_go_and_no_others(queue: Queue) -> None:
    """With a 2-day retention and a longer dedup window: dead and succeeded jobs finished
    3 days ago go; those finished a day ago stay; queued and running jobs stay however old;
    and an event whose job went is still a duplicate within the window."""
    pool = pool_for(queue, RECEIVER_LOG_RETENTION=2, RECEIVER_DEDUP_WINDOW=10 * DAY)
    old_dead = finished(queue, "e1", "dead")
    new_dead = finished(queue, "e2", "dead")
    old_ok = finished(queue, "e3", "succeeded")
    new_ok = finished(queue, "e4", "succeeded")
    old_running = finished(queue, "e5", "running")
    [old_queued] = queue.submit(record("e6"), ["m.a"], window=DAY).job_ids
    for job_id in (old_dead, old_ok, old_running, old_queued):
        age(queue, job_id, 3 * DAY)
    for job_id in (new_dead, new_ok):
        age(queue, job_id, 1 * DAY)

    assert pool.purge() == 2
    left = {job.job_id: job.status for job in queue.jobs(limit=100)}
    assert left == {new_dead: "dead", new_ok: "succeeded", old_running: "running",
                    old_queued: "queued"}
    assert queue.job(old_dead) is None and queue.job(old_ok) is None
    assert queue.submit(record("e1"), ["m.a"], window=10 * DAY).duplicate
    assert pool.purge() == 0


def test_the_events_of_forgotten_jobs_go_with_them(queue: Queue) -> None:
    """With the default one-day window, a dead job past the retention goes with its event's
    body, and the same event is new again; a dead job within it keeps its body."""
    pool = pool_for(queue, RECEIVER_LOG_RETENTION="2")
    old_dead = finished(queue, "e1", "dead")
    kept_dead = finished(queue, "e2", "dead")
    age(queue, old_dead, 3 * DAY)
    age(queue, kept_dead, 1.5 * DAY)

    assert pool.purge() == 1
    assert not event_kept(queue, old_dead, "e1")
    assert event_kept(queue, kept_dead, "e2")
    kept = queue.job(kept_dead)
    assert kept is not None and kept.body == '{"id": "e2"}'
    again = queue.submit(record("e1"), ["m.a"], window=DAY)
    assert not again.duplicate and len(again.job_ids) == 1


def test_a_dead_job_retried_is_kept_again(queue: Queue) -> None:
    """`receiver jobs retry` queues an old dead job again: it is no longer finished, so the
    retention leaves it alone."""
    pool = pool_for(queue, RECEIVER_LOG_RETENTION=2)
    job_id = finished(queue, "e1", "dead")
    age(queue, job_id, 3 * DAY)
    assert queue.requeue([job_id]) == [job_id]
    assert pool.purge() == 0
    job = queue.job(job_id)
    assert job is not None and job.status == "queued"


def test_redis_dates_dead_jobs_from_before_dead_at_by_their_last_update(
        redis_url: str) -> None:
    """A Redis queue written before dead jobs were indexed by time: the purge dates them by
    their last update, forgets the old one and keeps the recent one."""
    queue = open_queue(redis_url)
    client = queue._client()  # type: ignore[attr-defined]
    client.flushdb()
    try:
        old_dead = finished(queue, "e1", "dead")
        new_dead = finished(queue, "e2", "dead")
        age(queue, old_dead, 3 * DAY)
        client.delete(queue.prefix + "dead_at")  # type: ignore[attr-defined]
        assert pool_for(queue, RECEIVER_LOG_RETENTION=2).purge() == 1
        assert [job.job_id for job in queue.jobs()] == [new_dead]
    finally:
        queue.close()


@pytest.mark.parametrize("value", [0, -1, "0", "abc", "nan", 3651, True, [30]])
def test_a_bad_retention_is_a_config_error_naming_it(tmp_path: t.Any, value: t.Any) -> None:
    queue = open_queue(f"sqlite:///{tmp_path / 'queue.db'}")
    with pytest.raises(ConfigError, match=r"^RECEIVER_LOG_RETENTION must be a number above 0 "
                                          r"and at most 3650, got "):
        pool_for(queue, RECEIVER_LOG_RETENTION=value)


@pytest.mark.parametrize(("settings", "seconds"), [
    ({}, 30 * DAY),
    ({"RECEIVER_LOG_RETENTION": "7"}, 7 * DAY),
    ({"RECEIVER_LOG_RETENTION": 0.5}, DAY / 2),
    ({"RECEIVER_LOG_RETENTION": 3650}, 3650 * DAY),
])
def test_the_retention_is_days_and_30_by_default(tmp_path: t.Any, settings: dict[str, t.Any],
                                                 seconds: float) -> None:
    queue = open_queue(f"sqlite:///{tmp_path / 'queue.db'}")
    assert pool_for(queue, **settings).retention == seconds


def test_the_heartbeat_purges_with_the_retention(tmp_path: t.Any,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The periodic maintenance passes the window and the retention to the queue."""
    monkeypatch.setattr(worker_module, "PURGE_EVERY", 0.0)
    queue = open_queue(f"sqlite:///{tmp_path / 'queue.db'}")
    calls: list[tuple[float, float | None]] = []
    called = threading.Event()

    def purge(window: float, retention: float | None = None) -> int:
        calls.append((window, retention))
        called.set()
        return 0

    monkeypatch.setattr(queue, "purge", purge)
    pool = Pool(queue, lambda claim: None, threads=1, lease=0.03, window=5.0, retention=7.0)
    pool.start()
    try:
        assert called.wait(timeout=20), "the heartbeat never purged"
    finally:
        assert pool.stop(timeout=10)
    assert calls[0] == (5.0, 7.0)


def test_receiver_worker_refuses_a_bad_retention(tmp_path: t.Any) -> None:
    """`receiver worker` reads the setting as the servers do, and names it when it is wrong."""
    env = {**os.environ, "RECEIVER_HANDLERS": "json", "RECEIVER_LOG_RETENTION": "forever",
           "RECEIVER_QUEUE": f"sqlite:///{tmp_path / 'queue.db'}"}
    proc = subprocess.run([sys.executable, "-m", "receiver", "worker"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: configuration error: RECEIVER_LOG_RETENTION must be a number above 0 and at "
        "most 3650, got 'forever'")
