"""The whole generate loop against a loopback server with a fixed number of slots.

    python bench/loop_bench.py [--quick] [--only NAME] [--latency-scale X]

A fake OpenAI-compatible server runs in its own process with S slots: a request takes a slot for
its service time (requests beyond S wait in the server's queue, as on vLLM or a rate-limited
API) and answers with well-formed canned replies. Service time is either fixed, or grows with
the reply (0.5 s + 13 ms per output word, lognormal jitter, sigma 0.45), like a real server;
`--latency-scale` multiplies every service time (a loaded GPU server takes seconds a reply).
`selfinstruct generate -b openai` runs against it as a user runs it (a subprocess), and the
bench reports slot utilisation = server busy seconds / (S x wall), with wall measured by the
server from the first request to the last reply (process start-up excluded, and shown apart).

The last case is a single-slot server (llama.cpp-like) with a short timeout, where the first
wave of requests queues past the timeout: it must finish, and no request may time out twice
(the server counts how often it was sent each prompt).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fake_openai import FakeOpenAI, prompt_text  # the test server, reused

from selfinstruct.backends.scripted import canned_reply

REPO = Path(__file__).resolve().parents[1]


# Made-up words for the instruction lists: the scripted backend's canned instructions are a few
# templates, which novelty rejects after about 1,400 tasks (the 512 case stalled on them); lines
# of words drawn from this list stay novel for as many tasks as a bench asks.
_SYLLABLES = ["ka", "lo", "mi", "ren", "tus", "va", "dor", "pel", "qui", "sam", "tor", "ne"]
_WORDS = sorted({a + b + c for a in _SYLLABLES for b in _SYLLABLES for c in _SYLLABLES})


def diverse_reply(text: str) -> str:
    """`canned_reply`, with every instruction it lists replaced by 8-14 made-up words (the
    same for the same prompt, so a resumed run gets the same replies)."""
    reply = canned_reply(text)
    tail = text[-600:]
    if "Is it classification?" in tail or "Task:" in tail[-300:]:
        return reply
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    lines = []
    for line in reply.split("\n"):
        number = re.match(r"\s*(\d+\.)?\s*", line)
        head = number.group(0) if number else ""
        if line[len(head) :].startswith("Classify"):  # kept a classification task, as canned
            words = " ".join(rng.choice(_WORDS) for _ in range(8))
            task = f"Classify the given sentence about {words} as positive or negative."
            lines.append(head + task)
            continue
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(8, 14)))
        lines.append(f"{head}{words.capitalize()}.")
    return "\n".join(lines)


# Every service time is multiplied by this (--latency-scale): a GPU server with hundreds in
# flight writes each sequence at tens of tokens a second, so its replies take seconds.
LATENCY_SCALE = 1.0


def _serve(slots: int, latency: str, seed: int, out: Any, stop: Any) -> None:
    gate = threading.Semaphore(slots)
    lock = threading.Lock()
    rng = random.Random(seed)
    record: dict[str, Any] = {
        "busy": 0.0,
        "first": None,
        "last": None,
        "sent": Counter(),
        "spans": [],
    }

    def brain(body: dict[str, Any], n: int) -> list[Any]:
        text = prompt_text(body)
        reply = diverse_reply(text)
        with lock:
            jitter = rng.lognormvariate(0.0, 0.45)
            record["sent"][text] += 1
        words = len(reply.split())
        service = 0.5 if latency == "fixed" else (0.5 + 0.013 * words) * jitter
        service *= LATENCY_SCALE
        with gate:
            start = time.monotonic()
            with lock:
                record["first"] = record["first"] or start
            time.sleep(service)
            end = time.monotonic()
            with lock:
                record["busy"] += end - start
                record["last"] = end
                record["spans"].append((start, end))
        return [("ok", reply)]

    server = FakeOpenAI(brain)
    server.thread.start()
    out.put(server.url)
    stop.wait()
    sent = record["sent"]
    out.put(
        {
            "cpu": time.process_time(),  # the server process's CPU seconds
            "by_tenth": _by_tenth(record["spans"], slots),
            "busy": record["busy"],
            "window": (record["last"] or 0) - (record["first"] or 0),
            "requests": sum(sent.values()),
            "prompts": len(sent),
            "most_sends": max(sent.values(), default=0),
            "sent_3_or_more": sum(1 for v in sent.values() if v >= 3),
        }
    )
    server.server.shutdown()


def _by_tenth(spans: list[tuple[float, float]], slots: int) -> list[float]:
    """Slot utilisation in each tenth of the server's window: where the idle time is."""
    if not spans:
        return []
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    width = (last - first) / 10 or 1.0
    busy = [0.0] * 10
    for start, end in spans:
        for k in range(10):
            low, high = first + k * width, first + (k + 1) * width
            busy[k] += max(0.0, min(end, high) - max(start, low))
    return [round(b / (slots * width), 2) for b in busy]


