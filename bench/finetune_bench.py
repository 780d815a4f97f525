"""Fine-tuning throughput: `selfinstruct finetune` against a plain TRL script, on a realistic mix.

Usage:
  .venv/bin/python bench/finetune_bench.py                      # CPU, the bundled model
  .venv/bin/python bench/finetune_bench.py --device cuda        # GPU: bundled + 1B Llama, QLoRA
  .venv/bin/python bench/finetune_bench.py --device cuda --generate 64   # + local generate on CUDA

The examples are a deterministic draw from three public sets with very different lengths (the
paper's user-oriented tasks, its 175 seed tasks, T0 prompts), 20 to 1,024 chat tokens: real
instruction data, not one fixed length. Every run trains one epoch over the same examples with
LoRA r16 on all linear layers, batch 4, so tokens/s is the examples' own tokens (padding
excluded, counted here from the tokenized rows) over the training wall time.

Each run is a fresh subprocess (clean peak memory, no warm caches shared between runs):
- `plain TRL`: the script a user writes from TRL's docs: SFTTrainer with its defaults (padded
  random batches, sdpa, bf16 on a GPU, activation checkpointing as TRL defaults it) and fp32 on a
  CPU, which is also what `selfinstruct finetune` did before the speed settings;
- `selfinstruct finetune` with each speed setting forced, then with its defaults for the machine.

On a GPU the 1B model is Llama-3.2-1B's architecture built from a config in code with random
weights (no download; speed and memory do not depend on the values), with the bundled tokenizer.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO

SHARED = REPO.parent / "shared" / "data"
SOURCES = {
    "user_oriented": SHARED / "user_oriented_instructions.jsonl",
    "seed_tasks": SHARED / "self_instruct_seed_tasks.jsonl",
}
MAX_LENGTH = 1024
BATCH = 4


def _t0_tasks(n: int, rng: random.Random) -> list[dict[str, Any]]:
    with gzip.open(SHARED / "t0_prompts_55k.jsonl.gz", "rt", encoding="utf-8", newline="\n") as f:
        rows = [json.loads(line) for line in f.read().split("\n") if line.strip()]
    picked = rng.sample(rows, n)
    return [
        {"instruction": r["instruction"], "instances": [{"input": "", "output": r["output"]}]}
        for r in picked
    ]


def build_mix(path: Path, tokenizer: Any, n: int, seed: int = 0) -> dict[str, Any]:
    """Write `n` tasks of one instance each, a third from each source, and their token lengths."""
    from selfinstruct.export import prompt_completion_row, to_examples
    from selfinstruct.records import Task, read_tasks

    rng = random.Random(seed)
    per = n // 3
    tasks: list[dict[str, Any]] = []
    for source in SOURCES.values():
        pool = []
        for task in read_tasks(source):
            for inst in task.instances:
                pool.append(
                    {"instruction": task.instruction, "instances": [inst.model_dump(mode="json")]}
                )
        tasks += rng.sample(pool, per)
    tasks += _t0_tasks(n - len(tasks), rng)
    rng.shuffle(tasks)
    for i, task in enumerate(tasks):
        task["id"] = f"mix-{i}"
    lengths = []
    for task in tasks:
        example = to_examples([Task.model_validate(task)], 0, None).examples[0]
        row = prompt_completion_row(example)
        ids = tokenizer.apply_chat_template(
            row["prompt"] + row["completion"], tokenize=True, return_dict=True
        )["input_ids"]
        lengths.append(min(len(ids), MAX_LENGTH))
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    ordered = sorted(lengths)
    return {
        "examples": len(tasks),
        "tokens": sum(lengths),
        "min": ordered[0],
        "median": ordered[len(ordered) // 2],
        "p90": ordered[int(len(ordered) * 0.9)],
        "max": ordered[-1],
    }


def build_llama_1b(out: Path, tokenizer_from: str) -> str:
    """Llama-3.2-1B's shape with random weights, saved with the bundled tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=64,
        vocab_size=128256,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=True,
        torch_dtype="bfloat16",
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(out)
    return str(out)


# --- one run, in a child process -------------------------------------------------------------


def _peak_mb(torch: Any, gpu: bool) -> float:
    import resource

    if gpu:
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_plain(spec: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    import datasets
    import torch
    import trl
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from selfinstruct.export import prompt_completion_row, to_examples
    from selfinstruct.records import read_tasks

    gpu = spec["device"] == "cuda"
    rows = [
        prompt_completion_row(e) for e in to_examples(read_tasks(spec["data"]), 0, None).examples
    ]
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    quant = None
    if spec.get("qlora"):
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    model = AutoModelForCausalLM.from_pretrained(
        spec["model"], dtype=torch.bfloat16 if gpu else torch.float32, quantization_config=quant
    )
    first: dict[str, float] = {}

    class FirstStep(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            first.setdefault("t", time.perf_counter() - started)

    args = trl.SFTConfig(
        output_dir=spec["out"],
        num_train_epochs=1,
        per_device_train_batch_size=BATCH,
        learning_rate=2e-4,
        save_strategy="no",
        report_to="none",
        max_length=MAX_LENGTH,
        bf16=gpu,
        use_cpu=not gpu,
        seed=0,
    )
    trainer = trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=16,
            lora_alpha=32,
            lora_dropout=0.05,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
        callbacks=[FirstStep()],
    )
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    train_started = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - train_started
    return {
        "wall": wall,
        "first_step": first.get("t"),
        "peak_mb": _peak_mb(torch, gpu),
        "steps": trainer.state.global_step,
        "loss": trainer.state.log_history[-1].get("train_loss"),
    }


def run_ours(spec: dict[str, Any]) -> dict[str, Any]:
    from selfinstruct.config import FinetuneConfig
    from selfinstruct.finetune import run_finetune

    summary = run_finetune(
        FinetuneConfig(
            data=Path(spec["data"]),
            output_dir=Path(spec["out"]),
            base_model=spec["model"],
            device=spec["device"],
            epochs=1,
            batch_size=BATCH,
            learning_rate=2e-4,
            max_length=MAX_LENGTH,
            val_fraction=0.0,
            save_steps=100_000,
            logging_steps=10,
            qlora=bool(spec.get("qlora")),
            **spec.get("options", {}),
        )
    )
    return {
        "wall": summary.wall_seconds,
        "first_step": summary.seconds_to_first_step,
        "peak_mb": summary.peak_memory_mb,
        "steps": summary.steps,
        "loss": summary.train_loss[-1]["loss"] if summary.train_loss else None,
        "settings": summary.settings,
    }


def child(spec_json: str) -> None:
    spec = json.loads(spec_json)
    result = run_plain(spec) if spec["kind"] == "plain" else run_ours(spec)
    print("RESULT " + json.dumps(result))


# --- the parent: runs and the table ----------------------------------------------------------


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-6000:])
    return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}


