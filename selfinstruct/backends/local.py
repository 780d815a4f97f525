"""transformers on CPU or GPU; the default backend, so a new user can run offline.

The default model is the bundled SmolLM2-135M-Instruct (see models.py); any Hugging Face model
id or local path works as `--model` too.

Speed on a CPU comes from batch size, dtype, prompts read in groups and linear layers in
oneDNN's layout (cpu_linear.py; bench/generate_bench.py, bench/BENCHMARKS.md): the worker
takes up to `batch_size` of the waiting requests, the most urgent first (the pipelined loop
keeps many ready), and generates those with equal settings together, sorted by length; the
weights are bf16 where the CPU computes bf16 natively (AVX512-BF16 / AMX), fp32 elsewhere
(emulated bf16 is slower than fp32).
"""

from __future__ import annotations

import inspect
import threading
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

# Reading prompts on a CPU (bench/BENCHMARKS.md, SmolLM2-135M, 2 cores, fp32). A padded batch
# reads every row to the longest prompt: make demo's instance batches were 40% padding. The
# prompts are read PREFILL_ROWS of near-equal length at a time, PREFILL_POSITIONS positions a
# pass (in chunks of at least PREFILL_CHUNK), then written together: 1 row read 420 tokens/s in
# chunks of 128 and 590 in one pass of 480; 4 rows in chunks of 128, 650; 8 and 16 rows, no more.
PREFILL_CHUNK = 128
PREFILL_ROWS = 4
PREFILL_POSITIONS = 512


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
        from selfinstruct.backends.cpu_linear import pack_linear_layers  # imports torch

        pack_linear_layers(self.lm)  # on a CPU only (it checks); ours alone, never trained
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
        # A take of at most one batch, chosen by priority: a larger take was split by length,
        # and the most urgent requests could wait for the second half.
        self.max_batch = batch_size
        self.generated_tokens = 0
        self.generation_seconds = 0.0

    def _text(self, prompt: Prompt) -> str:
        if isinstance(prompt, str):
            return prompt
        return self.tokenizer.apply_chat_template(
            prompt, tokenize=False, add_generation_prompt=True
        )

    def _shared(self, params: SamplingParams) -> SamplingParams:
        # Requests that differ only in their seed (the instruction prompts: one seed each) share
        # a batch, each row sampling with its own seed; grouped by the full settings they ran
        # one at a time, 50 s of make demo's 136 s of generation (bench/BENCHMARKS.md).
        return params.model_copy(update={"seed": None})

    def _generate_group(
        self, prompts: Sequence[Prompt], params: Sequence[SamplingParams], shared: SamplingParams
    ) -> list[Completion]:
        return self._run(prompts, shared, [p.seed for p in params])

    def _generate_batch(
        self, prompts: Sequence[Prompt], params: SamplingParams
    ) -> list[Completion]:
        # One seed for a whole call: row k samples with seed + k, so equal prompts in one call
        # still differ, and the first row writes what `submit` with that seed writes.
        seeds: list[int | None] = [None] * len(prompts)
        if params.seed is not None:
            seeds = [params.seed + k for k in range(len(prompts))]
        return self._run(prompts, params.model_copy(update={"seed": None}), seeds)

    def _run(
        self, prompts: Sequence[Prompt], params: SamplingParams, seeds: Sequence[int | None]
    ) -> list[Completion]:
        """Generate with the same settings for every prompt; a sampled row uses its own seed
        (or one drawn from torch's global generator)."""
        torch = self._torch
        texts = [self._text(p) for p in prompts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding
        out: list[Completion | None] = [None] * len(texts)
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
            # Sampling is done by _RowSampler, last of the logits processors; transformers'
            # own sampling draws every row from one generator, seeded once per call.
            kwargs["do_sample"] = False
            if params.temperature > 0:
                from transformers import LogitsProcessorList

                sampler = _RowSampler(
                    torch, [seeds[i] for i in batch], params, self.lm.generation_config, self.device
                )
                kwargs["logits_processor"] = LogitsProcessorList([sampler])
            if params.presence_penalty > 0:
                # transformers has no presence penalty; a mild repetition penalty plays its role.
                kwargs["repetition_penalty"] = 1.0 + params.presence_penalty / 20
            if params.stop:
                kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
            if params.ignore_eos and self.tokenizer.eos_token_id is not None:
                kwargs["suppress_tokens"] = [self.tokenizer.eos_token_id]
            started = time.perf_counter()
            counter = _TokenCounter(self._stats, self.tokenizer.pad_token_id, self._closing)
            reader = None
            if self.device == "cpu":
                reader = _PromptReader(self.lm, torch, enc["input_ids"], enc["attention_mask"])
                if not reader.applies():
                    # Read PREFILL_CHUNK positions at a time: faster on a CPU than one pass,
                    # and the progress line moves while a long batch reads its prompts.
                    kwargs["prefill_chunk_size"] = PREFILL_CHUNK
                    reader = None
            self._stats.live_prompt = reader.size if reader else int(enc["input_ids"].numel())
            model = getattr(self.lm, "get_base_model", lambda: self.lm)()  # under an adapter
            reading = model.register_forward_pre_hook(counter.read, with_kwargs=True)
            try:
                with torch.no_grad():
                    if reader:
                        kwargs[reader.cache_arg] = reader.read(params.max_tokens)
                    generated = self.lm.generate(**enc, **kwargs, streamer=counter)
            finally:
                reading.remove()
                self._stats.live_tokens = self._stats.live_read = self._stats.live_prompt = 0
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


class _PromptReader:
    """Reads a left-padded batch's prompts, all but each one's last token, PREFILL_ROWS rows
    of near-equal length at a time, into one cache laid out as the padded batch (padding left
    empty and masked): `generate` then reads the last tokens and writes for all rows at once.

    The cache is static: a growing one is copied whole at every step, and glibc served each
    larger copy with fresh pages from the kernel, up to 500 ms a step at 31 rows of 700 tokens
    against 240 (bench/BENCHMARKS.md). Only where such a cache can be handed to `generate`:
    models whose every layer keeps the whole past (no sliding window, no recurrent state), no
    cache set by the model's generation config, no prompt-learning adapter, and a static cache
    that counts what it holds (transformers 5.19 on; older ones counted row 0's nonzero slots,
    and row 0 is the shortest prompt)."""

    def __init__(self, lm: Any, torch: Any, ids: Any, mask: Any) -> None:
        self.lm, self.torch, self.ids, self.mask = lm, torch, ids, mask
        lengths = [int(n) for n in mask.sum(dim=1)]
        rows = sorted(range(len(lengths)), key=lengths.__getitem__)
        # Each group reads its rows from where its longest prompt starts to the last token.
        self.groups = [
            (group, max(lengths[r] for r in group) - 1)
            for group in (rows[k : k + PREFILL_ROWS] for k in range(0, len(rows), PREFILL_ROWS))
        ]
        self.size = sum(len(group) * span for group, span in self.groups) + len(lengths)
        # transformers 5.2x renamed `past_key_values` to `cache`; either takes a filled one.
        model = getattr(lm, "get_base_model", lambda: lm)()  # under an adapter
        forward = inspect.signature(type(model).forward).parameters
        self.cache_arg = "cache" if "cache" in forward else "past_key_values"

    def applies(self) -> bool:
        from transformers import StaticCache
        from transformers.cache_utils import StaticLayer

        if all(span <= 0 for _, span in self.groups):
            return False
        if getattr(self.lm.generation_config, "cache_implementation", None):
            return False  # generate refuses a cache of ours beside it
        peft = getattr(self.lm, "active_peft_config", None)
        if getattr(peft, "is_prompt_learning", False):
            return False  # virtual tokens in a cache of its own
        layers = StaticCache(config=self.lm.config, max_cache_len=1).layers
        return bool(layers) and all(
            type(layer) is StaticLayer
            and isinstance(getattr(layer, "cumulative_length", None), self.torch.Tensor)
            for layer in layers
        )

    def read(self, max_new_tokens: int) -> Any:
        from transformers import DynamicCache, StaticCache

        torch, width = self.torch, self.ids.shape[1]
        merged = StaticCache(config=self.lm.config, max_cache_len=width + max_new_tokens)
        ready = False
        for group, span in self.groups:
            if span <= 0:
                continue
            cols = slice(width - 1 - span, width - 1)
            ids, mask = self.ids[group, cols], self.mask[group, cols]
            positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
            cache = DynamicCache()
            step = max(PREFILL_CHUNK, PREFILL_POSITIONS // len(group))
            for at in range(0, span, step):
                part = slice(at, at + step)
                self.lm(
                    input_ids=ids[:, part],
                    attention_mask=mask[:, : at + step],
                    position_ids=positions[:, part],
                    **{self.cache_arg: cache},
                    use_cache=True,
                    logits_to_keep=1,
                )
            if not ready:
                # The cache takes its shape from a first update: empty slots for every prompt
                # position but the last, one layer at a time (not a second copy of the cache).
                for i, layer in enumerate(cache.layers):
                    k, v = layer.keys, layer.values
                    merged.update(
                        k.new_zeros((self.ids.shape[0], k.shape[1], width - 1, k.shape[-1])),
                        v.new_zeros((self.ids.shape[0], v.shape[1], width - 1, v.shape[-1])),
                        i,
                    )
                ready = True
            at_rows = torch.tensor(group, device=self.ids.device)
            for i, layer in enumerate(cache.layers):
                merged.layers[i].keys[at_rows, :, cols] = layer.keys
                merged.layers[i].values[at_rows, :, cols] = layer.values
        return merged


class _RowSampler:
    """Samples each row's next token with a generator of its own (seeded by its request), so
    no request's draws depend on which others share its batch (its logits still do, slightly:
    batch size and padding change the numerics); hands `generate` logits that leave only the
    drawn token, which its greedy step then takes."""

    def __init__(
        self,
        torch: Any,
        seeds: Sequence[int | None],
        params: SamplingParams,
        model_config: Any,
        device: str,
    ) -> None:
        from transformers import (
            MinPLogitsWarper,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.torch = torch
        self.generators = [
            torch.Generator(device=device).manual_seed(
                int(torch.randint(2**62, (1,))) if seed is None else seed
            )
            for seed in seeds
        ]
        # The warpers transformers' own sampling applied, in its order, with its defaults
        # (top_k 50 unless the model's generation config says otherwise).
        top_k = getattr(model_config, "top_k", None)
        top_k = 50 if top_k is None else top_k
        warpers: list[Any] = [TemperatureLogitsWarper(params.temperature)]
        if top_k:
            warpers.append(TopKLogitsWarper(top_k))
        if params.top_p < 1.0:
            warpers.append(TopPLogitsWarper(params.top_p))
        if getattr(model_config, "min_p", None) is not None:
            warpers.append(MinPLogitsWarper(model_config.min_p))
        self.warpers = warpers

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        torch = self.torch
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)
        picks = torch.cat(
            [torch.multinomial(probs[row], 1, generator=g) for row, g in enumerate(self.generators)]
        )
        only = torch.full_like(scores, float("-inf"))
        return only.scatter_(1, picks[:, None], 0.0)


class _TokenCounter:
    """Counts into the backend's stats, while a batch runs, the prompt tokens read (a hook
    before each forward pass, until the first token is written) and the tokens each step
    writes (told by `generate`, as its streamer): the progress line moves inside a long
    batch."""

    def __init__(self, stats: Any, pad: int | None, closing: threading.Event) -> None:
        self.stats = stats
        self.pad = pad
        self.closing = closing
        self.prompt_seen = False  # the first call hands over the prompt itself
        self.writing = False

    def read(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        # A run that stopped (its target reached) no longer waits for this batch: closing, the
        # backend ends it at the next forward pass instead of writing to max_tokens.
        if self.closing.is_set():
            raise BackendError("the backend was closed while this batch ran")
        ids = kwargs.get("input_ids")
        if not self.writing and ids is not None:
            self.stats.live_read += int(ids.numel())

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.writing = True
        # A row that has finished is handed padding until the whole batch has: not written.
        written = value.numel() if self.pad is None else (value != self.pad).sum()
        self.stats.live_tokens += int(written)

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
