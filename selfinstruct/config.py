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
from selfinstruct.rules import RuleConfig

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
        problems = [f"'{key}': {msg}" for key, msg in validation_problems(exc, "config")]
        where = f"{file}: " if file is not None else ""
        raise ConfigError(f"{where}bad configuration: " + "; ".join(problems)) from None


def validation_problems(exc: ValidationError, root: str = "") -> list[tuple[str, str]]:
    """(dotted key, message) for each error; a misspelt key reads "unknown option"."""
    return [
        (
            ".".join(str(p) for p in err["loc"]) or root,
            "unknown option" if err["type"] == "extra_forbidden" else err["msg"],
        )
        for err in exc.errors()
    ]


class SamplingConfig(BaseModel):
    """Decoding settings for one stage (mapped to each backend's names)."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.5, gt=0.0, le=1.0)
    max_tokens: int = Field(1024, ge=1)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)


class InstructionSampling(SamplingConfig):
    """Paper: temperature 0.7, top_p 0.5, presence penalty 2, up to 1024 tokens."""

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.5, gt=0.0, le=1.0)
    max_tokens: int = Field(1024, ge=1)
    presence_penalty: float = Field(2.0, ge=-2.0, le=2.0)


class InstanceSampling(SamplingConfig):
    """Paper: greedy decoding, presence penalty 1.5, about 300 tokens."""

    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(350, ge=1)
    presence_penalty: float = Field(1.5, ge=-2.0, le=2.0)


class GenerateConfig(BaseModel):
    """`selfinstruct generate`: the Self-Instruct bootstrapping loop."""

    model_config = ConfigDict(extra="forbid")

    run_dir: Path = Field(
        Path("outputs/run"),
        description="run directory; the same command with the same run directory resumes",
    )
    seed_tasks: Path = Field(
        Path(__file__).resolve().parents[1] / "seed_tasks" / "seed_tasks.jsonl",
        description="the human-written tasks the loop starts from",
    )
    prompts_dir: Path | None = Field(None, description="templates folder (default: prompts/)")
    backend: Literal["local", "openai", "vllm", "scripted"] = Field(
        "local", description="local = transformers on CPU/GPU with the bundled SmolLM2-135M"
    )
    model: str | None = Field(None, description="model id or path (default: per backend)")
    chat: bool | None = Field(
        None,
        description="chat prompts (default: true for openai, "
        "local and vllm use the model's chat template when it has one)",
    )
    base_url: list[str] = Field(
        default_factory=list,
        description="OpenAI-compatible servers; "
        "requests are spread over them (default: $OPENAI_BASE_URL)",
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="environment variable holding the "
        "key; the key itself is never written anywhere",
    )
    target_tasks: int = Field(100, ge=1, description="stop when this many tasks are accepted")
    seed: int = Field(0, description="random seed: the same seed gives the same sampling")
    prompts_per_round: int = Field(
        8, ge=1, description="instruction prompts per round, sent as one batch"
    )
    human_examples: int = Field(6, ge=0, description="paper: 6 seed instructions per prompt")
    machine_examples: int = Field(2, ge=0, description="paper: 2 machine instructions")
    max_new_per_prompt: int = Field(
        7,
        ge=1,
        description="new instructions per prompt; paper: 7 (8 shown, the list stops at item 16)",
    )
    classification_prompts: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="share of instruction prompts that show only classification seeds and ask "
        "for classification tasks (the paper's --use_clf_seed_tasks_only); 0 turns it off",
    )
    instruction_sampling: InstructionSampling = Field(default_factory=InstructionSampling)
    instance_sampling: InstanceSampling = Field(default_factory=InstanceSampling)
    classification_examples: int = Field(12, ge=2, description="few-shot yes/no examples")
    instance_examples: int = Field(3, ge=1, description="few-shot tasks in instance prompts")
    demonstrations: Literal["similar", "random"] = Field(
        "similar",
        description="few-shot seeds for the classification and instance prompts: the most "
        "similar to each task (better on small models), or one fixed random set (the paper)",
    )
    max_instances: int = Field(5, ge=1, description="paper: at most 5 instances per task")
    threshold: float = Field(0.7, ge=0.0, le=1.0, description="paper: drop if ROUGE-L > 0.7")
    tokenizer: Literal["rouge", "unicode"] = "rouge"
    rules: RuleConfig = Field(default_factory=RuleConfig)
    no_progress_rounds: int = Field(
        10,
        ge=1,
        description="stop after this many rounds in a row accept nothing (never loop forever)",
    )
    max_requests: int | None = Field(None, ge=1)
    max_tokens_total: int | None = Field(None, ge=1, description="prompt + completion tokens")
    max_cost: float | None = Field(None, gt=0, description="USD, from the price table")
    prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="model -> (USD per 1M prompt tokens, per 1M "
        "completion tokens) for the cost estimate",
    )
    concurrency: int = Field(16, ge=1, description="openai: requests in flight at most")
    timeout: float = Field(120.0, gt=0, description="openai: seconds per request")
    max_retries: int = Field(6, ge=0, description="openai: retries per request")
    device: str | None = Field(None, description="local: cpu, cuda, ... (default: best)")
    tensor_parallel_size: int = Field(1, ge=1, description="vllm")
    data_parallel_size: int = Field(1, ge=1, description="vllm")

    def resume_key(self) -> dict[str, Any]:
        """The settings a resumed run must share with the original (budgets may change)."""
        keep = self.model_dump(
            mode="json",
            exclude={
                "target_tasks",
                "max_requests",
                "max_tokens_total",
                "max_cost",
                "prices",
                "concurrency",
                "timeout",
                "max_retries",
                "device",
                "no_progress_rounds",
            },
        )
        return keep
