"""The openai backend against a real HTTP server on 127.0.0.1 (no network beyond loopback)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from selfinstruct.backends.base import BackendError, SamplingParams
from selfinstruct.backends.openai_compat import OpenAIBackend
from selfinstruct.config import GenerateConfig, OpenAIOptions
from selfinstruct.generate import run_generate

PARAMS = SamplingParams(max_tokens=20, stop=("\n\n",))


_made: list[OpenAIBackend] = []


@pytest.fixture(autouse=True)
def _close_backends() -> Iterator[None]:
    """Every backend a test made is closed after it: its HTTP sessions belong to its loop."""
    yield
    while _made:
        _made.pop().close()


def make_client(urls: list[str], chat: bool = False, **kw) -> OpenAIBackend:
    """A backend for `urls`; keywords are options, or the retry loop's tunables."""
    tunables = {k: kw.pop(k) for k in ("backoff_base", "connect_grace") if k in kw}
    made = OpenAIBackend("m", OpenAIOptions(base_url=urls, **kw), chat=chat, **tunables)
    _made.append(made)
    return made


def backend(server: FakeOpenAI, **kw) -> OpenAIBackend:
    options = {"max_retries": 3, "backoff_base": 0.01, "timeout": 5.0, **kw}
    return make_client([server.url], **options)


def test_completions_and_chat_endpoints() -> None:
    with FakeOpenAI(lambda body, n: [("ok", "hello there", "length")]) as server:
        done = backend(server).generate(["Say hi", "Say bye"], PARAMS)
        assert [c.text for c in done] == ["hello there", "hello there"]
        assert done[0].finish_reason == "length" and done[0].usage.completion_tokens == 2
        # Sent concurrently, so they may arrive in either order; results keep the prompts' order.
        assert {b["prompt"] for b in server.bodies} == {"Say hi", "Say bye"}
        assert server.bodies[0]["stop"] == ["\n\n"] and server.bodies[0]["model"] == "m"
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
    client = make_client([url], backoff_base=0.05, connect_grace=1.0)
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
        client = make_client([one.url, two.url], backoff_base=0.01)
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


def test_vllm_servers_are_not_sent_a_seed_unless_asked() -> None:
    seeded = SamplingParams(max_tokens=20, seed=7, presence_penalty=1.0)
    with FakeOpenAI(owned_by="vllm") as vllm, FakeOpenAI(owned_by="system") as other:
        make_client([vllm.url, other.url]).generate(["a"] * 6, seeded)
        assert vllm.model_lists == 1 and other.model_lists == 1  # asked once, before use
        assert vllm.bodies and all("seed" not in b for b in vllm.bodies)
        assert other.bodies and all(b["seed"] == 7 for b in other.bodies)
    with FakeOpenAI(owned_by="vllm") as vllm:  # --no-omit-param: everything is sent
        make_client([vllm.url], omit_params=[]).generate(["a"], seeded)
        assert vllm.bodies[0]["seed"] == 7
    with FakeOpenAI(owned_by="vllm") as vllm:  # --omit-param replaces the default
        client = make_client([vllm.url], omit_params=["presence_penalty"])
        client.generate(["a"], seeded)
        assert vllm.bodies[0]["seed"] == 7 and "presence_penalty" not in vllm.bodies[0]


@pytest.mark.parametrize(
    "error",
    [
        ("Unsupported parameter: 'presence_penalty' is not supported with this model.", {}),
        (
            "The model does not take this value.",
            {"param": "temperature", "code": "unsupported_value"},
        ),
    ],
)
def test_a_refused_parameter_stops_the_run_and_names_the_switch(error) -> None:
    text, extra = error
    with (
        FakeOpenAI(lambda body, n: [("status", 400, {}, text, extra)]) as server,
        pytest.raises(BackendError, match="--omit-param") as err,
    ):
        backend(server).generate(["a", "b"], PARAMS)
    assert ("presence_penalty" if not extra else "temperature") in str(err.value)
    assert server.url.rsplit("/", 1)[0] in str(err.value)


