"""The Self-Instruct bootstrapping loop, as a pipeline that keeps the backend busy.

Instruction prompt k (seed and machine tasks, few-shot) gives new instructions; those that pass
the rules and the ROUGE-L novelty filter become candidates; each candidate is asked "is it
classification?", then for its instances (output-first for classification, input-first
otherwise); a candidate with valid instances becomes a task and joins the pool. What each stage
asks and how it reads the answer is in `selfinstruct/stages/`; getting requests to the backend
and answers back, journaled, is `dispatch.py`. This module is the order of things.

Nothing waits for a stage to finish. Every response moves its items on the moment it arrives:
an instruction list is parsed and its candidates' classification requests go out, a
classification answer sends the instance request, and new instruction prompts are issued as the
pool allows. Determinism comes from committing decisions in prompt order, like a CPU's reorder
buffer: the novelty decision for prompt k sees exactly the instructions of prompts before k,
tasks are written in (prompt, candidate) order, and prompt k's machine examples come from the
pool as committed up to prompt k - window. So the results do not depend on which response
arrived first.

Every response is journaled the moment it arrives. A killed run, started again with the same
command, runs the same computation from the start, answering from the journal what it can: no
answer that arrived is lost or asked again, and the files come out equal to an uninterrupted
run's. Requests in flight at the kill never answered, so they are asked again; the summary counts
them (what the kill cost).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, Field

from selfinstruct import __version__, stages
from selfinstruct.backends.base import Backend, BackendStats, Completion
from selfinstruct.config import GenerateConfig
from selfinstruct.coverage import ParseCoverage
from selfinstruct.dispatch import Dispatcher, Request
from selfinstruct.errors import SelfInstructError
from selfinstruct.keys import RequestKey
from selfinstruct.manifest import Lineage, RejectTally, RunCounts, RunManifest, package_versions
from selfinstruct.plan import PlanCheck, check_against, check_plan, read_plan
from selfinstruct.prompts import Demonstrations
from selfinstruct.records import Rejected, Task, read_tasks
from selfinstruct.rules import RuleFilter
from selfinstruct.similarity import RougeLIndex
from selfinstruct.stages import Ask, Candidate, Prefix, Slot, StageContext, load_templates
from selfinstruct.stats import Table1, Table1Tally
from selfinstruct.store import RunStore
from selfinstruct.tokens import document_frequencies

# How a generate run ended (the CLI maps them to exit codes, see errors.EXIT_CODES).
DONE, BUDGET, STALLED = "done", "budget", "stalled"
# Seconds between manifest rewrites and progress reports while requests are in flight.
_REPORT_EVERY = 1.0
# Until the first prompt commits, a prompt is expected to give this many tasks. Measured runs
# gave 4.8 (completion prompts: the demo, vLLM's server) and 0.5 (SmolLM2 in chat mode, which
# repeats its examples); the guess sits between, and the run's own yield replaces it at once.
_FIRST_YIELD = 3.0
# Until the first candidate is decided, this share of candidates is expected to become tasks.
# Measured runs gave 86-94%; a low guess issues more prompts early, which costs at most some
# requests of prompts the run does not need, where a high one leaves slots idle at the end.
_FIRST_KEEP_RATE = 0.5


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
    parse_coverage: ParseCoverage = Field(default_factory=ParseCoverage)
    table1: Table1
    backend: BackendStats = Field(default_factory=BackendStats)
    seconds: float = 0.0
    # What a kill cost: requests in flight when an earlier process stopped, asked again here.
    reasked_requests: int = 0
    reasked_tokens: int = 0
    plan: PlanCheck | None = None  # the plan (selfinstruct plan) beside what the run used


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
        self.seeds = read_tasks(cfg.seed_tasks)
        self.seed_sha256 = hashlib.sha256(cfg.seed_tasks.read_bytes()).hexdigest()
        if not self.seeds:
            raise SelfInstructError(f"{cfg.seed_tasks}: no seed tasks; give a file with tasks")
        self.store = RunStore(cfg.run_dir)
        self.dispatch = Dispatcher(cfg, backend, self.store, cfg.run_dir)
        self.chat = backend.chat
        if cfg.structured:
            _check_structured(backend)
        texts = [t.instruction for t in self.seeds]
        index = RougeLIndex(
            cfg.threshold, cfg.tokenizer, document_frequencies(texts, cfg.tokenizer)
        )
        for text in texts:
            index.add(text)
        self.ctx = StageContext(
            options=cfg,
            templates=load_templates(cfg.prompts_dir),
            # Few-shot examples for the later stages come from the seeds.
            demos=Demonstrations(self.seeds, cfg.demonstrations, cfg.seed, cfg.tokenizer),
            seeds=self.seeds,
            rules=RuleFilter(cfg.rules),
            index=index,
            chat=backend.chat,
            model=backend.model,
        )
        self._step = {stage.name: step for step, stage in enumerate(stages.THEN)}
        self.lineage = Lineage(
            versions=package_versions(), templates_sha256=self.ctx.templates.digests()
        )
        # The pipeline's state: slots by prompt number, and three cursors over them.
        self.slots: dict[int, Slot] = {}
        self.outlook = Outlook()  # what the uncommitted slots will likely still give
        self.next_prompt = 0  # the next instruction prompt to issue
        self.next_process = 0  # the next instruction response to parse and filter
        self.next_commit = 0  # the next prompt whose results are written
        self.pool = MachinePool()  # the tasks committed so far
        self.tally = RejectTally()  # what committed prompts dropped, by stage and reason
        self.coverage = ParseCoverage()  # of committed prompts, so a resumed run counts alike
        self.streak = 0  # committed prompts in a row that accepted nothing
        self.status: str | None = None
        self.message = ""
        self.window = cfg.window or cfg.default_window()  # a resumed run keeps its own
        # The loop's wall time in earlier processes, and when this one started (time.monotonic).
        self.seconds_before = 0.0
        self.started = time.monotonic()

    # -- asking: each stage builds its request; instruction prompts go first -------------

    def _send(self, key: RequestKey, ask: Ask, about: Slot | Candidate) -> None:
        # Instruction prompts first (each unlocks a dozen requests; the window bounds how far
        # ahead they run), then the oldest prompt's requests, which the next commit waits for.
        priority = (int(key.stage != stages.FIRST.name), key.prompt)
        self.dispatch.send(Request(key, ask, priority, about, self.cfg.structured))

    def _may_issue(self) -> bool:
        if self.status is not None or self.dispatch.budget_hit:
            return False
        # Prompt k shows machine tasks committed up to prompt k - window: wait for them.
        if self.next_prompt - self.window >= self.next_commit:
            return False
        per_prompt = recent_yield(self.pool.after, self.window)
        return self.outlook.short(len(self.pool), self.cfg.target_tasks, per_prompt)

    def _issue(self, k: int) -> None:
        # Prompt k shows the tasks committed up to prompt k - window.
        pool, classification = self.pool.shown_by(k - self.window)
        slot = stages.FIRST.slot(k, pool, classification, self.ctx)
        self.slots[k] = slot
        self.outlook.issued()
        self._send(slot.key(stages.FIRST.name), stages.FIRST.ask(slot, self.ctx), slot)

    def _process(self, slot: Slot) -> None:
        """Read an instruction list and send its candidates on: in prompt order, since the
        first stage's novelty filter adds to the pool."""
        assert slot.completion is not None
        stages.FIRST.read(slot, slot.completion, slot.key(stages.FIRST.name), self.ctx)
        self.outlook.read(slot)
        for candidate in slot.candidates:
            self._ask(candidate, 0)

    def _ask(self, candidate: Candidate, step: int) -> None:
        stage = stages.THEN[step]
        self._send(candidate.key(stage.name), stage.ask(candidate, self.ctx), candidate)

    def _handle(self, request: Request, completion: Completion) -> None:
        """An answer, in any order: an instruction list waits for its turn (`_process`); a
        candidate's answer is read at once and the candidate goes on, or is decided."""
        if isinstance(request.about, Slot):
            request.about.completion = completion
            return
        candidate: Candidate = request.about
        step = self._step[request.stage]
        goes_on = stages.THEN[step].read(candidate, completion, request.key, self.ctx)
        if goes_on and step + 1 < len(stages.THEN):
            self._ask(candidate, step + 1)
        else:
            candidate.decided = True
            self.outlook.decided_one(candidate)

    # -- committing, in prompt order ---------------------------------------------------

    def _committable(self, k: int) -> bool:
        slot = self.slots.get(k)
        return slot is not None and slot.processed and all(c.decided for c in slot.candidates)

    def _commit_ready(self) -> None:
        """Write every prompt that is complete and next in order."""
        batch: list[tuple[int, list[Task], list[Rejected]]] = []
        while self.status is None and self._committable(self.next_commit):
            slot = self.slots.pop(self.next_commit)
            self.outlook.committed(slot)
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
            self.pool.commit(tasks)
            self.tally.add(rejected)
            readings = [slot.reading] + [r for c in slot.candidates for r in c.readings]
            for reading in readings:
                if reading is not None:
                    self.coverage.add(reading)
            self.streak = 0 if tasks else self.streak + 1
            self.next_commit += 1
            self._check_finished()
        if batch:
            self.store.commit(batch)

    def _check_finished(self) -> None:
        cfg = self.cfg
        if len(self.pool) >= cfg.target_tasks:
            self.status = DONE
            self.message = f"reached the target of {cfg.target_tasks} tasks"
        elif self.streak >= cfg.no_progress_prompts:
            top = list(self.tally.tasks.items())[:3]
            common = ", ".join(f"{k} ({v})" for k, v in top)
            self.status = STALLED
            self.message = (
                f"{self.streak} instruction prompts in a row gave no task; most rejected: "
                f"{common or 'nothing was parsed'}"
            )

    # -- the loop ---------------------------------------------------------------------

    def seconds(self) -> float:
        """The loop's wall time, earlier processes included."""
        return self.seconds_before + time.monotonic() - self.started

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
        self.started = time.monotonic()
        dispatch = self.dispatch
        with self.store:
            self._check_resume()
            self.dispatch.seconds = self.seconds
            check_plan(self.cfg, self.cfg.run_dir, len(self.seeds), self.backend.model)
            write_manifest(self, "running")
            last_report = 0.0
            try:
                while True:
                    self._advance()
                    if self.status is not None:
                        break
                    dispatch.release()
                    if not dispatch.in_flight:
                        if dispatch.budget_hit:
                            self.status = BUDGET
                            self.message = (
                                "stopped at the budget; raise it and run the same command "
                                "again to continue"
                            )
                            break
                        raise RuntimeError("the pipeline has nothing in flight and cannot move")
                    dispatch.collect(timeout=_REPORT_EVERY)
                    now = time.perf_counter()
                    if now - last_report >= _REPORT_EVERY:
                        last_report = now
                        write_manifest(self, "running")
                        report_progress(self, started)
            finally:
                dispatch.drain()
                self.ctx.index.cancel_provenance()
            write_manifest(self, self.status, self.message)
            report_progress(self, started)
            return summarize(self, started)

    def _advance(self) -> None:
        """Move every item as far as it can go without waiting for the backend."""
        moved = True
        while moved and self.status is None:
            moved = self.dispatch.handle_ready(self._handle)
            while (slot := self.slots.get(self.next_process)) and slot.completion is not None:
                self._process(slot)
                self.next_process += 1
                moved = True
                self.dispatch.release_due()
            before = self.next_commit
            self._commit_ready()
            moved |= self.next_commit > before
            while self._may_issue():
                self._issue(self.next_prompt)
                self.next_prompt += 1
                moved = True

    def _check_resume(self) -> None:
        manifest = self.store.manifest()
        if manifest is None:
            return
        before = manifest.resume_key
        self.seconds_before = manifest.counts.seconds
        if self.cfg.window is None and isinstance(before.get("window"), int):
            # The default window follows the concurrency, which may change on resume; the
            # window itself decides which tasks a prompt shows, so the run keeps its own.
            self.window = before["window"]
        changed = self.cfg.resume_changes(before, window=self.window)
        if changed:
            raise SelfInstructError(
                f"{self.cfg.run_dir} was started with different settings ({', '.join(changed)}); "
                "use the same settings to resume, or another --run-dir for a new run"
            )


