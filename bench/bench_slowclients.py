"""Benchmark a normal client's deliveries while slow clients hold connections open.

Run:  pip install -e . && python bench/bench_slowclients.py [--deliveries 50] [--configs ...]
Starts `gunicorn wsgi:app` on 127.0.0.1 from the project's directory, once per configuration:
`defaults` (gunicorn's own, `-c /dev/null`: one sync worker), `gthread` (the shipped file
with `-k gthread --threads 4`; see --gthread-threads) and `shipped` (gunicorn.conf.py as it
is). Against each, it opens --slow-headers connections that send a request's line and
headers a byte every --interval seconds and never finish them, and --slow-bodies that send
their headers and then the body a byte at a time (a connection the server closes is opened
again). Once the server has accepted those (or 3 s have passed), a normal client makes
--deliveries sequential deliveries, --spacing seconds apart (a new connection each, a
distinct pushImage body, the registry's 3 s timeout), and the bench prints the share
answered within 2 s (target: at least 99 %), p50 and p99 latency, then the ratios of the
shipped file to the defaults.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).parent.parent
BODY = json.loads((ROOT / "receiver" / "samples" / "tcr" / "pushImage.json").read_text())

#: The extra gunicorn arguments of each configuration; the shipped file is read from ROOT.
CONFIGS = {
    "defaults": ["-c", "/dev/null"],
    "gthread": ["-k", "gthread"],  # plus --threads, from --gthread-threads
    "shipped": [],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(name: str, port: int, tmp: str, threads: int) -> subprocess.Popen[bytes]:
    skip = ("RECEIVER_", "GUNICORN_", "PROMETHEUS_", "WEB_CONCURRENCY")
    env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
    env.update(XDG_DATA_HOME=os.path.join(tmp, name), RECEIVER_LOG_LEVEL="WARNING")
    log = open(os.path.join(tmp, f"{name}.log"), "wb")  # noqa: SIM115  (the server keeps it)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "wsgi:app", "-b", f"127.0.0.1:{port}", *CONFIGS[name],
         *(["--threads", str(threads)] if name == "gthread" else [])],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name}: gunicorn exited with {proc.returncode}; see {log.name}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{name}: gunicorn did not answer within 30 s")


def backlog(port: int) -> int | None:
    """Connections waiting in the listening socket's accept queue (Linux), else None."""
    try:
        lines = pathlib.Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == port:
            return int(fields[4].split(":")[1], 16)
    return None


class SlowClients:
    """Connections that trickle a byte each every *interval* seconds, reopened when closed."""

    def __init__(self, port: int, headers: int, bodies: int, interval: float) -> None:
        self.port = port
        self.interval = interval
        self.kinds = ["header"] * headers + ["body"] * bodies
        self.conns: list[tuple[socket.socket, bytes, int]] = [self._open(k) for k in self.kinds]
        self.reopened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, kind: str) -> tuple[socket.socket, bytes, int]:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.setblocking(False)
        if kind == "header":  # the line and headers, a byte at a time, never finished
            return sock, b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 8000, 0
        head = (b"POST /webhook HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n")
        sock.setblocking(True)
        sock.sendall(head)
        sock.setblocking(False)
        return sock, b"[" * 100000, 0

    def _tick(self, index: int) -> None:
        sock, data, sent = self.conns[index]
        try:
            if sock.recv(4096) == b"":  # the server closed it (an answer also ends it)
                raise ConnectionResetError
        except BlockingIOError:
            pass
        except OSError:
            sock.close()
            self.conns[index] = self._open(self.kinds[index])
            self.reopened += 1
            return
        try:
            sock.send(data[sent:sent + 1])
            self.conns[index] = (sock, data, sent + 1)
        except OSError:
            sock.close()
            self.conns[index] = self._open(self.kinds[index])
            self.reopened += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for index in range(len(self.conns)):
                try:
                    self._tick(index)
                except OSError:
                    pass  # could not reopen now; try again at the next tick

    def __enter__(self) -> SlowClients:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for sock, _, _ in self.conns:
            sock.close()