def test_a_plain_bad_request_is_dropped_not_fatal() -> None:
    # A 400 that names no parameter (a prompt too long for the context) fails one request.
    def brain(body, n):
        return [("status", 400, {}, "maximum context length is 2048")] if n == 1 else [("ok", "x")]

    with FakeOpenAI(brain) as server:
        done = backend(server).generate(["a"], PARAMS)
        assert done[0].finish_reason == "error" and "context length" in (done[0].error or "")


def test_a_dead_server_is_taken_out_and_the_others_carry_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fine = lambda body, n: [("ok", "fine")]  # noqa: E731
    with FakeOpenAI(fine, delay=0.02) as one, FakeOpenAI(delay=0.02) as two:

        def kill_two_after_five(body, n):
            if n == 5:
                two.kill()
            return [("ok", "fine")]

        two.brain = kill_two_after_five
        client = make_client([one.url, two.url], backoff_base=0.01)
        with caplog.at_level("WARNING", logger="selfinstruct"):
            done = client.generate([f"p{k}" for k in range(60)], PARAMS)
        assert [c.text for c in done] == ["fine"] * 60
        # Every prompt was answered once: what the dead server answered was not asked again.
        assert one.answered_ok + two.answered_ok == 60 and two.answered_ok < 20
        assert client.stats().down == [two.url]
        assert any(two.url in r.getMessage() and "down" in r.getMessage() for r in caplog.records)
        client.close()


def test_a_server_that_answered_500_then_vanished_is_reported_as_failed() -> None:
    said = "EngineCore encountered an issue. See stack trace (above) for the root cause."

    with FakeOpenAI() as server:

        def brain(body, n):
            if n == 3:
                server.kill()
            return [("status", 500, {}, said)]

        server.brain = brain
        client = backend(server, connect_grace=1.0, backoff_base=0.05, max_retries=100)
        with pytest.raises(BackendError, match="the server failed") as err:
            client.generate(["a"], PARAMS)
        assert "HTTP 500: EngineCore encountered an issue" in str(err.value)
        client.close()


# 0.001: the wait has already passed when the first failure comes (a loaded machine, a long
# pause between calls): a server not yet asked since the last success must be asked first.
@pytest.mark.parametrize("outage_wait", [1.0, 0.001])
def test_every_server_dead_mid_run_is_exit_3_naming_each(outage_wait: float) -> None:
    with FakeOpenAI() as one, FakeOpenAI() as two:
        client = make_client([one.url, two.url], outage_wait=outage_wait, backoff_base=0.05)
        assert len(client.generate(["a", "b"], PARAMS)) == 2
        one.kill()
        two.kill()
        with pytest.raises(BackendError, match="has not answered since") as err:
            client.generate(["c"], PARAMS)
        assert one.url in str(err.value) and two.url in str(err.value)
        client.close()


