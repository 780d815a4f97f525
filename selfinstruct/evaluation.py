"""Did the model get better? A base model, alone and with LoRA adapters, on held-out tasks.

For each variant (the base, then each adapter): (a) the loss of the reference responses, on the
response tokens only, as in training; (b) greedy responses next to the references, with ROUGE-L
against them (a weak automatic score), whether each response ended by itself or ran to the token
limit (base models ramble), and its length; (c) optionally an LLM judge, through any backend,
rating each response on the paper's A-D scale. Every figure comes with a 95% bootstrap interval
over the items, and every pair of variants with a paired interval of their difference.

Prompts are laid out in one format for every variant (`prompt_format.py`): the one the adapters
were trained with, so the base is asked exactly as the tuned models are. Responses come from vLLM
where it is installed (one engine, the adapters as vLLM LoRA adapters), else from transformers;
the losses always from transformers, with the adapters switched on and off on one loaded model.
The default held-out set is the 110 tasks shipped with selfinstruct (data/eval_tasks.jsonl),
written in the spirit of the paper's 252 user-oriented tasks, which `--data` can point at.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import math
import time
from contextlib import AbstractContextManager, nullcontext
from itertools import combinations
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from selfinstruct import prompt_format
from selfinstruct.atomic import write_json_atomic
from selfinstruct.backends.base import Completion, SamplingParams, Usage
from selfinstruct.config import EvalConfig, VLLMOptions
from selfinstruct.errors import SelfInstructError
from selfinstruct.export import Example, source_tasks, to_examples
from selfinstruct.intervals import Interval, bootstrap, paired_difference
from selfinstruct.judge import grade_letter, grade_prompt, greedy, open_judge
from selfinstruct.models import TRAINING_HINT, inference_imports, resolve_model
from selfinstruct.rundir import RunDir
from selfinstruct.similarity import rouge_l_fmeasure
from selfinstruct.tokens import rouge_tokenize

METRICS = ("rouge_l", "loss", "ended", "response_words")


class Variant(BaseModel):
    name: str
    adapter: str | None = None  # None: the base model


class ItemResult(BaseModel):
    """One held-out example under one variant (a line of NAME.jsonl)."""

    task_id: str
    prompt: str
    reference: str
    response: str
    rouge_l: float
    loss: float  # mean loss per reference token
    loss_tokens: int
    ended: bool  # stopped by itself, not at the token limit
    response_tokens: int
    response_words: int
    judge: str | None = None


class VariantResult(BaseModel):
    name: str
    adapter: str | None = None
    loss: float
    perplexity: float
    rouge_l: float
    ended: float = 0.0  # share of responses that ended by themselves
    response_words: float = 0.0
    response_tokens: float = 0.0
    intervals: dict[str, Interval] = Field(default_factory=dict)
    judge: dict[str, int] = Field(default_factory=dict)
    responses_path: str


class Difference(BaseModel):
    """`variant` minus `against`, on the same items: a paired bootstrap interval per metric."""

    variant: str
    against: str
    metrics: dict[str, Interval]


class TrainedOn(BaseModel):
    """What an adapter was tuned on, from the summary finetune wrote beside it."""

    data: str
    tasks: int
    examples: int
    steps: int


class EvalSummary(BaseModel):
    examples: int
    variants: list[VariantResult]
    output_dir: str
    data: str = ""
    base_model: str = ""
    prompt_format: str = ""
    engine: str = ""
    max_new_tokens: int = 0
    differences: list[Difference] = Field(default_factory=list)
    trained_on: dict[str, TrainedOn] = Field(default_factory=dict)  # by variant
    seconds: dict[str, float] = Field(default_factory=dict)

    def difference(self, variant: str, against: str) -> Difference | None:
        return next(
            (d for d in self.differences if d.variant == variant and d.against == against), None
        )


def variants(adapters: list[str]) -> list[Variant]:
    """The base, then one variant per `--adapter PATH` or `NAME=PATH`. A lone unnamed adapter is
    "tuned"; several are named after their folder (the finetune output above adapter/)."""
    found = [Variant(name="base")]
    for spec in adapters:
        name, sep, path = spec.partition("=")
        # A path may hold "=" itself (lr=2e-4/adapter): an existing path is a path.
        if not sep or Path(spec).exists() or "/" in name:
            name, path = "", spec
        folder = Path(path)
        if not (folder / "adapter_config.json").exists():
            raise SelfInstructError(
                f"{folder}: no adapter_config.json; give the adapter/ folder that finetune wrote"
            )
        if not name:
            name = (
                "tuned"
                if len(adapters) == 1
                else (folder.parent.name if folder.name == "adapter" else folder.name)
            )
        if any(v.name == name for v in found):
            raise SelfInstructError(
                f"two variants are named {name!r}; name them with --adapter NAME=PATH"
            )
        found.append(Variant(name=name, adapter=str(folder)))
    return found


def examples_of(data: Path, limit: int | None) -> list[Example]:
    """Every instance of the held-out file (or run directory), in order."""
    if not data.exists():
        raise SelfInstructError(f"{data}: held-out file not found; pass --data")
    examples = to_examples(source_tasks(data), seed=0, max_per_task=None).examples
    if limit is not None:
        examples = examples[:limit]
    if not examples:
        raise SelfInstructError(f"{data}: no task has a reference output to evaluate against")
    return examples


def chosen_format(cfg: EvalConfig, tokenizer: Any, base: str, found: list[Variant]) -> str:
    """The layout every variant is asked in: the one asked for, else the adapters' own (they
    must agree), else what the tokenizer allows."""
    trained = {v.name: prompt_format.recorded(Path(v.adapter)) for v in found if v.adapter}
    known = {fmt for fmt in trained.values() if fmt is not None}
    if cfg.prompt_format != "auto":
        return prompt_format.resolve(cfg.prompt_format, tokenizer, base)
    if len(known) > 1:
        raise SelfInstructError(
            f"the adapters were trained with different prompt formats ({trained}); evaluate "
            "them apart, or choose one with --prompt-format"
        )
    return known.pop() if known else prompt_format.resolve("auto", tokenizer, base)


def run_eval(cfg: EvalConfig) -> EvalSummary:
    started = time.perf_counter()
    examples = examples_of(cfg.data, cfg.limit)
    found = variants(cfg.adapter)
    base = resolve_model(cfg.base_model, "base model")
    engine = _engine(cfg.engine)
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    model, tokenizer = _load(base, found)
    fmt = chosen_format(cfg, tokenizer, base, found)
    done = ArmCache(cfg, base, fmt, engine)
    clock = time.perf_counter()
    losses = {}
    for v in found:
        losses[v.name] = done.losses(v)
        if losses[v.name] is None:
            losses[v.name] = _losses(model, tokenizer, fmt, examples, v)
            done.keep_losses(v, losses[v.name])
    seconds["loss"] = round(time.perf_counter() - clock, 2)
    clock = time.perf_counter()
    written = {v.name: got for v in found if (got := done.completions(v)) is not None}
    missing = [v for v in found if v.name not in written]
    if missing and engine == "transformers":
        for v in missing:
            written[v.name] = _generate_transformers(model, tokenizer, fmt, examples, v, cfg)
            done.keep_completions(v, written[v.name])
    elif missing:
        del model
        gc.collect()  # the engine loads its own copy of the weights, and checks free memory
        _release_gpu_cache()
        written |= _generate_vllm(base, tokenizer, fmt, examples, missing, cfg, done)
    seconds["generate"] = round(time.perf_counter() - clock, 2)
    judge = open_judge(cfg.judge) if cfg.judge.backend is not None else None
    try:
        results, items = _score(cfg, fmt, tokenizer, examples, found, losses, written, judge)
    finally:
        if judge is not None:
            judge.close()
    seconds["total"] = round(time.perf_counter() - started, 2)
    summary = EvalSummary(
        examples=len(examples),
        variants=results,
        output_dir=str(cfg.output_dir),
        data=str(cfg.data),
        base_model=str(cfg.base_model or base),
        prompt_format=fmt,
        engine=engine,
        max_new_tokens=cfg.max_new_tokens,
        differences=differences(items, cfg.bootstrap_samples),
        trained_on=trained_on(found),
        seconds=seconds,
    )
    write_json_atomic(cfg.output_dir / "eval_summary.json", summary.model_dump(mode="json"))
    link_to_runs(summary)
    return summary


class ArmCache:
    """Each variant's losses and responses, kept as soon as they exist (`arms/NAME.json` in the
    output folder), so an eval stopped halfway redoes only the variants it had not finished.
    An entry counts only for the same data, adapter files, base model, format and settings."""

    def __init__(self, cfg: EvalConfig, base: str, fmt: str, engine: str) -> None:
        self.folder = cfg.output_dir / "arms"
        self.settings = {
            "data": str(cfg.data),
            "limit": cfg.limit,
            "base": base,
            "format": fmt,
            "engine": engine,
            "max_new_tokens": cfg.max_new_tokens,
        }

    def _key(self, v: Variant) -> dict[str, Any]:
        stamp = None
        if v.adapter is not None:
            weights = sorted(Path(v.adapter).glob("adapter_model.*"))
            stamp = [(w.name, w.stat().st_size, w.stat().st_mtime_ns) for w in weights]
        return {**self.settings, "adapter": v.adapter, "weights": stamp}

    def _read(self, v: Variant) -> dict[str, Any]:
        path = self.folder / f"{v.name}.json"
        if not path.exists():
            return {}
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            return {}
        return kept if kept.get("key") == json.loads(json.dumps(self._key(v))) else {}

    def _write(self, v: Variant, **fields: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        kept = self._read(v) | fields | {"key": self._key(v)}
        write_json_atomic(self.folder / f"{v.name}.json", kept)

    def losses(self, v: Variant) -> list[tuple[float, int]] | None:
        got = self._read(v).get("losses")
        return None if got is None else [(float(a), int(b)) for a, b in got]

    def keep_losses(self, v: Variant, losses: list[tuple[float, int]]) -> None:
        self._write(v, losses=losses)

    def completions(self, v: Variant) -> list[Completion] | None:
        got = self._read(v).get("completions")
        return None if got is None else [Completion.model_validate(c) for c in got]

    def keep_completions(self, v: Variant, completions: list[Completion]) -> None:
        self._write(v, completions=[c.model_dump(mode="json") for c in completions])


def _release_gpu_cache() -> None:
    """Hand the freed tensors' GPU memory back to the driver (PyTorch's allocator keeps it),
    so that vLLM, which checks the free memory when it starts, finds it."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _engine(asked: str) -> str:
    if asked == "auto":
        return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"
    if asked == "vllm" and importlib.util.find_spec("vllm") is None:
        from selfinstruct.backends.vllm_offline import VLLM_HINT

        raise SelfInstructError(f"--engine vllm needs vLLM: {VLLM_HINT}")
    return asked


