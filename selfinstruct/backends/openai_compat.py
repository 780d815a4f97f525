"""Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama, TGI), over the OpenAI API.

The requests are the OpenAI API's JSON, sent by `transport.JSONClient` (aiohttp) rather than
the openai package's client, which cost ten times the CPU a request (see transport.py).

One event loop, in a thread of its own, holds the clients (connections are reused) and one
concurrency limit for the whole run, so what the server taught about its capacity is kept from
one request to the next. The limit is additive-increase, multiplicative-decrease: it grows by
about one per round trip of successes and halves on congestion (429, 503, a timeout, or a reply
that took more than half the timeout, which means the server is queueing). It halves at most
once per round trip, so one burst of timeouts from the same wave does not collapse it. Each
retry waits with exponential backoff and jitter, at least as long as `Retry-After`.

Several base URLs share the requests: each goes to the least busy server that is up. Before its
first request a server is asked for its models (`GET /models`), which tells whether it answers
and whether it is vLLM, whose servers are not sent a per-request `seed` (see `_probe`).
`--omit-param` leaves any sampling parameter out for servers that refuse or mishandle it.

Failures, and what they mean:
- 401, 403, 404: the run cannot work; BackendError at once (exit 3).
- 400 naming a parameter the server does not take: every request would get it; BackendError
  naming the parameter and the `--omit-param` that leaves it out.
- 400, 413, 422 otherwise: this request is bad; it comes back as a final error and the loop
  drops its item.
- a server that refuses connections, or fails 3 attempts in a row: taken out of the rotation
  (logged, with what it last said) and asked for its models again after 2 s, doubling up to a
  minute; the other servers carry the run meanwhile.
- no server ever answered (connection refused, DNS): BackendError within `connect_grace`
  seconds, naming each URL and its error; a server that answered only with errors (500) is
  reported as failed, with the error text it sent.
- every server stops answering mid-run: requests keep retrying while they are down; after
  `outage_wait` seconds with no success the run stops with BackendError (exit 3) saying since
  when, and the same command resumes it.
- a request that keeps failing while the server is up (it answers with an error, or other
  requests succeed), `max_retries` times: a final error for that request, which the loop drops.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import os
import queue
import random
import re
import threading
import time
import typing
from collections.abc import Collection, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from selfinstruct.backends.base import (
    BackendError,
    BackendStats,
    Completion,
    Prompt,
    SamplingParams,
    Usage,
)
from selfinstruct.backends.ratelimit import RatePacer
from selfinstruct.backends.transport import (
    HTTPStatusError,
    JSONClient,
    MalformedReply,
    TransportConnectionError,
    TransportTimeout,
    http_url,
)
from selfinstruct.config import OmitParam, OpenAIOptions

FATAL = {
    401: "the API key was refused (401); check ${env}",
    403: "the API key may not use this model or endpoint (403)",
    404: "the server has no such model or endpoint (404); check --model and --base-url",
}
FINAL = {400, 413, 422}  # the request itself is wrong: asking again gives the same answer
CONGESTED = {429, 503}
# Sampling parameters a server may refuse or mishandle; --omit-param leaves them out.
OMITTABLE: tuple[str, ...] = typing.get_args(OmitParam)

log = logging.getLogger("selfinstruct")


def request_body(
    model: str,
    chat: bool,
    prompt: Prompt,
    params: SamplingParams,
    omit: Collection[str] = (),
) -> dict[str, Any]:
    """The JSON body of a chat or completions request, for the client and for the Batch API,
    without the parameters in `omit` (those a server cannot honour)."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    if params.stop:
        body["stop"] = list(params.stop)[:4]  # the API accepts at most four
    if params.seed is not None:
        body["seed"] = params.seed
    if params.json_schema is not None:
        # OpenAI's structured outputs; vLLM and llama.cpp servers read the same field.
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {
                "name": "reply",
                "schema": json.loads(params.json_schema),
                "strict": True,
            },
        }
    if chat:
        body["messages"] = (
            prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        )
    else:
        body["prompt"] = (
            prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        )
    for name in omit:
        body.pop(name, None)
    return body


