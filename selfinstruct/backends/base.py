"""The interface every backend implements, and the records that cross it.

A prompt is either a string (completion endpoints, base models) or a list of chat messages
(`[{"role": "user", "content": ...}]`, chat models). `finish_reason == "length"` tells a parser
that the text was cut off, so it can drop the last, truncated item.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from selfinstruct.errors import SelfInstructError

ChatMessage = dict[str, str]
Prompt = str | list[ChatMessage]


class SamplingParams(BaseModel):
    """Decoding settings; backends map them to their own names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.5, gt=0.0, le=1.0)
    max_tokens: int = Field(512, ge=1)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    stop: tuple[str, ...] = ()
    n: int = Field(1, ge=1)
    seed: int | None = None
    # Keep going past the end-of-sequence token until a stop string or max_tokens (local and
    # vLLM; OpenAI-compatible servers have no such option). Small models otherwise end a list
    # after its first item.
    ignore_eos: bool = False


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


class BackendError(SelfInstructError):
    """The backend cannot serve requests at all (bad key, unknown model, missing package)."""

    exit_code = 3
