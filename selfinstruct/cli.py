"""The `selfinstruct` command line: each command maps options to a config and makes one call.

Heavy libraries (torch, transformers, vllm) are imported inside the commands that need them, so
`selfinstruct --help` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from selfinstruct import __version__
from selfinstruct.errors import SelfInstructError

app = typer.Typer(
    name="selfinstruct",
    help="Turn a few hand-written tasks into filtered instruction-tuning data (Self-Instruct), "
    "then LoRA-fine-tune a model on it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)

# Options every command has.
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML/TOML file with these options; flags override it"),
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors")]
out = Console()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"selfinstruct {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Self-Instruct, done properly: fast, resumable, honest about what it drops."""


def _fail(exc: SelfInstructError) -> typer.Exit:
    err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


# Exit codes (README): 0 done, 2 bad input or config, 3 backend unusable, 4 run locked,
# 5 stopped at a budget, 6 no progress, 130 interrupted.
STATUS_EXIT = {"done": 0, "budget": 5, "stalled": 6}


@app.command()
def generate(
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            "-o",
            help="Run directory; run the same command again to resume (default: outputs/run)",
        ),
    ] = None,
    seed_tasks: Annotated[
        Path | None, typer.Option(help="Seed task file (default: seed_tasks/seed_tasks.jsonl)")
    ] = None,
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            "-b",
            help="local, openai, vllm or scripted (default: local, the bundled SmolLM2-135M)",
        ),
    ] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model id or path")] = None,
    base_url: Annotated[
        list[str] | None,
        typer.Option(
            "--base-url",
            help="OpenAI-compatible server (repeatable; requests are spread over them)",
        ),
    ] = None,
    chat: Annotated[
        bool | None, typer.Option("--chat/--completions", help="Chat or completion prompts")
    ] = None,
    target: Annotated[
        int | None, typer.Option("--target", "-n", help="Tasks to accept (default: 100)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default: 0)")] = None,
    prompts_per_round: Annotated[
        int | None, typer.Option(help="Instruction prompts per round (default: 8)")
    ] = None,
    max_requests: Annotated[int | None, typer.Option(help="Budget: requests")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Budget: tokens")] = None,
    max_cost: Annotated[
        float | None, typer.Option(help="Budget: USD (needs prices in the config file)")
    ] = None,
    concurrency: Annotated[int | None, typer.Option(help="openai: requests in flight")] = None,
    device: Annotated[str | None, typer.Option(help="local: cpu, cuda, ...")] = None,
    instruction_max_tokens: Annotated[
        int | None, typer.Option(help="Tokens per instruction list (default: 1024)")
    ] = None,
    instance_max_tokens: Annotated[
        int | None, typer.Option(help="Tokens per instance completion (default: 350)")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Use the scripted backend: no model, canned replies")
    ] = False,
    config: ConfigOption = None,
    quiet: QuietOption = False,
) -> None:
    """Bootstrap new tasks from seed tasks with a model (the Self-Instruct loop)."""
    from selfinstruct.config import GenerateConfig, build_config
    from selfinstruct.generate import run_generate

    flags: dict[str, Any] = {
        "run_dir": run_dir,
        "seed_tasks": seed_tasks,
        "backend": "scripted" if dry_run else backend,
        "model": model,
        "base_url": base_url,
        "chat": chat,
        "target_tasks": target,
        "seed": seed,
        "prompts_per_round": prompts_per_round,
        "max_requests": max_requests,
        "max_tokens_total": max_tokens,
        "max_cost": max_cost,
        "concurrency": concurrency,
        "device": device,
        "instruction_sampling": _only_given(max_tokens=instruction_max_tokens),
        "instance_sampling": _only_given(max_tokens=instance_max_tokens),
    }
    try:
        cfg = build_config(GenerateConfig, config, flags)
        summary = _run_with_display(run_generate, cfg, quiet)
    except SelfInstructError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        err.print("interrupted; run the same command again to resume")
        raise typer.Exit(130) from None
    if not quiet:
        _print_generate_summary(summary)
    raise typer.Exit(STATUS_EXIT.get(summary.status, 0))


