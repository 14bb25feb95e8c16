"""Worker threads: claim a job, keep its lease alive, run it, and record how it went.

A :class:`Pool` belongs to one app in one process. It knows nothing of handlers: it calls
``execute(claim)``, and any exception (``SystemExit`` included) is the job's failure, retried
with exponential backoff and jitter until the last attempt makes it ``dead``.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import queue as queues
import random
import socket
import threading
import time
import typing as t
import uuid
import weakref

from .base import Claim, NotHere, Queue, QueueUnavailable

__all__ = ["Pool", "backoff_delay"]

log = logging.getLogger("receiver.jobs")

#: The longest wait between two attempts of a job.
MAX_BACKOFF = 600.0

#: How often finished jobs past their keeping and old dedup ids are purged (see Pool.purge).
PURGE_EVERY = 300.0

#: How long dead jobs (and succeeded ones, if the dedup window is longer) are kept by default:
#: ``RECEIVER_LOG_RETENTION``'s default of 30 days.
RETENTION = 30 * 86400.0

#: Successes recorded in one write, at most; a busy worker records them in batches.
SUCCESS_BATCH = 32


def backoff_delay(first: float, attempt: int) -> float:
    """The wait after failed *attempt* (1-based): ``first * 2**(attempt-1)``, at most
    :data:`MAX_BACKOFF`, then scattered by ±20 % so that retries do not arrive in step."""
    delay = min(first * 2 ** max(attempt - 1, 0), MAX_BACKOFF)
    return delay * random.uniform(0.8, 1.2)


Execute = t.Callable[[Claim], None]
OnDone = t.Callable[[Claim, "BaseException | None", bool, float], None]


class Pool:
    """*threads* worker threads running the jobs of *queue*.

    :param execute: runs one job; raising anything means it failed.
    :param on_done: told of every run: ``(claim, exception or None, final, seconds)``;
        ``final`` is true when a failure made the job dead.
    :param attempts: runs of one job before it is dead.
    :param backoff: the first retry's delay in seconds.
    :param lease: seconds a job may go without a heartbeat before another worker takes it.
    :param window: seconds to keep succeeded jobs and dedup ids.
    :param retention: seconds to keep finished jobs at most: dead ones, and succeeded ones
        when *window* is longer.
    """

    def __init__(self, queue: Queue, execute: Execute, *, threads: int = 2, attempts: int = 5,
                 backoff: float = 2.0, lease: float = 30.0, window: float = 86400.0,
                 retention: float = RETENTION, on_done: OnDone | None = None) -> None:
        self.queue = queue
        self.execute = execute
        self.on_done = on_done
        self.threads = threads
        self.attempts = attempts
        self.backoff = backoff
        self.lease = lease
        self.window = window
        self.retention = retention
        # Idle threads look for due jobs (retries, other processes' jobs, lost leases) this
        # often; a job queued by this process wakes them at once.
        self.poll = max(0.02, min(0.5, lease / 4, backoff / 2 if backoff else 0.5))
        #: Start in the child after the next fork rather than now (gunicorn's --preload).
        self.start_after_fork = False
        self._reset()
        _pools.add(self)

    def _reset(self) -> None:
        # Held claims (see below), and None to wake a thread: a SimpleQueue hands one to
        # one waiting thread without the lock traffic of a Condition.
        self._inbox: queues.SimpleQueue[Claim | None] = queues.SimpleQueue()
        self._stopping = threading.Event()
        self._beat_stop = threading.Event()
        self._running: dict[int, Claim] = {}
        self._running_lock = threading.Lock()
        # Jobs this process's requests queued already claimed for us (no claim needed), and
        # successes not yet written: both still hold their leases, so the heartbeat renews them.
        self._held: dict[int, Claim] = {}
        self._succeeded: list[Claim] = []
        self._threads: list[threading.Thread] = []
        self._beat_thread: threading.Thread | None = None
        self._identity = f"{socket.gethostname()}/{os.getpid()}"
        self.started = False

    # -- life --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker threads and the heartbeat thread (daemons); idempotent."""
        if self.started or self.threads <= 0:
            return
        self.started = True
        for n in range(self.threads):
            thread = threading.Thread(target=self._work, name=f"receiver-worker-{n + 1}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        self._beat_thread = threading.Thread(target=self._beat, name="receiver-heartbeat",
                                             daemon=True)
        self._beat_thread.start()
        log.info("%d worker thread(s) take jobs from %s", self.threads, self.queue.url)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop taking jobs and wait up to *timeout* seconds (``None``: as long as it takes)
        for the running ones; the rest stay queued. Returns whether every thread ended."""
        self._stopping.set()
        for _ in self._threads:
            self.notify()
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(left)
        ended = not any(thread.is_alive() for thread in self._threads)
        if ended:
            self._flush_successes()
            self._release_held()
        if ended and self._beat_thread is not None:
            # Leases are renewed until the last running job has finished.
            self._beat_stop.set()
            self._beat_thread.join()
        return ended

    def notify(self) -> None:
        """A job was queued in this process: wake an idle thread now."""
        self._inbox.put(None)

    def hold(self, jobs: int) -> tuple[str, float] | None:
        """The ``hold`` for :meth:`Queue.submit` when this process has a free thread for each
        of the *jobs* now: it saves each a claim. ``None`` when the threads are busy or
        stopping, so that any worker anywhere may take the jobs."""
        if not self.started or self._stopping.is_set():
            return None
        if len(self._held) + len(self._running) + jobs > self.threads:
            return None
        return self._owner(), self.lease

    def accept(self, claims: t.Iterable[Claim], event: t.Any = None) -> None:
        """Run *claims*, which :meth:`Queue.submit` made for :meth:`hold`.

        :param event: their event, already loaded, so that the workers need not load it again.
        """
        claims = [dataclasses.replace(c, event=event) for c in claims]
        if not claims:
            return
        for claim in claims:
            self._held[claim.job_id] = claim
            self._inbox.put(claim)

    def _after_fork(self) -> None:
        # Threads do not survive fork(). A pool waiting for the fork that gunicorn's --preload
        # makes starts in the child; a pool that was running stays stopped there (a handler
        # that forks must not make a second worker), as does the parent's copy of the queue.
        wanted = self.start_after_fork and not self.started
        self._reset()
        self.queue.close()
        if wanted:
            self.start()
        else:
            self._stopping.set()

    # -- work --------------------------------------------------------------------------------

    def run_pending(self, limit: int | None = None) -> list[int]:
        """Run due jobs in this thread until none is due (or *limit* ran); returns their ids
        in the order they ran. For tests and one-shot use: a retry not yet due is not
        waited for."""
        ran: list[int] = []
        while limit is None or len(ran) < limit:
            claim = self.queue.claim(self._owner(), self.lease)
            if claim is None:
                break
            self._run(claim)
            self._flush_successes()
            ran.append(claim.job_id)
        return ran

    def purge(self) -> int:
        """Forget, now, the finished jobs past their keeping (see :meth:`Queue.purge`);
        returns how many went. The heartbeat thread calls it every :data:`PURGE_EVERY`
        seconds."""
        return self.queue.purge(self.window, self.retention)

    def _owner(self) -> str:
        return f"{self._identity}/{uuid.uuid4().hex}"

    def _work(self) -> None:
        failing = False
        last_poll = 0.0
        while not self._stopping.is_set():
            # Held claims first, then the queue (retries, other processes' jobs, lost leases)
            # once per poll interval, else wait for either.
            claim = self._next_held(block=False)
            if claim is None and time.monotonic() - last_poll >= self.poll:
                self._flush_successes()
                last_poll = time.monotonic()
                try:
                    claim = self.queue.claim(self._owner(), self.lease)
                    if failing:
                        log.warning("the queue %s answers again", self.queue.url)
                        failing = False
                except QueueUnavailable as exc:
                    if not failing:
                        log.error("cannot take jobs: %s", exc)
                        failing = True
                except Exception:  # never let a worker thread die
                    log.exception("cannot take jobs from %s", self.queue.url)
                if claim is not None:
                    last_poll = 0.0  # there may be more
            if claim is None:
                claim = self._next_held(block=True, timeout=self.poll if not failing else 1.0)
            if claim is None:
                continue
            try:
                self._run(claim)
            except BaseException:  # a reporting observer raised: keep working
                log.exception("job %d: reporting its outcome failed", claim.job_id)

    def _next_held(self, block: bool, timeout: float = 0.0) -> Claim | None:
        """A claim this process's requests handed over, or ``None`` (a wake-up, or nothing)."""
        try:
            claim = self._inbox.get(block, timeout) if block else self._inbox.get_nowait()
        except queues.Empty:
            return None
        if claim is not None and self._stopping.is_set():
            self._inbox.put(claim)  # stop() gives it back to the queue
            return None
        if claim is not None:
            self._held.pop(claim.job_id, None)
        return claim

    def _run(self, claim: Claim) -> None:
        if claim.lost > self.attempts:
            # Its worker died more often than it may run: a job that kills its worker (out of
            # memory, say) must not take down worker after worker for ever.
            message = (f"lost with its worker, or passed over by a worker without its "
                       f"handler, {claim.lost} times; not run again")
            self._record(claim, self.queue.bury, claim, message)
            self._done(claim, RuntimeError(message), True, 0.0)
            return
        with self._running_lock:
            self._running[claim.job_id] = claim
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            self.execute(claim)
        except BaseException as exc:  # noqa: BLE001  (a handler cannot stop the worker)
            error = exc
        finally:
            with self._running_lock:
                self._running.pop(claim.job_id, None)
        seconds = time.perf_counter() - started
        if isinstance(error, NotHere):
            # Not a run: another process may have what it needs. Queued again after a
            # backoff, its attempt uncounted; counted as lost, so that a job no process can
            # run ends dead (see above) rather than queued for ever.
            delay = backoff_delay(self.backoff, claim.lost + 1)
            log.warning("job %d: %s; queued again in %.1fs for a process that has it",
                        claim.job_id, error, delay)
            self._record(claim, self.queue.pass_on, claim, str(error), delay)
            return
        final = False
        kept: bool | None = True
        # A run lost with its worker counts as an attempt, but a lost last attempt is run
        # again: every job gets a run that ends with its handler's own outcome.
        last = claim.attempts >= self.attempts
        if error is None:
            with self._running_lock:
                self._succeeded.append(claim)
                full = len(self._succeeded) >= SUCCESS_BATCH
            if full:
                self._flush_successes()
        else:
            message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
            final = last
            if final:
                kept = self._record(claim, self.queue.bury, claim, message)
            else:
                delay = backoff_delay(self.backoff, claim.attempts)
                kept = self._record(claim, self.queue.retry_later, claim, message, delay)
        if kept is False:
            log.warning("job %d (%s) ran after its lease was lost; another worker has it now, "
                        "so this run's outcome is dropped", claim.job_id, claim.handler)
        self._done(claim, error, final, seconds)

    def _record(self, claim: Claim, fn: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
        # The outcome must reach the queue; retry while the queue is briefly unreachable.
        delay = 0.05
        while True:
            try:
                return fn(*args)
            except QueueUnavailable as exc:
                if self._stopping.is_set() and delay > 1:
                    log.error("job %d: outcome not recorded (%s); its lease will expire and "
                              "it will run again", claim.job_id, exc)
                    return None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _flush_successes(self) -> None:
        """Write the successes not yet written, in one step."""
        with self._running_lock:
            batch, self._succeeded = self._succeeded, []
        if not batch:
            return
        lost = self._record(batch[0], self.queue.succeed_all, batch)
        for job_id in lost or ():
            log.warning("job %d ran after its lease was lost; another worker has it now, so "
                        "this run's outcome is dropped", job_id)

    def _release_held(self) -> None:
        while True:
            try:
                self._inbox.get_nowait()
            except queues.Empty:
                break
        held, self._held = list(self._held.values()), {}
        if held:
            try:
                self.queue.release(held)
            except QueueUnavailable as exc:
                log.error("could not give back %d job(s) (%s); they run again once their "
                          "lease expires", len(held), exc)

    def _done(self, claim: Claim, error: BaseException | None, final: bool, seconds: float) -> None:
        if self.on_done is None:
            return
        try:
            self.on_done(claim, error, final, seconds)
        except BaseException:  # an observer's sys.exit() must not end the thread
            log.exception("reporting job %d failed", claim.job_id)

    def _beat(self) -> None:
        last_purge = 0.0
        interval = max(0.01, self.lease / 3)
        while not self._beat_stop.wait(interval):
            try:
                self._flush_successes()  # first: a success written now is no lease to renew
                with self._running_lock:
                    claims = [*self._running.values(), *self._succeeded]
                claims.extend(list(self._held.values()))
                lost = self.queue.heartbeat(claims, self.lease)
                if lost:
                    # A job that ended after the snapshot above (its success written by a
                    # worker thread meanwhile) is no longer running: that is no lost lease.
                    with self._running_lock:
                        ours = {*self._running, *(c.job_id for c in self._succeeded)}
                    ours.update(self._held)
                    for job_id in lost:
                        if job_id in ours:
                            log.warning("job %d: lease lost; another worker may run it again",
                                        job_id)
                if time.monotonic() - last_purge > PURGE_EVERY:
                    last_purge = time.monotonic()
                    self.purge()
            except Exception as exc:  # noqa: BLE001  (the heartbeat thread must not die)
                log.error("heartbeat failed: %s", exc)


_pools: weakref.WeakSet[Pool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for pool in list(_pools):
        pool._after_fork()


def _stop_all() -> None:
    # At exit (gunicorn's SIGTERM ends the worker's loop, then the interpreter exits): let
    # running jobs finish; gunicorn's graceful timeout bounds the wait with SIGKILL.
    for pool in list(_pools):
        if pool.started:
            pool.stop()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_stop_all)
