"""Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama, TGI) through the openai client.

Requests are spread round-robin over every base URL (one vLLM server per GPU node is how users
scale out). At most `concurrency` requests are in flight; after a 429 that limit is halved, and
it grows back by one after a run of successes. Each request is retried with exponential backoff
and jitter, waiting at least as long as the server's `Retry-After`. 401, 403 and 404 mean the run
cannot work at all and stop it at once. A request that still fails after its retries comes back
with `finish_reason="error"`, and the loop puts its item back in the queue for a later round.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence
from typing import Any

from selfinstruct.backends.base import BackendError, Completion, Prompt, SamplingParams, Usage

FATAL = {
    401: "the API key was refused (401); check ${env}",
    403: "the API key may not use this model or endpoint (403)",
    404: "the server has no such model or endpoint (404); check --model and --base-url",
}


class AdaptiveLimit:
    """A semaphore whose size shrinks on rate limits and grows back on success (AIMD)."""

    def __init__(self, limit: int) -> None:
        self.max = limit
        self.limit = limit
        self.in_flight = 0
        self._successes = 0
        self._cond = asyncio.Condition()

    async def __aenter__(self) -> None:
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1

    async def __aexit__(self, *exc: object) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify(1)  # one slot freed: wake one waiter, not every queued request

    async def rate_limited(self) -> None:
        async with self._cond:
            self.limit = max(1, self.limit // 2)
            self._successes = 0

    async def succeeded(self) -> None:
        async with self._cond:
            self._successes += 1
            if self.limit < self.max and self._successes >= self.limit:
                self.limit += 1
                self._successes = 0
                self._cond.notify(1)


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        base_urls: Sequence[str] = (),
        api_key_env: str = "OPENAI_API_KEY",
        chat: bool = True,
        concurrency: int = 16,
        timeout: float = 120.0,
        max_retries: int = 6,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        try:
            import openai
        except ImportError:  # pragma: no cover - a core dependency
            raise BackendError(
                "the openai backend needs the openai package: pip install openai"
            ) from None
        self._openai = openai
        urls = list(base_urls) or [os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")]
        # Local servers often need no key; the client insists on one, so pass a placeholder.
        key = os.environ.get(api_key_env) or "not-needed"
        self.api_key_env = api_key_env
        self.base_urls = urls
        self._key = key
        self._timeout = timeout
        self.model = model
        self.chat = chat
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.stats = {"requests": 0, "retries": 0, "rate_limited": 0, "failed": 0}
        self._next = 0

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]:
        return asyncio.run(self._generate_all(prompts, params))

    async def _generate_all(
        self, prompts: Sequence[Prompt], params: SamplingParams
    ) -> list[Completion]:
        # Clients belong to one event loop, and each call runs its own loop.
        clients = [
            self._openai.AsyncOpenAI(
                base_url=u, api_key=self._key, timeout=self._timeout, max_retries=0
            )
            for u in self.base_urls
        ]
        limit = AdaptiveLimit(self.concurrency)
        tasks = [asyncio.ensure_future(self._one(clients, p, params, limit)) for p in prompts]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            for client in clients:
                await client.close()

    async def _one(
        self, clients: list[Any], prompt: Prompt, params: SamplingParams, limit: AdaptiveLimit
    ) -> Completion:
        openai = self._openai
        last_error = ""
        for attempt in range(self.max_retries + 1):
            wait = 0.0
            async with limit:
                client = clients[self._next % len(clients)]
                self._next += 1
                self.stats["requests"] += 1
                try:
                    completion = await self._request(client, prompt, params)
                except openai.APIStatusError as exc:
                    status = exc.status_code
                    if status in FATAL:
                        raise BackendError(
                            FATAL[status].replace("${env}", self.api_key_env)
                            + f" [{client.base_url}]"
                        ) from None
                    if status in (400, 413, 422):
                        return Completion(
                            text="",
                            finish_reason="error",
                            error=self._redact(f"HTTP {status}: {_short(exc)}"),
                        )
                    last_error = f"HTTP {status}"
                    if status == 429:
                        self.stats["rate_limited"] += 1
                        await limit.rate_limited()
                    wait = _retry_after(exc.response)
                except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                    last_error = type(exc).__name__
                except (
                    openai.APIResponseValidationError,
                    ValueError,
                    KeyError,
                    IndexError,
                    TypeError,
                ) as exc:
                    last_error = f"malformed response ({type(exc).__name__})"
                else:
                    await limit.succeeded()
                    return completion
            if attempt < self.max_retries:
                self.stats["retries"] += 1
                backoff = min(self.backoff_cap, self.backoff_base * 2**attempt)
                await asyncio.sleep(max(wait, backoff * (0.5 + random.random() / 2)))
        self.stats["failed"] += 1
        return Completion(text="", finish_reason="error", error=last_error)

    async def _request(self, client: Any, prompt: Prompt, params: SamplingParams) -> Completion:
        common: dict[str, Any] = {
            "model": self.model,
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty,
        }
        if params.stop:
            common["stop"] = list(params.stop)[:4]  # the API accepts at most four
        if params.seed is not None:
            common["seed"] = params.seed
        if self.chat:
            messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            response = await client.chat.completions.create(messages=messages, **common)
            choice = response.choices[0]
            text = choice.message.content or ""
        else:
            text_prompt = (
                prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
            )
            response = await client.completions.create(prompt=text_prompt, **common)
            choice = response.choices[0]
            text = choice.text or ""
        usage = Usage()
        if response.usage is not None:
            usage = Usage(
                prompt_tokens=response.usage.prompt_tokens or 0,
                completion_tokens=response.usage.completion_tokens or 0,
            )
        finish = "length" if choice.finish_reason == "length" else "stop"
        return Completion(text=text, finish_reason=finish, usage=usage)

    def _redact(self, text: str) -> str:
        # Servers and proxies sometimes echo request headers in error bodies.
        return text.replace(self._key, "***") if self._key and self._key != "not-needed" else text

    def close(self) -> None:
        pass


def _retry_after(response: Any) -> float:
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return min(120.0, max(0.0, float(value))) if value is not None else 0.0
    except ValueError:
        return 0.0


def _short(exc: Exception) -> str:
    return str(exc)[:200]
