"""Benchmark the receiver under gunicorn -w 2 and wrk against a bare Flask endpoint.

Run:  pip install -e . && python bench/bench_receiver.py [--seconds 10] [--connections 8]
Needs wrk (Debian: apt-get install wrk). Both servers get the same body, the same wrk
settings and the same worker count, one after the other; the target is at least 0.95 of the
bare endpoint's requests/s. It also prints the microseconds per body of json.loads alone
and of the full load into an Event.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
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


def run_wrk(app: str, env: dict[str, str], port: int, args: argparse.Namespace, lua: str) -> float:
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", app, "-w", "2", "-b", f"127.0.0.1:{port}",
         "--chdir", str(ROOT), "--pythonpath", str(HERE), "--log-level", "warning"],
        env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from receiver.schemas import load_event

    n = 20_000
    loads = min(timeit.repeat(lambda: json.loads(BODY), number=n, repeat=5)) / n * 1e6
    full = min(timeit.repeat(lambda: load_event(json.loads(BODY)), number=n, repeat=5)) / n * 1e6
    print(f"per body: json.loads {loads:.1f} us; json.loads + load into an Event {full:.1f} us")

    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk (Debian), then run again")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        lua = os.path.join(tmp, "post.lua")
        with open(lua, "w") as f:
            f.write(
                'wrk.method = "POST"\n'
                f"wrk.body = {json.dumps(BODY)}\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
                f'wrk.headers["Authentication"] = "{SECRET}"\n'
            )
        env = {"RECEIVER_HANDLERS": "noop_handlers",
               "RECEIVER_AUTH_HEADERS": json.dumps({"Authentication": SECRET})}
        configs = {
            "bare": ("bare_flask:app", {}),
            "ours": ("wsgi:app", env),
            "quiet": ("wsgi:app", {**env, "RECEIVER_LOG_LEVEL": "WARNING"}),
        }
        results: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.rounds):  # alternate, so drift on a shared machine hits all alike
            for port, (name, (app, app_env)) in enumerate(configs.items(), start=18081):
                results[name].append(run_wrk(app, app_env, port, args, lua))
    bare, ours, quiet = (statistics.median(results[name]) for name in configs)
    print(f"gunicorn -w 2, wrk -t2 -c{args.connections} -d{args.seconds}s, the seed's push body, "
          f"median of {args.rounds} alternating rounds:")
    print(f"  bare Flask (get_json only)              {bare:8.0f} req/s")
    print(f"  receiver, auth + no-op handler          {ours:8.0f} req/s   ratio {ours / bare:.3f} (target >= 0.95)")
    print(f"  the same without the per-request log    {quiet:8.0f} req/s   ratio {quiet / bare:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
