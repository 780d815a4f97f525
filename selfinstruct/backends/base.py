"""The interface every backend implements, and the records that cross it.

A prompt is either a string (completion endpoints, base models) or a list of chat messages
(`[{"role": "user", "content": ...}]`, chat models). `finish_reason == "length"` tells a parser
that the text was cut off, so it can drop the last, truncated item.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from selfinstruct.config import SamplingParams
from selfinstruct.errors import BackendError

ChatMessage = dict[str, str]
Prompt = str | list[ChatMessage]


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Completion(BaseModel):
    text: str
    finish_reason: Literal["stop", "length", "error"] = "stop"
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None  # why a request failed after its retries (finish_reason "error")


class Backend(Protocol):
    """Generate one completion per prompt, in order."""

    name: str
    model: str
    chat: bool  # True when prompts should be lists of messages

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[Completion]: ...

    def close(self) -> None: ...


__all__ = [
    "Backend",
    "BackendError",
    "ChatMessage",
    "Completion",
    "Prompt",
    "SamplingParams",
    "Usage",
]
