"""The receiver's queue: ``worker`` and ``jobs``."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import typing as t

import click

from ..jobs import JOB_STATUSES, Job, Queue, QueueError, open_queue
from ..jobs.base import iso
from .common import UserError, _print_table, _Terminated, emit_json

# --- the receiver's queue ------------------------------------------------------------------

_QUEUE_HELP = ("The receiver's queue: sqlite:///PATH or redis://HOST:PORT/DB "
               "[default: sqlite under $XDG_DATA_HOME/receiver].")
_queue_option = click.option("--queue", "queue_url", envvar="RECEIVER_QUEUE", show_envvar=True,
                             metavar="URL", help=_QUEUE_HELP)


def _queue(ctx: click.Context, url: str | None, existing: bool = False) -> Queue:
    """The queue at *url*, opened once per command.

    :param existing: refuse an SQLite file that does not exist, rather than create one.
    """
    if url == "sync":
        raise UserError("RECEIVER_QUEUE is 'sync': handlers run in the request and there is no "
                        "queue; give --queue URL")
    try:
        queue = open_queue(url)
    except QueueError as exc:
        raise UserError(str(exc)) from None
    if existing:
        _must_exist(queue)
    ctx.call_on_close(queue.close)
    return queue


def _must_exist(queue: Queue) -> None:
    """Refuse an SQLite queue whose file does not exist, rather than create one."""
    path = getattr(queue, "path", None)
    if path is not None and not path.exists():
        raise UserError(f"no queue at {path}: a server creates it when it starts; is "
                        "--queue (RECEIVER_QUEUE) what the server uses?")


@click.command()
@click.option("--threads", type=click.IntRange(1, 256), default=2, show_default=True,
              help="Jobs run at once.")
@_queue_option
@click.pass_context
def worker(ctx: click.Context, threads: int, queue_url: str | None) -> None:
    """Run the receiver's handler jobs in the foreground, until Ctrl-C or SIGTERM.

    For servers started with RECEIVER_WORKERS=0, which only queue. It imports the same
    RECEIVER_HANDLERS as the servers (from the current directory too, as gunicorn does)
    and reads the same RECEIVER_* settings (attempts, backoff, lease). On Ctrl-C or SIGTERM
    it stops taking jobs, lets the running ones finish, and leaves the rest queued.
    """
    from flask import Flask

    from ..handlers.runner import make_pool
    from ..web.app import import_handlers
    from ..web.logs import configure_logging
    from ..web.settings import ConfigError, load_config

    queue = _queue(ctx, queue_url)
    config = load_config({"RECEIVER_WORKERS": threads})
    if not config.get("RECEIVER_HANDLERS"):
        raise UserError("RECEIVER_HANDLERS is not set: a worker runs the handlers the servers "
                        "queue jobs for, so it needs the same handler modules")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        configure_logging(config.get("RECEIVER_LOG_LEVEL"), config.get("RECEIVER_LOG_FORMAT"))
        modules = import_handlers(config["RECEIVER_HANDLERS"])
        app = Flask("receiver")  # the sender of the handlers' signals, as in a server
        app.config.update(config)
        pool = make_pool(app, queue, config)
    except ConfigError as exc:
        raise UserError(f"configuration error: {exc}") from None
    _must_exist(queue)  # a mistyped --queue must not make a queue of its own
    queue.check()
    as_json = str(config.get("RECEIVER_LOG_FORMAT") or "").lower() == "json"

    def say(line: str) -> None:
        if as_json:  # one JSON object per line, these too
            logging.getLogger("receiver").info(line)
        else:
            click.echo(line, err=True)
    try:
        # From here on a SIGTERM stops the pool gracefully, even one that arrives while the
        # threads just started take their first jobs.
        pool.start()
        say(f"worker: {threads} thread(s) on {queue.url}, handlers from "
            f"{', '.join(modules)}; Ctrl-C to stop")
        threading.Event().wait()
    except (KeyboardInterrupt, _Terminated):
        say("worker: stopping; waiting for the running jobs")
    finally:
        pool.stop()
    say("worker: stopped")


@click.group(invoke_without_command=True)
@click.option("--status", type=click.Choice(JOB_STATUSES), help="Only jobs with this status.")
@click.option("--event", "event_id", metavar="ID",
              help="Only the jobs of this event: its id, or the id's beginning as the table shows.")
@click.option("--handler", metavar="NAME", help="Only jobs of this handler (module.function).")
@click.option("--limit", type=click.IntRange(1, 100000), default=20, show_default=True,
              help="At most this many jobs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@_queue_option
@click.pass_context
def jobs(ctx: click.Context, status: str | None, event_id: str | None, handler: str | None,
         limit: int, as_json: bool, queue_url: str | None) -> None:
    """List the receiver's handler jobs, newest first; `jobs show` and `jobs retry` below.

    \b
      receiver jobs --status dead
      receiver jobs show 12
      receiver jobs retry --dead
    """
    ctx.ensure_object(dict)["queue_url"] = queue_url
    if ctx.invoked_subcommand is not None:
        return
    queue = _queue(ctx, queue_url, existing=True)
    if event_id is not None and len(event_id) < 32:
        event_id = _full_event_id(queue, event_id)
    found = queue.jobs(status=status, event_id=event_id, handler=handler, limit=limit)
    if as_json:
        emit_json([job.to_json() for job in found])
        return
    if not found:
        click.echo("no jobs" + (" for that selection" if status or event_id or handler else ""),
                   err=True)
        return
    table: list[tuple[t.Any, ...]] = [("JOB", "EVENT", "HANDLER", "ACTION", "REPOSITORY",
                                       "TAGS", "STATUS", "ATTEMPTS", "UPDATED", "ERROR")]
    for job in found:
        # A succeeded job's last error is history: --json and `jobs show` keep it.
        error = "" if job.status == "succeeded" else job.error or ""
        table.append((job.job_id, job.event_id[:12], job.handler, job.action, job.repository or "-",
                      ",".join(job.tags) or "-", job.status, job.attempts, iso(job.updated_at),
                      error))
    _print_table(table)


def _full_event_id(queue: Queue, prefix: str) -> str:
    """The event id that *prefix* begins, among the newest jobs; a UserError if ambiguous."""
    ids = {job.event_id for job in queue.jobs(limit=10000) if job.event_id.startswith(prefix)}
    if len(ids) > 1:
        raise UserError(f"event id {prefix!r} is ambiguous: give more of it")
    return ids.pop() if ids else prefix


# The subcommands' own --queue reads no environment variable: the group's --queue (or
# RECEIVER_QUEUE) applies unless it is given here.
_sub_queue_option = click.option("--queue", "queue_url", metavar="URL", help=_QUEUE_HELP)


def _queue_of(ctx: click.Context, queue_url: str | None) -> Queue:
    return _queue(ctx, queue_url or ctx.obj.get("queue_url"), existing=True)


@jobs.command("show")
@click.argument("job_id", type=click.IntRange(1, 2**63 - 1))
@click.option("--json", "as_json", is_flag=True, help="Print the job, its event's body included.")
@_sub_queue_option
@click.pass_context
def jobs_show(ctx: click.Context, job_id: int, as_json: bool, queue_url: str | None) -> None:
    """Show one job: its handler, status, attempts, last error and the event's body."""
    job = _queue_of(ctx, queue_url).job(job_id)
    if job is None:
        raise UserError(f"no job {job_id}")
    body = _body(job)
    if as_json:
        emit_json({**job.to_json(), "body": body})
        return
    for key, value in job.to_json().items():
        if key == "tags":
            value = ",".join(value) or "-"
        click.echo(f"{key + ':':12} {'-' if value is None else value}")
    if job.status == "queued" and job.run_at is not None:
        click.echo(f"{'next run:':12} {iso(job.run_at)}")
    click.echo("body:")
    click.echo(json.dumps(body, indent=2, ensure_ascii=False))


