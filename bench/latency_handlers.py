"""The handler module for bench_receiver.py's latency run: notes when each job starts."""

import os
import time

from receiver import on

# Open for the life of the server process, which closes it at exit.
_out = open(os.environ["BENCH_STARTS"], "a", buffering=1)  # noqa: SIM115


@on("pushImage")
def started(event):
    _out.write(f"{event.id} {time.time():.6f}\n")
