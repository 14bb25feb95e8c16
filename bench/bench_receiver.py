"""Benchmark the receiver under gunicorn -w 2 and wrk against a bare Flask endpoint.

Run:  pip install -e '.[redis]' && python bench/bench_receiver.py [--seconds 10] [--connections 8]
Needs wrk and redis-server (Debian: apt-get install wrk redis-server). Every server gets the
same stream of distinct push bodies (so none is a duplicate), the same wrk settings and the
same worker count, in alternating rounds: bare Flask, the receiver in `sync` mode with a
no-op handler (also without metrics, for their cost, and without metrics or the log line),
with the SQLite queue and with the Redis queue (queue targets: at least 0.8 of bare Flask).
Then, at 50 requests/s, the time from the 202 to the handler's start (target: median under
50 ms; negative when the handler started before the answer reached the client), and from
the request's sending to the handler's start. It also prints the microseconds per body of
json.loads alone and of the full load into an Event.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import typing as t
import urllib.request

HERE = pathlib.Path(__file__).parent
ROOT = HERE.parent
SECRET = "bench-secret"
BODY = (ROOT / "tests" / "data" / "seed_push.json").read_text()


def wait(url: str, proc: subprocess.Popen) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not start")


def start_server(app: str, env: dict[str, str], port: int,
                 root: pathlib.Path = ROOT) -> subprocess.Popen:
    proc = subprocess.Popen(
        # -c /dev/null: gunicorn's defaults (sync workers) for every server alike, not the
        # shipped gunicorn.conf.py, so that the ratios measure the apps, not the servers.
        [sys.executable, "-m", "gunicorn", app, "-c", "/dev/null", "-w", "2",
         "-b", f"127.0.0.1:{port}",
         "--chdir", str(root), "--pythonpath", str(HERE), "--log-level", "warning"],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait(f"http://127.0.0.1:{port}/healthz", proc)
    return proc


# Each request carries another occur_at, so every body is a new event, never a duplicate.
LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authentication"] = "%(secret)s"
local head, tail = %(head)s, %(tail)s
local n = 0
local base = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("base", threads * 100000000 + math.random(0, 9999) * 10000)
end
function init(args)
  base = wrk.thread:get("base") or 0
end
function request()
  n = n + 1
  return wrk.format(nil, nil, nil, head .. tostring(base + n) .. tail)
end
"""


def lua_script(path: str) -> None:
    head, _, rest = BODY.partition('"occur_at": ')
    _, _, tail = rest.partition(",")
    with open(path, "w") as f:
        f.write(LUA % {"secret": SECRET, "head": json.dumps(head + '"occur_at": '),
                       "tail": json.dumps("," + tail)})


