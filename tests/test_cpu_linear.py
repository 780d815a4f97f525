"""Linear layers in oneDNN's layout (selfinstruct/backends/cpu_linear.py): they compute what the
plain layers compute, keep a tied weight shared, and leave alone what they cannot serve."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from selfinstruct.backends.cpu_linear import PackedLinear, pack_linear_layers, packable  # noqa: E402

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN"
)


def tiny_llama(**config: Any) -> Any:
    """Two layers with biases on the attention projections and the output layer tied to the
    embeddings, so both kinds of weight are covered; random weights, seed 0."""
    torch.manual_seed(0)
    settings = {
        "vocab_size": 300,
        "hidden_size": 64,
        "intermediate_size": 160,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "attention_bias": True,
        "tie_word_embeddings": True,
        **config,
    }
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**settings)).eval()
    with torch.no_grad():
        for module in model.modules():  # transformers starts biases at zero: a lost one would pass
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0, 0.5)
    return model


def plain_linears(model: Any) -> int:
    return sum(type(m) is torch.nn.Linear for m in model.modules())


def test_packed_layers_compute_what_the_plain_ones_do() -> None:
    model = tiny_llama()
    plain = copy.deepcopy(model)
    count = plain_linears(model)
    assert count == 2 * 7 + 1
    assert pack_linear_layers(model) == count
    assert plain_linears(model) == 0
    assert sum(isinstance(m, PackedLinear) for m in model.modules()) == count
    # The tied output layer still shares the embeddings' weight; the others keep only the
    # reordered copy.
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert not hasattr(model.model.layers[0].mlp.up_proj, "weight")
    assert model.model.layers[0].self_attn.q_proj.bias.abs().max() > 0.1
    ids = torch.randint(1, 300, (3, 17))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # a left-padded row
    with torch.no_grad():
        ours, theirs = model(input_ids=ids, attention_mask=mask), plain(ids, attention_mask=mask)
        torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-4, rtol=1e-4)
        settings = {"max_new_tokens": 12, "do_sample": False, "pad_token_id": 0}
        assert torch.equal(
            model.generate(input_ids=ids, attention_mask=mask, **settings),
            plain.generate(input_ids=ids, attention_mask=mask, **settings),
        )


def test_untied_output_layer_and_bfloat16() -> None:
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU's oneDNN has no bf16")
    model = tiny_llama(tie_word_embeddings=False).to(torch.bfloat16)
    plain = copy.deepcopy(model)
    assert pack_linear_layers(model) == 2 * 7 + 1
    assert not hasattr(model.lm_head, "weight")
    ids = torch.randint(1, 300, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, plain(ids).logits, atol=0.05, rtol=0.05)


def test_what_cannot_be_packed_is_left_as_it_is() -> None:
    half = tiny_llama().to(torch.float16)  # oneDNN does not compute in fp16 here
    assert pack_linear_layers(half) == 0
    assert plain_linears(half) == 15
    peft = pytest.importorskip("peft")
    adapted = peft.get_peft_model(
        tiny_llama(), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"])
    )
    assert not packable(adapted)
    assert pack_linear_layers(adapted) == 0


def test_a_model_that_computes_with_its_weights_is_left_plain() -> None:
    """Mamba's forward casts to `lm_head.weight.dtype` and, on a CPU too, hands its
    projections' weights to a fused function: packed, it cannot read its first tokens, and
    stays as it was."""
    torch.manual_seed(0)
    config = transformers.MambaConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, state_size=8, tie_word_embeddings=False
    )
    model = transformers.MambaForCausalLM(config).eval()
    plain = copy.deepcopy(model)
    count = plain_linears(model)
    assert pack_linear_layers(model) == 0
    assert plain_linears(model) == count
    ids = torch.randint(0, 100, (2, 6))
    settings = {"max_new_tokens": 4, "do_sample": False}
    with torch.no_grad():
        assert torch.equal(model.generate(ids, **settings), plain.generate(ids, **settings))


class UsesItsWeight(torch.nn.Module):
    """A model whose forward computes with a linear layer's weight itself."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 8)
        self.out = torch.nn.Linear(8, 10)

    def forward(self, input_ids: Any) -> Any:
        return self.embed(input_ids) @ self.out.weight.T


def test_a_model_that_computes_with_a_weight_is_put_back_as_it_was() -> None:
    model = UsesItsWeight()
    before = model.out
    assert pack_linear_layers(model) == 0
    assert model.out is before and plain_linears(model) == 1


def test_the_local_backend_packs_the_model_it_loads_and_not_one_it_is_given(
    tiny_model: Path,
) -> None:
    from selfinstruct.backends.local import LocalBackend
    from selfinstruct.config import LocalOptions, SamplingParams

    backend = LocalBackend(str(tiny_model), LocalOptions(dtype="float32"), chat=False)
    assert plain_linears(backend.lm) == 0
    params = SamplingParams(temperature=0.0, max_tokens=8)
    ours = backend.generate(["List three fruits:", "Add 2 and 3:"], params)
    # A model handed in (eval's tuned model, under an adapter or not) stays the caller's own.
    given = transformers.AutoModelForCausalLM.from_pretrained(str(tiny_model)).eval()
    wrapped = LocalBackend.from_loaded(given, backend.tokenizer, "given", chat=False, batch_size=4)
    assert plain_linears(given) > 0
    theirs = wrapped.generate(["List three fruits:", "Add 2 and 3:"], params)
    assert [c.text for c in ours] == [c.text for c in theirs]
