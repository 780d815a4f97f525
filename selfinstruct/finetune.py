"""LoRA fine-tuning: tasks → prompt/completion rows → TRL SFTTrainer with a PEFT LoraConfig.

Rows are conversational prompt/completion pairs, so TRL applies the model's chat template and
puts the loss on the response tokens only (the instruction-tuning loss the seeds describe). The
output directory holds the trainer's checkpoints (the same command resumes from the last one),
`adapter/` (LoRA weights and tokenizer, safetensors), `merged/` with `--merge`, and
`training_summary.json`. Multi-GPU runs go through `accelerate launch` or `torchrun` (README).
"""

from __future__ import annotations

import resource
import time
from typing import Any

from pydantic import BaseModel

from selfinstruct.atomic import write_json_atomic
from selfinstruct.config import FinetuneConfig
from selfinstruct.errors import SelfInstructError
from selfinstruct.export import prompt_completion_row, source_tasks, to_examples
from selfinstruct.models import resolve_model, training_imports


class TrainingSummary(BaseModel):
    output_dir: str
    base_model: str
    examples: int
    train_examples: int
    validation_examples: int
    steps: int
    train_loss: list[dict[str, float]]
    validation_loss: list[dict[str, float]]
    tokens_seen: int
    tokens_per_second: float
    peak_memory_mb: float
    wall_seconds: float
    device: str
    resumed_from: str | None
    config: dict[str, Any]


def _device(cfg: FinetuneConfig, torch: Any) -> str:
    has_gpu = torch.cuda.is_available()
    device = cfg.device or ("cuda" if has_gpu else "cpu")
    if device.startswith("cuda") and not has_gpu:
        raise SelfInstructError("--device cuda was asked for, but this machine has no GPU")
    if cfg.qlora and not device.startswith("cuda"):
        raise SelfInstructError("--qlora needs a GPU (4-bit bitsandbytes kernels); drop it on CPU")
    return device


def _checkpointing(trl: Any, enabled: bool) -> dict[str, bool]:
    # transformers 5.2x renamed gradient_checkpointing to activation_checkpointing; TRL's own
    # default for the old name is True, so the setting must go under the name in force.
    fields = trl.SFTConfig.__dataclass_fields__
    name = (
        "activation_checkpointing"
        if "activation_checkpointing" in fields
        else ("gradient_checkpointing")
    )
    return {name: enabled}


def run_finetune(cfg: FinetuneConfig) -> TrainingSummary:
    torch, transformers, peft, trl, datasets = training_imports()
    device = _device(cfg, torch)
    on_gpu = device.startswith("cuda")
    examples = to_examples(source_tasks(cfg.data), cfg.seed, cfg.max_per_task).examples
    if not examples:
        raise SelfInstructError(
            f"{cfg.data}: no task has an instance, so there is nothing to "
            "train on; generate or filter more tasks first"
        )
    base = resolve_model(cfg.base_model, "base model")
    rows = [prompt_completion_row(e) for e in examples]
    dataset = datasets.Dataset.from_list(rows)
    n_val = int(len(rows) * cfg.val_fraction)
    if n_val >= 1 and len(rows) - n_val >= 1:
        split = dataset.train_test_split(test_size=n_val, seed=cfg.seed)
        train, val = split["train"], split["test"]
    else:
        train, val = dataset, None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(base)
        quant = None
        if cfg.qlora:
            quant = transformers.BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
            )
        model = transformers.AutoModelForCausalLM.from_pretrained(
            base, dtype=torch.bfloat16 if on_gpu else torch.float32, quantization_config=quant
        )
    except OSError as exc:
        raise SelfInstructError(
            f"cannot load base model {base!r} ({exc}); nothing is downloaded "
            "at run time, so give a local path or a cached model"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lora = peft.LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        # PEFT reads the single name "all-linear" as every linear layer but the output head.
        target_modules=(
            "all-linear" if cfg.target_modules == ["all-linear"] else cfg.target_modules
        ),
        task_type="CAUSAL_LM",
    )
    checkpointing = on_gpu if cfg.gradient_checkpointing is None else cfg.gradient_checkpointing
    args = trl.SFTConfig(
        output_dir=str(cfg.output_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=2,
        eval_strategy="steps" if val is not None else "no",
        eval_steps=cfg.logging_steps,
        max_length=cfg.max_length,
        completion_only_loss=True,
        bf16=on_gpu,
        **_checkpointing(trl, checkpointing),
        use_cpu=not on_gpu,
        report_to="none",
        seed=cfg.seed,
        include_num_input_tokens_seen=True,
        dataloader_num_workers=0,
    )
    trainer = trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        processing_class=tokenizer,
        peft_config=lora,
    )
    last = (
        transformers.trainer_utils.get_last_checkpoint(str(cfg.output_dir))
        if cfg.output_dir.exists()
        else None
    )
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    wall = time.perf_counter() - started
    adapter_dir = cfg.output_dir / "adapter"
    trainer.save_model(str(adapter_dir))
    tokenizer.save_pretrained(str(adapter_dir))
    if cfg.merge:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(cfg.output_dir / "merged"))
        tokenizer.save_pretrained(str(cfg.output_dir / "merged"))
    history = trainer.state.log_history
    tokens = int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if on_gpu
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    summary = TrainingSummary(
        output_dir=str(cfg.output_dir),
        base_model=base,
        examples=len(rows),
        train_examples=len(train),
        validation_examples=len(val) if val is not None else 0,
        steps=trainer.state.global_step,
        train_loss=[{"step": h["step"], "loss": h["loss"]} for h in history if "loss" in h],
        validation_loss=[
            {"step": h["step"], "loss": h["eval_loss"]} for h in history if "eval_loss" in h
        ],
        tokens_seen=tokens,
        tokens_per_second=tokens / wall if wall > 0 else 0.0,
        peak_memory_mb=round(peak, 1),
        wall_seconds=round(wall, 2),
        device=device,
        resumed_from=last,
        config=cfg.model_dump(mode="json"),
    )
    write_json_atomic(cfg.output_dir / "training_summary.json", summary.model_dump(mode="json"))
    return summary
