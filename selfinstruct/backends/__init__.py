"""Model backends: one small interface, batch in and batch out (see base.Backend).

Each backend takes its own options model whole (`selfinstruct/config/backends.py`), so an
option's default lives in one place; `BackendOptions` holds them all, and `GenerateConfig` is
one.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from selfinstruct.backends.base import Backend, BackendError
from selfinstruct.config import BackendOptions
from selfinstruct.rundir import RunDir

if TYPE_CHECKING:
    from selfinstruct.config import GenerateConfig


def open_backend(
    kind: str,
    model: str | None = None,
    *,
    chat: bool | None = None,
    options: BackendOptions | None = None,
    run_dir: Path | None = None,
) -> Backend:
    """A backend of `kind`; heavy libraries are imported only here. Close it after use."""
    options = options or BackendOptions()
    if kind == "scripted":
        from selfinstruct.backends.scripted import ScriptedBackend

        return ScriptedBackend(chat=bool(chat))
    engine = options.local_engine
    if kind == "local" and engine == "auto":
        engine = "vllm" if importlib.util.find_spec("vllm") else "transformers"
    if kind == "local" and engine == "transformers":
        from selfinstruct.backends.local import LocalBackend

        return LocalBackend(model, options, chat=chat)
    if kind in ("local", "vllm"):
        from selfinstruct.backends.vllm_offline import VLLMBackend

        return VLLMBackend(model, options, chat=bool(chat))
    if kind == "openai":
        from selfinstruct.backends.openai_compat import OpenAIBackend

        if not model:
            raise BackendError("the openai backend needs --model (the name the server serves)")
        return OpenAIBackend(model, options, chat=chat is not False)
    if kind == "openai-batch":
        from selfinstruct.backends.openai_batch import OpenAIBatchBackend

        if not model or run_dir is None:
            raise BackendError("the openai-batch backend needs --model and a run directory")
        run_dir.mkdir(parents=True, exist_ok=True)
        return OpenAIBatchBackend(model, options, RunDir(run_dir).batches, chat=chat is not False)
    raise BackendError(f"unknown backend {kind!r}")


def make_backend(cfg: GenerateConfig) -> Backend:
    """The backend a generate config asks for."""
    return open_backend(cfg.backend, cfg.model, chat=cfg.chat, options=cfg, run_dir=cfg.run_dir)


__all__ = ["Backend", "BackendError", "make_backend", "open_backend"]
