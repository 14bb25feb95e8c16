"""The wire: POST a body to a URL and say how it went, as an :class:`Answer`.

Connections are kept alive and reused, one pool per scheme, host and port. A deadline bounds
each POST as a whole, even against a target that answers one byte at a time. Nothing here
retries (a delivery's retries are :mod:`receiver.registry.retry`'s), writes the trigger log,
or raises for what a target does: refused, timed out and garbled answers are Answers too.
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import http.client
import select
import socket
import ssl
import threading
import time
import typing as t
from urllib.parse import urlsplit

__all__ = ["ANSWER_HEAD", "Answer", "Target", "Transport", "target_of"]

#: How much of an answer's body an Answer keeps: twice what the trigger log keeps (4 KiB),
#: so that a secret the answer echoes across the 4 KiB boundary can still be blotted out.
ANSWER_HEAD = 8192
#: Read at most this much of an answer; a longer one is not read to its end, and its
#: connection is closed rather than reused.
MAX_ANSWER = 1 << 20
USER_AGENT = "receiver-sender"


@dataclasses.dataclass(frozen=True)
class Answer:
    """How one POST went.

    :param status: the HTTP status, ``None`` when there was no HTTP answer.
    :param head: the first :data:`ANSWER_HEAD` bytes of the answer's body.
    :param error: why there is no HTTP answer (``connection refused``, ``timed out after
        3s``...); ``None`` when there is one.
    :param duration: seconds from the first byte sent to the answer read, or the failure.
    :param started_at: when the POST began, in seconds since the epoch.
    """

    status: int | None
    head: bytes
    error: str | None
    duration: float
    started_at: float

    @property
    def ok(self) -> bool:
        """Whether the target took it: a 2xx."""
        return self.status is not None and 200 <= self.status < 300


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a POST goes, from an http(s) URL that :func:`~receiver.registry.rules.validate_url`
    accepted: its connection pool's key and its request path."""

    scheme: str
    host: str
    port: int | None
    path: str

    @property
    def key(self) -> tuple[str, str, int | None]:
        return self.scheme, self.host, self.port


