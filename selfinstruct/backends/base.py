"""The interface every backend implements, and the records that cross it.

A prompt is either a string (completion endpoints, base models) or a list of chat messages
(`[{"role": "user", "content": ...}]`, chat models). `finish_reason == "length"` tells a parser
that the text was cut off, so it can drop the last, truncated item.

The generate loop hands a backend each request the moment it is ready (`submit`, which returns a
future) and never waits for a whole stage, so an API with many slots, or a vLLM engine that wants
hundreds of sequences, always has work. A backend that answers in batches (local transformers)
derives from `BatchedBackend`: a worker thread takes the most urgent requests
that are waiting, at most `max_batch`, and answers them in one call.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from selfinstruct.config import SamplingParams
from selfinstruct.errors import BackendError

ChatMessage = dict[str, str]
Prompt = str | list[ChatMessage]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Completion(BaseModel):
    text: str
    finish_reason: Literal["stop", "length", "error"] = "stop"
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None  # why the request failed ("error")
    # A failure that says nothing about the request itself (the server was unreachable or
    # overloaded): the loop asks again instead of dropping the item.
    retryable: bool = False


class BackendStats(BaseModel):
    """What a live display and the JSON log show about the backend."""

    in_flight: int = 0
    limit: int | None = None  # requests allowed in flight now (adaptive backends)
    requests: int = 0  # attempts sent, retries included
    retries: int = 0
    rate_limited: int = 0  # 429 answers
    timeouts: int = 0
    failed: int = 0
    batches: int = 0  # calls made by a batched backend
    largest_batch: int = 0
    batched_requests: int = 0
    down: list[str] = Field(default_factory=list)  # servers taken out of the rotation now
    # A provider's stated rate limit: where it stands ("38 requests / 9,120 tokens left,
    # waited 12 s"), for the progress line; None when no server states one.
    pace: str | None = None
    # Tokens written so far by the batch an in-process engine is generating (0 between
    # batches): a long batch moves the progress line while it runs.
    live_tokens: int = 0
    # Prompt tokens (padding included) that batch reads before it writes, and read so far.
    live_prompt: int = 0
    live_read: int = 0


class Backend(Protocol):
    """Generate completions: one request at a time (`submit`) or a batch (`generate`)."""

    name: str
    model: str
    chat: bool  # True when prompts should be lists of messages

    def submit(
        self, request_id: str, prompt: Prompt, params: SamplingParams, priority: Any = ()
    ) -> Future[Completion]:
        """Start a request; the future gives its completion, or raises BackendError when the
        backend cannot serve at all (bad key, unknown model, a server gone for too long).
        `priority` (lower first) orders requests that wait for a slot; backends that take every
        request at once ignore it."""
        ...

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]: ...

    def stats(self) -> BackendStats: ...

    def close(self) -> None: ...


_STOP = object()


class BatchedBackend:
    """`submit` for backends that answer a batch per call: requests wait in a queue, and a
    worker thread takes the most urgent of those waiting (lowest priority, then arrival; at
    most `max_batch`) into one call. By priority, because the loop commits prompts in order:
    taken in arrival order, the newest prompts' requests filled batches while the oldest
    prompt waited, and a run that reached its target there had paid for them all (half of
    `make demo`'s classification and instance requests, bench/BENCHMARKS.md)."""

    max_batch = 64

    def __init__(self) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        self._order = itertools.count()
        # Set by `close`: a subclass that can stop a running batch (local) stops it, since
        # nobody waits for its answers any more.
        self._closing = threading.Event()
        self._worker: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stats = BackendStats()

    # Subclasses implement `_generate_batch`. `_generate_mixed` groups the requests of one take
    # by the settings a batch must share (`_shared`: all of them, unless a subclass can vary
    # some per row) and answers each group with `_generate_group`.
    def _generate_batch(
        self, prompts: Sequence[Prompt], params: SamplingParams
    ) -> list[Completion]:
        raise NotImplementedError

    def _shared(self, params: SamplingParams) -> SamplingParams:
        return params

    def _generate_group(
        self, prompts: Sequence[Prompt], params: Sequence[SamplingParams], shared: SamplingParams
    ) -> list[Completion]:
        return self._generate_batch(prompts, shared)

    def _generate_mixed(
        self, prompts: Sequence[Prompt], params: Sequence[SamplingParams]
    ) -> list[Completion]:
        groups: dict[SamplingParams, list[int]] = defaultdict(list)
        for k, p in enumerate(params):
            groups[self._shared(p)].append(k)
        out: list[Completion | None] = [None] * len(prompts)
        for shared, members in groups.items():
            answers = self._generate_group(
                [prompts[k] for k in members], [params[k] for k in members], shared
            )
            for k, completion in zip(members, answers, strict=True):
                out[k] = completion
        return [c for c in out if c is not None]

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        return self._generate_batch(prompts, params)

    def submit(
        self, request_id: str, prompt: Prompt, params: SamplingParams, priority: Any = ()
    ) -> Future[Completion]:
        future: Future[Completion] = Future()
        with self._start_lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, daemon=True)
                self._worker.start()
            self._stats.in_flight += 1
        self._queue.put((priority, next(self._order), (prompt, params, future)))
        return future

    def _serve(self) -> None:
        waiting: list[Any] = []  # a heap of (priority, arrival, request)
        try:
            while True:
                if not waiting:
                    item = self._queue.get()
                    if item is _STOP:
                        return
                    heapq.heappush(waiting, item)
                while True:  # everything that has arrived meanwhile competes for this batch
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:  # closed: what has not started never will
                        return
                    heapq.heappush(waiting, item)
                take = min(len(waiting), self.max_batch)
                self._answer([heapq.heappop(waiting)[2] for _ in range(take)])
        except BaseException as exc:  # the worker cannot go on: nobody may wait forever
            for _, _, (_, _, future) in waiting:
                if future.set_running_or_notify_cancel():
                    future.set_exception(exc)
                    with self._start_lock:
                        self._stats.in_flight -= 1
            raise
        finally:
            for _, _, (_, _, future) in waiting:
                if future.cancel():
                    with self._start_lock:
                        self._stats.in_flight -= 1

    def _answer(self, batch: list[tuple[Prompt, SamplingParams, Future[Completion]]]) -> None:
        stats = self._stats
        # A caller may cancel a queued request (a stopping loop does); running it would waste a
        # batch slot, and a cancelled future refuses a result. Once running, it cannot be
        # cancelled any more, so every future left here takes its result.
        live = [b for b in batch if b[2].set_running_or_notify_cancel()]
        if len(live) < len(batch):
            with self._start_lock:
                stats.in_flight -= len(batch) - len(live)
        batch = live
        if not batch:
            return
        stats.batches += 1
        stats.batched_requests += len(batch)
        stats.largest_batch = max(stats.largest_batch, len(batch))
        stats.requests += len(batch)
        try:
            answers = self._generate_mixed([b[0] for b in batch], [b[1] for b in batch])
        except BaseException as exc:  # the caller gets the error with its future
            for _, _, future in batch:
                future.set_exception(exc)
        else:
            for (_, _, future), completion in zip(batch, answers, strict=True):
                future.set_result(completion)
        finally:
            with self._start_lock:
                stats.in_flight -= len(batch)

    def stats(self) -> BackendStats:
        return self._stats.model_copy()

    def close(self) -> None:
        with self._start_lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._closing.set()
            self._queue.put(_STOP)
            try:
                worker.join()
            finally:
                self._closing.clear()  # a backend may be used again (a new worker starts)


__all__ = [
    "Backend",
    "BackendError",
    "BackendStats",
    "BatchedBackend",
    "ChatMessage",
    "Completion",
    "Prompt",
    "SamplingParams",
    "Usage",
]