def run_case(
    name: str,
    slots: int,
    latency: str,
    target: int,
    concurrency: int,
    window: int | None,
    extra: list[str],
) -> dict[str, Any]:
    ctx = mp.get_context("fork")
    out, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_serve, args=(slots, latency, 0, out, stop), daemon=True)
    proc.start()
    url = out.get()
    run_dir = Path(tempfile.mkdtemp(prefix="loop-bench-"))
    cmd = [
        sys.executable,
        "-m",
        "selfinstruct.cli",
        "generate",
        "-b",
        "openai",
        "-m",
        "bench",
        "--completions",
        "--base-url",
        url,
        "-o",
        str(run_dir / "run"),
        "-n",
        str(target),
        "--concurrency",
        str(concurrency),
        *(["--window", str(window)] if window else []),  # None: the default window
        "-q",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    wall = time.perf_counter() - started
    stop.set()
    server = out.get()
    proc.join(10)
    manifest = json.loads((run_dir / "run" / "manifest.json").read_text())
    if target <= 1:  # the start-up run (see `startup_cpu`)
        return {"client_cpu_s": usage.ru_utime + usage.ru_stime, "requests": server["requests"]}
    util = server["busy"] / (slots * server["window"]) if server["window"] else 0.0
    requests = max(1, server["requests"])
    client_cpu = usage.ru_utime + usage.ru_stime
    # What the machine can drive: every request costs client and server CPU, and there are
    # os.cpu_count() cores; but the client is one Python process whose loop and HTTP client
    # share one GIL, so it alone can use about one core. What the slots need is
    # slots / mean service time.
    ceiling = min(
        (os.cpu_count() or 1) / ((client_cpu + server["cpu"]) / requests),
        requests / client_cpu if client_cpu else math.inf,
    )
    needed = slots / (server["busy"] / requests) if server["busy"] else 0.0
    result = {
        "case": name,
        "exit": child.returncode,
        "window": manifest["resume_key"]["window"],
        "accepted": manifest["counts"]["accepted"],
        "requests": server["requests"],
        "wall_s": round(wall, 1),
        "server_window_s": round(server["window"], 1),
        "utilisation": round(util, 3),
        "utilisation_by_tenth": server["by_tenth"],
        # Without the ramp-up and the drain (the first and last tenth of the window).
        "utilisation_middle_80pct": round(sum(server["by_tenth"][1:9]) / 8, 3),
        "busy_s": round(server["busy"], 1),
        "most_sends_of_one_prompt": server["most_sends"],
        "prompts_sent_3_or_more_times": server["sent_3_or_more"],
        "client_cpu_ms_per_request": round(1000 * client_cpu / requests, 2),
        "server_cpu_ms_per_request": round(1000 * server["cpu"] / requests, 2),
        "cpu_ceiling_req_per_s": round(ceiling),
        "slots_need_req_per_s": round(needed),
    }
    if child.returncode != 0:
        result["stderr"] = stderr[-500:]
    return result


def startup_cpu() -> float:
    """Client CPU seconds of a run with a target of one task (a handful of requests): Python's
    start, the imports, the seeds' index and the shutdown, which every run pays once."""
    got = run_case("start-up", 8, "fixed", 1, 8, None, [])
    return float(got["client_cpu_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller targets")
    parser.add_argument("--only", help="run the cases whose name contains this")
    parser.add_argument("--window", type=int, help="override every case's --window")
    parser.add_argument(
        "--latency-scale", type=float, default=1.0, help="multiply every service time by this"
    )
    args = parser.parse_args()
    global LATENCY_SCALE
    LATENCY_SCALE = args.latency_scale
    scale = 0.3 if args.quick else 1.0
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    cases: list[tuple[str, int, str, int, int, int | None, list[str]]] = [
        ("32 slots, fixed 0.5 s", 32, "fixed", 300, 32, 64, []),
        ("32 slots, length-proportional", 32, "length", 300, 32, 64, []),
        # What a user gets who sets only the concurrency their server allows.
        ("32 slots, length-proportional, --concurrency only", 32, "length", 300, 32, None, []),
        ("128 slots, fixed 0.5 s", 128, "fixed", 1200, 128, 256, []),
        ("128 slots, length-proportional", 128, "length", 1200, 128, 256, []),
        ("128 slots, length-proportional, --concurrency only", 128, "length", 1200, 128, None, []),
        ("512 slots, length-proportional, --concurrency only", 512, "length", 4000, 512, None, []),
        # A run the size such a fleet is for: four windows, the ramp and the drain amortised.
        (
            "512 slots, length-proportional, --concurrency only, 16,000 tasks",
            512,
            "length",
            16000,
            512,
            None,
            [],
        ),
        # A fleet's worth in flight (issue 25): must complete with nothing lost.
        (
            "2048 slots, length-proportional, --concurrency only",
            2048,
            "length",
            8000,
            2048,
            None,
            [],
        ),
        ("1 slot, 16 in flight, 8 s timeout", 1, "length", 40, 16, 4, ["--timeout", "8"]),
    ]
    startup = startup_cpu()
    print(json.dumps({"startup_client_cpu_s": round(startup, 2)}), flush=True)
    for name, slots, latency, target, concurrency, window, extra in cases:
        if args.only and args.only not in name:
            continue
        window = args.window or window
        target = max(10, math.ceil(target * scale))
        result = run_case(name, slots, latency, target, concurrency, window, extra)
        # What each request costs once the client runs: the start-up taken out.
        cpu_ms, requests = result.get("client_cpu_ms_per_request"), result.get("requests")
        if isinstance(cpu_ms, float) and requests:
            result["client_cpu_ms_per_request_after_startup"] = round(
                cpu_ms - 1000 * startup / requests, 2
            )
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
