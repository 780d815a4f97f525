"""vLLM in-process (GPU; optional): every request the loop has ready goes to one engine call.

The generate loop submits requests as they become ready; the worker of `BatchedBackend` hands
all that are waiting, whatever their stage, to a single `LLM.generate` / `LLM.chat` call with one
`SamplingParams` per prompt, so the engine's scheduler sees every sequence it could batch.
`stats()` tells how many calls were made and how large they were. Install with
`pip install 'selfinstruct[vllm]'`; vLLM is imported only when this backend is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfinstruct.backends.base import (
    BackendError,
    BatchedBackend,
    Completion,
    Prompt,
    SamplingParams,
    Usage,
)


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise BackendError(
            "the vllm backend needs vLLM on a GPU machine: pip install 'selfinstruct[vllm]'"
        ) from None
    return vllm


def to_vllm_params(vllm: Any, params: SamplingParams) -> Any:
    """Our SamplingParams as vllm.SamplingParams (same meaning, vLLM's names)."""
    return vllm.SamplingParams(
        n=params.n,
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_tokens,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        stop=list(params.stop) or None,
        seed=params.seed,
        ignore_eos=params.ignore_eos,
    )


class VLLMBackend(BatchedBackend):
    name = "vllm"
    max_batch = 16384  # the engine schedules within a call; more in one call is better

    def __init__(
        self,
        model: str,
        chat: bool = False,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        **llm_kwargs: Any,
    ) -> None:
        super().__init__()
        self._vllm = _import_vllm()
        self.model = model
        self.chat = chat
        options: dict[str, Any] = {"tensor_parallel_size": tensor_parallel_size, **llm_kwargs}
        if data_parallel_size > 1:
            options["data_parallel_size"] = data_parallel_size
        self.llm = self._vllm.LLM(model=model, **options)

    def _generate_batch(
        self, prompts: Sequence[Prompt], params: SamplingParams
    ) -> list[Completion]:
        return self._generate_mixed(prompts, [params] * len(prompts))

    def _generate_mixed(
        self, prompts: Sequence[Prompt], params: Sequence[SamplingParams]
    ) -> list[Completion]:
        sampling = [to_vllm_params(self._vllm, p) for p in params]
        if self.chat:
            messages = [
                p if isinstance(p, list) else [{"role": "user", "content": p}] for p in prompts
            ]
            results = self.llm.chat(messages, sampling, use_tqdm=False)
        else:
            texts = [
                p if isinstance(p, str) else "\n".join(m["content"] for m in p) for p in prompts
            ]
            results = self.llm.generate(texts, sampling, use_tqdm=False)
        out = []
        for result in results:
            first = result.outputs[0]
            out.append(
                Completion(
                    text=first.text,
                    finish_reason="length" if first.finish_reason == "length" else "stop",
                    usage=Usage(
                        prompt_tokens=len(result.prompt_token_ids or []),
                        completion_tokens=len(first.token_ids or []),
                    ),
                )
            )
        return out
