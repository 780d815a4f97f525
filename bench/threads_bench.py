"""Two processes sharing the cores: each with a thread per core, or each with its share.

    python bench/threads_bench.py [--seconds 8]

Each process multiplies 256 x 576 by 576 x 1536 (one MLP projection of the bundled model at
256 tokens) in a loop and prints how many it did a second. Why tests/conftest.py gives each
pytest worker its share of the cores: OpenMP teams that outnumber the cores wait at every
barrier for a thread the other process has descheduled.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time


def work(threads: int, seconds: float) -> None:
    import torch

    torch.set_num_threads(threads)
    a, w = torch.randn(256, 576), torch.randn(576, 1536)
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        for _ in range(50):
            (a @ w).relu_()
        done += 50
    print(f"{done / (time.perf_counter() - start):.0f}", flush=True)


def rates(processes: int, threads: int, seconds: float) -> list[str]:
    cmd = [sys.executable, __file__, "--work", str(threads), "--seconds", str(seconds)]
    children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    return [child.communicate()[0].strip() for child in children]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--work", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.work:
        work(args.work, args.seconds)
        return
    cores = len(os.sched_getaffinity(0))
    share = max(1, cores // 2)
    print(f"{cores} cores; matmuls a second, per process")
    for processes, threads in [(1, cores), (1, share), (2, cores), (2, share)]:
        got = " + ".join(rates(processes, threads, args.seconds))
        print(f"{processes} process(es) x {threads} thread(s): {got}")


if __name__ == "__main__":
    main()
