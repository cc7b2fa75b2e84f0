"""`open_engines` for Ray workers in tests: the fake engine, importable by name in a worker process.

Each turn takes ~100 ms so that a run lasts long enough for a test to kill a worker in the middle of it. Like
vLLM, it writes a line to its process's stderr when it starts, which must land in the partition's log file.
"""

from __future__ import annotations

import os

from fake_engine import fake_open_engines, make_clients

STARTED = "fake engine started in process"


def open_engines(config):
    os.write(2, f"{STARTED} {os.getpid()}\n".encode())  # to fd 2 itself, as vLLM's engine processes do
    return fake_open_engines(make_clients(delay=0.1))(config)


def always_die(config):
    """A worker that dies the same way every time it starts its engines (as one out of memory would)."""
    os.kill(os.getpid(), 9)
