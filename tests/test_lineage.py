"""A dataset made again from its card: the card carries what made the data, the journal beside
it answers every request, and data edited after export is reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from selfinstruct.backends.scripted import ScriptedBackend
from selfinstruct.cli import app
from selfinstruct.config import ExportConfig, GenerateConfig
from selfinstruct.export import export
from selfinstruct.generate import run_generate
from selfinstruct.lineage import read_card, sha256_of

runner = CliRunner()


def _exported(
    tmp_path: Path, with_journal: bool = True, fmt: str = "prompt-completion", **generate: object
) -> Path:
    run = tmp_path / "run"
    options = {"run_dir": run, "backend": "scripted", "target_tasks": 25, "window": 2, **generate}
    # The backend is given, so that options of another backend (a server's URL) can be set.
    run_generate(GenerateConfig.model_validate(options), backend=ScriptedBackend())
    out = tmp_path / "export" / ("train.hf" if fmt == "hf" else "train.jsonl")
    export(ExportConfig(source=run, output=out, format=fmt, with_journal=with_journal))  # type: ignore[arg-type]
    return out if fmt == "hf" else out.parent


def test_the_card_says_what_made_the_data(tmp_path: Path) -> None:
    folder = _exported(
        tmp_path,
        base_url=["https://user:s3cret@llm.example/v1?api-key=k3y"],
        backend_option=["token=t0ken"],
    )
    header = yaml.safe_load((folder / "README.md").read_text().split("---")[1])
    block = read_card(folder)
    assert header["selfinstruct"]["data_sha256"] == sha256_of(folder / "train.jsonl")
    assert block.generated is not None and block.generated.backend == "scripted"
    assert block.generated.journal_sha256 == sha256_of(tmp_path / "run" / "requests.jsonl")
    assert {"selfinstruct", "python", "pydantic"} <= set(block.generated.versions)
    assert "instructions.txt" in block.generated.templates_sha256
    assert block.generated.config["target_tasks"] == 25  # the full resolved options
    assert block.export["format"] == "prompt-completion" and block.journal_file
    card = (folder / "README.md").read_text()
    assert "llm.example" in card  # where it was served, without any credential
    assert not any(secret in card for secret in ("s3cret", "k3y", "t0ken"))
    assert (folder / "journal.jsonl").read_bytes() == (
        tmp_path / "run" / "requests.jsonl"
    ).read_bytes()


def test_from_card_with_its_journal_makes_the_data_again_without_a_model(tmp_path: Path) -> None:
    folder = _exported(tmp_path)
    result = runner.invoke(app, ["run", "--from-card", str(folder)])
    assert result.exit_code == 0, result.output
    assert "byte for byte the card's data" in result.output
    rebuilt = tmp_path / "export-rebuilt"  # beside the data folder, not in it
    job = yaml.safe_load((tmp_path / "export-rebuilt.job.yaml").read_text())
    assert (
        job["generate"]["backend"] == "journal" and job["export"]["format"] == "prompt-completion"
    )
    made = rebuilt / "export" / "train.jsonl"
    assert made.read_bytes() == (folder / "train.jsonl").read_bytes()
    tasks = (rebuilt / "generate" / "tasks.jsonl").read_bytes()
    assert tasks == (tmp_path / "run" / "tasks.jsonl").read_bytes()


def test_data_edited_after_export_is_reported_not_accepted(tmp_path: Path) -> None:
    folder = _exported(tmp_path)
    data = folder / "train.jsonl"
    lines = data.read_text().splitlines()
    row = json.loads(lines[0])
    row["completion"][0]["content"] = "an answer someone changed"
    data.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    result = runner.invoke(app, ["run", "--from-card", str(folder)])
    assert result.exit_code == 2 and "edited after export" in result.output
    accepted = runner.invoke(app, ["run", "--from-card", str(folder), "--accept-edited"])
    assert accepted.exit_code == 0, accepted.output
    assert "warning: the data beside the card was edited" in accepted.output
    assert "byte for byte the card's data" in accepted.output  # the original, made again


def test_without_a_journal_the_job_is_written_and_runs(tmp_path: Path) -> None:
    folder = _exported(tmp_path, with_journal=False, concurrency=8)
    again = tmp_path / "again"
    result = runner.invoke(app, ["run", "--from-card", str(folder), "--rebuild-dir", str(again)])
    assert result.exit_code == 0, result.output
    assert "no journal beside the card" in " ".join(result.output.split())
    job_file = tmp_path / "again.job.yaml"
    job = yaml.safe_load(job_file.read_text())
    assert job["generate"]["backend"] == "scripted"  # the job asks the model again
    assert "concurrency" not in job["generate"]  # an option its backend does not read
    ran = runner.invoke(app, ["run", str(job_file)])  # and it runs as written
    assert ran.exit_code == 0, ran.output
    made = again / "export" / "train.jsonl"
    assert made.read_bytes() == (folder / "train.jsonl").read_bytes()  # scripted replies repeat


def test_an_hf_dataset_is_rebuilt_from_the_card_inside_it(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    folder = _exported(tmp_path, fmt="hf")
    assert read_card(folder).data_file == "."
    result = runner.invoke(app, ["run", "--from-card", str(folder)])
    assert result.exit_code == 0, result.output
    assert "byte for byte the card's data" in result.output
    again = runner.invoke(app, ["run", "--from-card", str(folder), "--rebuild-dir",
                                str(tmp_path / "twice")])  # fmt: skip
    assert again.exit_code == 0, again.output  # the first rebuild did not touch the dataset


def test_a_card_after_a_filter_pass_says_it_cannot_be_rebuilt(tmp_path: Path) -> None:
    """A job's export from its filter pass: the card knows the run, and that a filter came
    between, which a rebuild does not make again."""
    from selfinstruct.config import FilterConfig
    from selfinstruct.filtering import run_filter

    job = tmp_path / "job"
    options = {"run_dir": job / "generate", "backend": "scripted", "target_tasks": 25, "window": 2}
    run_generate(GenerateConfig.model_validate(options))
    run_filter(FilterConfig(input=job / "generate" / "tasks.jsonl", output_dir=job / "filter"))
    out = tmp_path / "fx" / "train.jsonl"
    export(ExportConfig(source=job / "filter" / "kept.jsonl", output=out, with_journal=True))
    assert read_card(out.parent).not_rebuilt == ["a filter pass"]
    result = runner.invoke(app, ["run", "--from-card", str(out.parent)])
    assert result.exit_code == 2, result.output
    assert "a rebuild does not make again" in " ".join(result.output.split())


def test_a_seed_file_that_is_not_the_card_s_is_refused(tmp_path: Path) -> None:
    folder = _exported(tmp_path)
    other = tmp_path / "seeds.jsonl"
    other.write_text('{"id": "s", "instruction": "Name a colour of the sky.", "instances": []}\n')
    result = runner.invoke(app, ["run", "--from-card", str(folder), "--seed-tasks", str(other)])
    assert result.exit_code == 2 and "is not the seed file the card names" in result.output


def test_run_needs_a_job_or_a_card() -> None:
    result = runner.invoke(app, ["run"])
    assert result.exit_code == 2 and "--from-card" in result.output
