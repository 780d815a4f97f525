"""Base models tune and evaluate: a tokenizer without a chat template gets a plain instruction
format, the same in `finetune` and `eval`, named in the summaries and the adapter's card."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from tiny_model import save_tiny_llama

from selfinstruct import prompt_format
from selfinstruct.errors import SelfInstructError
from selfinstruct.export import Example

TASKS = [
    ("Name the colour of the sky.", "", "The sky is blue."),
    ("Add the two numbers.", "2 and 3", "5"),
    ("Give the opposite of the word.", "hot", "cold"),
    ("Say hello politely.", "", "Hello, nice to meet you."),
    ("Is the number even?", "4", "Yes"),
    ("Translate to French.", "good morning", "bonjour"),
]


def _example(instruction: str, given: str, output: str) -> Example:
    return Example(
        prompt=f"{instruction}\n\n{given}".strip(),
        response=output,
        instruction=instruction,
        input=given,
        task_id="t",
    )


class _NoTemplate:
    chat_template = None


def test_auto_picks_alpaca_without_a_template_and_chat_is_refused() -> None:
    assert prompt_format.resolve("auto", _NoTemplate()) == "alpaca"
    assert prompt_format.resolve("paper", _NoTemplate()) == "paper"
    with pytest.raises(SelfInstructError, match="no chat template"):
        prompt_format.resolve("chat", _NoTemplate(), "gemma")


def test_layouts() -> None:
    with_input = _example("Add the two numbers.", "2 and 3", "5")
    text = prompt_format.prompt("alpaca", with_input)
    assert isinstance(text, str)
    assert (
        "### Instruction:\nAdd the two numbers.\n\n### Input:\n2 and 3\n\n### Response:\n" in text
    )
    assert (
        prompt_format.prompt("paper", with_input)
        == "Add the two numbers.\n\nInput: 2 and 3\n\nOutput:"
    )
    assert prompt_format.completion("paper", with_input) == " 5"
    alone = _example("Say hello politely.", "", "Hello.")
    assert "### Input" not in str(prompt_format.prompt("alpaca", alone))
    assert prompt_format.training_row("alpaca", alone) == {
        "prompt": prompt_format.prompt("alpaca", alone),
        "completion": "Hello.",
    }
    chat = prompt_format.training_row("chat", alone)
    assert chat["prompt"] == [{"role": "user", "content": alone.prompt}]


def _tiny_model(folder: Path) -> Path:
    """A 2-layer Llama with a word-level tokenizer made here: no chat template, no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    words = " ".join(f"{a} {b} {c}" for a, b, c in TASKS)
    texts = [words, prompt_format.ALPACA_WITH_INPUT, prompt_format.ALPACA_WITHOUT_INPUT]
    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    raw.train_from_iterator(
        texts, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<s>", "</s>"])
    )
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", raw.token_to_id("<s>"))]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
    )
    assert not tokenizer.chat_template
    return save_tiny_llama(tokenizer, folder, hidden_size=32, intermediate_size=64)


def test_loss_masks_exactly_the_prompt(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_tiny_model(tmp_path / "m"))
    example = _example("Add the two numbers.", "2 and 3", "5")
    ids, prompt_len = prompt_format.tokenized(tokenizer, "alpaca", example)
    prompt_ids = tokenizer(str(prompt_format.prompt("alpaca", example)))["input_ids"]
    assert ids[:prompt_len] == prompt_ids
    assert ids[prompt_len:] == [tokenizer.convert_tokens_to_ids("5"), tokenizer.eos_token_id]


needs_training = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("trl", "peft")),
    reason="fine-tuning extras are not installed",
)


