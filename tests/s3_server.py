"""A real S3 API server for the tests: moto's server mode (moto.server's WSGI application, the one `moto_server`
runs) in a process of its own on 127.0.0.1, driven by tests/test_object_store.py; and writers that meet at a
conditional write.

    python tests/s3_server.py PORT
    python tests/s3_server.py open-together CONFIG_JSON URI BARRIER_DIR COUNT [--partition I N]

It prints "up" once it serves. Signals: SIGUSR1 takes it down (its port refuses connections, as a killed server's
does, and its objects stay, as a restarted MinIO's stay on its disk), SIGUSR2 brings it back on the same port;
each answers "down" or "up" on stdout.

One request at a time. moto checks a PutObject's If-None-Match / If-Match and then stores the object: two steps,
which two server threads could interleave so that both of two create-if-absent writes succeed. S3 decides each
conditional write to a key alone, and so does this server by serving requests one after another.

Test-only switches (GET, answered "ok"):
    /_interplay/conditional?on=0   drop If-None-Match and If-Match from every request: a store without conditional
                                   writes (an older MinIO, or another S3-compatible store that ignores them); on=1
                                   passes them on again
    /_interplay/auth?on=1          moto checks every request's credentials against its IAM, where no key exists:
                                   credentials refused (InvalidAccessKeyId); on=0 accepts any again
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from typing import Any
from urllib.parse import parse_qs

CONTROL = "/_interplay/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Conditional:
    """WSGI middleware: passes the conditional headers on, or drops them (the switch above)."""

    def __init__(self, app: Any):
        self.app, self.on = app, True

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith(CONTROL):
            on = parse_qs(environ.get("QUERY_STRING", "")).get("on", ["1"])[0] == "1"
            if path == CONTROL + "conditional":
                self.on = on
            elif path == CONTROL + "auth":
                from moto import settings
                from moto.core.authorization import ActionAuthenticatorMixin

                settings.INITIAL_NO_AUTH_ACTION_COUNT = 0 if on else float("inf")
                ActionAuthenticatorMixin.request_count = 0
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok"]
        if not self.on:
            environ.pop("HTTP_IF_NONE_MATCH", None)
            environ.pop("HTTP_IF_MATCH", None)
        return self.app(environ, start_response)


def serve(port: int) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = Conditional(DomainDispatcherApplication(create_backend_app))
    state: dict[str, Any] = {"server": None, "thread": None}
    lock = threading.Lock()

    def up() -> None:
        with lock:
            if state["server"] is None:
                server = make_server("127.0.0.1", port, app, threaded=False, request_handler=MotoRequestHandler)
                state["server"], state["thread"] = server, threading.Thread(target=server.serve_forever, daemon=True)
                state["thread"].start()
        print("up", flush=True)

    def down() -> None:
        with lock:
            if state["server"] is not None:
                state["server"].shutdown()  # waits for the request being served
                state["server"].server_close()
                state["thread"].join()
                state["server"] = None
        print("down", flush=True)

    # The handlers only hand the work over: shutdown() must not run inside the signal handler of the main thread
    # while it waits in this very loop's join.
    todo: list[str] = []
    wake = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        todo.append("down" if signum == signal.SIGUSR1 else "up")
        wake.set()

    signal.signal(signal.SIGUSR1, on_signal)
    signal.signal(signal.SIGUSR2, on_signal)
    up()
    while True:
        wake.wait()
        wake.clear()
        while todo:
            (down if todo.pop(0) == "down" else up)()


class S3Server:
    """The server process, as the fixture drives it: `endpoint`, `down()`, `up()`, `stop()`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, __file__, str(self.port)], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True,
                                     env={**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"})
        self._expect("up")

    def _expect(self, word: str) -> None:
        line = self.proc.stdout.readline().strip()
        if line != word:
            raise RuntimeError(f"the S3 test server said {line!r}, not {word!r} (exit status {self.proc.poll()})")

    def down(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)
        self._expect("down")

    def up(self) -> None:
        self.proc.send_signal(signal.SIGUSR2)
        self._expect("up")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def open_together(argv: list[str]) -> int:
    """One of COUNT writers started together: it opens URI (the real Generation and writer) up to its lease's
    conditional write, having checked the output (layout record, leases, manifests), and there waits until all
    COUNT have arrived (a file each in BARRIER_DIR), so that none of them has written anything yet; then all send
    their writes at once and the store decides. Prints "met <what it read of its lease>", then "opened <pid>" and
    generates on the fake engine (exit 0 complete, 1 not), or exits 3 with the refusal on stderr.
    """
    import argparse
    import asyncio
    import json
    import time
    from pathlib import Path

    from fake_engine import fake_open_engines, make_clients
    from interplay.common.partition import Partition
    from interplay.generator.config import GenerateConfig
    from interplay.generator.output.objectstore import S3Storage
    from interplay.generator.output.writer import OutputError
    from interplay.generator.runtime.run import Generation

    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("uri")
    parser.add_argument("barrier", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("--partition", type=int, nargs=2)
    args = parser.parse_args(argv)

    def meet(read: str) -> None:
        (args.barrier / str(os.getpid())).write_text(read)
        deadline = time.time() + 60
        while len(list(args.barrier.iterdir())) < args.count:
            if time.time() > deadline:
                raise SystemExit("the other writers never arrived")
            time.sleep(0.005)
        print(f"met {read}", flush=True)

    put = S3Storage._put

    def put_met(self: S3Storage, name: str, data: bytes, *, expect: object) -> str:
        if name.startswith(".lease") and not getattr(self, "_met", False):
            self._met = True
            meet("absent" if expect is None else f"version {expect}")
        return put(self, name, data, expect=expect)

    S3Storage._put = put_met
    config = GenerateConfig.model_validate(json.loads(Path(args.config).read_text()))
    try:
        generation = Generation(config, args.uri, partition=Partition(*args.partition) if args.partition else None)
    except OutputError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 3
    print(f"opened {os.getpid()}", flush=True)
    manifest = asyncio.run(generation.run(fake_open_engines(make_clients())))
    return 0 if manifest["status"] == "complete" else 1


if __name__ == "__main__":
    if sys.argv[1] == "open-together":
        sys.exit(open_together(sys.argv[2:]))
    serve(int(sys.argv[1]))
