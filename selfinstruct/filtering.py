"""`selfinstruct filter` as a library call: rule filters, then exact ROUGE-L novelty, one pass.

Rows are streamed in chunks. Each is checked against the rules, then against the reference pool
and every row kept before it (the paper's sequential rule). Kept rows go to `kept.jsonl`, every
dropped row to `rejected.jsonl` with its reason and detail, and the counts to `summary.json`.
Outputs are written to temporary files and renamed into place only when the run succeeds, so a
failed run never leaves half-written results behind.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from selfinstruct.atomic import atomic_writes, write_json_atomic
from selfinstruct.config import FilterConfig
from selfinstruct.errors import InputError, SelfInstructError
from selfinstruct.records import (
    BadRow,
    Rejected,
    dump_line,
    read_rows,
    read_tasks,
    sample_instructions,
)
from selfinstruct.rules import RuleFilter
from selfinstruct.rundir import FilterDir
from selfinstruct.similarity import EncodedBatch, RougeLIndex, WorkerEncoder
from selfinstruct.tokens import document_frequencies

T = TypeVar("T")

CHUNK_ROWS = 4096  # rows per streamed chunk: big enough to amortise the vectorised index work
FIRST_CHUNK_ROWS = 512  # a small first chunk starts the novelty stage sooner
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


def _chunks(items: Iterable[T], size: int, first: int | None = None) -> Iterator[list[T]]:
    iterator = iter(items)
    size_now = first or size
    while chunk := list(islice(iterator, size_now)):
        yield chunk
        size_now = size


def _has_letters(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


@dataclass
class _Chunk:
    """One chunk of input, read, rule-checked and encoded, waiting for the novelty stage."""

    rows_in: int = 0
    bad_rows: int = 0
    empty_token_rows: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    decided: list[tuple[int, bool, str]] = field(default_factory=list)  # (line, kept, json)
    # Rows that passed the rules, in order: their line, id, origin, text, kept-output line.
    lines: list[int] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    origins: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    kept_lines: list[str] = field(default_factory=list)
    tokens: list[list[str]] = field(default_factory=list)
    encoded: EncodedBatch | None = None  # the rows' sequences, for the index in the parent


def _prepare(config: FilterConfig) -> tuple[list[str], dict[str, int]]:
    """The reference pool and token frequencies: deterministic, so each process makes its own."""
    references = [task.instruction for path in config.reference for task in read_tasks(path)]
    frequencies: dict[str, int] = {}
    if config.novelty:
        sample = references + sample_instructions(config.input, FREQUENCY_SAMPLE)
        frequencies = dict(document_frequencies(sample, config.tokenizer))
    return references, frequencies


def _produce(config: FilterConfig) -> Iterator[_Chunk]:
    """Read, validate, rule-check, tokenize and encode the input, a chunk at a time.

    Everything here is independent of the novelty decisions, so it can run in another process,
    with an encoder paired with the index (`similarity.WorkerEncoder`).
    """
    references, frequencies = _prepare(config)
    rules = RuleFilter(config.rules)
    encoder = WorkerEncoder(config.tokenizer, frequencies, references)
    original = config.output_format == "original"
    rows = read_rows(config.input, skip_bad_rows=config.skip_bad_rows)
    for items in _chunks(rows, CHUNK_ROWS, first=FIRST_CHUNK_ROWS):
        chunk = _Chunk(rows_in=len(items))
        for item in items:
            if isinstance(item, BadRow):
                chunk.bad_rows += 1
                chunk.dropped["bad_row"] += 1
                chunk.decided.append(
                    (
                        item.line,
                        False,
                        dump_line(
                            Rejected.of(
                                "read", "bad_row", item.text, origin=item.origin, error=item.message
                            )
                        ),
                    )
                )
                continue
            task = item.task
            hit = rules.check(task.instruction)
            if hit is not None:
                chunk.dropped[hit.reason] += 1
                chunk.decided.append(
                    (
                        item.line,
                        False,
                        dump_line(
                            Rejected.of(
                                "rules",
                                hit.reason,
                                task.instruction,
                                task.id,
                                origin=item.origin,
                                detail=hit.detail,
                            )
                        ),
                    )
                )
                continue
            kept_line = dump_line(item.raw if original else task)
            if not config.novelty:
                chunk.decided.append((item.line, True, kept_line))
                continue
            tokens = encoder.tokenize(task.instruction)
            if not tokens and _has_letters(task.instruction):
                chunk.empty_token_rows += 1
            chunk.lines.append(item.line)
            chunk.ids.append(task.id)
            chunk.origins.append(item.origin)
            chunk.texts.append(task.instruction)
            chunk.kept_lines.append(kept_line)
            chunk.tokens.append(tokens)
        chunk.encoded = encoder.encode(chunk.tokens)
        chunk.tokens = []  # not needed past here: do not send them to the parent
        yield chunk


def _exit_with_parent(parent: int) -> None:
    """Leave when the parent is gone: a killed parent never reads the queue again, and `daemon`
    only covers a parent that exits normally."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _produce_into(queue: Any, config: FilterConfig, parent: int) -> None:
    """Worker process body: stream `_produce` chunks into `queue`, then a final message."""
    _exit_with_parent(parent)
    try:
        for chunk in _produce(config):
            queue.put(("chunk", chunk))
    except SelfInstructError as exc:
        queue.put(("error", (str(exc), exc.exit_code)))
    except BaseException:  # the traceback goes to the parent, which re-raises it
        queue.put(("crash", traceback.format_exc()))
    else:
        queue.put(("done", None))