@pytest.mark.slow
@needs_training
@pytest.mark.parametrize("kind", ["alpaca-json", "jsonl", "user-oriented"])
def test_a_base_model_tunes_and_evaluates_in_the_same_format(tmp_path: Path, kind: str) -> None:
    from selfinstruct.config import EvalConfig, FinetuneConfig
    from selfinstruct.evaluation import run_eval
    from selfinstruct.finetune import run_finetune

    model = _tiny_model(tmp_path / "tiny")
    rows = [{"instruction": a, "input": b, "output": c} for a, b, c in TASKS]
    if kind == "alpaca-json":
        data = tmp_path / "train.json"
        data.write_text(json.dumps(rows))
    elif kind == "jsonl":
        data = tmp_path / "train.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:  # the paper's user-oriented layout: id, motivation_app, instruction, instances
        data = tmp_path / "user_oriented.jsonl"
        data.write_text(
            "".join(
                json.dumps(
                    {
                        "id": f"user_oriented_task_{i}",
                        "motivation_app": "Tests",
                        "instruction": r["instruction"],
                        "instances": [{"input": r["input"], "output": r["output"]}],
                    }
                )
                + "\n"
                for i, r in enumerate(rows)
            )
        )
    out = tmp_path / "ft"
    summary = run_finetune(
        FinetuneConfig(
            data=data,
            base_model=str(model),
            output_dir=out,
            max_steps=6,
            batch_size=3,
            learning_rate=5e-3,
            logging_steps=2,
            val_fraction=0.0,
            bf16=False,
        )
    )
    assert summary.prompt_format == "alpaca" and summary.steps == 6
    assert prompt_format.recorded(out / "adapter") == "alpaca"
    assert "`alpaca` prompt format" in (out / "adapter" / "README.md").read_text()
    result = run_eval(
        EvalConfig(
            data=data,
            base_model=str(model),
            adapter=[str(out / "adapter")],
            output_dir=tmp_path / "eval",
            engine="transformers",
            max_new_tokens=4,
            bootstrap_samples=200,
        )
    )
    assert result.prompt_format == "alpaca" and result.engine == "transformers"
    base, tuned = result.variants
    assert (base.name, tuned.name) == ("base", "tuned")
    assert tuned.loss < base.loss  # it learnt the references it was trained on
    assert tuned.intervals["loss"].low <= tuned.loss <= tuned.intervals["loss"].high
    (diff,) = result.differences
    assert (diff.variant, diff.against) == ("tuned", "base")
    assert diff.metrics["loss"].estimate == pytest.approx(tuned.loss - base.loss)
    assert result.trained_on["tuned"].data == str(data) and result.trained_on["tuned"].tasks == 6
    lines = (tmp_path / "eval" / "tuned.jsonl").read_text().splitlines()
    first: dict[str, Any] = json.loads(lines[0])
    assert len(lines) == len(TASKS) and "### Instruction:" in first["prompt"]
    assert {"loss", "ended", "response_tokens", "rouge_l"} <= set(first)
    with pytest.raises(SelfInstructError, match="no chat template"):
        run_eval(
            EvalConfig(
                data=data,
                base_model=str(model),
                output_dir=tmp_path / "eval-chat",
                engine="transformers",
                prompt_format="chat",
            )
        )


def test_local_generation_counts_tokens_while_a_batch_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long local batch used to leave the progress line still for minutes: the tokens each
    step writes are counted into the backend's stats as the batch runs."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from selfinstruct.backends import local
    from selfinstruct.backends.base import SamplingParams
    from selfinstruct.backends.local import LocalBackend

    folder = _tiny_model(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    backend = LocalBackend.from_loaded(model, tokenizer, "tiny", chat=False, batch_size=4)
    seen: list[int] = []
    read: list[tuple[int, int]] = []
    counter = local._TokenCounter

    passes: list[int] = []

    class Watching(counter):  # type: ignore[misc, valid-type]
        def read(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            super().read(module, args, kwargs)
            passes.append(backend.stats().live_read)

        def put(self, value: Any) -> None:
            super().put(value)
            stats = backend.stats()
            seen.append(stats.live_tokens)
            read.append((stats.live_read, stats.live_prompt))

    monkeypatch.setattr(local, "_TokenCounter", Watching)
    # The prompts are read in several passes, 4 positions each, the 3 rows in one group.
    monkeypatch.setattr(local, "PREFILL_CHUNK", 4)
    monkeypatch.setattr(local, "PREFILL_POSITIONS", 4)
    prompts = ["Add the two numbers.", "Sort the list of numbers from the smallest up."]
    backend.generate(prompts + prompts[:1], SamplingParams(temperature=0, max_tokens=6))
    steps = [n for n in seen if n]
    assert len(steps) >= 3 and steps == sorted(steps) and steps[0] == 3  # 3 rows a step
    padded = 3 * len(tokenizer(prompts[1])["input_ids"])
    # Told the prompt: all but the last tokens read (by the grouped reading, before generate).
    assert read[0] == (padded - 3, padded)
    assert read[1] == (padded, padded)  # the first token written: every prompt read
    assert passes[:2] == [3 * 4, 3 * 8]  # read 4 positions a pass, the 3 rows at once
    stats = backend.stats()  # back to zero between batches
    assert (stats.live_tokens, stats.live_read, stats.live_prompt) == (0, 0, 0)


def test_the_progress_line_shows_what_a_running_batch_reads_and_writes() -> None:
    from selfinstruct.backends.base import BackendStats
    from selfinstruct.display import backend_line

    reading = BackendStats(in_flight=32, live_prompt=12_192, live_read=8_192)
    assert "reading prompts: 8,192 of 12,192 tokens" in backend_line(reading)
    writing = reading.model_copy(update={"live_read": 12_192, "live_tokens": 440})
    line = backend_line(writing)
    assert "writing: 440 tokens so far" in line and "reading" not in line
    # A summary is written once the loop stopped: no batch's progress in it.
    assert backend_line(writing, live=False) == "in flight 32"
