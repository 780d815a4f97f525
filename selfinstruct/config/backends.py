"""The backends' options, one model per backend; each backend receives its own model whole.

`GenerateConfig` inherits all of them, so a config file, a job file and the command line name
them flat (`concurrency: 32`, `--concurrency 32`), while each backend's constructor takes the
one model it needs, and its defaults live here and nowhere else. They may all change when a run
is resumed: they say where and how the model runs, not what the run decides.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from selfinstruct.config.base import option

OmitParam = Literal["seed", "presence_penalty", "frequency_penalty", "top_p", "temperature", "stop"]


class Options(BaseModel):
    """A group of options; `heading` titles them in `--help`."""

    model_config = ConfigDict(extra="forbid")
    heading: ClassVar[str] = "Options"


class KeyOption(Options):
    heading: ClassVar[str] = "Backend: openai, openai-batch"

    api_key_env: str = option(
        "OPENAI_API_KEY",
        "environment variable holding the key; the key is never written",
        may_change=True,
    )


class RetryOption(Options):
    heading: ClassVar[str] = "Backend: openai, openai-batch"

    max_retries: int = option(
        6,
        "openai: retries of one request while others succeed (then it is dropped); "
        "openai-batch: retries of each Batch API call",
        ge=0,
        may_change=True,
    )


class AddressOption(Options):
    heading: ClassVar[str] = "Backend: openai, openai-batch"

    base_url: list[str] = option(
        default_factory=list,
        help="OpenAI-compatible servers, requests spread over them (openai-batch: the first); "
        "default: $OPENAI_BASE_URL",
        may_change=True,
    )


class ServerOptions(KeyOption, RetryOption):
    """How an OpenAI-compatible server is asked: key, load, patience, what not to send."""

    heading: ClassVar[str] = "Backend: openai"

    concurrency: int = option(16, "requests in flight at most", ge=1, may_change=True)
    timeout: float = option(120.0, "seconds per request", gt=0, may_change=True)
    omit_params: list[OmitParam] | None = option(
        None,
        "sampling parameters never sent, for servers that refuse or mishandle them "
        "(default: seed to vLLM servers, whose CPU engine crashes on seeded requests under "
        "load; nothing to others)",
        flag="--omit-param",
        clearable=True,
        may_change=True,
    )
    outage_wait: float = option(
        300.0,
        "seconds to keep retrying when the server stops answering before stopping with exit 3 "
        "(the same command resumes)",
        gt=0,
        may_change=True,
    )


class OpenAIOptions(ServerOptions, AddressOption):
    """The openai backend's options: which servers, and how they are asked."""


class BatchAPIOptions(Options):
    heading: ClassVar[str] = "Backend: openai-batch"

    batch_poll: float = option(
        30.0, "seconds between checks on a running batch", gt=0, may_change=True
    )
    batch_flush: float = option(
        2.0,
        "seconds without a new request before the waiting ones go out as a batch",
        gt=0,
        may_change=True,
    )


class OpenAIBatchOptions(KeyOption, RetryOption, AddressOption, BatchAPIOptions):
    """The openai-batch backend's options: the server's address and key, and the batching."""


class EngineOptions(Options):
    """What both in-process engines (transformers, vLLM) take."""

    heading: ClassVar[str] = "Backend: local, vllm"

    dtype: Literal["auto", "float32", "bfloat16"] = option(
        "auto",
        "weights and math (default: bf16 on a GPU and on CPUs with native bf16; fp32 elsewhere)",
        may_change=True,
    )


class VLLMOptions(EngineOptions):
    heading: ClassVar[str] = "Backend: vllm, and local on vLLM"

    vllm_memory: float | None = option(
        None,
        "share of GPU memory for weights and KV cache, vLLM's gpu_memory_utilization (on a "
        "CPU, the share of RAM) (default: vLLM's 0.92 on a GPU; on a CPU a KV cache of a fifth "
        "of the free RAM, 1-8 GiB)",
        gt=0.0,
        le=1.0,
        may_change=True,
    )
    tensor_parallel_size: int = option(1, "GPUs per model replica", ge=1, may_change=True)
    data_parallel_size: int = option(1, "model replicas", ge=1, may_change=True)


class LocalOptions(VLLMOptions):
    """The local backend's options: the transformers engine's, and vLLM's where it runs it."""

    heading: ClassVar[str] = "Backend: local"

    local_engine: Literal["auto", "transformers", "vllm"] = option(
        "auto",
        "what runs the model; auto = vLLM where it is installed (1.6-2.2x faster than "
        "transformers on this 2-core CPU, bench/vllm_bench.py), transformers elsewhere",
        may_change=True,
    )
    device: str | None = option(
        None, "transformers: cpu, cuda, ... (default: the best there is)", may_change=True
    )
    local_batch: int = option(
        32,
        "transformers: sequences generated together at most (every waiting request is taken)",
        ge=1,
        may_change=True,
    )


class BackendOptions(OpenAIOptions, OpenAIBatchOptions, LocalOptions):
    """Every built-in backend's options, for the commands that may use any backend; each
    backend receives only its own (`backends/registry.py`)."""


class PricesOption(Options):
    heading: ClassVar[str] = "Budgets"

    prices: dict[str, tuple[float, float]] = option(
        default_factory=dict,
        help="model -> (USD per 1M prompt tokens, per 1M completion tokens) for the cost estimate",
        cli=False,
        may_change=True,
    )
