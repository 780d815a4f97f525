"""Backends are found in a registry (built-in, and installed packages' entry points); each gets
only its own options, and an option the chosen backend would ignore is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO
from typer.testing import CliRunner

from selfinstruct.backends.registry import BUILT_IN, options_for, registry
from selfinstruct.cli import app
from selfinstruct.config import BackendOptions, GenerateConfig
from selfinstruct.errors import ConfigError

runner = CliRunner()


def test_every_backend_option_is_a_generate_option_with_the_same_default() -> None:
    """Walk every built-in backend's own options model against the command line's: the same
    field, the same default (declared once), listed under a heading that names the backend."""
    generate = GenerateConfig.model_fields
    help_text = runner.invoke(app, ["generate", "--help"], terminal_width=200).output
    for spec in BUILT_IN:
        for name, field in spec.options.model_fields.items():
            assert name in generate, (spec.name, name)
            ours = field.get_default(call_default_factory=True)
            assert generate[name].get_default(call_default_factory=True) == ours, name
            assert generate[name].description == field.description, name
        if spec.options.model_fields:
            assert f"Backend: {spec.name}" in help_text or any(
                spec.name in line and "Backend:" in line for line in help_text.splitlines()
            ), spec.name
    assert set(BackendOptions.model_fields) == {
        n for spec in BUILT_IN for n in spec.options.model_fields
    }


def test_each_backend_gets_only_its_options() -> None:
    cfg = GenerateConfig(backend="openai", model="m", concurrency=7, base_url=["http://x/v1"])
    openai = options_for("openai", cfg, cfg.model_fields_set)
    assert type(openai).__name__ == "OpenAIOptions" and openai.concurrency == 7  # type: ignore[attr-defined]
    batch = options_for("openai-batch", cfg, ())
    assert not hasattr(batch, "concurrency") and batch.base_url == ["http://x/v1"]  # type: ignore[attr-defined]
    assert options_for("scripted", cfg, ()).model_dump() == {}


def test_an_option_the_backend_ignores_is_refused() -> None:
    cfg = GenerateConfig(backend="local", concurrency=32)
    with pytest.raises(ConfigError, match=r"--concurrency \(an option of openai\)"):
        options_for("local", cfg, cfg.model_fields_set)
    result = runner.invoke(app, ["generate", "-b", "vllm", "--batch-poll", "5", "-n", "1"])
    assert result.exit_code == 2 and "an option of openai-batch" in result.output
    result = runner.invoke(app, ["generate", "-b", "nope", "-n", "1"])
    assert result.exit_code == 2 and "unknown backend 'nope'" in result.output


PLUGIN = """
    from pydantic import Field

    from selfinstruct.backends.registry import BackendSpec
    from selfinstruct.backends.scripted import ScriptedBackend
    from selfinstruct.config import Options


    class EchoOptions(Options):
        greeting: str = Field("hello", description="what the echo backend says first")
        times: int = Field(1, ge=1)


    def open_echo(model, options, chat, run_dir):
        # The backend receives its own options model, and nothing else.
        assert type(options) is EchoOptions, type(options)
        (run_dir.parent / "echo-options.json").write_text(options.model_dump_json())
        backend = ScriptedBackend(chat=bool(chat))
        backend.name = "echo"
        return backend


    SPEC = BackendSpec("echo", "a test plugin", EchoOptions, "echo_plugin:open_echo")
"""


def test_a_package_adds_a_backend_with_an_entry_point(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "echo_plugin").mkdir(parents=True)
    (site / "echo_plugin" / "__init__.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "echo_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[selfinstruct.backends]\necho = echo_plugin:SPEC\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    base = [sys.executable, "-m", "selfinstruct.cli", "generate", "-b", "echo", "-n", "3", "-q"]
    done = subprocess.run(
        [*base, "-o", str(tmp_path / "run"), "--backend-option", "greeting=hi",
         "--backend-option", "times=2"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "echo-options.json").read_text()) == {
        "greeting": "hi",
        "times": 2,
    }
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["backend"] == "echo" and manifest["counts"]["accepted"] >= 3
    refused = subprocess.run(
        [*base, "-o", str(tmp_path / "r2"), "--backend-option", "colour=red"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 2 and "the echo backend has no such option" in refused.stderr
    listed = subprocess.run(
        [*base[:4], "-b", "missing", "-n", "1"], capture_output=True, text=True, env=env
    )
    assert listed.returncode == 2 and "echo" in listed.stderr  # installed backends are named


def test_the_built_in_backends_are_registered() -> None:
    assert {"local", "openai", "openai-batch", "vllm", "scripted"} <= set(registry())
