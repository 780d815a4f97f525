"""Did the model get better? A base model with and without a LoRA adapter, on held-out tasks.

For each variant: (a) the mean loss and perplexity of the reference responses (the loss on the
response tokens only, as in training), (b) greedy responses written next to the references with
ROUGE-L against them (a weak automatic score), and (c) optionally an LLM judge, through any
backend, rating each response on the paper's A-D scale. The default held-out set is the 110
tasks shipped with selfinstruct (data/eval_tasks.jsonl), written for this project in the spirit
of the paper's 252 user-oriented tasks, which `--data` can point at instead.
"""

from __future__ import annotations

import json
import math
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from selfinstruct.atomic import write_json_atomic
from selfinstruct.backends.base import SamplingParams
from selfinstruct.config import EvalConfig
from selfinstruct.errors import SelfInstructError
from selfinstruct.export import Example, to_examples
from selfinstruct.judge import grade_letter, grade_prompt, greedy, open_judge
from selfinstruct.models import resolve_model, training_imports
from selfinstruct.records import read_tasks
from selfinstruct.similarity import rouge_l_fmeasure
from selfinstruct.tokens import rouge_tokenize


class VariantResult(BaseModel):
    name: str
    loss: float
    perplexity: float
    rouge_l: float
    judge: dict[str, int] = Field(default_factory=dict)
    responses_path: str


class EvalSummary(BaseModel):
    examples: int
    variants: list[VariantResult]
    output_dir: str


def _load(base: str, adapter: Path | None) -> tuple[Any, Any]:
    """The base model, once, with the adapter attached when there is one (switched off for the
    base variant), on the GPU when there is one."""
    torch, transformers, peft, _, _ = training_imports()
    gpu = torch.cuda.is_available()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(base)
        model = transformers.AutoModelForCausalLM.from_pretrained(
            base, dtype=torch.bfloat16 if gpu else torch.float32
        )
    except OSError as exc:
        raise SelfInstructError(f"cannot load base model {base!r} ({exc})") from None
    if adapter is not None:
        if not (adapter / "adapter_config.json").exists():
            raise SelfInstructError(
                f"{adapter}: no adapter_config.json; give the adapter/ folder that finetune wrote"
            )
        try:
            model = peft.PeftModel.from_pretrained(model, str(adapter))
        except (RuntimeError, ValueError, KeyError) as exc:
            raise SelfInstructError(
                f"the adapter {adapter} does not match base model {base} ({str(exc)[:200]}); "
                "evaluate it with the base model it was trained on"
            ) from None
    if gpu:
        model.to("cuda")
    model.eval()
    return model, tokenizer


def _variant(model: Any, name: str) -> AbstractContextManager[Any]:
    """The base variant of a model with an adapter is the same weights with the adapter off."""
    if name == "base" and hasattr(model, "disable_adapter"):
        return model.disable_adapter()
    return nullcontext()


def response_loss(model: Any, tokenizer: Any, examples: list[Example]) -> float:
    """Mean loss per response token, the prompt masked out (as in training)."""
    import torch

    total, count = 0.0, 0
    for ex in examples:
        prompt = [{"role": "user", "content": ex.prompt}]
        full = [*prompt, {"role": "assistant", "content": ex.response}]
        prompt_ids = tokenizer.apply_chat_template(
            prompt, add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        full_ids = tokenizer.apply_chat_template(full, tokenize=True, return_dict=True)["input_ids"]
        ids = torch.tensor([full_ids])
        labels = ids.clone()
        labels[0, : len(prompt_ids)] = -100
        n = int((labels != -100).sum()) - 1  # the first label has no prediction before it
        if n <= 0:
            continue
        with torch.no_grad():
            out = model(input_ids=ids.to(model.device), labels=labels.to(model.device))
        total += float(out.loss) * n
        count += n
    return total / count if count else float("nan")


def run_eval(cfg: EvalConfig) -> EvalSummary:
    if not cfg.data.exists():
        raise SelfInstructError(f"{cfg.data}: held-out file not found; pass --data")
    # Every instance, templates chosen by a fixed seed: the same held-out set every time.
    examples = to_examples(read_tasks(cfg.data), seed=0, max_per_task=None).examples
    if cfg.limit is not None:
        examples = examples[: cfg.limit]
    if not examples:
        raise SelfInstructError(f"{cfg.data}: no task has a reference output to evaluate against")
    base = resolve_model(cfg.base_model, "base model")
    cfg.output_dir.mkdir(parents=True, exist_ok=True)
    judge = _judge_backend(cfg)
    try:
        results = _evaluate(cfg, base, examples, judge)
    finally:
        if judge is not None:
            judge.close()
    summary = EvalSummary(examples=len(examples), variants=results, output_dir=str(cfg.output_dir))
    write_json_atomic(cfg.output_dir / "eval_summary.json", summary.model_dump(mode="json"))
    return summary


def _evaluate(
    cfg: EvalConfig, base: str, examples: list[Example], judge: Any
) -> list[VariantResult]:
    from selfinstruct.backends.local import LocalBackend

    variants = ["base"] + (["tuned"] if cfg.adapter else [])
    model, tokenizer = _load(base, cfg.adapter)
    results = []
    for name in variants:
        with _variant(model, name):
            loss = response_loss(model, tokenizer, examples)
            backend = LocalBackend.from_loaded(
                model, tokenizer, name, chat=True, batch_size=cfg.batch_size
            )
            params = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=cfg.max_new_tokens)
            try:
                done = backend.generate(
                    [[{"role": "user", "content": e.prompt}] for e in examples], params
                )
            finally:
                backend.close()
        rows, scores = [], []
        for ex, completion in zip(examples, done, strict=True):
            ref, hyp = rouge_tokenize(ex.response), rouge_tokenize(completion.text)
            score = rouge_l_fmeasure(_lcs(ref, hyp), len(ref), len(hyp))
            scores.append(score)
            rows.append(
                {
                    "task_id": ex.task_id,
                    "prompt": ex.prompt,
                    "reference": ex.response,
                    "response": completion.text,
                    "rouge_l": score,
                }
            )
        grades: dict[str, int] = {}
        if judge is not None:
            prompts = [
                [
                    {
                        "role": "user",
                        "content": grade_prompt(
                            ex.instruction, ex.input, ex.response, str(row["response"])
                        ),
                    }
                ]
                for ex, row in zip(examples, rows, strict=True)
            ]
            verdicts = judge.generate(prompts, greedy(3))
            for row, verdict in zip(rows, verdicts, strict=True):
                row["judge"] = grade_letter(verdict.text)
                grades[row["judge"] or "unparsed"] = grades.get(row["judge"] or "unparsed", 0) + 1
        path = cfg.output_dir / f"{name}.jsonl"
        path.write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
        results.append(
            VariantResult(
                name=name,
                loss=loss,
                perplexity=math.exp(loss) if loss == loss else float("nan"),
                rouge_l=sum(scores) / len(scores),
                judge=grades,
                responses_path=str(path),
            )
        )
    return results


def _lcs(a: list[str], b: list[str]) -> int:
    from rapidfuzz.distance import LCSseq

    return int(LCSseq.similarity(a, b))


def _judge_backend(cfg: EvalConfig) -> Any:
    return open_judge(cfg.judge) if cfg.judge.backend is not None else None
