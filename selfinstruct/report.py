"""`selfinstruct report RUN`: one self-contained HTML page (images embedded) plus the PNGs.

Sections: the funnel (generated → dropped per reason → accepted), each task's ROUGE-L to its
most similar seed instruction (the paper's Figure 3), lengths of instructions, inputs and outputs
(Figure 4), the share of classification tasks, instances per task, the most common leading
verbs, tokens and estimated cost, and a sample of accepted and rejected rows. Works on the run
directory of any backend, or on a job's run directory (its generate/ folder).
"""

from __future__ import annotations

import base64
import html
import io
import json
import random
import re
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from selfinstruct.errors import SelfInstructError
from selfinstruct.eval_report import evals_section
from selfinstruct.manifest import PARSE, RejectTally, RunManifest
from selfinstruct.records import Rejected, Task, read_tasks
from selfinstruct.rundir import RunDir
from selfinstruct.similarity import RougeLIndex
from selfinstruct.stats import table1, table1_rows
from selfinstruct.store import RunStore, generate_dir

SECTIONS = ("funnel", "similarity", "lengths", "classification", "instances", "verbs")
# Sections written as HTML tables rather than figures.
TABLES = ("table1", "coverage", "quality", "usage", "samples")


class ReportResult(BaseModel):
    html_path: str
    images: list[str]


def _load(run: Path) -> tuple[list[Task], list[Rejected], RunManifest, dict[str, Any]]:
    store = RunStore(run)  # read-only use: no lock needed to read whole lines
    usage_path = store.usage_path
    usage = json.loads(usage_path.read_text()) if usage_path.exists() else {}
    return store.tasks(), store.rejected(), store.manifest() or RunManifest(), usage


def _figure_png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _words(text: str) -> int:
    return len(text.split())


def leading_verb(instruction: str) -> str:
    match = re.match(r"\W*([A-Za-z][A-Za-z'-]*)", instruction)
    return match.group(1).lower() if match else "(none)"