def _only_given(**values: Any) -> dict[str, Any] | None:
    given = {k: v for k, v in values.items() if v is not None}
    return given or None


def _run_with_display(fn: Any, cfg: Any, quiet: bool) -> Any:
    import time

    if quiet:
        return fn(cfg)
    if not sys.stderr.isatty():

        def log_line(p: Any) -> None:
            top = ", ".join(f"{k} {v}" for k, v in p.rejected.most_common(3))
            err.print(
                f"round {p.round}: accepted {p.accepted}/{p.target}, requests "
                f"{p.requests}, tokens {p.tokens:,}, rejected: {top or '-'}",
                highlight=False,
                soft_wrap=True,
            )

        return fn(cfg, on_progress=log_line)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn("accepted"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=err, transient=False) as progress:
        task = progress.add_task("starting", total=cfg.target_tasks)

        def update(p: Any) -> None:
            rate = p.requests / max(1e-9, time.perf_counter() - p.started)
            top = ", ".join(f"{k} {v}" for k, v in p.rejected.most_common(2))
            progress.update(
                task,
                completed=min(p.accepted, p.target),
                description=(
                    f"round {p.round} · {p.tokens:,} tokens · {rate:.1f} req/s · rejected: "
                    f"{top or '-'}"
                ),
            )

        return fn(cfg, on_progress=update)


def _print_generate_summary(summary: Any) -> None:
    table = Table(show_header=True, header_style="bold")
    table.add_column(f"generate -> {summary.run_dir}")
    table.add_column("", justify="right")
    table.add_row("[green]accepted tasks[/]", f"{summary.accepted:,} / {summary.target:,}")
    table.add_row("rounds", f"{summary.rounds:,}")
    table.add_row("requests", f"{summary.requests:,}")
    table.add_row(
        "tokens (prompt + completion)", f"{summary.prompt_tokens:,} + {summary.completion_tokens:,}"
    )
    if summary.cost_usd is not None:
        table.add_row("estimated cost", f"${summary.cost_usd:.4f}")
    for reason, count in sorted(summary.rejected.items(), key=lambda kv: -kv[1]):
        table.add_row(f"rejected: {reason}", f"{count:,}")
    for reason, count in sorted(summary.instances_dropped.items(), key=lambda kv: -kv[1]):
        table.add_row(f"instances dropped: {reason}", f"{count:,}")
    out.print(table)
    out.print(_table1(summary.table1))
    out.print(f"{summary.status}: {summary.message} ({summary.seconds:.1f} s)", highlight=False)


def _table1(stats: Any) -> Table:
    from selfinstruct.stats import table1_rows

    table = Table(title="Table 1 (the paper's statistics)", header_style="bold")
    table.add_column("statistic")
    table.add_column("this run", justify="right")
    table.add_column("paper (GPT-3)", justify="right")
    for row in table1_rows(stats):
        table.add_row(*row)
    return table


