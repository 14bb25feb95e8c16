"""Runs one app's queued jobs: finds the handler a job names, loads its event, reports.

The glue between :mod:`receiver.jobs` (which knows nothing of handlers) and
:mod:`receiver.handlers.dispatch` (which knows nothing of queues). Handlers are looked up by name
in this process, so every server and ``receiver worker`` must import the same
``RECEIVER_HANDLERS``.
"""

from __future__ import annotations

import json
import logging
import typing as t

from ..core.events import Event
from ..core.schemas import load_event
from ..core.text import printable
from ..jobs import Claim, NotHere, Queue
from ..jobs.worker import Pool
from . import signals
from .dispatch import Handler, call_handler, find_handler, log_failure, send_isolated

if t.TYPE_CHECKING:
    from flask import Flask

__all__ = ["HandlerMissing", "make_pool"]

log = logging.getLogger("receiver")


class HandlerMissing(NotHere):
    """A job names a handler that this process has not registered: the job is left for a
    process that has it, without counting an attempt."""


def make_pool(app: Flask, queue: Queue, config: t.Mapping[str, t.Any]) -> Pool:
    """The worker pool for *app*, with the ``RECEIVER_*`` job settings in *config*.

    :raises ConfigError: a setting is out of range.
    """
    from ..web.settings import number

    def execute(claim: Claim) -> None:
        event = _event(claim)
        receiver = find_handler(app, claim.action, claim.handler)
        if receiver is None:
            raise HandlerMissing(
                f"handler {claim.handler} is not registered in this process "
                "(does every server and worker import the same RECEIVER_HANDLERS?)"
            )
        call_handler(receiver, app, event)

    def on_done(claim: Claim, error: BaseException | None, final: bool, seconds: float) -> None:
        if signals.handler_finished.receivers:
            outcome = "succeeded" if error is None else "dead" if final else "retry"
            send_isolated(signals.handler_finished, app, handler=claim.handler,
                          action=claim.action, outcome=outcome, seconds=seconds)
        if error is None:
            if log.isEnabledFor(logging.INFO):
                # One line per job: built directly, as the request line is (no stack walk).
                log.handle(log.makeRecord(
                    log.name, logging.INFO, __file__, 0,
                    "job %d %s %s succeeded attempt=%d duration=%.1fms",
                    (claim.job_id, claim.handler, claim.action, claim.attempts, seconds * 1e3),
                    None, "job",
                ))
            return
        try:
            event: Event | None = _event(claim)
        except Exception:  # noqa: BLE001  (a body that no longer loads: report without it)
            event = None
        outcome = "dead" if final else "will retry"
        what = f" (job {claim.job_id}, attempt {claim.attempts} of {pool.attempts}, {outcome})"
        if event is not None:
            log_failure(claim.handler, event, error, what)
        else:
            log.error("handler %s failed%s", printable(claim.handler), what, exc_info=error)
        receiver = find_handler(app, claim.action, claim.handler)
        fn = receiver.fn if isinstance(receiver, Handler) else receiver
        send_isolated(signals.handler_failed, app, handler=fn or claim.handler, event=event,
                      exception=error, attempt=claim.attempts, final=final)

    pool = Pool(
        queue, execute, on_done=on_done,
        threads=number(config, "RECEIVER_WORKERS", 2, minimum=0, maximum=256, integer=True),
        attempts=number(config, "RECEIVER_HANDLER_ATTEMPTS", 5, minimum=1, maximum=1000,
                        integer=True),
        backoff=number(config, "RECEIVER_HANDLER_BACKOFF", 2, minimum=0, maximum=600),
        lease=number(config, "RECEIVER_LEASE", 30, minimum=0, above=True, maximum=86400),
        window=number(config, "RECEIVER_DEDUP_WINDOW", 86400, minimum=0),
        # Days, as for the trigger log; at most ten years, as for every duration.
        retention=number(config, "RECEIVER_LOG_RETENTION", 30, minimum=0, above=True,
                         maximum=3650) * 86400.0,
    )
    return pool


def _event(claim: Claim) -> Event:
    if claim.event is not None:
        return t.cast(Event, claim.event)
    return load_event(json.loads(claim.body))