def build_report(
    run: Path, seeds: Path | None = None, output_dir: Path | None = None
) -> ReportResult:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SelfInstructError(
            "reports need matplotlib: pip install 'selfinstruct[report]'"
        ) from None
    gen = generate_dir(run)
    tasks, rejected, manifest, usage = _load(gen)
    seed_path = seeds or manifest.seed_tasks
    if seed_path is None or not seed_path.exists():
        raise SelfInstructError(f"{gen}: cannot find the seed tasks of this run; pass --seeds")
    seed_texts = [t.instruction for t in read_tasks(seed_path)]
    out = output_dir or RunDir(run).report
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}

    # Funnel: every instruction parsed from a completion ends in one of these places.
    # Instance-level drops (stage "instance") belong to tasks that were kept; they are listed
    # apart, under the Table 1 section.
    tally = manifest.counts.tally
    if sum(map(tally.total, tally.by_stage)) != len(rejected):
        # A manifest from before runs kept a tally, or one a kill left behind the committed
        # files (it is rewritten every second): count the committed records themselves.
        tally = RejectTally()
        tally.add(rejected)
    reasons = tally.after_parsing
    generated = len(tasks) + sum(reasons.values())
    labels = ["generated", *[f"dropped: {k}" for k in reasons], "accepted"]
    values = [generated, *reasons.values(), len(tasks)]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(labels) + 1))
    colors = ["#4c72b0"] + ["#c44e52"] * len(reasons) + ["#55a868"]
    ax.barh(labels[::-1], values[::-1], color=colors[::-1])
    for i, v in enumerate(values[::-1]):
        ax.text(v, i, f" {v:,}", va="center")
    ax.set_xlabel("instructions")
    ax.set_title("From generated instructions to accepted tasks")
    images["funnel"] = _figure_png(fig)
    plt.close(fig)

    # Figure 3 of the paper: ROUGE-L of each task to its most similar seed instruction.
    # Scores only (no threshold applies), with the paper's tokens, as its Figure 3.
    index = RougeLIndex(1.0, "rouge", prune=False)
    for text in seed_texts:
        index.add(text)
    best = [float(index.scores(t.instruction).max()) for t in tasks] if seed_texts else []
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.hist(best, bins=[i / 20 for i in range(21)], color="#4c72b0", edgecolor="white")
    ax.set_xlabel("ROUGE-L to the most similar seed instruction")
    ax.set_ylabel("tasks")
    ax.set_title("Novelty against the seed tasks")
    images["similarity"] = _figure_png(fig)
    plt.close(fig)

    # Figure 4: lengths of instructions, non-empty inputs and outputs, in words.
    series = {
        "instructions": [_words(t.instruction) for t in tasks],
        "inputs (non-empty)": [_words(i.input) for t in tasks for i in t.instances if i.input],
        "outputs": [_words(i.output) for t in tasks for i in t.instances],
    }
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for ax, (name, data) in zip(axes, series.items(), strict=True):
        if data:
            ax.hist(data, bins=20, color="#8172b2", edgecolor="white")
        else:
            ax.text(0.5, 0.5, "none", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(f"{name} (n={len(data)})")
        ax.set_xlabel("words")
    images["lengths"] = _figure_png(fig)
    plt.close(fig)

    share = Counter("classification" if t.is_classification else "other" for t in tasks)
    fig, ax = plt.subplots(figsize=(4.5, 3))
    kinds = ["classification", "other"]
    ax.bar(kinds, [share.get(k, 0) for k in kinds], color=["#dd8452", "#4c72b0"])
    ax.set_title("Classification tasks")
    ax.set_ylabel("tasks")
    images["classification"] = _figure_png(fig)
    plt.close(fig)

    per_task = Counter(len(t.instances) for t in tasks)
    fig, ax = plt.subplots(figsize=(4.5, 3))
    keys = sorted(per_task)
    ax.bar([str(k) for k in keys], [per_task[k] for k in keys], color="#55a868")
    ax.set_xlabel("instances per task")
    ax.set_ylabel("tasks")
    ax.set_title("Instances per task")
    images["instances"] = _figure_png(fig)
    plt.close(fig)

    verbs = Counter(leading_verb(t.instruction) for t in tasks).most_common(20)
    fig, ax = plt.subplots(figsize=(7, 0.3 * max(len(verbs), 1) + 1))
    ax.barh([v for v, _ in verbs][::-1], [c for _, c in verbs][::-1], color="#937860")
    ax.set_xlabel("tasks")
    ax.set_title("Most common leading words of instructions")
    images["verbs"] = _figure_png(fig)
    plt.close(fig)

    evals, eval_images = evals_section(gen, plt)
    images.update(eval_images)
    paths = []
    for name, data in images.items():
        path = out / f"{name}.png"
        path.write_bytes(data)
        paths.append(str(path))
    html_path = out / "report.html"
    page = _html(gen, manifest, tally, usage, tasks, rejected, images, generated)
    html_path.write_text(
        page.replace("<!--quality-->", quality_section(gen, tasks))
        .replace("<!--evals-->", evals)
        .replace("<!--plan-->", plan_section(gen, len(seed_texts))),
        encoding="utf-8",
    )
    return ReportResult(html_path=str(html_path), images=paths)


def quality_section(gen: Path, tasks: list[Task]) -> str:
    """The paper's Table 2 beside this run's human review and LLM-judge audit."""
    from selfinstruct.table2 import QUALITY_NOTE, quality_figures

    esc = html.escape
    figures = quality_figures(gen, {t.id for t in tasks})
    if figures.labelled:
        note = esc(QUALITY_NOTE)
        if figures.dropped or figures.edited:
            note += (
                f" The reviewer dropped {figures.dropped} "
                f"task{'' if figures.dropped == 1 else 's'} and corrected {figures.edited}; "
                "export and finetune apply both."
            )
    else:
        note = (
            "No labels yet: <code>selfinstruct review RUN</code> answers the paper's three "
            "questions by hand, <code>selfinstruct audit RUN --judge-backend ...</code> asks an "
            "LLM judge."
        )
    header = "".join(f"<th>{esc(h)}</th>" for h in figures.header)
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells in figures.rows
    )
    return (
        '<section id="quality"><h2>Table 2: data quality</h2>'
        f"<p>{note}</p><table><tr>{header}</tr>{rows}</table></section>"
    )


