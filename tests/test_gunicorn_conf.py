"""The shipped gunicorn.conf.py, read by `gunicorn wsgi:app` started in the project's directory,
as a user runs it."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import socket
import stat
import subprocess
import sys
import threading
import typing as t
import urllib.request

import pytest
from servers import ROOT, free_port, post, stop, wait_for, wait_http

BODY = json.loads((ROOT / "receiver" / "samples" / "tcr" / "pushImage.json").read_text())
METRICS = "PROMETHEUS_MULTIPROC_DIR"


def user_env(tmp: pathlib.Path, **extra: str) -> dict[str, str]:
    """The environment of a user who set nothing but *extra*: no RECEIVER_*, GUNICORN_CMD_ARGS,
    WEB_CONCURRENCY or metrics directory of the shell; a private queue and control socket."""
    skip = ("RECEIVER_", "GUNICORN_", "PROMETHEUS_", "WEB_CONCURRENCY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    (tmp / "run").mkdir(exist_ok=True)
    env.update(XDG_DATA_HOME=str(tmp / "xdg"), XDG_RUNTIME_DIR=str(tmp / "run"), **extra)
    return env


@dataclasses.dataclass
class Server:
    url: str
    port: int
    log: pathlib.Path
    proc: subprocess.Popen

    def pids(self) -> list[int]:
        """The workers' pids, in the order they booted."""
        return [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", self.log.read_text())]


@contextlib.contextmanager
def shipped(tmp: pathlib.Path, *args: str, **env: str) -> t.Iterator[Server]:
    """`gunicorn wsgi:app ARGS` in the project's directory, bound with RECEIVER_BIND."""
    port = free_port()
    log_path = tmp / f"gunicorn-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app", *args], cwd=ROOT,
            env=user_env(tmp, RECEIVER_BIND=f"127.0.0.1:{port}", **env),
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc)
        yield Server(url, port, log_path, proc)
    finally:
        stop(proc)


def print_config(tmp: pathlib.Path, *args: str, **env: str) -> dict[str, str]:
    """The settings gunicorn resolves from the file, the environment and *args*."""
    out = subprocess.run(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "--print-config", *args], cwd=ROOT,
        env=user_env(tmp, **env), capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    return dict(re.findall(r"^(\w+) += (.*)$", out, re.M))


# A handlers module that each worker imports: it writes down the worker's metrics directory.
REPORTER = """
import os
with open(os.environ["REPORT"], "a") as f:
    f.write(f"{os.getpid()} {os.environ.get('PROMETHEUS_MULTIPROC_DIR')}\\n")
"""


def reporting(tmp: pathlib.Path) -> dict[str, str]:
    """The settings that make each worker report its metrics directory to tmp/report."""
    (tmp / "report_dir.py").write_text(REPORTER)
    return {"RECEIVER_HANDLERS": "report_dir", "PYTHONPATH": str(tmp), "REPORT": str(tmp / "report")}


def reported(tmp: pathlib.Path, count: int) -> dict[int, str]:
    """Worker pid to its PROMETHEUS_MULTIPROC_DIR ("None" if unset), once *count* reported."""
    def read() -> dict[int, str] | None:
        path = tmp / "report"
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) < count:
            return None
        return {int(pid): value for pid, value in (line.split(" ", 1) for line in lines)}
    return wait_for(read, what=f"{count} worker(s) to report")


