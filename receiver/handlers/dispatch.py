"""Handlers: ``on(...)`` registration, filtering, and calling each handler in isolation.

``on()`` is sugar over :mod:`receiver.handlers.signals`: it connects a filtering wrapper to the
action's signal, for every app of the process. A :class:`Handlers` registry holds handlers of
its own instead, for the apps it is given to (an app's registry is its receiver state's
``handlers``, in ``app.extensions["receiver"]``); :func:`isolated_handlers` undoes the
``on()`` registrations made inside a block. :func:`matching_handlers` says which receivers
an event is for (the jobs the queue makes); :func:`call_handler` runs one; :func:`dispatch`
runs them all in the request (``sync`` mode), one by one, so one that raises does not stop
the others. Nothing here knows about HTTP or the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import logging
import sys
import time
import typing as t
import weakref

from ..core.events import ACTIONS, REPOSITORY_ACTIONS, Event, RepositoryEvent, subject
from ..core.filters import select_resources
from ..core.matcher import repository_fullmatch, tag_fullmatch
from ..core.text import printable
from . import signals

__all__ = [
    "Handler",
    "Handlers",
    "Outcome",
    "call_handler",
    "dispatch",
    "find_handler",
    "handlers_for",
    "isolated_handlers",
    "matching_handlers",
    "off",
    "on",
    "send_isolated",
]

log = logging.getLogger("receiver")

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

#: What a filtering receiver returns when the event is not for it.
SKIPPED = object()


class Handler:
    """A function registered with :func:`on`, with its filters.

    Called as a blinker receiver, ``handler(sender, event=event)``: it calls the function
    with the event alone, or returns :data:`SKIPPED` when a filter says no.
    """

    __slots__ = ("actions", "fn", "name", "namespace", "repository", "tag")

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
        #: The handler's name in jobs and answers: ``module.qualname``, with ``#2``, ``#3``
        #: for further registrations of the same function, in registration order.
        self.name = describe(fn)
        # Compiled now, so a malformed pattern fails at registration, not on an event.
        if repository:
            repository_fullmatch(repository)
        if tag:
            tag_fullmatch(tag)

    def select(self, event: Event) -> Event | None:
        """*event* narrowed to the resources this handler's filters keep, or ``None``."""
        if not isinstance(event, RepositoryEvent):
            return event  # on() refuses filters for the actions without a repository
        if self.namespace is None and not self.repository and not self.tag:
            return event  # no filter: every resource is kept
        resources = select_resources(
            event, namespace=self.namespace, repository=self.repository, tag=self.tag
        )
        return None if resources is None else event.with_resources(resources)

    def __call__(self, sender: t.Any, event: Event, **extra: t.Any) -> t.Any:
        selected = self.select(event)
        if selected is None:
            return SKIPPED
        return self.fn(selected)

    def __repr__(self) -> str:
        filters = ", ".join(
            f"{k}={v!r}" for k in ("namespace", "repository", "tag") if (v := getattr(self, k))
        )
        filters = f" {filters}" if filters else ""
        return f"<Handler {describe(self.fn)} {list(self.actions)}{filters}>"


#: The process-wide registrations made with :func:`on`, by function.
_registered: dict[t.Callable[..., t.Any], list[Handler]] = {}
#: The lists that open :func:`isolated_handlers` blocks add each new registration to.
_recordings: list[list[Handler]] = []


ActionSpec = str | type[Event]


def _action_name(spec: t.Any) -> str:
    if isinstance(spec, type) and issubclass(spec, Event) and spec.action:
        return spec.action
    if isinstance(spec, str) and spec in ACTIONS:
        return spec
    raise ValueError(f"unknown action {spec!r}; expected one of: {', '.join(ACTIONS)}, "
                     "or an event class such as PushImage")


def _decorator(
    register: t.Callable[[Handler], None],
    action_or_actions: ActionSpec | t.Iterable[ActionSpec],
    namespace: str | None,
    repository: str | None,
    tag: str | None,
) -> t.Callable[[F], F]:
    """Check :func:`on`'s arguments now, and return the decorator that hands each function,
    as a :class:`Handler`, to *register*."""
    single = isinstance(action_or_actions, (str, type))
    specs = (action_or_actions,) if single else tuple(action_or_actions)  # type: ignore[arg-type]
    if not specs:
        raise ValueError("on() needs at least one action")
    actions = tuple(dict.fromkeys(_action_name(spec) for spec in specs))
    namespace = namespace or None  # "" means every namespace, as in a trigger rule
    if namespace or repository or tag:
        bare = [a for a in actions if a not in REPOSITORY_ACTIONS]
        if bare:
            raise ValueError(
                f"{', '.join(bare)} events have no repository: a namespace, repository or "
                "tag filter would never match; register them without filters"
            )

    def decorator(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"on() decorates a function, not {type(fn).__name__}")
        register(Handler(fn, actions, namespace, repository or None, tag or None))
        return fn

    return decorator


