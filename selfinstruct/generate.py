"""The Self-Instruct bootstrapping loop, as a pipeline that keeps the backend busy.

Instruction prompt k (seed and machine tasks, few-shot) gives new instructions; those that pass
the rules and the ROUGE-L novelty filter become candidates; each candidate is asked "is it
classification?", then for its instances (output-first for classification, input-first
otherwise); a candidate with valid instances becomes a task and joins the pool.

Nothing waits for a stage to finish. Every response moves its items on the moment it arrives:
an instruction list is parsed and its candidates' classification requests go out, a
classification answer sends the instance request, and new instruction prompts are issued as the
pool allows. Determinism comes from committing decisions in prompt order, like a CPU's reorder
buffer: the novelty decision for prompt k sees exactly the instructions of prompts before k,
tasks are written in (prompt, candidate) order, and prompt k's machine examples come from the
pool as committed up to prompt k - window. So the results do not depend on which response
arrived first.

Every response is journaled the moment it arrives. A killed run, started again with the same
command, runs the same computation from the start, answering from the journal what it can:
nothing is lost, nothing is asked twice, and the files come out equal to an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import json
import queue
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from selfinstruct import __version__
from selfinstruct.backends.base import Backend, BackendStats, Completion, Prompt
from selfinstruct.config import GenerateConfig, SamplingParams
from selfinstruct.errors import SelfInstructError
from selfinstruct.parsing import parse_instances, parse_instructions, parse_is_classification
from selfinstruct.prompts import (
    Demonstrations,
    Templates,
    render_instances,
    render_instructions,
    render_is_classification,
)
from selfinstruct.records import Rejected, Task, read_tasks
from selfinstruct.rules import RuleFilter, filter_instances
from selfinstruct.similarity import RougeLIndex
from selfinstruct.stats import Table1, table1
from selfinstruct.store import JournalEntry, RunStore
from selfinstruct.tokens import document_frequencies

# How a generate run ended (the CLI maps them to exit codes, see errors.EXIT_CODES).
DONE, BUDGET, STALLED = "done", "budget", "stalled"
# Seconds between manifest rewrites and progress reports while requests are in flight.
_REPORT_EVERY = 1.0


class GenerateSummary(BaseModel):
    status: str
    message: str
    run_dir: str
    accepted: int
    target: int
    prompts: int  # instruction prompts whose results are written
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    rejected: dict[str, int] = Field(default_factory=dict)
    instances_dropped: dict[str, int] = Field(default_factory=dict)
    table1: Table1
    backend: BackendStats = Field(default_factory=BackendStats)
    seconds: float = 0.0


@dataclass
class Progress:
    """What a progress display needs, after each commit and every second."""

    accepted: int
    target: int
    prompts: int
    requests: int
    tokens: int
    rejected: Counter[str]
    started: float
    backend: BackendStats


@dataclass
class _Candidate:
    prompt: int
    index: int
    instruction: str
    request_id: str
    most_similar: dict[str, float]
    avg_similarity: float | None
    is_classification: bool | None = None
    task: Task | None = None
    rejected: list[Rejected] = field(default_factory=list)
    decided: bool = False


@dataclass
class _Slot:
    """One instruction prompt and everything that follows from it, until it is committed."""

    prompt: int
    shown: int  # instructions the prompt lists; the model continues at shown + 1
    completion: Completion | None = None
    processed: bool = False
    rejected: list[Rejected] = field(default_factory=list)
    candidates: list[_Candidate] = field(default_factory=list)


@dataclass(frozen=True)
class _Request:
    id: str
    stage: str
    prompt: Prompt
    params: SamplingParams
    slot: int
    candidate: _Candidate | None = None


def _sha(prompt: Prompt) -> str:
    text = prompt if isinstance(prompt, str) else json.dumps(prompt, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class Generator:
    """Runs the loop for one config against one backend and run directory."""

    def __init__(
        self,
        cfg: GenerateConfig,
        backend: Backend,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.backend = backend
        self.on_progress = on_progress
        self.templates = Templates.load(cfg.prompts_dir)
        self.seeds = read_tasks(cfg.seed_tasks)
        self.seed_sha256 = hashlib.sha256(cfg.seed_tasks.read_bytes()).hexdigest()
        if not self.seeds:
            raise SelfInstructError(f"{cfg.seed_tasks}: no seed tasks; give a file with tasks")
        self.rules = RuleFilter(cfg.rules)
        self.store = RunStore(cfg.run_dir)
        self.chat = backend.chat
        # Few-shot examples for the classification and instance stages come from the seeds.
        self.demos = Demonstrations(self.seeds, cfg.demonstrations, cfg.seed, cfg.tokenizer)
        texts = [t.instruction for t in self.seeds]
        self.index = RougeLIndex(
            cfg.threshold, cfg.tokenizer, document_frequencies(texts, cfg.tokenizer)
        )
        for text in texts:
            self.index.add(text)
        # The pipeline's state: slots by prompt number, and three cursors over them.
        self.slots: dict[int, _Slot] = {}
        self.next_prompt = 0  # the next instruction prompt to issue
        self.next_process = 0  # the next instruction response to parse and filter
        self.next_commit = 0  # the next prompt whose results are written
        self.accepted: list[Task] = []
        self.pool_after: list[int] = []  # len(accepted) after each committed prompt
        self.rejected = Counter[str]()
        self.instance_drops = Counter[str]()
        self.streak = 0  # committed prompts in a row that accepted nothing
        self.in_flight: dict[Future[Completion], _Request] = {}
        # Requests not yet handed to a backend that takes a limited number at a time, in the
        # order of `_priority`: the backend would serve them in arrival order, which lets the
        # newest prompts' requests delay the oldest prompt's commit, and with it the window.
        self.held: list[tuple[tuple[int, int], int, _Request]] = []
        self._held_order = itertools.count()
        self._arrived: queue.SimpleQueue[Future[Completion]] = queue.SimpleQueue()
        self.ready: deque[tuple[_Request, Completion]] = deque()
        self.sent = 0  # requests sent to the backend in this process
        self.budget_hit = False
        self.status: str | None = None
        self.message = ""
        self.window = cfg.window or cfg.default_window()  # a resumed run keeps its own

    # -- budgets and bookkeeping ---------------------------------------------------------

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self.cfg.prices.get(self.backend.model)
        if price is None:
            return None
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6

    def _budget_left(self) -> bool:
        cfg, store = self.cfg, self.store
        asked = len(store.journal) + len(self.in_flight) + len(self.held)  # not journaled yet
        if cfg.max_requests is not None and asked >= cfg.max_requests:
            return False
        tokens = store.prompt_tokens + store.completion_tokens
        if cfg.max_tokens_total is not None and tokens >= cfg.max_tokens_total:
            return False
        cost = self._cost(store.prompt_tokens, store.completion_tokens)
        return not (cfg.max_cost is not None and cost is not None and cost >= cfg.max_cost)

    # -- sending and receiving -------------------------------------------------------------

    def _send(self, request: _Request) -> None:
        """Answer from the journal, or hand the request to the backend."""
        entry = self.store.journal.get(request.id)
        if entry is not None:
            if entry.prompt_sha is not None and entry.prompt_sha != _sha(request.prompt):
                raise SelfInstructError(
                    f"{self.cfg.run_dir}: request {request.id} has a different prompt than when "
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
            # The request is not asked; its prompt is not committed, and the run stops with
            # BUDGET once what is in flight is back. A resumed run asks it.
            self.budget_hit = True
            return
        heapq.heappush(self.held, (self._priority(request), next(self._held_order), request))

    @staticmethod
    def _priority(request: _Request) -> tuple[int, int]:
        """Instruction prompts first (each unlocks a dozen requests; the window bounds how far
        ahead they run), then the oldest prompt's requests, which the next commit waits for."""
        return (request.stage != "instructions", request.slot)

    def _release_held(self) -> None:
        """Hand held requests to the backend, by `_priority`, while it has room.

        A backend with an adaptive limit gets a few more than its limit, so a slot that frees
        never waits for this thread; a batching backend gets everything (it wants full batches).
        """
        limit = self.backend.stats().limit if self.held else None
        room = len(self.held) if limit is None else limit + max(2, limit // 4)
        while self.held and len(self.in_flight) < room:
            request = heapq.heappop(self.held)[2]
            future = self.backend.submit(
                request.id, request.prompt, request.params, self._priority(request)
            )
            self.in_flight[future] = request
            future.add_done_callback(self._arrived.put)
            self.sent += 1

    def _receive(self, future: Future[Completion]) -> None:
        request = self.in_flight.pop(future)
        completion = future.result()  # BackendError: the backend cannot serve; stop the run
        if completion.finish_reason == "error" and completion.retryable:
            self._send(request)  # nothing learned about the request: ask again
            return
        candidate = request.candidate
        self.store.record_response(
            JournalEntry(
                id=request.id,
                stage=request.stage,
                text=completion.text,
                finish_reason=completion.finish_reason,
                prompt_tokens=completion.usage.prompt_tokens,
                completion_tokens=completion.usage.completion_tokens,
                error=completion.error,
                prompt_sha=_sha(request.prompt),
                instruction=candidate.instruction if candidate else None,
                classification=candidate.is_classification if candidate else None,
            )
        )
        self.ready.append((request, completion))

    # -- stage 1: instruction prompts ------------------------------------------------------

    def _classification_prompt(self, number: int) -> bool:
        """Is instruction prompt `number` one for classification tasks? Spread evenly, so
        that any stretch of prompts holds the configured share."""
        share = self.cfg.classification_prompts
        return int((number + 1) * share) > int(number * share)

    def _may_issue(self) -> bool:
        cfg, k = self.cfg, self.next_prompt
        if self.status is not None or self.budget_hit:
            return False
        # Prompt k shows machine tasks committed up to prompt k - window: wait for them.
        if k - self.window >= self.next_commit:
            return False
        # One prompt's worth of tasks more than the estimate: a shortfall found at the end
        # would otherwise be made up by a prompt issued then, whose three requests in a row
        # keep the run going while every other slot is idle.
        per_prompt = self._recent_yield()
        expected = len(self.accepted) + self._expected_in_flight(per_prompt)
        return expected < cfg.target_tasks + per_prompt

    def _recent_yield(self) -> float:
        """Tasks per prompt over the last `window` committed prompts. The yield falls as the
        pool fills (more near-duplicates), so the run's average would overestimate it."""
        done = len(self.pool_after)
        if done == 0:
            return 3.0
        span = min(done, self.window)
        before = self.pool_after[done - span - 1] if done > span else 0
        return (self.pool_after[-1] - before) / span

    def _expected_in_flight(self, per_prompt: float) -> float:
        """Tasks the uncommitted prompts will likely still give (to stop issuing in time),
        `per_prompt` for each prompt whose list is not filtered yet."""
        decided = [c for s in self.slots.values() for c in s.candidates if c.decided]
        rate = sum(c.task is not None for c in decided) / len(decided) if decided else 0.5
        expected = 0.0
        for slot in self.slots.values():
            if not slot.processed:
                expected += per_prompt
            else:
                expected += sum(
                    (c.task is not None) if c.decided else rate for c in slot.candidates
                )
        return expected

    def _issue_instruction(self, k: int) -> None:
        cfg = self.cfg
        rng = random.Random(f"{cfg.seed}:{k}")
        classification = self._classification_prompt(k)
        visible = self.pool_after[k - self.window] if k - self.window >= 0 else 0
        pool, seeds = self.accepted[:visible], self.seeds
        if classification:
            pool = [t for t in pool if t.is_classification]
            seeds = self.demos.classification or self.seeds
        machine = rng.sample(pool, min(cfg.machine_examples, len(pool)))
        humans = rng.sample(
            seeds, min(cfg.human_examples + cfg.machine_examples - len(machine), len(seeds))
        )
        examples = [t.instruction for t in humans + machine]
        rng.shuffle(examples)
        prompt = render_instructions(
            self.templates, examples, self.chat, cfg.max_new_per_prompt, classification
        )
        # A completion prompt ends mid-list ("9."): keep the model writing until the number
        # after the last new item, or a blank line (the paper's stops).
        shown = len(examples)
        last = shown + cfg.max_new_per_prompt + 1
        stop = () if self.chat else (f"\n{last}.", f"\n{last} .", "\n\n")
        params = cfg.instruction_sampling.model_copy(
            update={"stop": stop, "seed": cfg.seed + k, "ignore_eos": not self.chat}
        )
        self.slots[k] = _Slot(prompt=k, shown=shown)
        self._send(_Request(f"{k}:instructions", "instructions", prompt, params, k))

    def _process(self, slot: _Slot) -> None:
        """Parse an instruction list, filter it, and send its candidates on: in prompt order."""
        assert slot.completion is not None
        completion, k, cfg = slot.completion, slot.prompt, self.cfg
        rid = f"{k}:instructions"
        slot.processed = True
        if completion.finish_reason == "error":
            slot.rejected.append(
                Rejected(
                    stage="request", reason="request_failed", text=completion.error or "", id=rid
                )
            )
            return
        parsed = parse_instructions(
            completion.text,
            completion.finish_reason == "length",
            continues_list=not self.chat,
            first_number=None if self.chat else slot.shown + 1,
            max_items=cfg.max_new_per_prompt,
        )
        for reason, raw in parsed.dropped:
            slot.rejected.append(Rejected(stage="parse", reason=reason, text=raw, id=rid))
        for text in parsed.instructions:
            hit = self.rules.check(text)
            if hit is not None:
                slot.rejected.append(
                    Rejected(stage="rules", reason=hit.reason, text=text, detail=hit.detail, id=rid)
                )
                continue
            match = self.index.add_if_novel(text)
            if match is not None:
                slot.rejected.append(
                    Rejected(
                        stage="novelty",
                        reason="rouge_l",
                        text=text,
                        id=rid,
                        detail={"most_similar": match.text, "score": match.score},
                    )
                )
                continue
            # Provenance against the pool as it was (the text itself was added last).
            scores = self.index.scores(text)[:-1]
            candidate = _Candidate(
                prompt=k,
                index=len(slot.candidates),
                instruction=text,
                request_id=rid,
                most_similar={m.text: m.score for m in self.index.top_matches(scores, 10)},
                avg_similarity=float(scores.mean()) if len(scores) else None,
            )
            slot.candidates.append(candidate)
            self._ask_classification(candidate)

    # -- stages 3 and 4: classification, then instances ---------------------------------

    def _ask_classification(self, candidate: _Candidate) -> None:
        prompt = render_is_classification(
            self.templates,
            self.demos.for_classification(candidate.instruction, self.cfg.classification_examples),
            candidate.instruction,
            self.chat,
        )
        # The paper's settings: greedy, 3 tokens, stop at the end of the line. A chat model
        # may answer in a short sentence, so it gets a few more tokens.
        params = SamplingParams(
            temperature=0.0,
            top_p=1.0,
            max_tokens=16 if self.chat else 3,
            stop=() if self.chat else ("\n", "Task"),
        )
        rid = f"{candidate.prompt}:classification:{candidate.index}"
        self._send(_Request(rid, "classification", prompt, params, candidate.prompt, candidate))

    def _on_classification(self, candidate: _Candidate, completion: Completion, rid: str) -> None:
        if completion.finish_reason == "error":
            self._drop(candidate, "classification", "request_failed", rid, completion.error)
            return
        # Unparseable counts as "not classification", as in the paper.
        candidate.is_classification = bool(parse_is_classification(completion.text))
        cfg, clf = self.cfg, candidate.is_classification
        prompt = render_instances(
            self.templates,
            self.demos.for_instances(candidate.instruction, clf, cfg.instance_examples),
            candidate.instruction,
            clf,
            self.chat,
        )
        stop = () if self.chat else ("\nTask:", "Task:", f"Example {cfg.max_instances + 1}")
        params = cfg.instance_sampling.model_copy(update={"stop": stop})
        rid = f"{candidate.prompt}:instances:{candidate.index}"
        self._send(_Request(rid, "instances", prompt, params, candidate.prompt, candidate))

    def _on_instances(self, candidate: _Candidate, completion: Completion, rid: str) -> None:
        if completion.finish_reason == "error":
            self._drop(candidate, "instances", "request_failed", rid, completion.error)
            return
        parsed = parse_instances(
            completion.text,
            bool(candidate.is_classification),
            completion.finish_reason == "length",
            candidate.instruction,
        )
        verdict = filter_instances(parsed.instances, self.cfg.max_instances)
        candidate.decided = True
        if verdict.task_reason is not None:
            candidate.rejected.append(
                Rejected(
                    stage="instances",
                    reason=verdict.task_reason,
                    text=candidate.instruction,
                    id=rid,
                    detail={
                        "raw": completion.text[:2000],
                        "dropped": [r for r, _ in parsed.dropped + verdict.dropped],
                    },
                )
            )
            return
        # The task is kept; each instance it lost is still accounted for.
        for reason, raw in parsed.dropped:
            candidate.rejected.append(
                Rejected(
                    stage="instance",
                    reason=reason,
                    text=candidate.instruction,
                    id=rid,
                    detail={"raw": raw[:2000]},
                )
            )
        for reason, inst in verdict.dropped:
            candidate.rejected.append(
                Rejected(
                    stage="instance",
                    reason=reason,
                    text=candidate.instruction,
                    id=rid,
                    detail={"input": inst.input[:2000], "output": inst.output[:2000]},
                )
            )
        candidate.task = Task(
            id=f"machine_{candidate.prompt}_{candidate.index}",
            instruction=candidate.instruction,
            instances=verdict.kept,
            is_classification=candidate.is_classification,
            source="machine",
            round=candidate.prompt,
            request_id=candidate.request_id,
            most_similar=candidate.most_similar,
            avg_similarity_score=candidate.avg_similarity,
            model=self.backend.model,
        )

    def _drop(
        self, candidate: _Candidate, stage: str, reason: str, rid: str, error: str | None
    ) -> None:
        candidate.decided = True
        candidate.rejected.append(
            Rejected(
                stage=stage,
                reason=reason,
                text=candidate.instruction,
                id=rid,
                detail={"error": error or ""},
            )
        )

    def _handle(self, request: _Request, completion: Completion) -> None:
        if request.stage == "instructions":
            self.slots[request.slot].completion = completion
        elif request.stage == "classification":
            assert request.candidate is not None
            self._on_classification(request.candidate, completion, request.id)
        else:
            assert request.candidate is not None
            self._on_instances(request.candidate, completion, request.id)

    # -- committing, in prompt order ---------------------------------------------------

    def _committable(self, k: int) -> bool:
        slot = self.slots.get(k)
        return slot is not None and slot.processed and all(c.decided for c in slot.candidates)

    def _commit_ready(self) -> None:
        """Write every prompt that is complete and next in order."""
        batch: list[tuple[int, list[Task], list[Rejected]]] = []
        while self.status is None and self._committable(self.next_commit):
            slot = self.slots.pop(self.next_commit)
            tasks = [c.task for c in slot.candidates if c.task is not None]
            rejected = slot.rejected + [r for c in slot.candidates for r in c.rejected]
            if slot.prompt < len(self.store.commits):
                marker = self.store.commits[slot.prompt]
                if (marker.accepted, marker.rejected) != (len(tasks), len(rejected)):
                    raise SelfInstructError(
                        f"{self.cfg.run_dir}: prompt {slot.prompt} now gives other results than "
                        "when it was written (another selfinstruct version?); use another "
                        "--run-dir for a new run"
                    )
            else:
                batch.append((slot.prompt, tasks, rejected))
            self.accepted.extend(tasks)
            self.pool_after.append(len(self.accepted))
            self.rejected.update(r.reason for r in rejected if r.stage != "instance")
            self.instance_drops.update(r.reason for r in rejected if r.stage == "instance")
            self.streak = 0 if tasks else self.streak + 1
            self.next_commit += 1
            self._check_finished()
        if batch:
            self.store.commit(batch)

    def _check_finished(self) -> None:
        cfg = self.cfg
        if len(self.accepted) >= cfg.target_tasks:
            self.status = DONE
            self.message = f"reached the target of {cfg.target_tasks} tasks"
        elif self.streak >= cfg.no_progress_prompts:
            common = ", ".join(f"{k} ({v})" for k, v in self.rejected.most_common(3))
            self.status = STALLED
            self.message = (
                f"{self.streak} instruction prompts in a row gave no task; most rejected: "
                f"{common or 'nothing was parsed'}"
            )

    # -- the loop ---------------------------------------------------------------------

    def run(self) -> GenerateSummary:
        try:
            return self._run()
        except OSError as exc:
            # Prompts are committed whole, so a failed write leaves nothing half-done behind.
            raise SelfInstructError(
                f"{self.cfg.run_dir}: cannot write the run ({exc.strerror or exc}); free some "
                "space or fix the permissions, then run the same command again to resume"
            ) from None

    def _run(self) -> GenerateSummary:
        started = time.perf_counter()
        with self.store:
            self._check_resume()
            self._write_manifest("running")
            last_report = 0.0
            try:
                while True:
                    self._advance()
                    if self.status is not None:
                        break
                    self._release_held()
                    if not self.in_flight:
                        if self.budget_hit:
                            self.status = BUDGET
                            self.message = (
                                "stopped at the budget; raise it and run the same command "
                                "again to continue"
                            )
                            break
                        raise RuntimeError("the pipeline has nothing in flight and cannot move")
                    for future in self._arrivals():
                        self._receive(future)
                    now = time.perf_counter()
                    if now - last_report >= _REPORT_EVERY:
                        last_report = now
                        self._write_manifest("running")
                        self._report(started)
            finally:
                self._drain()
            self._write_manifest(self.status, self.message)
            self._report(started)
            return self._summary(started)

    def _arrivals(self) -> list[Future[Completion]]:
        """Futures that finished: wait up to a second for one, then take all that are there."""
        try:
            arrived = [self._arrived.get(timeout=_REPORT_EVERY)]
        except queue.Empty:
            return []
        while True:
            try:
                arrived.append(self._arrived.get_nowait())
            except queue.Empty:
                return [f for f in arrived if f in self.in_flight]

    def _advance(self) -> None:
        """Move every item as far as it can go without waiting for the backend."""
        moved = True
        while moved and self.status is None:
            moved = False
            while self.ready:
                self._handle(*self.ready.popleft())
                moved = True
            while (slot := self.slots.get(self.next_process)) and slot.completion is not None:
                self._process(slot)
                self.next_process += 1
                moved = True
            before = self.next_commit
            self._commit_ready()
            moved |= self.next_commit > before
            while self._may_issue():
                self._issue_instruction(self.next_prompt)
                self.next_prompt += 1
                moved = True

    def _drain(self) -> None:
        """On the way out, keep what is already answered (it was paid for), drop the rest."""
        self.held.clear()  # never asked: a resumed run asks them
        if not self.in_flight:
            return
        done, _ = wait(self.in_flight, timeout=2.0)
        for future in done:
            request = self.in_flight.get(future)
            if request is None or future.cancelled() or future.exception() is not None:
                continue
            completion = future.result()
            if completion.finish_reason != "error" or not completion.retryable:
                self._receive(future)
        for future in list(self.in_flight):
            future.cancel()
        self.in_flight.clear()

    def _check_resume(self) -> None:
        manifest = self.store.manifest()
        if manifest is None:
            return
        before = manifest.get("resume_key", {})
        if self.cfg.window is None and isinstance(before.get("window"), int):
            # The default window follows the concurrency, which may change on resume; the
            # window itself decides which tasks a prompt shows, so the run keeps its own.
            self.window = before["window"]
        now = self._resume_key()
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed:
            raise SelfInstructError(
                f"{self.cfg.run_dir} was started with different settings ({', '.join(changed)}); "
                "use the same settings to resume, or another --run-dir for a new run"
            )

    def _resume_key(self) -> dict[str, object]:
        return {**self.cfg.resume_key(), "window": self.window}

    def _usage(self) -> tuple[int, int, int]:
        store = self.store
        return len(store.journal), store.prompt_tokens, store.completion_tokens

    def _write_manifest(self, status: str, message: str = "") -> None:
        requests, prompt, completion = self._usage()
        cost = self._cost(prompt, completion)
        self.store.write_usage(
            {
                "requests": requests,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "estimated_cost_usd": cost,
                "model": self.backend.model,
            }
        )
        self.store.write_manifest(
            {
                "status": status,
                "message": message,
                "package_version": __version__,
                "backend": self.backend.name,
                "model": self.backend.model,
                "chat": self.chat,
                "seed_file_sha256": self.seed_sha256,
                "config": self.cfg.model_copy(update={"window": self.window}).model_dump(
                    mode="json"
                ),
                "resume_key": self._resume_key(),
                "counts": {
                    "accepted": len(self.accepted),
                    "prompts": self.next_commit,
                    "rejected": dict(self.rejected),
                    "instances_dropped": dict(self.instance_drops),
                    "requests": requests,
                },
                "table1": table1(self.accepted).model_dump(),
            }
        )

    def _report(self, started: float) -> None:
        if self.on_progress is None:
            return
        requests, prompt, completion = self._usage()
        self.on_progress(
            Progress(
                accepted=len(self.accepted),
                target=self.cfg.target_tasks,
                prompts=self.next_commit,
                requests=requests,
                tokens=prompt + completion,
                rejected=self.rejected,
                started=started,
                backend=self.backend.stats(),
            )
        )

    def _summary(self, started: float) -> GenerateSummary:
        requests, prompt, completion = self._usage()
        return GenerateSummary(
            status=self.status or DONE,
            message=self.message,
            run_dir=str(self.cfg.run_dir),
            accepted=len(self.accepted),
            target=self.cfg.target_tasks,
            prompts=self.next_commit,
            requests=requests,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=self._cost(prompt, completion),
            rejected=dict(self.rejected),
            instances_dropped=dict(self.instance_drops),
            table1=table1(self.accepted),
            backend=self.backend.stats(),
            seconds=round(time.perf_counter() - started, 3),
        )


def run_generate(
    cfg: GenerateConfig,
    backend: Backend | None = None,
    on_progress: Callable[[Progress], None] | None = None,
) -> GenerateSummary:
    """Run (or resume) the loop; builds the configured backend unless one is given."""
    from selfinstruct.backends import make_backend

    own = backend is None
    backend = backend or make_backend(cfg)
    try:
        return Generator(cfg, backend, on_progress).run()
    finally:
        if own:
            backend.close()
