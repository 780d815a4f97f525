from __future__ import annotations

import gzip
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SEED_FILE = REPO / "seed_tasks" / "seed_tasks.jsonl"


def worker_cores() -> list[int]:
    """The CPU cores this pytest worker may keep busy: all of them in one process; under
    pytest-xdist, an equal share (worker i of W takes every W-th core from i; one core when
    there are more workers than cores)."""
    cores = sorted(os.sched_getaffinity(0))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    if workers <= 1:
        return cores
    return cores[index % len(cores) :: workers] or [cores[index % len(cores)]]


def pytest_configure(config: pytest.Config) -> None:
    """Each worker's threads on its share of the cores, its subprocesses included. Two
    workers that each ran a thread per core halved each other's throughput (and a vLLM
    engine spinning on both cores slowed a training beside it 4-25x): OpenMP threads wait
    at every barrier for a sibling the other worker has descheduled."""
    cores = worker_cores()
    if len(cores) == len(os.sched_getaffinity(0)):
        return  # one process: the libraries' own defaults
    threads = str(len(cores))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = threads
    # vLLM's CPU engines (servers and in-process alike) bind their threads to these cores.
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cores))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(len(cores))


def missing_reference(what: str) -> None:
    """Reference data that is not on this machine: a skip by hand, a failure in CI (CI=true),
    where a test that quietly checked nothing would read as a pass."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} is missing in CI")
    pytest.skip(f"{what} is not present")


def shared_file(name: str) -> Path:
    """A reference data file from ../shared/data (see `missing_reference` when absent)."""
    path = SHARED_DATA / name
    if not path.exists():
        missing_reference(f"reference data {path}")
    return path


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Return once `condition()` holds (a file grew, a log line came, a server was asked),
    checked every 20 ms; fail after `timeout` s naming `what`. Tests wait on events, not on
    time: a sleep long enough on one machine is too short on a slower one."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.02)


def jsonl_lines(path: Path) -> int:
    """Whole lines in a JSONL file that may be being written (0 when it does not exist yet)."""
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def t0_instructions(limit: int | None = None) -> list[str]:
    with gzip.open(shared_file("t0_prompts_55k.jsonl.gz"), "rb") as fh:
        data = fh.read()
    rows = [json.loads(line)["instruction"] for line in data.split(b"\n") if line.strip()]
    return rows[:limit] if limit is not None else rows


def jsonl_instructions(name: str) -> list[str]:
    path = shared_file(name)
    return [json.loads(line)["instruction"] for line in path.read_text().splitlines() if line]


def on_a_small_disk(tmp_path: Path, size: str, script: str) -> Path:
    """Run a shell `script` with a real, tiny file system (a tmpfs of `size`) at
    `tmp_path/disk`, in a mount namespace of its own (`unshare -rm`: no privilege needed).
    The script sees $DISK and $OUT (a folder outside the namespace, for what the test reads
    afterwards: the tmpfs is gone when the script ends). Skips where no namespace can be made."""
    import shutil
    import subprocess

    if (
        shutil.which("unshare") is None
        or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode
    ):
        pytest.skip("unshare cannot make a mount namespace here")
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "DISK": str(disk), "OUT": str(out)}
    body = f'mount -t tmpfs -o size={size} tmpfs "$DISK" || exit 99\n{script}'
    done = subprocess.run(["unshare", "-rm", "sh", "-c", body], env=env, timeout=600)
    if done.returncode == 99:
        pytest.skip("a tmpfs cannot be mounted in a namespace here")
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama of tests/tiny_model.py, built once per session (needs the bundled model's
    tokenizer: `make setup`)."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
