"""The queue's interface: the records it keeps and the operations every engine provides.

An engine (:mod:`.sqlite`, :mod:`.redis`) stores events and their jobs durably; the
:class:`~receiver.jobs.worker.Pool` claims and runs them. Nothing here knows about Flask,
HTTP or handlers: a job names its handler, and whoever runs it looks the name up.
"""

from __future__ import annotations

import abc
import dataclasses
import typing as t
from datetime import datetime, timezone

__all__ = [
    "JOB_STATUSES",
    "Claim",
    "EventRecord",
    "Job",
    "NotHere",
    "Queue",
    "QueueStats",
    "QueueUnavailable",
    "Submitted",
    "iso",
]

#: A job's life: queued → running → succeeded, or back to queued for a retry, or dead.
JOB_STATUSES = ("queued", "running", "succeeded", "dead")


@dataclasses.dataclass(frozen=True)
class QueueStats:
    """A snapshot of a queue, for the metrics."""

    #: Jobs by status (``queued``, ``running``, ``succeeded``, ``dead``).
    counts: dict[str, int]
    #: Seconds since the oldest queued job became due; 0 when none is due.
    oldest_queued_age: float


class NotHere(LookupError):
    """Raised by a job's run when this process cannot run it (its handler is not registered
    here): the job is left for another process, without counting an attempt."""


class QueueUnavailable(RuntimeError):
    """The queue cannot be reached or written; the message names the queue, never a password.

    :param reason: what went wrong, without the queue's address (for ``/readyz``).
    """

    def __init__(self, url: str, reason: str, what: str = "failed") -> None:
        super().__init__(f"the queue {url} {what}: {reason}")
        self.reason = reason


def iso(seconds: float | None) -> str | None:
    """Unix seconds as ISO 8601 UTC with milliseconds and ``Z``, as the trigger log writes."""
    if seconds is None:
        return None
    stamp = datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True)
class EventRecord:
    """An accepted event as the queue keeps it.

    :param body: the delivery's JSON text, from which a worker loads the event again.
    """

    event_id: str
    action: str
    repository: str
    tags: tuple[str, ...]
    body: str


@dataclasses.dataclass(frozen=True)
class Submitted:
    """What :meth:`Queue.submit` did: nothing for a duplicate, else the jobs it queued, and
    the claims on them when it was asked to hold them for this process's workers."""

    duplicate: bool
    job_ids: tuple[int, ...] = ()
    claims: tuple[Claim, ...] = ()


@dataclasses.dataclass(frozen=True)
class Claim:
    """A job leased to one worker until it finishes or its lease runs out.

    :param owner: the lease's token; only its holder can finish the job.
    :param attempts: the runs so far, this one included.
    :param lost: how many of those were lost with their worker (taken over after a lease ran
        out).
    :param event: the event already loaded from *body*, when this process queued it.
    """

    job_id: int
    event_id: str
    action: str
    handler: str
    body: str
    attempts: int
    owner: str
    lost: int = 0
    event: t.Any = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Job:
    """A job as ``receiver jobs`` shows it; times are Unix seconds."""

    job_id: int
    event_id: str
    action: str
    repository: str
    tags: tuple[str, ...]
    handler: str
    status: str
    attempts: int
    error: str | None
    created_at: float
    updated_at: float
    run_at: float | None = None
    body: str | None = None

    def to_json(self) -> dict[str, t.Any]:
        """The keys of ``receiver jobs --json``, exactly."""
        return {
            "job_id": self.job_id,
            "event_id": self.event_id,
            "action": self.action,
            "repository": self.repository,
            "tags": list(self.tags),
            "handler": self.handler,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
        }


def one_line(error: str, limit: int = 500) -> str:
    """An error message as one bounded line, for a job's ``error``."""
    text = " ".join(error.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Queue(abc.ABC):
    """Durable events and jobs. Every method is safe to call from several threads and
    processes at once; every state change of a job is atomic."""

    #: Where the queue is, for messages: no password.
    url: str

    @abc.abstractmethod
    def submit(self, event: EventRecord, handlers: t.Sequence[str], window: float,
               hold: tuple[str, float] | None = None) -> Submitted:
        """Record *event* and one queued job per handler, in one atomic step, unless an
        event with the same id was submitted within *window* seconds (a duplicate).

        :param hold: ``(owner, lease)``: create the jobs already claimed by *owner* (their
            first attempt), so that this process's workers run them without claiming; if
            the process dies, the lease runs out and any worker takes them over.
        """

    @abc.abstractmethod
    def release(self, claims: t.Iterable[Claim]) -> None:
        """Give back held claims that never ran: queued again, the attempt not counted."""

    @abc.abstractmethod
    def claim(self, owner: str, lease: float) -> Claim | None:
        """Lease the next job that is due (queued and its time come, or running with an
        expired lease: its worker died) to *owner* for *lease* seconds, counting an attempt,
        and for a takeover a lost run too."""

    @abc.abstractmethod
    def heartbeat(self, claims: t.Iterable[Claim], lease: float) -> list[int]:
        """Extend the leases of *claims* still held; returns the ids of those lost."""

    @abc.abstractmethod
    def succeed_all(self, claims: t.Sequence[Claim]) -> list[int]:
        """Mark the jobs succeeded, in one step; returns the ids whose lease was lost
        (those are left as they are)."""

    def succeed(self, claim: Claim) -> bool:
        """Mark one job succeeded; ``False`` (and no change) when the lease was lost."""
        return not self.succeed_all([claim])

    @abc.abstractmethod
    def retry_later(self, claim: Claim, error: str, delay: float) -> bool:
        """Queue the job again in *delay* seconds, keeping *error*; ``False`` if lost."""

    @abc.abstractmethod
    def pass_on(self, claim: Claim, error: str, delay: float) -> bool:
        """Queue the job again in *delay* seconds, keeping *error*, without counting the
        attempt (it did not run here) but counting it as lost, which bounds how often a job
        can be passed over; ``False`` if lost."""

    @abc.abstractmethod
    def bury(self, claim: Claim, error: str) -> bool:
        """Mark the job dead with *error*; ``False`` if the lease was lost."""

    @abc.abstractmethod
    def jobs(self, *, status: str | None = None, event_id: str | None = None,
             handler: str | None = None, limit: int = 50) -> list[Job]:
        """The newest jobs first, filtered."""

    @abc.abstractmethod
    def job(self, job_id: int) -> Job | None:
        """One job with its event's body, or ``None``."""

    @abc.abstractmethod
    def requeue(self, job_ids: t.Iterable[int] | None) -> list[int]:
        """Queue dead jobs again with their attempts reset: those of *job_ids*, or every
        dead job when it is ``None``. Returns the ids queued."""

    @abc.abstractmethod
    def purge(self, window: float, retention: float | None = None) -> int:
        """Forget finished jobs, and the events and dedup ids no longer needed; returns how
        many jobs went. Queued and running jobs are never touched.

        - succeeded jobs finished more than *window* seconds ago (or *retention*, if shorter);
        - dead jobs that died more than *retention* seconds ago (``None``: kept);
        - events without a job left, and dedup ids, older than *window*: a duplicate within
          the window is still one, whatever the retention.
        """

    @abc.abstractmethod
    def check(self) -> None:
        """Raise :class:`QueueUnavailable` unless the queue can be read and written now."""

    @abc.abstractmethod
    def stats(self) -> QueueStats:
        """How many jobs there are by status, and how long the oldest due job has waited."""

    def close(self) -> None:  # noqa: B027  (optional: an engine without connections has none)
        """Release connections; the queue may be used again afterwards."""
