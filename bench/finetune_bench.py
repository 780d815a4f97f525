"""Fine-tuning throughput: our `finetune` vs a plain TRL SFTTrainer script, same model and data.

Usage: .venv/bin/python bench/finetune_bench.py [--steps 12] [--base-model PATH]

Examples are the paper's user-oriented tasks whose chat-formatted length is 120-180 tokens
(about 150, as in the reference measurement), batch 4, fp32 on CPU (bf16 on a GPU), LoRA r16 on
all linear layers. Both runs go through the same TRL version; the point is that our wrapper adds
no cost, and what a step costs here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from common import REPO

USER_ORIENTED = REPO.parent / "shared" / "data" / "user_oriented_instructions.jsonl"


def build_tasks(path: Path, tokenizer: object, want: int = 64) -> int:
    from selfinstruct.export import prompt_completion_row, to_examples
    from selfinstruct.records import read_tasks

    keep = []
    for example in to_examples(read_tasks(USER_ORIENTED)).examples:
        row = prompt_completion_row(example)
        ids = tokenizer.apply_chat_template(
            row["prompt"] + row["completion"], tokenize=True, return_dict=True
        )["input_ids"]
        if 120 <= len(ids) <= 180:
            keep.append(
                {
                    "instruction": example.prompt,
                    "instances": [{"input": "", "output": example.response}],
                }
            )
    keep = keep[:want]
    path.write_text("".join(json.dumps(k) + "\n" for k in keep))
    return len(keep)


def plain_trl(data: Path, base: str, steps: int, out: Path) -> tuple[float, int]:
    import datasets
    import torch
    import trl
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfinstruct.export import prompt_completion_row, to_examples
    from selfinstruct.records import read_tasks

    rows = [prompt_completion_row(e) for e in to_examples(read_tasks(data)).examples]
    gpu = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.bfloat16 if gpu else torch.float32
    )
    args = trl.SFTConfig(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=4,
        learning_rate=2e-4,
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=gpu,
        use_cpu=not gpu,
        max_length=1024,
        activation_checkpointing=gpu,
        include_num_input_tokens_seen=True,
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
    )
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start, int(trainer.state.num_input_tokens_seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--base-model", default=None)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from selfinstruct.finetune import FinetuneConfig, resolve_base_model, run_finetune

    base = resolve_base_model(args.base_model)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; base model {base}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "tasks.jsonl"
        n = build_tasks(data, AutoTokenizer.from_pretrained(base))
        print(f"{n} examples of 120-180 tokens, batch 4, {args.steps} steps")
        # A short warm-up run first, so neither side pays the process's first-step costs.
        run_finetune(
            FinetuneConfig(
                data=data,
                output_dir=Path(tmp) / "warm",
                base_model=base,
                max_steps=2,
                val_fraction=0.0,
                save_steps=10_000,
            )
        )
        wall, tokens = plain_trl(data, base, args.steps, Path(tmp) / "plain")
        print(
            f"  plain TRL SFTTrainer:  {wall / args.steps:.2f} s/step, {tokens / wall:.0f} tokens/s"
        )
        ours = run_finetune(
            FinetuneConfig(
                data=data,
                output_dir=Path(tmp) / "ours",
                base_model=base,
                max_steps=args.steps,
                val_fraction=0.0,
                logging_steps=1,
                save_steps=10_000,
            )
        )
        print(
            f"  selfinstruct finetune: {ours.wall_seconds / args.steps:.2f} s/step, "
            f"{ours.tokens_per_second:.0f} tokens/s, peak RSS {ours.peak_memory_mb:.0f} MB"
        )


if __name__ == "__main__":
    main()