@app.command(name="filter")
def filter_command(
    input_file: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="Instruction file: task/Alpaca/chat JSONL, Alpaca JSON, "
            "machine_generated_instructions; .gz ok",
        ),
    ],
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            help="Where kept.jsonl, "
            "rejected.jsonl and summary.json go (default: outputs/filter-NAME)",
        ),
    ] = None,
    reference: Annotated[
        list[Path] | None,
        typer.Option(
            "--reference",
            "-r",
            help="Also compare with this pool, e.g. the seed tasks (repeatable)",
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Drop a row whose ROUGE-L with an earlier one is greater than this (default: 0.7)"
        ),
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="rouge (rouge_score's, English only) or unicode (every script) (default: rouge)"
        ),
    ] = None,
    no_novelty: Annotated[
        bool, typer.Option("--no-novelty", help="Skip the ROUGE-L stage")
    ] = False,
    min_words: Annotated[
        int | None, typer.Option(help="Drop fewer words; 0 turns it off (default: 4)")
    ] = None,
    max_words: Annotated[
        int | None, typer.Option(help="Drop more words; 0 turns it off (default: 150)")
    ] = None,
    keyword: Annotated[
        list[str] | None,
        typer.Option("--keyword", help="Replace the keyword blacklist (repeatable)"),
    ] = None,
    no_keywords: Annotated[
        bool, typer.Option("--no-keywords", help="Switch the keyword rule off")
    ] = False,
    banned_prefix: Annotated[
        list[str] | None,
        typer.Option(
            "--banned-prefix",
            help="Replace the banned prefixes (default: 'Write a program') (repeatable)",
        ),
    ] = None,
    no_banned_prefixes: Annotated[bool, typer.Option("--no-banned-prefixes")] = False,
    allow_punctuation_start: Annotated[bool, typer.Option("--allow-punctuation-start")] = False,
    allow_non_ascii_start: Annotated[bool, typer.Option("--allow-non-ascii-start")] = False,
    skip_bad_rows: Annotated[
        bool,
        typer.Option(
            "--skip-bad-rows",
            help="Count unreadable rows (kept in rejected.jsonl) instead of stopping",
        ),
    ] = False,
    output_format: Annotated[
        str | None,
        typer.Option(help="tasks (Task schema) or original (rows as read) (default: tasks)"),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="Processes: 2 overlaps reading with the ROUGE-L stage (default: 2 on 2+ cores)"
        ),
    ] = None,
    config: ConfigOption = None,
    quiet: QuietOption = False,
) -> None:
    """Drop instructions that break the rules or are too similar (ROUGE-L) to earlier ones."""
    from selfinstruct.config import FilterConfig, build_config
    from selfinstruct.filtering import run_filter

    rules: dict[str, Any] = {
        "min_words": None if min_words == 0 else min_words,
        "max_words": None if max_words == 0 else max_words,
        "keywords": [] if no_keywords else keyword,
        "banned_prefixes": [] if no_banned_prefixes else banned_prefix,
        "drop_punctuation_start": False if allow_punctuation_start else None,
        "drop_non_ascii_start": False if allow_non_ascii_start else None,
    }
    # An explicit 0 must switch a bound off, so it is passed through as a real null.
    explicit_nulls = {k for k, v in (("min_words", min_words), ("max_words", max_words)) if v == 0}
    flags: dict[str, Any] = {
        "input": input_file,
        "output_dir": output_dir,
        "workers": workers,
        "reference": reference,
        "threshold": threshold,
        "tokenizer": tokenizer,
        "novelty": False if no_novelty else None,
        "skip_bad_rows": True if skip_bad_rows else None,
        "output_format": output_format,
        "rules": {k: v for k, v in rules.items() if v is not None},
    }
    try:
        cfg = build_config(FilterConfig, config, flags)
        for key in explicit_nulls:
            setattr(cfg.rules, key, None)
        summary = _with_progress(run_filter, cfg, quiet=quiet)
    except SelfInstructError as exc:
        raise _fail(exc) from None
    if not quiet:
        _print_filter_summary(summary)


def _with_progress(fn: Any, cfg: Any, quiet: bool) -> Any:
    if quiet or not sys.stderr.isatty():
        return fn(cfg)
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,} rows"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as progress:
        task = progress.add_task("filtering", total=None)
        return fn(cfg, lambda n: progress.advance(task, n))


def _print_filter_summary(summary: Any) -> None:
    table = Table(show_header=True, header_style="bold")
    table.add_column(f"filter {Path(summary.input).name}")
    table.add_column("rows", justify="right")
    table.add_row("read", f"{summary.rows_in:,}")
    table.add_row("[green]kept[/]", f"{summary.kept:,}")
    for reason, count in summary.dropped.items():
        table.add_row(f"dropped: {reason}", f"{count:,}")
    if summary.reference_rows:
        table.add_row("reference pool (compared, not written)", f"{summary.reference_rows:,}")
    out.print(table)
    out.print(
        f"{summary.seconds:.2f} s; kept -> {summary.kept_path}; "
        f"rejected (with reasons) -> {summary.rejected_path}",
        highlight=False,
    )
    for warning in summary.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)


