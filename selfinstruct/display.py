"""What the commands print: live progress, summary tables, the paper's Table 1.

Everything goes through rich: tables and the result line to stdout, progress and warnings to
stderr, so `command > file` keeps the results and the terminal keeps the progress.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console()
err = Console(stderr=True)


def backend_line(stats: Any, live: bool = True) -> str:
    """In flight / limit / retries / 429s / timeouts, as far as the backend has them; `live`
    adds what the running batch has read and written (not for a summary)."""
    parts = [f"in flight {stats.in_flight}" + (f"/{stats.limit}" if stats.limit else "")]
    for name, value in (
        ("retries", stats.retries),
        ("429s", stats.rate_limited),
        ("timeouts", stats.timeouts),
        ("failed", stats.failed),
    ):
        if value:
            parts.append(f"{name} {value}")
    if stats.down:
        parts.append(f"down: {' '.join(stats.down)}")
    if stats.pace:
        parts.append(f"rate limit: {stats.pace}")
    if live and stats.live_tokens:
        parts.append(f"writing: {stats.live_tokens:,} tokens so far")
    elif live and stats.live_prompt:
        parts.append(f"reading prompts: {stats.live_read:,} of {stats.live_prompt:,} tokens")
    if stats.batches:
        parts.append(f"batches {stats.batches} (largest {stats.largest_batch})")
    return ", ".join(parts)


# A plain log (not a terminal) gets a line at most this often.
LOG_EVERY = 5.0


def progress_line(p: Any) -> str:
    """The loop's progress in one line, for a log."""
    top = ", ".join(f"{k} {v}" for k, v in p.rejected.most_common(3))
    return (
        f"accepted {p.accepted}/{p.target}, prompts {p.prompts}, requests {p.requests}, "
        f"tokens {p.tokens:,}, {backend_line(p.backend)}; rejected: {top or '-'}"
    )


def throttled(report: Callable[[Any], None], every: float = LOG_EVERY) -> Callable[[Any], None]:
    """`report` at most every `every` seconds, and always once the target is reached."""
    last = [-every]

    def progress(p: Any) -> None:
        now = time.perf_counter()
        if now - last[0] < every and p.accepted < p.target:
            return
        last[0] = now
        report(p)

    return progress


def run_with_display(fn: Callable[..., Any], cfg: Any, quiet: bool) -> Any:
    """Run the generate loop with a live bar on a terminal, a log line every few seconds
    otherwise."""
    if quiet:
        return fn(cfg)
    if not sys.stderr.isatty():

        def log_line(p: Any) -> None:
            elapsed = time.perf_counter() - p.started
            err.print(f"{elapsed:.0f} s: {progress_line(p)}", highlight=False, soft_wrap=True)

        return fn(cfg, on_progress=throttled(log_line))
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
                    f"{p.tokens:,} tokens · {rate:.1f} req/s · {backend_line(p.backend)} · "
                    f"rejected: {top or '-'}"
                ),
            )

        return fn(cfg, on_progress=update)


def print_generate_summary(summary: Any) -> None:
    table = Table(show_header=True, header_style="bold")
    table.add_column(f"generate -> {summary.run_dir}")
    table.add_column("", justify="right")
    table.add_row("[green]accepted tasks[/]", f"{summary.accepted:,} / {summary.target:,}")
    table.add_row("instruction prompts", f"{summary.prompts:,}")
    table.add_row("requests", f"{summary.requests:,}")
    table.add_row("backend", backend_line(summary.backend, live=False))
    table.add_row(
        "tokens (prompt + completion)", f"{summary.prompt_tokens:,} + {summary.completion_tokens:,}"
    )
    if summary.cost_usd is not None:
        table.add_row("estimated cost", f"${summary.cost_usd:.4f}")
    if summary.reasked_requests:
        table.add_row(
            "re-asked after resume",
            f"{summary.reasked_requests:,} requests, {summary.reasked_tokens:,} tokens",
        )
    for reason, count in sorted(summary.rejected.items(), key=lambda kv: -kv[1]):
        table.add_row(f"rejected: {reason}", f"{count:,}")
    for reason, count in sorted(summary.instances_dropped.items(), key=lambda kv: -kv[1]):
        table.add_row(f"instances dropped: {reason}", f"{count:,}")
    for stage, coverage in summary.parse_coverage.stages():
        table.add_row(f"{stage} completions read", escape(coverage.line()))
    if summary.plan is not None:
        for row in summary.plan.rows:
            flag = "" if row.inside else " [yellow](outside)[/]"
            table.add_row(f"plan: {row.what}", f"{row.actual:,.0f} vs {row.planned.text()}{flag}")
    out.print(table)
    out.print(table1(summary.table1))
    out.print(
        f"{summary.status}: {escape(summary.message)} ({summary.seconds:.1f} s)", highlight=False
    )


