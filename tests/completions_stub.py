"""A small real HTTP server that speaks the part of the OpenAI/vLLM API a role client uses, for the fast tests of
the server client (tests/test_server_client.py): http.server in a thread on 127.0.0.1, answering from a script.

    stub = CompletionsStub(models={"m": 2048}, tokenizer=tok)   # serves /v1/models, /tokenize, /metrics
    stub.script = [(429, {...}), (500, "oops"), (200, completion("hi"))]   # the next /v1/completions answers
    stub.requests                                                # the JSON bodies received, in order
    stub.max_active                                              # the most completions answered at once

With the script empty, /v1/completions answers one completion of "ok". `stub.stop()` closes the port, so that
connections are refused, as a killed server's are.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion(text: str = "ok", *, prompt_tokens: int = 5, completion_tokens: int = 1, cached: int | None = 0,
               finish_reason: str = "stop") -> dict[str, Any]:
    usage: dict[str, Any] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "cmpl-1", "object": "text_completion", "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": finish_reason}], "usage": usage}


class CompletionsStub:
    def __init__(self, *, models: dict[str, int] | None = None, tokenizer: Any = None, api_key: str | None = None,
                 metrics: str = "", delay_s: float = 0.0):
        self.models = models if models is not None else {"m": 2048}
        self.tokenizer, self.api_key, self.metrics, self.delay_s = tokenizer, api_key, metrics, delay_s
        self.script: list[tuple[int, Any] | tuple[int, Any, dict[str, str]]] = []
        self.requests: list[dict[str, Any]] = []
        self.models_text: str | None = None  # /v1/models answers this instead: not an OpenAI-compatible server
        self.tokenize_offset = 0  # added to every id /tokenize returns: a tokenizer that disagrees
        self.num_active = self.max_active = 0  # completions being answered at once, and the most seen
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if not stub._authorized(self):
                    return self._send(401, {"error": "bad key"})
                if self.path == "/v1/models" and stub.models_text is not None:
                    self._send(200, stub.models_text, content_type="text/html")
                elif self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [
                        {"id": name, "object": "model", "root": f"/srv/{name}", "parent": None,
                         "max_model_len": length} for name, length in stub.models.items()]})
                elif self.path == "/metrics" and stub.metrics:
                    self._send(200, stub.metrics, content_type="text/plain")
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if not stub._authorized(self):
                    return self._send(401, {"error": "bad key"})
                if self.path == "/tokenize" and stub.tokenizer is not None:
                    ids = stub.tokenizer(body["prompt"], add_special_tokens=False)["input_ids"]
                    return self._send(200, {"tokens": [i + stub.tokenize_offset for i in ids]})
                if self.path != "/v1/completions":
                    return self._send(404, {"error": "not found"})
                with stub._lock:
                    stub.requests.append(body)
                    stub.num_active += 1
                    stub.max_active = max(stub.max_active, stub.num_active)
                time.sleep(stub.delay_s)
                with stub._lock:
                    stub.num_active -= 1
                    step = stub.script.pop(0) if stub.script else (200, completion())
                self._send(step[0], step[1], headers=step[2] if len(step) > 2 else None)

            def _send(self, status: int, payload: Any, *, content_type: str = "application/json",
                      headers: dict[str, str] | None = None) -> None:
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _authorized(self, handler: BaseHTTPRequestHandler) -> bool:
        return self.api_key is None or handler.headers.get("Authorization") == f"Bearer {self.api_key}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
