"""Helpers for users' own tests: event factories, capturing what the receiver accepted, and
running queued jobs to completion.

::

    from receiver.testing import capture_events, make_body, run_jobs

    def test_deploy(tmp_path):
        app = create_app({"RECEIVER_QUEUE": f"sqlite:///{tmp_path}/q.db", "RECEIVER_WORKERS": 0})
        with capture_events() as events:
            app.test_client().post("/webhook", json=make_body("pushImage", "prod/app", ["v1"]))
        assert events[0].tags == ("v1",)
        assert [job.status for job in run_jobs(app)] == ["succeeded"]
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing as t

from . import signals
from .events import Event, build_event
from .schemas import dump_event, event_id

if t.TYPE_CHECKING:
    from flask import Flask

    from .jobs import Job

__all__ = ["build_event", "capture_events", "make_body", "make_event", "run_jobs"]


def make_event(action: str = "pushImage", full_name: str = "public/nginx",
               tags: t.Sequence[str] = ("v1.0.0",), **kwargs: t.Any) -> Event:
    """A realistic event, with the ``id`` the receiver would give its body; see
    :func:`receiver.events.build_event` for the keywords."""
    event = build_event(action, full_name, tags, **kwargs)
    return dataclasses.replace(event, id=event_id(dump_event(event)))


def run_jobs(app: Flask, limit: int | None = None) -> list[Job]:
    """Run *app*'s due jobs in this thread until none is left (or *limit* runs), and return
    each job once, in the order they first ran, as it ended: ``succeeded``, ``queued`` for a
    retry not yet due, or ``dead``.

    Use it with ``RECEIVER_WORKERS=0`` so that no worker thread races it; with
    ``RECEIVER_HANDLER_BACKOFF=0`` a failing job is retried at once, until it is dead.
    In ``sync`` mode there are no jobs and it returns ``[]``.
    """
    state = app.extensions["receiver"]
    if state.pool is None:
        return []
    ran = dict.fromkeys(state.pool.run_pending(limit))  # a retried job ran more than once
    jobs = [state.queue.job(job_id) for job_id in ran]
    return [job for job in jobs if job is not None]


def make_body(action: str = "pushImage", full_name: str = "public/nginx",
              tags: t.Sequence[str] = ("v1.0.0",), **kwargs: t.Any) -> dict[str, t.Any]:
    """The JSON body the registry would POST for such an event."""
    return dump_event(make_event(action, full_name, tags, **kwargs))


@contextlib.contextmanager
def capture_events(sender: t.Any = None) -> t.Iterator[list[Event]]:
    """Collect every valid event the receiver dispatches inside the ``with`` block.

    :param sender: only events from this Flask app; default, from any app.
    """
    events: list[Event] = []

    def record(app: t.Any, event: Event, **extra: t.Any) -> None:
        events.append(event)

    kwargs = {} if sender is None else {"sender": sender}
    with signals.event_received.connected_to(record, **kwargs):
        yield events