def deliver(port: int, n: int, timeout: float) -> tuple[float, int | str]:
    """One delivery of a distinct body over a new connection: (seconds, status or error)."""
    body = json.dumps({**BODY, "occur_at": BODY["occur_at"] + n}).encode()
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/webhook", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        outcome: int | str = resp.status
    except OSError as exc:
        outcome = type(exc).__name__
    finally:
        conn.close()
    return time.perf_counter() - started, outcome


def percentile(values: list[float], p: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def run(name: str, args: argparse.Namespace, tmp: str, base: int) -> dict[str, float]:
    port = free_port()
    proc = start(name, port, tmp, args.gthread_threads)
    try:
        with SlowClients(port, args.slow_headers, args.slow_bodies, args.interval) as slow:
            # Wait until the server has accepted every slow connection, or 3 s: a server that
            # cannot accept them all leaves the rest in its backlog, which is the point.
            deadline = time.monotonic() + 3
            while backlog(port) and time.monotonic() < deadline:
                time.sleep(0.05)
            waiting = backlog(port)
            results = []
            for i in range(args.deliveries):
                results.append(deliver(port, base + i, args.timeout))
                time.sleep(args.spacing)
            reopened = slow.reopened
    finally:
        proc.terminate()
        proc.wait()
    seconds = [s for s, _ in results]
    served = [s for s, outcome in results if outcome in (200, 202) and s <= args.within]
    failures: dict[str, int] = {}
    for _, outcome in results:
        if outcome not in (200, 202):
            failures[str(outcome)] = failures.get(str(outcome), 0) + 1
    share = 100.0 * len(served) / len(results)
    p50, p99 = percentile(seconds, 50) * 1e3, percentile(seconds, 99) * 1e3
    slow_count = args.slow_headers + args.slow_bodies
    print(f"{name:9} served within {args.within:g} s: {len(served)}/{len(results)} "
          f"({share:.1f} %)  p50 {p50:.1f} ms  p99 {p99:.1f} ms  "
          f"failures {failures or 'none'}  slow connections still in the backlog when the "
          f"client started: {waiting if waiting is not None else '?'} of {slow_count}  "
          f"reopened by the slow clients: {reopened}")
    return {"share": share, "p50": p50, "p99": p99}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=50)
    parser.add_argument("--slow-headers", type=int, default=50)
    parser.add_argument("--slow-bodies", type=int, default=2)
    parser.add_argument("--interval", type=float, default=0.5,
                        help="seconds between a slow connection's bytes")
    parser.add_argument("--spacing", type=float, default=0.1,
                        help="seconds between the end of a delivery and the next")
    parser.add_argument("--timeout", type=float, default=3.0,
                        help="the normal client's timeout (the registry's: 3 s)")
    parser.add_argument("--within", type=float, default=2.0,
                        help="a delivery counts as served if answered within this")
    parser.add_argument("--gthread-threads", type=int, default=4,
                        help="threads per worker of the gthread configuration")
    parser.add_argument("--configs", default="defaults,shipped",
                        help=f"comma-separated, in order, from: {', '.join(CONFIGS)}")
    args = parser.parse_args()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s): {', '.join(unknown)}")
    print(f"{os.cpu_count()} CPUs; {args.slow_headers} slow-header and {args.slow_bodies} "
          f"slow-body connections, a byte every {args.interval:g} s; {args.deliveries} "
          f"sequential deliveries {args.spacing:g} s apart, client timeout {args.timeout:g} s")
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as tmp:
        out = {name: run(name, args, tmp, base=i * 1_000_000) for i, name in enumerate(names)}
    if "defaults" in out and "shipped" in out:
        d, s = out["defaults"], out["shipped"]
        share = f"{s['share'] / d['share']:.1f}x" if d["share"] else "inf (defaults served none)"
        print(f"shipped vs defaults: served share {share}, p50 {d['p50'] / s['p50']:.0f}x "
              f"lower, p99 {d['p99'] / s['p99']:.0f}x lower")


if __name__ == "__main__":
    main()
