"""LoRA fine-tuning: tasks → prompt/completion rows → TRL SFTTrainer with a PEFT LoraConfig.

Rows are conversational prompt/completion pairs, so TRL applies the model's chat template and
puts the loss on the response tokens only (the instruction-tuning loss the seeds describe). The
output directory holds the trainer's checkpoints (the same command resumes from the last one),
`adapter/` (LoRA weights and tokenizer, safetensors), `merged/` with `--merge`, and
`training_summary.json`.

Several processes train as data parallel when a launcher starts them as one job: `torchrun
--nproc_per_node N`, or `accelerate launch --multi_gpu --num_processes N` (on a CPU too: the
processes then talk over gloo). Each reads its own share of every batch, rank 0 alone writes the
adapter, the merged model and the summary, and the summary says how many processes trained and
what each one read. A launch that starts several processes that would not train together (each
alone, into one folder), or one process where several were asked for (`accelerate launch --cpu
--num_processes N` without mpirun), is refused before anything is loaded.

Speed, chosen per machine (`speed_settings`, each choice written into the summary):
- padding-free batches (the examples of a batch in one row, no padding) where the attention
  keeps them apart: FlashAttention (varlen kernels) on a GPU, or transformers' block-diagonal
  mask built from restarting position ids, which needs the KV cache off (a test compares the
  losses with and without padding-free); otherwise padded batches of similar length
  (`group_by_length`), which wastes less on padding than random batches;
- bf16 on a GPU and on CPUs with native bf16 (AVX512-BF16 or AMX), fp32 elsewhere;
- Liger's fused kernels when the package is installed (GPU);
- activation checkpointing on a GPU, with the input gradients LoRA needs through it.
"""

from __future__ import annotations

import hashlib
import os
import resource
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from selfinstruct import prompt_format
from selfinstruct.atomic import write_json_atomic
from selfinstruct.config import FinetuneConfig
from selfinstruct.errors import SelfInstructError
from selfinstruct.export import source_tasks, to_examples
from selfinstruct.models import TRAINING_HINT, native_bf16, resolve_model, training_imports


class TrainingSummary(BaseModel):
    output_dir: str
    base_model: str
    tasks: int = 0  # tasks read from the data (after --max-tasks)
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
    seconds_to_first_step: float | None  # from the command's start, model loading included
    device: str
    world_size: int  # processes that trained together (data parallel)
    # Distinct training examples each process read in its first epoch, and how many of them
    # more than one process read (0: each read its own share).
    first_epoch_examples_per_rank: list[int]
    first_epoch_examples_on_several_ranks: int
    resumed_from: str | None
    prompt_format: str  # how prompts were laid out (chat, alpaca, paper): eval must use the same
    settings: dict[str, Any]  # what speed_settings chose on this machine
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


# What every run hands TRL whatever the options say, each with its reason. The options that do
# reach TRL name their field where they are declared (`option(trl=...)` in config/commands.py).
FIXED_SFT: dict[str, Any] = {
    "save_total_limit": 2,  # one checkpoint to resume from, and the one before it
    "completion_only_loss": True,  # instruction tuning: the loss on the answer only
    "report_to": "none",  # a batch job reaches no tracker unless it is asked to
    # Tokens that are not padding: the throughput a user gets, whatever the batching.
    "include_num_input_tokens_seen": "non_padding",
    "dataloader_num_workers": 0,  # the rows are tokenized up front; workers only add start-up
    # Every LoRA weight takes part in every step: looking for unused ones costs a graph walk.
    "ddp_find_unused_parameters": False,
}


def declared_trl_fields() -> dict[str, list[str]]:
    """Each finetune option that TRL receives, and the SFTConfig field(s) it goes to."""
    found = {}
    for name, field in FinetuneConfig.model_fields.items():
        extra = field.json_schema_extra
        if isinstance(extra, dict) and extra.get("trl"):
            found[name] = list(extra["trl"])  # type: ignore[arg-type]
    return found


