"""The outcome: does a run's data make a model better? The paper's experiment in miniature.

    python bench/outcome.py --alpaca PATH/alpaca_data.json [--stage all] [--sizes 100,250,500]

A base model (Gemma 3 270M, `-m gemma3-270m`) writes its own tasks in completion mode with the
project's `generate` (through vLLM in-process on this CPU), is LoRA-tuned on them with
`finetune`, and is evaluated with `eval` on the paper's 252 user-oriented instructions, which no
stage saw. Arms, side by side on the same items, same steps, same prompt format (alpaca: the base
model has no chat template), greedy:

  base        the untuned model
  run-N       tuned on the first N tasks the run accepted (N in --sizes: the scaling curve)
  seeds       tuned on the paper's 175 seed tasks alone (what the loop started from)
  alpaca-N    tuned on N tasks drawn from Stanford Alpaca's 52K (text-davinci-003, a strong
              teacher), N the largest size of the run

Every stage is resumable and skipped when done: `generate` resumes its run directory, `finetune`
its checkpoints, `eval` is redone only when the set of arms changed. Everything is written under
--out (default outputs/outcome, never committed); the small results (`bench/outcome.json`,
`bench/outcome.md`, `docs/images/outcome_scaling.png`) are committed. The reference data comes
from ../shared/data (seeds, evaluation set); Alpaca's file is given with --alpaca and is never
copied into the repository (tatsu-lab/stanford_alpaca `alpaca_data.json`, 52,002 rows).

Stages: generate, data (arm files and the contamination check), finetune, eval, report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SEEDS = SHARED / "self_instruct_seed_tasks.jsonl"
EVAL = SHARED / "user_oriented_instructions.jsonl"
MAIN = REPO / ".venv" / "bin" / "selfinstruct"
VLLM = REPO / ".venv-vllm" / "bin" / "selfinstruct"
MODEL = "gemma3-270m"
STAGES = ("generate", "data", "finetune", "eval", "report")

# The loop's settings. The paper's sampling (temperature 0.7, top_p 0.5) makes a 270M base model
# copy the prompt's own examples: in a pilot, 125 of 168 new instructions were near-copies
# (ROUGE-L > 0.7) and 5 tasks came from 24 prompts; at temperature 1.0, top_p 0.9, 15 came
# from 12 (docs/benchmarks.md). A window of 32 prompts keeps vLLM's batch near 40 sequences.
GENERATE = [
    "-b", "vllm", "--completions", "-m", MODEL,
    "--seed-tasks", str(SEEDS),
    "--instruction-max-tokens", "200", "--instance-max-tokens", "200",
    "--window", "32", "--instruction-temperature", "1.0", "--instruction-top-p", "0.9",
]  # fmt: skip


def log(message: str) -> None:
    print(f"[outcome {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(cmd: list[str | Path], log_file: Path) -> float:
    """Run a command as a user would, its output appended to `log_file`; its wall seconds."""
    started = time.perf_counter()
    log(" ".join(map(str, cmd)))
    with log_file.open("a", encoding="utf-8") as fh:
        fh.write(f"\n$ {' '.join(map(str, cmd))}\n")
        fh.flush()
        code = subprocess.call([str(c) for c in cmd], stdout=fh, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"{cmd[0]} exited {code}; see {log_file}")
    return time.perf_counter() - started


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Outcome:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.out.mkdir(parents=True, exist_ok=True)
        self.run_dir = self.out / "generate"
        self.data = self.out / "data"
        self.state_path = self.out / "state.json"
        self.state: dict[str, Any] = (
            json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        )
        self.sizes: list[int] = sorted(args.sizes)

    def save(self) -> None:
        self.state_path.write_text(json.dumps(self.state, indent=1) + "\n")

    def timed(self, key: str, seconds: float) -> None:
        self.state.setdefault("seconds", {})[key] = round(
            self.state.get("seconds", {}).get(key, 0.0) + seconds, 1
        )
        self.save()

    # -- generate --------------------------------------------------------------------

    def accepted(self) -> int:
        tasks = self.run_dir / "tasks.jsonl"
        return len(read_jsonl(tasks)) if tasks.exists() else 0

    def generate(self) -> None:
        target = max(self.sizes)
        if self.accepted() >= target:
            log(f"generate: {self.accepted()} tasks already, target {target}")
            return
        cmd = [VLLM, "generate", *GENERATE, "--target", str(target), "--run-dir", self.run_dir]
        self.timed("generate", run(cmd, self.out / "generate.log"))

    # -- data: one file per arm, and the contamination check -------------------------

    def arms(self) -> dict[str, Path]:
        """Arm name -> training data (run arms read the run directory with --max-tasks)."""
        have = self.accepted()
        arms: dict[str, Path] = {f"run-{n}": self.run_dir for n in self.sizes if n <= have}
        arms["seeds"] = SEEDS
        if self.args.alpaca is not None:
            arms[f"alpaca-{self.alpaca_size()}"] = self.data / f"alpaca-{self.alpaca_size()}.json"
        return arms

    def alpaca_size(self) -> int:
        return max(n for n in self.sizes if n <= max(self.accepted(), min(self.sizes)))

    def prepare(self) -> None:
        from selfinstruct.records import read_tasks
        from selfinstruct.similarity import RougeLIndex

        self.data.mkdir(parents=True, exist_ok=True)
        if self.args.alpaca is not None:
            size = self.alpaca_size()
            target = self.data / f"alpaca-{size}.json"
            if not target.exists():
                rows = json.loads(self.args.alpaca.read_text(encoding="utf-8"))
                chosen = random.Random(0).sample(rows, size)
                target.write_text(json.dumps(chosen, ensure_ascii=False, indent=1) + "\n")
            self.state["alpaca"] = {
                "file": str(self.args.alpaca),
                "rows": 52002,
                "sha256": sha256(self.args.alpaca),
                "drawn": size,
                "draw_seed": 0,
            }
        evaluation = read_tasks(EVAL)
        index = RougeLIndex(1.0, "rouge", prune=False)
        for task in evaluation:
            index.add(task.instruction)
        normal = {" ".join(t.instruction.lower().split()) for t in evaluation}
        check: dict[str, Any] = {}
        for name, source in {**self.arms(), "run (all)": self.run_dir}.items():
            tasks = read_tasks(source / "tasks.jsonl" if source.is_dir() else source)
            if name.startswith("run-"):
                tasks = tasks[: int(name.split("-")[1])]
            exact = [
                t.instruction for t in tasks if " ".join(t.instruction.lower().split()) in normal
            ]
            close = []
            for t in tasks:
                scores = index.scores(t.instruction)
                best = int(scores.argmax())
                if float(scores[best]) > 0.7:
                    close.append(
                        {
                            "task": t.instruction,
                            "eval": evaluation[best].instruction,
                            "rouge_l": round(float(scores[best]), 3),
                        }
                    )
            check[name] = {
                "tasks": len(tasks),
                "exact": len(exact),
                "rouge_l_over_0.7": len(close),
                "examples": close[:10],
                "max_rouge_l": round(
                    max((float(index.scores(t.instruction).max()) for t in tasks), default=0.0), 3
                ),
            }
        self.state["contamination"] = check
        self.save()
        log("contamination: " + ", ".join(
            f"{k} {v['exact']} exact / {v['rouge_l_over_0.7']} > 0.7 of {v['tasks']}"
            for k, v in check.items()
        ))  # fmt: skip

    # -- finetune ----------------------------------------------------------------------

    def finetune(self) -> None:
        for name, source in self.arms().items():
            folder = self.out / "ft" / name
            summary = folder / "training_summary.json"
            if summary.exists() and json.loads(summary.read_text())["steps"] >= self.args.steps:
                continue
            cmd: list[str | Path] = [
                MAIN, "finetune", source, "-m", MODEL, "-o", folder,
                "--prompt-format", "alpaca", "--max-steps", str(self.args.steps),
                "--batch-size", str(self.args.batch), "--learning-rate", str(self.args.lr),
                "--val-fraction", "0", "--logging-steps", "5", "--save-steps", "20",
            ]  # fmt: skip
            if name.startswith("run-"):
                cmd += ["--max-tasks", name.split("-")[1]]
            self.timed(f"finetune {name}", run(cmd, self.out / "finetune.log"))

    # -- eval --------------------------------------------------------------------------

    def adapters(self) -> list[str]:
        return [f"{name}={self.out / 'ft' / name / 'adapter'}" for name in self.arms()]

    def evaluate(self) -> None:
        folder = self.out / "eval"
        summary = folder / "eval_summary.json"
        wanted = ["base", *self.arms()]
        if summary.exists():
            done = json.loads(summary.read_text())
            if [v["name"] for v in done["variants"]] == wanted and done[
                "max_new_tokens"
            ] == self.args.max_new_tokens:
                log("eval: done for these arms")
                return
        cmd: list[str | Path] = [
            VLLM, "eval", "--data", EVAL, "-m", MODEL, "--prompt-format", "alpaca",
            "--max-new-tokens", str(self.args.max_new_tokens), "-o", folder,
        ]  # fmt: skip
        for adapter in self.adapters():
            cmd += ["--adapter", adapter]
        self.timed("eval", run(cmd, self.out / "eval.log"))

    # -- report ------------------------------------------------------------------------

    def report(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from selfinstruct.eval_report import differences_table, scaling_figure, summary_table
        from selfinstruct.evaluation import EvalSummary
        from selfinstruct.records import read_tasks
        from selfinstruct.stats import table1, table1_rows

        summary = EvalSummary.model_validate_json(
            (self.out / "eval" / "eval_summary.json").read_text()
        )
        figure = scaling_figure(summary, self.run_dir, plt)
        if figure is not None:
            (REPO / "docs" / "images" / "outcome_scaling.png").write_bytes(figure)
        run(
            [MAIN, "report", self.run_dir],
            self.out / "report.log",
        )
        manifest = json.loads((self.run_dir / "manifest.json").read_text())
        training = {
            name: json.loads((self.out / "ft" / name / "training_summary.json").read_text())
            for name in self.arms()
        }
        tasks = read_tasks(self.run_dir / "tasks.jsonl")
        results = {
            "machine": machine(),
            "model": MODEL,
            "generate": {
                "command": " ".join(["selfinstruct generate", *GENERATE]),
                "accepted": len(tasks),
                "usage": json.loads((self.run_dir / "usage.json").read_text()),
                "status": manifest.get("status"),
                "table1": [list(r) for r in table1_rows(table1(tasks))],
            },
            "finetune": {
                name: {
                    "tasks": t.get("tasks"),
                    "examples": t["examples"],
                    "steps": t["steps"],
                    "tokens_seen": t["tokens_seen"],
                    "tokens_per_second": round(t["tokens_per_second"], 1),
                    "wall_seconds": t["wall_seconds"],
                    "first_loss": t["train_loss"][0]["loss"] if t["train_loss"] else None,
                    "last_loss": t["train_loss"][-1]["loss"] if t["train_loss"] else None,
                }
                for name, t in training.items()
            },
            "settings": {
                "steps": self.args.steps,
                "batch": self.args.batch,
                "learning_rate": self.args.lr,
                "max_new_tokens": self.args.max_new_tokens,
                "prompt_format": summary.prompt_format,
            },
            "eval": summary.model_dump(mode="json", exclude={"output_dir"}),
            "contamination": self.state.get("contamination"),
            "alpaca": self.state.get("alpaca"),
            "seconds": self.state.get("seconds"),
        }
        for variant in results["eval"]["variants"]:
            variant.pop("responses_path", None)
            variant.pop("adapter", None)
        (REPO / "bench" / "outcome.json").write_text(json.dumps(results, indent=1) + "\n")
        header, rows = summary_table(summary)
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows),
            "",
            "| difference (paired 95% interval; * excludes zero) | ROUGE-L | response loss | "
            "ended by itself |",
            "|---|---|---|---|",
            *("| " + " | ".join(r) + " |" for r in differences_table(summary, against=None)),
        ]
        (REPO / "bench" / "outcome.md").write_text("\n".join(lines) + "\n")
        log("results -> bench/outcome.json, bench/outcome.md, docs/images/outcome_scaling.png")
        print("\n".join(lines))


def machine() -> dict[str, Any]:
    cpu = "?"
    flags: list[str] = []
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next(
            line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line
        )
        flag_line = next(line for line in info.splitlines() if line.startswith("flags"))
        flags = [f for f in flag_line.split() if f.startswith(("avx512_bf16", "amx", "avx2"))]
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "flags": flags,
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=[*STAGES, "all"], default="all")
    parser.add_argument("--alpaca", type=Path, help="Stanford Alpaca's alpaca_data.json (52K)")
    parser.add_argument(
        "--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[100, 250, 500]
    )
    parser.add_argument("--steps", type=int, default=75, help="optimizer steps, every arm")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "outcome")
    args = parser.parse_args()
    if not MAIN.exists() or not VLLM.exists():
        raise SystemExit("needs .venv and .venv-vllm: make outcome-setup")
    if args.alpaca is not None and not args.alpaca.exists():
        raise SystemExit(f"{args.alpaca}: not found")
    sys.path.insert(0, str(REPO))
    outcome = Outcome(args)
    steps = {
        "generate": outcome.generate,
        "data": outcome.prepare,
        "finetune": outcome.finetune,
        "eval": outcome.evaluate,
        "report": outcome.report,
    }
    for name in STAGES if args.stage == "all" else (args.stage,):
        steps[name]()


if __name__ == "__main__":
    main()
