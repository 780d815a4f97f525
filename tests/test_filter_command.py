"""`selfinstruct filter` end to end: outputs, accounting, options, errors."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SEED_FILE, t0_instructions
from typer.testing import CliRunner

from selfinstruct.cli import app
from selfinstruct.config import FilterConfig
from selfinstruct.filtering import run_filter
from selfinstruct.records import Rejected, Task

runner = CliRunner()

ROWS = [
    {"instruction": "Write a short poem about autumn leaves falling.", "input": "", "output": "…"},
    {"instruction": "Write a short poem about autumn leaves falling down.", "output": "dup"},
    {"instruction": "Describe the picture in detail.", "output": "x"},
    {"instruction": "Hi there", "output": "x"},
    {"instruction": "Explain how vaccines train the immune system.", "output": "y"},
    {"instruction": "Write a program that prints primes.", "output": "z"},
    {"instruction": "Explain how vaccines train the human immune system.", "output": "dup2"},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_filter_library_call(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    summary = run_filter(FilterConfig(input=src, output_dir=tmp_path / "out", workers=1))
    kept = [Task.model_validate(r) for r in read_jsonl(tmp_path / "out" / "kept.jsonl")]
    rejected = [Rejected.model_validate(r) for r in read_jsonl(tmp_path / "out" / "rejected.jsonl")]
    assert [t.instruction for t in kept] == [ROWS[0]["instruction"], ROWS[4]["instruction"]]
    assert [r.reason for r in rejected] == [
        "rouge_l",
        "keyword",
        "too_short",
        "banned_prefix",
        "rouge_l",
    ]
    dup = rejected[0]
    assert dup.stage == "novelty" and dup.origin == f"{src}:2"
    assert dup.detail["most_similar"] == ROWS[0]["instruction"] and dup.detail["score"] > 0.7
    assert rejected[1].detail == {"keyword": "picture"}
    assert summary.rows_in == 7 and summary.kept == 2
    assert summary.dropped == {"rouge_l": 2, "keyword": 1, "too_short": 1, "banned_prefix": 1}
    on_disk = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert on_disk["kept"] == 2 and on_disk["rows_in"] == 7
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_reference_pool_and_original_format(tmp_path: Path) -> None:
    seeds = [json.loads(line) for line in SEED_FILE.read_text().splitlines()]
    near = seeds[5]["instruction"].rstrip(".?!") + " please."
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"instruction": near, "output": "a", "tag": 1},
            {"instruction": "Invent a board game about migrating birds.", "output": "b", "tag": 2},
        ],
    )
    summary = run_filter(
        FilterConfig(
            input=src,
            output_dir=tmp_path / "o",
            reference=[SEED_FILE],
            output_format="original",
            workers=1,
        )
    )
    assert summary.reference_rows == len(seeds)
    assert read_jsonl(tmp_path / "o" / "kept.jsonl") == [
        {"instruction": "Invent a board game about migrating birds.", "output": "b", "tag": 2}
    ]
    (rej,) = read_jsonl(tmp_path / "o" / "rejected.jsonl")
    assert rej["detail"]["in"] == "reference"
    assert rej["detail"]["most_similar"] == seeds[5]["instruction"]


def _t0_file(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "t0.jsonl.gz"
    rows = [{"instruction": text, "output": "o"} for text in t0_instructions(n)]
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    return path


def test_two_processes_give_identical_outputs_and_lose_nothing(tmp_path: Path) -> None:
    src = _t0_file(tmp_path, 6000)
    outs = {}
    for workers in (1, 2):
        cfg = FilterConfig(input=src, output_dir=tmp_path / f"w{workers}", workers=workers)
        outs[workers] = run_filter(cfg)
    one, two = tmp_path / "w1", tmp_path / "w2"
    for name in ("kept.jsonl", "rejected.jsonl"):
        assert (one / name).read_bytes() == (two / name).read_bytes()
    assert outs[1].kept == outs[2].kept and outs[1].dropped == outs[2].dropped
    # Every input row is in exactly one of the outputs.
    kept = read_jsonl(one / "kept.jsonl")
    rejected = read_jsonl(one / "rejected.jsonl")
    assert len(kept) + len(rejected) == 6000 == outs[1].rows_in
    ids = [r["id"] for r in kept] + [r["id"] for r in rejected]
    assert sorted(ids) == sorted(f"t0-{i}" for i in range(1, 6001))
    assert outs[1].dropped["rouge_l"] > 0


def test_skip_bad_rows_keeps_them_in_rejected(tmp_path: Path) -> None:
    src = tmp_path / "mixed.jsonl"
    src.write_bytes(
        b'{"instruction": "Tell me a fun fact about owls."}\n{broken\n'
        b'{"instruction": "caf\xe9 time"}\n'
    )
    result = runner.invoke(app, ["filter", str(src), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert f"{src}:2: not valid JSON" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o" / "kept.jsonl").exists()  # nothing written half-way
    summary = run_filter(
        FilterConfig(input=src, output_dir=tmp_path / "o", skip_bad_rows=True, workers=2)
    )
    assert summary.bad_rows == 2 and summary.kept == 1
    bad = read_jsonl(tmp_path / "o" / "rejected.jsonl")
    assert [b["origin"] for b in bad] == [f"{src}:2", f"{src}:3"]
    assert all(b["reason"] == "bad_row" for b in bad)


def test_worker_error_reaches_the_user_cleanly(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"instruction": "Name the planets in order."}\n{"output": 1}\n')
    result = runner.invoke(app, ["filter", str(src), "-o", str(tmp_path / "o"), "--workers", "2"])
    assert result.exit_code == 2
    assert f"{src}:2: missing field 'instruction'" in result.output


def test_cli_summary_options_and_config_file(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    config = tmp_path / "filter.yaml"
    config.write_text("threshold: 0.95\nrules:\n  keywords: [poem]\n  min_words: 2\n")
    result = runner.invoke(
        app,
        ["filter", str(src), "-o", str(tmp_path / "o"), "-c", str(config), "--no-banned-prefixes"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["threshold"] == 0.95
    assert summary["dropped"] == {"keyword": 2}  # both poems; the rest kept at 0.95
    assert "kept" in result.output and "dropped: keyword" in result.output
    # a flag beats the file
    result = runner.invoke(
        app,
        [
            "filter",
            str(src),
            "-o",
            str(tmp_path / "o"),
            "-c",
            str(config),
            "--threshold",
            "0.7",
            "-q",
        ],
    )
    assert result.exit_code == 0 and result.output == ""
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["threshold"] == 0.7


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    config = tmp_path / "c.toml"
    config.write_text("treshold = 0.5\n[rules]\nmin_words = -1\n")
    result = runner.invoke(app, ["filter", str(src), "-c", str(config)])
    assert result.exit_code == 2
    assert "'treshold': unknown option" in result.output
    assert "'rules.min_words'" in result.output
    result = runner.invoke(app, ["filter", str(src), "--threshold", "1.5"])
    assert result.exit_code == 2 and "'threshold'" in result.output


def test_empty_file_and_no_novelty(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    result = runner.invoke(app, ["filter", str(empty), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no rows" in result.output
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    summary = run_filter(FilterConfig(input=src, output_dir=tmp_path / "o", novelty=False))
    assert "rouge_l" not in summary.dropped and summary.kept == 4


def test_non_english_warning_and_unicode_tokenizer(tmp_path: Path) -> None:
    rows = [
        {"instruction": t}
        for t in [
            "请把这段文字翻译成英文",
            "请把这段文字翻译成法文",
            "Какая сегодня погода в Москве?",
        ]
    ]
    src = write_jsonl(tmp_path / "zh.jsonl", rows)
    base = {
        "input": src,
        "output_dir": tmp_path / "o",
        "workers": 1,
        "rules": {"min_words": None, "drop_non_ascii_start": False},
    }
    summary = run_filter(FilterConfig.model_validate(base))
    assert summary.kept == 3 and summary.empty_token_rows == 3
    assert summary.warnings and "--tokenizer unicode" in summary.warnings[0]
    summary = run_filter(FilterConfig.model_validate({**base, "tokenizer": "unicode"}))
    assert summary.kept == 2 and not summary.warnings


@pytest.mark.parametrize("command", [[], ["filter"], ["generate"], ["finetune"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from selfinstruct.cli import app; "
        "from typer.testing import CliRunner; CliRunner().invoke(app, ['--help']); "
        "print(sorted(m for m in ('torch', 'transformers', 'vllm', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_console_script_runs(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", ROWS)
    exe = Path(sys.executable).with_name("selfinstruct")
    done = subprocess.run(
        [str(exe), "filter", str(src), "-o", str(tmp_path / "o"), "-q"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "o" / "kept.jsonl").exists()
