"""Rows left pending by a sender that died or could not write: their deadline, and the next
command that opens the store closing them, so that every matched rule ends with a final row."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from servers import Target, wait_for

from receiver.registry.rules import TriggerRule
from receiver.registry.sender import Sender
from receiver.registry.store import SWEPT, Store
from receiver.testing import make_event


def _deadline(path, task_id):
    with sqlite3.connect(path) as db:
        [(deadline,)] = db.execute("SELECT deadline FROM deliveries WHERE task_id = ?",
                                   (task_id,)).fetchall()
    db.close()
    return deadline


def _attempts(path):
    """The attempts logged on the first row, or None before it exists."""
    db = sqlite3.connect(path)
    try:
        row = db.execute("SELECT attempts FROM deliveries WHERE task_id = 1").fetchone()
    except sqlite3.OperationalError:  # no table yet
        row = None
    finally:
        db.close()
    return row and row[0]


def test_a_killed_emit_leaves_a_row_that_the_next_command_closes(tmp_path):
    """`emit` killed with SIGKILL while it waits to retry leaves its row pending, with a
    deadline; a command run before the deadline leaves it be, and any command run after
    closes it as failed, with the attempt that was made."""
    db = tmp_path / "r.db"
    env = {**os.environ, "RECEIVER_DB": str(db)}
    receiver = [sys.executable, "-m", "receiver"]
    with Target(statuses=[500]) as target:
        subprocess.run([*receiver, "rules", "create", "r", "--url", target.url], env=env,
                       check=True, capture_output=True)
        started = time.time()
        proc = subprocess.Popen(
            [*receiver, "emit", "pushImage", "ns/app:v1", "--timeout", "0.2", "--attempts", "2",
             "--backoff", "0.8"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            # Killed in the wait before the retry (0.8 to 1.2 s), once the first attempt is
            # logged.
            wait_for(lambda: _attempts(db) == 1, what="the first attempt to be logged")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        assert len(target.requests) == 1
    early = subprocess.run([*receiver, "logs", "--json"], env=env, capture_output=True,
                           text=True, check=True)
    [row] = json.loads(early.stdout)
    deadline = _deadline(db, 1)
    if time.time() < deadline:  # as it will be, unless this machine stalled for seconds
        assert (row["status"], row["attempts"]) == ("pending", 1)
    # The longest 2 attempts can take (timeouts, and the wait with its jitter), and a margin.
    longest = 2 * 0.2 + 0.8 * 1.5
    assert started + longest < deadline < time.time() + longest + 5
    wait_for(lambda: time.time() > deadline, timeout=30, what="the row's deadline")
    later = subprocess.run([*receiver, "logs", "--json"], env=env, capture_output=True,
                           text=True, check=True)
    [row] = json.loads(later.stdout)
    assert (row["status"], row["error"], row["http_status"], row["attempts"]) == (
        "failed", "interrupted", 500, 1)
    task = json.loads(subprocess.run([*receiver, "logs", "--task", "1", "--json"], env=env,
                                     capture_output=True, text=True, check=True).stdout)
    assert [a["http_status"] for a in task["attempt_log"]] == [500]


def test_a_store_locked_past_the_busy_timeout_leaves_a_row_that_is_closed_later(tmp_path):
    """When the final write cannot get the store's lock, the delivery's row stays pending
    (the error reaches the caller), and opening the store after its deadline closes it."""
    errors: list[BaseException] = []
    with Target(hang=30) as target, Store(tmp_path / "r.db", busy_timeout=0.1) as store, \
            Sender(store, timeout=0.5, attempts=1) as sender:
        store.add_rule(TriggerRule("r", target.url))

        def emit() -> None:
            try:
                sender.emit(make_event())
            except sqlite3.OperationalError as exc:
                errors.append(exc)

        thread = threading.Thread(target=emit)
        thread.start()
        wait_for(lambda: target.requests, what="the POST")
        locker = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")
        try:
            target.release.set()
            thread.join(timeout=30)
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        [row] = store.list_deliveries()
    assert [str(e) for e in errors] == ["database is locked"]
    assert (row.status, row.attempts) == ("pending", 0)
    deadline = _deadline(tmp_path / "r.db", row.task_id)
    wait_for(lambda: time.time() > deadline, timeout=30, what="the row's deadline")
    with Store(tmp_path / "r.db") as store:
        row = store.get_delivery(row.task_id)
        assert store.delivery_counts() == {("r", "failed"): 1}
    assert (row.status, row.error) == ("failed", SWEPT)


@pytest.fixture()
def store(tmp_path):
    with Store(tmp_path / "r.db") as s:
        yield s


def test_tidy_closes_only_rows_past_their_deadline(store):
    """A pending row is closed once its deadline has passed, not before; final rows are
    never touched."""
    now = time.time()
    soon = store.start_delivery(rule="r", action="pushImage", repository="ns/app", tags=["v1"],
                                url="http://127.0.0.1:1/", body="{}", deadline=now + 60)
    late = store.start_delivery(rule="r", action="pushImage", repository="ns/app", tags=["v1"],
                                url="http://127.0.0.1:1/", body="{}", deadline=now - 1)
    done = store.start_delivery(rule=None, action="pushImage", repository="ns/app", tags=[],
                                url="http://127.0.0.1:1/", body="{}", deadline=now - 1)
    store.update_delivery(done, status="success", http_status=200, attempts=1, error=None)
    assert store.tidy() == (1, 0)
    assert [(d.task_id, d.status, d.error) for d in store.list_deliveries()] == [
        (done.task_id, "success", None), (late.task_id, "failed", SWEPT),
        (soon.task_id, "pending", None)]
    assert store.tidy(at=now + 61) == (1, 0)
    assert store.delivery_counts() == {("r", "failed"): 2, ("", "succeeded"): 1}


def test_a_late_outcome_wins_over_the_sweep(store):
    """A sender that was only late (stopped, starved) writes its outcome over the sweep's,
    and the counters follow; a late pending update changes nothing."""
    d = store.start_delivery(rule="r", action="pushImage", repository="ns/app", tags=["v1"],
                             url="http://127.0.0.1:1/", body="{}", deadline=time.time() - 1)
    store.tidy()
    store.update_delivery(d, status="pending", http_status=500, attempts=1, error="HTTP 500")
    assert store.get_delivery(d.task_id).status == "failed"
    store.update_delivery(d, status="success", http_status=200, attempts=2, error=None)
    row = store.get_delivery(d.task_id)
    assert (row.status, row.http_status, row.attempts, row.error) == ("success", 200, 2, None)
    assert store.delivery_counts() == {("r", "failed"): 0, ("r", "succeeded"): 1}