@app.command()
def export(
    source: Annotated[Path, typer.Argument(help="A run directory or any instruction file")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File (or folder for hf)")],
    format: Annotated[
        str,
        typer.Option("--format", "-f", help="alpaca, messages, prompt-completion, sharegpt or hf"),
    ] = "messages",
    seed: Annotated[int, typer.Option(help="Chooses each example's prompt template")] = 0,
    system: Annotated[str | None, typer.Option(help="System message for chat formats")] = None,
    max_per_task: Annotated[
        int | None, typer.Option(help="Examples per task at most (default: 5, as the paper)")
    ] = None,
    include_seeds: Annotated[
        bool, typer.Option("--include-seeds", help="Also export the seed tasks")
    ] = False,
    seed_tasks: Annotated[
        Path | None, typer.Option(help="Seed file for --include-seeds (default: the run's)")
    ] = None,
) -> None:
    """Write tasks as training examples (one per instance) in a trainer's format."""
    from selfinstruct.config import build_config
    from selfinstruct.export import ExportConfig
    from selfinstruct.export import export as run_export

    flags = {
        "source": source,
        "output": output,
        "format": format,
        "seed": seed,
        "system": system,
        "max_per_task": max_per_task,
        "include_seeds": include_seeds or None,
        "seed_tasks": seed_tasks,
    }
    try:
        summary = run_export(build_config(ExportConfig, None, flags))
    except SelfInstructError as exc:
        raise _fail(exc) from None
    dropped = ", ".join(f"{k} {v}" for k, v in summary.dropped.items())
    out.print(
        f"{summary.examples:,} examples -> {output} ({format})"
        + (f"; left out: {dropped}" if dropped else ""),
        highlight=False,
    )


@app.command()
def finetune(
    data: Annotated[Path, typer.Argument(help="A run directory or any instruction file")],
    output_dir: Annotated[
        Path | None,
        typer.Option(
            "--output-dir",
            "-o",
            help="Checkpoints, adapter/, training_summary.json (default: outputs/finetune)",
        ),
    ] = None,
    base_model: Annotated[
        str | None,
        typer.Option(
            "--base-model", "-m", help="HF id or path (default: the bundled SmolLM2-135M)"
        ),
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="(default: 3)")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="(default: 2e-4)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="(default: 4)")] = None,
    lora_r: Annotated[int | None, typer.Option(help="(default: 16)")] = None,
    max_length: Annotated[int | None, typer.Option(help="(default: 1024)")] = None,
    merge: Annotated[bool, typer.Option("--merge", help="Also write the merged model")] = False,
    qlora: Annotated[bool, typer.Option("--qlora", help="4-bit base (GPU only)")] = False,
    device: Annotated[str | None, typer.Option(help="cpu or cuda")] = None,
    config: ConfigOption = None,
) -> None:
    """LoRA-fine-tune a model on generated tasks (TRL + PEFT); rerun to resume."""
    from selfinstruct.config import build_config
    from selfinstruct.finetune import FinetuneConfig, run_finetune

    flags = {
        "data": data,
        "output_dir": output_dir,
        "base_model": base_model,
        "epochs": epochs,
        "max_steps": max_steps,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "lora_r": lora_r,
        "max_length": max_length,
        "merge": merge or None,
        "qlora": qlora or None,
        "device": device,
    }
    try:
        summary = run_finetune(build_config(FinetuneConfig, config, flags))
    except SelfInstructError as exc:
        raise _fail(exc) from None
    table = Table(show_header=True, header_style="bold")
    table.add_column(f"finetune -> {summary.output_dir}")
    table.add_column("", justify="right")
    first, last = summary.train_loss[:1], summary.train_loss[-1:]
    table.add_row(
        "examples (train / validation)", f"{summary.train_examples} / {summary.validation_examples}"
    )
    table.add_row("steps", str(summary.steps))
    if first and last:
        table.add_row(
            "train loss (first -> last log)", f"{first[0]['loss']:.3f} -> {last[0]['loss']:.3f}"
        )
    if summary.validation_loss:
        table.add_row("validation loss (last)", f"{summary.validation_loss[-1]['loss']:.3f}")
    table.add_row("tokens/s", f"{summary.tokens_per_second:.0f}")
    table.add_row("peak memory", f"{summary.peak_memory_mb:.0f} MB ({summary.device})")
    table.add_row("wall", f"{summary.wall_seconds:.1f} s")
    out.print(table)


@app.command(name="eval")
def eval_command(
    adapter: Annotated[
        Path | None,
        typer.Option("--adapter", "-a", help="LoRA adapter folder to compare with the base model"),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            help="Held-out tasks (default: the paper's 252 user-oriented tasks in ../shared/data)"
        ),
    ] = None,
    base_model: Annotated[str | None, typer.Option("--base-model", "-m")] = None,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o")] = None,
    limit: Annotated[int | None, typer.Option(help="First N examples only")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="(default: 128)")] = None,
    judge_backend: Annotated[
        str | None, typer.Option(help="openai, local, vllm or scripted: rate responses A-D")
    ] = None,
    judge_model: Annotated[str | None, typer.Option()] = None,
    judge_base_url: Annotated[list[str] | None, typer.Option()] = None,
    config: ConfigOption = None,
) -> None:
    """Compare a base model with and without an adapter on held-out tasks."""
    from selfinstruct.config import build_config
    from selfinstruct.evaluation import EvalConfig, run_eval

    flags = {
        "adapter": adapter,
        "data": data,
        "base_model": base_model,
        "output_dir": output_dir,
        "limit": limit,
        "max_new_tokens": max_new_tokens,
        "judge_backend": judge_backend,
        "judge_model": judge_model,
        "judge_base_url": judge_base_url,
    }
    try:
        summary = run_eval(build_config(EvalConfig, config, flags))
    except SelfInstructError as exc:
        raise _fail(exc) from None
    table = Table(show_header=True, header_style="bold")
    table.add_column(f"eval ({summary.examples} examples)")
    for v in summary.variants:
        table.add_column(v.name, justify="right")
    table.add_row("response loss", *[f"{v.loss:.3f}" for v in summary.variants])
    table.add_row("perplexity", *[f"{v.perplexity:.2f}" for v in summary.variants])
    table.add_row("ROUGE-L vs reference", *[f"{v.rouge_l:.3f}" for v in summary.variants])
    if any(v.judge for v in summary.variants):
        for grade in ("A", "B", "C", "D", "unparsed"):
            table.add_row(
                f"judge: {grade}", *[str(v.judge.get(grade, 0)) for v in summary.variants]
            )
    out.print(table)
    out.print(f"responses and summary -> {summary.output_dir}", highlight=False)


