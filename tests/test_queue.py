"""The queue engines' contract: every engine passes the same tests (SQLite and Redis)."""

from __future__ import annotations

import threading
import time

import pytest
from servers import redis_server

from receiver.jobs import EventRecord, Queue, QueueUnavailable, open_queue


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url




@pytest.fixture(params=["sqlite", "redis"])
def queue(request, tmp_path) -> Queue:
    if request.param == "sqlite":
        q = open_queue(f"sqlite:///{tmp_path / 'queue.db'}")
    else:
        url = request.getfixturevalue("redis_url")
        q = open_queue(url)
        q._client().flushdb()  # type: ignore[attr-defined]
    yield q
    q.close()


def record(event_id: str = "e1", tags: tuple[str, ...] = ("v1",)) -> EventRecord:
    return EventRecord(event_id, "pushImage", "prod/api", tags, '{"type": "pushImage"}')


def test_submit_queues_one_job_per_handler_and_refuses_duplicates(queue):
    """An event gets a job per handler; the same id within the window is a duplicate."""
    first = queue.submit(record(), ["m.a", "m.b"], window=60)
    assert not first.duplicate and len(first.job_ids) == 2
    again = queue.submit(record(), ["m.a", "m.b"], window=60)
    assert again.duplicate and again.job_ids == ()
    jobs = queue.jobs()
    assert [j.handler for j in jobs] == ["m.b", "m.a"]  # newest first
    assert {j.status for j in jobs} == {"queued"}
    assert jobs[0].to_json().keys() == {
        "job_id", "event_id", "action", "repository", "tags", "handler", "status",
        "attempts", "error", "created_at", "updated_at"}
    assert jobs[0].to_json()["tags"] == ["v1"] and jobs[0].repository == "prod/api"


def test_an_event_with_no_handler_is_still_remembered(queue):
    """An event for no handler queues nothing, yet its id still counts for dedup."""
    assert queue.submit(record("e0"), [], window=60).job_ids == ()
    assert queue.submit(record("e0"), [], window=60).duplicate


def test_the_same_id_after_the_window_is_new(queue):
    """Once the window has passed, the same id is queued again."""
    queue.submit(record(), ["m.a"], window=60)
    time.sleep(0.05)
    later = queue.submit(record(), ["m.a"], window=0.01)
    assert not later.duplicate and len(later.job_ids) == 1


def test_claim_succeed(queue):
    """A claimed job is running with one attempt; succeeding needs the lease's owner."""
    [job_id] = queue.submit(record(), ["m.a"], window=60).job_ids
    claim = queue.claim("w1", lease=30)
    assert claim is not None and claim.job_id == job_id and claim.attempts == 1
    assert claim.handler == "m.a" and claim.action == "pushImage"
    assert claim.body == '{"type": "pushImage"}'
    assert queue.claim("w2", lease=30) is None
    assert queue.job(job_id).status == "running"
    assert queue.succeed(claim)
    job = queue.job(job_id)
    assert job.status == "succeeded" and job.attempts == 1 and job.body == claim.body


def test_retry_later_then_dead(queue):
    """A failed run is queued again after its delay, keeping the error; bury makes it dead."""
    [job_id] = queue.submit(record(), ["m.a"], window=60).job_ids
    claim = queue.claim("w1", lease=30)
    assert queue.retry_later(claim, "ValueError: boom\nsecond line", delay=0.2)
    job = queue.job(job_id)
    assert (job.status, job.error) == ("queued", "ValueError: boom second line")
    assert queue.claim("w1", lease=30) is None  # not due yet
    time.sleep(0.25)
    claim = queue.claim("w1", lease=30)
    assert claim.attempts == 2
    assert queue.bury(claim, "ValueError: again")
    job = queue.job(job_id)
    assert (job.status, job.attempts, job.error) == ("dead", 2, "ValueError: again")
    assert [j.job_id for j in queue.jobs(status="dead")] == [job_id]