def _numbered(name: str, taken: t.Iterable[str]) -> str:
    """*name*, or ``name#2``, ``name#3``...: the first one not *taken*.

    Names must tell handlers apart in every process alike: two registrations with the same
    ``module.qualname`` (a function registered twice, or made by a factory) are numbered in
    registration order.
    """
    names = set(taken)
    if name not in names:
        return name
    n = 2
    while f"{name}#{n}" in names:
        n += 1
    return f"{name}#{n}"


def on(
    action_or_actions: ActionSpec | t.Iterable[ActionSpec],
    *,
    namespace: str | None = None,
    repository: str | None = None,
    tag: str | None = None,
) -> t.Callable[[F], F]:
    """Register the decorated function as a handler for one or more actions, for every app
    of the process (except those created with their own :class:`Handlers`).

    Works from any module, before any app exists. The function is called with the event as
    its only argument, and only when every filter given matches:

    :param action_or_actions: a wire name such as ``"pushImage"``, an event class such as
        :class:`~receiver.core.events.PushImage`, or several of either.
    :param namespace: the repository's namespace, exactly.
    :param repository: a repository pattern, relative to the namespace (``/app*/**``).
    :param tag: a tag pattern; the handler gets an event carrying only the matching
        resources, as a trigger rule's delivery does.
    :raises ValueError: an unknown action.
    :raises PatternError: a malformed pattern.
    """
    return _decorator(_register, action_or_actions, namespace, repository, tag)


def _register(handler: Handler) -> None:
    handler.name = _numbered(handler.name, (h.name for hs in _registered.values() for h in hs))
    for action in handler.actions:
        signals.action_signals[action].connect(handler, weak=False)
    _registered.setdefault(handler.fn, []).append(handler)
    for made in _recordings:
        made.append(handler)


def _unregister(handler: Handler) -> None:
    """Undo one registration made with :func:`on` (nothing if ``off()`` already did)."""
    mine = _registered.get(handler.fn, [])
    if not any(h is handler for h in mine):
        return
    mine[:] = [h for h in mine if h is not handler]
    if not mine:
        del _registered[handler.fn]
    for action in handler.actions:
        signals.action_signals[action].disconnect(handler)


def off(fn: t.Callable[..., t.Any]) -> None:
    """Remove every registration of *fn* made with :func:`on`."""
    for handler in list(_registered.get(fn, [])):
        _unregister(handler)


@contextlib.contextmanager
def isolated_handlers() -> t.Iterator[None]:
    """On leaving the block, remove every registration made with :func:`on` inside it.

    Registrations made before the block stay; nothing else is restored (a handler that
    ``off()`` removed inside the block stays removed). Blocks may nest. A module imported
    for the first time inside the block registers inside it, so import handler modules
    before it.
    """
    made: list[Handler] = []
    _recordings.append(made)
    try:
        yield
    finally:
        _recordings[:] = [r for r in _recordings if r is not made]
        for handler in made:
            _unregister(handler)


@contextlib.contextmanager
def _lasting() -> t.Iterator[None]:
    """Registrations made inside this block stay when the open :func:`isolated_handlers`
    blocks end: the pytest plugin creates ``receiver_app`` (which imports the
    ``RECEIVER_HANDLERS`` modules, once per process) in it."""
    open_blocks = _recordings[:]
    _recordings.clear()
    try:
        yield
    finally:
        _recordings[:] = open_blocks + _recordings


def _forget_all() -> None:
    """Remove every registration made with :func:`on` (the pytest plugin's clean-up after a
    test in which the receiver was imported for the first time: all were made in it)."""
    for fn in list(_registered):
        off(fn)


