"""The registry's side of a delivery: which rules an event fires, and the fan-out of their
deliveries.

``Sender(store).emit(event)`` does what the registry does when something happens: every
enabled rule that matches gets one delivery, carrying the resources its tag pattern matched,
in the rule's wire format. The parts: :mod:`~receiver.registry.transport` POSTs,
:mod:`~receiver.registry.retry` decides on retries, :mod:`~receiver.registry.bookkeeping`
writes the trigger log, and this module plans the deliveries and runs them, one in the
calling thread, several on a pool of threads.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import logging
import sqlite3
import threading
import time
import typing as t
import weakref

from ..core.events import Event, RepositoryEvent, subject
from ..core.formats import FORMATS, Format, detect, get
from ..core.formats.common import compact, fast_json
from ..core.schemas import dump_event
from ..core.text import hide_userinfo
from .bookkeeping import INTERRUPTED, TriggerLog, secrets_in
from .retry import DEFAULT_ATTEMPTS, DEFAULT_BACKOFF, DEFAULT_TIMEOUT, MAX_SECONDS, RetryPolicy
from .rules import (
    RuleError,
    TriggerRule,
    carries,
    check_header,
    validate_url,
)
from .store import Attempt, Delivery, NewDelivery, NotFound, Store
from .transport import Answer, Transport, target_of

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_BACKOFF",
    "DEFAULT_TIMEOUT",
    "INTERRUPTED",
    "MAX_SECONDS",
    "Sender",
    "encode_body",
    "wire_format",
]

log = logging.getLogger("receiver.registry.sender")


def encode_body(event: Event, format: str | None = None) -> str:
    """The delivery body in *format* (default: the event's own): the format's dump, compact,
    in the registry's key order, with ``operator`` always a string, as the registry sends it.

    The text comes from :func:`~receiver.core.formats.common.fast_json` when it can tell:
    the same text, without marshmallow's per-field cost.

    :raises ValueError: an unknown format, or one that has no such event.
    """
    if event.operator is None:
        event = dataclasses.replace(event, operator="")
    fmt = get(format or event.format)
    if type(fmt).dump is Format.dump:  # the schema's dump of wire(): the fast path's too
        text = fast_json(fmt.schema, fmt.wire(event))
        if text is not None:
            return text
    return compact(dump_event(event, format))


def wire_format(format: str | None, event: Event) -> Format:
    """The format called *format* (default: the event's own), checked to carry *event*.

    :raises ValueError: an unknown format, or one that has no such event, naming both.
    """
    fmt = get(format or event.format)
    fmt.wire_type(event.action)  # "the cloudevents format has no uploadChart event"
    return fmt


class _Planned(t.NamedTuple):
    """A delivery to make: its rule (``None`` for :meth:`Sender.send`), where, and how.

    :param defect: why it cannot be made (a stored rule whose URL or headers cannot be
        sent, or whose row is damaged): it is logged as failed, without an attempt.
    """

    rule: str | None
    url: str
    headers: tuple[tuple[str, str], ...]
    event: Event
    format: Format
    defect: str | None = None


class _Job(t.NamedTuple):
    """A delivery whose row is written: the row, and what each attempt sends with the body."""

    delivery: Delivery
    headers: tuple[tuple[str, str], ...]
    content_type: str
    defect: str | None = None


class Sender:
    """Delivers events to the rules in *store*, as the registry would.

    :param store: where the rules are and the trigger log goes.
    :param timeout: seconds allowed for each attempt.
    :param attempts: attempts per delivery (at least 1).
    :param backoff: seconds before the second attempt; each later wait doubles, with jitter.
    :param max_workers: deliveries of one event run concurrently on up to this many threads;
        a single delivery runs in the calling thread.
    :param transport: what POSTs; default a :class:`~receiver.registry.transport.Transport`
        of its own, closed by :meth:`close` (or when the sender is collected).
    :param on_retry: called after each failed attempt that will be tried again, with the
        row, the attempt (its error and answer, header values blotted out) and the seconds
        until the next one; from the thread that delivers.
    :param on_done: called with each row as it becomes final; from the thread that delivers.
    """

    def __init__(
        self,
        store: Store,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF,
        max_workers: int = 8,
        transport: Transport | None = None,
        on_retry: t.Callable[[Delivery, Attempt, float], None] | None = None,
        on_done: t.Callable[[Delivery], None] | None = None,
    ) -> None:
        if attempts < 1 or max_workers < 1:
            raise ValueError("attempts and max_workers must be at least 1")
        self.policy = RetryPolicy(attempts=attempts, timeout=timeout, backoff=backoff)
        self.store = store
        self.max_workers = max_workers
        self.on_retry = on_retry
        self.on_done = on_done
        self.trigger_log = TriggerLog(store)
        if transport is None:
            transport = Transport()
            weakref.finalize(self, transport.close)
        self.transport = transport

    @property
    def timeout(self) -> float:
        return self.policy.timeout

    @property
    def attempts(self) -> int:
        return self.policy.attempts

    @property
    def backoff(self) -> float:
        return self.policy.backoff

    def close(self) -> None:
        """Close the kept-alive connections."""
        self.transport.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the public operations ------------------------------------------------------------

    def targets(self, event: Event) -> list[tuple[TriggerRule, Event]]:
        """Each enabled rule that *event* fires, with the event narrowed to its resources.

        A rule whose row is too damaged to match on (see :meth:`emit`) is not among them.
        """
        out = []
        for rule in self.store.enabled_rules():
            resources = rule.matching_resources(event)
            if resources is not None:
                narrowed = (event.with_resources(resources)
                            if isinstance(event, RepositoryEvent) else event)
                out.append((rule, narrowed))
        return out

    def emit(self, event: Event, format: str | None = None, *,
             on_skip: t.Callable[[TriggerRule, str], None] | None = None) -> list[Delivery]:
        """Deliver *event* to every enabled rule it fires; returns once each delivery is final.

        A rule that fires but cannot be sent (a URL or header that a hand-edited store, or an
        earlier version, let in; a damaged headers column) gets a ``failed`` row saying why,
        without an attempt; the other rules are sent.

        :param format: the wire format of every delivery; default: each rule's own.
        :param on_skip: called with the rule and the reason for each rule that gets no
            delivery although it may fire: its format cannot carry *event* (``"the tcr
            format has no replication event"``), or its row is too damaged to match on
            (``"rule 'x' in the store is corrupt: actions are not JSON"``, and
            ``rule.defect`` is set). Only a hand-edited store holds such rules; each is
            logged as a warning too.
        :raises ValueError: *format* is unknown or has no such event (nothing is sent).
        """
        override = wire_format(format, event) if format is not None else None

        def skip(rule: TriggerRule, reason: str) -> None:
            log.warning("rule %s skipped: %s", rule.name, reason)
            if on_skip is not None:
                on_skip(rule, reason)

        planned = []
        for rule in self.store.enabled_rules():
            defect = rule.defect
            if defect is not None and not rule.actions:
                skip(rule, defect)
                continue
            resources = rule.matching_resources(event)
            if resources is None:
                continue
            fmt = override or FORMATS.get(rule.format)
            if fmt is None or not carries(fmt, event.action):
                # Refused when the rule was made; only a hand-edited store gets here.
                skip(rule, f"its format {rule.format!r} is unknown" if fmt is None
                     else f"the {fmt.name} format has no {event.action} event")
                continue
            narrowed = (event.with_resources(resources)
                        if isinstance(event, RepositoryEvent) else event)
            defect = defect or _unsendable(rule.url, rule.headers, f"rule {rule.name!r}")
            planned.append(_Planned(rule.name, rule.url, rule.headers, narrowed, fmt, defect))
        return self._run(planned)

    def send(self, event: Event, url: str, headers: t.Sequence[tuple[str, str]] = (),
             format: str | None = None) -> Delivery:
        """One delivery of *event* to *url*, with no rule; logged with an empty rule.

        :param format: the wire format; default: the event's own (``tcr`` for a built one).
        :raises RuleError: *url* or a header is invalid (nothing is sent).
        :raises ValueError: *format* is unknown or has no such event.
        """
        validate_url(url)
        fmt = wire_format(format, event)
        return self._run([_Planned(None, url, _checked(headers), event, fmt)])[0]

    def redeliver(
        self, task_id: int, headers: t.Sequence[tuple[str, str]] | None = None
    ) -> Delivery:
        """Send a logged delivery's body again, as a new row.

        A rule's delivery goes to the rule's current URL with its current headers. A delivery
        made without a rule goes to its logged URL, with *headers* (header values are never
        logged, so they must be given again).

        :raises NotFound: no such task, or its rule has been deleted since.
        :raises RuleError: *headers* for a rule's task, or an invalid header.
        :raises StoreCorrupt: the task's body, or its rule's row, is damaged.
        """
        old = self.store.get_delivery(task_id)
        old.decoded_body()  # a damaged body is not sent
        if old.rule is not None:
            if headers:
                raise RuleError(
                    f"task {task_id} belongs to rule {old.rule!r}: it is sent with the rule's "
                    "headers, so --header is only for tasks sent without a rule"
                )
            try:
                rule = self.store.get_rule(old.rule)
            except NotFound:
                raise NotFound(
                    f"task {task_id} belongs to rule {old.rule!r}, which no longer exists"
                ) from None
            url, hdrs = rule.url, rule.headers
            defect = _unsendable(url, hdrs, f"rule {rule.name!r}")
        else:
            url, hdrs = old.url, _checked(headers or ())
            defect = _unsendable(url, hdrs, f"task {task_id}")
        shown = url if defect is None else hide_userinfo(url)  # the log never holds them
        new = NewDelivery(old.rule, old.action, old.repository, old.tags, shown, old.body)
        [pending] = self.trigger_log.open([new], self.policy)
        return self._finish([_Job(pending, hdrs, _content_type(old.body), defect)])[0]

    # --- the machinery --------------------------------------------------------------------

    def _run(self, planned: list[_Planned]) -> list[Delivery]:
        if not planned:
            return []
        new = []
        for p in planned:  # every body is encoded before any row is written
            repository, tags = subject(p.event)
            body = encode_body(p.event, p.format.name)
            # A URL with credentials is refused (p.defect); the trigger log never holds them.
            url = p.url if p.defect is None else hide_userinfo(p.url)
            new.append(NewDelivery(p.rule, p.event.action, repository, tags, url, body))
        waves = -(-len(planned) // self.max_workers)
        # One transaction, committed before the first POST: a crash leaves every row, with
        # the deadline after which any command closes it.
        pending = self.trigger_log.open(new, self.policy, waves=waves)
        return self._finish([
            _Job(d, p.headers, p.format.content_type, p.defect)
            for d, p in zip(pending, planned, strict=True)
        ])

    def _finish(self, jobs: list[_Job]) -> list[Delivery]:
        """Run each job to its end; whatever happens, no row stays pending.

        If the caller is interrupted (Ctrl-C, SIGTERM), deliveries in other threads stop
        after their attempt in flight, without retrying, and end ``failed``.
        """
        results: dict[int, Delivery] = {}
        try:
            if len(jobs) == 1:  # in this thread, where nothing else can stop it
                results[jobs[0].delivery.task_id] = self._deliver(jobs[0], None)
            elif jobs:
                stop = threading.Event()
                workers = min(self.max_workers, len(jobs))
                pool = concurrent.futures.ThreadPoolExecutor(workers, "receiver-send")
                try:
                    futures = {pool.submit(self._deliver, j, stop): j.delivery for j in jobs}
                    for future in concurrent.futures.as_completed(futures):
                        results[futures[future].task_id] = future.result()
                except BaseException:
                    stop.set()
                    raise
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
        finally:
            if len(results) < len(jobs):
                unfinished = [j.delivery for j in jobs if j.delivery.task_id not in results]
                try:
                    self.trigger_log.interrupt(unfinished)
                except sqlite3.Error as exc:  # the store is locked: tidy() closes them later
                    log.warning("could not close %d unfinished row(s): %s", len(unfinished), exc)
        return [results[j.delivery.task_id] for j in jobs]

    def _deliver(self, job: _Job, stop: threading.Event | None) -> Delivery:
        """Make *job*'s attempts; *stop*, when set, ends it after the attempt in flight."""
        delivery = job.delivery
        if job.defect is not None:
            delivery = self.trigger_log.refuse(delivery, job.defect)
            log.warning("delivery task=%d rule=%s %s: %s", delivery.task_id,
                        delivery.rule or "-", delivery.status, job.defect)
            return self._done(delivery)
        policy = self.policy
        target = target_of(delivery.url)
        body = delivery.body.encode("utf-8")
        secrets = secrets_in(job.headers)
        for number in range(1, policy.attempts + 1):
            if stop is not None and stop.is_set():
                return self._done(self.trigger_log.stop(delivery))
            started_at, began = time.time(), time.perf_counter()
            try:
                answer = self.transport.post(target, body, job.headers, timeout=policy.timeout,
                                             content_type=job.content_type)
            except BaseException:  # Ctrl-C or SIGTERM in this thread: the POST is cut short
                self._cut_short(delivery, number, started_at, began)
                raise
            final = policy.is_final(answer, number)
            delivery, attempt = self.trigger_log.record(delivery, number, answer, final=final,
                                                        secrets=secrets)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "delivery task=%d rule=%s %s %s attempt=%d/%d status=%s http=%s%s",
                    delivery.task_id, delivery.rule or "-", delivery.action,
                    delivery.repository or "-", number, policy.attempts, delivery.status,
                    answer.status if answer.status is not None else "-",
                    f" error={attempt.error}" if attempt.error else "",
                )
            if final:
                return self._done(delivery)
            if stop is not None and stop.is_set():  # no next try to announce
                return self._done(self.trigger_log.stop(delivery))
            delay = policy.delay(number)
            if self.on_retry is not None:
                self.on_retry(delivery, attempt, delay)
            if stop is None:
                time.sleep(delay)
            else:
                stop.wait(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _cut_short(self, delivery: Delivery, number: int, started_at: float,
                   began: float) -> None:
        """Log attempt *number*, interrupted in flight, and close the row with it; a store
        that cannot be written now is left to :meth:`_finish`'s clean-up."""
        answer = Answer(None, b"", INTERRUPTED, time.perf_counter() - began, started_at)
        try:
            self.trigger_log.record(delivery, number, answer, final=True)
        except sqlite3.Error as exc:
            log.warning("could not log the interrupted attempt of task %d: %s",
                        delivery.task_id, exc)

    def _done(self, delivery: Delivery) -> Delivery:
        if self.on_done is not None:
            self.on_done(delivery)
        return delivery


@functools.lru_cache(maxsize=1024)
def _unsendable(url: str, headers: tuple[tuple[str, str], ...], who: str) -> str | None:
    """Why a stored URL or header cannot be sent (``rule 'x' cannot be sent: url: ...``);
    ``None`` when they can. The checks are those a new rule passes."""
    try:
        validate_url(url)
        for key, value in headers:
            check_header(key, value)
    except RuleError as exc:
        return f"{who} cannot be sent: {exc}"
    return None


def _content_type(body: str) -> str:
    """The Content-Type of a logged body: its format's (CloudEvents has its own)."""
    try:
        fmt = detect(json.loads(body))
    except ValueError:
        fmt = None
    return fmt.content_type if fmt is not None else "application/json"


def _checked(headers: t.Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Headers given in Python, held to the same rules as a trigger rule's."""
    return tuple(check_header(key, value) for key, value in headers)
