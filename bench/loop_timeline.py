"""Second by second, what the client does in one `bench/loop_bench.py` case.

    python bench/loop_timeline.py [--slots 512] [--target 4000] [-- more generate options]

The same fake server (length-proportional latency) and the same command as loop_bench's
"--concurrency only" cases; every second: the client's CPU (from /proc), the answers journaled
and the tasks written; at the end the server's slot use by tenth. Shows whether empty slots
come from a client that is busy (CPU near 100%) or one that has nothing to ask.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import loop_bench  # the fake server


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slots", type=int, default=512)
    parser.add_argument("--target", type=int, default=4000)
    parser.add_argument("extra", nargs="*", help="more generate options, after --")
    args = parser.parse_args()
    ctx = mp.get_context("fork")
    out, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(
        target=loop_bench._serve, args=(args.slots, "length", 0, out, stop), daemon=True
    )
    server.start()
    url = out.get()
    run = Path(tempfile.mkdtemp(prefix="loop-timeline-")) / "run"
    cmd = [sys.executable, "-m", "selfinstruct.cli", "generate", "-b", "openai", "-m", "bench"]
    cmd += ["--completions", "--base-url", url, "-o", str(run), "-n", str(args.target)]
    cmd += ["--concurrency", str(args.slots), "-q", *args.extra]
    env = {**os.environ, "PYTHONPATH": str(loop_bench.REPO)}
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    started, cpu_before, answers_before = time.perf_counter(), 0.0, 0
    print("second | client CPU | answers | tasks")
    while child.poll() is None:
        time.sleep(1.0)
        try:
            cpu = _cpu_seconds(child.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        answers = _lines(run / "requests.jsonl")
        elapsed = time.perf_counter() - started
        print(
            f"{elapsed:6.1f} | {100 * (cpu - cpu_before):4.0f}% | {answers - answers_before:5d}"
            f" | {_lines(run / 'tasks.jsonl')}",
            flush=True,
        )
        cpu_before, answers_before = cpu, answers
    child.wait()
    stop.set()
    print("slots busy by tenth of the run:", out.get()["by_tenth"])
    server.join(10)


if __name__ == "__main__":
    main()
