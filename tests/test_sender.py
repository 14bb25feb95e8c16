"""Deliveries over real HTTP to local servers: bodies, headers, retries, timeouts, the log."""

from __future__ import annotations

import dataclasses
import json

import pytest
from servers import Target, free_port, serve, wait_for
from wire import SEED, shape

from receiver import create_app
from receiver.core.schemas import load_event
from receiver.registry.rules import TriggerRule
from receiver.registry.sender import Sender
from receiver.registry.store import Store
from receiver.testing import make_event


@pytest.fixture()
def store(tmp_path):
    with Store(tmp_path / "r.db") as s:
        yield s


def sender(store, **kwargs):
    return Sender(store, **{"backoff": 0.01, "timeout": 2.0, **kwargs})


def test_body_on_the_wire_matches_the_seed(store):
    """The POSTed body has the seed's keys, in its order, with its types; headers are sent."""
    with Target() as target:
        store.add_rule(TriggerRule("r", target.url, headers=(("Authentication", "s3cret"), ("X-Multi", "1"), ("X-Multi", "2"))))
        [delivery] = sender(store).emit(load_event(SEED))
    headers, header_items, raw = target.requests[0]
    body = json.loads(raw)
    assert body == SEED
    assert shape(body) == shape(SEED)
    assert headers["Content-Type"] == "application/json"
    assert headers["Authentication"] == "s3cret"
    assert [v for k, v in header_items if k == "X-Multi"] == ["1", "2"]
    assert delivery.status == "success" and delivery.http_status == 200 and delivery.attempts == 1


def test_chart_body_leaves_out_what_a_chart_lacks(store):
    """A chart delivery leaves out the digest and date_created a chart has not (as the
    registry's omitempty does), keeps the seed's key order, and its operator is a string."""
    with Target() as target:
        store.add_rule(TriggerRule("r", target.url))
        event = make_event("uploadChart", "charts/web", ["0.1.0"])
        sender(store).emit(dataclasses.replace(event, operator=None))  # as a hand-made one may
    body = target.bodies()[0]
    assert list(body) == list(SEED)
    assert list(body["event_data"]["repository"]) == [
        k for k in SEED["event_data"]["repository"] if k != "date_created"]
    assert list(body["event_data"]["resources"][0]) == ["tag", "resource_url"]
    assert body["operator"] == ""


def test_each_rule_gets_the_resources_its_tag_pattern_matched(store):
    """Two rules with different tag patterns get one delivery each with their own tags."""
    with Target() as target:
        store.add_rule(TriggerRule("releases", target.url, tag="v*"))
        store.add_rule(TriggerRule("all", target.url))
        store.add_rule(TriggerRule("none", target.url, tag="nightly-*"))
        deliveries = sender(store).emit(make_event("pushImage", "ns/app", ["v1", "latest", "v2"]))
    assert sorted((d.rule, d.tags) for d in deliveries) == [
        ("all", ("v1", "latest", "v2")), ("releases", ("v1", "v2"))]
    tags = sorted(tuple(r["tag"] for r in b["event_data"]["resources"]) for b in target.bodies())
    assert tags == [("v1", "latest", "v2"), ("v1", "v2")]


def test_retries_until_success(store):
    """A target that fails twice with 503, then answers 200, gets three attempts: success."""
    with Target(statuses=[503, 503, 200]) as target:
        store.add_rule(TriggerRule("r", target.url))
        [d] = sender(store).emit(make_event())
    assert (d.status, d.http_status, d.attempts, d.error) == ("success", 200, 3, None)
    assert len(target.requests) == 3
    assert store.get_delivery(d.task_id) == d


@pytest.mark.parametrize("status, attempts", [(500, 3), (429, 3), (408, 3), (404, 1), (401, 1), (302, 1)])
def test_which_answers_are_retried(store, status, attempts):
    """5xx, 408 and 429 are retried; other 4xx and redirects are final (not followed)."""
    with Target(statuses=[status]) as target:
        store.add_rule(TriggerRule("r", target.url))
        [d] = sender(store).emit(make_event())
    assert (d.status, d.http_status, d.attempts) == ("failed", status, attempts)
    assert len(target.requests) == attempts


def test_wrong_header_is_logged_failed(store, caplog):
    """A receiver's 401 for a wrong secret is a failed row; no log or row holds the secret."""
    import logging

    caplog.set_level(logging.DEBUG)
    with serve(create_app({"RECEIVER_AUTH_HEADERS": {"Authentication": "right"}})) as url:
        store.add_rule(TriggerRule("r", url, headers=(("Authentication", "wrong-secret-value"),)))
        [d] = sender(store).emit(make_event())
    assert (d.status, d.http_status, d.attempts) == ("failed", 401, 1)
    row = json.dumps(store.get_delivery(d.task_id).to_dict())
    assert "wrong-secret-value" not in row
    assert f"delivery task={d.task_id} rule=r pushImage" in caplog.text
    assert "wrong-secret-value" not in caplog.text


