"""Between the loop and the backend: requests held until the backend has room, answered from the
journal when a run resumes, journaled the moment they arrive, and stopped at the budget.

The loop hands every request it can make to `send`: a request the journal already answers is
answered from it (a resumed run asks nothing twice); one past a budget is not asked (the run
stops with BUDGET once what is in flight is back, and a resumed run asks it); the others wait in
a queue ordered by the loop's priority and go to the backend as it has room (`release`). Each
answer is journaled on arrival (`collect`), before the loop sees it, so a crash loses nothing
that was paid for. `drain` keeps what already came back when the loop stops.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import queue
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selfinstruct.accounting import cost_usd, prompt_sha
from selfinstruct.backends.base import Backend, Completion, Prompt
from selfinstruct.config import GenerateConfig, SamplingParams
from selfinstruct.errors import SelfInstructError
from selfinstruct.keys import RequestKey
from selfinstruct.stages.base import Ask
from selfinstruct.store import JournalEntry, RunStore


@dataclass(frozen=True)
class Request:
    key: RequestKey
    ask: Ask
    priority: tuple[int, int]  # lower first
    about: Any = None  # the loop's own handle (a slot or a candidate), returned with the answer
    # With --structured: an invalid reply is asked again (`retry`), up to --structured-retries
    # times, before the loop sees the last one.
    structured: bool = False

    @property
    def id(self) -> str:
        return self.key.text

    @property
    def stage(self) -> str:
        return self.key.stage

    @property
    def prompt(self) -> Prompt:
        return self.ask.prompt

    @property
    def params(self) -> SamplingParams:
        return self.ask.params

    @property
    def check(self) -> Callable[[str], bool] | None:
        return self.ask.check if self.structured else None

    def retry(self, cut_off: bool) -> Request:
        """The same request asked again, under its own key: a reply cut off at the token limit
        with twice the tokens, another sampled anew (greedy would repeat it)."""
        params = self.params
        if cut_off:
            update: dict[str, Any] = {"max_tokens": params.max_tokens * 2}
        else:
            update = {
                "temperature": max(params.temperature, 0.7),
                "seed": (params.seed or 0) + self.key.retry + 1,
            }
        ask = dataclasses.replace(self.ask, params=params.model_copy(update=update))
        return dataclasses.replace(self, key=self.key.retried(), ask=ask)


class Dispatcher:
    def __init__(
        self, cfg: GenerateConfig, backend: Backend, store: RunStore, run_dir: Path
    ) -> None:
        self.cfg, self.backend, self.store, self.run_dir = cfg, backend, store, run_dir
        self.in_flight: dict[Future[Completion], Request] = {}
        # Not yet handed to a backend that takes a limited number at a time, in priority order:
        # the backend would serve them in arrival order, which lets the newest prompts'
        # requests delay the oldest prompt's commit, and with it the window.
        self.held: list[tuple[tuple[int, int], int, Request]] = []
        self._order = itertools.count()
        self._arrived: queue.SimpleQueue[Future[Completion]] = queue.SimpleQueue()
        self.ready: deque[tuple[Request, Completion]] = deque()
        self.sent = 0  # requests handed to the backend in this process
        # Requests an earlier process had in flight when it stopped, asked again here, and the
        # tokens their answers cost now: what a kill cost (the summary says it).
        self.reasked = 0
        self.reasked_tokens = 0
        self._reasking: set[RequestKey] = set()
        self.budget_hit = False
        self.seconds: Callable[[], float] | None = None  # the loop's wall time so far
        self._released_at = 0.0

    # -- budgets -----------------------------------------------------------------------

    def cost(self) -> float | None:
        store = self.store
        return cost_usd(
            self.cfg.prices, self.backend.model, store.prompt_tokens, store.completion_tokens
        )

    def _budget_left(self) -> bool:
        cfg, store = self.cfg, self.store
        asked = len(store.journal) + len(self.in_flight) + len(self.held)  # not journaled yet
        if cfg.max_requests is not None and asked >= cfg.max_requests:
            return False
        tokens = store.prompt_tokens + store.completion_tokens
        if cfg.max_tokens_total is not None and tokens >= cfg.max_tokens_total:
            return False
        if cfg.max_hours is not None and self.seconds and self.seconds() >= cfg.max_hours * 3600:
            return False
        cost = self.cost()
        return not (cfg.max_cost is not None and cost is not None and cost >= cfg.max_cost)

    # -- out ---------------------------------------------------------------------------

    def send(self, request: Request) -> None:
        """Answer from the journal, or hold the request for the backend."""
        entry = self.store.journal.get(request.key)
        if entry is not None:
            if entry.prompt_sha is not None and entry.prompt_sha != prompt_sha(request.prompt):
                raise SelfInstructError(
                    f"{self.run_dir}: request {request.id} has a different prompt than when "
                    "this run began (another selfinstruct version, prompts or seed file); "
                    "use another --run-dir for a new run"
                )
            completion = Completion(
                text=entry.text,
                finish_reason=entry.finish_reason,
                error=entry.error,  # type: ignore[arg-type]
            )
            self.ready.append((request, completion))
            return
        if not self._budget_left():
            self.budget_hit = True
            return
        heapq.heappush(self.held, (request.priority, next(self._order), request))

    def release(self, mid_pass: bool = False) -> None:
        """Hand held requests to the backend, by priority, while it has room.

        A backend with an adaptive limit gets a few more than its limit, so a slot that frees
        never waits for the loop's thread (the backend admits them by the same priority); a
        batching backend gets everything (it wants full batches). In the middle of a pass
        (`release_due`) only up to the limit: the pass may yet make requests for older
        prompts, which must not find the extra places taken by newer ones.
        """
        self._released_at = time.monotonic()
        limit = self.backend.stats().limit if self.held else None
        if limit is None:
            room = len(self.held)
        else:
            room = limit if mid_pass else limit + max(2, limit // 4)
        going = []
        while self.held and len(self.in_flight) + len(going) < room:
            going.append(heapq.heappop(self.held)[2])
        # Noted before they go, so a kill can never hide a request that reached the server.
        self.store.record_asked([request.key for request in going])
        resumes = getattr(self.backend, "resumes", None)
        for request in going:
            # Counted once (a retry of it is not another kill's cost); a request the backend
            # still holds from before (a Batch API batch) is not asked again.
            if (
                request.key in self.store.unanswered
                and request.key not in self._reasking
                and (resumes is None or not resumes(request.id))
            ):
                self.reasked += 1
                self._reasking.add(request.key)
            future = self.backend.submit(
                request.id, request.prompt, request.params, request.priority
            )
            self.in_flight[future] = request
            future.add_done_callback(self._arrived.put)
            self.sent += 1

    RELEASE_EVERY = 0.02  # seconds

    def release_due(self) -> None:
        """`release`, called inside a long pass of the loop (a thousand answers read at once
        take seconds): a server's slots would empty meanwhile, as they did at 512 in flight
        (under 20% busy for 4 s). Only for a backend with a limit of its own: a batching
        backend gets its requests at the pass's end, as full batches, so its batches (and
        with them a local model's numerics) do not depend on how fast the pass ran."""
        if (
            self.held
            and time.monotonic() - self._released_at >= self.RELEASE_EVERY
            and self.backend.stats().limit is not None
        ):
            self.release(mid_pass=True)

    # -- back --------------------------------------------------------------------------

    def collect(self, timeout: float) -> None:
        """Wait up to `timeout` for an answer, then journal every answer that is there."""
        try:
            arrived = [self._arrived.get(timeout=timeout)]
        except queue.Empty:
            return
        while True:
            try:
                arrived.append(self._arrived.get_nowait())
            except queue.Empty:
                break
        for future in arrived:
            if future in self.in_flight:
                self._receive(future)

    def _receive(self, future: Future[Completion]) -> None:
        request = self.in_flight.pop(future)
        completion = future.result()  # BackendError: the backend cannot serve; stop the run
        if completion.finish_reason == "error" and completion.retryable:
            self.send(request)  # nothing learned about the request: ask again
            return
        if request.key in self._reasking:
            self._reasking.discard(request.key)
            usage = completion.usage
            self.reasked_tokens += usage.prompt_tokens + usage.completion_tokens
        self.store.record_response(
            JournalEntry(
                id=request.id,
                key=request.key,
                stage=request.stage,
                text=completion.text,
                finish_reason=completion.finish_reason,
                prompt_tokens=completion.usage.prompt_tokens,
                completion_tokens=completion.usage.completion_tokens,
                error=completion.error,
                prompt_sha=prompt_sha(request.prompt),
                instruction=request.ask.instruction,
                classification=request.ask.classification,
            )
        )
        self.ready.append((request, completion))

    def drain(self) -> None:
        """On the way out, keep what is already answered (it was paid for), drop the rest."""
        self.held.clear()  # never asked: a resumed run asks them
        if not self.in_flight:
            return
        done, _ = wait(self.in_flight, timeout=2.0)
        for future in done:
            if future not in self.in_flight or future.cancelled() or future.exception():
                continue
            completion = future.result()
            if completion.finish_reason != "error" or not completion.retryable:
                self._receive(future)
        for future in list(self.in_flight):
            future.cancel()
        self.in_flight.clear()

    def handle_ready(self, handler: Callable[[Request, Completion], None]) -> bool:
        """Pass every answer that is ready to `handler`; True if there was any. A structured
        reply that fails its check is asked again instead, while retries are left."""
        moved = False
        while self.ready:
            request, completion = self.ready.popleft()
            moved = True
            if (
                request.check is not None
                and completion.finish_reason != "error"
                and request.key.retry < self.cfg.structured_retries
                and not request.check(completion.text)
            ):
                self.send(request.retry(cut_off=completion.finish_reason == "length"))
                continue
            handler(request, completion)
            self.release_due()
        return moved
