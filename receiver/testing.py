"""Helpers for users' own tests: event factories, the shipped sample bodies, capturing what
the receiver accepted, handlers that last one block, and running queued jobs to completion.
(The pytest fixtures built on these are in :mod:`receiver.pytest_plugin`.)

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
import json
import typing as t
from importlib import resources

from .core.events import Event, build_event
from .core.schemas import dump_event, event_id
from .handlers import signals
from .handlers.dispatch import isolated_handlers

if t.TYPE_CHECKING:
    from flask import Flask

    from .jobs import Job

__all__ = [
    "build_event",
    "capture_events",
    "default_format",
    "isolated_handlers",
    "make_body",
    "make_event",
    "run_jobs",
    "sample",
    "samples",
]


def make_event(action: str = "pushImage", full_name: str | None = "public/nginx",
               tags: t.Sequence[str] | None = ("v1.0.0",), *, format: str | None = None,
               **kwargs: t.Any) -> Event:
    """A realistic event, with the ``format`` and ``id`` the receiver would give its body;
    see :func:`receiver.core.events.build_event` for the keywords.

    :param format: the format it comes in; default :func:`default_format`: ``tcr``, or
        ``harbor`` for the actions TCR has not (``replication``...). ``replication`` and
        ``tagRetention`` take no repository or tags.
    """
    from .core.events import REPOSITORY_ACTIONS

    if action not in REPOSITORY_ACTIONS:
        full_name = tags = None
    if format is None:
        format = default_format(action)
    event = dataclasses.replace(build_event(action, full_name, tags, **kwargs), format=format)
    return dataclasses.replace(event, id=event_id(dump_event(event)))


def default_format(action: str) -> str:
    """The format :func:`make_event`, :func:`make_body` and the ``deliver`` fixture build
    *action* in when none is given: ``tcr`` when the tcr format carries the action
    (``quotaWarning`` included: TCR sends it as a ``projectQuota`` whose text reads as a
    warning), else ``harbor``."""
    from .core.formats import FORMATS

    tcr = FORMATS["tcr"]
    return "tcr" if action in tcr.types.values() or action == "quotaWarning" else "harbor"


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


def make_body(action: str = "pushImage", full_name: str | None = "public/nginx",
              tags: t.Sequence[str] | None = ("v1.0.0",), *, format: str | None = None,
              **kwargs: t.Any) -> dict[str, t.Any]:
    """The JSON body the registry would POST for such an event.

    :param format: ``"tcr"``, ``"harbor"`` or ``"cloudevents"``; ValueError if that format
        has no such event. Default :func:`default_format`: ``tcr``, or ``harbor`` for the
        actions TCR has not, as :func:`make_event`.
    """
    if format is None:
        format = default_format(action)
    return dump_event(build_event(action, full_name, tags, **kwargs), format)


def _sample_dir(format: str) -> t.Any:
    return resources.files(__package__).joinpath("samples").joinpath(format)


def samples(format: str | None = None) -> list[tuple[str, str]]:
    """The shipped sample bodies, as sorted ``(format, name)`` pairs for :func:`sample`.

    A name is an action (``pushImage``), or an action and a variant after a ``-``
    (``pushImage-digest``: a push by digest, without a tag).

    :param format: only this format's samples.
    """
    root = resources.files(__package__).joinpath("samples")
    if not root.is_dir():
        return []
    formats = [format] if format else sorted(d.name for d in root.iterdir() if d.is_dir())
    found = []
    for fmt in formats:
        folder = _sample_dir(fmt)
        if folder.is_dir():
            found += [(fmt, f.name[:-5]) for f in folder.iterdir() if f.name.endswith(".json")]
    return sorted(found)


def sample(action: str, format: str = "tcr") -> dict[str, t.Any]:
    """A fresh copy of the sample body shipped for *action* in *format*, as the registry's
    documentation shows it (with made-up names, digests and times).

    :param action: an action (``"pushImage"``) or a variant's name (``"pushImage-digest"``);
        see :func:`samples`.
    :raises ValueError: there is no such sample; the message lists the ones there are.
    """
    file = _sample_dir(format).joinpath(f"{action}.json")
    if not file.is_file():
        names = [name for _, name in samples(format)]
        if not names:
            known = sorted({fmt for fmt, _ in samples()})
            raise ValueError(f"no samples in format {format!r}; the formats with samples are: "
                             f"{', '.join(known) or '(none)'}")
        raise ValueError(f"no {format} sample for {action!r}; the {format} samples are: "
                         f"{', '.join(names)}")
    return t.cast(dict[str, t.Any], json.loads(file.read_text(encoding="utf-8")))


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