@app.command(name="run")
def run_command(
    job_file: Annotated[Path, typer.Argument(metavar="JOB", help="Job file (YAML or TOML)")],
    force_new_run: Annotated[
        bool,
        typer.Option(
            "--force-new-run",
            help="Start over when the job file changed (the old run is kept beside)",
        ),
    ] = False,
    log_format: Annotated[str, typer.Option(help="text or json (one object per line)")] = "text",
    quiet: QuietOption = False,
) -> None:
    """Run a whole job file (generate -> filter -> export -> finetune -> eval); rerun resumes."""
    import logging
    import signal

    from selfinstruct.job import JobRunner, JsonFormatter

    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    elif log_format == "text":
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    else:
        raise _fail(SelfInstructError("--log-format must be text or json"))
    logger = logging.getLogger("selfinstruct")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False

    def on_sigterm(signum: int, frame: Any) -> None:
        # Unwinds like Ctrl-C: open files are closed (whole lines flushed) on the way out.
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        result = JobRunner(job_file, force_new_run=force_new_run).run()
    except SelfInstructError as exc:
        raise _fail(exc) from None
    if not quiet:
        out.print(f"{result.status}: {result.message}", highlight=False)
    raise typer.Exit(result.exit_code)


@app.command()
def report(
    run: Annotated[Path, typer.Argument(help="A generate run directory (or a job's)")],
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="(default: RUN/report)")
    ] = None,
    seeds: Annotated[Path | None, typer.Option(help="Seed tasks (default: the run's)")] = None,
) -> None:
    """Write an HTML report (images embedded) and its PNGs for a run."""
    from selfinstruct.report import build_report

    try:
        result = build_report(run, seeds, output_dir)
    except SelfInstructError as exc:
        raise _fail(exc) from None
    out.print(f"report -> {result.html_path} ({len(result.images)} figures)", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
