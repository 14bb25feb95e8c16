"""The sender's parts on their own: the transport (kept-alive connections, stale ones, the
head of an answer) against real servers, and the retry policy."""

from __future__ import annotations

import http.server
import socket
import typing as t

import pytest
from servers import LoopbackServer, free_port

from receiver.registry.retry import RetryPolicy, failure
from receiver.registry.rules import TriggerRule
from receiver.registry.sender import Sender
from receiver.registry.store import Store
from receiver.registry.transport import ANSWER_HEAD, Answer, Transport, target_of
from receiver.testing import make_event

R = pytest.param


class Counting(LoopbackServer):
    """An HTTP/1.1 server on 127.0.0.1 that counts the connections it accepts and answers
    each POST 200 with *answer*; with *close_after*, it closes each connection after that
    many answers without saying so (as a server whose keep-alive timeout ran out)."""

    def __init__(self, answer: bytes = b"", close_after: int | None = None) -> None:
        self.connections = 0
        self.bodies: list[bytes] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                outer.connections += 1
                self.answered = 0

            def do_POST(self) -> None:
                outer.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(200)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)
                self.answered += 1
                if close_after is not None and self.answered >= close_after:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True

            def log_message(self, *args: t.Any) -> None:
                pass

        super().__init__(Handler)


def test_connections_are_kept_alive_and_reused(tmp_path):
    """Five deliveries to one target, one after the other, use one connection."""
    with Counting() as target, Store(tmp_path / "r.db") as store, Sender(store) as sender:
        store.add_rule(TriggerRule("r", target.url))
        for _ in range(5):
            assert [d.status for d in sender.emit(make_event())] == ["success"]
    assert (target.connections, len(target.bodies)) == (1, 5)


@pytest.mark.parametrize("close_after", [1, 2])
def test_a_connection_the_server_closed_is_not_a_failure(tmp_path, close_after):
    """A kept-alive connection that the server closed while it was idle is replaced: every
    delivery succeeds at its first attempt, and each body arrives once."""
    with Counting(close_after=close_after) as target, Store(tmp_path / "r.db") as store, \
            Sender(store, attempts=1) as sender:
        store.add_rule(TriggerRule("r", target.url))
        rows = [sender.emit(make_event())[0] for _ in range(4)]
    assert [(d.status, d.attempts) for d in rows] == [("success", 1)] * 4
    assert len(target.bodies) == 4 and len(set(target.bodies)) == 4
    assert target.connections == 4 // close_after


def test_the_answer_keeps_its_head(tmp_path):
    """An Answer holds the status, the first bytes of the body, the duration and the start;
    the trigger log keeps the first 4 KiB of them."""
    answer = bytes(range(256)) * 64  # 16 KiB
    with Counting(answer) as target, Transport() as transport:
        got = transport.post(target_of(target.url), b"{}", [], timeout=2)
    assert (got.status, got.error, got.ok) == (200, None, True)
    assert got.head == answer[:ANSWER_HEAD] and ANSWER_HEAD >= 8192
    assert got.duration >= 0 and got.started_at > 0


def test_a_refused_connection_is_an_answer_not_an_exception():
    """Nothing listening: an Answer with no status and the reason."""
    with Transport() as transport:
        got = transport.post(target_of(f"http://127.0.0.1:{free_port()}/"), b"{}", [],
                             timeout=2)
    assert (got.status, got.head, got.error, got.ok) == (None, b"", "connection refused", False)


def test_a_host_http_client_refuses_is_an_answer_not_an_exception():
    """A URL that validation now refuses but an older store may hold (an IPv6 zone id):
    its delivery fails with the reason; the sender goes on."""
    with Transport() as transport:
        got = transport.post(target_of("http://[fe80::1%25eth0]/"), b"{}", [], timeout=2)
    assert got.status is None
    assert got.error == "cannot send to this URL (nonnumeric port: '1%25eth0')"


def _answer(status: int | None, error: str | None = None) -> Answer:
    return Answer(status, b"", error, 0.0, 0.0)


@pytest.mark.parametrize("status, retried, message", [
    R(None, True, "connection refused", id="no-answer"),
    R(500, True, "HTTP 500", id="500"),
    R(503, True, "HTTP 503", id="503"),
    R(408, True, "HTTP 408", id="408"),
    R(429, True, "HTTP 429", id="429"),
    R(404, False, "HTTP 404", id="404"),
    R(401, False, "HTTP 401", id="401"),
    R(302, False, "HTTP 302: redirects are not followed", id="302"),
])
def test_which_answers_the_policy_retries(status, retried, message):
    """No answer, 5xx, 408 and 429 are retried; other 4xx and 3xx are final."""
    policy = RetryPolicy(attempts=3)
    answer = _answer(status, "connection refused" if status is None else None)
    assert policy.retries(answer) is retried
    assert policy.is_final(answer, 1) is not retried
    assert policy.is_final(answer, 3)
    assert failure(answer) == message


def test_the_policy_waits_double_with_jitter_and_knows_its_longest():
    """Each wait is the backoff doubled per attempt plus up to half of it; the longest a
    delivery can take is every timeout and every longest wait."""
    policy = RetryPolicy(attempts=4, timeout=2.0, backoff=0.5)
    for attempt, base in ((1, 0.5), (2, 1.0), (3, 2.0)):
        assert all(base <= policy.delay(attempt) <= base * 1.5 for _ in range(50))
    assert policy.longest == 4 * 2.0 + (0.5 + 1.0 + 2.0) * 1.5
    assert not policy.retries(_answer(200)) and policy.is_final(_answer(204), 1)


@pytest.mark.parametrize("fields, message", [
    R({"attempts": 0}, "attempts must be at least 1", id="attempts"),
    R({"timeout": 0}, "timeout must be in", id="timeout"),
    R({"backoff": float("nan")}, "backoff in", id="nan"),
])
def test_a_bad_policy_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**fields)
