"""Linear layers with their weights reordered once into oneDNN's blocked layout, for generation
on a CPU.

`torch.nn.Linear` on a CPU hands each call to MKL's GEMM, which is slow on the skinny products
of decoding (a few rows against each weight matrix; bench/BENCHMARKS.md) and packs the weight
for its kernel again at every call. oneDNN's kernel on weights reordered once at load (what
torch.compile's CPU backend does for frozen inference graphs) did all 211 products of one
SmolLM2-135M forward pass in fp32 (`bench/cpu_linear_bench.py`, AMD EPYC, 2 cores): 1.5x
faster at 1 row, 2.2x at 8, 1.6x at 31, 1.1x at 512 (reading prompts); results differ only by
the order of the sums (make demo wrote the same tasks byte for byte).

The cost is memory: an output layer tied to the embeddings keeps the embeddings and gains a
reordered copy (SmolLM2-135M: 113 MB in fp32; Gemma 3 270M: 671 MB in fp32, 335 MB in bf16).
A packed model is for generating only: it can no longer be trained, copied, saved or cast.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import torch


class PackedLinear(torch.nn.Module):
    """`x @ W.T + b` with W reordered once for oneDNN; inference only (no gradient)."""

    def __init__(self, linear: torch.nn.Linear, tied: bool) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight, None))
        bias = None if linear.bias is None else linear.bias.detach()
        self.register_buffer("bias", bias)
        # A weight another module shares (an output layer tied to the embeddings) stays where
        # it is. Any other is gone: a model whose code reads it (Mamba's reads its dtype, and
        # hands its projections' weights to a fused function) fails pack_linear_layers' check
        # with an AttributeError and is left plain. (A stand-in on the meta device was tried:
        # `x @ w` with such a w returns an uninitialised CPU tensor instead of raising.)
        if tied:
            self.weight = linear.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, oneDNN layout"


def packable(model: torch.nn.Module) -> bool:
    """Can this model's linear layers be packed: oneDNN present and enabled, the model on a
    CPU, with nothing wrapped around its layers."""
    if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
        return False
    first = next(model.parameters(), None)
    if first is None or first.device.type != "cpu":
        return False
    # An adapter (peft) wraps the layers it changes and reads their weights; leave those be.
    return not hasattr(model, "peft_config")


def pack_linear_layers(model: torch.nn.Module) -> int:
    """Replace the plain `torch.nn.Linear` layers of a loaded model by `PackedLinear`s, for
    generation on a CPU; how many were replaced (0: the model is as it was). A layer in a dtype
    oneDNN does not compute in here stays plain. The packed model must read a few tokens as the
    plain one did, or every layer is put back: some models compute with a layer's weight
    themselves (Mamba's fused path). The model can no longer be trained."""
    if not packable(model):
        return 0
    # The dtypes oneDNN computes in here: fp32, and bf16 where it has it (fp16 stays plain).
    dtypes = {torch.float32}
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        dtypes.add(torch.bfloat16)
    shared = _shared_weights(model)
    before = _logits(model)
    swapped: list[tuple[torch.nn.Module, str, torch.nn.Linear]] = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or child.weight.dtype not in dtypes:
                continue
            setattr(parent, name, PackedLinear(child, id(child.weight) in shared))
            swapped.append((parent, name, child))
    if swapped and not _close(_logits(model), before):
        for parent, name, child in swapped:
            setattr(parent, name, child)
        return 0
    count = len(swapped)
    swapped.clear()  # the plain layers go before their memory is handed back
    _own_memory(model)
    return count


def _shared_weights(model: torch.nn.Module) -> set[int]:
    """The parameters held by more than one module (tied embeddings)."""
    seen: dict[int, int] = {}
    for module in model.modules():
        for param in module.parameters(recurse=False):
            seen[id(param)] = seen.get(id(param), 0) + 1
    return {key for key, count in seen.items() if count > 1}


def _logits(model: torch.nn.Module) -> torch.Tensor | None:
    """What the model makes of four tokens (None: it could not read them)."""
    try:
        with torch.no_grad():
            out = model(input_ids=torch.arange(1, 5).unsqueeze(0))
    except Exception:  # any failure means: do not pack this one
        return None
    logits = getattr(out, "logits", out)
    return logits if isinstance(logits, torch.Tensor) else None


def _close(packed: torch.Tensor | None, plain: torch.Tensor | None) -> bool:
    """Equal but for the order of the sums (bf16 keeps 8 bits of mantissa)."""
    if packed is None or plain is None or packed.shape != plain.shape:
        return False
    tolerance = 3e-2 if plain.dtype == torch.bfloat16 else 1e-4
    scale = float(plain.float().abs().max())
    return float((packed.float() - plain.float()).abs().max()) <= tolerance * (1 + scale)


def _own_memory(model: torch.nn.Module) -> None:
    """Copy what is left of the model (embeddings, norms) out of the file it was loaded from,
    and hand the freed plain weights back to the system. While one tensor points into the
    memory-mapped safetensors file the whole file stays mapped, and packing read every page of
    it; glibc keeps freed memory for reuse unless told. SmolLM2-135M resident after its first
    batch: fp32 1,030 MB against 920 unpacked (1,409 MB after load without the copy); bf16
    717 MB against 668 (918 without the trim). What stays is the tied output layer's copy."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if not tensor.is_mkldnn and tensor.device.type == "cpu":
                tensor.data = tensor.data.clone()
    libc = ctypes.util.find_library("c")
    trim = getattr(ctypes.CDLL(libc), "malloc_trim", None) if libc else None
    if trim is not None:
        trim(0)
