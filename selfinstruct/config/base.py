"""How options are declared, and how configs are read from files.

Every option of every command is declared once, as a pydantic field made with `option()`: its
type, default, one-line help and bounds. The command line is built from those fields
(`cli_build.py`), config files are validated by the same models, and precedence is always
built-in defaults < config file < command-line flags. Unknown keys are rejected with their name,
so a typo never silently falls back to a default. Config files are parsed as data only
(`yaml.safe_load`, `tomllib`): nothing in them is ever executed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from selfinstruct.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# Files shipped inside the package: prompt templates, the default seed tasks, the default
# held-out evaluation set. (The repository's top-level prompts/ and seed_tasks/ point here.)
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
PROMPTS_DIR = DATA_DIR / "prompts"
SEED_TASKS = DATA_DIR / "seed_tasks" / "seed_tasks.jsonl"
EVAL_TASKS = DATA_DIR / "eval_tasks.jsonl"

_MISSING: Any = ...


def option(
    default: Any = _MISSING,
    help: str = "",
    *,
    default_factory: Any = None,
    flag: str | None = None,
    short: str | None = None,
    positional: bool = False,
    cli: bool = True,
    clearable: bool = False,
    prefix: str | None = None,
    may_change: bool = False,
    group: str | None = None,
    trl: str | tuple[str, ...] | None = None,
    **bounds: Any,
) -> Any:
    """A config field and everything the command line needs to offer it.

    `flag`: the long flag when it is not the field name (`--target` for `target_tasks`); for a
    boolean, both forms (`--chat/--completions`). `short`: a one-letter alias. `positional`: an
    argument rather than an option. `cli=False`: config files only (maps, tuples). `clearable`:
    a list option also gets `--no-NAME`, which sets it to the empty list. `prefix`: for a nested
    config, the prefix of its options' flags (`instruction-` gives `--instruction-max-tokens`).
    `may_change`: the option may differ when a run is resumed (where the model is served, how
    patiently, how much to spend: not what the run decides); the others must stay the same.
    `group`: the heading it is listed under in `--help` (default: its options class's heading).
    `trl`: the TRL `SFTConfig` field(s) this option is handed to, named once here (finetune).
    """
    extra = {
        key: value
        for key, value in (
            ("flag", flag),
            ("short", short),
            ("positional", positional or None),
            ("cli", None if cli else False),
            ("clearable", clearable or None),
            ("prefix", prefix),
            ("may_change", may_change or None),
            ("group", group),
            ("trl", [trl] if isinstance(trl, str) else list(trl) if trl else None),
        )
        if value is not None
    }
    if default_factory is not None:
        return Field(
            default_factory=default_factory, description=help, json_schema_extra=extra, **bounds
        )
    return Field(default, description=help, json_schema_extra=extra, **bounds)


def resume_key(config: BaseModel, **resolved: Any) -> dict[str, Any]:
    """The settings a resumed run must share with the one it resumes: every option not marked
    `may_change`, with `resolved` values for options whose default was decided at run time."""
    fixed = {
        name
        for name, field in type(config).model_fields.items()
        if not (isinstance(extra := field.json_schema_extra, dict) and extra.get("may_change"))
    }
    return {**config.model_dump(mode="json", include=fixed), **resolved}


def resume_changes(config: BaseModel, before: dict[str, Any], **resolved: Any) -> list[str]:
    """The options whose value differs from the run's key `before`. An option the key does not
    have (it came with a later version) differs only if it is set away from its default."""
    now = resume_key(config, **resolved)
    fields = type(config).model_fields
    changed = []
    for name in sorted(set(before) | set(now)):
        if name not in before and name in fields:
            default = fields[name].get_default(call_default_factory=True)
            default = default.model_dump(mode="json") if isinstance(default, BaseModel) else default
            if now.get(name) == default:
                continue
        if before.get(name) != now.get(name):
            changed.append(name)
    return changed


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


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


C = TypeVar("C", bound=BaseModel)


def build_config(model: type[C], file: str | os.PathLike[str] | None, flags: dict[str, Any]) -> C:
    """defaults < file < flags. `flags` holds only the options the user actually gave."""
    data = load_config_file(file) if file is not None else {}
    data = deep_merge(data, flags)
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