def sft_fields(
    trl: Any, cfg: FinetuneConfig, settings: dict[str, Any], on_gpu: bool, has_validation: bool
) -> dict[str, Any]:
    """The SFTConfig arguments: the declared options (None leaves TRL's default), the fixed
    ones, and what speed_settings chose; a field this TRL does not know is refused."""
    fields: dict[str, Any] = {}
    for name, targets in declared_trl_fields().items():
        value = getattr(cfg, name)
        if value is not None:
            fields.update(dict.fromkeys(targets, value))
    fields.update(FIXED_SFT)
    fields.update(
        output_dir=str(cfg.output_dir),
        eval_strategy="steps" if has_validation else "no",
        bf16=settings["bf16"],
        train_sampling_strategy="group_by_length" if settings["group_by_length"] else "random",
        use_liger_kernel=settings["liger"],
        use_cpu=not on_gpu,
        **_checkpointing(trl, settings["activation_checkpointing"]),
    )
    unknown = sorted(set(fields) - set(trl.SFTConfig.__dataclass_fields__))
    if unknown:
        raise SelfInstructError(
            f"this TRL ({getattr(trl, '__version__', '?')}) has no SFTConfig field "
            f"{', '.join(unknown)}; install the TRL selfinstruct supports: {TRAINING_HINT}"
        )
    return fields


# Who started this process, and how many of them: torch.distributed launchers (torchrun,
# accelerate) set WORLD_SIZE; MPI launchers their own (accelerate joins those up itself);
# srun sets SLURM_STEP_NUM_TASKS, which nothing joins up.
_MPI_SIZE = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
_LAUNCHED_SIZE = ("WORLD_SIZE", *_MPI_SIZE, "SLURM_STEP_NUM_TASKS")


def launched_processes() -> int:
    """How many processes the launcher that started this one says there are (1 without)."""
    for name in _LAUNCHED_SIZE:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def first_process() -> bool:
    """Is this the first (or only) process of a launch?"""
    for name in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value) == 0
    return True


def check_launch() -> None:
    """Refuse a launch whose processes would not train together; before anything loads."""
    joined = "WORLD_SIZE" in os.environ or any(name in os.environ for name in _MPI_SIZE)
    if launched_processes() > 1 and not joined:
        check_world(launched_processes(), 1, "the same output folder")
    if (
        os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true"
        and "MASTER_ADDR" in os.environ
        and launched_processes() == 1
    ):
        # accelerate launch --cpu --num_processes N: without mpirun it starts one process.
        raise SelfInstructError(
            "accelerate launch --cpu starts one process however many --num_processes asks for "
            "(more need mpirun), so this would train alone. For data parallel on a CPU use "
            "`accelerate launch --multi_gpu --num_processes N` (the processes talk over gloo) "
            "or `torchrun --nproc_per_node N`; for one process, drop --num_processes"
        )


def check_world(launched: int, world_size: int, output_dir: object) -> None:
    if launched > 1 and world_size != launched:
        raise SelfInstructError(
            f"{launched} processes were started, but they do not train together (world size "
            f"{world_size}): each would train alone and write {output_dir} at the same time. "
            "Start them with torchrun --nproc_per_node N or accelerate launch --multi_gpu "
            "--num_processes N"
        )


class _ShareRecorder:
    """Wraps the trainer's collator to note which training examples this process read in its
    first epoch, to show in the summary that each process read its own share."""

    def __init__(self, collator: Any, train_ids: list[list[int]]) -> None:
        self.collator = collator
        self.train = {_example_key(ids) for ids in train_ids}
        self.seen: set[str] = set()
        self.active = True

    def __call__(self, features: list[dict[str, Any]]) -> Any:
        if self.active:
            for feature in features:
                key = _example_key(feature.get("input_ids", []))
                if key in self.train:
                    self.seen.add(key)
        return self.collator(features)


def _example_key(ids: Any) -> str:
    return hashlib.sha1(repr(list(ids)).encode()).hexdigest()[:16]