def test_pass_on_queues_again_without_counting_the_attempt(queue):
    """A job this process cannot run goes back to the queue after its delay, with the
    reason, and its attempt not counted; an owner that lost the lease cannot pass it on."""
    from servers import wait_for

    [job_id] = queue.submit(record(), ["m.a"], window=60).job_ids
    claim = queue.claim("w1", lease=30)
    assert claim.attempts == 1
    assert queue.pass_on(claim, "handler m.a is not registered in this process", delay=0.2)
    job = queue.job(job_id)
    assert (job.status, job.attempts, job.error) == (
        "queued", 0, "handler m.a is not registered in this process")
    assert queue.claim("w2", lease=30) is None  # not due yet
    again = wait_for(lambda: queue.claim("w2", lease=30), what="the job to be due again")
    assert (again.job_id, again.attempts, again.lost) == (job_id, 1, 1)  # a pass is "lost"
    assert not queue.pass_on(claim, "stale owner", delay=0)
    assert queue.job(job_id).status == "running"


def test_requeue_resets_dead_jobs(queue):
    """requeue() queues dead jobs again with attempts reset; other jobs are left alone."""
    ids = queue.submit(record(), ["m.a", "m.b"], window=60).job_ids
    claim = queue.claim("w1", lease=30)
    queue.bury(claim, "boom")
    assert queue.requeue([claim.job_id, 999]) == [claim.job_id]
    job = queue.job(claim.job_id)
    assert (job.status, job.attempts) == ("queued", 0)
    claim = queue.claim("w1", lease=30)
    queue.bury(claim, "boom")
    assert queue.requeue(None) == [claim.job_id]
    assert sorted(ids) == sorted(j.job_id for j in queue.jobs(status="queued"))


def test_expired_lease_is_taken_over_and_the_old_owner_cannot_finish(queue):
    """A job whose lease ran out is claimed again; its first owner can no longer finish it."""
    [job_id] = queue.submit(record(), ["m.a"], window=60).job_ids
    first = queue.claim("w1", lease=0.1)
    time.sleep(0.15)
    second = queue.claim("w2", lease=30)
    assert second is not None and second.job_id == job_id and second.attempts == 2
    assert "lost" in queue.job(job_id).error
    assert not queue.succeed(first)
    assert not queue.retry_later(first, "x", 0)
    assert queue.heartbeat([first, second], lease=30) == [first.job_id]
    assert queue.succeed(second)


def test_heartbeat_keeps_the_lease(queue):
    """A heartbeat extends a lease, so the job is not taken over."""
    queue.submit(record(), ["m.a"], window=60)
    claim = queue.claim("w1", lease=0.3)
    for _ in range(3):
        time.sleep(0.15)
        assert queue.heartbeat([claim], lease=0.3) == []
    assert queue.claim("w2", lease=30) is None


def test_filters(queue):
    """jobs() filters by status, event and handler, and honours the limit."""
    queue.submit(record("e1"), ["m.a", "m.b"], window=60)
    queue.submit(record("e2"), ["m.a"], window=60)
    assert len(queue.jobs(event_id="e1")) == 2
    assert len(queue.jobs(handler="m.a")) == 2
    assert len(queue.jobs(limit=1)) == 1
    assert queue.jobs(status="dead") == []
    assert queue.job(12345) is None


def test_purge_forgets_old_succeeded_jobs_and_ids(queue):
    """purge() drops succeeded jobs and dedup ids older than the window, and keeps the rest."""
    queue.submit(record("e1"), ["m.a", "m.b"], window=60)
    claim = queue.claim("w1", lease=30)
    queue.succeed(claim)
    time.sleep(0.05)
    assert queue.purge(window=0.01) == 1
    remaining = queue.jobs()
    assert [j.status for j in remaining] == ["queued"]