def row(label: str, result: dict[str, Any], tokens: int) -> str:
    if "error" in result:
        return f"| {label} | failed: {result['error'][:120]} | | | |"
    first = f"{result['first_step']:.1f} s" if result.get("first_step") else "-"
    return (
        f"| {label} | {tokens / result['wall']:.0f} | {result['wall']:.0f} s | {first} "
        f"| {result['peak_mb'] / 1024:.2f} GB |"
    )


def table(model_label: str, runs: list[tuple[str, dict[str, Any]]], spec: dict[str, Any]) -> None:
    tokens = spec["mix"]["tokens"]
    print(f"\n{model_label}")
    print("| run | tokens/s (no padding) | train time | first step | peak memory |")
    print("| --- | --- | --- | --- | --- |")
    for label, result in runs:
        print(row(label, result, tokens))
        if "settings" in result:
            print(f"|   settings: {json.dumps(result['settings'])} | | | | |")


def compare(model: str, label: str, base: dict[str, Any], gpu: bool, tmp: Path) -> None:
    runs: list[tuple[str, dict[str, Any]]] = []

    def go(name: str, kind: str, **extra: Any) -> None:
        spec = {**base, "model": model, "kind": kind, "out": str(tmp / f"{len(runs)}"), **extra}
        print(f"  running: {name}", file=sys.stderr, flush=True)
        runs.append((name, run_child(spec)))

    go("plain TRL script", "plain")
    if not gpu:
        go(
            "ours, padded, random order, fp32 (before)",
            "ours",
            options={"padding_free": False, "group_by_length": False, "bf16": False},
        )
        go(
            "ours, padded, grouped by length, fp32",
            "ours",
            options={"padding_free": False, "group_by_length": True, "bf16": False},
        )
        go("ours, padding-free, fp32", "ours", options={"padding_free": True, "bf16": False})
    go("selfinstruct finetune, defaults", "ours")
    if gpu and base.get("qlora_ok"):
        go("plain TRL script, QLoRA", "plain", qlora=True)
        go("selfinstruct finetune --qlora", "ours", qlora=True)
    table(label, runs, base)


def generate_on_cuda(n_tasks: int, tmp: Path) -> None:
    from selfinstruct.config import GenerateConfig
    from selfinstruct.generate import run_generate

    summary = run_generate(
        GenerateConfig(run_dir=tmp / "gen", backend="local", device="cuda", target_tasks=n_tasks)
    )
    print(
        f"\nlocal generate on CUDA (bundled model): {summary.accepted} tasks in "
        f"{summary.seconds:.0f} s, {summary.requests} requests, {summary.completion_tokens} "
        f"completion tokens = {summary.completion_tokens / max(summary.seconds, 1e-9):.0f} tok/s; "
        f"backend: {summary.backend.model_dump_json()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--examples", type=int, default=96, help="tasks in the length mix")
    parser.add_argument("--base-model", default=None, help="default: the bundled model")
    parser.add_argument("--no-1b", action="store_true", help="GPU: skip the 1B Llama")
    parser.add_argument("--generate", type=int, default=0, help="GPU: tasks for a local generate")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    import importlib.util

    import torch
    from transformers import AutoTokenizer

    from selfinstruct.models import native_bf16, resolve_model

    gpu = args.device == "cuda"
    if gpu and not torch.cuda.is_available():
        sys.exit("--device cuda: this machine has no GPU")
    base = resolve_model(args.base_model, "base model")
    where = torch.cuda.get_device_name(0) if gpu else f"{os.cpu_count()} CPU cores"
    print(
        f"machine: {platform.machine()}, {where}; native bf16 CPU: {native_bf16()}; "
        f"torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = tmp / "mix.jsonl"
        mix = build_mix(data, AutoTokenizer.from_pretrained(base), args.examples)
        print(
            f"length mix: {mix['examples']} examples, {mix['tokens']} tokens, chat-token length "
            f"min {mix['min']} / median {mix['median']} / p90 {mix['p90']} / max {mix['max']}; "
            f"batch {BATCH}, one epoch, LoRA r16 all-linear"
        )
        spec = {
            "data": str(data),
            "device": args.device,
            "mix": mix,
            "qlora_ok": gpu and importlib.util.find_spec("bitsandbytes") is not None,
        }
        compare(base, f"model: {base}", spec, gpu, tmp / "bundled")
        if gpu and not args.no_1b:
            llama = build_llama_1b(tmp / "llama-1b", base)
            compare(llama, "model: Llama-3.2-1B shape, random weights", spec, gpu, tmp / "1b")
        if gpu and args.generate:
            generate_on_cuda(args.generate, tmp)


if __name__ == "__main__":
    main()
