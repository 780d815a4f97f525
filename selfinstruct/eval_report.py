"""An eval beside the run that made the data: its table with intervals, and the scaling curve.

`eval` notes itself in every run directory an adapter was tuned on (`evals.jsonl`), and `report
RUN` calls `evals_section` to show those evals. When several adapters were tuned on different
numbers of the run's tasks (`finetune --max-tasks N`), their ROUGE-L against N is the paper's
Figure 7 in miniature: `scaling_figure` draws it, with the base model at 0 tasks and any other
variant of the same eval (tuned on other data) as a labelled line.
"""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

from selfinstruct.evaluation import EvalSummary, linked_evals

METRIC_NAMES = {
    "rouge_l": "ROUGE-L",
    "loss": "response loss",
    "ended": "ended by itself",
    "response_words": "response words",
}


def _same(a: str | Path, b: str | Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def scaling_points(
    summary: EvalSummary, run: Path, metric: str = "rouge_l"
) -> list[tuple[int, Any]]:
    """(tasks tuned on, interval) for the variants tuned on `run`, by size; the base at 0."""
    points = []
    for v in summary.variants:
        trained = summary.trained_on.get(v.name)
        if v.adapter is None:
            points.append((0, v.intervals.get(metric)))
        elif trained is not None and _same(trained.data, run):
            points.append((trained.tasks, v.intervals.get(metric)))
    return sorted((p for p in points if p[1] is not None), key=lambda p: p[0])


def scaling_figure(
    summary: EvalSummary, run: Path, plt: Any, metric: str = "rouge_l"
) -> bytes | None:
    """The curve as PNG bytes, or None when fewer than two sizes were tuned on `run`."""
    points = scaling_points(summary, run, metric)
    if sum(1 for n, _ in points if n > 0) < 2:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    xs = [n for n, _ in points]
    ys = [i.estimate for _, i in points]
    errors = [[i.estimate - i.low for _, i in points], [i.high - i.estimate for _, i in points]]
    ax.errorbar(
        xs, ys, yerr=errors, marker="o", capsize=4, color="#4c72b0", label="tuned on this run"
    )
    colours = ["#dd8452", "#55a868", "#c44e52", "#8172b2", "#937860"]
    others = [
        v
        for v in summary.variants
        if v.adapter is not None
        and not (v.name in summary.trained_on and _same(summary.trained_on[v.name].data, run))
    ]
    for colour, v in zip(colours, others, strict=False):
        interval = v.intervals.get(metric)
        if interval is None:
            continue
        trained = summary.trained_on.get(v.name)
        label = f"{v.name}" + (f" ({trained.tasks} tasks)" if trained else "")
        ax.axhline(interval.estimate, color=colour, linestyle="--", label=label)
        ax.axhspan(interval.low, interval.high, color=colour, alpha=0.12)
    ax.set_xlabel("tasks from the run the adapter was tuned on (0: the base model)")
    ax.set_ylabel(f"{METRIC_NAMES.get(metric, metric)} (95% interval)")
    ax.set_title(f"{METRIC_NAMES.get(metric, metric)} on {summary.examples} held-out examples")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def summary_table(summary: EvalSummary) -> tuple[list[str], list[list[str]]]:
    """Header and rows: each variant's figures with their 95% intervals."""
    header = ["variant", "trained on", *METRIC_NAMES.values()]
    rows = []
    for v in summary.variants:
        trained = summary.trained_on.get(v.name)
        where = "-" if v.adapter is None else "?"
        if trained is not None:
            where = f"{Path(trained.data).name}: {trained.tasks} tasks, {trained.steps} steps"
        cells = [v.name, where]
        for metric in METRIC_NAMES:
            interval = v.intervals.get(metric)
            digits = 1 if metric == "response_words" else 3
            cells.append("-" if interval is None else interval.text(digits))
        rows.append(cells)
    return header, rows


def differences_table(summary: EvalSummary, against: str | None = "base") -> list[list[str]]:
    """Each variant minus `against` (every pair when None): estimate [95% paired interval]."""
    rows = []
    for d in summary.differences:
        if against is not None and d.against != against:
            continue
        cells = [f"{d.variant} - {d.against}"]
        for metric in ("rouge_l", "loss", "ended"):
            found = d.metrics.get(metric)
            mark = " *" if found is not None and found.excludes_zero() else ""
            cells.append("-" if found is None else found.text(3) + mark)
        rows.append(cells)
    return rows


def evals_section(run: Path, plt: Any) -> tuple[str, dict[str, bytes]]:
    """The report's section for the evals of adapters tuned on `run` (empty when none)."""
    esc = html.escape
    evals = linked_evals(run)
    if not evals:
        return "", {}
    parts, images = [], {}
    for number, summary in enumerate(evals):
        header, rows = summary_table(summary)
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        body = "".join(
            "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells in rows
        )
        diffs = "".join(
            "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"
            for cells in differences_table(summary)
        )
        figure = scaling_figure(summary, run, plt)
        picture = ""
        if figure is not None:
            key = f"scaling_{number}"
            images[key] = figure
            picture = f'<img alt="{key}" src="data:image/png;base64,{_b64(figure)}">'
        parts.append(
            f"<h3>{esc(summary.output_dir)}</h3><p>{summary.examples} held-out examples from "
            f"<code>{esc(summary.data)}</code>, base model <code>{esc(summary.base_model)}"
            f"</code>, {esc(summary.prompt_format)} prompt format, greedy, at most "
            f"{summary.max_new_tokens} tokens. Each figure with its 95% bootstrap interval.</p>"
            f"<table><tr>{head}</tr>{body}</table>"
            "<p>Against the base, on the same items (paired bootstrap; * the interval excludes "
            "zero):</p><table><tr><th>difference</th><th>ROUGE-L</th><th>response loss</th>"
            f"<th>ended by itself</th></tr>{diffs}</table>{picture}"
        )
    return (
        '<section id="evals"><h2>Models tuned on this data</h2>'
        "<p>Evaluations of adapters tuned on this run (<code>selfinstruct eval</code>).</p>"
        + "".join(parts)
        + "</section>",
        images,
    )


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode("ascii")
