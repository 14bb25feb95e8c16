"""on() registration and isolated dispatch, without HTTP."""

from __future__ import annotations

import pytest

from receiver import PatternError, off, on, signals
from receiver.handlers.dispatch import dispatch, matching_handlers
from receiver.testing import make_event


def test_on_works_before_any_app_and_returns_the_function():
    """on() registers at import time and leaves the function as it was."""
    def handler(event):
        return event

    assert on("pushImage")(handler) is handler
    outcome = dispatch(object(), make_event())
    assert outcome.ran == 1 and outcome.failed == []


def test_on_refuses_unknown_actions_and_bad_patterns():
    """Mistakes surface at registration, with the bad action or pattern named."""
    with pytest.raises(ValueError, match="unknown action 'push'"):
        on("push")
    with pytest.raises(ValueError, match="at least one action"):
        on([])
    with pytest.raises(PatternError, match=r"unclosed '\{'"):
        on("pushImage", repository="/{a")(lambda e: None)


def test_off_removes_every_registration():
    """off() disconnects a function from every action it was registered for."""
    seen = []
    fn = on(["pushImage", "deleteImage"])(seen.append)
    off(fn)
    dispatch(object(), make_event("pushImage"))
    dispatch(object(), make_event("deleteImage"))
    assert seen == []


def test_plain_blinker_receivers_count_too():
    """A receiver connected straight to an action signal is called with sender and event."""
    seen = []

    def receiver(sender, event, **extra):
        seen.append((sender, event.action))

    app = object()
    with signals.push_image.connected_to(receiver):
        assert dispatch(app, make_event()).ran == 1
    assert seen == [(app, "pushImage")]


def test_a_failing_observer_of_handler_failed_is_contained():
    """Even a broken handler_failed receiver cannot turn dispatch into an exception."""
    def boom(event):
        raise ValueError("x")

    def bad_observer(sender, **extra):
        raise RuntimeError("observer")

    on("pushImage")(boom)
    with signals.handler_failed.connected_to(bad_observer):
        outcome = dispatch(object(), make_event())
    assert outcome.ran == 1 and len(outcome.failed) == 1


def test_handlers_of_one_name_keep_distinct_names_after_a_removal():
    """Registrations sharing module.qualname are numbered, and removing one never makes two
    alike (a job finds its handler by name)."""
    def factory():
        def handler(event):
            return None
        return handler

    first, second, third = factory(), factory(), factory()
    on("pushImage")(first)
    on("pushImage")(second)
    off(first)
    on("pushImage")(third)
    base = f"{__name__}.{factory.__qualname__}.<locals>.handler"
    assert matching_handlers(object(), make_event()) == [f"{base}#2", base]
