"""Finetune hands TRL each option under one declared name, and what TRL makes of it is checked:
the value a user sets must mean in TRL what the option's help says it means."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from selfinstruct.config import FinetuneConfig
from selfinstruct.errors import SelfInstructError

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("trl") is None, reason="fine-tuning extras are not installed"
)

SETTINGS = {
    "attn_implementation": "sdpa",
    "padding_free": True,
    "group_by_length": False,
    "bf16": False,
    "liger": False,
    "activation_checkpointing": False,
}


def _args(cfg: FinetuneConfig) -> Any:
    import trl

    from selfinstruct.finetune import sft_fields

    return trl.SFTConfig(**sft_fields(trl, cfg, SETTINGS, on_gpu=False, has_validation=True))


def test_every_declared_field_exists_in_trl() -> None:
    import trl

    from selfinstruct.finetune import FIXED_SFT, declared_trl_fields

    declared = declared_trl_fields()
    assert {"learning_rate", "warmup_ratio", "epochs", "batch_size", "seed"} <= set(declared)
    known = set(trl.SFTConfig.__dataclass_fields__)
    for option, targets in declared.items():
        assert set(targets) <= known, option
    assert set(FIXED_SFT) <= known


def test_each_option_means_in_trl_what_its_help_says(tmp_path: Path) -> None:
    cfg = FinetuneConfig(
        data=tmp_path,
        output_dir=tmp_path / "ft",
        learning_rate=3e-4,
        lr_scheduler="linear",
        warmup_ratio=0.1,
        epochs=2.5,
        max_length=333,
        batch_size=3,
        grad_accum=2,
        logging_steps=7,
        save_steps=11,
        seed=5,
    )
    args = _args(cfg)
    # A share of all steps: 10% of 1,000 steps is 100 warmup steps, of 40 it is 4.
    assert args.get_warmup_steps(1000) == 100
    assert args.get_warmup_steps(40) == math.ceil(0.1 * 40)
    assert args.learning_rate == 3e-4 and getattr(args.lr_scheduler_type, "value", None) == "linear"
    assert args.num_train_epochs == 2.5 and args.max_steps == -1  # by epochs
    assert args.max_length == 333
    assert args.per_device_train_batch_size == 3 and args.per_device_eval_batch_size == 3
    assert args.gradient_accumulation_steps == 2
    assert args.logging_steps == 7 and args.eval_steps == 7 and args.save_steps == 11
    assert args.seed == 5 and args.completion_only_loss is True
    assert _args(cfg.model_copy(update={"max_steps": 9})).max_steps == 9


def test_default_warmup_is_three_percent_of_the_steps(tmp_path: Path) -> None:
    args = _args(FinetuneConfig(data=tmp_path, output_dir=tmp_path / "ft"))
    assert args.get_warmup_steps(200) == 6  # not 0.03 of one step


def test_a_field_trl_does_not_know_is_refused(tmp_path: Path) -> None:
    import trl

    from selfinstruct.finetune import sft_fields

    fields = dict(trl.SFTConfig.__dataclass_fields__)
    del fields["warmup_steps"]
    old_trl = SimpleNamespace(
        SFTConfig=SimpleNamespace(__dataclass_fields__=fields), __version__="0.0"
    )
    cfg = FinetuneConfig(data=tmp_path, output_dir=tmp_path / "ft")
    with pytest.raises(SelfInstructError, match="no SFTConfig field warmup_steps"):
        sft_fields(old_trl, cfg, SETTINGS, on_gpu=False, has_validation=False)


def test_a_checkpoint_cut_short_is_not_resumed_from(tmp_path: Path) -> None:
    """A kill while the trainer saves leaves a folder without its state: resuming from it
    failed ("Can't find a valid checkpoint"); the last whole one is used instead."""
    from selfinstruct.finetune import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "none") is None
    for step, state in ((5, "{}"), (10, '{"global_step": 10}'), (15, None), (20, '{"glob')):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"")
        if state is not None:  # 15: killed before its state; 20: killed while writing it
            (folder / "trainer_state.json").write_text(state)
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")