def test_a_bug_of_ours_keeps_its_traceback_and_is_not_blamed_on_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only a reply that fails validation (not JSON, no choices, no text) is the server's
    fault; an exception raised by our own code while asking reaches the caller as itself."""
    from selfinstruct.backends import openai_compat

    def broken(*args: object, **kwargs: object) -> dict:
        raise ValueError("a bug in building the request")

    with FakeOpenAI(lambda body, n: [("ok", "fine")]) as server:
        client = backend(server, max_retries=3)
        monkeypatch.setattr(openai_compat, "request_body", broken)
        with pytest.raises(ValueError, match="a bug in building the request"):
            client.generate(["x"], PARAMS)
        assert client.stats().retries == 0 and not server.bodies


def test_what_counts_as_a_malformed_reply() -> None:
    from selfinstruct.backends.openai_compat import MalformedReply, completion_of

    good = {"choices": [{"text": "hi", "finish_reason": "length"}], "usage": None}
    assert completion_of(good, chat=False).text == "hi"
    assert completion_of(good, chat=False).finish_reason == "length"
    chat = {"choices": [{"message": {"content": None}, "finish_reason": "stop"}]}
    assert completion_of(chat, chat=True).text == ""  # a refusal with no content: empty text
    counted = {
        "choices": [{"message": {"content": "x"}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": None},
    }
    assert completion_of(counted, chat=True).usage.prompt_tokens == 7
    assert completion_of(counted, chat=True).usage.completion_tokens == 0
    for bad, as_chat in (({"choices": []}, False), ({"choices": None}, False),
                         ({"choices": [{"message": None}]}, True),
                         ({"choices": [{"text": 3}]}, False),
                         ({"choices": ["text"]}, False), (["choices"], False),
                         ({"error": "overloaded"}, True)):  # fmt: skip
        with pytest.raises(MalformedReply):
            completion_of(bad, chat=as_chat)


class FixedWindowLimit:
    """A provider's limit, enforced: at most `rpm` requests and `tpm` tokens (prompt characters
    / 4 + max_tokens, as the client estimates) per window of `window` s (a minute, shortened),
    stated in x-ratelimit headers on every answer; over it, 429 with Retry-After."""

    def __init__(self, rpm: int, tpm: int, window: float) -> None:
        import threading

        self.rpm, self.tpm, self.window = rpm, tpm, window
        self.lock = threading.Lock()
        self.start = 0.0
        self.requests = self.tokens = 0
        self.refused: list[int] = []

    def __call__(self, body: dict, n: int) -> list:
        from fake_openai import prompt_text

        tokens = len(prompt_text(body)) // 4 + 1 + body.get("max_tokens", 0)
        with self.lock:
            now = time.monotonic()
            if now >= self.start + self.window:
                self.start, self.requests, self.tokens = now, 0, 0
            reset = f"{self.start + self.window - now:.3f}s"
            over = self.requests + 1 > self.rpm or self.tokens + tokens > self.tpm
            if not over:
                self.requests += 1
                self.tokens += tokens
            headers = {
                "x-ratelimit-limit-requests": str(self.rpm),
                "x-ratelimit-limit-tokens": str(self.tpm),
                "x-ratelimit-remaining-requests": str(self.rpm - self.requests),
                "x-ratelimit-remaining-tokens": str(self.tpm - self.tokens),
                "x-ratelimit-reset-requests": reset,
                "x-ratelimit-reset-tokens": reset,
            }
            if over:
                self.refused.append(n)
                wait = {"retry-after": f"{self.start + self.window - now:.3f}"}
                return [("status", 429, {**headers, **wait})]
        return [("ok", "fine", "stop", headers)]


@pytest.mark.parametrize(("rpm", "tpm"), [(12, 10**9), (10**6, 12 * 40)])
def test_stated_rate_limits_are_kept_after_the_first_burst(rpm: int, tpm: int) -> None:
    """Requests per minute, then tokens per minute: once the headers have said where the client
    stands, nothing more is refused; requests wait for the reset instead, and the wait shows."""
    from selfinstruct.backends.base import SamplingParams

    limit = FixedWindowLimit(rpm, tpm, window=0.6)
    params = SamplingParams(max_tokens=36)  # with a 12-character prompt: 40 tokens each
    with FakeOpenAI(limit) as server:
        client = backend(server, concurrency=4, max_retries=8)
        started = time.monotonic()
        done = client.generate(["p" * 12] * 40, params)
        took = time.monotonic() - started
        stats = client.stats()
    assert [d.text for d in done] == ["fine"] * 40
    # Only the opening burst, sent before any header came back, may be refused.
    assert all(n <= 4 for n in limit.refused), limit.refused
    assert took >= 0.6 * (40 // 12 - 1)  # paced over several windows, not refused
    assert stats.pace is not None and "waited" in stats.pace


def test_a_retry_after_pauses_the_whole_server() -> None:
    """A 503 with Retry-After: no request goes to that server until the time has passed, not
    only the one that got it."""
    from conftest import wait_until

    arrivals: list[float] = []

    def brain(body: dict, n: int) -> list:
        arrivals.append(time.monotonic())
        if n == 1:
            return [("status", 503, {"retry-after": "0.8"})]
        return [("ok", "fine")]

    with FakeOpenAI(brain) as server:
        client = backend(server, concurrency=4, max_retries=3)
        first = client.submit("0", "a", PARAMS)
        wait_until(lambda: client.stats().retries >= 1, "the 503 to be read")
        later = [client.submit(str(k), "b", PARAMS) for k in range(1, 4)]
        assert [f.result(10).text for f in [first, *later]] == ["fine"] * 4
    assert min(arrivals[1:]) - arrivals[0] >= 0.75  # nothing went in between


def test_reset_durations_as_providers_write_them() -> None:
    from selfinstruct.backends.ratelimit import duration

    assert duration("1s") == 1.0 and duration("20ms") == 0.02 and duration("1m30.5s") == 90.5
    assert duration("0.25") == 0.25
    # At most two minutes, as Retry-After: then the server is asked again (an epoch-looking
    # value must not stop a run for ever).
    assert duration("6m0s") == duration("1h") == duration("1712345678") == 120.0
    assert duration("soon") is None and duration("") is None and duration(None) is None


def test_a_limit_below_the_concurrency_is_kept_after_each_reset() -> None:
    """3 requests a window with 8 allowed in flight: at each reset only the stated limit goes."""
    limit = FixedWindowLimit(3, 10**9, window=0.3)
    with FakeOpenAI(limit) as server:
        client = backend(server, concurrency=8, max_retries=8)
        done = client.generate(["p"] * 15, PARAMS)
    assert [d.text for d in done] == ["fine"] * 15
    assert all(n <= 8 for n in limit.refused), limit.refused  # the opening burst only


def test_a_server_held_back_by_its_limit_does_not_draw_the_requests() -> None:
    """Two servers; one answers 429 with Retry-After: 1.5 s. The other carries the run."""

    def first_refused(body: dict, n: int) -> list:
        return [("status", 429, {"retry-after": "1.5"})] if n == 1 else [("ok", "fine")]

    held = FakeOpenAI(first_refused)
    with held, FakeOpenAI(lambda body, n: [("ok", "fine")]) as free:
        options = {"max_retries": 4, "backoff_base": 0.01, "timeout": 5.0, "concurrency": 4}
        client = make_client([held.url, free.url], **options)
        started = time.monotonic()
        done = client.generate(["p"] * 12, PARAMS)
        took = time.monotonic() - started
    assert [d.text for d in done] == ["fine"] * 12
    # Only the opening wave reached it; nothing waited the 1.5 s it asked for.
    assert took < 1.4 and len(held.bodies) <= 4


def test_a_long_pass_hands_requests_to_a_limited_backend_only_up_to_its_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mid-way through a long pass of the loop (`release_due`), a backend with a limit gets
    held requests up to that limit, in priority order; the few extra places are filled only at
    the pass's end. A backend without a limit (it batches) gets nothing mid-pass."""
    from concurrent.futures import Future

    from selfinstruct import dispatch as dispatch_module
    from selfinstruct.backends.base import BackendStats, Completion
    from selfinstruct.dispatch import Dispatcher, Request
    from selfinstruct.keys import RequestKey
    from selfinstruct.stages.base import Ask
    from selfinstruct.store import RunStore

    class Recorder:
        model, chat = "m", True

        def __init__(self, limit: int | None) -> None:
            self.limit, self.got = limit, []

        def stats(self) -> BackendStats:
            return BackendStats(limit=self.limit)

        def submit(self, request_id: str, *args: object) -> Future[Completion]:
            self.got.append(request_id)
            return Future()

    cfg = GenerateConfig(run_dir=tmp_path / "run", backend="scripted")
    clock = [100.0]
    monkeypatch.setattr(dispatch_module.time, "monotonic", lambda: clock[0])
    for limit in (8, None):
        backend = Recorder(limit)
        store = RunStore(tmp_path / f"run-{limit}")
        with store:
            dispatcher = Dispatcher(cfg, backend, store, store.path)  # type: ignore[arg-type]
            for k in range(20):
                key = RequestKey(prompt=k, stage="classification")
                ask = Ask(prompt=f"p{k}", params=PARAMS)
                dispatcher.send(Request(key=key, ask=ask, priority=(k, 0)))
            dispatcher.release_due()  # too soon after the last release? none yet: due
            clock[0] += 0.001
            dispatcher.release_due()  # 1 ms later: not due
            if limit is None:
                assert backend.got == []
            else:
                assert backend.got == [f"{k}:classification" for k in range(8)]
            clock[0] += 1.0
            dispatcher.release()  # the pass's end: the extra places too
            assert len(backend.got) == (20 if limit is None else 8 + 2)