def expected_workers() -> int:
    """The README's rule: the CPUs this process may use, plus one; at least 2."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(2, (cpus or 1) + 1)


def test_the_file_is_read_and_the_command_line_wins(tmp_path):
    """From the project's directory, the file gives gevent workers, recycling and RECEIVER_BIND;
    -b and -w on the command line, and GUNICORN_CMD_ARGS, win over it."""
    cfg = print_config(tmp_path, RECEIVER_BIND="127.0.0.1:8123")
    assert cfg["bind"] == "['127.0.0.1:8123']"
    assert cfg["worker_class"] == "gevent"
    assert int(cfg["workers"]) == expected_workers()
    assert int(cfg["max_requests"]) > 0 and int(cfg["max_requests_jitter"]) > 0
    assert print_config(tmp_path)["bind"] == "['127.0.0.1:8000']"

    given = print_config(tmp_path, "-b", "127.0.0.1:8124", "-w", "1",
                         RECEIVER_BIND="127.0.0.1:8123", WEB_CONCURRENCY="5",
                         GUNICORN_CMD_ARGS="--max-requests 7")
    assert (given["bind"], given["workers"], given["max_requests"]) == ("['127.0.0.1:8124']", "1", "7")
    assert print_config(tmp_path, WEB_CONCURRENCY="5")["workers"] == "5"


def test_gunicorn_wsgi_app_serves_with_the_shipped_settings(tmp_path):
    """`gunicorn wsgi:app` with RECEIVER_BIND alone: gevent workers, one per CPU and one more,
    queueing a delivery (202) and ready."""
    with shipped(tmp_path) as server:
        wait_for(lambda: len(server.pids()) == expected_workers(), what="the workers to boot")
        status, answer = post(server.url + "/webhook", BODY)
        assert status == 202 and answer["handlers"] == 0
        with urllib.request.urlopen(server.url + "/readyz", timeout=10) as resp:
            assert json.loads(resp.read()) == {"status": "ready"}
        log = server.log.read_text()
        assert "Using worker: gevent" in log
        assert f"Listening at: http://127.0.0.1:{server.port} " in log


# -- slow clients ---------------------------------------------------------------------------


def tcp_states(port: int) -> tuple[int, int]:
    """(server-side ESTABLISHED connections on *port*, connections waiting to be accepted)."""
    established = waiting = 0
    for line in pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) != port:
            continue
        if fields[3] == "01":
            established += 1
        elif fields[3] == "0A":
            waiting = int(fields[4].split(":")[1], 16)
    return established, waiting


class Trickle:
    """Connections that send a byte each every *interval* seconds: *headers* of them never
    finish their headers, *bodies* send whole headers and then never finish the body. One
    the server closes is opened again at once, so that they stay open."""

    HEAD = b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4000
    BODY_HEAD = (b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 4000\r\n\r\n")

    def __init__(self, port: int, headers: int, bodies: int, interval: float = 0.5) -> None:
        self.port = port
        self.interval = interval
        self.kinds = [True] * headers + [False] * bodies  # True: a slow header
        self.conns = [self._open(kind) for kind in self.kinds]
        self.reopened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _open(self, slow_header: bool) -> tuple[socket.socket, bytes]:
        """A connection and the bytes it has still to send."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if slow_header:
            sock.sendall(self.HEAD[:1])
            return sock, self.HEAD[1:]
        sock.sendall(self.BODY_HEAD + b" ")
        return sock, b" " * 3999

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for index, (sock, rest) in enumerate(self.conns):
                try:
                    sock.send(rest[:1])
                    self.conns[index] = (sock, rest[1:])
                except OSError:
                    sock.close()
                    self.conns[index] = self._open(self.kinds[index])
                    self.reopened += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock, _ in self.conns:
            sock.close()


@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="counts connections in /proc")
def test_a_normal_client_is_served_while_52_slow_clients_are_connected(tmp_path):
    """50 connections sending their headers a byte every 0.5 s and 2 sending their body so,
    all accepted by the server: 20 deliveries of a normal client are all answered 202.
    (gunicorn's default sync worker answers none of them; see bench/bench_slowclients.py.)"""
    with shipped(tmp_path) as server:
        slow = Trickle(server.port, headers=50, bodies=2)
        try:
            # Every slow connection established and taken from the backlog by a worker.
            wait_for(lambda: tcp_states(server.port) == (52, 0), timeout=10,
                     what="the server to accept the 52 slow connections")
            answers = [post(server.url + "/webhook", {**BODY, "occur_at": BODY["occur_at"] + n})
                       for n in range(20)]
        finally:
            slow.close()
    assert [status for status, _ in answers] == [202] * 20
    assert len({answer["event_id"] for _, answer in answers}) == 20


# -- hooks and recycling --------------------------------------------------------------------


def test_workers_share_a_private_metrics_directory_removed_at_exit(tmp_path):
    """Without PROMETHEUS_MULTIPROC_DIR, the server makes one (0700), gives it to its workers
    and removes it when it stops."""
    with shipped(tmp_path, "-w", "2", **reporting(tmp_path)) as server:
        dirs = reported(tmp_path, 2)
        assert sorted(dirs) == sorted(server.pids())
        assert len(set(dirs.values())) == 1
        path = pathlib.Path(dirs.popitem()[1])
        assert path.name.startswith("receiver-metrics-")
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert not path.exists()


def test_receiver_metrics_off_makes_no_directory(tmp_path):
    with shipped(tmp_path, "-w", "1", RECEIVER_METRICS="off", **reporting(tmp_path)):
        assert list(reported(tmp_path, 1).values()) == ["None"]


