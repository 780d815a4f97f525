"""Model backends: one small interface, batch in and batch out (see base.Backend)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from selfinstruct.backends.base import Backend, BackendError

if TYPE_CHECKING:
    from selfinstruct.config import GenerateConfig


def make_backend(cfg: GenerateConfig) -> Backend:
    """Build the configured backend; heavy libraries are imported only here."""
    if cfg.backend == "scripted":
        from selfinstruct.backends.scripted import ScriptedBackend

        return ScriptedBackend(chat=bool(cfg.chat))
    if cfg.backend == "local":
        from selfinstruct.backends.local import LocalBackend

        return LocalBackend(cfg.model, device=cfg.device, chat=cfg.chat)
    if cfg.backend == "openai":
        from selfinstruct.backends.openai_compat import OpenAIBackend

        if not cfg.model:
            raise BackendError("the openai backend needs --model (the name the server serves)")
        return OpenAIBackend(
            cfg.model,
            cfg.base_url,
            cfg.api_key_env,
            chat=cfg.chat is not False,
            concurrency=cfg.concurrency,
            timeout=cfg.timeout,
            max_retries=cfg.max_retries,
        )
    if cfg.backend == "vllm":
        from selfinstruct.backends.vllm_offline import VLLMBackend

        if not cfg.model:
            raise BackendError("the vllm backend needs --model (a Hugging Face id or path)")
        return VLLMBackend(
            cfg.model,
            chat=bool(cfg.chat),
            tensor_parallel_size=cfg.tensor_parallel_size,
            data_parallel_size=cfg.data_parallel_size,
        )
    raise BackendError(f"unknown backend {cfg.backend!r}")


__all__ = ["Backend", "BackendError", "make_backend"]
