"""The retry policy of a delivery: how many attempts, how long each may take, which answers
are tried again, how long to wait between attempts, and how long a delivery can last at most.
Pure: no I/O, no clock."""

from __future__ import annotations

import dataclasses
import functools
import random

from .transport import Answer

__all__ = [
    "DEFAULT_ATTEMPTS",
    "DEFAULT_BACKOFF",
    "DEFAULT_TIMEOUT",
    "MAX_SECONDS",
    "RetryPolicy",
    "failure",
]

DEFAULT_TIMEOUT = 3.0  # seconds per attempt, as Harbor
DEFAULT_ATTEMPTS = 3  # as Harbor 2.x
DEFAULT_BACKOFF = 0.5  # seconds before the second attempt; doubles, plus up to 50% jitter
MAX_SECONDS = 3600.0  # the longest timeout or backoff accepted

#: 4xx answers worth retrying; any other 4xx (and 3xx) is final.
RETRYABLE_4XX = frozenset({408, 429})
#: The jitter added to each wait, as a share of it (up to).
JITTER = 0.5


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """When a delivery is tried again, and when it is over.

    :param attempts: attempts per delivery (at least 1).
    :param timeout: seconds allowed for each attempt.
    :param backoff: seconds before the second attempt; each later wait doubles, plus up to
        50 % jitter.
    """

    attempts: int = DEFAULT_ATTEMPTS
    timeout: float = DEFAULT_TIMEOUT
    backoff: float = DEFAULT_BACKOFF

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if not (0 < self.timeout <= MAX_SECONDS and 0 <= self.backoff <= MAX_SECONDS):
            # NaN fails too.
            raise ValueError(
                f"timeout must be in (0, {MAX_SECONDS}] s and backoff in [0, {MAX_SECONDS}] s"
            )

    def retries(self, answer: Answer) -> bool:
        """Whether *answer* is worth another attempt: no answer at all (refused, reset, timed
        out), a 5xx, a 408 or a 429. A 2xx succeeded; other 4xx and any 3xx are final."""
        status = answer.status
        if status is None:
            return True
        return status >= 500 or status in RETRYABLE_4XX

    def is_final(self, answer: Answer, attempt: int) -> bool:
        """Whether the delivery ends with *answer* to its attempt number *attempt*."""
        return answer.ok or attempt >= self.attempts or not self.retries(answer)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the failed attempt number *attempt*: the backoff doubled
        each time, plus up to 50 % jitter."""
        base = self.backoff * (2 ** (attempt - 1))
        return base + random.uniform(0, base * JITTER)

    @functools.cached_property
    def longest(self) -> float:
        """The longest a delivery can take: every attempt timing out, each wait at its
        longest."""
        waits = sum(self.backoff * (2 ** (n - 1)) * (1 + JITTER) for n in range(1, self.attempts))
        return self.attempts * self.timeout + waits


def failure(answer: Answer) -> str | None:
    """What the trigger log says went wrong with *answer*; ``None`` for a 2xx."""
    if answer.ok:
        return None
    if answer.status is None:
        return answer.error or "no answer"
    if 300 <= answer.status < 400:
        return f"HTTP {answer.status}: redirects are not followed"
    return f"HTTP {answer.status}"