@pytest.mark.parametrize("target, attempts", [
    pytest.param({"hang": 30}, 2, id="hangs"),
    # The whole answer takes ~4 s, each byte 0.1 s: only a timeout on the whole attempt,
    # not on each read, fails it.
    pytest.param({"trickle": 0.1}, 1, id="answers-a-byte-at-a-time"),
])
def test_slow_targets_are_held_to_the_timeout(store, target, attempts):
    """A target that never answers, or drips its answer, fails each attempt on its timeout."""
    with Target(**target) as server:
        store.add_rule(TriggerRule("r", server.url))
        [d] = sender(store, timeout=0.4, attempts=attempts).emit(make_event())
    assert (d.status, d.http_status, d.attempts) == ("failed", None, attempts)
    assert d.error == "timed out after 0.4s"


def test_non_ascii_secret_reaches_the_receiver_intact(store):
    """A header value outside ASCII is sent as UTF-8, as the receiver compares it."""
    with serve(create_app({"RECEIVER_AUTH_HEADERS": {"X-Key": "café-€"}})) as url:
        store.add_rule(TriggerRule("r", url, headers=(("X-Key", "café-€"),)))
        [d] = sender(store).emit(make_event())
    assert (d.status, d.http_status) == ("success", 202)


def test_target_down_is_failed_with_a_reason(store):
    """Nothing listening: every attempt fails, and the row says why."""
    store.add_rule(TriggerRule("r", f"http://127.0.0.1:{free_port()}/hook"))
    [d] = sender(store).emit(make_event())
    assert (d.status, d.attempts, d.error) == ("failed", 3, "connection refused")


def test_disabled_rule_is_silent(store):
    """A disabled rule gets no delivery and no row."""
    with Target() as target:
        store.add_rule(TriggerRule("off", target.url, enabled=False))
        assert sender(store).emit(make_event()) == []
    assert target.requests == [] and store.list_deliveries() == []


def test_deliveries_run_concurrently(store):
    """Deliveries of one event run at once: both targets have their request while each
    holds its answer back until the test releases them."""
    import threading

    with Target(hang=60) as a, Target(hang=60) as b:
        store.add_rule(TriggerRule("a", a.url))
        store.add_rule(TriggerRule("b", b.url))
        result = []
        emit = threading.Thread(target=lambda: result.extend(
            sender(store, timeout=30, attempts=1).emit(make_event())))
        emit.start()
        wait_for(lambda: a.requests and b.requests, what="both requests in flight at once")
        a.release.set()
        b.release.set()
        emit.join(timeout=30)
    assert [d.status for d in result] == ["success", "success"]


def test_send_and_redeliver(store):
    """send() needs no rule; redeliver() posts the same body again as a new row."""
    with Target() as target:
        store.add_rule(TriggerRule("r", target.url, headers=(("X-Key", "old"),)))
        s = sender(store)
        [first] = s.emit(make_event())
        store.save_rule(store.get_rule("r").replace(headers=(("X-Key", "new"),)))
        again = s.redeliver(first.task_id)
        plain = s.send(make_event("deleteImage", "ns/x", ["t"]), target.url, [("X-Key", "given")])
        plain_again = s.redeliver(plain.task_id, [("X-Key", "given2")])
    assert again.task_id != first.task_id and again.rule == "r" and again.body == first.body
    assert target.requests[0][2] == target.requests[1][2]
    assert [h["X-Key"] for h, _, _ in target.requests] == ["old", "new", "given", "given2"]
    assert plain.rule is None and plain_again.status == "success"


def test_redeliver_refuses_unknown_task_and_deleted_rule(store):
    """Unknown task ids and tasks of deleted rules are NotFound with a clear message."""
    from receiver.registry.store import NotFound

    with Target() as target:
        store.add_rule(TriggerRule("r", target.url))
        [d] = sender(store).emit(make_event())
    store.delete_rule("r")
    with pytest.raises(NotFound, match="rule 'r', which no longer exists"):
        sender(store).redeliver(d.task_id)
    with pytest.raises(NotFound, match="no delivery with task id 12345"):
        sender(store).redeliver(12345)


def test_each_rule_gets_its_own_format(store):
    """Each rule's delivery is in the rule's format, with that format's Content-Type."""
    with Target() as target:
        for fmt in ("tcr", "harbor", "cloudevents"):
            store.add_rule(TriggerRule(fmt, target.url, format=fmt))
        deliveries = sender(store).emit(make_event("pushImage", "prod/api", ["v1"]))
    assert [d.status for d in deliveries] == ["success"] * 3
    got = {}
    for headers, _, raw in target.requests:
        event = load_event(json.loads(raw))
        got[event.format] = (headers["Content-Type"], event.tags)
    assert got == {"tcr": ("application/json", ("v1",)),
                   "harbor": ("application/json", ("v1",)),
                   "cloudevents": ("application/cloudevents+json", ("v1",))}


