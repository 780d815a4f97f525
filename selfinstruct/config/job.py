"""The job file of `selfinstruct run`: a run directory and one section per stage.

Each section takes the options of its command and is validated by that command's own config
when the file is loaded, so a misspelt option fails at once with its dotted name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from selfinstruct.config.base import validation_problems
from selfinstruct.config.commands import (
    EvalConfig,
    ExportConfig,
    FilterConfig,
    FinetuneConfig,
    GenerateConfig,
)
from selfinstruct.rundir import FilterDir, JobDir

STAGES = ("generate", "filter", "export", "finetune", "eval")


class JobFile(BaseModel):
    """The job file. Stage sections take the options of the matching command."""

    model_config = ConfigDict(extra="forbid")

    run_dir: Path
    generate: dict[str, Any] = Field(default_factory=dict)
    filter: dict[str, Any] | None = None
    export: dict[str, Any] | None = Field(default_factory=lambda: {"format": "prompt-completion"})
    finetune: dict[str, Any] | None = None
    eval: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check_stages(self) -> JobFile:
        # Validate each section now with the command's own model, so a typo fails at load.
        for name, build in (
            ("generate", self.generate_config),
            ("filter", self.filter_config),
            ("export", self.export_config),
            ("finetune", self.finetune_config),
            ("eval", self.eval_config),
        ):
            if getattr(self, name) is None:
                continue
            try:
                build()
            except ValidationError as exc:
                key, msg = validation_problems(exc)[0]
                raise ValueError(f"{name}.{key}: {msg}") from None
        return self

    @property
    def files(self) -> JobDir:
        return JobDir(self.run_dir)

    def stage_dir(self, name: str) -> Path:
        return self.files.stage(name)

    def generate_config(self) -> GenerateConfig:
        return GenerateConfig.model_validate(
            {**self.generate, "run_dir": self.stage_dir("generate")}
        )

    def filter_config(self) -> FilterConfig:
        return FilterConfig.model_validate(
            {
                **(self.filter or {}),
                "input": self.files.generate.tasks,
                "output_dir": self.stage_dir("filter"),
                "output_format": "tasks",
            }
        )

    def tasks_file(self) -> Path:
        if self.filter is not None:
            return FilterDir(self.stage_dir("filter")).kept
        return self.files.generate.tasks

    def export_config(self) -> ExportConfig:
        options = dict(self.export or {})
        fmt = options.get("format", "prompt-completion")
        suffix = {"alpaca": "json", "hf": "hf"}.get(fmt, "jsonl")
        return ExportConfig.model_validate(
            {
                "output": self.stage_dir("export") / f"train.{suffix}",
                **options,
                "source": self.tasks_file(),
            }
        )

    def finetune_config(self) -> FinetuneConfig:
        return FinetuneConfig.model_validate(
            {
                **(self.finetune or {}),
                "data": self.tasks_file(),
                "output_dir": self.stage_dir("finetune"),
            }
        )

    def eval_config(self) -> EvalConfig:
        options: dict[str, Any] = {**(self.eval or {}), "output_dir": self.stage_dir("eval")}
        if self.finetune is not None:
            options.setdefault("adapter", self.stage_dir("finetune") / "adapter")
            options.setdefault("base_model", (self.finetune or {}).get("base_model"))
        return EvalConfig.model_validate(options)

    def enabled(self) -> list[str]:
        return [s for s in STAGES if s == "generate" or getattr(self, s) is not None]
