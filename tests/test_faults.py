"""Reliability under faults: a flaky OpenAI-compatible server, and nothing may be lost."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import jsonl_lines, wait_until
from fake_openai import FakeOpenAI, faulty_brain

from selfinstruct.backends.base import BackendError
from selfinstruct.config import GenerateConfig
from selfinstruct.generate import run_generate
from selfinstruct.records import Task

CANARY = "sk-canary-0000-never-log-me"


def test_generate_at_a_30_percent_fault_rate_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    with FakeOpenAI(faulty_brain(0.3, seed=1)) as server:
        cfg = GenerateConfig(
            run_dir=tmp_path / "run",
            backend="openai",
            model="m",
            base_url=[server.url],
            chat=False,
            target_tasks=40,
            window=4,
            timeout=1.0,
            max_retries=8,
        )
        summary = run_generate(cfg)
    run = tmp_path / "run"
    assert summary.status == "done" and summary.accepted >= 40
    tasks = [Task.model_validate_json(x) for x in (run / "tasks.jsonl").read_text().splitlines()]
    assert all(t.instances and all(i.output for i in t.instances) for t in tasks)
    journal = [json.loads(x) for x in (run / "requests.jsonl").read_text().splitlines()]
    # Every usable answer the server sent is in the journal, once: no work was lost.
    assert len(journal) == server.answered_ok == len({e["id"] for e in journal})
    faults = len(server.bodies) - server.answered_ok
    assert faults > 0.2 * len(server.bodies)  # the faults really happened
    # Retries stay bounded: at most max_retries extra attempts per request.
    assert len(server.bodies) <= (cfg.max_retries + 1) * len(journal) + 50
    for path in run.iterdir():
        assert CANARY not in path.read_text(errors="replace")


@pytest.mark.parametrize("status", [401, 404])
def test_auth_and_missing_model_stop_the_run_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    with FakeOpenAI(lambda body, n: [("status", status)]) as server:
        cfg = GenerateConfig(
            run_dir=tmp_path / "run",
            backend="openai",
            model="m",
            base_url=[server.url],
            target_tasks=5,
            max_retries=5,
        )
        with pytest.raises(BackendError) as err:
            run_generate(cfg)
        assert len(server.bodies) <= cfg.default_window()  # no retries
    assert str(status) in str(err.value) and CANARY not in str(err.value)


def _dry_run_cmd(run_dir: Path, target: int) -> list[str]:
    import sys

    return [
        sys.executable,
        "-m",
        "selfinstruct.cli",
        "generate",
        "--dry-run",
        "-q",
        "--run-dir",
        str(run_dir),
        "-n",
        str(target),
        "--window",
        "2",
    ]


def _ids(path: Path) -> list[str]:
    """The ids of a JSONL file's whole lines (a kill may leave half a last line)."""
    if not path.exists():
        return []
    whole = path.read_text().rsplit("\n", 1)[0] if "\n" in path.read_text() else ""
    return [json.loads(x)["id"] for x in whole.splitlines()]


def _open_prompts(run_dir: Path) -> set[int]:
    """Instruction prompts the run shows begun (a request of theirs asked or answered) but not
    committed: a stage started and not finished."""
    committed = jsonl_lines(run_dir / "commits.jsonl")
    begun = _ids(run_dir / "asked.jsonl") + _ids(run_dir / "requests.jsonl")
    return {int(i.split(":")[0]) for i in begun} - set(range(committed))