def test_a_format_override_that_cannot_carry_the_event_sends_nothing(store):
    """emit(format=...) with a format that has no such event raises before any row is written."""
    with Target() as target:
        store.add_rule(TriggerRule("r", target.url))
        with pytest.raises(ValueError, match="the cloudevents format has no uploadChart event"):
            sender(store).emit(make_event("uploadChart", "charts/web", ["1.0.0"]), "cloudevents")
        [d] = sender(store).emit(make_event("pushImage", "ns/app", ["v1"]), "harbor")
    assert store.list_deliveries() == [d]
    assert json.loads(d.body)["type"] == "PUSH_ARTIFACT"


def test_redelivering_a_cloudevent_keeps_its_content_type(store):
    """A logged CloudEvents body is sent again byte for byte, still as application/cloudevents+json."""
    with Target() as target:
        s = sender(store)
        first = s.send(make_event(), target.url, format="cloudevents")
        s.redeliver(first.task_id)
    assert [h["Content-Type"] for h, _, _ in target.requests] == ["application/cloudevents+json"] * 2
    assert target.requests[0][2] == target.requests[1][2]  # the same CloudEvents id, too


def test_a_rule_that_cannot_carry_the_event_is_skipped_and_reported(store, caplog):
    """A rule from a hand-edited store whose format has no such event gets no delivery;
    on_skip hears of it with the reason, and a warning is logged."""
    import logging
    import sqlite3

    with Target() as target:
        for name in ("edited", "fine"):
            store.add_rule(TriggerRule(name, target.url, actions=("replication",), format="harbor"))
        with sqlite3.connect(store.path) as conn:
            conn.execute("UPDATE rules SET format = 'tcr' WHERE name = 'edited'")
        conn.close()
        skipped = []
        with caplog.at_level(logging.WARNING, "receiver.registry.sender"):
            deliveries = sender(store).emit(make_event("replication"),
                                            on_skip=lambda rule, why: skipped.append((rule.name, why)))
    assert [d.rule for d in deliveries] == ["fine"] and len(target.requests) == 1
    assert skipped == [("edited", "the tcr format has no replication event")]
    assert "rule edited skipped: the tcr format has no replication event" in caplog.text


def test_one_delivery_runs_in_the_calling_thread_several_on_a_pool(store):
    """A single delivery is sent from the calling thread (no hand-off); the deliveries of an
    event that fires several rules run on the pool's threads."""
    import threading

    threads = []
    with Target() as target, Sender(store, on_done=lambda d: threads.append(
            threading.current_thread())) as s:
        store.add_rule(TriggerRule("a", target.url))
        s.emit(make_event())
        assert threads == [threading.current_thread()]
        store.add_rule(TriggerRule("b", target.url))
        threads.clear()
        assert [d.status for d in s.emit(make_event())] == ["success", "success"]
    assert len(threads) == 2 and threading.current_thread() not in threads


def test_on_retry_hears_each_failed_attempt_before_its_wait(store):
    """on_retry gets the row, the attempt (status, error, answer) and the wait, for each
    attempt that will be tried again; on_done the final row."""
    retries, done = [], []
    with Target(statuses=[503, 429, 200]) as target, Sender(
            store, backoff=0.01, on_retry=lambda d, a, wait: retries.append((a, wait)),
            on_done=done.append) as s:
        store.add_rule(TriggerRule("r", target.url))
        [d] = s.emit(make_event())
    assert [(a.attempt, a.http_status, a.error) for a, _ in retries] == [
        (1, 503, "HTTP 503"), (2, 429, "HTTP 429")]
    assert 0.01 <= retries[0][1] <= 0.015 and 0.02 <= retries[1][1] <= 0.03
    assert done == [d] and d.attempts == 3


def test_the_pending_row_is_committed_before_the_post(store):
    """While the target holds the request, another connection already reads the row as
    pending, with a deadline: a crash now would leave a trace that a later command closes."""
    import sqlite3
    import threading
    import time

    with Target(hang=30) as target:
        store.add_rule(TriggerRule("r", target.url))
        started = time.time()
        thread = threading.Thread(target=lambda: sender(store, timeout=10, attempts=1).emit(
            make_event()))
        thread.start()
        try:
            wait_for(lambda: target.requests, what="the POST")
            with sqlite3.connect(store.path) as other:
                [(status, deadline)] = other.execute(
                    "SELECT status, deadline FROM deliveries").fetchall()
            other.close()
        finally:
            target.release.set()
            thread.join(timeout=30)
    # One attempt of at most 10 s, and a second's margin, from when the row was written.
    assert status == "pending" and started + 10.9 < deadline < time.time() + 11.1
    assert store.list_deliveries()[0].status == "success"
