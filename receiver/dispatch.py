"""Handlers: ``on(...)`` registration, filtering, and calling each handler in isolation.

``on()`` is sugar over :mod:`receiver.signals`: it connects a filtering wrapper to the
action's signal. :func:`dispatch` calls the receivers one by one, so one that raises does not
stop the others, and signals each failure. Nothing here knows about HTTP.
"""

from __future__ import annotations

import dataclasses
import logging
import typing as t

from . import signals
from .events import ACTIONS, Event
from .matcher import repository_fullmatch, tag_fullmatch
from .rules import select_resources

__all__ = ["Handler", "Outcome", "dispatch", "off", "on", "send_isolated"]

log = logging.getLogger("receiver")

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

#: What a filtering receiver returns when the event is not for it.
SKIPPED = object()


class Handler:
    """A function registered with :func:`on`, with its filters.

    Called as a blinker receiver, ``handler(sender, event=event)``: it calls the function
    with the event alone, or returns :data:`SKIPPED` when a filter says no.
    """

    __slots__ = ("fn", "actions", "namespace", "repository", "tag")

    def __init__(
        self,
        fn: t.Callable[[t.Any], t.Any],
        actions: tuple[str, ...],
        namespace: str | None,
        repository: str | None,
        tag: str | None,
    ) -> None:
        self.fn = fn
        self.actions = actions
        self.namespace = namespace
        self.repository = repository
        self.tag = tag
        # Compiled now, so a malformed pattern fails at registration, not on an event.
        if repository:
            repository_fullmatch(repository)
        if tag:
            tag_fullmatch(tag)

    def __call__(self, sender: t.Any, event: Event, **extra: t.Any) -> t.Any:
        resources = select_resources(
            event, namespace=self.namespace, repository=self.repository, tag=self.tag
        )
        if resources is None:
            return SKIPPED
        return self.fn(event.with_resources(resources))

    def __repr__(self) -> str:
        filters = ", ".join(
            f"{k}={v!r}" for k in ("namespace", "repository", "tag") if (v := getattr(self, k))
        )
        return f"<Handler {describe(self.fn)} {list(self.actions)}{' ' + filters if filters else ''}>"


_registered: dict[t.Callable[..., t.Any], list[Handler]] = {}


def on(
    action_or_actions: str | t.Iterable[str],
    *,
    namespace: str | None = None,
    repository: str | None = None,
    tag: str | None = None,
) -> t.Callable[[F], F]:
    """Register the decorated function as a handler for one or more actions.

    Works from any module, before any app exists. The function is called with the event as
    its only argument, and only when every filter given matches:

    :param action_or_actions: a wire name such as ``"pushImage"``, or several.
    :param namespace: the repository's namespace, exactly.
    :param repository: a repository pattern, relative to the namespace (``/app*/**``).
    :param tag: a tag pattern; the handler gets an event carrying only the matching
        resources, as a trigger rule's delivery does.
    :raises ValueError: an unknown action.
    :raises PatternError: a malformed pattern.
    """
    actions = (action_or_actions,) if isinstance(action_or_actions, str) else tuple(action_or_actions)
    namespace = namespace or None  # "" means every namespace, as in a trigger rule
    if not actions:
        raise ValueError("on() needs at least one action")
    for action in actions:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; expected one of: {', '.join(ACTIONS)}")

    def decorator(fn: F) -> F:
        handler = Handler(fn, actions, namespace, repository or None, tag or None)
        for action in actions:
            signals.action_signals[action].connect(handler, weak=False)
        _registered.setdefault(fn, []).append(handler)
        return fn

    return decorator


def off(fn: t.Callable[..., t.Any]) -> None:
    """Remove every registration of *fn* made with :func:`on`."""
    for handler in _registered.pop(fn, []):
        for action in handler.actions:
            signals.action_signals[action].disconnect(handler)


@dataclasses.dataclass
class Outcome:
    """What dispatching one event did.

    :param ran: how many handlers ran (filtered-out ones don't count; failed ones do).
    :param failed: the handlers that raised, by name.
    """

    ran: int = 0
    failed: list[str] = dataclasses.field(default_factory=list)


def describe(fn: t.Any) -> str:
    """A handler's name for logs and answers: ``module.qualname``."""
    if isinstance(fn, Handler):
        fn = fn.fn
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{module}.{name}" if module else name


def _call_each(signal: t.Any, sender: t.Any, event: Event, outcome: Outcome, count: bool) -> None:
    for receiver in list(signal.receivers_for(sender)):
        try:
            result = receiver(sender, event=event)
        except Exception as exc:  # isolation: one handler's failure never stops the others
            fn = receiver.fn if isinstance(receiver, Handler) else receiver
            outcome.ran += count
            outcome.failed.append(describe(fn))
            log.error(
                "handler %s failed on %s %s", describe(fn), event.action,
                event.repository.full_name, exc_info=exc,
            )
            send_isolated(signals.handler_failed, sender, handler=fn, event=event, exception=exc)
        else:
            if result is not SKIPPED:
                outcome.ran += count


def send_isolated(signal: t.Any, sender: t.Any, **kwargs: t.Any) -> None:
    """Send an observation signal; a failing observer is logged, never raised."""
    for receiver in list(signal.receivers_for(sender)):
        try:
            receiver(sender, **kwargs)
        except Exception:
            log.exception("receiver %s of signal %r failed", describe(receiver), signal.name)


def dispatch(sender: t.Any, event: Event) -> Outcome:
    """Send *event* on ``event_received``, then call the action's handlers one by one.

    :param sender: the Flask app (or whatever the signals should be sent from).
    """
    outcome = Outcome()
    _call_each(signals.event_received, sender, event, outcome, count=False)
    _call_each(signals.action_signals[event.action], sender, event, outcome, count=True)
    return outcome
