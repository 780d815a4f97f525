"""The built wheel works on its own: installed into a fresh virtual environment, run from an
empty folder, far from this checkout (no repository files, no ../shared)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO


def _run(args: list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_wheel_installs_and_runs_anywhere(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, REPO], tmp_path, env)
    wheel = next(dist.glob("selfinstruct-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "selfinstruct/data/prompts/instructions.txt",
        "selfinstruct/data/prompts/is_classification.chat.txt",
        "selfinstruct/data/seed_tasks/seed_tasks.jsonl",
        "selfinstruct/data/eval_tasks.jsonl",
        "selfinstruct/data/prompts/audit.txt",
        "selfinstruct/data/review/page.html",
    } <= names
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, env)
    bin_dir = venv / "bin"
    _run([bin_dir / "pip", "install", "-q", f"{wheel}[report]"], tmp_path, env)
    work = tmp_path / "somewhere" / "else"
    work.mkdir(parents=True)
    cli = bin_dir / "selfinstruct"
    out = _run([cli, "generate", "--dry-run", "-n", "6", "-o", "run", "-q"], work, env)
    assert (work / "run" / "tasks.jsonl").stat().st_size > 0, out
    _run([cli, "filter", "run/tasks.jsonl", "-o", "filtered", "-q"], work, env)
    assert (work / "filtered" / "kept.jsonl").exists()
    _run([cli, "export", "run", "-o", "data/train.jsonl", "-f", "prompt-completion"], work, env)
    assert (work / "data" / "README.md").exists()
    _run([cli, "report", "run"], work, env)
    assert (work / "run" / "report" / "report.html").exists()
    help_text = _run([cli, "eval", "--help"], work, env)
    assert "the 110 shipped with selfinstruct" in " ".join(help_text.split())
    # The defaults point inside the installed package, not at a checkout.
    where = _run(
        [bin_dir / "python", "-c", "import selfinstruct.config as c; print(c.SEED_TASKS)"],
        work,
        env,
    )
    assert str(venv) in where and str(REPO) not in where
