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

    def __init__(self, answer=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__("vllm")
        self.llm_kwargs: dict = {}
        self.calls: list[int] = []  # prompts per engine call
        answer = answer or (lambda p: f"out:{p}")
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
                fake.calls.append(len(prompts))
                return [Result(answer(p)) for p in prompts]

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
    assert len(fake.sampling) == 2  # one SamplingParams per prompt, in one engine call
    assert fake.sampling[0].kwargs == {
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


def test_adaptive_limit_halves_once_per_wave_and_recovers() -> None:
    import time

    async def scenario() -> list[int]:
        limit = AdaptiveLimit(8)
        seen = [limit.limit]
        wave = time.monotonic()
        await limit.congested(wave)
        seen.append(limit.limit)
        await limit.congested(wave)  # another reply of the same wave: no second halving
        seen.append(limit.limit)
        await limit.congested(time.monotonic() + 1)  # sent after the decrease: halve again
        seen.append(limit.limit)
        for _ in range(2):
            await limit.succeeded()
        seen.append(limit.limit)
        return seen

    assert asyncio.run(scenario()) == [8, 4, 4, 2, 3]


def test_batched_backend_answers_everything_waiting_in_one_call() -> None:
    import threading
    import time

    from selfinstruct.backends.base import BatchedBackend, Completion

    release = threading.Event()
    calls: list[int] = []

    class Slow(BatchedBackend):
        name, model, chat = "slow", "m", False

        def _generate_batch(self, prompts, params):  # type: ignore[no-untyped-def]
            calls.append(len(prompts))
            release.wait(5)
            return [Completion(text=f"{p}!") for p in prompts]

    backend = Slow()
    params = SamplingParams()
    first = backend.submit("0", "a", params)  # taken alone; blocks the worker
    time.sleep(0.2)
    rest = [backend.submit(str(k), f"p{k}", params) for k in range(5)]
    release.set()
    assert first.result(5).text == "a!" and [f.result(5).text for f in rest] == [
        f"p{k}!" for k in range(5)
    ]
    assert calls == [1, 5]  # everything that waited went in one call
    stats = backend.stats()
    assert (stats.batches, stats.largest_batch, stats.in_flight) == (2, 5, 0)
    backend.close()


def test_a_cancelled_queued_request_is_skipped_and_the_worker_survives() -> None:
    import threading
    import time

    from selfinstruct.backends.base import BatchedBackend, Completion

    release = threading.Event()
    seen: list[str] = []

    class Slow(BatchedBackend):
        name, model, chat = "slow", "m", False

        def _generate_batch(self, prompts, params):  # type: ignore[no-untyped-def]
            seen.extend(prompts)
            release.wait(5)
            return [Completion(text=f"{p}!") for p in prompts]

    backend = Slow()
    params = SamplingParams()
    first = backend.submit("0", "a", params)  # blocks the worker
    time.sleep(0.2)
    dropped = backend.submit("1", "b", params)
    kept = backend.submit("2", "c", params)
    assert dropped.cancel()  # still queued, so a caller that stops may cancel it
    assert not first.cancel()  # running: no longer cancellable
    release.set()
    assert first.result(5).text == "a!" and kept.result(5).text == "c!"
    assert seen == ["a", "c"]  # the cancelled prompt never reached the model
    assert backend.stats().in_flight == 0
    later = backend.submit("3", "d", params)  # the worker is alive
    assert later.result(5).text == "d!"
    backend.close()


def test_vllm_is_fed_every_ready_request_in_one_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import time

    from selfinstruct.backends.scripted import canned_reply
    from selfinstruct.generate import run_generate

    fake = _FakeVLLM(canned_reply)
    original = fake.LLM.generate

    def generate(self, prompts, sampling, use_tqdm=False):  # type: ignore[no-untyped-def]
        time.sleep(0.05)  # an engine call takes a moment; requests pile up meanwhile
        return original(self, prompts, sampling, use_tqdm)

    fake.LLM.generate = generate
    monkeypatch.setitem(sys.modules, "vllm", fake)
    cfg = GenerateConfig(backend="vllm", model="m", chat=False, run_dir=tmp_path, target_tasks=60)
    summary = run_generate(cfg)
    assert summary.status == "done"
    # The engine saw requests of every stage together, far more than one stage's prompts.
    assert summary.backend.batches == len(fake.calls) and max(fake.calls) > cfg.window
    assert summary.backend.batched_requests == sum(fake.calls) == summary.requests


@pytest.mark.parametrize(
    ("device", "native", "expected"),
    [("cpu", True, "bfloat16"), ("cpu", False, "float32"), ("cuda", False, "bfloat16")],
)
def test_local_dtype_follows_what_the_hardware_computes_natively(
    monkeypatch: pytest.MonkeyPatch, device: str, native: bool, expected: str
) -> None:
    from selfinstruct.backends import local

    monkeypatch.setattr(local, "native_bf16", lambda: native)
    assert local._auto_dtype(device) == expected