def plan_section(gen: Path, seeds: int) -> str:
    """The plan `selfinstruct plan` made for this run, beside what the run used."""
    from selfinstruct.plan import check_against, read_plan

    plan = read_plan(gen)
    if plan is None:
        return ""
    esc = html.escape
    check = check_against(plan, gen, seeds)
    head = (
        f"<p>Planned for {plan.target:,} tasks from a pilot of {plan.pilot.prompts} instruction "
        f"prompts and {plan.pilot.accepted} tasks (95% intervals): {esc(plan.headline())}.</p>"
    )
    if check is None:
        body = "<p>The run has not reached the plan's target yet.</p>"
    else:
        rows = "".join(
            f"<tr><th>{esc(r.what)}</th><td>{esc(r.planned.text())}</td><td>{r.actual:,.0f}</td>"
            f"<td>{'yes' if r.inside else 'no'}</td></tr>"
            for r in check.rows
        )
        body = (
            "<table><tr><th></th><th>planned</th><th>actual</th><th>inside the interval</th>"
            f"</tr>{rows}</table>"
        )
    return f'<section id="plan"><h2>Plan against actual</h2>{head}{body}</section>'


def _coverage_section(manifest: RunManifest) -> str:
    """How much of each stage's completions the parsers read: a new model whose format is not
    understood shows here first."""
    esc = html.escape
    coverage = manifest.counts.parse_coverage
    if coverage is None:
        body = "<p>Not recorded: this run was written by an older selfinstruct.</p>"
    else:
        rows = "".join(
            f"<tr><th>{esc(name)}</th><td>{c.fully:,}</td><td>{c.partly:,}</td>"
            f"<td>{c.not_read:,}</td><td>{esc(c.reasons_text())}</td></tr>"
            for name, c in coverage.stages()
        )
        body = (
            "<p>Each completion of each stage, as its parser read it: every piece used (fully), "
            "some pieces left out (in part), or nothing usable (not read), with what was left "
            "out. A model whose output format is not understood shows many completions in the "
            "last two columns.</p><table><tr><th>stage</th><th>fully</th><th>in part</th>"
            f"<th>not read</th><th>left out, by reason</th></tr>{rows}</table>"
        )
    return f'<section id="coverage"><h2>How the completions were read</h2>{body}</section>'


def _img(name: str, data: bytes) -> str:
    return (
        f'<img alt="{name}" src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}">'
    )