class Handlers:
    """A registry of handlers for the apps created with it, apart from every other app.

    ::

        handlers = Handlers()

        @handlers.on("pushImage", tag="v*")
        def deploy(event): ...

        app = create_app(handlers=handlers)

    Such an app runs this registry's handlers, and receivers connected to an action's
    signal for that app alone (``connect(fn, sender=app)``); not the process-wide ones
    registered with :func:`on`, nor another app's. Handlers added after the app was created
    run too. One registry may serve several apps.
    """

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    def on(
        self,
        action_or_actions: ActionSpec | t.Iterable[ActionSpec],
        *,
        namespace: str | None = None,
        repository: str | None = None,
        tag: str | None = None,
    ) -> t.Callable[[F], F]:
        """Register the decorated function in this registry; the arguments are
        :func:`on`'s."""
        return _decorator(self._add, action_or_actions, namespace, repository, tag)

    def off(self, fn: t.Callable[..., t.Any]) -> None:
        """Remove every registration of *fn* from this registry."""
        self._handlers = [h for h in self._handlers if h.fn != fn]

    def for_action(self, action: str) -> list[Handler]:
        """The handlers registered for *action*, in registration order."""
        return [h for h in self._handlers if action in h.actions]

    def _add(self, handler: Handler) -> None:
        handler.name = _numbered(handler.name, (h.name for h in self._handlers))
        self._handlers = [*self._handlers, handler]  # a new list: workers may be reading

    def __iter__(self) -> t.Iterator[Handler]:
        return iter(self._handlers)

    def __repr__(self) -> str:
        return f"<Handlers {[h.name for h in self._handlers]}>"


#: A sender no receiver is connected for: its receivers are those connected for any sender.
_NOBODY = object()


def _registry_of(sender: t.Any) -> Handlers | None:
    """The registry *sender* (a Flask app) was given, in its receiver state
    (``app.extensions["receiver"].handlers``); ``None`` for any other sender."""
    extensions = getattr(sender, "extensions", None)
    state = extensions.get("receiver") if isinstance(extensions, dict) else None
    registry = getattr(state, "handlers", None)
    return registry if isinstance(registry, Handlers) else None


def handlers_for(sender: t.Any, action: str) -> list[t.Any]:
    """The receivers that *action*'s events from *sender* are for, in registration order.

    For an app with its own :class:`Handlers`: those, then the receivers connected to the
    action's signal for that app alone. For any other sender: every receiver of the
    action's signal, the handlers registered with :func:`on` among them.
    """
    signal = signals.action_signals[action]
    registry = _registry_of(sender)
    if registry is None:
        return _receivers(signal, sender)
    everywhere = {id(r) for r in signal.receivers_for(_NOBODY)}
    own = [r for r in _receivers(signal, sender) if id(r) not in everywhere]
    return [*registry.for_action(action), *own]


@dataclasses.dataclass
class Outcome:
    """What dispatching one event did.

    :param ran: how many handlers ran (filtered-out ones don't count; failed ones do).
    :param failed: the handlers that raised, by name.
    """

    ran: int = 0
    failed: list[str] = dataclasses.field(default_factory=list)


def describe(fn: t.Any) -> str:
    """A handler's name for logs, jobs and answers: ``module.qualname``."""
    if isinstance(fn, Handler):
        return fn.name
    if isinstance(fn, functools.partial):
        return describe(fn.func)
    if getattr(fn, "__qualname__", None) is None:
        fn = type(fn)  # a callable instance: its class, not a repr with an address in it
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{name}" if module else name


def call_handler(receiver: t.Any, sender: t.Any, event: Event) -> t.Any:
    """Call one receiver of an action's signal with *event*; await it if it is ``async``.

    Returns what it returned, or :data:`SKIPPED` when its filters do not match.
    """
    result = receiver(sender, event=event)
    if result is not None and inspect.iscoroutine(result):
        result = _run_coroutine(result)
    return result


def _run_coroutine(coroutine: t.Any) -> t.Any:
    """Run an ``async`` handler to its end in an event loop of its own.

    Under gevent's workers every greenlet shares one OS thread, and asyncio keeps one
    running loop per OS thread: a second ``async`` handler started while another awaits
    would find the first one's loop running. There, the loop runs in gevent's pool of real
    threads, and the greenlet waits for it without blocking the others.
    """
    hub = _gevent_hub()
    if hub is None:
        return asyncio.run(coroutine)
    return hub.threadpool.apply(asyncio.run, (coroutine,))


