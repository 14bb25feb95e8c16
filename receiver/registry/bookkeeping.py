"""The trigger log's bookkeeping for deliveries: open their rows before the first attempt,
record each attempt, close them.

Decides what is written (statuses, errors, deadlines, answers with the secrets blotted out);
the SQL is :mod:`receiver.registry.store`'s, the HTTP :mod:`receiver.registry.transport`'s.
"""

from __future__ import annotations

import functools
import json
import re
import time
import typing as t
from urllib.parse import quote

from .retry import RetryPolicy, failure
from .store import Attempt, Delivery, NewDelivery, Store, iso
from .transport import Answer

__all__ = ["DEADLINE_MARGIN", "INTERRUPTED", "LOGGED_ANSWER", "TriggerLog", "blot", "secrets_in"]

#: The error of a delivery stopped by Ctrl-C or SIGTERM before its final answer.
INTERRUPTED = "interrupted before a final answer"
#: How much of each answer's body the trigger log keeps.
LOGGED_ANSWER = 4096
#: Seconds added to the longest a delivery can take, for its row's deadline. A process that
#: is merely late (stopped, starved, locked out) after its row was closed still writes its
#: outcome: the store takes it over the sweep's.
DEADLINE_MARGIN = 1.0
#: What stands in an answer for a header value it echoed.
MASK = b"******"
#: Header values shorter than this are not blotted out of answers: they are no secrets, and
#: replacing every "1" would garble the answer.
_SHORTEST_SECRET = 4


def blot(data: bytes, secrets: t.Iterable[str]) -> bytes:
    """*data* with every occurrence of each of *secrets* (see :func:`secrets_in`) replaced
    by ``******``."""
    for secret in secrets:
        data = data.replace(secret.encode("utf-8"), MASK)
    return data


@functools.lru_cache(maxsize=256)
def secrets_in(headers: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """The values of *headers* that :func:`blot` replaces: those long enough to be secrets,
    as sent and as a target may echo them: also read as Latin-1 (as WSGI servers hand
    header bytes over), and each of the two JSON-escaped and percent-encoded (either case
    of hex digits). Longest first, so that a form holding another is replaced whole."""
    forms: dict[str, None] = {}
    for _, value in headers:
        if len(value) < _SHORTEST_SECRET:
            continue
        for text in (value, value.encode("utf-8").decode("latin-1")):
            escaped = json.dumps(text)[1:-1]
            quoted = quote(text.encode("utf-8"), safe="")
            for form in (text, escaped, _UNICODE_ESCAPE.sub(_upper, escaped), quoted,
                         _PERCENT.sub(_lower, quoted)):
                forms[form] = None
    return tuple(sorted(forms, key=len, reverse=True))


_UNICODE_ESCAPE = re.compile(r"\\u[0-9a-f]{4}")


_PERCENT = re.compile(r"%[0-9A-F]{2}")


def _upper(match: re.Match[str]) -> str:
    return "\\u" + match.group(0)[2:].upper()


def _lower(match: re.Match[str]) -> str:
    return match.group(0).lower()


class TriggerLog:
    """Writes the trigger log of deliveries into *store*."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def open(
        self, new: t.Sequence[NewDelivery], policy: RetryPolicy, *, waves: int = 1
    ) -> list[Delivery]:
        """A ``pending`` row for each of *new*, committed together before any attempt, each
        with the deadline by which it must have ended: *waves* deliveries one after the other
        (more deliveries than threads), each as long as *policy* allows, and a margin."""
        deadline = time.time() + waves * policy.longest + DEADLINE_MARGIN
        return self.store.open_deliveries(new, deadline=deadline)

    def record(
        self, delivery: Delivery, number: int, answer: Answer, *, final: bool,
        secrets: t.Sequence[str] = (),
    ) -> tuple[Delivery, Attempt]:
        """Log attempt *number* and its *answer*, and the row's new state (``success``,
        ``failed`` when *final*, else still ``pending``), in one transaction."""
        error = failure(answer)
        head = answer.head
        if secrets:
            head = blot(head, secrets)
            error = error and blot(error.encode("utf-8"), secrets).decode("utf-8", "replace")
        attempt = Attempt(
            task_id=delivery.task_id, attempt=number, started_at=iso(answer.started_at),
            duration_ms=answer.duration * 1000, http_status=answer.status, error=error,
            answer=head[:LOGGED_ANSWER],
        )
        status = "success" if answer.ok else "failed" if final else "pending"
        delivery = self.store.update_delivery(
            delivery, status=status, http_status=answer.status, attempts=number, error=error,
            attempt=attempt,
        )
        return delivery, attempt

    def refuse(self, delivery: Delivery, reason: str) -> Delivery:
        """Close a delivery that cannot be made (its rule's URL or headers cannot be sent)
        as ``failed`` with *reason*, without an attempt."""
        return self.store.update_delivery(
            delivery, status="failed", http_status=None, attempts=0, error=reason
        )

    def stop(self, delivery: Delivery) -> Delivery:
        """Close a delivery stopped between attempts (Ctrl-C, SIGTERM) as ``failed``."""
        return self.store.update_delivery(
            delivery, status="failed", http_status=delivery.http_status,
            attempts=delivery.attempts, error=INTERRUPTED,
        )

    def interrupt(self, deliveries: t.Iterable[Delivery]) -> None:
        """Close those of *deliveries* whose rows are still pending as ``failed``."""
        self.store.interrupt_deliveries([d.task_id for d in deliveries], INTERRUPTED)
