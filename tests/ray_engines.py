"""`open_engines` for Ray workers in tests: the fake engine, importable by name in a worker process.

Each turn takes ~100 ms so that a run lasts long enough for a test to kill a worker in the middle of it.
"""

from __future__ import annotations

from fake_engine import fake_open_engines, make_clients


def open_engines(config):
    return fake_open_engines(make_clients(delay=0.1))(config)