def _start_producer(config: FilterConfig) -> Iterator[_Chunk]:
    """Start `_produce` in a second process now; returns an iterator over its chunks.

    Reading and tokenizing then overlap the novelty stage, which must stay sequential.
    """
    # fork: the child only reads files, computes and writes to the queue, so it is safe, and
    # unlike spawn it does not re-import the caller's __main__ (scripts need no main guard).
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    queue = ctx.Queue(maxsize=4)  # a few chunks ahead is enough; more only costs memory
    worker = ctx.Process(target=_produce_into, args=(queue, config, os.getpid()), daemon=True)
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork while other threads (a progress bar) run; see above.
        warnings.simplefilter("ignore", DeprecationWarning)
        worker.start()
    return _consume(queue, worker)


def _consume(queue: Any, worker: Any) -> Iterator[_Chunk]:
    try:
        while True:
            kind, payload = queue.get()
            if kind == "chunk":
                yield payload
            elif kind == "done":
                break
            elif kind == "error":
                message, code = payload
                failure = SelfInstructError(message)
                failure.exit_code = code
                raise failure
            else:
                raise RuntimeError(f"the filter worker process failed:\n{payload}")
    finally:
        if worker.is_alive():
            worker.terminate()
        worker.join()


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
        input=str(config.input),
        output_dir=str(out_dir),
        kept_path=str(FilterDir(out_dir).kept),
        rejected_path=str(FilterDir(out_dir).rejected),
        threshold=config.threshold,
        tokenizer=config.tokenizer,
    )
    workers = config.workers if config.workers is not None else min(2, os.cpu_count() or 1)
    # Start the producer first: it prepares its own copy of what follows, in parallel.
    chunks = _start_producer(config) if workers > 1 else _produce(config)
    references, frequencies = _prepare(config)
    summary.reference_rows = len(references)
    novelty = _Novelty(config, references, frequencies) if config.novelty else None
    dropped: Counter[str] = Counter()
    try:
        # Both files appear only when the pass succeeds; a failure leaves neither behind.
        with atomic_writes(Path(summary.kept_path), Path(summary.rejected_path)) as (
            kept_fh,
            rejected_fh,
        ):
            for chunk in chunks:
                if novelty is not None:
                    novelty.decide(chunk)
                summary.rows_in += chunk.rows_in
                summary.bad_rows += chunk.bad_rows
                summary.empty_token_rows += chunk.empty_token_rows
                dropped.update(chunk.dropped)
                summary.kept += sum(1 for _, kept, _ in chunk.decided if kept)
                chunk.decided.sort(key=lambda entry: entry[0])
                kept_fh.writelines(line for _, kept, line in chunk.decided if kept)
                rejected_fh.writelines(line for _, kept, line in chunk.decided if not kept)
                if on_progress is not None:
                    on_progress(chunk.rows_in)
            if summary.rows_in == 0:
                raise InputError(config.input, "the file has no rows; nothing to filter")
    except OSError as exc:
        raise SelfInstructError(
            f"{out_dir}: cannot write the outputs ({exc.strerror or exc}); "
            "free some space or choose another --output-dir"
        ) from None
    summary.dropped = dict(dropped.most_common())
    summary.comparisons = novelty.index.comparisons if novelty is not None else 0
    candidates = summary.rows_in - sum(v for k, v in dropped.items() if k != "rouge_l")
    if (
        config.tokenizer == "rouge"
        and candidates
        and summary.empty_token_rows / candidates >= EMPTY_TOKEN_WARNING
    ):
        summary.warnings.append(
            f"{summary.empty_token_rows} of {candidates} rows have no [a-z0-9] tokens, so "
            "ROUGE-L scores them 0 and never drops them as duplicates; for non-English text "
            "use --tokenizer unicode"
        )
    summary.seconds = round(time.perf_counter() - started, 3)
    write_json_atomic(FilterDir(out_dir).summary, summary.model_dump(mode="json"))
    return summary


class _Novelty:
    """The novelty stage: the index plus the JSON of every pool text, for rejected lines."""

    def __init__(self, config: FilterConfig, references: list[str], frequencies: dict[str, int]):
        # The pool itself is not deduplicated: it is the user's.
        self.index = RougeLIndex.for_pool(
            config.threshold, config.tokenizer, frequencies, references
        )
        self.n_references = len(references)
        self.threshold = config.threshold

    def decide(self, chunk: _Chunk) -> None:
        """Run the novelty stage on a chunk's remaining rows; appends them to `chunk.decided`."""
        if not chunk.texts:
            return
        assert chunk.encoded is not None
        matches = self.index.add_if_novel_encoded(chunk.texts, chunk.encoded)
        pool, n_ref, decided = self.index.texts, self.n_references, chunk.decided
        for k, match in enumerate(matches):
            if match is None:
                decided.append((chunk.lines[k], True, chunk.kept_lines[k]))
                continue
            chunk.dropped["rouge_l"] += 1
            line = dump_line(
                Rejected.of(
                    "novelty",
                    "rouge_l",
                    chunk.texts[k],
                    chunk.ids[k],
                    origin=chunk.origins[k],
                    detail={
                        "most_similar": pool[match.index],
                        "score": match.score,
                        "in": "reference" if match.index < n_ref else "kept",
                        "threshold": self.threshold,
                    },
                )
            )
            decided.append((chunk.lines[k], False, line))
