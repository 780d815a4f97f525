"""Model backends: one small interface, batch in and batch out (see base.Backend)."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from selfinstruct.backends.base import Backend, BackendError

if TYPE_CHECKING:
    from selfinstruct.config import GenerateConfig


def open_backend(
    kind: str,
    model: str | None = None,
    *,
    chat: bool | None = None,
    base_url: Sequence[str] = (),
    api_key_env: str = "OPENAI_API_KEY",
    concurrency: int = 16,
    timeout: float = 120.0,
    max_retries: int = 6,
    outage_wait: float = 300.0,
    omit_params: Sequence[str] | None = None,
    run_dir: Path | None = None,
    batch_poll: float = 30.0,
    batch_flush: float = 2.0,
    device: str | None = None,
    local_batch: int = 32,
    local_engine: Literal["auto", "transformers", "vllm"] = "auto",
    dtype: Literal["auto", "float32", "bfloat16"] = "auto",
    vllm_memory: float | None = None,
    tensor_parallel_size: int = 1,
    data_parallel_size: int = 1,
) -> Backend:
    """A backend of `kind`; heavy libraries are imported only here. Close it after use."""
    if kind == "scripted":
        from selfinstruct.backends.scripted import ScriptedBackend

        return ScriptedBackend(chat=bool(chat))
    if kind == "local" and local_engine == "auto":
        local_engine = "vllm" if importlib.util.find_spec("vllm") else "transformers"
    if kind == "local" and local_engine == "transformers":
        from selfinstruct.backends.local import LocalBackend

        return LocalBackend(model, device=device, chat=chat, batch_size=local_batch, dtype=dtype)
    if kind == "local" or kind == "vllm":
        from selfinstruct.backends.vllm_offline import VLLMBackend

        return VLLMBackend(
            model,
            chat=bool(chat),
            tensor_parallel_size=tensor_parallel_size,
            data_parallel_size=data_parallel_size,
            memory=vllm_memory,
            dtype=dtype,
        )
    if kind == "openai":
        from selfinstruct.backends.openai_compat import OpenAIBackend

        if not model:
            raise BackendError("the openai backend needs --model (the name the server serves)")
        return OpenAIBackend(
            model,
            list(base_url),
            api_key_env,
            chat=chat is not False,
            concurrency=concurrency,
            timeout=timeout,
            max_retries=max_retries,
            outage_wait=outage_wait,
            omit_params=omit_params,
        )
    if kind == "openai-batch":
        from selfinstruct.backends.openai_batch import OpenAIBatchBackend

        if not model or run_dir is None:
            raise BackendError("the openai-batch backend needs --model and a run directory")
        run_dir.mkdir(parents=True, exist_ok=True)
        return OpenAIBatchBackend(
            model,
            list(base_url),
            run_dir / "batches.jsonl",
            api_key_env,
            chat=chat is not False,
            poll_every=batch_poll,
            flush_after=batch_flush,
        )
    raise BackendError(f"unknown backend {kind!r}")


def make_backend(cfg: GenerateConfig) -> Backend:
    """The backend a generate config asks for."""
    return open_backend(
        cfg.backend,
        cfg.model,
        chat=cfg.chat,
        base_url=cfg.base_url,
        api_key_env=cfg.api_key_env,
        concurrency=cfg.concurrency,
        timeout=cfg.timeout,
        max_retries=cfg.max_retries,
        outage_wait=cfg.outage_wait,
        omit_params=cfg.omit_params,
        run_dir=cfg.run_dir,
        batch_poll=cfg.batch_poll,
        batch_flush=cfg.batch_flush,
        device=cfg.device,
        local_batch=cfg.local_batch,
        local_engine=cfg.local_engine,
        dtype=cfg.dtype,
        vllm_memory=cfg.vllm_memory,
        tensor_parallel_size=cfg.tensor_parallel_size,
        data_parallel_size=cfg.data_parallel_size,
    )


__all__ = ["Backend", "BackendError", "make_backend", "open_backend"]