def test_concurrent_claims_never_hand_out_a_job_twice(queue):
    """Threads claiming at once get each job exactly once."""
    for n in range(20):
        queue.submit(record(f"e{n}"), ["m.a"], window=60)
    got: list[int] = []
    lock = threading.Lock()

    def take():
        while (claim := queue.claim(threading.current_thread().name, lease=30)) is not None:
            with lock:
                got.append(claim.job_id)
            queue.succeed(claim)

    threads = [threading.Thread(target=take) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(got) == sorted(set(got)) and len(got) == 20


def test_check_and_unreachable(tmp_path):
    """check() passes on a working queue and raises QueueUnavailable, naming it, otherwise."""
    ok = open_queue(f"sqlite:///{tmp_path / 'q.db'}")
    ok.check()
    blocked = tmp_path / "file"
    blocked.write_text("")
    bad = open_queue(f"sqlite:///{blocked / 'sub' / 'q.db'}")
    with pytest.raises(QueueUnavailable, match="cannot be opened"):
        bad.check()
    down = open_queue("redis://:hunter2@127.0.0.1:1/0")
    with pytest.raises(QueueUnavailable) as err:
        down.check()
    assert "hunter2" not in str(err.value)


def test_submit_can_hold_the_jobs_for_this_process(queue):
    """With hold, the jobs start claimed by the owner (attempt 1); another worker cannot take
    them, and released ones go back to the queue without the attempt counted."""
    done = queue.submit(record(), ["m.a", "m.b"], window=60, hold=("me", 30))
    assert [c.handler for c in done.claims] == ["m.a", "m.b"]
    assert {(c.owner, c.attempts) for c in done.claims} == {("me", 1)}
    assert queue.claim("other", lease=30) is None
    assert queue.succeed_all([done.claims[0]]) == []
    queue.release([done.claims[1]])
    job = queue.job(done.claims[1].job_id)
    assert (job.status, job.attempts) == ("queued", 0)
    again = queue.claim("other", lease=30)
    assert (again.job_id, again.attempts) == (done.claims[1].job_id, 1)


def test_held_jobs_of_a_dead_process_are_taken_over(queue):
    """Held jobs whose owner stops renewing the lease are taken over like any claim."""
    done = queue.submit(record(), ["m.a"], window=60, hold=("gone", 0.1))
    time.sleep(0.15)
    again = queue.claim("other", lease=30)
    assert again.job_id == done.job_ids[0] and again.attempts == 2
    assert queue.succeed_all([done.claims[0], again]) == [done.job_ids[0]]
    assert queue.job(again.job_id).status == "succeeded"


@pytest.mark.parametrize("url, shown", [
    ("redis://:hunter2@h:6379/0", "redis://***@h:6379/0"),
    ("redis://user:s3cr/et+Pw==@10.0.0.5:6379/0", "redis://***@10.0.0.5:6379/0"),
    ("redis://h:6379/0", "redis://h:6379/0"),
    ("redis://h:6379/0?password=hunter2", "redis://h:6379/0?password=***"),
    ("rediss://:a@h/0?ssl_password=k3y&socket_timeout=3",
     "rediss://***@h/0?ssl_password=***&socket_timeout=3"),
])
def test_shown_url_hides_credentials(url, shown):
    """A queue URL in a message never holds its password, even one with an unescaped '/',
    or one given as a query parameter."""
    from receiver.jobs import shown_url

    assert shown_url(url) == shown


def test_a_password_in_the_query_is_not_shown_when_redis_cannot_be_reached(cli):
    """redis-py reads ?password=...: the jobs command's error shows neither it nor a
    percent-decoded copy of it."""
    from servers import free_port

    code, out, err = cli("jobs", "--queue",
                         f"redis://127.0.0.1:{free_port()}/0?password=hun%74er2")
    assert code == 1 and out == ""
    assert "password=***" in err and "hun" not in err


@pytest.mark.parametrize("url, secret", [
    ("redis://:pw12@host:6379/0?client_name=me@x", "pw12"),
    ("redis://u:s3/cret@h/0", "s3/cret"),
    ("redis://h/0?password=hun%74er2", "hunter2"),
])
def test_url_secrets_finds_the_password_however_it_is_written(url, secret):
    """The values scrubbed out of redis-py's messages include the password, whether an '@'
    follows in the query, it holds an unescaped '/', or it is a percent-encoded parameter."""
    from receiver.jobs import url_secrets

    assert secret in url_secrets(url)
