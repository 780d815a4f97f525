"""A tiny Llama built from a config, with the bundled model's tokenizer (and chat template), for
the tests of training plumbing: launchers, checkpoints, resume, a killed job. They need a model
that trains and saves like the real one, not its weights; two layers of width 128 train in a
fraction of the bundled model's time (bench/BENCHMARKS.md, "CI time"). The tests that judge
what a model writes or learns keep the real one."""

from __future__ import annotations

from pathlib import Path


def build_tiny_model(target: Path) -> Path:
    """Write the tiny model (random weights, seed 0) and the bundled tokenizer to `target`."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from selfinstruct.models import converted_bundled_model

    tokenizer = AutoTokenizer.from_pretrained(str(converted_bundled_model()))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,  # a head size vLLM's CPU attention supports
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    return target
