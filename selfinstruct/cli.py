"""The `selfinstruct` command line: each command builds its config and makes one library call.

The flags of every command are made from its config's fields (config/commands.py, through
cli_build.py), so an option's type, default and help are written once. Heavy libraries (torch,
transformers, vllm) are imported inside the calls that need them, so `--help` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

from selfinstruct import __version__
from selfinstruct.cli_build import add_command, switch
from selfinstruct.config import (
    AuditConfig,
    EvalConfig,
    ExportConfig,
    FilterConfig,
    FinetuneConfig,
    GenerateConfig,
    PlanConfig,
    ReportConfig,
    ReviewConfig,
    RunConfig,
    build_config,
)
from selfinstruct.errors import EXIT_CODES, SelfInstructError

app = typer.Typer(
    name="selfinstruct",
    help="Turn a few hand-written tasks into filtered instruction-tuning data (Self-Instruct), "
    "then LoRA-fine-tune a model on it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: no "<bool>" metavars, each default said once
)

CONFIG = switch(
    "config",
    ("--config", "-c"),
    "YAML/TOML file with these options; flags given here override it",
    Path | None,
    metavar="FILE",
)
QUIET = switch("quiet", ("--quiet", "-q"), "print nothing but errors")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"selfinstruct {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Self-Instruct, done properly: fast, resumable, honest about what it drops."""


def _fail(exc: SelfInstructError) -> typer.Exit:
    from rich.markup import escape

    from selfinstruct.display import err

    # Messages hold user text and package names with brackets ('selfinstruct[vllm]'), which
    # rich would read as markup and drop.
    err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(exc.exit_code)


def _unwind_on_sigterm() -> None:
    """A scheduler's SIGTERM unwinds like Ctrl-C: open files are closed (whole lines flushed)
    and an in-process engine's own processes are shut down on the way out, instead of being
    left running."""
    import signal

    def on_sigterm(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)


def generate(options: dict[str, Any], config: Path | None, quiet: bool, dry_run: bool) -> None:
    """Bootstrap new tasks from seed tasks with a model (the Self-Instruct loop)."""
    from selfinstruct.display import err, print_generate_summary, run_with_display
    from selfinstruct.generate import run_generate

    if dry_run:
        options["backend"] = "scripted"
    _unwind_on_sigterm()
    try:
        cfg = build_config(GenerateConfig, config, options)
        summary = run_with_display(run_generate, cfg, quiet)
    except SelfInstructError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        err.print("interrupted; run the same command again to resume")
        raise typer.Exit(EXIT_CODES["interrupted"]) from None
    if not quiet:
        print_generate_summary(summary)
    raise typer.Exit(EXIT_CODES.get(summary.status, 0))


def plan_command(options: dict[str, Any], config: Path | None, quiet: bool) -> None:
    """What a run to --target tasks will take (requests, tokens, cost, hours, each with an
    interval), projected from a pilot run in --run-dir that the real run resumes."""
    from selfinstruct.display import err, print_plan, run_with_display
    from selfinstruct.generate import run_generate
    from selfinstruct.plan import run_plan

    _unwind_on_sigterm()
    try:
        cfg = build_config(PlanConfig, config, options)
        plan = run_plan(cfg, lambda pilot: run_with_display(run_generate, pilot, quiet))
    except SelfInstructError as exc:
        raise _fail(exc) from None
    except KeyboardInterrupt:
        err.print("interrupted; run the same command again to resume the pilot")
        raise typer.Exit(EXIT_CODES["interrupted"]) from None
    print_plan(plan)


def filter_command(options: dict[str, Any], config: Path | None, quiet: bool) -> None:
    """Drop instructions that break the rules or are too similar (ROUGE-L) to earlier ones."""
    from selfinstruct.display import print_filter_summary, with_progress
    from selfinstruct.filtering import run_filter

    try:
        summary = with_progress(run_filter, build_config(FilterConfig, config, options), quiet)
    except SelfInstructError as exc:
        raise _fail(exc) from None
    if not quiet:
        print_filter_summary(summary)


def export(options: dict[str, Any], config: Path | None) -> None:
    """Write tasks as training examples (one per instance) in a trainer's format, with a
    dataset card; optionally push both to the Hugging Face hub."""
    from selfinstruct.display import out
    from selfinstruct.export import export as run_export

    try:
        cfg = build_config(ExportConfig, config, options)
        summary = run_export(cfg)
    except SelfInstructError as exc:
        raise _fail(exc) from None
    dropped = ", ".join(f"{k} {v}" for k, v in summary.dropped.items())
    out.print(
        f"{summary.examples:,} examples -> {cfg.output} ({cfg.format})"
        + (f"; left out: {dropped}" if dropped else ""),
        highlight=False,
    )
    if summary.review_dropped or summary.review_edited:
        out.print(
            f"review applied: {summary.review_dropped} "
            f"task{'' if summary.review_dropped == 1 else 's'} dropped, "
            f"{summary.review_edited} corrected",
            highlight=False,
        )
    if summary.card_path:
        out.print(f"dataset card -> {summary.card_path}", highlight=False)
    if summary.hub_url:
        out.print(f"uploaded -> {summary.hub_url}", highlight=False)


