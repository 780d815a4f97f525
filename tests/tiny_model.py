"""Tiny Llamas built from a config, no download. `build_tiny_model` pairs one with the bundled
model's tokenizer (and chat template), for the tests of training plumbing: launchers,
checkpoints, resume, a killed job. They need a model that trains and saves like the real one, not
its weights; two layers of width 128 train in a fraction of the bundled model's time
(bench/BENCHMARKS.md, "CI time"). The tests that judge what a model writes or learns keep the
real one."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_tiny_llama(tokenizer: Any, target: Path, **config: Any) -> Path:
    """A two-layer Llama sized for `tokenizer`, random weights (seed 0), saved with the tokenizer
    to `target`; `config` gives its width and anything else that differs from LlamaConfig's."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **config,
        )
    )
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target


def build_tiny_model(target: Path) -> Path:
    """The tiny model with the bundled tokenizer, written to `target`."""
    from transformers import AutoTokenizer

    from selfinstruct.models import converted_bundled_model

    tokenizer = AutoTokenizer.from_pretrained(str(converted_bundled_model()))
    return save_tiny_llama(
        tokenizer,
        target,
        hidden_size=128,
        intermediate_size=256,
        head_dim=64,  # a head size vLLM's CPU attention supports
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
