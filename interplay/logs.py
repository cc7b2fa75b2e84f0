"""Where the engine's own output goes: vLLM, its engine-core processes and torch write to file descriptors 1 and 2
directly (and from other processes), so only redirecting the descriptors themselves keeps them off the terminal."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


@contextlib.contextmanager
def engine_logs_to(path: Path | None) -> Iterator[tuple[TextIO, TextIO]]:
    """Send everything written to fds 1 and 2 to `path` (appending); yield streams on the original stdout and
    stderr for our own progress bar and summary. With `path` None, nothing is redirected."""
    if path is None:
        yield sys.stdout, sys.stderr
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    out, err = os.fdopen(os.dup(saved[0]), "w", buffering=1), os.fdopen(os.dup(saved[1]), "w", buffering=1)
    os.dup2(log, 1)
    os.dup2(log, 2)
    try:
        yield out, err
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log):
            os.close(fd)
        out.close()
        err.close()
