"""The command line is built from the configs: every option once, with the config's default."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from selfinstruct import config as configs
from selfinstruct.cli import app
from selfinstruct.cli_build import _shown, field_specs
from selfinstruct.errors import EXIT_CODES

runner = CliRunner()
COMMANDS = {
    "generate": configs.GenerateConfig,
    "plan": configs.PlanConfig,
    "filter": configs.FilterConfig,
    "export": configs.ExportConfig,
    "finetune": configs.FinetuneConfig,
    "eval": configs.EvalConfig,
    "run": configs.RunConfig,
    "report": configs.ReportConfig,
    "review": configs.ReviewConfig,
    "audit": configs.AuditConfig,
}


def test_every_command_is_covered_here() -> None:
    # A new command must be added to COMMANDS, so that the checks below run on it too.
    assert set(get_command(app).commands) == set(COMMANDS)  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_reads_cleanly_and_says_each_default_once(name: str) -> None:
    result = runner.invoke(app, [name, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    # Help is wrapped at spaces and after hyphens ("vllm-" / "cpu").
    text = re.sub(r"-\s+", "-", re.sub(r"\s+", " ", result.output))
    options = re.split(r"(?i)\boptions:", text, maxsplit=1)[1]  # under every heading
    assert not re.search(r"<[a-z][a-z\[\] ]*>", options)  # no "<bool>", "<list[str]>" metavars
    for spec in field_specs(COMMANDS[name]):
        if spec.positional:
            assert spec.path[-1].upper() in text
            continue
        assert spec.flags[0].split("/")[0] in options, spec.flags
        field = _field(COMMANDS[name], spec.path)
        if spec.positional or field.is_required():
            assert "[required]" in spec.help or spec.positional
            continue
        default = field.get_default(call_default_factory=True)
        shown = f"[default: {_shown(default)}]"
        if "(default:" in (field.description or "") or default in (None, [], ()):
            assert "[default:" not in spec.help  # the help says it in words, once
            continue
        # The default the help states is the config's default, and it is stated once.
        help_text = re.sub(r"-\s+", "-", re.sub(r"\s+", " ", spec.help))
        assert shown in help_text and help_text.count("default") == 1, spec.flags
        assert help_text in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_flags_default_to_not_given(name: str) -> None:
    # Any default on the command line would override a config file; only the config has them.
    command = get_command(app).commands[name]  # type: ignore[attr-defined]
    for param in command.params:
        if param.name in {"help", "quiet", "dry_run"} or param.name.endswith("__clear"):
            assert param.default in (False, None)
            continue
        assert param.default is None or param.required, param.name


def _field(model: type, path: tuple[str, ...]):  # type: ignore[no-untyped-def]
    for key in path[:-1]:
        model = model.model_fields[key].annotation
    return model.model_fields[path[-1]]


def test_every_config_field_is_an_option() -> None:
    for name, model in COMMANDS.items():
        names = {spec.path for spec in field_specs(model)}
        for field_name, field in model.model_fields.items():
            extra = field.json_schema_extra or {}
            if extra.get("cli") is False or (
                isinstance(field.annotation, type) and hasattr(field.annotation, "model_fields")
            ):
                continue
            assert (field_name,) in names, (name, field_name)


def test_flags_reach_the_config_and_override_a_file(tmp_path: Path) -> None:
    config = tmp_path / "gen.yaml"
    config.write_text("target_tasks: 50\nwindow: 3\nrules:\n  min_words: 6\n")
    run_dir = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "generate",
            "--dry-run",
            "-c",
            str(config),
            "-o",
            str(run_dir),
            "-n",
            "4",
            "--instruction-max-tokens",
            "77",
            "--no-keywords",
            "--max-words",
            "0",
            "--allow-punctuation-start",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    cfg = json.loads((run_dir / "manifest.json").read_text())["config"]
    assert cfg["target_tasks"] == 4  # flag over file
    assert cfg["window"] == 3  # file over default
    assert cfg["instruction_sampling"]["max_tokens"] == 77
    assert cfg["instruction_sampling"]["temperature"] == 0.7  # untouched nested default
    assert cfg["rules"]["min_words"] == 6 and cfg["rules"]["max_words"] is None  # 0 = off
    assert cfg["rules"]["keywords"] == [] and cfg["rules"]["drop_punctuation_start"] is False
    assert cfg["backend"] == "scripted"


def test_bad_values_are_checked_once_by_the_config() -> None:
    result = runner.invoke(app, ["generate", "--dry-run", "-n", "0"])
    assert result.exit_code == EXIT_CODES["config"]
    assert "'target_tasks'" in result.output and "greater than or equal to 1" in result.output
    result = runner.invoke(app, ["export", "x.jsonl"])
    assert result.exit_code == EXIT_CODES["config"] and "'output'" in result.output


def test_one_table_of_exit_codes() -> None:
    from selfinstruct.errors import BackendError, RunLockedError, SelfInstructError

    assert SelfInstructError.exit_code == EXIT_CODES["config"] == 2
    assert BackendError.exit_code == EXIT_CODES["backend"] == 3
    assert RunLockedError.exit_code == EXIT_CODES["locked"] == 4
    assert (EXIT_CODES["budget"], EXIT_CODES["stalled"], EXIT_CODES["interrupted"]) == (5, 6, 130)


def test_every_exit_code_is_in_the_docs_table_with_its_meaning() -> None:
    from selfinstruct.errors import EXIT_MEANINGS

    table = (Path(__file__).resolve().parents[1] / "docs" / "jobs.md").read_text()
    section = table.split("## Exit codes", 1)[1]
    rows = dict(re.findall(r"(?m)^\| (\d+) \| (.+?) \|$", section))
    assert set(EXIT_CODES) == set(EXIT_MEANINGS)
    assert {str(code): EXIT_MEANINGS[name] for name, code in EXIT_CODES.items()} == rows


def test_command_signatures_are_built_not_written() -> None:
    # The handlers take the options as one dict; their flags come from the configs.
    from selfinstruct import cli

    for handler in (cli.generate, cli.filter_command, cli.export, cli.finetune, cli.report):
        assert next(iter(inspect.signature(handler).parameters)) == "options"