def _check_structured(backend: Backend) -> None:
    if not backend.chat:
        raise SelfInstructError(
            "--structured asks a chat model for JSON: use chat prompts (drop --completions, "
            "or --chat for a model with a chat template), or leave --structured off"
        )
    if backend.name == "local":
        raise SelfInstructError(
            "--structured needs a backend that holds the reply to a schema, and the local "
            "transformers backend cannot: use -b vllm (in-process) or -b openai with a vLLM, "
            "llama.cpp or OpenAI server, or leave --structured off"
        )


# -- the committed tasks -------------------------------------------------------------------


class MachinePool:
    """The machine tasks committed so far, in prompt order, and what a prompt may show."""

    def __init__(self) -> None:
        self.tasks: list[Task] = []
        self.classification: list[Task] = []  # the classification tasks among them
        self.after: list[int] = []  # len(tasks) after each committed prompt
        self._classification_after: list[int] = []  # len(classification), likewise
        self.figures = Table1Tally()  # Table 1 of `tasks`, kept as they come

    def __len__(self) -> int:
        return len(self.tasks)

    def commit(self, tasks: list[Task]) -> None:
        """The tasks of the next prompt in order."""
        self.tasks.extend(tasks)
        self.figures.add(tasks)
        self.after.append(len(self.tasks))
        self.classification.extend(t for t in tasks if t.is_classification)
        self._classification_after.append(len(self.classification))

    def shown_by(self, last: int) -> tuple[Prefix[Task], Prefix[Task]]:
        """The tasks of prompts up to `last` (none if negative), and the classification tasks
        among them: views, not copies, since a prompt samples a few of thousands."""
        if last < 0:
            return Prefix(self.tasks, 0), Prefix(self.classification, 0)
        return (
            Prefix(self.tasks, self.after[last]),
            Prefix(self.classification, self._classification_after[last]),
        )