def trained_on(found: list[Variant]) -> dict[str, TrainedOn]:
    """What each adapter was tuned on, from the training summary finetune wrote beside it."""
    data = {}
    for v in found:
        summary = Path(v.adapter).parent / "training_summary.json" if v.adapter else None
        if summary is None or not summary.exists():
            continue
        written = json.loads(summary.read_text(encoding="utf-8"))
        if written.get("config", {}).get("data"):
            data[v.name] = TrainedOn(
                data=str(written["config"]["data"]),
                tasks=int(written.get("tasks", 0)),
                examples=int(written.get("examples", 0)),
                steps=int(written.get("steps", 0)),
            )
    return data


def link_to_runs(summary: EvalSummary) -> list[Path]:
    """Note this eval in each run directory an adapter was tuned on, so that `report RUN`
    shows it beside the data that made the model."""
    linked = []
    for run in sorted({Path(t.data) for t in summary.trained_on.values()}):
        files = RunDir(run)
        if run.is_dir() and files.tasks.exists():
            line = {"eval": str(Path(summary.output_dir).resolve())}
            with files.evals.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line) + "\n")
            linked.append(run)
    return linked


def linked_evals(run: Path) -> list[EvalSummary]:
    """The evals noted in a run directory whose summaries still exist, each once."""
    files = RunDir(run)
    if not files.evals.exists():
        return []
    seen: dict[str, EvalSummary] = {}
    for line in files.evals.read_text(encoding="utf-8").splitlines():
        try:
            folder = Path(json.loads(line)["eval"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
        path = folder / "eval_summary.json"
        if path.exists():
            seen[str(folder)] = EvalSummary.model_validate_json(path.read_text(encoding="utf-8"))
    return list(seen.values())


# -- the model: loaded once, adapters switched --------------------------------------------


def _load(base: str, found: list[Variant]) -> tuple[Any, Any]:
    """The base model, once, with every adapter attached under its variant's name, on the GPU
    when there is one."""
    torch, transformers = inference_imports()
    try:
        import peft
    except ImportError:
        raise SelfInstructError(f"eval needs peft for the adapters: {TRAINING_HINT}") from None
    gpu = torch.cuda.is_available()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(base)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            base, dtype=torch.bfloat16 if gpu else torch.float32
        )
    except OSError as exc:
        raise SelfInstructError(f"cannot load base model {base!r} ({exc})") from None
    for v in found:
        if v.adapter is None:
            continue
        try:
            if isinstance(model, peft.PeftModel):
                model.load_adapter(v.adapter, adapter_name=v.name)
            else:
                model = peft.PeftModel.from_pretrained(model, v.adapter, adapter_name=v.name)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise SelfInstructError(
                f"the adapter {v.adapter} does not match base model {base} ({str(exc)[:200]}); "
                "evaluate it with the base model it was trained on"
            ) from None
    if gpu:
        model.to("cuda")
    model.eval()
    return model, tokenizer


def _variant(model: Any, v: Variant) -> AbstractContextManager[Any]:
    """The base is the same weights with every adapter off; a tuned variant its adapter on."""
    if not hasattr(model, "disable_adapter"):
        return nullcontext()
    if v.adapter is None:
        return model.disable_adapter()
    model.set_adapter(v.name)
    return nullcontext()


def item_loss(model: Any, tokenizer: Any, fmt: str, example: Example) -> tuple[float, int]:
    """Summed loss over the reference's tokens and how many there are (the prompt masked out,
    exactly as training masks it)."""
    import torch

    full_ids, prompt_len = prompt_format.tokenized(tokenizer, fmt, example)  # type: ignore[arg-type]
    ids = torch.tensor([full_ids])
    labels = ids.clone()
    labels[0, :prompt_len] = -100
    n = int((labels[0, 1:] != -100).sum())  # the first token has no prediction before it
    if n <= 0:
        return 0.0, 0
    with torch.no_grad():
        out = model(input_ids=ids.to(model.device), labels=labels.to(model.device))
    return float(out.loss) * n, n


def response_loss(model: Any, tokenizer: Any, examples: list[Example], fmt: str = "chat") -> float:
    """Mean loss per reference token over `examples`."""
    sums = [item_loss(model, tokenizer, fmt, e) for e in examples]
    count = sum(n for _, n in sums)
    return sum(s for s, _ in sums) / count if count else float("nan")


def _losses(
    model: Any, tokenizer: Any, fmt: str, examples: list[Example], v: Variant
) -> list[tuple[float, int]]:
    with _variant(model, v):
        return [item_loss(model, tokenizer, fmt, e) for e in examples]


# -- responses ----------------------------------------------------------------------------


def _greedy(max_tokens: int) -> SamplingParams:
    return SamplingParams(temperature=0.0, top_p=1.0, max_tokens=max_tokens)


def _generate_transformers(
    model: Any, tokenizer: Any, fmt: str, examples: list[Example], v: Variant, cfg: EvalConfig
) -> list[Completion]:
    from selfinstruct.backends.local import LocalBackend

    with _variant(model, v):
        backend = LocalBackend.from_loaded(
            model, tokenizer, v.name, chat=fmt == "chat", batch_size=cfg.batch_size
        )
        try:
            return backend.generate(
                [prompt_format.prompt(fmt, e) for e in examples],  # type: ignore[arg-type]
                _greedy(cfg.max_new_tokens),
            )
        finally:
            backend.close()


def _generate_vllm(
    base: str,
    tokenizer: Any,
    fmt: str,
    examples: list[Example],
    found: list[Variant],
    cfg: EvalConfig,
    done: ArmCache,
) -> dict[str, list[Completion]]:
    """Every variant's greedy responses from vLLM. On a GPU, one engine serves them all, the
    adapters as LoRA requests. On a CPU, vLLM's LoRA kernels are plain torch that gather a
    weight matrix per token (a 270M model's 252 answers took over 25 minutes per adapter
    against 7 for the base), so each adapter is merged into a copy of the base and served as a
    plain model. Each prompt is given as the token ids training saw before the answer, so no
    template or BOS is applied twice."""
    import torch

    from selfinstruct.backends.vllm_offline import VLLMBackend, to_vllm_params

    prompts = []
    for e in examples:
        ids, prompt_len = prompt_format.tokenized(tokenizer, fmt, e)  # type: ignore[arg-type]
        prompts.append({"prompt_token_ids": ids[:prompt_len]})
    written: dict[str, list[Completion]] = {}

    def serve(model: str, variants: list[Variant], lora: dict[str, Any]) -> None:
        backend = VLLMBackend(model, VLLMOptions(), chat=False, **lora)
        params = to_vllm_params(
            backend._vllm, _greedy(cfg.max_new_tokens), seeded=not backend.on_cpu
        )
        try:
            for v in variants:
                request = None
                if lora and v.adapter is not None:
                    from vllm.lora.request import LoRARequest

                    request = LoRARequest(v.name, found.index(v) + 1, v.adapter)
                outputs = backend.llm.generate(
                    prompts, params, lora_request=request, use_tqdm=False
                )
                written[v.name] = [_completion(o) for o in outputs]
                done.keep_completions(v, written[v.name])
        finally:
            backend.close()
            del backend
            gc.collect()

    adapters = [v for v in found if v.adapter]
    if torch.cuda.is_available() or not adapters:
        lora: dict[str, Any] = {}
        if adapters:
            ranks = [
                json.loads((Path(v.adapter) / "adapter_config.json").read_text())["r"]  # type: ignore[arg-type]
                for v in adapters
            ]
            # vLLM accepts these ranks; an adapter's rank must not exceed the one declared.
            rank = next((r for r in (8, 16, 32, 64, 128, 256, 320, 512) if r >= max(ranks)), 512)
            lora = {"enable_lora": True, "max_lora_rank": rank, "max_loras": 1}
        serve(base, found, lora)
        return written
    import tempfile

    plain = [v for v in found if v.adapter is None]
    if plain:
        serve(base, plain, {})
    for v in adapters:
        with tempfile.TemporaryDirectory(prefix=f"selfinstruct-merged-{v.name}-") as folder:
            merge_adapter(base, v.adapter, Path(folder))  # type: ignore[arg-type]
            serve(folder, [v], {})
    return written


def merge_adapter(base: str, adapter: str, folder: Path) -> None:
    """The base model with the LoRA adapter folded into its weights, saved with the base's
    tokenizer in `folder` (what a plain engine can serve)."""
    import peft

    torch, transformers = inference_imports()
    model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = peft.PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(base).save_pretrained(folder)
    del model, merged
    gc.collect()


def _completion(output: Any) -> Completion:
    first = output.outputs[0]
    return Completion(
        text=first.text,
        finish_reason="length" if first.finish_reason == "length" else "stop",
        usage=Usage(
            prompt_tokens=len(output.prompt_token_ids or []),
            completion_tokens=len(first.token_ids or []),
        ),
    )


# -- scores -------------------------------------------------------------------------------


def _rouge(reference: str, response: str) -> float:
    from rapidfuzz.distance import LCSseq

    ref, hyp = rouge_tokenize(reference), rouge_tokenize(response)
    return rouge_l_fmeasure(int(LCSseq.similarity(ref, hyp)), len(ref), len(hyp))


def _score(
    cfg: EvalConfig,
    fmt: str,
    tokenizer: Any,
    examples: list[Example],
    found: list[Variant],
    losses: dict[str, list[tuple[float, int]]],
    written: dict[str, list[Completion]],
    judge: Any,
) -> tuple[list[VariantResult], dict[str, list[ItemResult]]]:
    results, items = [], {}
    for v in found:
        rows = []
        for ex, (loss_sum, n), done in zip(examples, losses[v.name], written[v.name], strict=True):
            shown = prompt_format.prompt(fmt, ex)  # type: ignore[arg-type]
            rows.append(
                ItemResult(
                    task_id=ex.task_id,
                    prompt=shown if isinstance(shown, str) else shown[-1]["content"],
                    reference=ex.response,
                    response=done.text,
                    rouge_l=_rouge(ex.response, done.text),
                    loss=loss_sum / n if n else float("nan"),
                    loss_tokens=n,
                    ended=done.finish_reason != "length",
                    response_tokens=done.usage.completion_tokens,
                    response_words=len(done.text.split()),
                )
            )
        grades = _judge(judge, examples, rows) if judge is not None else {}
        path = cfg.output_dir / f"{v.name}.jsonl"
        path.write_text("".join(r.model_dump_json() + "\n" for r in rows), encoding="utf-8")
        items[v.name] = rows
        loss = _loss_interval(rows, cfg.bootstrap_samples)
        intervals = {
            "rouge_l": bootstrap([r.rouge_l for r in rows], samples=cfg.bootstrap_samples),
            "loss": loss,
            "ended": bootstrap([float(r.ended) for r in rows], samples=cfg.bootstrap_samples),
            "response_words": bootstrap(
                [r.response_words for r in rows], samples=cfg.bootstrap_samples
            ),
        }
        results.append(
            VariantResult(
                name=v.name,
                adapter=v.adapter,
                loss=loss.estimate,
                perplexity=math.exp(loss.estimate) if loss.estimate == loss.estimate else math.nan,
                rouge_l=intervals["rouge_l"].estimate,
                ended=intervals["ended"].estimate,
                response_words=intervals["response_words"].estimate,
                response_tokens=sum(r.response_tokens for r in rows) / len(rows),
                intervals=intervals,
                judge=grades,
                responses_path=str(path),
            )
        )
    return results, items


def _loss_parts(rows: list[ItemResult]) -> tuple[list[float], list[float]]:
    """Summed loss and token count per item: the pooled loss is their ratio."""
    kept = [r for r in rows if r.loss_tokens]
    return [r.loss * r.loss_tokens for r in kept], [float(r.loss_tokens) for r in kept]


def _loss_interval(rows: list[ItemResult], samples: int) -> Interval:
    num, den = _loss_parts(rows)
    if not num:
        return Interval(estimate=math.nan, low=math.nan, high=math.nan)
    return bootstrap(num, den, samples=samples)


def _parts(rows: list[ItemResult], metric: str) -> tuple[list[float], list[float] | None]:
    if metric == "loss":
        return [r.loss * r.loss_tokens for r in rows], [float(r.loss_tokens) for r in rows]
    return [float(getattr(r, metric)) for r in rows], None


def differences(items: dict[str, list[ItemResult]], samples: int) -> list[Difference]:
    """Every later variant against every earlier one (the base first), paired by item."""
    found = []
    for against, variant in combinations(list(items), 2):
        metrics = {
            m: paired_difference(
                _parts(items[against], m), _parts(items[variant], m), samples=samples
            )
            for m in METRICS
            if m != "loss" or all(r.loss_tokens for r in items[against] + items[variant])
        }
        found.append(Difference(variant=variant, against=against, metrics=metrics))
    return found


def _judge(judge: Any, examples: list[Example], rows: list[ItemResult]) -> dict[str, int]:
    prompts = [
        [
            {
                "role": "user",
                "content": grade_prompt(ex.instruction, ex.input, ex.response, row.response),
            }
        ]
        for ex, row in zip(examples, rows, strict=True)
    ]
    grades: dict[str, int] = {}
    for row, verdict in zip(rows, judge.generate(prompts, greedy(3)), strict=True):
        row.judge = grade_letter(verdict.text)
        grades[row.judge or "unparsed"] = grades.get(row.judge or "unparsed", 0) + 1
    return grades