class AdaptiveLimit:
    """A semaphore whose size shrinks on congestion and grows back on success (AIMD). A freed
    slot goes to the most urgent waiting request (lowest priority value; ties in arrival
    order), so the request the loop needs next never waits behind ones it needs later."""

    def __init__(self, limit: int) -> None:
        self.max = limit
        self.limit = limit
        self.in_flight = 0
        self._successes = 0
        self._last_decrease = 0.0
        self._waiting: list[tuple[Any, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def slot(self, priority: Any = ()) -> _Held:
        return _Held(self, priority)

    async def __aenter__(self) -> None:
        await self.acquire(())

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    async def acquire(self, priority: Any) -> None:
        if self.in_flight < self.limit and not self._waiting:
            self.in_flight += 1
            return
        admitted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), admitted))
        try:
            await admitted
        except asyncio.CancelledError:
            if admitted.done() and not admitted.cancelled():
                self.release()  # admitted, then cancelled before it could use the slot
            raise

    def release(self) -> None:
        self.in_flight -= 1
        self._admit()

    def _admit(self) -> None:
        while self._waiting and self.in_flight < self.limit:
            _, _, admitted = heapq.heappop(self._waiting)
            if admitted.cancelled():
                continue
            self.in_flight += 1
            admitted.set_result(None)

    async def congested(self, started: float) -> None:
        """Halve the limit, unless it was halved after this request was sent (same wave)."""
        if started < self._last_decrease:
            return
        self.limit = max(1, self.limit // 2)
        self._successes = 0
        self._last_decrease = time.monotonic()

    async def succeeded(self) -> None:
        self._successes += 1
        if self.limit < self.max and self._successes >= self.limit:
            self.limit += 1
            self._successes = 0
            self._admit()


class _Held:
    def __init__(self, limit: AdaptiveLimit, priority: Any) -> None:
        self.limit, self.priority = limit, priority

    async def __aenter__(self) -> None:
        await self.limit.acquire(self.priority)

    async def __aexit__(self, *exc: object) -> None:
        self.limit.release()


class _Server:
    """One base URL: its client, whether it answers, and the parameters it must not be sent."""

    # After a failed probe a server is left alone this long, doubling up to the cap.
    REST_FIRST, REST_CAP = 2.0, 60.0
    # Failed attempts in a row (no success between) after which a server is taken out.
    FAILURES_DOWN = 3

    def __init__(self, url: str, client: JSONClient) -> None:
        self.url = url
        self.client = client
        self.in_flight = 0
        self.turn = 0  # when it was last chosen: ties go round-robin
        self.failures = 0
        self.failed_at = 0.0  # monotonic time of its last failed attempt
        self.down_since: float | None = None
        self.retry_at = 0.0
        self.rest = self.REST_FIRST
        self.omit: frozenset[str] | None = None  # None until probed
        self.kind = ""  # "vllm" when /models says so
        self.last_error = ""  # the last thing that went wrong with it
        self.server_error = ""  # the last 5xx it answered: what it said when it failed
        self.probe_task: asyncio.Task[None] | None = None
        self.pacer = RatePacer()  # what its rate-limit headers say

    def reason(self) -> str:
        if self.server_error and self.server_error != self.last_error:
            return f"it failed with {self.server_error}, then {self.last_error}"
        return self.last_error

    def describe(self) -> str:
        return f"{self.url}: {self.reason()}"


def connect(options: OpenAIOptions) -> tuple[str, list[str]]:
    """The key (a placeholder where none is needed) and the servers' URLs of `options`."""
    urls = list(options.base_url) or [
        os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
    ]
    # Local servers often need no key; a placeholder keeps the header well-formed. A key read
    # from a file often ends in a newline, which no header may hold.
    key = (os.environ.get(options.api_key_env) or "").strip() or "not-needed"
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise BackendError(
            f"${options.api_key_env} holds a control character; set it to the key alone"
        )
    for url in urls:
        try:
            http_url(url)
        except ValueError:
            raise BackendError(
                f"--base-url {url!r} is not an http(s) URL (e.g. http://localhost:8000/v1)"
            ) from None
    return key, urls


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        options: OpenAIOptions,
        chat: bool = True,
        connect_grace: float = 10.0,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self._key, self.base_urls = connect(options)
        self.options = options
        self.model = model
        self.chat = chat
        self.omit_params = None if options.omit_params is None else frozenset(options.omit_params)
        # Tunables of the retry loop, not options: tests shorten them.
        self.connect_grace = connect_grace
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._stats = BackendStats(limit=options.concurrency)
        self._turns = 0
        self._started = time.monotonic()
        self._last_ok: float | None = None  # when any request last succeeded
        self._last_error = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[_Server] = []
        self._limit: AdaptiveLimit | None = None
        self._lock = threading.Lock()
        self._inbox: queue.SimpleQueue[tuple[Prompt, SamplingParams, Any, Future[Completion]]] = (
            queue.SimpleQueue()
        )
        self._wake_pending = False
        self._tasks: set[asyncio.Task[Completion]] = set()

    # -- the event loop that holds the clients -----------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, daemon=True)
                thread.start()
                self._loop, self._thread = loop, thread
                asyncio.run_coroutine_threadsafe(self._setup(), loop).result()
            return self._loop

    async def _setup(self) -> None:
        # Clients and the limit belong to this loop, for the life of the backend.
        self._servers = [
            _Server(u, JSONClient(u, self._key, self.options.timeout)) for u in self.base_urls
        ]
        self._limit = AdaptiveLimit(self.options.concurrency)

    def submit(
        self, request_id: str, prompt: Prompt, params: SamplingParams, priority: Any = ()
    ) -> Future[Completion]:
        loop = self._ensure_loop()
        future: Future[Completion] = Future()
        self._inbox.put((prompt, params, priority, future))
        with self._lock:
            # One wake-up of the loop for everything submitted since the last one: waking it
            # per request costs more than the request itself when hundreds go out at once.
            wake, self._wake_pending = not self._wake_pending, True
        if wake:
            loop.call_soon_threadsafe(self._start_submitted)
        return future

    def _start_submitted(self) -> None:
        with self._lock:
            self._wake_pending = False
        while True:
            try:
                prompt, params, priority, future = self._inbox.get_nowait()
            except queue.Empty:
                return
            task = asyncio.ensure_future(self._one(prompt, params, priority))
            task.add_done_callback(partial(_settle, future))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        futures = [self.submit(str(k), p, params) for k, p in enumerate(prompts)]
        return [f.result() for f in futures]

    def stats(self) -> BackendStats:
        stats = self._stats.model_copy()
        if self._limit is not None:
            stats.limit, stats.in_flight = self._limit.limit, self._limit.in_flight
        stats.down = [s.url for s in self._servers if s.down_since is not None]
        paces = [p for s in self._servers if (p := s.pacer.describe())]
        stats.pace = "; ".join(paces) or None
        return stats

    # -- which server ----------------------------------------------------------------------

    def _choose(self) -> _Server:
        """The least busy server that is up (round-robin among equals); a server due for
        another look is probed on the side. With every server down, the one to be tried
        first: the request fails fast and the outage clock decides."""
        now = time.monotonic()
        for server in self._servers:
            if server.down_since is not None and now >= server.retry_at:
                self._probe_soon(server)
        up = [s for s in self._servers if s.down_since is None]
        if up:
            # A server its rate limit holds back (Retry-After, nothing left until the reset)
            # gets requests only when every other one is held back too.
            server = min(up, key=lambda s: (s.pacer.delay(0) > 0, s.in_flight, s.turn))
        else:
            server = min(self._servers, key=lambda s: s.retry_at)
        self._turns += 1
        server.turn = self._turns
        return server

    async def _pick(self) -> _Server:
        server = self._choose()
        if server.omit is None:  # first use: learn what it is before sending anything
            self._probe_soon(server)
            assert server.probe_task is not None
            await asyncio.shield(server.probe_task)
            if server.down_since is not None and any(s.down_since is None for s in self._servers):
                server = self._choose()
        return server

    def _probe_soon(self, server: _Server) -> None:
        if server.probe_task is None or server.probe_task.done():
            server.probe_task = asyncio.ensure_future(self._probe(server))

    async def _probe(self, server: _Server) -> None:
        """Ask the server for its models: does it answer, and is it vLLM?"""
        wait = min(10.0, self.options.timeout)
        try:
            page, _ = await server.client.get("models", timeout=wait)
        except (HTTPStatusError, MalformedReply):
            page = None  # it answers, but has no /models: a server of unknown kind
        except TransportConnectionError as exc:
            self._failed(server, str(exc), down=True)
            return
        except TransportTimeout:
            self._failed(server, f"no answer to GET /models within {wait:g} s", down=True)
            return
        models = page.get("data") if isinstance(page, dict) else None
        owners = {
            m.get("owned_by")
            for m in (models if isinstance(models, list) else ())
            if isinstance(m, dict) and isinstance(m.get("owned_by"), str)
        }
        server.kind = "vllm" if "vllm" in owners else ""
        if self.omit_params is not None:
            server.omit = self.omit_params
        else:
            # vLLM samples a seeded request with a generator of its own; on its CPU engine a
            # seeded request whose prompt is split over engine steps kills the engine
            # ("CPU Generator does not use offset"). The journal, not the seed, makes a run
            # repeatable, so vLLM servers are not sent one.
            server.omit = frozenset({"seed"}) if server.kind == "vllm" else frozenset()
        if server.down_since is not None:
            log.warning("%s answers again; requests go to it again", server.url)
        server.down_since, server.failures = None, 0

    def _failed(self, server: _Server, error: str, down: bool = False) -> None:
        """Count a failed attempt on `server`; take it out once it looks dead."""
        server.last_error = self._last_error = self._redact(error)
        server.failures += 1
        server.failed_at = time.monotonic()
        if not down and server.failures < server.FAILURES_DOWN:
            return
        now = time.monotonic()
        if server.down_since is None:
            server.down_since, server.rest = now, server.REST_FIRST
            if len(self._servers) > 1:
                up = sum(s.down_since is None for s in self._servers)
                log.warning(
                    "%s is down (%s); %d of %d servers carry the run",
                    server.url,
                    server.reason(),
                    up,
                    len(self._servers),
                )
        else:
            server.rest = min(server.REST_CAP, server.rest * 2)
        server.retry_at = now + server.rest

    # -- one request ---------------------------------------------------------------------

    async def _one(self, prompt: Prompt, params: SamplingParams, priority: Any = ()) -> Completion:
        """One request, retried with backoff until it is answered, or given up on when the
        server is up and only this request keeps failing."""
        limit = self._limit
        assert limit is not None  # made by _setup before any request
        began = time.monotonic()
        attempts = 0
        answered = False  # the server replied with an error: it is up, the request fails
        while True:
            async with limit.slot(priority):
                outcome = await self._attempt(prompt, params)
            if outcome.completion is not None:
                return outcome.completion
            answered |= outcome.answered
            attempts += 1
            self._check_outage()
            others_ok = self._last_ok is not None and self._last_ok > began
            if attempts > self.options.max_retries and (answered or others_ok):
                # The server is up (it answers, or others succeed) and this request keeps
                # failing: the request is the problem, not the server.
                self._stats.failed += 1
                return Completion(
                    text="", finish_reason="error", error=self._redact(self._last_error)
                )
            self._stats.retries += 1
            backoff = min(self.backoff_cap, self.backoff_base * 2 ** min(attempts - 1, 10))
            await asyncio.sleep(max(outcome.wait, backoff * (0.5 + random.random() / 2)))

    async def _attempt(self, prompt: Prompt, params: SamplingParams) -> _Attempt:
        """Ask once, on the least busy server, and say what came of it: a completion (a final
        error included), or a retry after `wait` s. Errors the user must act on raise."""
        limit = self._limit
        assert limit is not None
        server = await self._pick()
        tokens = _tokens_counted(prompt, params)
        # What the server said of its rate limit: wait for the reset rather than be refused.
        # The waiting request counts as busy on that server, and a wait is not an outage.
        server.in_flight += 1
        try:
            while (wait := server.pacer.delay(tokens)) > 0:
                server.pacer.waited += wait
                await asyncio.sleep(wait)
                if self._last_ok is not None:
                    self._last_ok = max(self._last_ok, time.monotonic())
        finally:
            server.in_flight -= 1
        server.pacer.spend(tokens)
        self._stats.requests += 1
        sent = time.monotonic()
        server.in_flight += 1
        try:
            completion = await self._request(server, prompt, params)
        except HTTPStatusError as exc:
            server.pacer.learn(exc.headers, server.in_flight - 1)
            return await self._status_error(server, exc, sent)
        except TransportTimeout:
            self._stats.timeouts += 1
            self._failed(server, f"no answer within {self.options.timeout:g} s")
            await limit.congested(sent)
            return _Attempt()
        except TransportConnectionError as exc:
            self._failed(server, str(exc))
            self._probe_soon(server)  # refused or reset: is it still there?
            return _Attempt()
        except MalformedReply as exc:
            self._failed(server, f"malformed response ({exc})")
            return _Attempt(answered=True)
        finally:
            server.in_flight -= 1
        self._last_ok = time.monotonic()
        server.failures = 0
        if self._last_ok - sent > self.options.timeout / 2:
            await limit.congested(sent)  # answered, but after a long queue
        else:
            await limit.succeeded()
        return _Attempt(completion=completion)

    async def _status_error(self, server: _Server, exc: HTTPStatusError, sent: float) -> _Attempt:
        """An HTTP error: fatal (stops the run), final (this request fails), or retried."""
        assert self._limit is not None
        status = exc.status_code
        if status in FATAL:
            fatal = FATAL[status].replace("${env}", self.options.api_key_env)
            raise BackendError(f"{fatal} [{server.url}]") from None
        refused = _refused_parameter(exc)
        if refused is not None:
            raise BackendError(self._refusal(server, refused, exc)) from None
        if status in FINAL:
            self._stats.failed += 1
            error = self._redact(f"HTTP {status}: {_error_text(exc)[:200]}")
            return _Attempt(completion=Completion(text="", finish_reason="error", error=error))
        error = f"HTTP {status}: {_error_text(exc)[:300]}"
        answered = False
        wait = _retry_after(exc.headers)
        if wait and status in (429, 503):
            # The server said so: nothing goes to it until then. The request itself need not
            # wait: asked again, it goes to another server if one is free, else waits there.
            server.pacer.block(wait)
            wait = 0.0
        if status in CONGESTED:
            self._last_error = self._redact(f"HTTP {status} from {server.url}")
            server.failed_at = time.monotonic()
            self._stats.rate_limited += status == 429
            await self._limit.congested(sent)
        else:
            answered = True
            server.server_error = self._redact(error)
            self._failed(server, error)
        return _Attempt(wait=wait, answered=answered)

    def _check_outage(self) -> None:
        now = time.monotonic()
        if self._last_ok is None and now - self._started > self.connect_grace:
            if any(s.server_error for s in self._servers):
                raise BackendError(
                    f"the server failed: {self._servers_said()}; see the server's own log for "
                    "the cause"
                )
            raise BackendError(
                f"cannot reach the server: {self._servers_said()}; check --base-url "
                "and that the server is running"
            )
        if self._last_ok is not None and now - self._last_ok > self.options.outage_wait:
            # Every server must have failed since the last success before all are called down:
            # on a loaded machine the wait can pass before a live server was even asked.
            last_ok = self._last_ok
            if any(s.down_since is None and s.failed_at <= last_ok for s in self._servers):
                return
            since = time.strftime("%H:%M:%S", time.localtime(time.time() - (now - self._last_ok)))
            raise BackendError(
                f"the server has not answered since {since} ({self._servers_said()}); waited "
                f"{self.options.outage_wait:g} s. Everything answered so far is saved: run the "
                "same command again to resume"
            )

    def _servers_said(self) -> str:
        """What went wrong, server by server (those with nothing to report left out)."""
        said = [s.describe() for s in self._servers if s.last_error]
        return "; ".join(said) or self._last_error

    def _refusal(self, server: _Server, param: str, exc: HTTPStatusError) -> str:
        text = self._redact(_error_text(exc)[:300])
        fix = (
            f"run the same command again with --omit-param {param}"
            if param in OMITTABLE
            else "this model cannot be driven with the settings selfinstruct sends"
        )
        return f"{server.url} refuses the request parameter {param!r} ({text}); {fix}"

    async def _request(self, server: _Server, prompt: Prompt, params: SamplingParams) -> Completion:
        body = request_body(self.model, self.chat, prompt, params, server.omit or ())
        path = "chat/completions" if self.chat else "completions"
        response, headers = await server.client.post(path, body)
        # The headers carry the provider's rate limit.
        server.pacer.learn(headers, others_in_flight=server.in_flight - 1)
        return completion_of(response, self.chat)

    def _redact(self, text: str) -> str:
        # Servers and proxies sometimes echo request headers in error bodies.
        return text.replace(self._key, "***") if self._key and self._key != "not-needed" else text

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return

        async def shutdown() -> None:
            for task in list(self._tasks):
                task.cancel()
            for server in self._servers:
                if server.probe_task is not None:
                    server.probe_task.cancel()
                await server.client.close()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@dataclass
class _Attempt:
    completion: Completion | None = None  # None: ask again
    wait: float = 0.0  # at least this long first (the server's Retry-After)
    answered: bool = False  # the server replied, so it is up even though the request failed


def _tokens_counted(prompt: Prompt, params: SamplingParams) -> int:
    """What a request counts against a tokens-per-minute limit before it is answered: its
    prompt (about 4 characters a token) and all the tokens it may write, as OpenAI counts."""
    text = prompt if isinstance(prompt, str) else "".join(m["content"] for m in prompt)
    return len(text) // 4 + 1 + params.max_tokens


def completion_of(response: Any, chat: bool) -> Completion:
    """The completion in a decoded reply, or MalformedReply saying what is missing."""
    choices = response.get("choices") if isinstance(response, dict) else None
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise MalformedReply("no choices")
    choice = choices[0]
    holder = choice.get("message") if chat else choice
    text = holder.get("content" if chat else "text") if isinstance(holder, dict) else None
    if not isinstance(holder, dict) or not isinstance(text, (str, type(None))):
        raise MalformedReply("no text in the first choice")
    usage = Usage()
    counted = response.get("usage")
    if isinstance(counted, dict):
        usage = Usage(
            prompt_tokens=_count(counted.get("prompt_tokens")),
            completion_tokens=_count(counted.get("completion_tokens")),
        )
    finish = "length" if choice.get("finish_reason") == "length" else "stop"
    return Completion(text=text or "", finish_reason=finish, usage=usage)


def _count(value: Any) -> int:
    """A token count as servers write it (an int, sometimes null or absent)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _settle(future: Future[Completion], task: asyncio.Task[Completion]) -> None:
    """Hand a finished request's outcome to the caller's future (any thread may wait on it)."""
    if future.cancelled():
        return
    if task.cancelled():
        future.cancel()
    elif task.exception() is not None:
        future.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        future.set_result(task.result())


def _retry_after(headers: typing.Mapping[str, str] | None) -> float:
    value = headers.get("retry-after") if headers is not None else None
    try:
        return min(120.0, max(0.0, float(value))) if value is not None else 0.0
    except ValueError:
        return 0.0


def _error_text(exc: HTTPStatusError) -> str:
    """The message of an error answer, without the client's "Error code: N - {...}" wrapping."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else None
        if isinstance(message, str) and message:
            return message
    return str(getattr(exc, "message", exc))


_UNSUPPORTED = re.compile(
    r"unsupported parameter:?\s*'?(\w+)'?|'?(\w+)'? (?:is|are) not supported", re.IGNORECASE
)


def _refused_parameter(exc: HTTPStatusError) -> str | None:
    """The request parameter a 400 says the server or model does not take, if it says one.
    Such an answer comes back for every request alike, so it is a setting to change, not a
    request to drop."""
    if exc.status_code != 400:
        return None
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body) if isinstance(body.get("error", body), dict) else body
    code, param = inner.get("code"), inner.get("param")
    if code in {"unsupported_parameter", "unsupported_value"} and isinstance(param, str):
        return param
    match = _UNSUPPORTED.search(_error_text(exc))
    if match is None:
        return None
    name = match.group(1) or match.group(2)
    return name if name in OMITTABLE or name in {"max_tokens", "n"} else None


def open_openai(
    model: str | None, options: OpenAIOptions, chat: bool | None, run_dir: Path | None
) -> OpenAIBackend:
    assert model is not None  # the registry asks for it first
    return OpenAIBackend(model, options, chat=chat is not False)