def test_twenty_sigkills_then_resume_equal_an_uninterrupted_run(tmp_path: Path) -> None:
    import os
    import random
    import subprocess

    from conftest import REPO

    target = 600  # far more answers than the kills wait for: no run ends before its kill
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(_dry_run_cmd(tmp_path / "ref", target), env=env, check=True)
    run_dir = tmp_path / "killed"
    journal = run_dir / "requests.jsonl"
    rng = random.Random(20)
    landed = attempts = 0
    while landed < 20:
        # Each kill waits for an event, not for time: this process has journaled a few more
        # answers (how many is drawn), so it is mid-run whatever the machine's speed. A kill
        # counts when the files show it landed mid-stage (a prompt begun, not committed);
        # one that fell between two prompts is made again.
        attempts += 1
        assert attempts <= 80, f"only {landed} of {attempts} kills landed mid-stage"
        before = jsonl_lines(journal)
        proc = subprocess.Popen(_dry_run_cmd(run_dir, target), env=env)
        goal = before + rng.randint(1, 20)
        wait_until(
            lambda p=proc, n=goal: jsonl_lines(journal) >= n or p.poll() is not None,
            f"{goal - before} more journaled answers",
        )
        proc.kill()
        assert proc.wait() == -9, "the run ended by itself before the kill"
        landed += bool(_open_prompts(run_dir))
    in_flight = set(_ids(run_dir / "asked.jsonl")) - set(_ids(journal))
    subprocess.run(_dry_run_cmd(run_dir, target), env=env, check=True)
    for name in ("tasks.jsonl", "rejected.jsonl", "commits.jsonl"):
        assert (run_dir / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name
    ids = _ids(journal)
    assert len(ids) == len(set(ids))
    # What the last kill cost is said: the requests it left in flight were asked again.
    counts = json.loads((run_dir / "manifest.json").read_text())["counts"]
    assert counts["reasked_requests"] == len(in_flight)


def test_torn_last_lines_are_detected_and_repaired(tmp_path: Path) -> None:
    cfg = GenerateConfig(run_dir=tmp_path / "run", backend="scripted", target_tasks=20, window=2)
    run_generate(cfg.model_copy(update={"target_tasks": 10}))
    run = tmp_path / "run"
    # What a crash in the middle of writes leaves: half a task line (past the last round
    # marker) and half a journal entry.
    with (run / "tasks.jsonl").open("a") as fh:
        fh.write('{"id": "machine_9_0", "instruction": "Half a li')
    with (run / "requests.jsonl").open("a") as fh:
        fh.write('{"id": "9:instructions:0", "stage": "instr')
    run_generate(cfg)
    reference = tmp_path / "ref"
    run_generate(cfg.model_copy(update={"run_dir": reference}))
    for name in ("tasks.jsonl", "rejected.jsonl"):
        lines = (run / name).read_text().splitlines()
        assert all(json.loads(x) for x in lines)  # every line whole again
        assert (run / name).read_bytes() == (reference / name).read_bytes()


def test_a_canary_key_reaches_no_file_log_or_error(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from conftest import REPO
    from fake_openai import FakeOpenAI

    from selfinstruct.backends.base import SamplingParams
    from selfinstruct.backends.openai_compat import OpenAIBackend
    from selfinstruct.config import OpenAIOptions

    def echoing(body: dict, n: int) -> list:
        # A careless proxy: error bodies repeat the request's credentials.
        if n % 3 == 0:
            return [("status", 400, {}, f"invalid request from Bearer {CANARY}")]
        return faulty_brain(0.2, seed=n)(body, n)

    with FakeOpenAI(echoing) as server:
        os.environ["OPENAI_API_KEY"] = CANARY
        try:
            done = OpenAIBackend(
                "m", OpenAIOptions(base_url=[server.url]), chat=False, backoff_base=0.01
            ).generate(["Task: x\n"] * 9, SamplingParams())
        finally:
            del os.environ["OPENAI_API_KEY"]
        assert all(CANARY not in (c.error or "") for c in done)
        job = tmp_path / "job.yaml"
        job.write_text(
            f"run_dir: {tmp_path / 'run'}\ngenerate:\n  backend: openai\n"
            f"  model: m\n  base_url: ['{server.url}']\n  chat: false\n"
            "  target_tasks: 10\n  window: 3\nexport: null\n"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), "OPENAI_API_KEY": CANARY}
        result = subprocess.run(
            [sys.executable, "-m", "selfinstruct.cli", "run", str(job), "--log-format", "json"],
            env=env,
            capture_output=True,
            text=True,
        )
    assert result.returncode == 0, result.stderr
    assert CANARY not in result.stdout + result.stderr
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert CANARY not in path.read_text(errors="replace"), path


def test_fault_proportions_are_configurable() -> None:
    brain = faulty_brain(1.0, seed=3, weights={"503": 3, "empty choices": 1})
    seen = [brain({"prompt": "x"}, n)[0] for n in range(400)]
    kinds = {action[0] if action[0] != "status" else action[1] for action in seen}
    assert kinds == {503, "empty"}
    assert 0.65 < sum(a[0] == "status" for a in seen) / len(seen) < 0.85


def _openai_cmd(run_dir: Path, url: str, target: int, *extra: str) -> list[str]:
    import sys

    return [
        sys.executable,
        "-m",
        "selfinstruct.cli",
        "generate",
        "-b",
        "openai",
        "-m",
        "m",
        "--completions",
        "--base-url",
        url,
        "-o",
        str(run_dir),
        "-n",
        str(target),
        "-q",
        *extra,
    ]


def test_a_kill_while_a_slow_server_works_keeps_every_reply_it_sent(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    from conftest import REPO
    from fake_openai import prompt_text

    from selfinstruct.backends.scripted import canned_reply

    answered: list[str] = []

    def slow_after_some(body: dict, n: int) -> list:
        # The first replies come at once; after that the server takes its time, so the kill
        # lands while a stage is half answered.
        if n <= 9:
            answered.append(prompt_text(body))
            return [("ok", canned_reply(prompt_text(body)))]
        return [("sleep", 30.0), ("ok", "too late")]

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run_dir = tmp_path / "run"
    with FakeOpenAI(slow_after_some) as server:
        proc = subprocess.Popen(_openai_cmd(run_dir, server.url, 40, "--window", "2"), env=env)
        # The events: the nine replies are journaled, and more requests are in the server's
        # hands (asked, unanswered).
        wait_until(lambda: jsonl_lines(run_dir / "requests.jsonl") >= 9, "9 journaled replies")
        wait_until(lambda: len(server.bodies) > 9, "requests held by the slow server")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        held = len(server.bodies) - 9
    journal = [json.loads(x) for x in (run_dir / "requests.jsonl").read_text().splitlines()]
    assert len(journal) == 9  # every reply the server sent is there, none twice
    in_flight = set(_ids(run_dir / "asked.jsonl")) - {e["id"] for e in journal}
    # The kill landed mid-stage, with requests out: every one the server got was noted as
    # asked (before it went), so none can be missed in what the kill cost.
    assert len(in_flight) >= held > 0
    asked_again: list[str] = []

    def healthy(body: dict, n: int) -> list:
        asked_again.append(prompt_text(body))
        return [("ok", canned_reply(prompt_text(body)))]

    with FakeOpenAI(healthy) as server:
        subprocess.run(_openai_cmd(run_dir, server.url, 40, "--window", "2"), env=env, check=True)
    assert not set(answered) & set(asked_again)  # nothing answered before is asked again
    ids = [json.loads(x)["id"] for x in (run_dir / "requests.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids))
    # Those in flight at the kill were asked again (and paid again), and the summary says so.
    counts = json.loads((run_dir / "manifest.json").read_text())["counts"]
    assert counts["reasked_requests"] == len(in_flight) and counts["reasked_tokens"] > 0


def test_a_dead_server_is_exit_3_within_seconds(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import time

    from conftest import REPO

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    done = subprocess.run(
        _openai_cmd(tmp_path / "run", url, 5), env=env, capture_output=True, text=True
    )
    assert done.returncode == 3 and time.monotonic() - start < 30
    assert "cannot reach the server" in done.stderr and url.rsplit("/", 1)[0] in done.stderr
    assert "nothing was parsed" not in done.stderr


def test_a_server_that_dies_mid_run_is_exit_3_after_the_wait_then_resumes(
    tmp_path: Path,
) -> None:
    import os
    import subprocess

    from conftest import REPO

    state = {"alive": True}

    def mortal(body: dict, n: int) -> list:
        if n > 25:
            state["alive"] = False
        if not state["alive"]:
            return [("status", 503)]
        return [("ok", canned_reply(prompt_text(body)))]

    from fake_openai import prompt_text

    from selfinstruct.backends.scripted import canned_reply

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run_dir = tmp_path / "run"
    with FakeOpenAI(mortal) as server:
        done = subprocess.run(
            _openai_cmd(run_dir, server.url, 60, "--outage-wait", "2", "--window", "2"),
            env=env,
            capture_output=True,
            text=True,
        )
    assert done.returncode == 3, done.stderr
    assert "has not answered since" in done.stderr and "503" in done.stderr
    answered = len((run_dir / "requests.jsonl").read_text().splitlines())
    assert answered == 25
    with FakeOpenAI() as server:  # the server is back, at another address
        cmd = _openai_cmd(run_dir, server.url, 60, "--window", "2")
        subprocess.run(cmd, env=env, check=True)
        assert len(server.bodies) > 0
    reference = tmp_path / "ref"
    with FakeOpenAI() as server:
        cmd = _openai_cmd(reference, server.url, 60, "--window", "2")
        subprocess.run(cmd, env=env, check=True)
    for name in ("tasks.jsonl", "rejected.jsonl"):
        assert (run_dir / name).read_bytes() == (reference / name).read_bytes(), name


def _batch_cmd(run_dir: Path, url: str, target: int) -> list[str]:
    import sys

    return [
        sys.executable,
        "-m",
        "selfinstruct.cli",
        "generate",
        "-b",
        "openai-batch",
        "-m",
        "m",
        "--completions",
        "--base-url",
        url,
        "-o",
        str(run_dir),
        "-n",
        str(target),
        "--window",
        "3",
        "--batch-poll",
        "0.2",
        "--batch-flush",
        "0.3",
        "-q",
    ]


def test_batch_api_mode_end_to_end_killed_and_resumed(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    from conftest import REPO
    from fake_batches import FakeBatchAPI

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reference = tmp_path / "ref"
    with FakeBatchAPI() as api:
        subprocess.run(_batch_cmd(reference, api.url, 12), env=env, check=True, timeout=120)
        stages = {json.loads(x)["stage"] for x in (reference / "requests.jsonl").open()}
        assert stages == {"instructions", "classification", "instances"}
        assert len(api.batches) >= 3  # a batch per stage, at least
    run_dir = tmp_path / "run"
    with FakeBatchAPI(instant=False) as api:
        proc = subprocess.Popen(_batch_cmd(run_dir, api.url, 12), env=env)
        # The event: the batch is registered in the run and being polled, not answered.
        wait_until(lambda: jsonl_lines(run_dir / "batches.jsonl") >= 1, "a registered batch")
        wait_until(
            lambda: any(c.startswith("GET /v1/batches/") for c in api.calls), "a batch polled"
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        created = dict(api.batches)
        registry = [json.loads(x) for x in (run_dir / "batches.jsonl").read_text().splitlines()]
        assert [r["batch"] for r in registry] == list(created)
        uploads_before = sum(c == "POST /v1/files" for c in api.calls)
        api.release()
        subprocess.run(_batch_cmd(run_dir, api.url, 12), env=env, check=True, timeout=120)
        # The resumed run polled the batch it had created; its requests were not sent again.
        first = registry[0]["requests"]
        later_uploads = [
            api.files[b["input_file_id"]].decode()
            for bid, b in api.batches.items()
            if bid not in created
        ]
        assert not any(f'"custom_id": "{rid}"' in text for rid in first for text in later_uploads)
        assert sum(c == "POST /v1/files" for c in api.calls) > uploads_before
    for name in ("tasks.jsonl", "rejected.jsonl"):
        assert (run_dir / name).read_bytes() == (reference / name).read_bytes(), name
