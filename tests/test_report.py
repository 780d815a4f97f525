"""`selfinstruct report` on a real run directory: every section, each with its image."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfinstruct.cli import app
from selfinstruct.config import GenerateConfig
from selfinstruct.generate import run_generate
from selfinstruct.report import SECTIONS, TABLES, leading_verb

pytest.importorskip("matplotlib")


def test_report_has_every_section_with_its_image(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_generate(GenerateConfig(run_dir=run_dir, backend="scripted", target_tasks=25, window=3))
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    page = (run_dir / "report" / "report.html").read_text()
    for key in SECTIONS:
        block = re.search(rf'<section id="{key}">(.*?)</section>', page, re.DOTALL)
        assert block and 'src="data:image/png;base64,' in block.group(1), key
        assert (run_dir / "report" / f"{key}.png").stat().st_size > 1000
    for key in TABLES:
        assert f'<section id="{key}">' in page
    assert "<td>" in page.split('id="samples"')[1]  # sample rows are there
    table1 = page.split('id="table1"')[1].split("</section>")[0]
    assert "classification" in table1 and "52,445" in table1  # this run beside the paper
    coverage = page.split('id="coverage"')[1].split("</section>")[0]
    assert re.search(r"<th>instances</th><td>\d+</td><td>\d+</td><td>\d+</td>", coverage)


def test_report_on_a_job_directory_and_errors(tmp_path: Path) -> None:
    job_run = tmp_path / "job"
    run_generate(
        GenerateConfig(run_dir=job_run / "generate", backend="scripted", target_tasks=5, window=2)
    )
    # Model output is untrusted text: it must come out escaped, never as markup.
    from selfinstruct.records import Instance, Task

    hostile = Task(
        id="x",
        instruction="Explain <script>alert(1)</script> tags.",
        instances=[Instance(output="<img src=x onerror=alert(1)>")],
    )
    with (job_run / "generate" / "tasks.jsonl").open("a") as fh:
        fh.write(hostile.model_dump_json() + "\n")
    assert CliRunner().invoke(app, ["report", str(job_run)]).exit_code == 0
    page = (job_run / "report" / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page
    missing = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "no tasks.jsonl" in missing.output


def test_leading_verb() -> None:
    assert leading_verb("Write a poem.") == "write"
    assert leading_verb('  "Explain" this') == "explain"
    assert leading_verb("123") == "(none)"


def test_table1_tally_counts_as_the_paper_does() -> None:
    """Table 1 kept as tasks come (the run adds each committed prompt's tasks) gives the
    figures of the whole set: words split on whitespace, means over non-empty inputs only."""
    from selfinstruct.records import Instance, Task
    from selfinstruct.stats import Table1Tally, table1

    def task(text: str, cls: bool | None, *pairs: tuple[str, str]) -> Task:
        instances = [Instance(input=i, output=o) for i, o in pairs]
        return Task(id=text, instruction=text, instances=instances, is_classification=cls)

    tasks = [
        task("Name a colour.", False, ("", "Red.")),
        task("Is the review positive?", True, ("Great food", "Yes"), ("  ", "No, it is not")),
        task("Sort the list of numbers given", None, ("3 1 2", "1 2 3"), ("9 8", "8 9")),
        task("Say nothing.", False),
    ]
    whole = table1(tasks)
    assert (whole.instructions, whole.classification, whole.non_classification) == (4, 1, 3)
    assert (whole.instances, whole.instances_empty_input) == (5, 2)
    assert whole.mean_words_instruction == round((3 + 4 + 6 + 2) / 4, 1)
    assert whole.mean_words_input == round((2 + 3 + 2) / 3, 1)
    assert whole.mean_words_output == round((1 + 1 + 4 + 3 + 2) / 5, 1)
    tally = Table1Tally()
    for chunk in ([], tasks[:1], tasks[1:3], tasks[3:]):
        tally.add(chunk)
    assert tally.table() == whole
    assert Table1Tally().table().mean_words_input == 0.0
