"""The bootstrapping loop with the scripted backend: every stage, stop rule and resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from selfinstruct.backends.base import Completion
from selfinstruct.backends.scripted import ScriptedBackend, canned_reply
from selfinstruct.config import GenerateConfig
from selfinstruct.errors import SelfInstructError
from selfinstruct.generate import run_generate
from selfinstruct.records import Task
from selfinstruct.store import RunLockedError, RunStore, acquire_lock


def config(tmp_path: Path, **overrides) -> GenerateConfig:
    base = {
        "run_dir": tmp_path / "run",
        "backend": "scripted",
        "target_tasks": 12,
        "window": 2,
    }
    return GenerateConfig.model_validate({**base, **overrides})


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_prompt_assembly_mixes_seed_and_machine_tasks(tmp_path: Path) -> None:
    backend = ScriptedBackend()
    summary = run_generate(config(tmp_path, target_tasks=20), backend)
    assert summary.status == "done" and summary.accepted >= 20
    seed_rows = [json.loads(x) for x in (REPO / "seed_tasks/seed_tasks.jsonl").open()]
    seeds = {row["instruction"] for row in seed_rows}
    clf_seeds = {row["instruction"] for row in seed_rows if row["is_classification"]}
    tasks = read(tmp_path / "run" / "tasks.jsonl")
    machine = {t["instruction"] for t in tasks}
    clf_machine = {t["instruction"] for t in tasks if t["is_classification"]}
    instruction_calls = [(p, params) for p, params in backend.calls if "Come up with a series" in p]
    # Defect 9: 8 shown, the list stops at item 16 (7 new), or at a blank line, as the paper.
    assert all(params.stop == ("\n16.", "\n16 .", "\n\n") for _, params in instruction_calls)
    instruction_prompts = [p for p, _ in instruction_calls]
    kinds = []
    for k, prompt in enumerate(instruction_prompts):
        shown = re.findall(r"(?m)^\d+\. (.+)$", prompt)
        assert len(shown) == 8 and prompt.endswith("9.")
        from_machine = sum(s in machine for s in shown)
        if "classification tasks" in prompt:
            kinds.append("clf")
            # Classification prompts show classification tasks only, seed or machine.
            assert all(s in clf_seeds or s in clf_machine for s in shown)
        else:
            kinds.append("any")
            assert from_machine == (0 if k < 2 else 2)  # round 0 has no machine tasks yet
            assert sum(s in seeds for s in shown) == 8 - from_machine
    # One prompt in four asks for classification tasks, spread evenly.
    assert len(kinds) >= 4 and kinds == (["any", "any", "any", "clf"] * 9)[: len(kinds)]
    first = tasks[0]
    assert first["source"] == "machine" and first["round"] == 0 and first["instances"]
    assert len(first["most_similar"]) == 10 and first["avg_similarity_score"] > 0
    assert first["request_id"] == "0:instructions"


def test_every_filter_and_routing(tmp_path: Path) -> None:
    seed = json.loads((REPO / "seed_tasks/seed_tasks.jsonl").open().readline())["instruction"]
    listing = (
        f" {seed}\n"  # a copy of a seed: ROUGE-L
        "10. Draw a picture of a cat sitting on a fence.\n"  # keyword
        "11. Write a program that lists primes.\n"  # banned prefix
        "12. Classify the review as positive or negative.\n"  # classification
        "13. Give two tips for keeping houseplants alive.\n"  # input-first, bad instances
        "14. Suggest a weekend plan for a rainy day in town.\n"  # input-first, good
        "15. Name a"  # truncated
    )
    # The first two instruction prompts get these replies, whenever the loop sends them.
    replies = [
        Completion(text=listing, finish_reason="length"),
        Completion(text="Sure! Here you go:\n", finish_reason="stop"),
    ]

    def rule(text: str) -> str | Completion | None:
        if text.endswith("9.") and replies:
            return replies.pop(0)
        if "Is it classification?" in text[-200:]:
            return " Yes" if "Classify the review" in text[-200:] else " It depends"
        if text.rstrip().endswith("Task: Give two tips for keeping houseplants alive."):
            return "\nInput: same\nOutput: one\n\nInput: same\nOutput: two\n"
        return None

    backend = ScriptedBackend(answers=[rule])
    summary = run_generate(config(tmp_path, target_tasks=3, window=2), backend)
    # How the completions were read, per stage: the chat preamble gave nothing, the cut-off
    # list lost its last item, "It depends" is no answer.
    coverage = summary.parse_coverage
    assert coverage.instructions.not_read == 1 and coverage.instructions.partly >= 1
    assert {"truncated", "preamble"} <= set(coverage.instructions.reasons)
    unclear = coverage.classification.reasons["no_yes_or_no"]
    assert unclear == coverage.classification.not_read >= 1
    assert coverage.instances.fully >= 3
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["counts"]["parse_coverage"] == coverage.model_dump()
    # A resumed run replays the journal and counts the same.
    again = run_generate(config(tmp_path, target_tasks=3, window=2), ScriptedBackend())
    assert again.parse_coverage == coverage
    rejected = read(tmp_path / "run" / "rejected.jsonl")
    reasons = {(r["stage"], r["reason"]) for r in rejected}
    assert {
        ("novelty", "rouge_l"),
        ("rules", "keyword"),
        ("rules", "banned_prefix"),
        ("parse", "truncated"),
        ("parse", "preamble"),
        ("instances", "same_input_different_outputs"),
    } <= reasons
    tasks = {t["instruction"]: t for t in read(tmp_path / "run" / "tasks.jsonl")}
    review = tasks["Classify the review as positive or negative."]
    assert review["is_classification"] is True and review["instances"][0]["output"] == "Positive"
    weekend = tasks["Suggest a weekend plan for a rainy day in town."]
    assert weekend["is_classification"] is False  # "It depends" counts as not classification
    prompts = {p.rstrip().rsplit("Task: ", 1)[-1]: p for p, _ in backend.calls}
    assert "Class label:" in prompts["Classify the review as positive or negative."]
    assert "Output:" in prompts["Suggest a weekend plan for a rainy day in town."]


def test_no_progress_stops_with_a_reason(tmp_path: Path) -> None:
    backend = ScriptedBackend(answers=[lambda text: " Draw a map of the city.\n"], canned=False)
    summary = run_generate(config(tmp_path, no_progress_prompts=3), backend)
    assert summary.status == "stalled" and summary.prompts == 3
    assert "3 instruction prompts in a row" in summary.message and "keyword" in summary.message


def test_budget_stops_and_resume_continues(tmp_path: Path) -> None:
    summary = run_generate(config(tmp_path, target_tasks=40, max_requests=7))
    assert summary.status == "budget" and summary.requests == 7
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["status"] == "budget"
    summary = run_generate(config(tmp_path, target_tasks=40))
    assert summary.status == "done" and summary.accepted >= 40


def test_a_moved_run_resumes_and_the_default_window_is_kept(tmp_path: Path) -> None:
    # Configured as an openai run (its default window is 2 x concurrency), served by the
    # scripted backend.
    first = config(
        tmp_path, target_tasks=40, max_requests=7, window=None, backend="openai", model="m",
        concurrency=6,
    )  # fmt: skip
    assert run_generate(first, ScriptedBackend()).status == "budget"
    moved = tmp_path / "elsewhere"
    (tmp_path / "run").rename(moved)
    # A moved folder, and a concurrency that would give another default window: the run keeps
    # the window it began with (it decides which tasks each prompt shows).
    again = first.model_copy(update={"run_dir": moved, "max_requests": None, "concurrency": 64})
    assert run_generate(again, ScriptedBackend()).status == "done"
    manifest = json.loads((moved / "manifest.json").read_text())
    assert manifest["resume_key"]["window"] == first.default_window() == 12
    assert again.default_window() == 128
    with pytest.raises(SelfInstructError, match=r"different settings.*window"):
        run_generate(again.model_copy(update={"window": 3}), ScriptedBackend())


def test_failed_requests_are_asked_again_or_dropped_with_a_reason(tmp_path: Path) -> None:
    failures = {"transient": 3, "final": 1}

    def flaky(text: str) -> Completion | None:
        if "Is it classification?" in text[-300:] and failures["transient"]:
            failures["transient"] -= 1
            return Completion(text="", finish_reason="error", error="HTTP 503", retryable=True)
        if text.rstrip().endswith("Task:") is False and "Class label" in text and failures["final"]:
            failures["final"] -= 1
            return Completion(text="", finish_reason="error", error="HTTP 400: too long")
        return None

    backend = ScriptedBackend(answers=[flaky])
    summary = run_generate(config(tmp_path, target_tasks=10), backend)
    assert summary.status == "done" and failures == {"transient": 0, "final": 0}
    journal = read(tmp_path / "run" / "requests.jsonl")
    # A transient failure is asked again and never journaled; a final one is journaled once.
    assert not any(e.get("error") == "HTTP 503" for e in journal)
    assert [e["error"] for e in journal if e.get("error")] == ["HTTP 400: too long"]
    dropped = [
        r for r in read(tmp_path / "run" / "rejected.jsonl") if r["reason"] == "request_failed"
    ]
    assert len(dropped) == 1 and dropped[0]["detail"]["error"] == "HTTP 400: too long"


def test_lock_and_changed_settings(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with RunStore(cfg.run_dir), pytest.raises(RunLockedError, match="being written by pid"):
        run_generate(cfg)
    run_generate(cfg)
    with pytest.raises(SelfInstructError, match=r"different settings.*seed"):
        run_generate(config(tmp_path, seed=5))


def test_a_killed_holder_frees_the_lock_even_if_its_worker_lives_on(tmp_path: Path) -> None:
    # A forked worker shares its parent's flock; if it kept it, a killed run stayed locked
    # until the orphan finished (seen in CI: a job killed during its filter stage).
    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from selfinstruct.store import acquire_lock\n"
        "lock = acquire_lock(Path(sys.argv[1]), 'busy')\n"
        "if os.fork() == 0:\n"
        "    print(os.getpid(), flush=True)\n"
        "    os.close(1); os.close(2)\n"
        "    time.sleep(30)\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)\n"
        "os._exit(0)\n"
    )
    lock_path = tmp_path / "lock"
    child = subprocess.run(
        [sys.executable, "-c", script, str(lock_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    )
    worker = int(child.stdout.strip())
    try:
        acquire_lock(lock_path, "still held by {holder}").close()
    finally:
        os.kill(worker, signal.SIGKILL)


def test_canned_replies_are_a_function_of_the_prompt() -> None:
    assert canned_reply("x\n9.") == canned_reply("x\n9.")
    task = Task(id="t", instruction="i")
    assert task.source == "seed"


def test_cli_dry_run_exit_codes_and_config(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from selfinstruct.cli import app

    runner = CliRunner()
    run_dir = tmp_path / "cli"
    result = runner.invoke(app, ["generate", "--dry-run", "--run-dir", str(run_dir), "-n", "5"])
    assert result.exit_code == 0, result.output
    assert "accepted tasks" in result.output and "accepted 0/5, prompts 0" in result.output
    config_file = tmp_path / "gen.toml"
    config_file.write_text('backend = "scripted"\ntarget_tasks = 400\nmax_requests = 3\n')
    result = runner.invoke(
        app, ["generate", "-c", str(config_file), "--run-dir", str(tmp_path / "budget"), "-q"]
    )
    assert result.exit_code == 5 and result.output == ""
    result = runner.invoke(app, ["generate", "--dry-run", "--run-dir", str(run_dir), "--seed", "9"])
    assert result.exit_code == 2 and "different settings" in result.output
    config_file.write_text("prompts_per_rond = 3\n")
    result = runner.invoke(app, ["generate", "-c", str(config_file)])
    assert result.exit_code == 2 and "'prompts_per_rond': unknown option" in result.output


def test_token_and_cost_budgets(tmp_path: Path) -> None:
    summary = run_generate(config(tmp_path / "tokens", target_tasks=500, max_tokens_total=3000))
    assert summary.status == "budget"
    assert 3000 <= summary.prompt_tokens + summary.completion_tokens < 3000 + 6000
    prices = {"scripted": (1000.0, 2000.0)}  # USD per 1M tokens, for the cost estimate
    summary = run_generate(config(tmp_path / "cost", target_tasks=500, max_cost=5.0, prices=prices))
    assert summary.status == "budget" and summary.cost_usd is not None
    assert summary.cost_usd >= 5.0
    usage = json.loads((tmp_path / "cost" / "run" / "usage.json").read_text())
    assert usage["estimated_cost_usd"] == summary.cost_usd and usage["requests"] > 0


def test_a_limited_backend_gets_requests_in_priority_order_and_a_few_at_a_time(
    tmp_path: Path,
) -> None:
    import itertools
    import threading
    import time
    from concurrent.futures import Future

    from selfinstruct.backends.base import BackendStats

    class Limited(ScriptedBackend):
        """Answers from a worker thread, a little later, and says its limit is 2."""

        def __init__(self) -> None:
            super().__init__()
            self.outstanding, self.most = 0, 0
            self.order: list[int] = []
            self.lock = threading.Lock()

        def submit(self, request_id, prompt, params, priority=()):  # type: ignore[no-untyped-def]
            future: Future = Future()
            with self.lock:
                self.outstanding += 1
                self.most = max(self.most, self.outstanding)
            if not request_id.endswith(":instructions"):  # those go first, by design
                self.order.append(int(request_id.split(":")[0]))
            reply = self.generate([prompt], params)[0]

            def answer() -> None:
                time.sleep(0.002)
                with self.lock:
                    self.outstanding -= 1
                future.set_result(reply)

            threading.Thread(target=answer).start()
            return future

        def stats(self) -> BackendStats:
            return BackendStats(limit=2, in_flight=self.outstanding)

    limited = Limited()
    summary = run_generate(config(tmp_path / "a", target_tasks=20, window=4), limited)
    free = run_generate(config(tmp_path / "b", target_tasks=20, window=4), ScriptedBackend())
    assert summary.accepted == free.accepted
    assert read(tmp_path / "a" / "run" / "tasks.jsonl") == read(
        tmp_path / "b" / "run" / "tasks.jsonl"
    )
    assert limited.most <= 2 + 2  # its limit, and a few more so that a freed slot never waits
    # Then oldest prompt first: once a later prompt's classification or instance request
    # went out, an earlier prompt's rarely follows
    # (only requests created after it, by an answer that arrived meanwhile).
    inversions = sum(1 for a, b in itertools.pairwise(limited.order) if b < a)
    assert inversions < len(limited.order) // 4


def test_the_manifest_is_one_model_and_its_tally_is_the_run_s(tmp_path: Path) -> None:
    """manifest.json is written and read through RunManifest; what was dropped is counted by
    stage and reason as prompts commit, and equals rejected.jsonl record for record."""
    from collections import Counter

    from selfinstruct.manifest import RunManifest
    from selfinstruct.records import Rejected

    run_dir = tmp_path / "run"
    run_generate(GenerateConfig(run_dir=run_dir, backend="scripted", target_tasks=30, window=2))
    manifest = RunManifest.read(run_dir / "manifest.json")
    assert manifest is not None and manifest.status == "done" and manifest.counts.accepted >= 30
    rows = [Rejected.model_validate_json(x) for x in (run_dir / "rejected.jsonl").open()]
    counted = Counter((r.stage, r.reason) for r in rows)
    tallied = Counter(
        {(stage, reason): n for stage, by in manifest.counts.tally.by_stage.items()
         for reason, n in by.items()}
    )  # fmt: skip
    assert tallied == counted and sum(counted.values()) > 0
    raw = json.loads((run_dir / "manifest.json").read_text())
    assert raw["counts"]["rejected"] == manifest.counts.tally.tasks  # derived, for JSON readers
    assert RunManifest.model_validate(raw).model_dump() == manifest.model_dump()


def test_the_outlook_kept_as_counts_equals_a_sum_over_the_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop keeps what the uncommitted prompts will likely give as counts that move with the
    slots (a sum at every check cost 3.4 ms at 4,096 slots); at every check of a run, and of its
    resume, they must equal that sum."""
    from selfinstruct.generate import _FIRST_KEEP_RATE, Generator

    def summed(slots: list, per_prompt: float) -> float:
        decided = [c for s in slots for c in s.candidates if c.decided]
        kept = sum(c.task is not None for c in decided)
        rate = kept / len(decided) if decided else _FIRST_KEEP_RATE
        return sum(
            sum((c.task is not None) if c.decided else rate for c in s.candidates)
            if s.processed
            else per_prompt
            for s in slots
        )

    checks: list[float] = []
    may_issue = Generator._may_issue

    def checked(self: Generator) -> bool:
        slots = list(self.slots.values())
        for per_prompt in (0.5, 3.0):
            assert self.outlook.expected(per_prompt) == pytest.approx(summed(slots, per_prompt))
        checks.append(self.outlook.expected(1.0))
        return may_issue(self)

    monkeypatch.setattr(Generator, "_may_issue", checked)
    assert run_generate(config(tmp_path, target_tasks=40, max_requests=30)).status == "budget"
    assert run_generate(config(tmp_path, target_tasks=40)).status == "done"
    assert len(checks) > 20 and max(checks) > 0  # checked while slots were open