def run_wrk(app: str, env: dict[str, str], port: int, args: argparse.Namespace, lua: str,
            root: pathlib.Path = ROOT) -> float:
    proc = start_server(app, env, port, root)
    try:
        wait(f"http://127.0.0.1:{port}/healthz", proc)
        url = f"http://127.0.0.1:{port}/webhook"
        subprocess.run(["wrk", "-t1", "-c2", "-d2s", "-s", lua, url], capture_output=True)  # warm
        out = subprocess.run(
            ["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "-s", lua, url],
            capture_output=True, text=True, check=True,
        ).stdout
    finally:
        proc.terminate()
        proc.wait()
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{app}: {non2xx.group(1)} non-2xx answers\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def latency(env: dict[str, str], port: int, tmp: str, rate: float = 50.0,
            count: int = 500) -> tuple[list[float], list[float]]:
    """Milliseconds from each 202's arrival to its handler's start (negative when the
    handler started before the answer reached the client), and from the request's sending
    to its handler's start, at *rate* requests/s."""
    import http.client

    starts = os.path.join(tmp, f"starts-{port}")
    proc = start_server("wsgi:app", {**env, "RECEIVER_HANDLERS": "latency_handlers",
                                     "BENCH_STARTS": starts}, port)
    answered: dict[str, tuple[float, float]] = {}
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        head, _, rest = BODY.partition('"occur_at": ')
        tail = rest.partition(",")[2]
        began = time.monotonic()
        for n in range(count):
            time.sleep(max(0.0, began + n / rate - time.monotonic()))
            body = f'{head}"occur_at": {1_600_000_000 + n},{tail}'
            sent = time.time()
            conn.request("POST", "/webhook", body, {"Content-Type": "application/json",
                                                    "Authentication": SECRET})
            resp = conn.getresponse()
            answer = json.loads(resp.read())
            answered[answer["event_id"]] = (sent, time.time())
            if resp.status != 202:
                raise SystemExit(f"latency run: {resp.status} {answer}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open(starts) as f:
                seen = dict(line.split() for line in f if line.strip())
            if len(seen) >= count:
                break
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait()
    started = {eid: float(seen[eid]) for eid in answered if eid in seen}
    return ([(started[eid] - at) * 1e3 for eid, (_, at) in answered.items() if eid in started],
            [(started[eid] - sent) * 1e3 for eid, (sent, _) in answered.items()
             if eid in started])


@contextlib.contextmanager
def redis(tmp: str) -> t.Iterator[str]:
    port = 16379
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", tmp],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=pathlib.Path, metavar="DIR",
                        help="also run the receiver of another checkout (say, the last release, "
                        "from `git archive`) in the same rounds, and print the ratio to it")
    args = parser.parse_args()

    from receiver.core.schemas import load_event

    n = 20_000
    loads = min(timeit.repeat(lambda: json.loads(BODY), number=n, repeat=5)) / n * 1e6
    full = min(timeit.repeat(lambda: load_event(json.loads(BODY)), number=n, repeat=5)) / n * 1e6
    print(f"per body: json.loads {loads:.1f} us; json.loads + load into an Event {full:.1f} us")
    for fmt, sample in (("harbor", "harbor/pushImage.json"),
                        ("cloudevents", "cloudevents/pushImage.json"),
                        ("harbor scan", "harbor/scanningCompleted.json")):
        text = (ROOT / "receiver" / "samples" / sample).read_text()
        best = min(timeit.repeat(lambda text=text: load_event(json.loads(text)),
                                 number=n // 4, repeat=5))
        full = best / (n // 4) * 1e6
        print(f"  {fmt:12} body: json.loads + load into an Event {full:.1f} us")

    for tool in ("wrk", "redis-server"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed: apt-get install {tool} (Debian), then run again")
            return 1
    with tempfile.TemporaryDirectory() as tmp, redis(tmp) as redis_url:
        lua = os.path.join(tmp, "post.lua")
        lua_script(lua)
        env = {"RECEIVER_HANDLERS": "noop_handlers",
               "RECEIVER_AUTH_HEADERS": json.dumps({"Authentication": SECRET})}
        configs = {
            "bare": ("bare_flask:app", {}, ROOT),
            "sync": ("wsgi:app", {**env, "RECEIVER_QUEUE": "sync"}, ROOT),
            "sync-nometrics": ("wsgi:app", {**env, "RECEIVER_QUEUE": "sync",
                                             "RECEIVER_METRICS": "false"}, ROOT),
            # What is left without metrics and the log line: auth, validation, the event id
            # and dispatch, the floor under the sync figure.
            "sync-quiet": ("wsgi:app", {**env, "RECEIVER_QUEUE": "sync",
                                         "RECEIVER_METRICS": "false",
                                         "RECEIVER_LOG_LEVEL": "WARNING"}, ROOT),
            "sqlite": ("wsgi:app", {**env, "RECEIVER_QUEUE": f"sqlite:///{tmp}/queue.db"}, ROOT),
            "redis": ("wsgi:app", {**env, "RECEIVER_QUEUE": redis_url}, ROOT),
        }
        if args.against:
            configs["sync@against"] = ("wsgi:app", {**env, "RECEIVER_QUEUE": "sync"}, args.against)
            configs["sqlite@against"] = (
                "wsgi:app", {**env, "RECEIVER_QUEUE": f"sqlite:///{tmp}/q2.db"}, args.against)
        results: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.rounds):  # alternate, so drift on a shared machine hits all alike
            for port, (name, (app, app_env, root)) in enumerate(configs.items(), start=18081):
                results[name].append(run_wrk(app, app_env, port, args, lua, root))
        waits = {
            "sqlite": latency({**env, "RECEIVER_QUEUE": f"sqlite:///{tmp}/latency.db"}, 18091, tmp),
            "redis": latency({**env, "RECEIVER_QUEUE": redis_url.replace("/0", "/1")}, 18092, tmp),
        }
    bare, sync, nometrics, quiet, sqlite, rq = (statistics.median(results[name])
                                                for name in list(configs)[:6])
    print(f"gunicorn -w 2, wrk -t2 -c{args.connections} -d{args.seconds}s, distinct push bodies, "
          f"median of {args.rounds} alternating rounds (all rounds: "
          + "; ".join(f"{k} {', '.join(f'{v:.0f}' for v in vs)}" for k, vs in results.items())
          + "):")
    print(f"  bare Flask (get_json only)                 {bare:8.0f} req/s")
    print(f"  receiver, sync mode, no-op handler         {sync:8.0f} req/s   "
          f"ratio {sync / bare:.3f} (auth, validation, the default log line, metrics on; "
          "target >= 0.95)")
    print(f"  the same with RECEIVER_METRICS=false       {nometrics:8.0f} req/s   "
          f"metrics on / off {sync / nometrics:.3f} (target >= 0.95)")
    print(f"  the same, also RECEIVER_LOG_LEVEL=WARNING   {quiet:8.0f} req/s   "
          f"ratio {quiet / bare:.3f} (no metrics, no log line: auth, validation, id, dispatch)")
    print(f"  receiver, SQLite queue, no-op handler      {sqlite:8.0f} req/s   "
          f"ratio {sqlite / bare:.3f} (target >= 0.8)")
    print(f"  receiver, Redis queue, no-op handler       {rq:8.0f} req/s   "
          f"ratio {rq / bare:.3f} (target >= 0.8)")
    if args.against:
        for name, ours in (("sync", sync), ("sqlite", sqlite)):
            theirs = statistics.median(results[f"{name}@against"])
            print(f"  {args.against}, {name:6} mode             {theirs:8.0f} req/s   "
                  f"ours / theirs {ours / theirs:.3f}")
    for name, (after_answer, after_sending) in waits.items():
        for what, values in (("202 -> handler start", after_answer),
                             ("sent -> handler start", after_sending)):
            values.sort()
            p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
            print(f"  {what + ',':22} {name:6}, 50 req/s: "
                  f"median {statistics.median(values):6.1f} ms, p99 {p99:6.1f} ms, "
                  f"{len(values)} events (target: median < 50 ms)")
    print("  (202 -> handler start is negative when the handler started before the answer "
          "reached the client)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
