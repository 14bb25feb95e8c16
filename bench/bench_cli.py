"""How long ``receiver match`` takes, as a whole process, next to ``python -c "import click"``.

    python bench/bench_cli.py [--runs 60]

The two commands run alternately, so that drift on a shared machine hits both alike; each
figure is the median wall time of its runs. Target: ``receiver match --tag 'v*' v1`` takes at
most 1.5 times as long as importing click alone. The exit status is 1 when it does not.

``receiver`` is the installed console script of this interpreter (the one beside
``sys.executable``, else the first on the PATH): a version manager's shim on the PATH (pyenv)
would add its own start-up to every run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

TARGET = 1.5


def _timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=60, help="runs of each command")
    args = parser.parse_args()

    script = (shutil.which("receiver", path=os.path.dirname(sys.executable))
              or shutil.which("receiver"))
    if script is None:
        print("the receiver console script is not installed: pip install -e .")
        return 1
    ours_argv = [script, "match", "--tag", "v*", "v1"]
    base_argv = [sys.executable, "-c", "import click"]
    for argv in (ours_argv, base_argv):  # warm the file cache, and fail early
        _timed(argv)
    ours: list[float] = []
    base: list[float] = []
    for _ in range(args.runs):
        ours.append(_timed(ours_argv))
        base.append(_timed(base_argv))
    ours_ms = statistics.median(ours) * 1e3
    base_ms = statistics.median(base) * 1e3
    ratio = ours_ms / base_ms
    ours_name = "receiver match --tag 'v*' v1"
    base_name = 'python -c "import click"'
    print(f"median of {args.runs} alternating runs each:")
    print(f"  {ours_name:32} {ours_ms:7.1f} ms   ({script})")
    print(f"  {base_name:32} {base_ms:7.1f} ms")
    print(f"  ratio {ratio:.2f} (target <= {TARGET})")
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
