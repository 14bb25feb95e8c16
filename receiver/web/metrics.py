"""``GET /metrics``: the receiver's Prometheus metrics, whole across gunicorn's workers.

prometheus_client's multiprocess mode keeps each process's counts in files of one
directory (``PROMETHEUS_MULTIPROC_DIR``) and adds them up at scrape time, so a scrape that
lands on any worker sees every worker's counts, including those of workers that have
exited (a recycled worker's counts stay). The shipped ``gunicorn.conf.py`` makes that
directory when gunicorn starts and clears it at exit; started without it
(``gunicorn 'receiver:create_app()'`` from another directory) the workers agree on a
directory named after their master process. Outside gunicorn (a test client, ``flask
run``) the counts are this process's own.

The job gauges are read from the queue at scrape time, so they are the same whichever
worker answers. ``RECEIVER_METRICS=false`` turns all of it off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import typing as t

if t.TYPE_CHECKING:
    from ..core.events import Event
    from ..jobs import Queue

__all__ = ["Metrics", "metrics_directory", "remove_stale"]

log = logging.getLogger("receiver")

ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Handler durations, in seconds: from a quick notification to a slow rollout.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def _gunicorn_master_pid() -> int | None:
    """The pid of the gunicorn arbiter this process belongs to, or ``None`` outside gunicorn."""
    if "gunicorn.arbiter" not in sys.modules:
        return None
    from .app import _in_gunicorn_master

    if _in_gunicorn_master():  # --preload: the app is loaded in the arbiter itself
        return os.getpid()
    return os.getppid() if "gunicorn.workers.base" in sys.modules else None


def _start_time(pid: int) -> str:
    """When process *pid* started (clock ticks since boot, Linux), to tell a reused pid
    from the process that had it; empty where /proc is not there."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def metrics_directory() -> str | None:
    """The multiprocess directory to use, exported as ``PROMETHEUS_MULTIPROC_DIR``: the one
    already set, or, under gunicorn, one per master process; ``None`` outside gunicorn.

    :raises OSError: the directory cannot be made, or is not this user's own.
    """
    given = os.environ.get(ENV) or os.environ.get(ENV.lower())
    if given:
        return given
    master = _gunicorn_master_pid()
    if master is None:
        return None
    prefix = f"receiver-metrics-{os.getuid()}-"
    path = os.path.join(tempfile.gettempdir(), f"{prefix}{master}-{_start_time(master)}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    else:
        remove_stale(os.path.dirname(path), prefix, keep=path)
    info = os.lstat(path)
    import stat

    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        # /tmp is shared: a directory made by someone else could feed us their numbers.
        raise OSError(f"{path} is not a private directory of this user")
    os.environ[ENV] = path
    return path


def remove_stale(parent: str, prefix: str, keep: str) -> None:
    """Remove the directories and files ``<prefix><pid>-...`` in *parent* whose gunicorn
    master (that pid) is gone: one killed before it could clean up after itself."""
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            if not name.startswith(prefix) or os.path.join(parent, name) == keep:
                continue
            pid = name[len(prefix):].split("-", 1)[0]
            if not pid.isdigit():
                continue
            path = os.path.join(parent, name)
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.remove(path)
            except OSError:
                pass  # alive, someone else's


class Metrics:
    """The receiver's counters and histogram. prometheus_client's metrics belong to the
    process, so every app of a process shares one :class:`Metrics` (see :meth:`get`)."""

    _instance: Metrics | None = None

    def __init__(self, directory: str | None) -> None:
        import prometheus_client
        from prometheus_client import CollectorRegistry, Counter, Histogram, values

        self.directory = directory
        if directory is not None and values.ValueClass is values.MutexValue:
            # prometheus_client was imported before the directory was set: it picks its
            # value class at import, so pick again, for the metrics made below.
            values.ValueClass = values.get_value_class()
        #: Holds the metrics when this process is alone (no multiprocess directory).
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry if directory is None else None
        self._prometheus = prometheus_client
        self.requests = Counter(
            "receiver_requests", "Webhook requests answered, by HTTP status.", ["status"],
            registry=registry)
        self.events = Counter(
            "receiver_events", "Events accepted (not duplicates), by action and format.",
            ["action", "format"], registry=registry)
        self.duplicates = Counter(
            "receiver_duplicates",
            "Deliveries of an event id already queued within RECEIVER_DEDUP_WINDOW.",
            ["action"], registry=registry)
        # One histogram for the runs and their durations: its _count is the runs by handler
        # and outcome, and a run costs two writes to the multiprocess files, not three.
        self.handler_seconds = Histogram(
            "receiver_handler_duration_seconds",
            "Handler runs and how long they took, by handler and outcome (succeeded; failed "
            "in sync mode; retry or dead for jobs).",
            ["handler", "outcome"], buckets=DURATION_BUCKETS, registry=registry)
        # Label children cached: .labels() costs more than .inc() on the request path.
        self._by_status: dict[int, t.Any] = {}
        self._by_event: dict[tuple[str, str], t.Any] = {}
        self._by_run: dict[tuple[str, str], t.Any] = {}
        from ..handlers import signals

        signals.handler_finished.connect(self.handler_finished, weak=False)

    @classmethod
    def get(cls) -> Metrics:
        """This process's metrics, made on first use.

        :raises OSError: the multiprocess directory cannot be used.
        """
        if cls._instance is None:
            cls._instance = cls(metrics_directory())
        return cls._instance

    # --- counting -------------------------------------------------------------------

    def request(self, status: int) -> None:
        child = self._by_status.get(status)
        if child is None:
            child = self._by_status[status] = self.requests.labels(str(status))
        child.inc()

    def event(self, event: Event) -> None:
        key = (event.action, event.format)
        child = self._by_event.get(key)
        if child is None:
            child = self._by_event[key] = self.events.labels(*key)
        child.inc()

    def duplicate(self, event: Event) -> None:
        self.duplicates.labels(event.action).inc()

    def handler_finished(self, sender: t.Any, *, handler: str, outcome: str, seconds: float,
                         **extra: t.Any) -> None:
        """Receiver of the ``handler-finished`` signal."""
        key = (handler, outcome)
        runs = self._by_run.get(key)
        if runs is None:
            runs = self._by_run[key] = self.handler_seconds.labels(*key)
        runs.observe(seconds)

    # --- exposition -----------------------------------------------------------------

    def render(self, queue: Queue | None) -> tuple[bytes, str]:
        """The text exposition of every worker's counts, plus the queue's gauges."""
        from prometheus_client import CollectorRegistry, generate_latest, multiprocess

        if self.directory is None:
            registry = self.registry
            extra = CollectorRegistry()
            if queue is not None:
                extra.register(QueueCollector(queue))
            return generate_latest(registry) + generate_latest(extra), CONTENT_TYPE
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.directory)
        if queue is not None:
            registry.register(QueueCollector(queue))
        return generate_latest(registry), CONTENT_TYPE


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class QueueCollector:
    """The jobs by status and the age of the oldest queued job, read from the queue at
    scrape time (the queue is shared, so every worker reads the same numbers)."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def collect(self) -> t.Iterator[t.Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = "receiver_queue_up"
        up_help = "1 when this scrape could read the queue, 0 when it could not."
        try:
            stats = self.queue.stats()
        except Exception as exc:  # noqa: BLE001  (any engine's error: no job gauges, say why)
            log.warning("metrics: cannot read the queue: %s", exc)
            yield GaugeMetricFamily(up, up_help, value=0)
            return
        yield GaugeMetricFamily(up, up_help, value=1)
        jobs = GaugeMetricFamily("receiver_jobs", "Jobs in the queue, by status.",
                                 labels=["status"])
        for status in ("queued", "running", "dead"):
            jobs.add_metric([status], stats.counts.get(status, 0))
        yield jobs
        yield GaugeMetricFamily(
            "receiver_jobs_oldest_queued_age_seconds",
            "Seconds since the oldest queued job was due to run (0 when none is).",
            value=stats.oldest_queued_age)