def print_plan(plan: Any) -> None:
    """The plan: per stage and in all, the whole run (pilot included) and what is left."""

    def cost(stage: Any) -> str:
        return f"${stage.cost_usd.text(2)}" if stage.cost_usd is not None else "-"

    pilot = plan.pilot
    out.print(
        f"plan: {plan.target:,} tasks with {escape(plan.model)} ({plan.backend}), from "
        f"{pilot.prompts} instruction prompts and {pilot.accepted} tasks in {escape(pilot.run_dir)}"
        " (95% intervals)",
        highlight=False,
    )
    table = Table(header_style="bold")
    for column in ("stage", "requests", "prompt tokens", "completion tokens", "cost (USD)"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage in [*plan.stages, plan.total, plan.remaining]:
        name = {"total": "[bold]whole run[/]", "remaining": "left to spend"}.get(
            stage.stage, stage.stage
        )
        table.add_row(
            name,
            stage.requests.text(),
            stage.prompt_tokens.text(),
            stage.completion_tokens.text(),
            cost(stage),
        )
    out.print(table)
    out.print(f"instruction prompts: {plan.prompts.text()}", highlight=False)
    out.print(
        f"novelty rejects: {plan.novelty_now:.0%} of new instructions now, "
        f"{plan.novelty_at_target.value:.0%} [{plan.novelty_at_target.low:.0%}-"
        f"{plan.novelty_at_target.high:.0%}] at {plan.target:,} tasks",
        highlight=False,
    )
    if plan.hours is not None:
        out.print(
            f"wall: {plan.hours.text(2)} h in all, {plan.remaining_hours.text(2)} h left, "
            "at the pilot's pace"
            + (f" (concurrency {pilot.concurrency})" if plan.backend == "openai" else ""),
            highlight=False,
        )
    else:
        out.print("wall: unknown (the run did not record its time)", highlight=False)
    if plan.price is not None:
        out.print(
            f"price: ${plan.price.prompt:g} / ${plan.price.completion:g} per 1M prompt / "
            f"completion tokens ({plan.price.source})",
            highlight=False,
        )
    else:
        out.print("cost: no price for this model (give `prices` in a config file)", highlight=False)
    if not plan.reachable:
        out.print(f"[bold red]{escape(plan.message)}[/]")


def table1(stats: Any) -> Table:
    from selfinstruct.stats import table1_rows

    table = Table(title="Table 1 (the paper's statistics)", header_style="bold")
    table.add_column("statistic")
    table.add_column("this run", justify="right")
    table.add_column("paper (GPT-3)", justify="right")
    for row in table1_rows(stats):
        table.add_row(*row)
    return table


def with_progress(fn: Callable[..., Any], cfg: Any, quiet: bool) -> Any:
    """Run a filter pass with a spinner and a row count on a terminal."""
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


def print_filter_summary(summary: Any) -> None:
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
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)


def print_finetune_summary(summary: Any) -> None:
    table = Table(show_header=True, header_style="bold")
    table.add_column(f"finetune -> {summary.output_dir}")
    table.add_column("", justify="right")
    first, last = summary.train_loss[:1], summary.train_loss[-1:]
    table.add_row(
        "examples (train / validation)", f"{summary.train_examples} / {summary.validation_examples}"
    )
    table.add_row("steps", str(summary.steps))
    if summary.world_size > 1:
        shares = " + ".join(str(n) for n in summary.first_epoch_examples_per_rank)
        table.add_row(
            "processes (data parallel)",
            f"{summary.world_size}; first epoch read {shares}, "
            f"{summary.first_epoch_examples_on_several_ranks} by several",
        )
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


