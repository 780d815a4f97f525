"""Generate benchmarks: openai-backend orchestration throughput, and the bundled model's speed.

Usage: .venv/bin/python bench/generate_bench.py [--delay 0.2] [--requests 256] [--skip-local]
       [--skip-orchestration] [--skip-raw]

(a) A loopback OpenAI-compatible server answers every request after a fixed delay; the backend
    sends N requests at concurrency 1, 8, 32 and 128. Ideal throughput is concurrency / delay.
(b) The bundled SmolLM2-135M on this machine's CPU: generation tokens per second by batch size
    and dtype, then the README demo (target 20) as it ran before the local backend took every
    waiting request in batches of up to 32 in bf16, and as it runs now.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_openai import FakeOpenAI  # the test server, reused

from selfinstruct.backends.base import SamplingParams
from selfinstruct.backends.openai_compat import OpenAIBackend
from selfinstruct.config import OpenAIOptions


def _serve(delay: float, port_queue: Any) -> None:
    server = FakeOpenAI(lambda body, n: [("ok", "fine")], delay=delay)
    port_queue.put(server.url)
    server.server.serve_forever()


def orchestration(delay: float, requests: int) -> None:
    """The server runs in its own process, so it does not share the client's GIL."""
    params = SamplingParams(max_tokens=16)
    ctx = mp.get_context("fork")
    urls = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(delay, urls), daemon=True)
    proc.start()
    url = urls.get()
    try:
        for concurrency in (1, 8, 32, 128):
            n = min(requests, max(16, concurrency * 4)) if concurrency == 1 else requests
            client = OpenAIBackend(
                "bench", OpenAIOptions(base_url=[url], concurrency=concurrency), chat=False
            )
            start = time.perf_counter()
            done = client.generate(["Task: go"] * n, params)
            elapsed = time.perf_counter() - start
            ok = sum(c.finish_reason != "error" for c in done)
            rate, ideal = ok / elapsed, concurrency / delay
            print(
                f"  concurrency {concurrency:>3}: {n} requests in {elapsed:.2f} s = "
                f"{rate:.1f} req/s, ideal {ideal:.1f} req/s, {100 * rate / ideal:.0f}% of ideal"
            )
    finally:
        proc.terminate()


def _demo(backend: Any, window: int) -> tuple[float, Any]:
    from selfinstruct.config import GenerateConfig
    from selfinstruct.generate import run_generate

    run_dir = Path(tempfile.mkdtemp())
    try:
        cfg = GenerateConfig.model_validate(
            {
                "run_dir": run_dir,
                "target_tasks": 20,
                "window": window,
                "instruction_sampling": {"max_tokens": 200},
                "instance_sampling": {"max_tokens": 120},
            }
        )
        start = time.perf_counter()
        summary = run_generate(cfg, backend)
        return time.perf_counter() - start, summary
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def local_model(skip_raw: bool) -> None:
    """Raw generation speed by batch and dtype, then the README demo before and after."""
    from selfinstruct.backends.local import LocalBackend
    from selfinstruct.models import native_bf16
    from selfinstruct.records import read_tasks
    from selfinstruct.stages import load_templates
    from selfinstruct.stages.instructions import render as render_instructions

    print(f"  native bf16 on this CPU: {native_bf16()}")
    seeds = read_tasks(Path(__file__).resolve().parents[1] / "seed_tasks" / "seed_tasks.jsonl")
    prompts = [
        render_instructions(
            load_templates(), [t.instruction for t in seeds[i : i + 8]], False, 8, structured=False
        )
        for i in range(0, 8 * 32, 8)
    ]
    params = SamplingParams(temperature=0.7, top_p=0.5, max_tokens=128, ignore_eos=True, seed=0)
    if not skip_raw:
        for dtype in ("float32", "bfloat16"):
            backend = LocalBackend(dtype=dtype)
            for batch in (1, 8, 32):
                backend.batch_size = batch
                backend.generated_tokens, backend.generation_seconds = 0, 0.0
                backend.generate(prompts[: max(batch, 2)], params)
                rate = backend.generated_tokens / backend.generation_seconds
                print(f"  {dtype}, batch {batch}: {rate:.1f} tokens/s (128 new tokens each)")
            backend.close()
    runs = [
        ("before: batches of 8, fp32, window 4", dict(batch_size=8, dtype="float32"), 4),
        ("after: defaults (batches up to 32, bf16 where native), window 8", {}, 8),
    ]
    for label, options, window in runs:
        backend = LocalBackend(**options)
        wall, summary = _demo(backend, window)
        stats = summary.backend
        print(
            f"  demo, {label} [{backend.dtype}]: {summary.accepted} accepted in {wall:.0f} s = "
            f"{wall / max(1, summary.accepted):.1f} s per task; {summary.requests} requests in "
            f"{stats.batches} batches (largest {stats.largest_batch}), "
            f"{backend.generated_tokens / max(backend.generation_seconds, 1e-9):.1f} tokens/s, "
            f"{summary.table1.classification_share:.0%} classification"
        )
        backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.2)
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("--skip-local", action="store_true")
    parser.add_argument("--skip-orchestration", action="store_true")
    parser.add_argument("--skip-raw", action="store_true", help="local: only the demo runs")
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    if not args.skip_orchestration:
        print(
            f"(a) openai backend vs a loopback server answering after {args.delay * 1000:.0f} ms:"
        )
        orchestration(args.delay, args.requests)
    if not args.skip_local:
        print("(b) bundled SmolLM2-135M on CPU:")
        local_model(args.skip_raw)


if __name__ == "__main__":
    main()
