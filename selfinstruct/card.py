"""The dataset card written with every export: a Hugging Face README.md with a YAML header.

The header carries what the hub reads (license, language, task categories, size category, the
data files); the body carries what a user of the data needs to judge it: which model and backend
wrote it, from which seed file (by hash), with which sampling and filter settings, what was
dropped and why, the paper's Table 1 for these tasks, and the export settings.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from selfinstruct import __version__
from selfinstruct.config import ExportConfig
from selfinstruct.lineage import JOURNAL_FILE, card_block
from selfinstruct.manifest import RunManifest
from selfinstruct.records import Task, read_tasks
from selfinstruct.rundir import FilterDir, JobDir, RunDir
from selfinstruct.stats import table1, table1_markdown

# Written into every card, so a later export knows it may replace the file.
MARKER = "<!-- written by selfinstruct export; replaced on every export -->"

SIZES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))


def size_category(n: int) -> str:
    return next((name for limit, name in SIZES if n < limit), "1M<n<10M")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def provenance(source: Path) -> tuple[RunManifest | None, dict[str, Any]]:
    """The generate manifest and the filter summary behind `source`, where there are any: a run
    directory, a file inside one, or a job's filter/kept.jsonl beside its generate/ folder."""
    folder = source if source.is_dir() else source.parent
    manifest = None
    for candidate in (RunDir(folder).manifest, JobDir(folder.parent).generate.manifest):
        manifest = RunManifest.read(candidate)
        if manifest is not None:
            break
    summary = _read_json(FilterDir(folder).summary) if not source.is_dir() else {}
    return manifest, summary


def source_run_dir(source: Path) -> Path | None:
    """The generate run behind `source` (a run directory, a file in one, a job's export)."""
    folder = source if source.is_dir() else source.parent
    for candidate in (RunDir(folder), JobDir(folder.parent).generate):
        if candidate.manifest.exists():
            return candidate.path
    return None


def data_path(cfg: ExportConfig) -> str:
    """The data files as the card's `configs` names them, relative to the card."""
    return "data-*.arrow" if cfg.format == "hf" else cfg.output.name


def card_path(cfg: ExportConfig) -> Path:
    return (cfg.output if cfg.format == "hf" else cfg.output.parent) / "README.md"