def print_eval_summary(summary: Any) -> None:
    table = Table(show_header=True, header_style="bold")
    table.add_column(f"eval ({summary.examples} examples, {summary.prompt_format} format)")
    for v in summary.variants:
        table.add_column(v.name, justify="right")

    def cell(v: Any, metric: str, value: float, digits: int) -> str:
        found = v.intervals.get(metric)
        if found is None or found.low != found.low:
            return f"{value:.{digits}f}"
        return f"{value:.{digits}f} [{found.low:.{digits}f}, {found.high:.{digits}f}]"

    table.add_row(
        "ROUGE-L vs reference", *[cell(v, "rouge_l", v.rouge_l, 3) for v in summary.variants]
    )
    table.add_row("response loss", *[cell(v, "loss", v.loss, 3) for v in summary.variants])
    table.add_row("perplexity", *[f"{v.perplexity:.2f}" for v in summary.variants])
    table.add_row("ended by itself", *[cell(v, "ended", v.ended, 2) for v in summary.variants])
    table.add_row(
        "response words",
        *[cell(v, "response_words", v.response_words, 1) for v in summary.variants],
    )
    if any(v.judge for v in summary.variants):
        for grade in ("A", "B", "C", "D", "unparsed"):
            table.add_row(
                f"judge: {grade}", *[str(v.judge.get(grade, 0)) for v in summary.variants]
            )
    out.print(table)
    if summary.differences:
        diff = Table(show_header=True, header_style="bold")
        diff.add_column("difference, 95% paired interval")
        for metric in ("ROUGE-L", "response loss", "ended by itself"):
            diff.add_column(metric, justify="right")
        for d in summary.differences:
            marks = []
            for metric in ("rouge_l", "loss", "ended"):
                found = d.metrics.get(metric)
                marks.append(
                    "-"
                    if found is None
                    else found.text(3) + (" *" if found.excludes_zero() else "")
                )
            diff.add_row(f"{d.variant} - {d.against}", *marks)
        out.print(diff)
        out.print("* the interval excludes zero", highlight=False)
    out.print(f"responses and summary -> {summary.output_dir}", highlight=False)


def print_audit_summary(summary: Any) -> None:
    from selfinstruct.quality import PAPER_TABLE2, QUESTION_TEXT

    table = Table(show_header=True, header_style="bold")
    table.add_column(f"audit by {summary.judge} ({summary.judged} of {summary.tasks} tasks)")
    table.add_column("judge: yes [95% CI] of n", justify="right")
    table.add_column("paper (GPT-3, 200)", justify="right")
    if summary.agreement:
        table.add_column("agreement with review", justify="right")
    for key, row in summary.table.rows.items():
        cells = [QUESTION_TEXT.get(key, "Valid in every field"), row.text()]
        cells.append(f"{PAPER_TABLE2[key]:.0%}")
        if summary.agreement:
            a = summary.agreement[key]
            kappa = "n/a" if a.kappa is None else f"{a.kappa:.2f}"
            cells.append("-" if a.agree is None else f"{a.agree:.0%}, kappa {kappa} (n={a.n})")
        table.add_row(*cells)
    out.print(table)
    cost = "" if summary.cost_usd is None else f", ${summary.cost_usd:.4f}"
    out.print(
        f"{summary.asked} asked now, {summary.reused} from the journal, {summary.unparsed} "
        f"unparsed, {summary.failed} failed (asked again next time); "
        f"{summary.prompt_tokens:,} prompt + {summary.completion_tokens:,} completion tokens{cost}",
        highlight=False,
    )
    if summary.output:
        out.print(
            f"{summary.kept:,} tasks kept -> {summary.output}; {summary.dropped:,} dropped "
            "(audit_rejected.jsonl)",
            highlight=False,
        )
