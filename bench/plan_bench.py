"""Plan against actual: `selfinstruct plan` from a pilot, then the run it planned.

    python bench/plan_bench.py [--target 300] [--outcome outputs/outcome/generate] [--vllm-server]

1. The project's fake OpenAI server (tests/fake_openai.py, canned replies from the prompt, a
   30 ms service time), run as a user runs it: `selfinstruct plan -b openai --target 300
   --pilot-tasks 20`, then `selfinstruct generate` to 300 in the same run directory (it resumes
   the pilot). The canned replies repeat as the pool grows, so the novelty filter's rejects rise
   much faster than any real model's: the hard case for the yield model.
2. A real server, planned then run: vLLM's own OpenAI server (the `.venv-vllm` environment,
   `make vllm-setup`) with the bundled SmolLM2-135M-Instruct on this CPU, the same two commands
   at `--concurrency 32` (`--vllm-server`; minutes of CPU, so not run by default).
3. A real engine's run: the outcome experiment's Gemma 3 270M run through vLLM in-process
   (bench/outcome.py, 518 tasks): plans made from its first 20, 50 and 100 tasks (its journal
   as it stood then, `make_plan(upto=...)`) against what the rest of the run used to reach 500.

For each: planned requests, prompt and completion tokens, instruction prompts and tasks after the
planned prompts, each with its 95% interval, beside the actual figures. Writes
bench/plan_bench.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

from fake_openai import FakeOpenAI, prompt_text  # noqa: E402  the test server, reused

from selfinstruct.backends.scripted import canned_reply  # noqa: E402
from selfinstruct.plan import RunPlan, check_against, make_plan, read_pilot, read_plan  # noqa: E402

CLI = REPO / ".venv" / "bin" / "selfinstruct"
# The default seed file's tasks: the pool a run without --seed-tasks starts from.
DEFAULT_SEEDS = len((REPO / "seed_tasks" / "seed_tasks.jsonl").read_text().splitlines())


def rows(label: str, plan: RunPlan, run_dir: Path, seeds: int) -> list[dict]:
    check = check_against(plan, run_dir, seeds)
    assert check is not None
    return [
        {
            "case": label,
            "what": r.what,
            "planned": r.planned.model_dump(),
            "actual": r.actual,
            "error": (r.planned.value - r.actual) / r.actual if r.actual else None,
            "inside": r.inside,
        }
        for r in check.rows
    ]


def plan_then_run(url: str, model: str, target: int, label: str, extra: list[str]) -> list[dict]:
    """`selfinstruct plan --pilot-tasks 20`, then `generate` to the target resuming the pilot, as
    a user runs them; the plan's rows against what the run used."""
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        common = ["-b", "openai", "--base-url", url, "-m", model, "--completions", *extra,
                  "-o", str(run_dir), "--target", str(target), "-q"]  # fmt: skip
        env = {"OPENAI_API_KEY": "unused", "PATH": "/usr/bin:/bin"}
        subprocess.run([CLI, "plan", *common, "--pilot-tasks", "20"], check=True, env=env)
        plan = read_plan(run_dir)
        assert plan is not None
        subprocess.run([CLI, "generate", *common], check=True, env=env)
        return rows(f"{label}, pilot {plan.pilot.accepted} tasks", plan, run_dir, DEFAULT_SEEDS)


def fake_server(target: int) -> list[dict]:
    with FakeOpenAI(
        lambda body, n: [("sleep", 0.03), ("ok", canned_reply(prompt_text(body)))]
    ) as server:
        return plan_then_run(server.url, "fake", target, "fake server", [])


def vllm_server(target: int) -> list[dict]:
    from vllm_env import VLLMServer, bundled_model_path

    venv = REPO / ".venv-vllm" / "bin" / "python"
    with tempfile.TemporaryDirectory() as tmp:
        server = VLLMServer(venv, bundled_model_path(venv), Path(tmp) / "server.log")
        try:
            server.wait_ready()
            extra = ["--concurrency", "32", "--instruction-max-tokens", "200",
                     "--instance-max-tokens", "120"]  # fmt: skip
            label = "SmolLM2-135M on vLLM's server"
            return plan_then_run(server.url, server.name, target, label, extra)
        finally:
            server.stop()


def real_run(run_dir: Path, target: int) -> list[dict]:
    records, _ = read_pilot(run_dir, 175)
    out = []
    for pilot_tasks in (20, 50, 100):
        pool, upto = 0, 0
        while pool < pilot_tasks:
            pool += records[upto].accepted
            upto += 1
        plan = make_plan(run_dir, 175, target, model="gemma3-270m", backend="vllm", upto=upto)
        out += rows(f"Gemma 3 270M (vLLM), pilot {pool} tasks", plan, run_dir, 175)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=int, default=300)
    parser.add_argument("--outcome", type=Path, default=REPO / "outputs/outcome/generate")
    parser.add_argument("--vllm-server", action="store_true", help="also case 2 (minutes)")
    kept = "case 2 alone; the other cases' rows are kept from the last bench/plan_bench.json"
    parser.add_argument("--only-vllm-server", action="store_true", help=kept)
    args = parser.parse_args()
    out = REPO / "bench" / "plan_bench.json"
    if args.only_vllm_server:
        kept = json.loads(out.read_text()) if out.exists() else []
        results = [r for r in kept if "vLLM's server" not in r["case"]]
    else:
        results = fake_server(args.target)
        if (args.outcome / "commits.jsonl").exists():
            results += real_run(args.outcome, 500)
    if args.vllm_server or args.only_vllm_server:
        results += vllm_server(args.target)
    out.write_text(json.dumps(results, indent=1) + "\n")
    print("| case | figure | planned [95%] | actual | plan error | inside |")
    print("|---|---|---|---|---|---|")
    for r in results:
        p = r["planned"]
        err = f"{r['error']:+.0%}" if r["error"] is not None else "-"
        print(
            f"| {r['case']} | {r['what']} | {p['value']:,.0f} [{p['low']:,.0f}-{p['high']:,.0f}]"
            f" | {r['actual']:,.0f} | {err} | {'yes' if r['inside'] else 'no'} |"
        )


if __name__ == "__main__":
    main()
