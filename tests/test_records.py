"""Readers accept every supported shape and name the file and line of any bad row."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import SEED_FILE, shared_file

from selfinstruct.errors import InputError
from selfinstruct.records import BadRow, Row, Task, iter_rows, read_rows, read_tasks


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_reads_original_seed_file() -> None:
    tasks = read_tasks(shared_file("self_instruct_seed_tasks.jsonl"))
    assert len(tasks) == 175
    first = tasks[0]
    assert first.id == "seed_task_0" and first.name == "breakfast_suggestion"
    assert first.instances[0].output and first.is_classification is False


def test_reads_machine_generated_instructions() -> None:
    tasks = read_tasks(
        shared_file("self_instruct_run_samples/machine_generated_instructions.jsonl")
    )
    assert len(tasks) == 101
    assert all(t.source == "machine" and t.instances == [] for t in tasks)
    assert tasks[0].most_similar and tasks[0].avg_similarity_score is not None
    assert tasks[0].request_id is not None
    assert "metadata" in tasks[0].model_dump()  # unknown fields are kept, not dropped


def test_reads_project_seed_file_roundtrip(tmp_path: Path) -> None:
    tasks = read_tasks(SEED_FILE)
    out = tmp_path / "again.jsonl"
    out.write_text("".join(t.model_dump_json(exclude_none=True) + "\n" for t in tasks))
    assert read_tasks(out) == tasks


def test_alpaca_json_list_and_jsonl_and_gzip(tmp_path: Path) -> None:
    rows = [
        {"instruction": "Name a color.", "input": "", "output": "Blue"},
        {"instruction": "Add the numbers.", "input": "2, 3", "output": "5", "extra": 1},
    ]
    as_list = write(tmp_path / "a.json", json.dumps(rows))
    as_lines = write(tmp_path / "a.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    as_gz = tmp_path / "a.jsonl.gz"
    as_gz.write_bytes(gzip.compress(as_lines.read_bytes()))
    for path in (as_list, as_lines, as_gz):
        tasks = read_tasks(path)
        assert [t.instruction for t in tasks] == ["Name a color.", "Add the numbers."]
        assert tasks[1].instances[0].input == "2, 3" and tasks[1].instances[0].output == "5"
        assert tasks[1].model_dump()["extra"] == 1


def test_chat_messages_rows(tmp_path: Path) -> None:
    row = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Define entropy."},
            {"role": "assistant", "content": "A measure of disorder."},
        ]
    }
    task = read_tasks(write(tmp_path / "c.jsonl", json.dumps(row) + "\n"))[0]
    assert task.instruction == "Define entropy."
    assert task.instances[0].output == "A measure of disorder."


def test_bom_crlf_blank_lines_and_unicode_separators(tmp_path: Path) -> None:
    text = (
        "\ufeff"
        + json.dumps({"instruction": "a\u2028b"})
        + "\r\n\r\n"
        + json.dumps({"instruction": "second"})
        + "\r\n"
    )
    tasks = read_tasks(write(tmp_path / "b.jsonl", text))
    assert [t.instruction for t in tasks] == ["a\u2028b", "second"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"instruction": "ok"', "not valid JSON"),
        ('{"input": "x", "output": "y"}', "missing field 'instruction'"),
        ('{"instruction": 42}', "field 'instruction'"),
        ('["a list"]', "expected a JSON object"),
        ('{"instruction": "x", "instances": [{"input": "i"}]}', "instances.0.output"),
    ],
)
def test_bad_row_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path / "bad.jsonl", '{"instruction": "fine"}\n' + line + "\n")
    with pytest.raises(InputError) as err:
        read_tasks(path)
    assert f"{path}:2" in str(err.value) and message in str(err.value)
    assert "--skip-bad-rows" in str(err.value)


def test_not_utf8_and_skip_bad_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "latin.jsonl", b'{"instruction": "caf\xe9"}\n{"instruction": "ok"}\n')
    with pytest.raises(InputError, match=r"latin\.jsonl:1: not valid UTF-8"):
        read_tasks(path)
    items = list(read_rows(path, skip_bad_rows=True))
    assert isinstance(items[0], BadRow) and items[0].line == 1 and "caf" in items[0].text
    assert isinstance(items[1], Row) and items[1].task.instruction == "ok"


def test_broken_json_list_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "list.json", '[\n{"instruction": "a"},\n{"instruction": }\n]')
    with pytest.raises(InputError, match=r"list\.json:3: not valid JSON"):
        list(iter_rows(path))
    path = write(tmp_path / "items.json", '[{"instruction": "a"}, {"output": "b"}]')
    with pytest.raises(InputError, match=r"items\.json: item 2: missing field 'instruction'"):
        read_tasks(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_tasks(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="is a directory"):
        read_tasks(tmp_path)


def test_task_schema_is_shared_by_seed_and_machine_tasks() -> None:
    task = Task(
        id="t1",
        instruction="Do it.",
        source="machine",
        round=3,
        most_similar={"Do that.": 0.5},
        avg_similarity_score=0.2,
        model="m",
    )
    assert Task.model_validate_json(task.model_dump_json()) == task
