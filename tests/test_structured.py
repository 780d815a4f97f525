"""--structured: each stage asks for JSON held to a schema, validates it, asks again when
invalid, and counts what it could not read. The real engine's side is in test_vllm.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from selfinstruct.backends.base import Completion
from selfinstruct.backends.openai_compat import request_body
from selfinstruct.backends.scripted import ScriptedBackend
from selfinstruct.config import GenerateConfig, SamplingParams
from selfinstruct.errors import SelfInstructError
from selfinstruct.generate import run_generate
from selfinstruct.stages import classification, instances, instructions

TASKS = [
    "Plan a picnic for four friends in the park.",
    "Describe how a race car engine works.",
    "Write a haiku about autumn leaves.",
    "Explain photosynthesis to a child.",
    "List three tips for saving money on groceries.",
    "Suggest a name for a small bakery.",
    "Summarize the main causes of rain.",
    "Give an example of a prime number above fifty.",
    "Compose a short toast for a wedding.",
    "Recommend a book for a long flight.",
    "Outline the steps to change a flat tire.",
    "Translate good morning into French.",
    "Name two planets with rings.",
    "Invent a riddle about a clock.",
    "Convert ten miles into kilometres.",
]


def structured_replies() -> tuple[ScriptedBackend, Counter[str]]:
    """JSON answers for every stage; the picnic task's instances come back invalid once and
    the race task's never validate."""
    asked: Counter[str] = Counter()
    lists = iter(range(1000))

    def rule(text: str) -> str | Completion | None:
        asked[text] += 1
        if 'key "instructions"' in text:
            n = next(lists)
            return json.dumps({"instructions": TASKS[n * 3 : n * 3 + 3] or ["Sing."]})
        if '{"is_classification"' in text:
            return '{"is_classification": false}'
        if 'key "instances"' in text:
            task = text.rsplit("Task:", 1)[-1]
            if "race car" in task:
                return Completion(text='{"instances": [{"input": "", "outp', finish_reason="length")
            if "picnic" in task and asked[text] == 1:
                return 'Sure! {"instances": []}'
            return json.dumps({"instances": [{"input": "", "output": f"Step one for {task[:30]}"}]})
        return None

    return ScriptedBackend(answers=[rule], canned=False, chat=True), asked


def test_every_stage_asks_for_json_and_reads_it(tmp_path: Path) -> None:
    backend, _ = structured_replies()
    cfg = GenerateConfig(
        run_dir=tmp_path / "run", backend="scripted", target_tasks=6, window=2, structured=True
    )
    summary = run_generate(cfg, backend)
    assert summary.status == "done" and summary.accepted >= 6
    schemas = {json.loads(p.json_schema)["title"] for _, p in backend.calls if p.json_schema}
    assert schemas == {"InstructionList", "ClassificationAnswer", "InputFirstReply"}
    assert all(p.json_schema for _, p in backend.calls)
    # The picnic task was asked again once and kept; the race task, cut off three times (the
    # first ask and two retries, each with twice the tokens), counts as not read.
    journal = [json.loads(line) for line in (tmp_path / "run" / "requests.jsonl").open()]
    retries = [e["id"] for e in journal if ":retry" in e["id"]]
    assert any(r.endswith(":retry1") for r in retries)
    assert any(r.endswith(":retry2") for r in retries)
    assert max(p.max_tokens for _, p in backend.calls) == cfg.instance_sampling.max_tokens * 4
    tasks = [json.loads(line) for line in (tmp_path / "run" / "tasks.jsonl").open()]
    assert any("picnic" in t["instruction"] for t in tasks)
    assert not any("race car" in t["instruction"] for t in tasks)
    coverage = summary.parse_coverage
    assert coverage.instances.reasons.get("truncated", 0) >= 1
    assert coverage.instructions.partly == coverage.instructions.not_read == 0
    # Resumed, it asks nothing: every attempt is in the journal under its own id.
    again = run_generate(cfg, ScriptedBackend(canned=False, chat=True))
    assert again.parse_coverage == coverage and again.accepted == summary.accepted


def test_structured_replies_parse_and_schemas_are_strict() -> None:
    parsed = instructions.parse_json(
        '{"instructions": ["9. Plan a trip.", "**Cook**: a stew"]}', False
    )
    assert parsed.instructions == ["Plan a trip.", "a stew"]
    assert instructions.parse_json("1. Plan a trip.", False).dropped[0][0] == "invalid_json"
    assert instructions.parse_json('{"instructions": ["a', True).dropped[0][0] == "truncated"
    labelled = instances.parse_json(
        '{"instances": [{"class_label": "Spam", "input": "Win money now"}]}', True, False
    )
    assert [(i.input, i.output) for i in labelled.instances] == [("Win money now", "Spam")]
    schema = json.loads(instances.reply_schema(True, 5))
    item = schema["$defs"]["_Labelled"]
    assert list(item["properties"]) == ["class_label", "input"]  # output-first
    assert item["additionalProperties"] is False and "minLength" not in item["properties"]["input"]
    assert schema["properties"]["instances"]["maxItems"] == 5
    assert classification.reply_is_valid('{"is_classification": true}')
    assert not classification.reply_is_valid("Yes")


def test_the_server_is_asked_for_the_schema() -> None:
    params = SamplingParams(json_schema=classification.REPLY_SCHEMA)
    body = request_body("m", True, [{"role": "user", "content": "x"}], params)
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["is_classification"]
    assert "response_format" not in request_body("m", True, "x", SamplingParams())


def test_structured_needs_chat_and_a_backend_that_enforces_it(tmp_path: Path) -> None:
    cfg = GenerateConfig(run_dir=tmp_path / "run", backend="scripted", structured=True)
    with pytest.raises(SelfInstructError, match="use chat prompts"):
        run_generate(cfg, ScriptedBackend(chat=False))
    local = ScriptedBackend(chat=True)
    local.name = "local"
    with pytest.raises(SelfInstructError, match="local transformers backend cannot"):
        run_generate(cfg, local)