def _shares(torch: Any, recorder: _ShareRecorder) -> tuple[list[int], int]:
    """Examples read per process in the first epoch, and those read by more than one."""
    dist = torch.distributed
    sets = [recorder.seen]
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        sets = [set()] * dist.get_world_size()
        dist.all_gather_object(sets, recorder.seen)  # every process takes part
    counts: dict[str, int] = {}
    for seen in sets:
        for key in seen:
            counts[key] = counts.get(key, 0) + 1
    return [len(s) for s in sets], sum(1 for c in counts.values() if c > 1)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def speed_settings(cfg: FinetuneConfig, on_gpu: bool) -> dict[str, Any]:
    """The fastest correct settings for this machine; the config can force each one."""
    flash = on_gpu and _installed("flash_attn")
    attn = cfg.attn_implementation or ("flash_attention_2" if flash else "sdpa")
    # Without FlashAttention, padding-free relies on a dense block-diagonal mask: correct (see
    # the loss test) but quadratic in the packed length, which a GPU feels and a CPU does not.
    padding_free = cfg.padding_free if cfg.padding_free is not None else (flash or not on_gpu)
    return {
        "attn_implementation": attn,
        "padding_free": padding_free,
        "group_by_length": cfg.group_by_length and not padding_free,
        "bf16": cfg.bf16 if cfg.bf16 is not None else (on_gpu or native_bf16()),
        "liger": cfg.liger if cfg.liger is not None else (on_gpu and _installed("liger_kernel")),
        "activation_checkpointing": (
            on_gpu if cfg.gradient_checkpointing is None else cfg.gradient_checkpointing
        ),
    }


def load_for_training(
    base: str, cfg: FinetuneConfig, settings: dict[str, Any], torch: Any, transformers: Any
) -> tuple[Any, Any]:
    """The base model and tokenizer, ready for LoRA training with `settings`."""
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(base)
        quant = None
        if cfg.qlora:
            quant = transformers.BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
            )
        model = transformers.AutoModelForCausalLM.from_pretrained(
            base,
            dtype=torch.bfloat16 if settings["bf16"] else torch.float32,
            quantization_config=quant,
            attn_implementation=settings["attn_implementation"],
        )
    except OSError as exc:
        raise SelfInstructError(
            f"cannot load base model {base!r} ({exc}); nothing is downloaded "
            "at run time, so give a local path or a cached model"
        ) from None
    except ImportError as exc:  # e.g. flash_attention_2 asked for without flash-attn
        raise SelfInstructError(
            f"cannot load {base!r} with attention {settings['attn_implementation']!r}: {exc}"
        ) from None
    # Training never reads the cache, and with it on, the packed (padding-free) rows would
    # attend across example boundaries instead of getting a block-diagonal mask.
    model.config.use_cache = False
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _padding_free_collator(tokenizer: Any) -> Any:
    # TRL's own padding-free collator (position ids restart per example). Passed in rather than
    # through SFTConfig.padding_free, which refuses max_length without packing: the packed row is
    # not bounded by it, but each example still is (TRL truncates them while preparing the data).
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)


