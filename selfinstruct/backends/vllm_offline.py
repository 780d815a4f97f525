"""vLLM in-process: every prompt of a stage goes to one `LLM.generate` call (GPU; optional).

Install with `pip install 'selfinstruct[vllm]'`. vLLM is imported only when this backend is
built, so nothing else needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from selfinstruct.backends.base import BackendError, Completion, Prompt, SamplingParams, Usage


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


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        model: str,
        chat: bool = False,
        tensor_parallel_size: int = 1,
        data_parallel_size: int = 1,
        **llm_kwargs: Any,
    ) -> None:
        self._vllm = _import_vllm()
        self.model = model
        self.chat = chat
        options: dict[str, Any] = {"tensor_parallel_size": tensor_parallel_size, **llm_kwargs}
        if data_parallel_size > 1:
            options["data_parallel_size"] = data_parallel_size
        self.llm = self._vllm.LLM(model=model, **options)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        sampling = to_vllm_params(self._vllm, params)
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

    def close(self) -> None:
        pass