# -- how many prompts to issue: what the prompts in flight will likely still give ----------


def recent_yield(pool_after: list[int], window: int) -> float:
    """Tasks per prompt over the last `window` committed prompts. The yield falls as the pool
    fills (more near-duplicates), so the run's average would overestimate it."""
    done = len(pool_after)
    if done == 0:
        return _FIRST_YIELD
    span = min(done, window)
    before = pool_after[done - span - 1] if done > span else 0
    return (pool_after[-1] - before) / span


class Outlook:
    """Tasks the uncommitted prompts will likely still give (to stop issuing in time):
    `per_prompt` for each prompt whose list is not read yet, for each candidate decided whether
    it became a task, and for each one still open the share of decided ones that did. Kept as
    counts that move with the slots: a sum over the slots at every check cost 3.4 ms a call
    with 4,096 prompts uncommitted (2,048 in flight, bench/BENCHMARKS.md)."""

    def __init__(self) -> None:
        self.unread = 0  # prompts issued whose instruction list is not read yet
        self.open = 0  # candidates of read prompts not decided yet
        self.decided = 0  # candidates of uncommitted prompts decided...
        self.kept = 0  # ...and of those, the ones that became tasks

    def issued(self) -> None:
        self.unread += 1

    def read(self, slot: Slot) -> None:
        self.unread -= 1
        for candidate in slot.candidates:
            if candidate.decided:
                self.decided += 1
                self.kept += candidate.task is not None
            else:
                self.open += 1

    def decided_one(self, candidate: Candidate) -> None:
        self.open -= 1
        self.decided += 1
        self.kept += candidate.task is not None

    def committed(self, slot: Slot) -> None:
        self.decided -= len(slot.candidates)  # a prompt commits once all are decided
        self.kept -= sum(c.task is not None for c in slot.candidates)

    def expected(self, per_prompt: float) -> float:
        rate = self.kept / self.decided if self.decided else _FIRST_KEEP_RATE
        return self.unread * per_prompt + self.kept + self.open * rate

    def short(self, accepted: int, target: int, per_prompt: float) -> bool:
        """Whether another prompt is worth issuing: one prompt's worth of tasks more than the
        estimate, since a shortfall found at the end would be made up by a prompt issued then,
        whose requests in a row keep the run going while every other slot is idle."""
        return accepted + self.expected(per_prompt) < target + per_prompt


