"""Export: one example per instance, seeded template choice, every format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfinstruct.errors import SelfInstructError
from selfinstruct.export import ExportConfig, export, to_examples
from selfinstruct.records import Instance, Task

TASKS = [
    Task(
        id="a",
        instruction="Add the numbers.",
        instances=[Instance(input="2, 3", output="5"), Instance(input="10, 1", output="11")],
    ),
    Task(id="b", instruction="Name a planet.", instances=[Instance(output="Mars")]),
    Task(id="c", instruction="No instances here."),
]


def write_tasks(path: Path) -> Path:
    path.write_text("".join(t.model_dump_json() + "\n" for t in TASKS))
    return path


def test_one_example_per_instance_and_seeded_templates() -> None:
    examples = to_examples(TASKS, seed=1, max_per_task=None).examples
    assert [e.task_id for e in examples] == ["a", "a", "b"]
    assert "2, 3" in examples[0].prompt and examples[0].response == "5"
    assert examples[2].prompt.endswith("Name a planet.")
    assert to_examples(TASKS, seed=1, max_per_task=None).examples == examples
    prompts = {
        e.prompt
        for s in range(20)
        for e in to_examples(TASKS[:1], seed=s, max_per_task=None).examples
    }
    assert len(prompts) > 2  # the templates vary with the seed


@pytest.mark.parametrize("fmt", ["alpaca", "messages", "prompt-completion", "sharegpt"])
def test_formats(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"out.{fmt}"
    summary = export(
        ExportConfig(
            source=write_tasks(tmp_path / "t.jsonl"), output=out, format=fmt, system="Be brief."
        )
    )
    assert summary.examples == 3 and summary.dropped == {}
    text = out.read_text()
    if fmt == "alpaca":
        rows = json.loads(text)
        assert rows[0] == {"instruction": "Add the numbers.", "input": "2, 3", "output": "5"}
        return
    rows = [json.loads(line) for line in text.splitlines()]
    if fmt == "messages":
        assert [m["role"] for m in rows[0]["messages"]] == ["system", "user", "assistant"]
        assert rows[0]["messages"][-1]["content"] == "5"
    elif fmt == "prompt-completion":
        assert rows[0]["completion"] == [{"role": "assistant", "content": "5"}]
        assert rows[0]["prompt"][-1]["role"] == "user"
    else:
        assert [t["from"] for t in rows[2]["conversations"]] == ["system", "human", "gpt"]


def test_hf_dataset_directory(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    export(
        ExportConfig(source=write_tasks(tmp_path / "t.jsonl"), output=tmp_path / "ds", format="hf")
    )
    loaded = datasets.load_from_disk(str(tmp_path / "ds"))
    assert len(loaded) == 3 and set(loaded.column_names) == {"prompt", "completion"}


def test_run_directory_and_empty_input(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    write_tasks(run / "tasks.jsonl")
    assert export(ExportConfig(source=run, output=tmp_path / "x.jsonl")).examples == 3
    empty = tmp_path / "empty.jsonl"
    empty.write_text(TASKS[2].model_dump_json() + "\n")
    with pytest.raises(SelfInstructError, match="nothing to export"):
        export(ExportConfig(source=empty, output=tmp_path / "y.jsonl"))
    with pytest.raises(SelfInstructError, match=r"without tasks\.jsonl"):
        export(ExportConfig(source=tmp_path, output=tmp_path / "z.jsonl"))


def test_judge_letter() -> None:
    from selfinstruct.judge import grade_letter as judge_letter

    assert judge_letter("B") == "B"
    assert judge_letter(" A - correct") == "A"
    assert judge_letter("I would say C.") == "C"
    assert judge_letter("no idea") is None


def test_duplicates_are_written_once_and_tasks_are_capped(tmp_path: Path) -> None:
    # Defect 13: identical pairs were exported twice, and a task with 7 instances gave 7 rows.
    seven = Task(
        id="s",
        instruction="Square it.",
        instances=[Instance(input=str(i), output=str(i * i)) for i in range(7)],
    )
    twice = Task(id="t", instruction="Name a planet.", instances=[Instance(output="Mars")] * 2)
    again = Task(id="u", instruction="Name a planet.", instances=[Instance(output="Mars")])
    built = to_examples([seven, twice, again], seed=0, max_per_task=5)
    assert [e.task_id for e in built.examples] == ["s"] * 5 + ["t"]
    assert dict(built.dropped) == {"over_cap": 2, "duplicate": 2}
    source = tmp_path / "t.jsonl"
    source.write_text("".join(t.model_dump_json() + "\n" for t in [seven, twice, again]))
    summary = export(ExportConfig(source=source, output=tmp_path / "o.jsonl", format="alpaca"))
    rows = json.loads((tmp_path / "o.jsonl").read_text())
    assert summary.examples == len(rows) == 6
    assert len({(r["instruction"], r["input"], r["output"]) for r in rows}) == 6
    assert len(to_examples([seven], seed=0, max_per_task=None).examples) == 7


def test_include_seed_tasks(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    write_tasks(run / "tasks.jsonl")
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        Task(
            id="seed_1", instruction="Say hi.", instances=[Instance(output="Hi!")]
        ).model_dump_json()
        + "\n"
    )
    (run / "manifest.json").write_text(json.dumps({"config": {"seed_tasks": str(seeds)}}))
    summary = export(ExportConfig(source=run, output=tmp_path / "o.jsonl", include_seeds=True))
    assert summary.examples == 4 and summary.seed_tasks == 1
    assert "Hi!" in (tmp_path / "o.jsonl").read_text()
    alone = tmp_path / "tasks.jsonl"
    write_tasks(alone)
    with pytest.raises(SelfInstructError, match="--seed-tasks"):
        export(ExportConfig(source=alone, output=tmp_path / "p.jsonl", include_seeds=True))


def _scripted_run(tmp_path: Path) -> Path:
    from selfinstruct.config import GenerateConfig
    from selfinstruct.generate import run_generate

    run = tmp_path / "run"
    run_generate(GenerateConfig(run_dir=run, backend="scripted", target_tasks=6, window=2))
    return run


def test_dataset_card_says_what_a_user_of_the_data_needs(tmp_path: Path) -> None:
    import yaml

    run = _scripted_run(tmp_path)
    out = tmp_path / "export" / "train.jsonl"
    summary = export(ExportConfig(source=run, output=out, format="prompt-completion"))
    card = (tmp_path / "export" / "README.md").read_text()
    assert summary.card_path == str(tmp_path / "export" / "README.md")
    header = yaml.safe_load(card.split("---")[1])
    assert header["license"] == "other" and header["language"] == ["en"]
    assert header["task_categories"] == ["text-generation"]
    assert header["size_categories"] == ["n<1K"]
    assert header["configs"][0]["data_files"][0]["path"] == "train.jsonl"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["seed_file_sha256"] in card  # which seeds, exactly
    assert "`scripted` backend" in card and "temperature=0.7, top_p=0.5" in card
    assert "ROUGE-L threshold 0.7" in card
    rejected = manifest["counts"]["rejected"]
    assert ("| instruction or task |" in card) == bool(rejected)
    assert "| instructions |" in card and "52,445" in card  # Table 1 beside the paper's
    assert f"{summary.examples} instruction-following examples" in card
    # A later export replaces its own card, but never a README it did not write.
    export(ExportConfig(source=run, output=out, format="alpaca"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "README.md").write_text("# my notes\n")
    with pytest.raises(SelfInstructError, match="not written by selfinstruct"):
        export(ExportConfig(source=run, output=tmp_path / "mine" / "t.jsonl"))
    assert (tmp_path / "mine" / "README.md").read_text() == "# my notes\n"
    assert not (tmp_path / "mine" / "t.jsonl").exists()
    export(ExportConfig(source=run, output=tmp_path / "mine" / "t.jsonl", card=False))


def test_card_for_any_instruction_file_and_the_hf_folder(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    src = write_tasks(tmp_path / "t.jsonl")
    export(ExportConfig(source=src, output=tmp_path / "ds", format="hf"))
    card = (tmp_path / "ds" / "README.md").read_text()
    assert "not a selfinstruct run" in card and "data-*.arrow" in card
    # No filter saw this file: the card must not say it passed one.
    assert "passed" not in card and "no selfinstruct filter ran" in card


def test_card_claims_only_the_filters_that_ran(tmp_path: Path) -> None:
    run = _scripted_run(tmp_path)
    export(ExportConfig(source=run, output=tmp_path / "a" / "t.jsonl"))
    card = (tmp_path / "a" / "README.md").read_text()
    assert "passed the paper's rule, novelty (ROUGE-L) and instance filters." in card
    from selfinstruct.config import FilterConfig
    from selfinstruct.filtering import run_filter

    filtered = tmp_path / "f"
    plain = write_tasks(tmp_path / "plain.jsonl")
    run_filter(FilterConfig(input=plain, output_dir=filtered, rules={"min_words": 0}))
    export(ExportConfig(source=filtered / "kept.jsonl", output=tmp_path / "b" / "t.jsonl"))
    card = (tmp_path / "b" / "README.md").read_text()
    assert "every task passed `selfinstruct filter`" in card and "no instance filter ran" in card


def test_push_to_hub_against_a_local_fake_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("huggingface_hub")
    from fake_hub import FakeHub

    run = _scripted_run(tmp_path)
    out = tmp_path / "export" / "train.jsonl"
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        with pytest.raises(SelfInstructError, match="HF_TOKEN"):
            export(ExportConfig(source=run, output=out, push_to_hub="me/data"))
        monkeypatch.setenv("HF_TOKEN", "hf_CANARY_export_token")
        summary = export(ExportConfig(source=run, output=out, push_to_hub="me/data"))
        assert summary.hub_url and "me/data" in summary.hub_url
        repo = hub.repos["me/data"]
        assert repo["private"] is True  # private unless --public
        assert repo["files"]["train.jsonl"] == out.read_bytes()
        assert repo["files"]["README.md"] == (tmp_path / "export" / "README.md").read_bytes()
        assert {r["authorization"] for r in hub.requests if r["method"] == "POST"} == {
            "Bearer hf_CANARY_export_token"
        }
        export(ExportConfig(source=run, output=out, push_to_hub="me/open", public=True))
        assert hub.repos["me/open"]["private"] is False
    # The token is never written anywhere.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"hf_CANARY" not in path.read_bytes(), path
