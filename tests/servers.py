"""Real servers for round-trip tests: gunicorn running wsgi:app, and plain HTTP helpers."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
import typing as t
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).parent.parent


# Ports for the servers the tests start: below the kernel's ephemeral range (32768 and up,
# where client sockets take theirs) and a block per pytest-xdist process, so that no two
# tests, and no client connection, can be handed the same port between our check and the
# server's bind. (Port 0, "any free port", has exactly that race: another process may take
# the port before the server binds it, and a test then talks to another test's server.)
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_PORTS = itertools.count(20000 + (_WORKER % 8) * 1500)


def free_port() -> int:
    """A loopback port no other test of this run is handed, free right now."""
    for port in _PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")  # pragma: no cover (itertools.count never ends)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_http(url: str, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


@contextlib.contextmanager
def gunicorn(
    env: dict[str, str], cwd: pathlib.Path, workers: int = 1, paths: t.Sequence[pathlib.Path] = (),
    args: t.Sequence[str] = (), app: str = "wsgi:app",
) -> t.Iterator[tuple[str, pathlib.Path, subprocess.Popen]]:
    """Run ``gunicorn wsgi:app`` on 127.0.0.1 as a user would; yield its URL, its log file
    and its master process.

    :param cwd: where it runs; also on the Python path, for handler modules.
    :param paths: more directories for the Python path.
    """
    port = free_port()
    log_path = cwd / f"gunicorn-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RECEIVER_")}
    # Its own data directory, so the default queue is never the user's (nor another test's).
    full_env["XDG_DATA_HOME"] = str(cwd / f"xdg-{port}")
    full_env.update(env)
    full_env["PYTHONPATH"] = os.pathsep.join([str(cwd), *map(str, paths), str(ROOT)])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", app, "-b", f"127.0.0.1:{port}",
             "-w", str(workers), "--chdir", str(ROOT), "--graceful-timeout", "2", *args],
            env=full_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc)
        yield url, log_path, proc
    finally:
        stop(proc)


def wait_for(predicate: t.Callable[[], t.Any], timeout: float = 20.0, what: str = "") -> t.Any:
    """Poll *predicate* until it returns something true, with a deadline; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.02)


def post(url: str, body: bytes | dict, headers: dict[str, str] | None = None) -> tuple[int, t.Any]:
    """POST over real HTTP; returns the status and the decoded JSON answer."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 with *handler*, serving while in a ``with`` block;
    ``url`` is its ``/hook``."""

    def __init__(self, handler: type) -> None:
        import http.server

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def __enter__(self) -> t.Self:
        import threading

        # A short poll: shutdown() waits for it, at the end of every test that uses a server.
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class Target(LoopbackServer):
    """A real HTTP server on 127.0.0.1 that records POSTs and answers as scripted.

    :param statuses: the status for each request in turn; the last one repeats.
    :param hang: seconds to wait before answering (a target that hangs).
    :param trickle: seconds between the bytes of the answer (a target that drips).
    """

    def __init__(self, statuses: t.Sequence[int] = (200,), hang: float = 0.0,
                 trickle: float = 0.0) -> None:
        import http.server
        import threading

        self.statuses = list(statuses)
        self.hang = hang
        self.trickle = trickle
        self.requests: list[tuple[dict[str, str], list[tuple[str, str]], bytes]] = []
        self.release = threading.Event()
        target = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target.requests.append((dict(self.headers), list(self.headers.items()), body))
                if target.hang:
                    target.release.wait(target.hang)
                index = min(len(target.requests), len(target.statuses)) - 1
                status = target.statuses[index]
                if target.trickle:
                    answer = f"HTTP/1.1 {status} OK\r\nContent-Length: 0\r\n\r\n".encode()
                    for byte in answer:
                        if target.release.wait(target.trickle):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    return
                self.send_response(status)
                if 300 <= status < 400:
                    self.send_header("Location", "/elsewhere")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: t.Any) -> None:
                pass

        super().__init__(Handler)

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        super().__exit__(*exc)

    def bodies(self) -> list[dict]:
        return [json.loads(body) for _, _, body in self.requests]


@contextlib.contextmanager
def serve(app: t.Any) -> t.Iterator[str]:
    """Serve a WSGI *app* on 127.0.0.1 in a thread (Werkzeug); yield its webhook URL."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", free_port(), app)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/webhook"
    finally:
        server.shutdown()


@contextlib.contextmanager
def redis_server(tmp: pathlib.Path, password: str | None = None) -> t.Iterator[str]:
    """A throwaway ``redis-server`` (Debian's) on a free loopback port, without persistence;
    yields its ``redis://`` URL once it answers (with *password* in it, if one is required)."""
    import shutil

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    log_path = tmp / f"redis-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
             "no", "--dir", str(tmp), *(["--requirepass", password] if password else [])],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        # Without the password the server still answers PING, with an error: it is up.
        wait_tcp("127.0.0.1", port, proc, ping=b"PING\r\n", expect=b"-NOAUTH" if password else b"+PONG")
        yield f"redis://:{password}@127.0.0.1:{port}/0" if password else f"redis://127.0.0.1:{port}/0"
    finally:
        stop(proc)


def wait_tcp(host: str, port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0,
             ping: bytes = b"", expect: bytes = b"") -> None:
    """Wait, with a deadline, until *host:port* accepts a connection (and answers *ping*)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=1) as sock:
                if ping:
                    sock.sendall(ping)
                    if not sock.recv(64).startswith(expect):
                        raise OSError("not ready")
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{host}:{port} did not answer within {timeout}s")


def queued_jobs(queue_url: str, repository: str) -> list:
    """The jobs of *repository*'s events in the queue at *queue_url*, as ``receiver jobs``."""
    from receiver.jobs import open_queue

    queue = open_queue(queue_url)
    try:
        return [j for j in queue.jobs(limit=1000) if j.repository == repository]
    finally:
        queue.close()


def settled_jobs(queue_url: str, repository: str, count: int = 1) -> list:
    """Wait until *repository* has *count* jobs, each succeeded or dead; return them."""
    def done() -> list:
        jobs = queued_jobs(queue_url, repository)
        ended = len(jobs) == count and all(j.status in ("succeeded", "dead") for j in jobs)
        return jobs if ended else []
    return wait_for(done, what=f"the jobs of {repository} to end")
