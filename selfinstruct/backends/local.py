"""transformers on CPU or GPU; the default backend, so a new user can run offline.

The default model is the bundled SmolLM2-135M-Instruct (see models.py); any Hugging Face model
id or local path works as `--model` too.

Speed on a CPU comes from batch size and dtype (bench/generate_bench.py): the worker takes every
request waiting (the pipelined loop keeps many ready) and generates them in batches of up to
`batch_size`, sorted by length; the weights are bf16 where the CPU computes bf16 natively
(AVX512-BF16 / AMX), fp32 elsewhere (emulated bf16 is slower than fp32).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from selfinstruct.backends.base import (
    Backend,
    BackendError,
    BatchedBackend,
    Completion,
    Prompt,
    SamplingParams,
    Usage,
)
from selfinstruct.config import LocalOptions
from selfinstruct.models import BUNDLED, inference_imports, native_bf16, resolve_model

DType = Literal["auto", "float32", "bfloat16"]


class LocalBackend(BatchedBackend):
    """Batched generation with a transformers causal LM."""

    name = "local"

    def __init__(self, model: str | None, options: LocalOptions, chat: bool | None = None) -> None:
        super().__init__()
        path = resolve_model(model)
        torch, transformers = inference_imports()
        self._torch = torch
        self.model = BUNDLED if model is None else str(model)
        self.device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = options.dtype
        self.dtype = dtype if dtype != "auto" else _auto_dtype(self.device)
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            self.lm = transformers.AutoModelForCausalLM.from_pretrained(
                path, dtype=getattr(torch, self.dtype)
            )
        except OSError as exc:
            raise BackendError(f"cannot load model {path} ({exc})") from None
        self.lm.to(self.device).eval()
        # Few-shot list continuation works best as raw completion even on instruct models.
        self._attach(bool(chat), options.local_batch)

    @classmethod
    def from_loaded(
        cls, lm: Any, tokenizer: Any, name: str, *, chat: bool, batch_size: int
    ) -> LocalBackend:
        """Wrap a model that is already loaded (e.g. a base model with a LoRA adapter)."""
        torch, _ = inference_imports()
        self = cls.__new__(cls)
        BatchedBackend.__init__(self)
        self._torch, self.lm, self.tokenizer, self.model = torch, lm, tokenizer, name
        first = next(lm.parameters())
        self.device, self.dtype = str(first.device), str(first.dtype).removeprefix("torch.")
        self._attach(chat, batch_size)
        return self

    def _attach(self, chat: bool, batch_size: int) -> None:
        """Ready the loaded tokenizer for batched generation; reset the speed counters."""
        self.tokenizer.padding_side = "left"  # decoder-only models generate after the prompt
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.chat = chat and bool(getattr(self.tokenizer, "chat_template", None))
        self.batch_size = batch_size
        self.max_batch = max(self.max_batch, batch_size)
        self.generated_tokens = 0
        self.generation_seconds = 0.0

    def _text(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True
        )

    def _generate_batch(
        self, prompts: Sequence[Prompt], params: SamplingParams
    ) -> list[Completion]:
        torch = self._torch
        texts = [self._text(p) for p in prompts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding
        out: list[Completion | None] = [None] * len(texts)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            # Text made by the chat template already holds the special tokens it needs; the
            # tokenizer adding a BOS of its own would put two there (Gemma, Llama 3).
            templated = any(not isinstance(prompts[i], str) for i in batch)
            enc = self.tokenizer(
                [texts[i] for i in batch],
                return_tensors="pt",
                padding=True,
                add_special_tokens=not templated,
            )
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
                generated = self.lm.generate(**enc, **kwargs, streamer=_TokenCounter(self._stats))
            self._stats.live_tokens = 0
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


class _TokenCounter:
    """Told each generated step's tokens by transformers' `generate` (a streamer): counts them
    into the backend's stats while the batch runs, so progress moves inside a long batch."""

    def __init__(self, stats: Any) -> None:
        self.stats = stats
        self.prompt_seen = False  # the first call hands over the prompt itself

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.stats.live_tokens += int(value.numel())

    def end(self) -> None:
        pass


def _auto_dtype(device: str) -> DType:
    if device.startswith("cuda"):
        return "bfloat16"
    # Measured on 2 cores with native bf16 (SmolLM2-135M, bench/generate_bench.py): bf16 is
    # faster at every batch size, 1.3-1.6x at batch 1 after warm-up and 1.8x at batch 32.
    return "bfloat16" if device == "cpu" and native_bf16() else "float32"


def _cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    cut = min((text.find(s) for s in stops if s and s in text), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def open_local(
    model: str | None, options: LocalOptions, chat: bool | None, run_dir: Path | None
) -> Backend:
    """The local backend: vLLM where it is installed (or asked for), else transformers."""
    import importlib.util

    engine = options.local_engine
    if engine == "auto":
        engine = "vllm" if importlib.util.find_spec("vllm") else "transformers"
    if engine == "vllm":
        from selfinstruct.backends.vllm_offline import VLLMBackend

        return VLLMBackend(model, options, chat=bool(chat))
    return LocalBackend(model, options, chat=chat)