def _gevent_hub() -> t.Any | None:
    """gevent's hub when gevent has patched threading (its gunicorn workers), else ``None``."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return None
    return sys.modules["gevent"].get_hub()  # imported: gevent.monkey is


def matching_handlers(sender: t.Any, event: Event) -> list[str]:
    """The names of the handlers that *event* is for, in registration order: one job each.

    A handler registered with :func:`on` counts when its filters match; any other receiver
    of the action's signal always counts.
    """
    names = []
    for receiver in handlers_for(sender, event.action):
        if isinstance(receiver, Handler):
            if receiver.select(event) is not None:
                names.append(receiver.name)
        else:
            names.append(describe(receiver))
    return names


def find_handler(sender: t.Any, action: str, name: str) -> t.Any | None:
    """The receiver of *action* called *name* for *sender* in this process, or ``None``."""
    for receiver in handlers_for(sender, action):
        if describe(receiver) == name:
            return receiver
    return None


def _receivers(signal: t.Any, sender: t.Any) -> list[t.Any]:
    # blinker keeps receivers in a set; order them as they were connected, so that every
    # process names and runs them alike.
    if not signal.receivers:
        return []
    found = list(signal.receivers_for(sender))
    if len(found) < 2:
        return found
    order = {id(r): i for i, r in enumerate(_connected(signal))}
    return sorted(found, key=lambda r: order.get(id(r), len(order)))


def _connected(signal: t.Any) -> t.Iterator[t.Any]:
    for ref in signal.receivers.values():  # weak references, or the receivers themselves
        receiver = ref() if isinstance(ref, weakref.ref) else ref
        if receiver is not None:
            yield receiver


def run_isolated(receiver: t.Any, sender: t.Any, event: Event) -> tuple[bool, BaseException | None]:
    """Call *receiver* as :func:`call_handler` does, catching whatever it raises.

    Returns ``(ran, exception)``: ``ran`` is false when its filters skipped the event.
    Any exception counts as the handler's failure, ``SystemExit`` and ``KeyboardInterrupt``
    included: a handler cannot stop the server. (gunicorn's own quit marks its worker as
    stopping before it raises, so the worker still stops once this request is answered.)
    """
    try:
        result = call_handler(receiver, sender, event)
    except BaseException as exc:  # noqa: BLE001  (isolation, see above)
        return True, exc
    return result is not SKIPPED, None


def log_failure(name: str, event: Event, exc: BaseException, what: str = "") -> None:
    """One error line for a failed handler, with its traceback; untrusted text escaped."""
    log.error(
        "handler %s failed on %s %s%s", name, event.action,
        printable(subject(event)[0] or "-"), what, exc_info=exc,
    )


def _call_each(receivers: list[t.Any], sender: t.Any, event: Event, outcome: Outcome,
               count: bool) -> None:
    finished = signals.handler_finished
    for receiver in receivers:
        begun = time.perf_counter()
        ran, exc = run_isolated(receiver, sender, event)
        if count and ran and finished.receivers:
            send_isolated(finished, sender, handler=describe(receiver), action=event.action,
                          outcome="failed" if exc is not None else "succeeded",
                          seconds=time.perf_counter() - begun)
        if exc is not None:
            fn = receiver.fn if isinstance(receiver, Handler) else receiver
            outcome.ran += count
            outcome.failed.append(describe(receiver))
            log_failure(describe(receiver), event, exc)
            send_isolated(signals.handler_failed, sender, handler=fn, event=event, exception=exc,
                          attempt=1, final=True)
        elif ran:
            outcome.ran += count


def dispatch(sender: t.Any, event: Event) -> Outcome:
    """Send *event* on ``event_received``, then call the action's handlers one by one
    (``sync`` mode: the handlers run in the request).

    :param sender: the Flask app (or whatever the signals should be sent from).
    """
    outcome = Outcome()
    _call_each(_receivers(signals.event_received, sender), sender, event, outcome, count=False)
    _call_each(handlers_for(sender, event.action), sender, event, outcome, count=True)
    return outcome


def send_isolated(signal: t.Any, sender: t.Any, **kwargs: t.Any) -> None:
    """Send an observation signal; a failing observer is logged, never raised."""
    if not signal.receivers:
        return
    for receiver in list(signal.receivers_for(sender)):
        try:
            receiver(sender, **kwargs)
        except Exception:
            log.exception("receiver %s of signal %r failed", describe(receiver), signal.name)
