"""The Self-Instruct bootstrapping loop, one round at a time.

A round: sample seed and machine tasks into few-shot prompts (paper: 6 + 2, shuffled), generate
new instructions, drop those that break the rules or are too similar (ROUGE-L > 0.7) to anything
in the pool, decide classification or not, generate instances (output-first for classification,
input-first otherwise), filter them, and accept the tasks that keep at least one instance.

Every round is deterministic given the seed, the round number and the pool at its start, and
every model response is journaled as it arrives (see store.py). A killed run resumes with the
same command: the unfinished round is replayed from the journal, so no response is lost or
asked for twice, and the results are the same as an uninterrupted run's.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field

from selfinstruct import __version__
from selfinstruct.backends.base import Backend, Completion, Prompt, SamplingParams
from selfinstruct.config import GenerateConfig
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

# Exit statuses of a generate run (the CLI maps them to exit codes, see README).
DONE, BUDGET, STALLED = "done", "budget", "stalled"


class GenerateSummary(BaseModel):
    status: str
    message: str
    run_dir: str
    accepted: int
    target: int
    rounds: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    rejected: dict[str, int] = Field(default_factory=dict)
    instances_dropped: dict[str, int] = Field(default_factory=dict)
    table1: Table1
    seconds: float = 0.0


@dataclass
class Progress:
    """What a progress display needs after each stage."""

    accepted: int
    target: int
    round: int
    requests: int
    tokens: int
    rejected: Counter[str]
    started: float


@dataclass
class _Candidate:
    instruction: str
    request_id: str
    most_similar: dict[str, float] = field(default_factory=dict)
    avg_similarity: float | None = None
    is_classification: bool | None = None

    def to_pending(self) -> dict[str, Any]:
        return {
            "instruction": self.instruction,
            "request_id": self.request_id,
            "most_similar": self.most_similar,
            "avg_similarity": self.avg_similarity,
            "is_classification": self.is_classification,
        }


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

    # -- bookkeeping --------------------------------------------------------------------

    def _usage(self) -> tuple[int, int, int]:
        store = self.store
        return len(store.journal), store.prompt_tokens, store.completion_tokens

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self.cfg.prices.get(self.backend.model)
        if price is None:
            return None
        return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6

    def _budget_left(self) -> bool:
        requests, prompt, completion = self._usage()
        cfg = self.cfg
        if cfg.max_requests is not None and requests >= cfg.max_requests:
            return False
        if cfg.max_tokens_total is not None and prompt + completion >= cfg.max_tokens_total:
            return False
        cost = self._cost(prompt, completion)
        return not (cfg.max_cost is not None and cost is not None and cost >= cfg.max_cost)

    def _call(
        self,
        stage: str,
        ids: list[str],
        prompts: list[Prompt],
        params: SamplingParams,
        about: Sequence[_Candidate] | None = None,
    ) -> list[Completion | None]:
        """Completions for `prompts`, from the journal when already answered; None if not sent."""
        out: list[Completion | None] = [None] * len(ids)
        todo = []
        for k, rid in enumerate(ids):
            entry = self.store.journal.get(rid)
            if entry is not None:
                out[k] = Completion(text=entry.text, finish_reason=entry.finish_reason)  # type: ignore[arg-type]
            else:
                todo.append(k)
        if todo and self._budget_left():
            cap = self.cfg.max_requests
            if cap is not None:
                todo = todo[: max(0, cap - len(self.store.journal))]
            fresh = self.backend.generate([prompts[k] for k in todo], params)
            for k, completion in zip(todo, fresh, strict=True):
                if completion.finish_reason == "error":
                    continue  # failed after retries: the item goes back to the queue
                self.store.record_response(
                    JournalEntry(
                        id=ids[k],
                        stage=stage,
                        text=completion.text,
                        finish_reason=completion.finish_reason,
                        prompt_tokens=completion.usage.prompt_tokens,
                        completion_tokens=completion.usage.completion_tokens,
                        instruction=about[k].instruction if about else None,
                        classification=about[k].is_classification if about else None,
                    )
                )
                out[k] = completion
        return out

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> GenerateSummary:
        try:
            return self._run()
        except OSError as exc:
            # Rounds are committed whole, so a failed write leaves nothing half-done behind.
            raise SelfInstructError(
                f"{self.cfg.run_dir}: cannot write the run ({exc.strerror or exc}); free some "
                "space or fix the permissions, then run the same command again to resume"
            ) from None

    def _run(self) -> GenerateSummary:
        started = time.perf_counter()
        with self.store:
            self._check_resume()
            accepted = self.store.tasks()
            rejected_so_far = self.store.rejected()
            rejected_counts = Counter(r.reason for r in rejected_so_far if r.stage != "instance")
            instance_drops = Counter(r.reason for r in rejected_so_far if r.stage == "instance")
            index = self._build_index(accepted, rejected_so_far)
            pending = (
                [_Candidate(**p) for p in self.store.rounds[-1].pending]
                if self.store.rounds
                else []
            )
            round_no = len(self.store.rounds)
            streak = 0
            for marker in reversed(self.store.rounds):
                if marker.accepted:
                    break
                streak += 1
            status, message = DONE, ""
            self._write_manifest("running", accepted, rejected_counts, instance_drops)
            while True:
                if len(accepted) >= self.cfg.target_tasks:
                    status = DONE
                    message = f"reached the target of {self.cfg.target_tasks} tasks"
                    break
                if not self._budget_left():
                    status, message = (
                        BUDGET,
                        "stopped at the budget; raise it and run the "
                        "same command again to continue",
                    )
                    break
                if streak >= self.cfg.no_progress_rounds:
                    common = ", ".join(f"{k} ({v})" for k, v in rejected_counts.most_common(3))
                    status = STALLED
                    message = (
                        f"{streak} rounds in a row accepted nothing; most rejected: "
                        f"{common or 'nothing was parsed'}"
                    )
                    break
                new_tasks, new_rejected, pending = self._round(round_no, accepted, index, pending)
                accepted_before = len(accepted)
                accepted.extend(new_tasks)
                rejected_counts.update(r.reason for r in new_rejected if r.stage != "instance")
                instance_drops.update(r.reason for r in new_rejected if r.stage == "instance")
                self.store.commit_round(
                    round_no, new_tasks, new_rejected, [p.to_pending() for p in pending]
                )
                streak = 0 if len(accepted) > accepted_before else streak + 1
                round_no += 1
                self._write_manifest("running", accepted, rejected_counts, instance_drops)
                self._report(accepted, round_no, rejected_counts, started)
            self._write_manifest(status, accepted, rejected_counts, instance_drops, message)
            requests, prompt, completion = self._usage()
            return GenerateSummary(
                status=status,
                message=message,
                run_dir=str(self.cfg.run_dir),
                accepted=len(accepted),
                target=self.cfg.target_tasks,
                rounds=round_no,
                requests=requests,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_usd=self._cost(prompt, completion),
                rejected=dict(rejected_counts),
                instances_dropped=dict(instance_drops),
                table1=table1(accepted),
                seconds=round(time.perf_counter() - started, 3),
            )

    def _check_resume(self) -> None:
        manifest = self.store.manifest()
        if manifest is None:
            return
        before = manifest.get("resume_key", {})
        now = self.cfg.resume_key()
        changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        if changed:
            raise SelfInstructError(
                f"{self.cfg.run_dir} was started with different settings ({', '.join(changed)}); "
                "use the same settings to resume, or another --run-dir for a new run"
            )

    def _build_index(self, accepted: list[Task], rejected: list[Rejected]) -> RougeLIndex:
        texts = [t.instruction for t in self.seeds]
        index = RougeLIndex(
            self.cfg.threshold, self.cfg.tokenizer, document_frequencies(texts, self.cfg.tokenizer)
        )
        for text in texts:
            index.add(text)
        # Everything that passed the novelty filter is in the pool, as in the paper's code.
        for task in accepted:
            index.add(task.instruction)
        for rej in rejected:
            if rej.stage in {"classification", "instances"}:
                index.add(rej.text)
        if self.store.rounds:
            for pending in self.store.rounds[-1].pending:
                index.add(pending["instruction"])
        return index

    def _classification_prompt(self, number: int) -> bool:
        """Is instruction prompt `number` (counted over the run) one for classification tasks?
        Spread evenly, so that any stretch of prompts holds the configured share."""
        share = self.cfg.classification_prompts
        return int((number + 1) * share) > int(number * share)

    def _round(
        self,
        round_no: int,
        accepted: list[Task],
        index: RougeLIndex,
        pending: list[_Candidate],
    ) -> tuple[list[Task], list[Rejected], list[_Candidate]]:
        cfg = self.cfg
        rng = random.Random(f"{cfg.seed}:{round_no}")
        rejected: list[Rejected] = []
        prompts, ids = [], []
        for p in range(cfg.prompts_per_round):
            classification = self._classification_prompt(round_no * cfg.prompts_per_round + p)
            pool = accepted
            seeds = self.seeds
            if classification:
                pool = [t for t in accepted if t.is_classification]
                seeds = self.demos.classification or self.seeds
            machine = rng.sample(pool, min(cfg.machine_examples, len(pool)))
            humans = rng.sample(
                seeds, min(cfg.human_examples + cfg.machine_examples - len(machine), len(seeds))
            )
            examples = [t.instruction for t in humans + machine]
            rng.shuffle(examples)
            prompts.append(
                render_instructions(
                    self.templates, examples, self.chat, cfg.max_new_per_prompt, classification
                )
            )
            ids.append(f"{round_no}:instructions:{p}")
        shown = min(cfg.human_examples + cfg.machine_examples, len(self.seeds))
        # A completion prompt ends mid-list ("9."): keep the model writing until the number
        # after the last new item, or a blank line (the paper's stops).
        last = shown + cfg.max_new_per_prompt + 1
        stop = () if self.chat else (f"\n{last}.", f"\n{last} .", "\n\n")
        params = cfg.instruction_sampling.model_copy(
            update={"stop": stop, "seed": cfg.seed + round_no, "ignore_eos": not self.chat}
        )
        candidates = list(pending)
        for rid, completion in zip(
            ids, self._call("instructions", ids, prompts, params), strict=True
        ):
            if completion is None:
                continue
            parsed = parse_instructions(
                completion.text,
                completion.finish_reason == "length",
                continues_list=not self.chat,
                first_number=None if self.chat else shown + 1,
                max_items=cfg.max_new_per_prompt,
            )
            for reason, raw in parsed.dropped:
                rejected.append(Rejected(stage="parse", reason=reason, text=raw, id=rid))
            for text in parsed.instructions:
                hit = self.rules.check(text)
                if hit is not None:
                    rejected.append(
                        Rejected(
                            stage="rules", reason=hit.reason, text=text, detail=hit.detail, id=rid
                        )
                    )
                    continue
                match = index.find_duplicate(text)
                if match is not None:
                    rejected.append(
                        Rejected(
                            stage="novelty",
                            reason="rouge_l",
                            text=text,
                            id=rid,
                            detail={"most_similar": match.text, "score": match.score},
                        )
                    )
                    continue
                # Provenance against the pool as it was, for novel instructions only.
                scores = index.scores(text)
                index.add(text)
                candidates.append(
                    _Candidate(
                        instruction=text,
                        request_id=rid,
                        most_similar={m.text: m.score for m in index.top_matches(scores, 10)},
                        avg_similarity=float(scores.mean()) if len(scores) else None,
                    )
                )
        tasks, more_rejected, still_pending = self._instances(round_no, candidates)
        return tasks, rejected + more_rejected, still_pending

    def _instances(
        self, round_no: int, candidates: list[_Candidate]
    ) -> tuple[list[Task], list[Rejected], list[_Candidate]]:
        cfg = self.cfg
        pending: list[_Candidate] = []
        rejected: list[Rejected] = []
        todo = [c for c in candidates if c.is_classification is None]
        ids = [f"{round_no}:classification:{k}" for k in range(len(todo))]
        prompts = [
            render_is_classification(
                self.templates,
                self.demos.for_classification(c.instruction, cfg.classification_examples),
                c.instruction,
                self.chat,
            )
            for c in todo
        ]
        # The paper's settings: greedy, 3 tokens, stop at the end of the line. A chat model
        # may answer in a short sentence, so it gets a few more tokens.
        params = SamplingParams(
            temperature=0.0,
            top_p=1.0,
            max_tokens=16 if self.chat else 3,
            stop=() if self.chat else ("\n", "Task"),
        )
        for cand, completion in zip(
            todo, self._call("classification", ids, prompts, params, todo), strict=True
        ):
            if completion is None:
                pending.append(cand)
                continue
            verdict = parse_is_classification(completion.text)
            # Unparseable counts as "not classification"; the task records that it was unclear.
            cand.is_classification = bool(verdict)
        waiting = {id(c) for c in pending}
        ready = [c for c in candidates if id(c) not in waiting]
        ids = [f"{round_no}:instances:{k}" for k in range(len(ready))]
        prompts = [
            render_instances(
                self.templates,
                self.demos.for_instances(
                    cand.instruction, bool(cand.is_classification), cfg.instance_examples
                ),
                cand.instruction,
                bool(cand.is_classification),
                self.chat,
            )
            for cand in ready
        ]
        stop = () if self.chat else ("\nTask:", "Task:", f"Example {cfg.max_instances + 1}")
        params = cfg.instance_sampling.model_copy(update={"stop": stop})
        tasks: list[Task] = []
        for k, (cand, completion) in enumerate(
            zip(ready, self._call("instances", ids, prompts, params, ready), strict=True)
        ):
            if completion is None:
                pending.append(cand)
                continue
            parsed = parse_instances(
                completion.text,
                bool(cand.is_classification),
                completion.finish_reason == "length",
                cand.instruction,
            )
            verdict = filter_instances(parsed.instances, cfg.max_instances)
            if verdict.task_reason is not None:
                rejected.append(
                    Rejected(
                        stage="instances",
                        reason=verdict.task_reason,
                        text=cand.instruction,
                        id=ids[k],
                        detail={
                            "raw": completion.text[:2000],
                            "dropped": [r for r, _ in parsed.dropped + verdict.dropped],
                        },
                    )
                )
                continue
            # The task is kept; each instance it lost is still accounted for.
            for reason, raw in parsed.dropped:
                rejected.append(
                    Rejected(
                        stage="instance",
                        reason=reason,
                        text=cand.instruction,
                        id=ids[k],
                        detail={"raw": raw[:2000]},
                    )
                )
            for reason, inst in verdict.dropped:
                rejected.append(
                    Rejected(
                        stage="instance",
                        reason=reason,
                        text=cand.instruction,
                        id=ids[k],
                        detail={"input": inst.input[:2000], "output": inst.output[:2000]},
                    )
                )
            tasks.append(
                Task(
                    id=f"machine_{round_no}_{k}",
                    instruction=cand.instruction,
                    instances=verdict.kept,
                    is_classification=cand.is_classification,
                    source="machine",
                    round=round_no,
                    request_id=cand.request_id,
                    most_similar=cand.most_similar,
                    avg_similarity_score=cand.avg_similarity,
                    model=self.backend.model,
                )
            )
        return tasks, rejected, pending

    def _write_manifest(
        self,
        status: str,
        accepted: list[Task],
        rejected: Counter[str],
        instance_drops: Counter[str],
        message: str = "",
    ) -> None:
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
                "config": self.cfg.model_dump(mode="json"),
                "resume_key": self.cfg.resume_key(),
                "counts": {
                    "accepted": len(accepted),
                    "rounds": len(self.store.rounds),
                    "rejected": dict(rejected),
                    "instances_dropped": dict(instance_drops),
                    "requests": requests,
                },
                "table1": table1(accepted).model_dump(),
            }
        )

    def _report(
        self, accepted: list[Task], round_no: int, rejected: Counter[str], started: float
    ) -> None:
        if self.on_progress is None:
            return
        requests, prompt, completion = self._usage()
        self.on_progress(
            Progress(
                accepted=len(accepted),
                target=self.cfg.target_tasks,
                round=round_no,
                requests=requests,
                tokens=prompt + completion,
                rejected=rejected,
                started=started,
            )
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
