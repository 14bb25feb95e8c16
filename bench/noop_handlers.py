"""The handler module for bench_receiver.py: one handler that does nothing."""

from receiver import on


@on("pushImage")
def noop(event):
    pass