def test_max_requests_recycles_a_worker_and_child_exit_drops_its_live_gauges(tmp_path):
    """--max-requests 5 on the command line: the worker is replaced after its 5th request. A
    given metrics directory is emptied of *.db files at start, loses the dead worker's live
    gauges, and is kept at exit."""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "counter_1234.db").write_bytes(b"stale")
    (metrics / "notes.txt").write_text("not ours")
    with shipped(tmp_path, "-w", "1", "--max-requests", "5", "--max-requests-jitter", "0",
                 "--access-logfile", "-", "--access-logformat", "served-by %(p)s",
                 PROMETHEUS_MULTIPROC_DIR=str(metrics)) as server:
        assert not (metrics / "counter_1234.db").exists() and (metrics / "notes.txt").exists()
        first = server.pids()[0]
        live, kept = metrics / f"gauge_livesum_{first}.db", metrics / f"gauge_all_{first}.db"
        live.touch()  # (touch: never truncate a file the worker may have mapped)
        kept.touch()
        for _ in range(10):
            with urllib.request.urlopen(server.url + "/healthz", timeout=10) as resp:
                assert resp.status == 200
            if "Autorestarting worker after current request" in server.log.read_text():
                break
        wait_for(lambda: [p for p in server.pids() if p != first], what="a new worker")
        assert server.log.read_text().count(f"served-by <{first}>") == 5
        if importlib.util.find_spec("prometheus_client"):
            wait_for(lambda: not live.exists(), what="child_exit to drop the live gauge")
        else:
            assert live.exists()  # the hook does nothing without prometheus_client
        assert kept.exists()
        wait_http(server.url + "/healthz")  # the new worker answers
    assert metrics.is_dir() and (metrics / "notes.txt").exists()


ASYNC_HANDLERS = """
import asyncio, json, os
from receiver import on

@on("pushImage")
async def slow(event):
    await asyncio.sleep(0.3)  # long enough for the other job to start meanwhile
    with open(os.environ["DONE_FILE"], "a") as out:
        out.write(json.dumps(event.resources[0].tag) + "\\n")
"""


def test_async_handlers_run_side_by_side_under_gevent(tmp_path):
    """gevent's greenlets share an OS thread: two async handlers at once each get a loop of
    their own, and both succeed on their first run."""
    (tmp_path / "async_handlers.py").write_text(ASYNC_HANDLERS)
    done = tmp_path / "done.txt"
    with shipped(tmp_path, "-w", "1", "--pythonpath", str(tmp_path),
                 RECEIVER_HANDLERS="async_handlers", DONE_FILE=str(done)) as server:
        for tag in ("a1", "a2", "a3"):
            event = json.loads(json.dumps(BODY))
            event["event_data"]["resources"][0]["tag"] = tag
            assert post(server.url + "/webhook", event)[0] == 202
        wait_for(lambda: done.exists() and len(done.read_text().split()) == 3,
                 what="the three async handlers")
        assert sorted(json.loads(x) for x in done.read_text().split()) == ["a1", "a2", "a3"]
        assert "cannot be called from a running event loop" not in server.log.read_text()
        assert "failed" not in server.log.read_text()


COUNTING_HANDLERS = """
import os
from receiver import on

@on("pushImage")
def count(event):
    with open(os.environ["DONE_FILE"], "a") as out:
        out.write(event.resources[0].tag + "\\n")
"""


def test_sqlite_queue_under_gevent_runs_each_job_once(tmp_path):
    """Concurrent deliveries to two gevent workers sharing the SQLite queue (a connection per
    OS thread, shared by its greenlets): every job runs once, none is lost."""
    (tmp_path / "counting.py").write_text(COUNTING_HANDLERS)
    done = tmp_path / "done.txt"
    tags = [f"c{i}" for i in range(40)]
    with shipped(tmp_path, "-w", "2", "--pythonpath", str(tmp_path),
                 RECEIVER_HANDLERS="counting", DONE_FILE=str(done)) as server:
        def deliver(tag: str) -> int:
            event = json.loads(json.dumps(BODY))
            event["event_data"]["resources"][0]["tag"] = tag
            return post(server.url + "/webhook", event)[0]

        results: list[int] = []
        threads = [threading.Thread(target=lambda tag=tag: results.append(deliver(tag)))
                   for tag in tags]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [202] * len(tags)
        wait_for(lambda: done.exists() and len(done.read_text().split()) >= len(tags),
                 what="every job to run")
        assert sorted(done.read_text().split()) == sorted(tags)