# -- the run's record: manifest, usage, progress, summary ----------------------------------


def _usage(gen: Generator) -> tuple[int, int, int]:
    store = gen.store
    return len(store.journal), store.prompt_tokens, store.completion_tokens


def write_manifest(gen: Generator, status: str, message: str = "") -> None:
    requests, prompt, completion = _usage(gen)
    gen.store.write_usage(
        {
            "requests": requests,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "estimated_cost_usd": gen.dispatch.cost(),
            "model": gen.backend.model,
        }
    )
    manifest = RunManifest(
        status=status,
        message=message,
        package_version=__version__,
        backend=gen.backend.name,
        model=gen.backend.model,
        chat=gen.chat,
        seed_file_sha256=gen.seed_sha256,
        config=gen.cfg.model_copy(update={"window": gen.window}).model_dump(mode="json"),
        resume_key=gen.cfg.resume_key(window=gen.window),
        counts=RunCounts(
            accepted=len(gen.pool),
            prompts=gen.next_commit,
            tally=gen.tally,
            parse_coverage=gen.coverage,
            requests=requests,
            reasked_requests=gen.dispatch.reasked,
            reasked_tokens=gen.dispatch.reasked_tokens,
            seconds=round(gen.seconds(), 3),
        ),
        table1=gen.pool.figures.table(),
        lineage=gen.lineage,
    )
    gen.store.write_manifest(manifest)