def _html(
    run: Path,
    manifest: RunManifest,
    tally: RejectTally,
    usage: dict[str, Any],
    tasks: list[Task],
    rejected: list[Rejected],
    images: dict[str, bytes],
    generated: int,
) -> str:
    esc = html.escape
    rng = random.Random(0)
    accepted_rows = "".join(
        f"<tr><td>{esc(t.instruction)}</td><td>{esc(t.instances[0].input)}</td>"
        f"<td>{esc(t.instances[0].output[:300])}</td></tr>"
        for t in rng.sample(tasks, min(10, len(tasks)))
        if t.instances
    )
    rejected_rows = "".join(
        f"<tr><td>{esc(r.stage)}</td><td>{esc(r.reason)}</td><td>{esc(r.text[:200])}</td>"
        f"<td>{esc(json.dumps(r.detail, ensure_ascii=False)[:200])}</td></tr>"
        for r in rng.sample(rejected, min(10, len(rejected)))
    )
    cost = usage.get("estimated_cost_usd")
    usage_rows = "".join(
        f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>"
        for k, v in [
            ("backend / model", f"{manifest.backend} / {usage.get('model', '?')}"),
            ("requests", usage.get("requests", "?")),
            ("prompt tokens", usage.get("prompt_tokens", "?")),
            ("completion tokens", usage.get("completion_tokens", "?")),
            (
                "estimated cost",
                f"${cost:.4f}" if isinstance(cost, (int, float)) else "no price set",
            ),
        ]
    )
    n_cls = sum(bool(t.is_classification) for t in tasks)
    parse_drops = tally.total(PARSE)
    stats_rows = "".join(
        f"<tr><th>{esc(label)}</th><td>{esc(ours)}</td><td>{esc(paper)}</td></tr>"
        for label, ours, paper in table1_rows(table1(tasks))
    )
    coverage = _coverage_section(manifest)
    drop_text = ", ".join(f"{esc(k)} {v}" for k, v in tally.instances.items()) or "none"
    section = lambda key, title, text: (  # noqa: E731 - a local template, read once
        f'<section id="{key}"><h2>{title}</h2><p>{text}</p>{_img(key, images[key])}</section>'
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>selfinstruct report: {esc(str(run))}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
h1 {{ font-size: 1.6em; }} h2 {{ border-bottom: 1px solid #ddd; padding-bottom: .2em; }}
table {{ border-collapse: collapse; width: 100%; font-size: .9em; }}
td, th {{ border: 1px solid #ddd; padding: .3em .5em; vertical-align: top; text-align: left; }}
img {{ max-width: 100%; }} .kpi {{ display: flex; gap: 2em; }} .kpi div {{ font-size: 1.3em; }}
</style></head><body>
<h1>selfinstruct report</h1>
<p>Run <code>{esc(str(run))}</code>, status <b>{esc(manifest.status)}</b>.</p>
<div class="kpi"><div><b>{len(tasks):,}</b> accepted</div><div><b>{generated:,}</b> generated</div>
<div><b>{len(rejected):,}</b> rejected rows</div><div><b>{n_cls:,}</b> classification</div></div>
<section id="table1"><h2>Table 1: the data at a glance</h2>
<p>The statistics the paper reports for its GPT-3 run (its Table 1), for this run beside it.
A stage that breaks shows here first: no classification tasks, no inputs, empty outputs.</p>
<table><tr><th>statistic</th><th>this run</th><th>paper (GPT-3)</th></tr>{stats_rows}</table>
<p>Instances dropped from tasks that were kept: {drop_text}.</p></section>
{coverage}
<!--quality-->
<!--evals-->
{
        section(
            "funnel",
            "Funnel",
            "Every generated instruction, and where it stopped. "
            f"Before these, {parse_drops} items were dropped while parsing completions "
            "(chatter, or cut off by the token limit).",
        )
    }
{
        section(
            "similarity",
            "Similarity to the seed tasks",
            "ROUGE-L of each accepted task to its most similar seed instruction (paper, Fig. 3).",
        )
    }
{section("lengths", "Lengths", "Words in instructions, non-empty inputs and outputs (Fig. 4).")}
{
        section(
            "classification",
            "Classification share",
            f"{n_cls} of {len(tasks)} accepted tasks are classification tasks.",
        )
    }
{section("instances", "Instances per task", "After the instance filters (at most 5).")}
{section("verbs", "Leading words", "The most common first words of accepted instructions.")}
<section id="usage"><h2>Tokens and cost</h2><table>{usage_rows}</table></section>
<!--plan-->
<section id="samples"><h2>Samples</h2>
<h3>Accepted</h3><table><tr><th>instruction</th><th>input</th><th>output</th></tr>
{accepted_rows}</table>
<h3>Rejected</h3><table><tr><th>stage</th><th>reason</th><th>text</th><th>detail</th></tr>
{rejected_rows}</table></section>
</body></html>
"""
