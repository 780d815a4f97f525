"""`selfinstruct filter` as a library call: rule filters, then exact ROUGE-L novelty, one pass.

Rows are streamed in chunks. Each is checked against the rules, then against the reference pool
and every row kept before it (the paper's sequential rule). Kept rows go to `kept.jsonl`, every
dropped row to `rejected.jsonl` with its reason and detail, and the counts to `summary.json`.
Outputs are written to temporary files and renamed into place only when the run succeeds, so a
failed run never leaves half-written results behind.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from selfinstruct.config import FilterConfig
from selfinstruct.errors import InputError, SelfInstructError
from selfinstruct.filters import RuleFilter
from selfinstruct.records import BadRow, Rejected, Row, dump_line, read_rows, sample_instructions
from selfinstruct.records import read_tasks
from selfinstruct.similarity import TOKENIZERS, RougeLIndex, document_frequencies

T = TypeVar("T")

CHUNK_ROWS = 4096  # rows per streamed chunk: big enough to amortise the vectorised index work
FREQUENCY_SAMPLE = 5000  # rows sampled across the file to order tokens rarest-first
EMPTY_TOKEN_WARNING = 0.05  # warn when this share of rows has no tokens under the tokenizer


class FilterSummary(BaseModel):
    """What a filter run read, kept and dropped (also written to summary.json)."""

    input: str
    output_dir: str
    kept_path: str
    rejected_path: str
    rows_in: int = 0
    kept: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    bad_rows: int = 0
    reference_rows: int = 0
    empty_token_rows: int = 0
    comparisons: int = 0
    threshold: float
    tokenizer: str
    seconds: float = 0.0
    warnings: list[str] = Field(default_factory=list)


def _chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _has_letters(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def run_filter(
    config: FilterConfig, on_progress: Callable[[int], None] | None = None
) -> FilterSummary:
    """Filter `config.input`; returns the summary. Raises SelfInstructError on bad input."""
    started = time.perf_counter()
    out_dir = config.resolved_output_dir()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SelfInstructError(f"{out_dir}: cannot create the output directory ({exc})") from None
    summary = FilterSummary(
        input=str(config.input), output_dir=str(out_dir),
        kept_path=str(out_dir / "kept.jsonl"), rejected_path=str(out_dir / "rejected.jsonl"),
        threshold=config.threshold, tokenizer=config.tokenizer,
    )
    rules = RuleFilter(config.rules)
    references = [task.instruction for path in config.reference for task in read_tasks(path)]
    summary.reference_rows = len(references)
    index: RougeLIndex | None = None
    if config.novelty:
        sample = references + sample_instructions(config.input, FREQUENCY_SAMPLE)
        index = RougeLIndex(
            config.threshold, config.tokenizer, document_frequencies(sample, config.tokenizer)
        )
        for text in references:
            index.add(text)  # the pool itself is not deduplicated: it is the user's
    tokenize = TOKENIZERS[config.tokenizer]
    dropped: Counter[str] = Counter()
    temp_paths = [out_dir / ".kept.jsonl.tmp", out_dir / ".rejected.jsonl.tmp"]
    try:
        with temp_paths[0].open("w", encoding="utf-8") as kept_fh, \
                temp_paths[1].open("w", encoding="utf-8") as rejected_fh:
            for chunk in _chunks(read_rows(config.input, skip_bad_rows=config.skip_bad_rows),
                                 CHUNK_ROWS):
                out: list[tuple[int, bool, str]] = []  # (line, kept?, json line)
                passed: list[Row] = []
                for item in chunk:
                    summary.rows_in += 1
                    if isinstance(item, BadRow):
                        summary.bad_rows += 1
                        dropped["bad_row"] += 1
                        out.append((item.line, False, dump_line(Rejected(
                            stage="read", reason="bad_row", text=item.text,
                            detail={"error": item.message}, origin=item.origin))))
                        continue
                    hit = rules.check(item.task.instruction)
                    if hit is not None:
                        dropped[hit.reason] += 1
                        out.append((item.line, False, dump_line(Rejected(
                            stage="rules", reason=hit.reason, text=item.task.instruction,
                            detail=hit.detail, id=item.task.id, origin=item.origin))))
                    else:
                        passed.append(item)
                matches: list[Any] = [None] * len(passed)
                if index is not None and passed:
                    texts = [row.task.instruction for row in passed]
                    tokens = [tokenize(text) for text in texts]
                    summary.empty_token_rows += sum(
                        1 for text, toks in zip(texts, tokens, strict=True)
                        if not toks and _has_letters(text)
                    )
                    matches = index.add_if_novel_many(texts, tokens)
                for row, match in zip(passed, matches, strict=True):
                    if match is None:
                        summary.kept += 1
                        record = row.raw if config.output_format == "original" else row.task
                        out.append((row.line, True, dump_line(record)))
                        continue
                    dropped["rouge_l"] += 1
                    origin = "reference" if match.index < len(references) else "kept"
                    out.append((row.line, False, dump_line(Rejected(
                        stage="novelty", reason="rouge_l", text=row.task.instruction,
                        detail={"most_similar": match.text, "score": match.score, "in": origin,
                                "threshold": config.threshold},
                        id=row.task.id, origin=row.origin))))
                out.sort(key=lambda entry: entry[0])
                kept_fh.writelines(line for _, kept, line in out if kept)
                rejected_fh.writelines(line for _, kept, line in out if not kept)
                if on_progress is not None:
                    on_progress(len(chunk))
    except BaseException:
        for path in temp_paths:
            path.unlink(missing_ok=True)
        raise
    if summary.rows_in == 0:
        for path in temp_paths:
            path.unlink(missing_ok=True)
        raise InputError(config.input, "the file has no rows; nothing to filter")
    summary.dropped = dict(dropped.most_common())
    summary.comparisons = index.comparisons if index is not None else 0
    candidates = summary.rows_in - sum(v for k, v in dropped.items() if k != "rouge_l")
    if (config.tokenizer == "rouge" and candidates
            and summary.empty_token_rows / candidates >= EMPTY_TOKEN_WARNING):
        summary.warnings.append(
            f"{summary.empty_token_rows} of {candidates} rows have no [a-z0-9] tokens, so "
            "ROUGE-L scores them 0 and never drops them as duplicates; for non-English text "
            "use --tokenizer unicode"
        )
    summary.seconds = round(time.perf_counter() - started, 3)
    temp_paths[0].replace(summary.kept_path)
    temp_paths[1].replace(summary.rejected_path)
    _write_json(out_dir / "summary.json", summary.model_dump(mode="json"))
    return summary


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
