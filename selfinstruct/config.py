"""Configs for each command (pydantic), and loading them from YAML/TOML files.

Precedence: built-in defaults < config file < command-line flags. Unknown keys are rejected with
their name, so a typo never silently falls back to a default. Config files are parsed as data
only (`yaml.safe_load`, `tomllib`): nothing in them is ever executed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from selfinstruct.errors import ConfigError
from selfinstruct.filters import RuleConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class FilterConfig(BaseModel):
    """`selfinstruct filter`: rule filters, then ROUGE-L novelty, over one instruction file."""

    model_config = ConfigDict(extra="forbid")

    input: Path
    output_dir: Path | None = Field(
        None,
        description="where kept.jsonl, rejected.jsonl and summary.json go; "
        "default outputs/filter-<input name>",
    )
    reference: list[Path] = Field(
        default_factory=list,
        description="pools every row is also compared against (e.g. the seed tasks); "
        "they are never written out",
    )
    threshold: float = Field(0.7, ge=0.0, le=1.0, description="paper: drop if ROUGE-L > 0.7")
    tokenizer: Literal["rouge", "unicode"] = Field(
        "rouge",
        description="rouge = rouge_score's [a-z0-9] tokens (the paper's); unicode = "
        "letters and digits of every script, CJK per character",
    )
    novelty: bool = Field(True, description="False skips the ROUGE-L stage (rules only)")
    rules: RuleConfig = Field(default_factory=RuleConfig)
    skip_bad_rows: bool = Field(
        False, description="count unreadable rows (kept in rejected.jsonl) instead of stopping"
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="processes; 2 overlaps reading/tokenizing with the novelty "
        "stage [default: 2 when the machine has 2+ cores]",
    )
    output_format: Literal["tasks", "original"] = Field(
        "tasks",
        description="tasks = the Task schema (usable as seeds); original = each kept "
        "row exactly as it was read",
    )

    def resolved_output_dir(self) -> Path:
        if self.output_dir is not None:
            return self.output_dir
        return Path("outputs") / f"filter-{self.input.name.split('.')[0]}"


def load_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML or TOML config file into a dict (data only, never executed)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    if path.suffix.lower() == ".toml":
        try:
            data: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    elif path.suffix.lower() in {".yaml", ".yml"}:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    else:
        raise ConfigError(f"{path}: config files must end in .yaml, .yml or .toml")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of option names to values")
    return data


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


C = TypeVar("C", bound=BaseModel)


def build_config(model: type[C], file: str | os.PathLike[str] | None, flags: dict[str, Any]) -> C:
    """defaults < file < flags. `flags` holds only the options the user actually gave."""
    data = load_config_file(file) if file is not None else {}
    data = _deep_merge(data, {k: v for k, v in flags.items() if v is not None})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "config"
            msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"'{key}': {msg}")
        where = f"{file}: " if file is not None else ""
        raise ConfigError(f"{where}bad configuration: " + "; ".join(problems)) from None
