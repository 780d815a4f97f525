"""The openai backend against a real HTTP server on 127.0.0.1 (no network beyond loopback)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from selfinstruct.backends.base import BackendError, SamplingParams
from selfinstruct.backends.openai_compat import OpenAIBackend
from selfinstruct.config import GenerateConfig
from selfinstruct.generate import run_generate

PARAMS = SamplingParams(max_tokens=20, stop=("\n\n",))


def backend(server: FakeOpenAI, **kw) -> OpenAIBackend:
    options = {"chat": False, "max_retries": 3, "backoff_base": 0.01, "timeout": 5.0, **kw}
    return OpenAIBackend("test-model", [server.url], **options)


def test_completions_and_chat_endpoints() -> None:
    with FakeOpenAI(lambda body, n: [("ok", "hello there", "length")]) as server:
        done = backend(server).generate(["Say hi", "Say bye"], PARAMS)
        assert [c.text for c in done] == ["hello there", "hello there"]
        assert done[0].finish_reason == "length" and done[0].usage.completion_tokens == 2
        # Sent concurrently, so they may arrive in either order; results keep the prompts' order.
        assert {b["prompt"] for b in server.bodies} == {"Say hi", "Say bye"}
        assert server.bodies[0]["stop"] == ["\n\n"] and server.bodies[0]["model"] == "test-model"
        chat = backend(server, chat=True).generate([[{"role": "user", "content": "Hi"}]], PARAMS)
        assert chat[0].text == "hello there"
        assert server.bodies[-1]["messages"] == [{"role": "user", "content": "Hi"}]


def test_429_with_retry_after_is_honoured() -> None:
    def brain(body, n):
        return [("status", 429, {"retry-after": "1"})] if n == 1 else [("ok", "fine")]

    with FakeOpenAI(brain) as server:
        client = backend(server)
        start = time.perf_counter()
        done = client.generate(["x"], PARAMS)
        assert done[0].text == "fine" and time.perf_counter() - start >= 1.0
        assert client.stats().rate_limited == 1 and client.stats().retries == 1


def test_500_malformed_empty_and_reset_are_retried() -> None:
    faults = {1: [("status", 500)], 2: [("malformed",)], 3: [("empty",)], 4: [("reset",)]}
    with FakeOpenAI(lambda body, n: faults.get(n, [("ok", "recovered")])) as server:
        client = backend(server, max_retries=5)
        assert client.generate(["x"], PARAMS)[0].text == "recovered"
        assert client.stats().retries == 4 and len(server.bodies) == 5


def test_slow_responses_past_the_timeout_are_retried() -> None:
    def brain(body, n):
        return [("sleep", 1.0), ("ok", "late")] if n == 1 else [("ok", "quick")]

    with FakeOpenAI(brain) as server:
        client = backend(server, timeout=0.3)
        assert client.generate(["x"], PARAMS)[0].text == "quick"
        assert client.stats().retries == 1 and client.stats().timeouts == 1


def test_a_request_that_keeps_failing_while_others_succeed_is_dropped() -> None:
    def brain(body, n):
        return [("status", 500)] if body["prompt"] == "bad" else [("ok", "fine")]

    with FakeOpenAI(brain) as server:
        client = backend(server, max_retries=2)
        good = client.submit("0", "good", PARAMS).result(5)  # the server works...
        done = client.generate(["bad"], PARAMS)  # ...but not for this request
        assert good.text == "fine" and done[0].finish_reason == "error"
        assert "500" in (done[0].error or "") and not done[0].retryable
        assert sum(b["prompt"] == "bad" for b in server.bodies) == 3  # 1 + max_retries


def test_a_server_that_never_answers_is_exit_3_within_seconds() -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    client = OpenAIBackend("m", [url], chat=False, backoff_base=0.05, connect_grace=1.0)
    start = time.perf_counter()
    with pytest.raises(BackendError, match="cannot reach the server") as err:
        client.generate(["x"], PARAMS)
    assert time.perf_counter() - start < 5 and url.rsplit("/", 1)[0] in str(err.value)
    assert BackendError.exit_code == 3
    client.close()


def test_a_server_that_stops_answering_mid_run_is_waited_for_then_reported() -> None:
    def brain(body, n):
        return [("ok", "fine")] if n <= 2 else [("status", 503)]

    with FakeOpenAI(brain) as server:
        client = backend(server, outage_wait=1.0, max_retries=100, backoff_base=0.05)
        assert [c.text for c in client.generate(["a", "b"], PARAMS)] == ["fine", "fine"]
        start = time.perf_counter()
        with pytest.raises(BackendError, match="has not answered since") as err:
            client.generate(["c"], PARAMS)
        assert 1.0 <= time.perf_counter() - start < 5
        assert "503" in str(err.value) and "resume" in str(err.value)
        client.close()


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_not_found_stop_at_once(status: int) -> None:
    with FakeOpenAI(lambda body, n: [("status", status)]) as server:
        with pytest.raises(BackendError, match=str(status)):
            backend(server).generate(["a", "b", "c"], PARAMS)
        assert len(server.bodies) <= 3  # no retries


def test_concurrency_is_bounded_and_shrinks_after_429() -> None:
    with FakeOpenAI(lambda body, n: [("ok", "x")], delay=0.05) as server:
        backend(server, concurrency=4).generate(["p"] * 40, PARAMS)
        assert server.max_in_flight == 4


def test_requests_are_spread_over_servers() -> None:
    with FakeOpenAI() as one, FakeOpenAI() as two:
        client = OpenAIBackend("m", [one.url, two.url], chat=False, backoff_base=0.01)
        client.generate(["Task: x\n"] * 10, PARAMS)
        assert len(one.bodies) == 5 and len(two.bodies) == 5


def test_generate_loop_over_http(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-canary-do-not-log-1234")
    with FakeOpenAI() as server:
        cfg = GenerateConfig(
            run_dir=tmp_path / "run",
            backend="openai",
            model="test-model",
            base_url=[server.url],
            chat=False,
            target_tasks=15,
            window=3,
        )
        summary = run_generate(cfg)
    assert summary.status == "done" and summary.accepted >= 15
    assert summary.prompt_tokens > 0 and summary.completion_tokens > 0
    for path in (tmp_path / "run").iterdir():
        assert "sk-canary" not in path.read_text(errors="replace")
