"""`selfinstruct review RUN`: a page on 127.0.0.1 to answer the paper's three questions per task.

The server is the standard library's (ThreadingHTTPServer): one static page, no build step, and
a small JSON API. Every answer, edit and drop is appended to RUN/review.jsonl before the page
hears back, so a reload or a crash loses nothing and reopening resumes at the first task not
fully answered. Nothing leaves the machine: the server listens on 127.0.0.1 only, answers only
requests addressed to that host (no DNS rebinding), and the API wants a per-session token that
only the page it served knows (no other site can post labels). The page puts model text into
the document as text, never as HTML.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import threading
import webbrowser
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from selfinstruct.config import DATA_DIR, ReviewConfig
from selfinstruct.errors import SelfInstructError
from selfinstruct.quality import (
    EVENT,
    QUESTION_TEXT,
    QUESTIONS,
    AnswerEvent,
    DropEvent,
    EditEvent,
    SampleEvent,
    choose_sample,
    quality_table,
    read_review,
)
from selfinstruct.records import Task
from selfinstruct.rundir import RunDir
from selfinstruct.store import EventLog, RunStore, acquire_lock, generate_dir

PAGE = DATA_DIR / "review" / "page.html"
MAX_BODY = 1 << 20  # an edited output is text; a megabyte is plenty


class ReviewSession:
    """The tasks under review, the folded journal, and appending to it (thread-safe)."""

    def __init__(self, run: Path, size: int, seed: int) -> None:
        self.run = generate_dir(run)
        tasks = RunStore(self.run).tasks()
        if not tasks:
            raise SelfInstructError(f"{self.run}: no accepted tasks to review yet")
        self.tasks: dict[str, Task] = {t.id: t for t in tasks}
        self.path = RunDir(self.run).review
        self._lock_file = acquire_lock(
            RunDir(self.run).review_lock,
            "this run is already open for review ({holder}); close that page's server first",
        )
        self._lock = threading.Lock()
        self.state = read_review(self.path)
        self.journal = EventLog(self.path)
        sample = self.state.sample
        if sample is None or (sample.seed, sample.size) != (seed, size):
            # A new sample, or the first; labels already given to its tasks still count.
            event = SampleEvent(seed=seed, size=size, task_ids=choose_sample(tasks, size, seed))
            self.journal.append(event)
            self.state.apply(event)
        assert self.state.sample is not None
        self.sample = [i for i in self.state.sample.task_ids if i in self.tasks]

    def close(self) -> None:
        self.journal.close()
        self._lock_file.close()

    def _view(self, task_id: str) -> dict[str, Any]:
        task = self.tasks[task_id]
        instances = []
        for i, inst in enumerate(task.instances):
            edited = self.state.edits.get((task_id, i))
            instances.append(
                {
                    "input": edited[0] if edited else inst.input,
                    "output": edited[1] if edited else inst.output,
                    "original_input": inst.input,
                    "original_output": inst.output,
                    "edited": edited is not None,
                }
            )
        similar = max(task.most_similar.items(), key=lambda kv: kv[1], default=None)
        return {
            "id": task_id,
            "instruction": task.instruction,
            "is_classification": task.is_classification,
            "instances": instances,
            "round": task.round,
            "request_id": task.request_id,
            "most_similar": {"text": similar[0], "score": similar[1]} if similar else None,
            "avg_similarity": task.avg_similarity_score,
            "labels": self.state.answers.get(task_id, {}),
            "dropped": task_id in self.state.dropped,
        }

    def _done(self, task_id: str) -> bool:
        labels = self.state.answers.get(task_id, {})
        return task_id in self.state.dropped or all(q in labels for q in QUESTIONS)

    def stats(self) -> dict[str, Any]:
        table = quality_table(self.state.answers, self.sample)
        return {
            "reviewed": sum(self._done(i) for i in self.sample),
            "total": len(self.sample),
            "dropped": sum(i in self.state.dropped for i in self.sample),
            "edited": len({t for t, _ in self.state.edits if t in self.tasks}),
            "rows": {k: v.model_dump() for k, v in table.rows.items()},
        }

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            first_open = next(
                (n for n, i in enumerate(self.sample) if not self._done(i)), len(self.sample) - 1
            )
            return {
                "run": str(self.run),
                "questions": [{"key": q, "text": QUESTION_TEXT[q]} for q in QUESTIONS],
                "tasks": [self._view(i) for i in self.sample],
                "position": max(first_open, 0),
                "stats": self.stats(),
            }

    def record(self, payload: Any) -> dict[str, Any]:
        """Validate one event from the page, write it, and return what the page shows next."""
        try:
            event = EVENT.validate_python(payload)
        except ValidationError as exc:
            raise ValueError(str(exc).splitlines()[0]) from None
        if not isinstance(event, AnswerEvent | EditEvent | DropEvent):
            raise ValueError("the page may send answers, edits and drops only")
        if event.task_id not in self.sample:
            raise ValueError(f"task {event.task_id!r} is not in this review's sample")
        if isinstance(event, EditEvent) and event.instance >= len(
            self.tasks[event.task_id].instances
        ):
            raise ValueError(f"task {event.task_id!r} has no instance {event.instance}")
        with self._lock:
            self.journal.append(event)
            self.state.apply(event)
            return {"task": self._view(event.task_id), "stats": self.stats()}


def _handler(session: ReviewSession, token: str, port: Callable[[], int]) -> type:
    page = PAGE.read_text(encoding="utf-8").replace("__TOKEN__", token)

    class Handler(BaseHTTPRequestHandler):
        server_version = "selfinstruct-review"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the terminal shows the URL and errors, not every request

        def _host_ok(self) -> bool:
            host = self.headers.get("Host", "")
            return host in {f"127.0.0.1:{port()}", f"localhost:{port()}"}

        def _send(self, status: int, body: bytes, kind: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header(
                "Content-Security-Policy",
                "default-src 'none'; script-src 'self' 'unsafe-inline'; "
                "style-src 'unsafe-inline'; connect-src 'self'",
            )
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            self._send(status, json.dumps(data).encode("utf-8"), "application/json")

        def _guard(self) -> bool:
            if not self._host_ok():
                self._json(HTTPStatus.FORBIDDEN, {"error": "wrong host"})
                return False
            if self.path.startswith("/api/") and not secrets.compare_digest(
                self.headers.get("X-Review-Token", ""), token
            ):
                self._json(HTTPStatus.FORBIDDEN, {"error": "missing or wrong token"})
                return False
            return True

        def do_GET(self) -> None:
            if not self._guard():
                return
            if self.path in {"/", "/index.html"}:
                self._send(HTTPStatus.OK, page.encode("utf-8"), "text/html; charset=utf-8")
            elif self.path == "/api/state":
                self._json(HTTPStatus.OK, session.snapshot())
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self) -> None:
            if not self._guard():
                return
            if self.path != "/api/events":
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "too large"})
                return
            try:
                payload = json.loads(self.rfile.read(length) or b"null")
                self._json(HTTPStatus.OK, session.record(payload))
            except ValueError as exc:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})

    return Handler


class ReviewServer:
    """The review page served on 127.0.0.1 from a background thread (`serve` blocks instead)."""

    def __init__(self, cfg: ReviewConfig) -> None:
        self.session = ReviewSession(cfg.run, cfg.size, cfg.seed)
        self.token = secrets.token_urlsafe(24)
        try:
            self.httpd = ThreadingHTTPServer(
                ("127.0.0.1", cfg.port),
                _handler(self.session, self.token, lambda: self.httpd.server_address[1]),
            )
        except OSError as exc:
            self.session.close()
            raise SelfInstructError(
                f"cannot listen on 127.0.0.1:{cfg.port} ({exc.strerror}); "
                "give another --port, or 0 for any free one"
            ) from None
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def start(self) -> ReviewServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def serve(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()
        self.session.close()

    def __enter__(self) -> ReviewServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _has_display() -> bool:
    # Without a display, webbrowser falls back to a text browser that would take the terminal.
    return sys.platform in {"darwin", "win32"} or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def run_review(cfg: ReviewConfig, announce: Callable[[str], None] = print) -> None:
    """Serve the page until Ctrl-C."""
    server = ReviewServer(cfg)
    stats = server.session.stats()
    announce(
        f"reviewing {stats['total']} tasks of {server.session.run} "
        f"({stats['reviewed']} done) at {server.url}  (Ctrl-C to stop; answers are saved as "
        "they are made)"
    )
    if cfg.browser and _has_display():
        threading.Timer(0.3, webbrowser.open, args=(server.url,)).start()
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