def _first_step_clock(transformers: Any, started: float) -> tuple[Any, dict[str, float]]:
    seen: dict[str, float] = {}

    class FirstStep(transformers.TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seen.setdefault("first", time.perf_counter() - started)

    return FirstStep(), seen


def _first_epoch_only(transformers: Any, recorder: _ShareRecorder) -> Any:
    class FirstEpoch(transformers.TrainerCallback):
        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            recorder.active = False

        def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            recorder.active = recorder.active and state.epoch < 1

    return FirstEpoch()


# The trainer writes a checkpoint's weights, optimizer and scheduler first and its state last;
# a folder without the state was cut short (killed while saving) and cannot be resumed from.
_CHECKPOINT_STATE = "trainer_state.json"


def last_complete_checkpoint(output_dir: Path) -> str | None:
    """The newest checkpoint that was written whole, or None."""
    found = []
    for folder in output_dir.glob("checkpoint-*") if output_dir.exists() else []:
        step = folder.name.removeprefix("checkpoint-")
        if step.isdigit() and _whole_state(folder / _CHECKPOINT_STATE):
            found.append((int(step), folder))
    return str(max(found)[1]) if found else None


def _whole_state(path: Path) -> bool:
    """The state file is there and reads as JSON (a kill while writing it leaves it cut)."""
    import json

    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


def _note_in_card(card: Path, fmt: str) -> None:
    """PEFT writes a model card beside the adapter; it says how to prompt the tuned model."""
    note = (
        f"\n## Prompt format\n\nTrained by selfinstruct with the `{fmt}` prompt format "
        f"(`selfinstruct eval` and `finetune --prompt-format {fmt}` use the same layout).\n"
    )
    text = card.read_text(encoding="utf-8") if card.exists() else ""
    if "## Prompt format" not in text:
        card.write_text(text + note, encoding="utf-8")


def run_finetune(cfg: FinetuneConfig) -> TrainingSummary:
    command_started = time.perf_counter()
    check_launch()
    torch, transformers, peft, trl, datasets = training_imports()
    device = _device(cfg, torch)
    on_gpu = device.startswith("cuda")
    tasks = source_tasks(cfg.data)[: cfg.max_tasks]
    examples = to_examples(tasks, cfg.seed, cfg.max_per_task).examples
    if not examples:
        raise SelfInstructError(
            f"{cfg.data}: no task has an instance, so there is nothing to "
            "train on; generate or filter more tasks first"
        )
    base = resolve_model(cfg.base_model, "base model")
    settings = speed_settings(cfg, on_gpu)
    model, tokenizer = load_for_training(base, cfg, settings, torch, transformers)
    fmt = prompt_format.resolve(cfg.prompt_format, tokenizer, base)
    rows = [prompt_format.training_row(fmt, e) for e in examples]
    dataset = datasets.Dataset.from_list(rows)
    n_val = int(len(rows) * cfg.val_fraction)
    if n_val >= 1 and len(rows) - n_val >= 1:
        split = dataset.train_test_split(test_size=n_val, seed=cfg.seed)
        train, val = split["train"], split["test"]
    else:
        train, val = dataset, None
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
    args = trl.SFTConfig(**sft_fields(trl, cfg, settings, on_gpu, has_validation=val is not None))
    check_world(launched_processes(), args.world_size, cfg.output_dir)
    clock, first_step = _first_step_clock(transformers, command_started)
    trainer = trl.SFTTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=val,
        processing_class=tokenizer,
        peft_config=lora,
        data_collator=_padding_free_collator(tokenizer) if settings["padding_free"] else None,
        callbacks=[clock],
    )
    recorder = _ShareRecorder(trainer.data_collator, trainer.train_dataset["input_ids"])
    trainer.data_collator = recorder
    trainer.add_callback(_first_epoch_only(transformers, recorder))
    last = last_complete_checkpoint(cfg.output_dir)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    wall = time.perf_counter() - started
    per_rank, shared = _shares(torch, recorder)
    adapter_dir = cfg.output_dir / "adapter"
    trainer.save_model(str(adapter_dir))  # every process calls it; the trainer lets one write
    first = trainer.is_world_process_zero()
    if first:
        tokenizer.save_pretrained(str(adapter_dir))
        prompt_format.record(adapter_dir, fmt)
        _note_in_card(adapter_dir / "README.md", fmt)
    if cfg.merge and first:
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
        tasks=len(tasks),
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
        seconds_to_first_step=(round(first_step["first"], 2) if "first" in first_step else None),
        device=device,
        world_size=args.world_size,
        first_epoch_examples_per_rank=per_rank,
        first_epoch_examples_on_several_ranks=shared,
        resumed_from=last,
        prompt_format=fmt,
        settings=settings,
        config=cfg.model_dump(mode="json"),
    )
    if first:
        write_json_atomic(cfg.output_dir / "training_summary.json", summary.model_dump(mode="json"))
    return summary
