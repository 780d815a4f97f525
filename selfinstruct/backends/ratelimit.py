"""A provider's rate limit, as it states it: pace requests before the limit is hit.

Hosted APIs say where a client stands in every response's headers (OpenAI, Azure, Groq,
Together, vLLM behind some gateways): `x-ratelimit-remaining-requests` and
`x-ratelimit-remaining-tokens`, with `x-ratelimit-reset-requests` / `-tokens` saying when each
refills ("1s", "6m0s", "20ms"). A `RatePacer` per server keeps that, counts down as requests go
out (a request spends one request and its prompt plus `max_tokens` tokens, as OpenAI counts it),
and makes a request wait until the reset when it would go over. A 429 or 503 with `Retry-After`
pauses the whole server for that long, not just the request that got it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# Longest wait a header can impose, as for Retry-After: past it the server is asked again and
# says where things stand (a value meant as a timestamp must not stop a run for ever).
LONGEST = 120.0


def duration(text: str | None) -> float | None:
    """Seconds in a reset header ("1s", "6m0s", "20ms", "0.5", "1m30.5s"), at most LONGEST;
    None when it is not a duration."""
    if not text:
        return None
    text = text.strip()
    try:
        return min(LONGEST, max(0.0, float(text)))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        return None
    return min(LONGEST, sum(float(n) * _UNIT[u] for n, u in parts))


def _count(text: str | None) -> int | None:
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


class RatePacer:
    def __init__(self, clock: object = time.monotonic) -> None:
        self._clock = clock
        self.requests_left: int | None = None
        self.tokens_left: int | None = None
        self.requests_reset_at = 0.0
        self.tokens_reset_at = 0.0
        self.blocked_until = 0.0
        self.limit_requests: int | None = None
        self.limit_tokens: int | None = None
        self.waited = 0.0  # seconds requests spent waiting for the limit
        self._tokens_each = 0  # the largest request's tokens, for what is in flight
        self._window = 0.0  # the longest reset time stated: about the window's length

    def now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def learn(self, headers: Mapping[str, str] | None, others_in_flight: int = 0) -> None:
        """Take what a response's headers say of the limit (absent headers change nothing).
        `others_in_flight`: requests sent and not answered yet; the server may not have counted
        them when it wrote the headers, so they are taken off what it says is left."""
        if not headers:
            return
        now = self.now()
        get = headers.get
        for kind in ("requests", "tokens"):
            left = _count(get(f"x-ratelimit-remaining-{kind}"))
            if left is None:
                continue
            left -= others_in_flight * (1 if kind == "requests" else self._tokens_each)
            wait = duration(get(f"x-ratelimit-reset-{kind}"))
            wait = wait if wait is not None else 60.0
            self._window = max(self._window, wait)  # a refilled budget lasts about this long
            reset_at = now + wait
            known: int | None = getattr(self, f"{kind}_left")
            current: float = getattr(self, f"{kind}_reset_at")
            # Answers come back out of order: an older one of the same window says more is
            # left than has been spent since. Only a later window raises the count.
            later_window = reset_at > current + max(0.05, 0.2 * (reset_at - now))
            if known is not None and not later_window:
                left = min(left, known)
                reset_at = max(reset_at, current)
            setattr(self, f"{kind}_left", left)
            setattr(self, f"{kind}_reset_at", reset_at)
        self.limit_requests = _count(get("x-ratelimit-limit-requests")) or self.limit_requests
        self.limit_tokens = _count(get("x-ratelimit-limit-tokens")) or self.limit_tokens

    def block(self, seconds: float) -> None:
        """The server said to wait (Retry-After): nothing goes to it until then."""
        self.blocked_until = max(self.blocked_until, self.now() + min(seconds, LONGEST))

    def delay(self, tokens: int) -> float:
        """How long a request of `tokens` must wait before it may go (0: now)."""
        now = self.now()
        # At the reset the budget is whole again: the limit when the server stated it, else
        # unknown until the next answer says.
        for kind in ("requests", "tokens"):
            if (
                now >= getattr(self, f"{kind}_reset_at")
                and getattr(self, f"{kind}_left") is not None
            ):
                setattr(self, f"{kind}_left", getattr(self, f"limit_{kind}"))
                setattr(self, f"{kind}_reset_at", now + self._window)
        waits = [self.blocked_until - now]
        if self.requests_left is not None and self.requests_left <= 0:
            waits.append(self.requests_reset_at - now)
        if self.tokens_left is not None and self.tokens_left < tokens:
            # A request bigger than a whole window's budget would wait for ever: it goes at the
            # reset, and the server decides.
            waits.append(self.tokens_reset_at - now)
        return max(0.0, *waits)

    def spend(self, tokens: int) -> None:
        self._tokens_each = max(self._tokens_each, tokens)
        if self.requests_left is not None:
            self.requests_left -= 1
        if self.tokens_left is not None:
            self.tokens_left -= tokens

    def describe(self) -> str | None:
        """The pace for a progress line, when the server states a limit."""
        if self.requests_left is None and self.tokens_left is None and not self.waited:
            return None
        parts = []
        if self.requests_left is not None:
            parts.append(f"{self.requests_left} requests")
        if self.tokens_left is not None:
            parts.append(f"{self.tokens_left:,} tokens")
        left = f"{' / '.join(parts)} left" if parts else "limit"
        return f"{left}, waited {self.waited:.0f} s"