def _body(job: Job) -> t.Any:
    try:
        return json.loads(job.body or "null")
    except ValueError:
        return job.body


@jobs.command("retry")
@click.argument("job_ids", nargs=-1, type=click.IntRange(1, 2**63 - 1), metavar="JOB_ID...")
@click.option("--dead", "every_dead", is_flag=True, help="Queue every dead job again.")
@_sub_queue_option
@click.pass_context
def jobs_retry(ctx: click.Context, job_ids: tuple[int, ...], every_dead: bool,
               queue_url: str | None) -> None:
    """Queue dead jobs again with their attempts reset: JOB_ID... or --dead for all.

    A running server or `receiver worker` picks them up within a second.
    """
    if job_ids and every_dead:
        raise UserError("give JOB_ID... or --dead, not both")
    if not job_ids and not every_dead:
        raise UserError("give the JOB_IDs to queue again, or --dead for every dead job")
    queue = _queue_of(ctx, queue_url)
    queued = queue.requeue(None if every_dead else job_ids)
    for job_id in queued:
        click.echo(f"job {job_id} queued again")
    if every_dead and not queued:
        click.echo("no dead jobs", err=True)
    missed = [job_id for job_id in job_ids if job_id not in queued]
    for job_id in missed:
        job = queue.job(job_id)
        reason = "no such job" if job is None else f"it is {job.status}, not dead"
        click.echo(f"error: job {job_id} not queued again: {reason}", err=True)
    if missed:
        raise SystemExit(1)