def report_progress(gen: Generator, started: float) -> None:
    if gen.on_progress is None:
        return
    requests, prompt, completion = _usage(gen)
    gen.on_progress(
        Progress(
            accepted=len(gen.pool),
            target=gen.cfg.target_tasks,
            prompts=gen.next_commit,
            requests=requests,
            tokens=prompt + completion,
            rejected=Counter(gen.tally.tasks),
            started=started,
            backend=gen.backend.stats(),
        )
    )


def summarize(gen: Generator, started: float) -> GenerateSummary:
    requests, prompt, completion = _usage(gen)
    return GenerateSummary(
        status=gen.status or DONE,
        message=gen.message,
        run_dir=str(gen.cfg.run_dir),
        accepted=len(gen.pool),
        target=gen.cfg.target_tasks,
        prompts=gen.next_commit,
        requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost_usd=gen.dispatch.cost(),
        rejected=gen.tally.tasks,
        instances_dropped=gen.tally.instances,
        parse_coverage=gen.coverage,
        table1=gen.pool.figures.table(),
        # A batch still running when the loop stopped is not part of the run's record.
        backend=gen.backend.stats().model_copy(
            update={"live_tokens": 0, "live_read": 0, "live_prompt": 0}
        ),
        seconds=round(time.perf_counter() - started, 3),
        reasked_requests=gen.dispatch.reasked,
        reasked_tokens=gen.dispatch.reasked_tokens,
        plan=_plan_check(gen),
    )


def _plan_check(gen: Generator) -> PlanCheck | None:
    plan = read_plan(gen.cfg.run_dir)
    if plan is None or gen.status not in (None, DONE):
        return None
    return check_against(plan, gen.cfg.run_dir, len(gen.seeds))


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
