"""Bad input: a clear one-line error naming the file and line or key, a documented exit code,
and nothing written half-way."""

from __future__ import annotations

import errno
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from selfinstruct.cli import app
from selfinstruct.store import RunStore

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


def test_unwritable_output_and_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(GOOD)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = filter_cli(src, blocker / "out")
    assert result.exit_code == 2 and "cannot create the output directory" in result.output

    real_open = Path.open

    def full_disk_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        fh = real_open(self, *args, **kwargs)
        if self.name.endswith(".tmp") and "w" in (args[0] if args else kwargs.get("mode", "r")):

            def no_space(*_: Any) -> None:
                raise OSError(errno.ENOSPC, "No space left on device")

            fh.writelines = no_space  # type: ignore[method-assign]
        return fh

    monkeypatch.setattr(Path, "open", full_disk_open)
    result = filter_cli(src, tmp_path / "out")
    assert result.exit_code == 2 and "No space left on device" in result.output
    assert not list((tmp_path / "out").glob("*.jsonl")) and not list(
        (tmp_path / "out").glob(".*.tmp")
    )


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

    def no_space(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    run_dir = tmp_path / "r3"
    monkeypatch.setattr(RunStore, "commit", no_space)
    result = runner.invoke(app, ["generate", "--dry-run", "--run-dir", str(run_dir), "-n", "9"])
    assert result.exit_code == 2 and "No space left on device" in result.output
    monkeypatch.undo()
    result = runner.invoke(app, ["generate", "--dry-run", "--run-dir", str(run_dir), "-n", "9"])
    assert result.exit_code == 0  # resumes cleanly once there is space
    assert (run_dir / "tasks.jsonl").read_text().count("\n") >= 9
