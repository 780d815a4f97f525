"""The local backend's linear layers on a CPU: plain `torch.nn.Linear` against oneDNN's layout.

    python bench/cpu_linear_bench.py [--dtype float32] [--parts matrices,batches]

`matrices`: the 211 weight products of one SmolLM2-135M forward pass (30 layers of q, k, v, o,
gate, up and down projections, and the 49,152-wide output layer), random weights, for 1 to 512
rows at a time (a decode step of 1-31 rows; a group of prompts read 512 positions a pass), plain
`F.linear` against the weights reordered once (`selfinstruct/backends/cpu_linear.py`).

`batches`: whole batches of the local backend on the bundled model (the same prompts, greedy),
with its layers as loaded and packed: reading the prompts alone (1 token written), then with
tokens written; the difference is the decode steps. Both backends are loaded before the first
batch and the batches alternate, so a machine that slows down costs both sides alike.

To see a CPU without AVX-512 on one that has it (a stand-in, not such a machine), set
`ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2`.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# SmolLM2-135M: hidden 576, 3 kv heads of 64, MLP 1536, vocabulary 49,152, 30 layers.
LAYER = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]
SHAPES = LAYER * 30 + [(49152, 576)]
# (rows, words of README text per prompt, tokens to write)
BATCHES = [(8, 300, 1), (8, 300, 61), (31, 450, 1), (31, 450, 41)]


def timed(run: Callable[[], object], repeat: int = 8) -> float:
    run()
    started = time.perf_counter()
    for _ in range(repeat):
        run()
    return (time.perf_counter() - started) / repeat


def matrices(dtype: str) -> None:
    import torch

    from selfinstruct.backends.cpu_linear import PackedLinear

    kind = getattr(torch, dtype)
    torch.manual_seed(0)
    plain = [torch.nn.Linear(k, n, bias=False, dtype=kind) for n, k in SHAPES]
    packed = [PackedLinear(layer, tied=False) for layer in plain]
    print(f"\n211 weight products of one forward pass, {dtype}")
    print("rows | plain | oneDNN layout | speed-up")
    print("--- | --- | --- | ---")
    for rows in (1, 8, 31, 128, 512):
        xs = [torch.randn(rows, k).to(kind) for _, k in SHAPES]
        with torch.no_grad():
            before, after = (
                timed(lambda xs=xs, ls=layers: [f(x) for f, x in zip(ls, xs, strict=True)])
                for layers in (plain, packed)
            )
        print(
            f"{rows} | {1e3 * before:.1f} ms | {1e3 * after:.1f} ms | {before / after:.2f}x",
            flush=True,
        )


def batches(dtype: str) -> None:
    from selfinstruct.backends import cpu_linear
    from selfinstruct.backends.local import LocalBackend
    from selfinstruct.config import LocalOptions, SamplingParams

    options = LocalOptions(dtype=dtype)
    packed = LocalBackend(None, options, chat=False)
    pack = cpu_linear.pack_linear_layers
    cpu_linear.pack_linear_layers = lambda model: 0  # type: ignore[assignment]
    try:
        plain = LocalBackend(None, options, chat=False)
    finally:
        cpu_linear.pack_linear_layers = pack  # type: ignore[assignment]
    words = (REPO / "README.md").read_text().split()
    print(f"\nthe local backend on the bundled model, {dtype}, greedy")
    print("rows x words | tokens written | plain | oneDNN layout | same text")
    print("--- | --- | --- | --- | ---")
    for rows, length, new in BATCHES:
        prompts = [" ".join(words[37 * i : 37 * i + length]) for i in range(rows)]
        params = SamplingParams(temperature=0.0, max_tokens=new, ignore_eos=True)
        for backend in (plain, packed):  # warm: the first batch of a process is slower
            backend.generate(prompts[:2], params.model_copy(update={"max_tokens": 2}))
        seconds, texts = [], []
        for backend in (plain, packed):
            started = time.perf_counter()
            texts.append([c.text for c in backend.generate(prompts, params)])
            seconds.append(time.perf_counter() - started)
        same = sum(a == b for a, b in zip(*texts, strict=True))
        print(
            f"{rows} x {length} | {new} | {seconds[0]:.2f} s | {seconds[1]:.2f} s | "
            f"{same} of {rows}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--parts", default="matrices,batches")
    args = parser.parse_args()
    capped = {
        k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ
    }
    cpu = platform.machine()
    info = Path("/proc/cpuinfo")
    if info.exists():
        names = [line for line in info.read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    print(f"machine: {cpu}, {os.cpu_count()} cores, {capped or 'no ISA cap'}")
    parts = args.parts.split(",")
    if "matrices" in parts:
        matrices(args.dtype)
    if "batches" in parts:
        batches(args.dtype)


if __name__ == "__main__":
    sys.exit(main())