def render_card(
    cfg: ExportConfig,
    tasks: list[Task],
    examples: int,
    dropped: dict[str, int],
    seed_tasks: int,
    reviewed: bool = False,
) -> str:
    manifest, filter_summary = provenance(cfg.source)
    run_dir = source_run_dir(cfg.source)
    header: dict[str, Any] = {
        "license": cfg.license,
        "language": cfg.language,
        "task_categories": ["text-generation"],
        "tags": ["self-instruct", "synthetic", "instruction-tuning", "selfinstruct"],
        "size_categories": [size_category(examples)],
        "pretty_name": f"Self-Instruct data: {cfg.output.stem}",
        "configs": [
            {"config_name": "default", "data_files": [{"split": "train", "path": data_path(cfg)}]}
        ],
        # How the data was made, to the byte: `selfinstruct run --from-card` reads it back.
        "selfinstruct": card_block(
            __version__,
            cfg.output,
            cfg.model_dump(mode="json"),
            manifest,
            run_dir,
            JOURNAL_FILE if cfg.with_journal and run_dir is not None else None,
            not_rebuilt=(["a filter pass"] if filter_summary else [])
            + (["a review's drops and edits"] if reviewed else []),
        ),
    }
    generated = manifest is not None
    run = manifest or RunManifest()
    config = run.config
    lines = [
        "---",
        yaml.safe_dump(header, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        MARKER,
        "",
        f"# {header['pretty_name']}",
        "",
        f"{examples:,} instruction-following examples in `{cfg.format}` format, from "
        f"{len(tasks):,} tasks"
        + (f" and {seed_tasks:,} seed tasks" if seed_tasks else "")
        + ". Made with [selfinstruct](https://pypi.org/project/selfinstruct/) "
        f"{__version__}. " + _filters_claim(generated, filter_summary),
        "",
        "Machine-written data: instructions can be vague and outputs wrong. In the paper's "
        "own GPT-3 data, 54% of sampled tasks were valid in every field. Review a sample "
        "before training on it.",
        "",
        "## How it was generated",
        "",
    ]
    if generated:
        model, backend = run.model, run.backend
        lines += [
            f"- generator: `{model}` through the `{backend}` "
            f"backend ({'chat' if run.chat else 'completion'} prompts), "
            f"selfinstruct {run.package_version}",
            f"- seed tasks: `{Path(str(config.get('seed_tasks', '?'))).name}`, "
            f"sha256 `{run.seed_file_sha256}`",
            f"- instruction sampling: `{_settings(config.get('instruction_sampling', {}))}`",
            f"- instance sampling: `{_settings(config.get('instance_sampling', {}))}`",
            f"- novelty: ROUGE-L threshold {config.get('threshold', '?')} "
            f"({config.get('tokenizer', '?')} tokens), rules "
            f"`{_settings(config.get('rules', {}), skip=('keywords',))}`, "
            f"{len(config.get('rules', {}).get('keywords', []))} blocked keywords",
            f"- demonstrations: {config.get('demonstrations', '?')}; classification prompts: "
            f"{config.get('classification_prompts', '?')}",
            f"- run status: {run.status}; requests: {run.counts.requests}",
        ]
        if "gemma" in str(model).lower():
            # The Gemma terms count a model trained on Gemma's outputs "to perform similarly to
            # Gemma" as a Model Derivative: whoever trains on this data should know.
            lines += [
                "- licence of the generator: Gemma is provided under and subject to the Gemma "
                "Terms of Use found at ai.google.dev/gemma/terms. Google claims no rights in "
                "its outputs, but a model trained on them to perform like Gemma may be a Model "
                "Derivative under those terms (use restrictions, notice and a copy of the terms "
                "go with it when distributed); see docs/models.md of selfinstruct.",
            ]
    else:
        lines.append(
            f"- not a selfinstruct run: exported from `{cfg.source.name}`, generator unknown"
        )
    tally = run.counts.dropped()
    if tally.by_stage:
        lines += ["", "### What was dropped", "", "| what | reason | count |", "|---|---|---:|"]
        lines += [f"| instruction or task | {k} | {v:,} |" for k, v in tally.tasks.items()]
        lines += [
            f"| one instance of a kept task | {k} | {v:,} |" for k, v in tally.instances.items()
        ]
    if filter_summary:
        kept, dropped_rows = filter_summary.get("kept", "?"), filter_summary.get("dropped", {})
        lines += ["", f"A separate `selfinstruct filter` pass kept {kept}; dropped: "]
        lines[-1] += ", ".join(f"{k} {v}" for k, v in dropped_rows.items()) or "none"
    lines += [
        "",
        "## Statistics (the paper's Table 1)",
        "",
        table1_markdown(table1(tasks), "these tasks"),
        *_quality_lines(cfg.source),
        "",
        "## Export",
        "",
        f"- format: `{cfg.format}`; one example per instance, at most "
        f"{cfg.max_per_task or 'every'} per task; instruction and input joined by one of "
        f"several templates (seed {cfg.seed})",
        f"- left out: {', '.join(f'{k} {v}' for k, v in dropped.items()) or 'nothing'}",
        f"- system message: {'yes' if cfg.system else 'none'}",
        "",
    ]
    return "\n".join(lines)


def _filters_claim(generated: bool, filter_summary: dict[str, Any]) -> str:
    """What the card may say about how the tasks were made: only what ran on this data."""
    if generated:
        claim = (
            "By the Self-Instruct method (Wang et al., ACL 2023): a model bootstrapped new "
            "tasks from a few hand-written seed tasks, and every task passed the paper's rule, "
            "novelty (ROUGE-L) and instance filters"
        )
        return claim + (", then a separate `selfinstruct filter` pass." if filter_summary else ".")
    if filter_summary:
        return (
            "Not generated by selfinstruct; every task passed `selfinstruct filter` (the "
            "paper's rule and ROUGE-L novelty filters), and no instance filter ran."
        )
    return (
        "Not generated or filtered by selfinstruct: no selfinstruct filter ran on these tasks, "
        "so they are as they were in the source file."
    )


def _quality_lines(source: Path) -> list[str]:
    """The run's Table 2 (review and audit), when someone has labelled its tasks."""
    from selfinstruct.table2 import QUALITY_NOTE, quality_figures

    if not (source.is_dir() and RunDir(source).tasks.exists()):
        return []
    ids = {t.id for t in read_tasks(RunDir(source).tasks)}
    figures = quality_figures(source, ids)
    if not figures.labelled:
        return []
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731 - one escape, used twice
    lines = ["", "## Quality (the paper's Table 2)", "", QUALITY_NOTE, ""]
    lines.append("| " + " | ".join(cell(h) for h in figures.header) + " |")
    lines.append("|" + "---|" * len(figures.header))
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in figures.rows]
    if figures.dropped or figures.edited:
        lines += [
            "",
            f"The reviewer dropped {figures.dropped} task{'' if figures.dropped == 1 else 's'} "
            f"(left out here) and corrected {figures.edited} (written here as corrected).",
        ]
    return lines


def _settings(values: dict[str, Any], skip: tuple[str, ...] = ()) -> str:
    shown = {k: v for k, v in values.items() if k not in skip and v not in (None, [], ())}
    return ", ".join(f"{k}={v}" for k, v in shown.items())
