"""The registry's side of a delivery: match rules, POST the body, retry, keep the trigger log.

``Sender(store).emit(event)`` does what the registry does when something happens: every
enabled rule that matches gets one delivery, carrying the resources its tag pattern matched,
in the rule's wire format. Each delivery is a row in the trigger log from before its first
attempt until it is final.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import heapq
import http.client
import json
import logging
import random
import socket
import ssl
import threading
import time
import typing as t
from urllib.parse import urlsplit

from ..core.events import Event, RepositoryEvent, subject
from ..core.formats import FORMATS, Format, detect, get
from .rules import TriggerRule, carries, check_header, validate_url
from ..core.schemas import dump_event
from .store import Delivery, NotFound, Store

__all__ = ["DEFAULT_ATTEMPTS", "DEFAULT_BACKOFF", "DEFAULT_TIMEOUT", "MAX_SECONDS", "Sender", "encode_body",
           "wire_format"]

log = logging.getLogger("receiver.registry.sender")

DEFAULT_TIMEOUT = 3.0  # seconds per attempt, as Harbor
DEFAULT_ATTEMPTS = 3  # as Harbor 2.x
DEFAULT_BACKOFF = 0.5  # seconds before the second attempt; doubles, plus up to 50% jitter

_INTERRUPTED = "interrupted before a final answer"
MAX_SECONDS = 3600.0  # the longest timeout or backoff accepted
_MAX_ANSWER = 1 << 20  # read at most this much of an answer's body

#: 4xx answers worth retrying; any other 4xx (and 3xx) is final.
_RETRYABLE_4XX = frozenset({408, 429})


def encode_body(event: Event, format: str | None = None) -> str:
    """The delivery body in *format* (default: the event's own): the format's dump, compact,
    in the registry's key order, with ``operator`` always a string, as the registry sends it.

    :raises ValueError: an unknown format, or one that has no such event.
    """
    if event.operator is None:
        event = dataclasses.replace(event, operator="")
    return json.dumps(dump_event(event, format), separators=(",", ":"), ensure_ascii=False)


def wire_format(format: str | None, event: Event) -> Format:
    """The format called *format* (default: the event's own), checked to carry *event*.

    :raises ValueError: an unknown format, or one that has no such event, naming both.
    """
    fmt = get(format or event.format)
    fmt.wire_type(event.action)  # "the cloudevents format has no uploadChart event"
    return fmt


@dataclasses.dataclass(frozen=True)
class _Planned:
    """A delivery to make: its rule (``None`` for :meth:`Sender.send`), where, and how."""

    rule: str | None
    url: str
    headers: tuple[tuple[str, str], ...]
    event: Event
    format: Format


@dataclasses.dataclass(frozen=True)
class _Started:
    """A delivery whose row is written: the row, and what each attempt sends with the body."""

    delivery: Delivery
    headers: tuple[tuple[str, str], ...]
    content_type: str


class Sender:
    """Delivers events to the rules in *store*, as the registry would.

    :param store: where the rules are and the trigger log goes.
    :param timeout: seconds allowed for each attempt.
    :param attempts: attempts per delivery (at least 1).
    :param backoff: seconds before the second attempt; each later wait doubles, with jitter.
    :param max_workers: deliveries of one event run concurrently on up to this many threads.
    """

    def __init__(
        self,
        store: Store,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        attempts: int = DEFAULT_ATTEMPTS,
        backoff: float = DEFAULT_BACKOFF,
        max_workers: int = 8,
    ) -> None:
        if attempts < 1 or max_workers < 1:
            raise ValueError("attempts and max_workers must be at least 1")
        if not (0 < timeout <= MAX_SECONDS and 0 <= backoff <= MAX_SECONDS):  # NaN fails too
            raise ValueError(f"timeout must be in (0, {MAX_SECONDS}] s and backoff in [0, {MAX_SECONDS}] s")
        self.store = store
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_workers = max_workers
        self._watchdog = _WATCHDOG

    # --- the public operations ------------------------------------------------------------

    def targets(self, event: Event) -> list[tuple[TriggerRule, Event]]:
        """Each enabled rule that *event* fires, with the event narrowed to its resources."""
        out = []
        for rule in self.store.enabled_rules():
            resources = rule.matching_resources(event)
            if resources is not None:
                narrowed = event.with_resources(resources) if isinstance(event, RepositoryEvent) else event
                out.append((rule, narrowed))
        return out

    def emit(self, event: Event, format: str | None = None, *,
             on_skip: t.Callable[[TriggerRule, str], None] | None = None) -> list[Delivery]:
        """Deliver *event* to every enabled rule it fires; returns once each delivery is final.

        :param format: the wire format of every delivery; default: each rule's own.
        :param on_skip: called with the rule and the reason (``"the tcr format has no
            replication event"``) for each matching rule that cannot carry *event*, which
            only a hand-edited store holds; it is skipped, and logged as a warning.
        :raises ValueError: *format* is unknown or has no such event (nothing is sent).
        """
        override = wire_format(format, event) if format is not None else None
        planned = []
        for rule, narrowed in self.targets(event):
            fmt = override or FORMATS.get(rule.format)
            if fmt is None or not carries(fmt, event.action):
                # Refused when the rule was made; only a hand-edited store gets here.
                reason = (f"its format {rule.format!r} is unknown" if fmt is None
                          else f"the {fmt.name} format has no {event.action} event")
                log.warning("rule %s skipped: %s", rule.name, reason)
                if on_skip is not None:
                    on_skip(rule, reason)
                continue
            planned.append(_Planned(rule.name, rule.url, rule.headers, narrowed, fmt))
        return self._run(planned)

    def send(self, event: Event, url: str, headers: t.Sequence[tuple[str, str]] = (),
             format: str | None = None) -> Delivery:
        """One delivery of *event* to *url*, with no rule; logged with an empty rule.

        :param format: the wire format; default: the event's own (``tcr`` for a built one).
        :raises ValueError: *format* is unknown or has no such event.
        """
        validate_url(url)
        fmt = wire_format(format, event)
        return self._run([_Planned(None, url, _checked(headers), event, fmt)])[0]

    def redeliver(self, task_id: int, headers: t.Sequence[tuple[str, str]] | None = None) -> Delivery:
        """Send a logged delivery's body again, as a new row.

        A rule's delivery goes to the rule's current URL with its current headers. A delivery
        made without a rule goes to its logged URL, with *headers* (header values are never
        logged, so they must be given again).

        :raises NotFound: no such task, or its rule has been deleted since.
        """
        old = self.store.get_delivery(task_id)
        if old.rule is not None:
            if headers:
                raise ValueError(
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
        else:
            url, hdrs = old.url, _checked(headers or ())
        pending = self.store.start_delivery(
            rule=old.rule, action=old.action, repository=old.repository, tags=old.tags,
            url=url, body=old.body,
        )
        return self._finish([_Started(pending, hdrs, _content_type(old.body))])[0]

    # --- the machinery --------------------------------------------------------------------

    def _run(self, planned: list[_Planned]) -> list[Delivery]:
        # Every body is encoded before the first row is written: no half-started emit.
        bodies = [encode_body(p.event, p.format.name) for p in planned]
        started: list[_Started] = []
        try:
            for p, body in zip(planned, bodies):
                repository, tags = subject(p.event)
                pending = self.store.start_delivery(
                    rule=p.rule, action=p.event.action, repository=repository, tags=tags,
                    url=p.url, body=body,
                )
                started.append(_Started(pending, p.headers, p.format.content_type))
        except BaseException:
            self._close_unfinished(started, {})
            raise
        return self._finish(started)

    def _finish(self, started: list[_Started]) -> list[Delivery]:
        """Run each started delivery to its end; whatever happens, no row stays pending.

        If the caller is interrupted (Ctrl-C, SIGTERM), deliveries in other threads stop
        after their attempt in flight, without retrying, and end ``failed``.
        """
        results: dict[int, Delivery] = {}
        stop = threading.Event()
        try:
            if len(started) == 1:
                results[started[0].delivery.task_id] = self._deliver(started[0], stop)
            elif started:
                workers = min(self.max_workers, len(started))
                pool = concurrent.futures.ThreadPoolExecutor(workers, "receiver-send")
                try:
                    futures = {pool.submit(self._deliver, s, stop): s.delivery for s in started}
                    for future in concurrent.futures.as_completed(futures):
                        results[futures[future].task_id] = future.result()
                except BaseException:
                    stop.set()
                    raise
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
        finally:
            self._close_unfinished(started, results)
        return [results[s.delivery.task_id] for s in started]

    def _close_unfinished(self, started: list[_Started], results: dict[int, Delivery]) -> None:
        """Mark every started row that has no result and is still pending as failed."""
        for s in started:
            d = s.delivery
            if d.task_id not in results:
                current = self.store.get_delivery(d.task_id)
                if current.status == "pending":
                    self._close(current, current.http_status, current.attempts, _INTERRUPTED)

    def _close(self, delivery: Delivery, status: int | None, attempts: int, error: str) -> Delivery:
        return self.store.update_delivery(
            delivery, status="failed", http_status=status, attempts=attempts, error=error
        )

    def _deliver(self, started: _Started, stop: threading.Event) -> Delivery:
        delivery = started.delivery
        body = delivery.body.encode("utf-8")
        target = _Target(delivery.url)
        for attempt in range(1, self.attempts + 1):
            if stop.is_set():
                return self._close(delivery, delivery.http_status, attempt - 1, _INTERRUPTED)
            status, error, retry = self._attempt(target, body, started.headers,
                                                 started.content_type)
            final = status is not None and 200 <= status < 300 or not retry or attempt == self.attempts
            outcome = "success" if status is not None and 200 <= status < 300 else (
                "failed" if final else "pending")
            delivery = self.store.update_delivery(
                delivery, status=outcome, http_status=status, attempts=attempt, error=error,
            )
            log.info(
                "delivery task=%d rule=%s %s %s attempt=%d/%d status=%s http=%s%s",
                delivery.task_id, delivery.rule or "-", delivery.action, delivery.repository or "-",
                attempt, self.attempts, outcome, status if status is not None else "-",
                f" error={error}" if error else "",
            )
            if final:
                return delivery
            stop.wait(self._delay(attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(
        self, target: _Target, body: bytes, headers: t.Sequence[tuple[str, str]],
        content_type: str = "application/json",
    ) -> tuple[int | None, str | None, bool]:
        """One POST: (HTTP status or None, short error or None, whether to retry).

        The timeout bounds the whole attempt, a target that answers one byte at a time
        included: a watchdog shuts the socket down at the deadline.
        """
        conn = target.connection(self.timeout)
        expired = threading.Event()

        def abort() -> None:
            expired.set()
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        token = self._watchdog.watch(time.monotonic() + self.timeout, abort)
        try:
            conn.putrequest("POST", target.path, skip_accept_encoding=True)
            conn.putheader("Content-Type", content_type)
            conn.putheader("Content-Length", str(len(body)))
            conn.putheader("User-Agent", "receiver-sender")
            for key, value in headers:
                conn.putheader(key, value.encode("utf-8"))  # as the receiver compares them
            conn.endheaders(body)
            resp = conn.getresponse()
            resp.read(_MAX_ANSWER)
            status = resp.status
        except (OSError, http.client.HTTPException) as exc:
            if expired.is_set() or isinstance(exc, TimeoutError):
                return None, f"timed out after {self.timeout:g}s", True
            return None, _short_error(exc), True
        finally:
            self._watchdog.cancel(token)
            conn.close()
        if 200 <= status < 300:
            return status, None, False
        if 300 <= status < 400:
            return status, f"HTTP {status}: redirects are not followed", False
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            return status, f"HTTP {status}", False
        return status, f"HTTP {status}", True

    def _delay(self, attempt: int) -> float:
        base = self.backoff * (2 ** (attempt - 1))
        return base + random.uniform(0, base / 2)


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


def _short_error(exc: BaseException) -> str:
    """A one-line reason for a failed attempt; it never holds a header."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, socket.gaierror):
        return "name or service not known"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "closed the connection without an answer"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"[:200]
    if isinstance(exc, http.client.HTTPException):
        return f"not an HTTP answer ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc.strerror or exc}"[:200] if isinstance(exc, OSError) else str(exc)[:200]


class _Target:
    """Where a delivery goes: connection class, host, port and request path of its URL."""

    __slots__ = ("cls", "host", "port", "path")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self.host = parts.hostname or ""
        self.port = parts.port
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        return self.cls(self.host, self.port, timeout=timeout)


class _Watchdog:
    """One thread that calls each registered function when its deadline passes, unless
    it was cancelled first; cheaper than a timer thread per attempt."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, t.Callable[[], None]]] = []
        self._active: set[int] = set()
        self._count = 0
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, fn: t.Callable[[], None]) -> int:
        with self._cond:
            self._count += 1
            heapq.heappush(self._heap, (deadline, self._count, fn))
            self._active.add(self._count)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="receiver-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][1] == self._count:
                self._cond.notify()
            return self._count

    def cancel(self, token: int) -> None:
        with self._cond:
            self._active.discard(token)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._active:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, token, fn = self._heap[0]
                left = deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                heapq.heappop(self._heap)
                self._active.discard(token)
                fn()


#: One watchdog thread serves every Sender in the process.
_WATCHDOG = _Watchdog()