@functools.lru_cache(maxsize=256)
def target_of(url: str) -> Target:
    """The :class:`Target` of *url* (which must be valid: check it first)."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(parts.scheme, parts.hostname or "", parts.port, path)


#: Failures that mean a kept-alive connection was closed by the other side while idle: the
#: POST is tried once more on a new connection.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
          ConnectionAbortedError)


class Transport:
    """POSTs bodies over kept-alive connections; shared safely by threads.

    :param max_idle: idle connections kept per scheme, host and port.
    """

    def __init__(self, *, max_idle: int = 8) -> None:
        self.max_idle = max_idle
        self._idle: dict[tuple[str, str, int | None], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self._watchdog = _WATCHDOG

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every idle connection (one in use is closed when its POST ends)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def post(
        self, target: Target, body: bytes, headers: t.Sequence[tuple[str, str]], *,
        timeout: float, content_type: str = "application/json",
    ) -> Answer:
        """POST *body* to *target* with *headers* (values sent as UTF-8, as the receiver
        compares them); *timeout* seconds bound the whole exchange."""
        started_at = time.time()
        began = time.perf_counter()
        try:
            conn, reused = self._checkout(target, timeout)
        except (OSError, http.client.HTTPException) as exc:  # a host http.client refuses
            return Answer(None, b"", short_error(exc), time.perf_counter() - began, started_at)
        post = _Post(conn)
        token = self._watchdog.watch(time.monotonic() + timeout, post.abort)
        try:
            while True:
                try:
                    if post.conn.sock is None:
                        # Connect here, then look: a deadline that passed while there was
                        # no socket to shut would otherwise not stop this POST.
                        post.conn.connect()
                        if post.expired:
                            raise TimeoutError
                    status, head = _exchange(post.conn, target.path, body, headers,
                                             content_type)
                    break
                except _STALE:
                    if not reused or post.expired:
                        raise
                    post.conn.close()
                    post.conn = self._connect(target, timeout)
                    reused = False
        except (OSError, http.client.HTTPException) as exc:
            post.conn.close()
            if post.expired or isinstance(exc, TimeoutError):
                error = f"timed out after {timeout:g}s"
            else:
                error = short_error(exc)
            return Answer(None, b"", error, time.perf_counter() - began, started_at)
        except BaseException:
            post.conn.close()
            raise
        finally:
            self._watchdog.cancel(token)
        duration = time.perf_counter() - began
        if post.expired:  # the watchdog fired as the answer ended: the socket is shut
            post.conn.close()
        else:
            self._checkin(target, post.conn)
        return Answer(status, head, None, duration, started_at)

    def _connect(self, target: Target, timeout: float) -> http.client.HTTPConnection:
        if target.scheme == "https":
            return _HTTPSConnection(target.host, target.port, timeout=timeout)
        return _HTTPConnection(target.host, target.port, timeout=timeout)

    def _checkout(
        self, target: Target, timeout: float
    ) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection to *target* that the other side has not closed, else a new one;
        and whether it was reused."""
        while True:
            with self._lock:
                idle = self._idle.get(target.key)
                conn = idle.pop() if idle else None
            if conn is None:
                return self._connect(target, timeout), False
            if conn.sock is not None and not _dropped(conn.sock):
                if conn.timeout != timeout:
                    conn.timeout = timeout
                    conn.sock.settimeout(timeout)
                return conn, True
            conn.close()

    def _checkin(self, target: Target, conn: http.client.HTTPConnection) -> None:
        if conn.sock is None:  # the answer said Connection: close, or was not read whole
            return
        with self._lock:
            idle = self._idle.setdefault(target.key, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()


class _Post:
    """A POST in flight: its connection, which the watchdog shuts if the deadline passes
    first, and whether it did."""

    __slots__ = ("conn", "expired")

    def __init__(self, conn: http.client.HTTPConnection) -> None:
        self.conn = conn
        self.expired = False

    def abort(self) -> None:
        self.expired = True
        sock = self.conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _OneWrite:
    """An ``http.client`` connection that writes a request's head and a bytes body with one
    system call instead of two: the target wakes once per request, and a send is saved.

    It overrides ``_send_output`` and reads ``_buffer``, which are private to ``http.client``
    (unchanged from Python 3.10 to 3.13); any other body goes through the original."""

    _buffer: list[bytes]

    def _send_output(self, message_body: t.Any = None, encode_chunked: bool = False) -> None:
        if type(message_body) is not bytes or encode_chunked:
            super()._send_output(message_body, encode_chunked)  # type: ignore[misc]
            return
        self._buffer.extend((b"", message_body))
        data = b"\r\n".join(self._buffer)
        del self._buffer[:]
        self.send(data)  # type: ignore[attr-defined]


class _HTTPConnection(_OneWrite, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_OneWrite, http.client.HTTPSConnection):
    pass


def _exchange(
    conn: http.client.HTTPConnection, path: str, body: bytes,
    headers: t.Sequence[tuple[str, str]], content_type: str,
) -> tuple[int, bytes]:
    """One request and its answer on *conn*: the status and the head of the body. The
    connection is left open only if the answer was read to its end and may be reused."""
    conn.putrequest("POST", path, skip_accept_encoding=True)
    conn.putheader("Content-Type", content_type)
    conn.putheader("Content-Length", str(len(body)))
    conn.putheader("User-Agent", USER_AGENT)
    for key, value in headers:
        conn.putheader(key, value.encode("utf-8"))  # as the receiver compares them
    conn.endheaders(body)
    resp = conn.getresponse()
    data = resp.read(MAX_ANSWER)
    if not resp.isclosed():  # longer than MAX_ANSWER: not worth draining
        conn.close()
    return resp.status, data[:ANSWER_HEAD]


def _dropped(sock: socket.socket) -> bool:
    """Whether an idle kept-alive socket was closed by the other side (it reads as ready:
    end of file, or bytes nobody asked for)."""
    try:
        if hasattr(select, "poll"):
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def short_error(exc: BaseException) -> str:
    """A one-line reason for a failed POST; it never holds a header."""
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
    if isinstance(exc, http.client.InvalidURL):
        return f"cannot send to this URL ({exc})"[:200]
    if isinstance(exc, http.client.HTTPException):
        return f"not an HTTP answer ({type(exc).__name__})"
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"[:200]
    return str(exc)[:200]


class _Watchdog:
    """One thread that calls each registered function when its deadline passes, unless
    it was cancelled first; cheaper than a timer thread per POST."""

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
                self._thread = threading.Thread(
                    target=self._run, name="receiver-watchdog", daemon=True
                )
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


#: One watchdog thread serves every Transport in the process.
_WATCHDOG = _Watchdog()
