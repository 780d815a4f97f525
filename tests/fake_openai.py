"""A real OpenAI-compatible HTTP server on 127.0.0.1 for tests, with scriptable faults."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selfinstruct.backends.scripted import canned_reply

# An action: ("ok", text) | ("ok", text, finish_reason) | ("ok", text, finish_reason, {headers})
# | ("status", code, {headers})
# | ("sleep", seconds) then continue with the next action | ("malformed",) | ("empty",)
# | ("reset",)
Action = tuple[Any, ...]


def prompt_text(body: dict[str, Any]) -> str:
    if "messages" in body:
        return "\n".join(m["content"] for m in body["messages"])
    return body["prompt"]


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops bursts of connections, and a dropped SYN is
    # retried only after a second: a client opening 128 connections at once would stall.
    request_queue_size = 1024


class FakeOpenAI:
    def __init__(
        self,
        brain: Callable[[dict[str, Any], int], list[Action]] | None = None,
        delay: float = 0.0,
        owned_by: str | None = None,
    ) -> None:
        self.brain = brain or (lambda body, n: [("ok", canned_reply(prompt_text(body)))])
        self.delay = delay
        # GET /models: None answers 404 (a server without the endpoint); "vllm" as vLLM does.
        self.owned_by = owned_by
        self.model_lists = 0
        self.dead = False
        self.bodies: list[dict[str, Any]] = []
        self.answered_ok = 0  # 200 responses with a usable completion
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes; without this, delayed ACKs add ~40 ms.
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if fake.dead:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                with fake.lock:
                    fake.model_lists += 1
                if fake.owned_by is None or not self.path.endswith("/models"):
                    fake._send(self, 404, b'{"error": {"message": "not found"}}')
                    return
                model = {"id": "m", "object": "model", "created": 0, "owned_by": fake.owned_by}
                fake._send(self, 200, json.dumps({"object": "list", "data": [model]}).encode())

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if fake.dead:  # a killed server: open connections break, nothing answers
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                with fake.lock:
                    fake.bodies.append(body)
                    n = len(fake.bodies)
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    if fake.delay:
                        time.sleep(fake.delay)
                    fake.respond(self, body, fake.brain(body, n))
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.dead:
            self.server.shutdown()
            self.server.server_close()

    def kill(self) -> None:
        """Die as a server process does: refuse new connections, break the open ones."""
        self.dead = True
        self.server.shutdown()
        self.server.server_close()

    def respond(
        self, handler: BaseHTTPRequestHandler, body: dict[str, Any], actions: list[Action]
    ) -> None:
        for action in actions:
            kind = action[0]
            if kind == "sleep":
                time.sleep(action[1])
                continue
            if kind == "reset":
                handler.close_connection = True
                handler.connection.shutdown(2)
                return
            if kind == "status":
                text = action[3] if len(action) > 3 else f"status {action[1]}"
                error = {"message": text, **(action[4] if len(action) > 4 else {})}
                payload = json.dumps({"error": error}).encode()
                self._send(handler, action[1], payload, action[2] if len(action) > 2 else {})
                return
            if kind == "partial":
                # Headers promise a body that never fully arrives: a reset mid-response.
                handler.send_response(200)
                handler.send_header("content-type", "application/json")
                handler.send_header("content-length", "500")
                handler.end_headers()
                handler.wfile.write(b'{"id": "x", "choices": [')
                handler.wfile.flush()
                handler.close_connection = True
                handler.connection.shutdown(2)
                return
            if kind == "malformed":
                self._send(handler, 200, b'{"id": "x", "choices": [ {"text": ')
                return
            if kind == "empty":
                self._send(
                    handler,
                    200,
                    json.dumps(
                        {
                            "id": "x",
                            "object": "text_completion",
                            "created": 0,
                            "model": "m",
                            "choices": [],
                        }
                    ).encode(),
                )
                return
            text = action[1]
            finish = action[2] if len(action) > 2 else "stop"
            with self.lock:
                self.answered_ok += 1
            usage = {
                "prompt_tokens": len(prompt_text(body).split()),
                "completion_tokens": len(text.split()),
                "total_tokens": 0,
            }
            if "messages" in body:
                data = {
                    "id": "c",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "usage": usage,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": finish,
                            "message": {"role": "assistant", "content": text},
                        }
                    ],
                }
            else:
                data = {
                    "id": "c",
                    "object": "text_completion",
                    "created": 0,
                    "model": body["model"],
                    "usage": usage,
                    "choices": [
                        {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
                    ],
                }
            self._send(
                handler, 200, json.dumps(data).encode(), action[3] if len(action) > 3 else {}
            )
            return

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        code: int,
        payload: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        handler.send_response(code)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(payload)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(payload)


FAULTS: list[tuple[str, Action | list[Action]]] = [
    ("429 with Retry-After", [("status", 429, {"retry-after": "0.05"})]),
    ("429 without Retry-After", [("status", 429)]),
    ("500", [("status", 500)]),
    ("502", [("status", 502)]),
    ("503", [("status", 503)]),
    ("reset mid-response", [("partial",)]),
    ("slower than the timeout", [("sleep", 2.0), ("status", 500)]),
    ("malformed JSON", [("malformed",)]),
    ("empty choices", [("empty",)]),
]


def faulty_brain(
    rate: float, seed: int = 0, weights: dict[str, float] | None = None
) -> Callable[[dict[str, Any], int], list[Action]]:
    """Answer correctly (from the canned replies) or with a fault, `rate` of the time.

    `weights` sets the proportions of the fault kinds (names from FAULTS; default: equal).
    Correct answers include finish_reason "length" and text that matches no expected format,
    which are valid responses the client must record, not retry.
    """
    import random

    rng = random.Random(seed)
    lock = threading.Lock()
    kinds = [name for name, _ in FAULTS]
    shares = [float((weights or {}).get(name, 0 if weights else 1)) for name in kinds]
    plans = dict(FAULTS)

    def brain(body: dict[str, Any], n: int) -> list[Action]:
        with lock:
            roll, pick = rng.random(), rng.random()
            kind = rng.choices(kinds, weights=shares)[0]
        if roll < rate:
            return list(plans[kind])  # type: ignore[arg-type]
        text = canned_reply(prompt_text(body))
        if pick < 0.05:
            return [("ok", text, "length")]
        if pick < 0.10:
            return [("ok", "I am not sure what you mean by that.")]
        return [("ok", text)]

    return brain
