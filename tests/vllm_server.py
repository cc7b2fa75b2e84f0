"""A real vLLM server for the tests: the installed CPU build on the embedded model, started the way `make serve`
starts it (interplay/generator/runtime/serve.py) on a free port of 127.0.0.1, in a process group of its own so
that a test can SIGKILL the whole of it (API server and engine core) as a crash or the OOM killer would.

    server = VllmServer(log_path)   # starts it and waits until /v1/models answers
    server.url                      # http://127.0.0.1:PORT
    server.kill()                   # SIGKILL to its process group; the port refuses connections
    server.start()                  # again, on the same port
    server.stop()
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from interplay.generator.runtime.serve import SERVED_NAME, serve_command, serve_env
from s3_server import free_port

START_TIMEOUT_S = 1800  # engine start-up on a busy 2-core machine, not a performance bound
KV_CACHE_MEMORY_BYTES = 256 << 20  # the machine is shared: a small KV cache (as tests/test_vllm_faults.py)


class VllmServer:
    model = SERVED_NAME

    def __init__(self, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        command = serve_command(port=self.port, kv_cache_memory_bytes=KV_CACHE_MEMORY_BYTES,
                                extra=["--uvicorn-log-level", "warning"])
        with open(self.log_path, "a") as log:
            # vLLM's own thread binding: the test machine may be running other jobs (serve.py, serve_env).
            self.proc = subprocess.Popen(command, env=serve_env(all_cores=False), stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"vllm serve did not answer within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, num_chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-num_chars:]

    def kill(self) -> None:
        """SIGKILL to every process of the server, as a crash takes it down; the port refuses connections."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        deadline = time.monotonic() + 60  # the engine core goes with its group; wait until the port is free
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.url}/v1/models", timeout=1)
            except httpx.TransportError:
                return
            time.sleep(0.5)

    def stop(self) -> None:
        try:
            self.kill()
        except ProcessLookupError:
            pass
