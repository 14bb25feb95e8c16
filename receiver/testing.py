"""Helpers for users' own tests: event factories and capturing what the receiver dispatched.

::

    from receiver.testing import capture_events, make_body

    def test_deploy(client):
        with capture_events() as events:
            client.post("/webhook", json=make_body("pushImage", "prod/app", ["v1"]))
        assert events[0].tags == ("v1",)
"""

from __future__ import annotations

import contextlib
import typing as t

from . import signals
from .events import Event, build_event
from .schemas import dump_event

__all__ = ["build_event", "capture_events", "make_body", "make_event"]


def make_event(action: str = "pushImage", full_name: str = "public/nginx",
               tags: t.Sequence[str] = ("v1.0.0",), **kwargs: t.Any) -> Event:
    """A realistic event; see :func:`receiver.events.build_event` for the keywords."""
    return build_event(action, full_name, tags, **kwargs)


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