def test_provenance_is_the_pool_s_and_no_provenance_leaves_it_out(tmp_path: Path) -> None:
    """Each task's provenance, computed beside the loop, scores as rouge_score does, and its
    best is at least the best against the seeds and the tasks written before it (the pool
    also holds instructions dropped in later stages); `--no-provenance` writes the same tasks
    without it, and a run cannot resume with it switched."""
    from rouge_score import rouge_scorer

    from selfinstruct.records import read_tasks

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)

    def rouge(a: str, b: str) -> float:
        return scorer.score(b, a)["rougeL"].fmeasure

    cfg = config(tmp_path, target_tasks=30)
    run_generate(cfg)
    tasks = read(cfg.run_dir / "tasks.jsonl")
    seeds = [t.instruction for t in read_tasks(cfg.seed_tasks)]
    assert len(tasks) >= 30
    for n, task in enumerate(tasks):
        similar = task["most_similar"]
        assert len(similar) == 10 and task["instruction"] not in similar  # earlier ones only
        for text, score in similar.items():
            assert score == pytest.approx(rouge(task["instruction"], text), abs=1e-12)
        known = seeds + [t["instruction"] for t in tasks[:n]]
        best = max(similar.values())
        assert best >= max(rouge(task["instruction"], t) for t in known) - 1e-12
        assert list(similar.values()) == sorted(similar.values(), reverse=True)
        assert 0.0 < task["avg_similarity_score"] < best
    plain = config(tmp_path, run_dir=tmp_path / "plain", target_tasks=30, provenance=False)
    run_generate(plain)
    without = read(plain.run_dir / "tasks.jsonl")
    assert [t["instruction"] for t in without] == [t["instruction"] for t in tasks]
    assert not any(t.get("most_similar") or "avg_similarity_score" in t for t in without)
    with pytest.raises(SelfInstructError, match=r"different settings.*provenance"):
        run_generate(config(tmp_path, run_dir=plain.run_dir, target_tasks=40))
