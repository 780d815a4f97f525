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


class ServerOptions(Options):
    """How an OpenAI-compatible server is asked: key, load, patience, what not to send."""

    heading: ClassVar[str] = "Backend: openai"

    api_key_env: str = option(
        "OPENAI_API_KEY",
        "environment variable holding the key; the key is never written",
        may_change=True,
    )
    concurrency: int = option(16, "openai: requests in flight at most", ge=1, may_change=True)
    timeout: float = option(120.0, "openai: seconds per request", gt=0, may_change=True)
    max_retries: int = option(
        6,
        "openai: retries of one request while others succeed (then it is dropped)",
        ge=0,
        may_change=True,
    )
    omit_params: list[OmitParam] | None = option(
        None,
        "openai: sampling parameters never sent, for servers that refuse or mishandle them "
        "(default: seed to vLLM servers, whose CPU engine crashes on seeded requests under "
        "load; nothing to others)",
        flag="--omit-param",
        clearable=True,
        may_change=True,
    )
    outage_wait: float = option(
        300.0,
        "openai: seconds to keep retrying when the server stops answering before stopping "
        "with exit 3 (the same command resumes)",
        gt=0,
        may_change=True,
    )


class OpenAIOptions(ServerOptions):
    """The openai backend's options: which servers, and how they are asked."""

    base_url: list[str] = option(
        default_factory=list,
        help="OpenAI-compatible servers, requests spread over them (default: $OPENAI_BASE_URL)",
        may_change=True,
    )


class BatchAPIOptions(Options):
    heading: ClassVar[str] = "Backend: openai-batch"

    batch_poll: float = option(
        30.0, "openai-batch: seconds between checks on a running batch", gt=0, may_change=True
    )
    batch_flush: float = option(
        2.0,
        "openai-batch: seconds without a new request before the waiting ones go out as a batch",
        gt=0,
        may_change=True,
    )


class EngineOptions(Options):
    """What both in-process engines (transformers, vLLM) take."""

    heading: ClassVar[str] = "Backend: local and vllm"

    dtype: Literal["auto", "float32", "bfloat16"] = option(
        "auto",
        "local and vllm: weights and math (default: bf16 on a GPU and on CPUs with native "
        "bf16; fp32 elsewhere)",
        may_change=True,
    )


class LocalOptions(EngineOptions):
    heading: ClassVar[str] = "Backend: local"

    local_engine: Literal["auto", "transformers", "vllm"] = option(
        "auto",
        "local: what runs the model; auto = vLLM where it is installed (1.6-2.2x faster than "
        "transformers on this 2-core CPU, bench/vllm_bench.py), transformers elsewhere",
        may_change=True,
    )
    device: str | None = option(
        None, "local: cpu, cuda, ... (default: the best there is)", may_change=True
    )
    local_batch: int = option(
        32,
        "local: sequences generated together at most (every waiting request is taken)",
        ge=1,
        may_change=True,
    )


class VLLMOptions(EngineOptions):
    heading: ClassVar[str] = "Backend: vllm"

    vllm_memory: float | None = option(
        None,
        "vllm: share of GPU memory for weights and KV cache, vLLM's gpu_memory_utilization "
        "(on a CPU, the share of RAM) (default: vLLM's 0.92 on a GPU; on a CPU a KV cache of "
        "a fifth of the free RAM, 1-8 GiB)",
        gt=0.0,
        le=1.0,
        may_change=True,
    )
    tensor_parallel_size: int = option(1, "vllm: GPUs per model replica", ge=1, may_change=True)
    data_parallel_size: int = option(1, "vllm: model replicas", ge=1, may_change=True)


class OpenAIBatchOptions(OpenAIOptions, BatchAPIOptions):
    """The openai-batch backend's options: the server's, and the batching."""


class BackendOptions(OpenAIBatchOptions, LocalOptions, VLLMOptions):
    """Every backend's options, for the commands that may use any backend."""


class PricesOption(Options):
    heading: ClassVar[str] = "Budgets"

    prices: dict[str, tuple[float, float]] = option(
        default_factory=dict,
        help="model -> (USD per 1M prompt tokens, per 1M completion tokens) for the cost estimate",
        cli=False,
        may_change=True,
    )
