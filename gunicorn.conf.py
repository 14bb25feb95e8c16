"""gunicorn's settings for the receiver; ``gunicorn wsgi:app`` reads this file by itself when
it starts in this directory (elsewhere: ``gunicorn -c /path/to/gunicorn.conf.py wsgi:app``).

Environment: ``RECEIVER_BIND`` (default ``127.0.0.1:8000``; several addresses separated by
commas), ``WEB_CONCURRENCY`` (workers), ``RECEIVER_METRICS=off`` (no metrics directory),
``RECEIVER_LOG_FORMAT=json`` (gunicorn's lines as JSON too).
Any other setting: ``GUNICORN_CMD_ARGS="--max-requests 200"`` or the command line, which both
win over this file. The README's "Deploying" section gives the reasons for each value.
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
import typing as t


def _cpus() -> int:
    """The CPUs this process may run on (a cpuset or ``taskset`` narrows them)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# Where to listen.
bind = [a.strip() for a in os.environ.get("RECEIVER_BIND", "").split(",") if a.strip()] or [
    "127.0.0.1:8000"
]

# One greenlet per connection: a client that sends slowly holds a greenlet, not a worker.
# gevent's monkey-patching also turns the receiver's job threads into greenlets, so a
# handler that holds the process (CPU, a blocking C call, fcntl.flock) holds its answers
# too: run such handlers with RECEIVER_WORKERS=0 and `receiver worker` (README).
worker_class = "gevent"
# Connections (greenlets) per worker; more wait in the kernel's backlog.
worker_connections = 1000
# A process per CPU, and one more so that a worker that is busy in a handler's long step,
# or restarting, still leaves every CPU serving. ``threads`` is ignored by gevent workers.
workers = int(os.environ.get("WEB_CONCURRENCY") or max(2, _cpus() + 1))

# gevent workers: the seconds allowed for a request's line and headers, and for an idle
# keep-alive connection. The registry sends its headers at once and gives up after 3 s.
keepalive = 5
# A worker whose event loop has not run for this long is killed and replaced. It is no
# request timeout (answers take milliseconds). A worker replaced after max_requests also
# gets this long to finish its running jobs; its successor starts once it has exited.
timeout = 30
# On SIGTERM: the seconds running jobs get to finish (the rest stay queued); less than
# Kubernetes' default grace period of 30 s, so that gunicorn, not the kubelet, ends them.
graceful_timeout = 20

# Replace a worker after 1000 to 1100 requests (probes count), which bounds slow leaks.
max_requests = 1000
max_requests_jitter = 100

# RECEIVER_LOG_FORMAT=json: gunicorn's own lines are JSON too, in the receiver's format. As
# in text, the root logger gets no handler (the receiver sets up its own) and there is no
# access log (the receiver logs each request).
if os.environ.get("RECEIVER_LOG_FORMAT", "").strip().lower() == "json":
    logconfig_dict = {
        "root": {"handlers": []},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": [], "propagate": False},
        },
        "formatters": {"generic": {"()": "receiver.web.logs.json_formatter"}},
    }


# -- prometheus_client's multiprocess mode -----------------------------------------------------

_DIR = "PROMETHEUS_MULTIPROC_DIR"


def _metrics_on() -> bool:
    return os.environ.get("RECEIVER_METRICS", "").strip().lower() not in {"false", "0", "no", "off"}


def on_starting(server: t.Any) -> None:
    """Give the workers a metrics directory: a new private one, or the given one emptied."""
    path = os.environ.get(_DIR)
    if path:
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    elif _metrics_on():
        prefix = f"receiver-metrics-{os.getuid()}-"
        path = tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-")  # mode 0700
        # A master killed with SIGKILL never ran on_exit: remove what it left.
        from receiver.web.metrics import remove_stale

        remove_stale(os.path.dirname(path), prefix, keep=path)
        os.environ[_DIR] = path  # inherited by the workers
        server.receiver_metrics_dir = path  # on the arbiter: survives a reload (HUP)


def child_exit(server: t.Any, worker: t.Any) -> None:
    """Drop a dead worker's live gauges from the metrics directory."""
    if not os.environ.get(_DIR):
        return
    try:
        from prometheus_client import multiprocess
    except ImportError:
        return
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: t.Any) -> None:
    """Remove the metrics directory if on_starting made it, and the marker of workers
    that could not load the app (see receiver.web.app.stop_gunicorn)."""
    path = getattr(server, "receiver_metrics_dir", None)
    if path:
        shutil.rmtree(path, ignore_errors=True)
    for marker in glob.glob(os.path.join(tempfile.gettempdir(),
                                         f"receiver-boot-{os.getuid()}-{os.getpid()}-*")):
        try:
            os.remove(marker)
        except OSError:
            pass  # gone already: nothing to clean
