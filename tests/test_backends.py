"""Backend pieces that need no model: vLLM's parameter mapping, the adaptive limit, the factory."""

from __future__ import annotations

import asyncio
import sys
import types
from pathlib import Path

import pytest

from selfinstruct.backends import make_backend
from selfinstruct.backends.base import BackendError, SamplingParams
from selfinstruct.backends.openai_compat import AdaptiveLimit
from selfinstruct.config import GenerateConfig


class _FakeVLLM(types.ModuleType):
    """Stands in for vllm (not installable on a CPU machine): records what it is given."""

    def __init__(self) -> None:
        super().__init__("vllm")
        self.llm_kwargs: dict = {}
        fake = self

        class SamplingParams:
            def __init__(self, **kwargs):
                self.kwargs = kwargs

        class Output:
            def __init__(self, text):
                self.text, self.finish_reason, self.token_ids = text, "length", [1, 2, 3]

        class Result:
            def __init__(self, text):
                self.outputs, self.prompt_token_ids = [Output(text)], [1, 2]

        class LLM:
            def __init__(self, model, **kwargs):
                fake.llm_kwargs = {"model": model, **kwargs}

            def generate(self, prompts, sampling, use_tqdm=False):
                fake.sampling = sampling
                return [Result(f"out:{p}") for p in prompts]

            def chat(self, messages, sampling, use_tqdm=False):
                fake.sampling = sampling
                return [Result("chat") for _ in messages]

        self.SamplingParams, self.LLM = SamplingParams, LLM


def test_vllm_mapping_with_a_stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = _FakeVLLM()
    monkeypatch.setitem(sys.modules, "vllm", fake)
    cfg = GenerateConfig(
        backend="vllm",
        model="org/model",
        tensor_parallel_size=2,
        data_parallel_size=4,
        run_dir=tmp_path,
    )
    backend = make_backend(cfg)
    assert fake.llm_kwargs == {
        "model": "org/model",
        "tensor_parallel_size": 2,
        "data_parallel_size": 4,
    }
    params = SamplingParams(
        temperature=0.7, top_p=0.5, max_tokens=99, presence_penalty=2.0, stop=("\n16.",), seed=3
    )
    done = backend.generate(["a", "b"], params)
    assert [c.text for c in done] == ["out:a", "out:b"] and done[0].finish_reason == "length"
    assert done[0].usage.prompt_tokens == 2 and done[0].usage.completion_tokens == 3
    assert fake.sampling.kwargs == {
        "n": 1,
        "temperature": 0.7,
        "top_p": 0.5,
        "max_tokens": 99,
        "presence_penalty": 2.0,
        "frequency_penalty": 0.0,
        "stop": ["\n16."],
        "seed": 3,
        "ignore_eos": False,
    }


def test_vllm_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails
    with pytest.raises(BackendError, match=r"selfinstruct\[vllm\]"):
        make_backend(GenerateConfig(backend="vllm", model="m", run_dir=tmp_path))


def test_openai_needs_a_model(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="--model"):
        make_backend(GenerateConfig(backend="openai", run_dir=tmp_path))


def test_adaptive_limit_halves_and_recovers() -> None:
    async def scenario() -> list[int]:
        limit = AdaptiveLimit(8)
        seen = [limit.limit]
        await limit.rate_limited()
        seen.append(limit.limit)
        await limit.rate_limited()
        seen.append(limit.limit)
        for _ in range(2):
            await limit.succeeded()
        seen.append(limit.limit)
        return seen

    assert asyncio.run(scenario()) == [8, 4, 2, 3]