def finetune(options: dict[str, Any], config: Path | None) -> None:
    """LoRA-fine-tune a model on generated tasks (TRL + PEFT); rerun to resume."""
    from selfinstruct.display import print_finetune_summary
    from selfinstruct.finetune import first_process, run_finetune

    try:
        summary = run_finetune(build_config(FinetuneConfig, config, options))
    except SelfInstructError as exc:
        raise _fail(exc) from None
    if first_process():  # under a launcher, one summary, not one per process
        print_finetune_summary(summary)


def eval_command(options: dict[str, Any], config: Path | None) -> None:
    """Compare a base model with and without an adapter on held-out tasks."""
    from selfinstruct.display import print_eval_summary
    from selfinstruct.evaluation import run_eval

    _unwind_on_sigterm()
    try:
        summary = run_eval(build_config(EvalConfig, config, options))
    except SelfInstructError as exc:
        raise _fail(exc) from None
    print_eval_summary(summary)


def run_command(options: dict[str, Any], quiet: bool) -> None:
    """Run a whole job file (generate -> filter -> export -> finetune -> eval); rerun resumes."""
    import logging

    from rich.markup import escape

    from selfinstruct.display import out
    from selfinstruct.job import JobRunner, JsonFormatter

    try:
        cfg = build_config(RunConfig, None, options)
    except SelfInstructError as exc:
        raise _fail(exc) from None
    if cfg.from_card is not None:
        _from_card(cfg)
        return
    handler = logging.StreamHandler(sys.stderr)
    if cfg.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("selfinstruct")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False

    _unwind_on_sigterm()
    assert cfg.job is not None  # the config asks for a job or a card
    try:
        result = JobRunner(cfg.job, force_new_run=cfg.force_new_run).run()
    except SelfInstructError as exc:
        raise _fail(exc) from None
    if not quiet:
        out.print(f"{result.status}: {escape(result.message)}", highlight=False)
    raise typer.Exit(result.exit_code)


def _from_card(cfg: RunConfig) -> None:
    """`run --from-card`: the job that makes a card's data, run from its journal if it is there."""
    from rich.markup import escape

    from selfinstruct.display import out
    from selfinstruct.job import JobRunner
    from selfinstruct.lineage import check_rebuilt, prepare_rebuild

    assert cfg.from_card is not None
    folder = cfg.from_card
    # Beside the data folder, never in it (an hf dataset's hash covers its folder).
    base = folder if folder.is_dir() else folder.parent
    place = cfg.rebuild_dir or base.parent / f"{base.name}-rebuilt"
    try:
        result = prepare_rebuild(
            folder, place, seed_tasks=cfg.seed_tasks, accept_edited=cfg.accept_edited
        )
        if result.data_edited:
            out.print("warning: the data beside the card was edited after export", highlight=False)
        if result.replay:
            ran = JobRunner(Path(result.job_file), force_new_run=False).run()
            if ran.exit_code != 0:
                raise SelfInstructError(f"the rebuild stopped: {ran.message}")
            result = check_rebuilt(folder, result)
    except SelfInstructError as exc:
        raise _fail(exc) from None
    out.print(escape(result.message), highlight=False)
    if result.reproduced is False:
        raise typer.Exit(EXIT_CODES["config"])


def report(options: dict[str, Any]) -> None:
    """Write an HTML report (images embedded) and its PNGs for a run."""
    from selfinstruct.display import out
    from selfinstruct.report import build_report

    try:
        cfg = build_config(ReportConfig, None, options)
        result = build_report(cfg.run, cfg.seeds, cfg.output_dir)
    except SelfInstructError as exc:
        raise _fail(exc) from None
    out.print(f"report -> {result.html_path} ({len(result.images)} figures)", highlight=False)


def review(options: dict[str, Any]) -> None:
    """Judge a sample of tasks by hand on a local page (the paper's three questions); edits and
    drops are honoured by export and finetune."""
    from selfinstruct.display import out
    from selfinstruct.review import run_review

    try:
        run_review(
            build_config(ReviewConfig, None, options),
            lambda text: out.print(text, highlight=False, soft_wrap=True),
        )
    except SelfInstructError as exc:
        raise _fail(exc) from None


def audit(options: dict[str, Any], config: Path | None, quiet: bool) -> None:
    """Ask an LLM judge the review's three questions; optionally keep only valid tasks."""
    from selfinstruct.audit import run_audit
    from selfinstruct.display import print_audit_summary

    try:
        summary = run_audit(build_config(AuditConfig, config, options))
    except SelfInstructError as exc:
        raise _fail(exc) from None
    if not quiet:
        print_audit_summary(summary)


DRY_RUN = switch("dry_run", ("--dry-run",), "scripted backend: canned replies, no model")
add_command(app, "generate", GenerateConfig, generate, [DRY_RUN, CONFIG, QUIET])
add_command(app, "plan", PlanConfig, plan_command, [CONFIG, QUIET])
add_command(app, "filter", FilterConfig, filter_command, [CONFIG, QUIET])
add_command(app, "export", ExportConfig, export, [CONFIG])
add_command(app, "finetune", FinetuneConfig, finetune, [CONFIG])
add_command(app, "eval", EvalConfig, eval_command, [CONFIG])
add_command(app, "run", RunConfig, run_command, [QUIET])
add_command(app, "report", ReportConfig, report)
add_command(app, "review", ReviewConfig, review)
add_command(app, "audit", AuditConfig, audit, [CONFIG, QUIET])


def main() -> None:
    app()


if __name__ == "__main__":
    main()
