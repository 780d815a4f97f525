"""Text mode against --structured, the same chat model through vLLM's OpenAI server on this CPU.

    python bench/structured_bench.py [--target 30] [--work DIR]

Starts vLLM's server (the vLLM environment of `make vllm-setup`) with the bundled SmolLM2, and
runs `selfinstruct generate -b openai --chat --concurrency 32` twice to the same target: the
paper's text format parsed after the fact, then `--structured` (each stage's reply held to a
JSON schema by the server's guided decoding). Prints per mode: how the completions of each stage
were read (fully / in part / not read), tasks per request, retries, tokens, time, and Table 1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from vllm_bench import SHORT, run_cli, run_figures  # noqa: E402


def figures(run_dir: Path, measured: dict[str, Any]) -> dict[str, Any]:
    found = run_figures(run_dir, measured)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    journal = [json.loads(line) for line in (run_dir / "requests.jsonl").open()]
    found["retries"] = sum(":retry" in entry["id"] for entry in journal)
    found["tasks_per_request"] = round(found["accepted"] / found["requests"], 3)
    found["coverage"] = manifest["counts"]["parse_coverage"]
    found["rejected"] = manifest["counts"]["rejected"]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=int, default=30)
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a new one)")
    args = parser.parse_args()
    from vllm_env import VLLMServer, bundled_model_path, vllm_python

    venv = vllm_python()
    work = args.work or Path(tempfile.mkdtemp(prefix="structured-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; target {args.target} tasks")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    server = VLLMServer(venv, bundled_model_path(venv), work / "server.log").wait_ready()
    results: dict[str, Any] = {}
    try:
        for name, extra in (("text", []), ("structured", ["--structured"])):
            run_dir = work / name
            shutil.rmtree(run_dir, ignore_errors=True)
            cmd = [
                sys.executable, "-m", "selfinstruct.cli", "generate", "-b", "openai", "-m",
                server.name, "--chat", "--base-url", server.url, "--concurrency", "32",
                "--target", str(args.target), "-o", str(run_dir), *SHORT, *extra,
            ]  # fmt: skip
            results[name] = figures(run_dir, run_cli(cmd, env))
        assert server.alive() and not server.errors(), server.errors()[:3]
    finally:
        server.stop()
    for name, found in results.items():
        print(f"\n{name}:")
        for key, value in found.items():
            print(f"  {key}: {json.dumps(value)}")
    (work / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\nresults: {work / 'results.json'}")


if __name__ == "__main__":
    main()
