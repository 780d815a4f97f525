"""Model backends: one small interface, batch in and batch out (see base.Backend).

Backends are found by name in a registry (`registry.py`): the built-in ones and any that an
installed package declares with an entry point. Each declares its own options model and gets only
those options, so an option's default lives in one place (`selfinstruct/config/backends.py` for
the built-in ones).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfinstruct.backends.base import Backend, BackendError
from selfinstruct.backends.registry import options_for, spec
from selfinstruct.config import Options

if TYPE_CHECKING:
    from selfinstruct.config import GenerateConfig


def open_backend(
    kind: str,
    model: str | None = None,
    *,
    chat: bool | None = None,
    options: Options | None = None,
    run_dir: Path | None = None,
    given: Iterable[str] = (),
    extra: dict[str, Any] | None = None,
) -> Backend:
    """A backend of `kind` with its own options taken from `options`; heavy libraries are
    imported only here. Close it after use."""
    chosen = spec(kind)
    return chosen.open(model, options_for(kind, options, given, extra), chat, run_dir)  # type: ignore[no-any-return]


def make_backend(cfg: GenerateConfig) -> Backend:
    """The backend a generate config asks for, refusing options it would ignore."""
    return open_backend(
        cfg.backend,
        cfg.model,
        chat=cfg.chat,
        options=cfg,
        run_dir=cfg.run_dir,
        given=cfg.model_fields_set,
        extra=cfg.backend_options(),
    )


__all__ = ["Backend", "BackendError", "make_backend", "open_backend"]
