"""OpenAI's Batch API (`/v1/files` + `/v1/batches`): the same requests at half the price, late.

The loop submits requests as usual. This backend gathers them until no new one has come for
`flush_after` seconds (the loop is waiting on everything it sent: a stage is complete), uploads
them as one JSONL file, creates a batch, and polls it every `poll_every` seconds. When the batch
is done, each answer completes its request's future, and the loop journals it like any response.

Every batch created is written to `batches.jsonl` in the run directory (batch id and request ids)
before anything waits on it, so a killed run, started again, polls the batches it already paid
for instead of sending their requests again. A batch that failed, expired or was cancelled has
its unanswered requests sent again in a new batch.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from selfinstruct.backends.base import (
    BackendError,
    BackendStats,
    Completion,
    Prompt,
    SamplingParams,
    Usage,
)
from selfinstruct.backends.openai_compat import connect, request_body
from selfinstruct.config import OpenAIBatchOptions

DONE = {"completed"}
LOST = {"failed", "expired", "cancelled"}  # unanswered requests are sent again


class OpenAIBatchBackend:
    name = "openai-batch"

    def __init__(
        self,
        model: str,
        options: OpenAIBatchOptions,
        registry: Path,
        chat: bool = True,
        max_per_batch: int = 50_000,
    ) -> None:
        try:
            import openai
        except ImportError:  # pragma: no cover - a core dependency
            raise BackendError("the openai-batch backend needs the openai package") from None
        self._key, urls = connect(options)
        # The Batch API lives on one server (the first URL).
        self._client = openai.OpenAI(
            base_url=urls[0], api_key=self._key, max_retries=options.max_retries
        )
        self._errors = openai
        self.model = model
        self.chat = chat
        self.poll_every = options.batch_poll
        self.flush_after = options.batch_flush
        self.max_per_batch = max_per_batch
        self.registry = registry
        self._lock = threading.Lock()
        self._waiting: dict[str, tuple[Prompt, SamplingParams, Future[Completion]]] = {}
        self._last_submit = 0.0
        # Batches already created (also in an earlier process): id -> request ids not answered.
        self._open: dict[str, list[str]] = {}
        self._sent: dict[str, Future[Completion]] = {}  # request id -> its future, once sent
        self._known: dict[str, str] = {}  # request id -> batch id, from the registry
        self._stats = BackendStats()
        self._failure: BaseException | None = None
        self._stop = threading.Event()
        self._load_registry()
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()

    def _load_registry(self) -> None:
        if not self.registry.exists():
            return
        for line in self.registry.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a torn last line: that batch was never created as far as we know
            for rid in entry["requests"]:
                self._known[rid] = entry["batch"]

    def submit(
        self, request_id: str, prompt: Prompt, params: SamplingParams, priority: Any = ()
    ) -> Future[Completion]:
        future: Future[Completion] = Future()
        with self._lock:
            if self._failure is not None:
                future.set_exception(self._failure)
                return future
            batch = self._known.get(request_id)
            if batch is not None:
                # Asked in a batch this run created before it was killed: wait for that batch.
                self._open.setdefault(batch, []).append(request_id)
                self._sent[request_id] = future
            else:
                self._waiting[request_id] = (prompt, params, future)
                self._last_submit = time.monotonic()
            self._stats.in_flight += 1
        return future

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        futures = [self.submit(f"direct-{k}-{id(p)}", p, params) for k, p in enumerate(prompts)]
        return [f.result() for f in futures]

    def resumes(self, request_id: str) -> bool:
        """Is this request in a batch an earlier process created? Then resuming polls that
        batch: the request is not sent, nor paid, again."""
        with self._lock:
            return request_id in self._known

    def stats(self) -> BackendStats:
        with self._lock:
            return self._stats.model_copy()

    # -- the worker: send batches, poll them, hand out answers ---------------------------

    def _work(self) -> None:
        next_poll = 0.0
        while not self._stop.wait(0.2):
            try:
                self._maybe_send()
                if time.monotonic() >= next_poll and self._open:
                    self._poll()
                    next_poll = time.monotonic() + self.poll_every
            except (self._errors.APIError, BackendError, OSError) as exc:
                self._fail(exc)
                return

    def _maybe_send(self) -> None:
        with self._lock:
            idle = time.monotonic() - self._last_submit >= self.flush_after
            if not self._waiting or not (idle or len(self._waiting) >= self.max_per_batch):
                return
            chosen = list(self._waiting.items())[: self.max_per_batch]
            for rid, _ in chosen:
                del self._waiting[rid]
        lines = [
            json.dumps(
                {
                    "custom_id": rid,
                    "method": "POST",
                    "url": self._endpoint(),
                    "body": self._body(prompt, params),
                },
                ensure_ascii=False,
            )
            for rid, (prompt, params, _) in chosen
        ]
        upload = self._client.files.create(
            file=("requests.jsonl", ("\n".join(lines) + "\n").encode("utf-8")), purpose="batch"
        )
        batch = self._client.batches.create(
            input_file_id=upload.id,
            endpoint=self._endpoint(),
            completion_window="24h",
            metadata={"created_by": "selfinstruct"},
        )
        ids = [rid for rid, _ in chosen]
        with self.registry.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"batch": batch.id, "requests": ids}) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        with self._lock:
            self._open[batch.id] = ids
            for rid, (_, _, future) in chosen:
                self._sent[rid] = future
                self._known[rid] = batch.id
            self._stats.batches += 1
            self._stats.batched_requests += len(ids)
            self._stats.largest_batch = max(self._stats.largest_batch, len(ids))
            self._stats.requests += len(ids)

    def _poll(self) -> None:
        for batch_id in list(self._open):
            batch = self._client.batches.retrieve(batch_id)
            if batch.status in DONE:
                answers = self._results(batch.output_file_id) | self._results(batch.error_file_id)
                self._settle(batch_id, answers)
            elif batch.status in LOST:
                self._settle(batch_id, {})

    def _results(self, file_id: str | None) -> dict[str, Completion]:
        if not file_id:
            return {}
        text = self._client.files.content(file_id).text
        answers = {}
        for line in text.splitlines():
            if line.strip():
                row = json.loads(line)
                answers[row["custom_id"]] = self._completion(row)
        return answers

    def _settle(self, batch_id: str, answers: dict[str, Completion]) -> None:
        with self._lock:
            ids = self._open.pop(batch_id, [])
            for rid in ids:
                future = self._sent.pop(rid, None)
                if future is None:
                    continue
                answer = answers.get(rid)
                if answer is None:
                    # The batch ended without this one: the loop asks for it again.
                    answer = Completion(
                        text="", finish_reason="error", error="batch ended", retryable=True
                    )
                    self._known.pop(rid, None)
                self._stats.in_flight -= 1
                future.set_result(answer)

    def _fail(self, exc: BaseException) -> None:
        error = BackendError(f"the Batch API failed: {str(exc).replace(self._key, '***')[:300]}")
        with self._lock:
            self._failure = error
            futures = [f for _, _, f in self._waiting.values()] + list(self._sent.values())
            self._waiting.clear()
            self._sent.clear()
        for future in futures:
            if not future.done():
                future.set_exception(error)

    # -- request and answer formats --------------------------------------------------------

    def _endpoint(self) -> str:
        return "/v1/chat/completions" if self.chat else "/v1/completions"

    def _body(self, prompt: Prompt, params: SamplingParams) -> dict[str, Any]:
        return request_body(self.model, self.chat, prompt, params)

    @staticmethod
    def _completion(row: dict[str, Any]) -> Completion:
        response = row.get("response") or {}
        body = response.get("body") or {}
        status = response.get("status_code")
        if status != 200 or not body.get("choices"):
            error = row.get("error") or body.get("error") or {"message": f"HTTP {status}"}
            message = error.get("message", str(error)) if isinstance(error, dict) else str(error)
            return Completion(text="", finish_reason="error", error=message[:300])
        choice = body["choices"][0]
        if "message" in choice:
            text = choice["message"].get("content") or ""
        else:
            text = choice.get("text") or ""
        usage = body.get("usage") or {}
        return Completion(
            text=text,
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            usage=Usage(
                prompt_tokens=usage.get("prompt_tokens") or 0,
                completion_tokens=usage.get("completion_tokens") or 0,
            ),
        )

    def close(self) -> None:
        self._stop.set()
        self._worker.join(timeout=10)
        self._client.close()


def open_batch(
    model: str | None, options: OpenAIBatchOptions, chat: bool | None, run_dir: Path | None
) -> OpenAIBatchBackend:
    from selfinstruct.rundir import RunDir

    assert model is not None  # the registry asks for it first
    if run_dir is None:
        raise BackendError("the openai-batch backend needs a run directory for its batches")
    run_dir.mkdir(parents=True, exist_ok=True)
    return OpenAIBatchBackend(model, options, RunDir(run_dir).batches, chat=chat is not False)
