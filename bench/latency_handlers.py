"""The handler module for bench_receiver.py's latency run: notes when each job starts."""

import os
import time

from receiver import on

_out = open(os.environ["BENCH_STARTS"], "a", buffering=1)


@on("pushImage")
def started(event):
    _out.write(f"{event.id} {time.time():.6f}\n")
