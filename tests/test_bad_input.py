"""Bad input: a clear one-line error naming the file and line or key, a documented exit code,
and nothing written half-way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import on_a_small_disk
from typer.testing import CliRunner

from selfinstruct.cli import app

runner = CliRunner()
GOOD = '{"instruction": "Explain why the sky looks blue at noon."}\n'


def filter_cli(src: Path, out: Path, *extra: str) -> Any:
    return runner.invoke(app, ["filter", str(src), "-o", str(out), "--workers", "1", *extra])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (GOOD + '{"instruction": "unclosed\n', ":2: not valid JSON"),
        (GOOD + '{"output": "no instruction"}\n', ":2: missing field 'instruction'"),
        (GOOD + '{"instruction": ["a", "list"]}\n', ":2: field 'instruction'"),
        (GOOD.encode() + b'{"instruction": "caf\xe9"}\n', ":2: not valid UTF-8"),
        (
            '{"id": "a", "instruction": "First task here, please."}\n'
            '{"id": "a", "instruction": "Second task, same id."}\n',
            ":2: duplicate id 'a' (first at line 1)",
        ),
        ("\n\n", "no rows"),
    ],
)
def test_filter_input_errors(tmp_path: Path, content: str | bytes, message: str) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = filter_cli(src, tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2  # one message (the console may wrap)
    assert not (tmp_path / "out" / "kept.jsonl").exists()


def test_bom_crlf_and_a_10_mb_line_are_read(tmp_path: Path) -> None:
    huge = json.dumps({"instruction": "word " * 2_000_000})  # about 10 MB on one line
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + GOOD.replace("\n", "\r\n").encode() + huge.encode() + b"\r\n")
    result = filter_cli(src, tmp_path / "out")
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows_in"] == 2 and summary["kept"] == 1
    assert summary["dropped"] == {"too_long": 1}


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(GOOD)
    for text, message in [
        ("thresold: 0.5\n", "'thresold': unknown option"),
        ("threshold: 7\n", "'threshold'"),
        ("rules:\n  max_words: -3\n", "'rules.max_words'"),
        ("!!python/object/apply:os.system ['echo hacked']\n", "not valid YAML"),
    ]:
        config = tmp_path / "c.yaml"
        config.write_text(text)
        result = filter_cli(src, tmp_path / "out", "-c", str(config))
        assert result.exit_code == 2 and message in result.output, result.output


def test_unwritable_output(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(GOOD)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = filter_cli(src, blocker / "out")
    assert result.exit_code == 2 and "cannot create the output directory" in result.output


def test_filter_on_a_full_disk_leaves_no_partial_output(tmp_path: Path) -> None:
    """A real file system with no space left (a tmpfs filled up), not a patched write."""
    import sys

    src = tmp_path / "in.jsonl"
    src.write_text(GOOD)
    out = on_a_small_disk(
        tmp_path,
        "64k",
        'cat /dev/zero > "$DISK/filler" 2>/dev/null\n'
        f'{sys.executable} -m selfinstruct.cli filter {src} -o "$DISK/out" 2> "$OUT/err"\n'
        'echo $? > "$OUT/code"; ls -A "$DISK/out" > "$OUT/left" 2>/dev/null\n',
    )
    assert (out / "code").read_text().strip() == "2"
    assert "No space left on device" in (out / "err").read_text()
    left = (out / "left").read_text().split() if (out / "left").exists() else []
    assert not [n for n in left if n.endswith((".jsonl", ".tmp"))], left


def test_generate_input_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"id": "s1", "instruction": "Name a fruit.", "instances": []}\n{bad\n')
    result = runner.invoke(
        app,
        ["generate", "--dry-run", "--seed-tasks", str(seeds), "--run-dir", str(tmp_path / "r1")],
    )
    assert result.exit_code == 2 and f"{seeds}:2: not valid JSON" in result.output
    result = runner.invoke(
        app, ["generate", "--model", str(tmp_path / "no-model"), "--run-dir", str(tmp_path / "r2")]
    )
    assert result.exit_code == 3 and "does not exist" in result.output
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = runner.invoke(app, ["generate", "--dry-run", "--run-dir", str(blocker / "run")])
    assert result.exit_code == 2 and "cannot create the run directory" in result.output


def test_a_full_disk_stops_the_run_cleanly_and_it_resumes(tmp_path: Path) -> None:
    """A real file system that runs out of space (a 64 KiB tmpfs), then grown to resume."""
    import sys

    run = f"{sys.executable} -m selfinstruct.cli generate --dry-run -q --run-dir $DISK/run -n 300"
    out = on_a_small_disk(
        tmp_path,
        "64k",
        f'{run} 2> "$OUT/full.err"; echo $? > "$OUT/full.code"\n'
        'cp -r "$DISK/run" "$OUT/after-full"\n'
        'mount -o remount,size=64m "$DISK"\n'
        f'{run} 2> "$OUT/resumed.err"; echo $? > "$OUT/resumed.code"\n'
        'cp -r "$DISK/run" "$OUT/resumed"\n',
    )
    assert (out / "full.code").read_text().strip() == "2"
    error = (out / "full.err").read_text()
    assert "No space left on device" in error and "run the same command again" in error
    assert "Traceback" not in error
    # What the last commit marker vouches for is whole; anything past it (a write the disk
    # cut short) is what the next start repairs.
    full = out / "after-full"
    markers = [json.loads(x) for x in (full / "commits.jsonl").read_bytes().split(b"\n")[:-1]]
    if markers:
        for name, key in (("tasks.jsonl", "tasks_bytes"), ("rejected.jsonl", "rejected_bytes")):
            kept = (full / name).read_bytes()[: markers[-1][key]]
            assert all(json.loads(x) for x in kept.splitlines()), name
    assert (out / "resumed.code").read_text().strip() == "0", (out / "resumed.err").read_text()
    assert (out / "resumed" / "tasks.jsonl").read_text().count("\n") >= 300
