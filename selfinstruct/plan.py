"""The bill before the run: what a target of N tasks will take, projected from a pilot.

What a run costs depends on things only the model shows: how many instructions one prompt
yields, how many tokens each stage's requests take, how many candidates the later stages drop,
and how many the novelty filter rejects, which rises as the pool fills (a new instruction has
more earlier ones to resemble). A plan reads a run directory (a pilot's, or any run's), one record
per committed instruction prompt, and projects:

- novelty: the share of candidates rejected as near-duplicates, a logistic in log(pool size)
  fitted to the pilot's prompts, its slope drawn toward the one measured on longer runs
  (`PRIOR_SLOPE`: a pilot spans too small a range of pool sizes to show it alone);
- the instruction prompts needed to grow the pool to the target, integrating the falling yield;
- every stage's requests and tokens from the pilot's per-prompt and per-candidate means;
- cost from the price table, wall time from the pilot's seconds per request;

each with a 95% interval from a bootstrap over the pilot's prompts (the slope drawn from its
prior each time). The pilot is a real run in the real run directory, so the run it plans resumes
from it and pays for nothing twice.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from selfinstruct.config import GenerateConfig, PlanConfig
from selfinstruct.errors import OverBudgetError, SelfInstructError
from selfinstruct.keys import RequestKey
from selfinstruct.manifest import RunManifest
from selfinstruct.pricing import Price, price_for
from selfinstruct.records import Rejected, read_tasks
from selfinstruct.rundir import RunDir
from selfinstruct.store import CommitMarker, EventLog, JournalEntry

INSTRUCTIONS = "instructions"
# Rejects that happen before the novelty filter sees a candidate, or are single instances.
_BEFORE_NOVELTY = {"parse", "rules"}
_NOT_WHOLE = {"instance"}
# How fast the novelty filter's rejects rise with log(pool size), in logit per unit of log pool,
# and the spread around it (bench/novelty_growth.py, docs/benchmarks.md "Planning a run"): the
# neighbourhood of a new instruction in Alpaca's 52K fills at 0.30-0.39 (neighbours above 0.6
# and 0.5, pool 675 to 40K); Gemma 3 270M's own run fell at -0.34 over pool 175-693. A pilot's
# own prompts move the slope only as far as their data allows.
PRIOR_SLOPE = 0.3
PRIOR_SLOPE_SD = 0.35
MIN_PROMPTS = 5  # fewer committed prompts than this plan nothing
BOOTSTRAP = 400


@dataclass
class PromptRecord:
    """What one committed instruction prompt took and gave."""

    prompt: int
    pool: int  # machine tasks in the pool before it (seeds not counted)
    accepted: int
    candidates: int = 0  # instructions that reached the novelty filter
    novelty_rejected: int = 0
    requests: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    prompt_tokens: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    completion_tokens: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class Pilot(BaseModel):
    """What the plan was made from."""

    run_dir: str
    prompts: int  # committed instruction prompts
    accepted: int
    seeds: int
    requests: int  # journaled, committed prompts or not
    prompt_tokens: int
    completion_tokens: int
    seconds: float | None  # the loop's wall time, when the run recorded it
    concurrency: int | None = None


class Estimate(BaseModel):
    value: float
    low: float
    high: float

    @classmethod
    def of(cls, central: float, draws: np.ndarray) -> Estimate:
        draws = draws[np.isfinite(draws)]
        if draws.size == 0:
            return cls(value=central, low=central, high=central)
        low, high = np.percentile(draws, [2.5, 97.5])
        low, high = min(float(low), central), max(float(high), central)
        return cls(value=float(central), low=low, high=high)

    def scaled(self, factor: float, plus: float = 0.0) -> Estimate:
        """The same figure in other units (x factor), plus a known amount."""
        return Estimate(
            value=self.value * factor + plus,
            low=self.low * factor + plus,
            high=self.high * factor + plus,
        )

    def text(self, digits: int = 0, unit: str = "") -> str:
        def f(x: float) -> str:
            return f"{x:,.{digits}f}{unit}" if digits or abs(x) < 1e4 else compact(x)

        return f"{f(self.value)} [{f(self.low)}-{f(self.high)}]"


class StagePlan(BaseModel):
    stage: str
    requests: Estimate
    prompt_tokens: Estimate
    completion_tokens: Estimate
    cost_usd: Estimate | None = None


class NoveltyFit(BaseModel):
    """Share of candidates the novelty filter rejects: logistic(intercept + slope * (log(seeds +
    pool) - center))."""

    intercept: float
    slope: float
    center: float
    prior_slope: float = PRIOR_SLOPE
    prior_sd: float = PRIOR_SLOPE_SD

    def rate(self, pool_with_seeds: np.ndarray | float) -> np.ndarray | float:
        z = self.intercept + self.slope * (np.log(pool_with_seeds) - self.center)
        return 1.0 / (1.0 + np.exp(-z))


class RunPlan(BaseModel):
    """What reaching `target` tasks takes: the whole run's figures (the pilot's spend included)
    and what is left to spend."""

    target: int
    model: str
    backend: str
    pilot: Pilot
    reachable: bool = True
    message: str = ""
    prompts: Estimate  # instruction prompts, the whole run
    accepted_at_prompts: Estimate  # tasks accepted after prompts.value prompts
    stages: list[StagePlan] = Field(default_factory=list)
    total: StagePlan
    remaining: StagePlan  # beyond what the run has spent so far
    hours: Estimate | None = None  # wall hours of the whole run
    remaining_hours: Estimate | None = None
    price: Price | None = None
    novelty: NoveltyFit
    novelty_now: float  # projected novelty reject share at the pilot's pool
    novelty_at_target: Estimate

    def headline(self) -> str:
        parts = [
            f"{self.total.requests.text()} requests",
            f"{self.total.prompt_tokens.text()} prompt + "
            f"{self.total.completion_tokens.text()} completion tokens",
        ]
        if self.total.cost_usd is not None:
            parts.append(f"${self.total.cost_usd.text(2)}")
        if self.hours is not None:
            parts.append(f"{self.hours.text(2)} h")
        return ", ".join(parts)


def compact(x: float) -> str:
    """1,234 / 12.3k / 1.23M: a figure short enough for a table cell."""
    if abs(x) >= 1e6:
        return f"{x / 1e6:.3g}M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.3g}k"
    return f"{x:,.0f}"


# -- reading a run ---------------------------------------------------------------------------


def read_pilot(
    run_dir: Path, seeds: int, upto: int | None = None
) -> tuple[list[PromptRecord], Pilot]:
    """One record per committed instruction prompt of the run at `run_dir`, and its totals;
    with `upto`, only its first `upto` prompts (the run as it stood then: to check a plan made
    from a run's beginning against the rest of it)."""
    files = RunDir(run_dir)
    if not files.requests.exists() or not files.commits.exists():
        raise SelfInstructError(
            f"{run_dir}: no run to plan from (requests.jsonl and commits.jsonl are missing); "
            "run `selfinstruct plan` without --from-run to make a pilot there"
        )
    commits = EventLog.read(files.commits, CommitMarker.model_validate, "a commit marker")
    journal = EventLog.read(files.requests, JournalEntry.model_validate, "a journal entry")
    if upto is not None:
        commits = [m for m in commits if m.prompt < upto]
        journal = [e for e in journal if (e.key or RequestKey.parse(e.id)).prompt < upto]
    rejected = EventLog.read(files.rejected, Rejected.model_validate, "a rejected record")
    records: dict[int, PromptRecord] = {}
    pool = 0
    for marker in commits:
        records[marker.prompt] = PromptRecord(marker.prompt, pool, marker.accepted)
        pool += marker.accepted
    passed: dict[int, set[int]] = defaultdict(set)
    for entry in journal:
        key = entry.key or RequestKey.parse(entry.id)
        record = records.get(key.prompt)
        if record is None:
            continue  # in flight when the run stopped: spent, counted in the totals only
        record.requests[key.stage] += 1
        record.prompt_tokens[key.stage] += entry.prompt_tokens
        record.completion_tokens[key.stage] += entry.completion_tokens
        if key.stage != INSTRUCTIONS and key.index is not None:
            passed[key.prompt].add(key.index)
    novelty: dict[int, int] = defaultdict(int)
    dropped_after: dict[int, int] = defaultdict(int)
    for r in rejected:
        if r.id is None:
            continue
        try:
            prompt = RequestKey.parse(r.id).prompt
        except ValueError:
            continue
        if r.stage == "novelty":
            novelty[prompt] += 1
        elif r.stage not in _BEFORE_NOVELTY | _NOT_WHOLE:
            dropped_after[prompt] += 1
    for k, record in records.items():
        # Past the novelty filter: those the later stages asked about, or at least what they
        # kept and dropped whole (a stage may decide without asking).
        after = max(len(passed[k]), record.accepted + dropped_after[k])
        record.novelty_rejected = novelty[k]
        record.candidates = after + novelty[k]
    manifest = RunManifest.read(files.manifest)
    seconds = manifest.counts.seconds if manifest and manifest.counts.seconds else None
    if seconds is not None and upto is not None and manifest is not None:
        seconds *= len(journal) / max(manifest.counts.requests, 1)  # the share of its requests
    concurrency = manifest.config.get("concurrency") if manifest else None
    pilot = Pilot(
        run_dir=str(run_dir),
        prompts=len(commits),
        accepted=pool,
        seeds=seeds,
        requests=len(journal),
        prompt_tokens=sum(e.prompt_tokens for e in journal),
        completion_tokens=sum(e.completion_tokens for e in journal),
        seconds=seconds,
        concurrency=concurrency if isinstance(concurrency, int) else None,
    )
    return [records[k] for k in sorted(records)], pilot


# -- the novelty model -------------------------------------------------------------------------


def fit_novelty(
    records: list[PromptRecord],
    seeds: int,
    prior_slope: float = PRIOR_SLOPE,
    prior_sd: float = PRIOR_SLOPE_SD,
) -> NoveltyFit:
    """Penalised logistic fit of novelty rejects per prompt against log(seeds + pool): the
    slope's prior keeps a pilot that spans few pool sizes from inventing a trend."""
    x = np.log(np.array([seeds + r.pool for r in records], dtype=float))
    n = np.array([r.candidates for r in records], dtype=float)
    y = np.array([r.novelty_rejected for r in records], dtype=float)
    center = float(np.average(x, weights=n)) if n.sum() else float(x.mean())
    # Half a reject in one pseudo-candidate at the center: a pilot with no reject yet says the
    # rate is small, not zero.
    x = np.append(x, center)
    n, y = np.append(n, 1.0), np.append(y, 0.5)
    xc = x - center
    rate = (y.sum() + 0.5) / (n.sum() + 1.0)
    theta = np.array([math.log(rate / (1 - rate)), prior_slope])
    penalty = 1.0 / prior_sd**2
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-(theta[0] + theta[1] * xc)))
        w = n * p * (1 - p)
        grad = np.array([np.sum(y - n * p), np.sum((y - n * p) * xc)])
        grad[1] -= penalty * (theta[1] - prior_slope)
        hess = np.array(
            [[np.sum(w) + 1e-9, np.sum(w * xc)], [np.sum(w * xc), np.sum(w * xc * xc) + penalty]]
        )
        step = np.linalg.solve(hess, grad)
        theta = theta + step
        if np.max(np.abs(step)) < 1e-8:
            break
    return NoveltyFit(
        intercept=float(theta[0]),
        slope=float(theta[1]),
        center=center,
        prior_slope=prior_slope,
        prior_sd=prior_sd,
    )


# -- projecting ----------------------------------------------------------------------------------


@dataclass
class _Rates:
    """Per-prompt and per-candidate means of a set of prompt records."""

    candidates: float  # reaching the novelty filter, per prompt
    survival: float  # accepted per candidate past the novelty filter
    per_prompt: dict[str, float]  # requests of a stage per prompt (instruction stage)
    per_passed: dict[str, float]  # requests of a stage per candidate past novelty
    prompt_tokens: dict[str, float]  # per request
    completion_tokens: dict[str, float]
    novelty: NoveltyFit


def _rates(records: list[PromptRecord], seeds: int, prior_slope: float) -> _Rates | None:
    prompts = len(records)
    candidates = sum(r.candidates for r in records)
    passed = sum(r.candidates - r.novelty_rejected for r in records)
    accepted = sum(r.accepted for r in records)
    if candidates == 0 or passed == 0 or accepted == 0:
        return None
    stages = sorted({s for r in records for s in r.requests})
    requests = {s: sum(r.requests.get(s, 0) for r in records) for s in stages}
    per_prompt = {s: requests[s] / prompts for s in stages if s == INSTRUCTIONS}
    per_passed = {s: requests[s] / passed for s in stages if s != INSTRUCTIONS}
    return _Rates(
        candidates=candidates / prompts,
        survival=accepted / passed,
        per_prompt=per_prompt,
        per_passed=per_passed,
        prompt_tokens={
            s: sum(r.prompt_tokens.get(s, 0) for r in records) / max(requests[s], 1) for s in stages
        },
        completion_tokens={
            s: sum(r.completion_tokens.get(s, 0) for r in records) / max(requests[s], 1)
            for s in stages
        },
        novelty=fit_novelty(records, seeds, prior_slope=prior_slope),
    )


@dataclass
class _Projection:
    prompts: float  # instruction prompts beyond the pilot's
    accepted_after: float  # pool after a fixed number of prompts (filled in by the caller)
    requests: dict[str, float]
    prompt_tokens: dict[str, float]
    completion_tokens: dict[str, float]
    novelty_at_target: float


_GRID = 400


def _project(rates: _Rates, seeds: int, start: int, target: int) -> _Projection:
    """Grow the pool from `start` to `target` machine tasks: each prompt adds candidates x
    (1 - novelty rate) x survival tasks, so the prompts needed are the integral of 1 / yield."""
    need = max(target - start, 0)
    pool = np.linspace(start, max(target, start), _GRID)
    yield_ = rates.candidates * (1 - rates.novelty.rate(seeds + pool)) * rates.survival
    inverse = 1.0 / np.maximum(yield_, 1e-12)
    prompts = float(np.trapezoid(inverse, pool)) if need else 0.0
    passed = need / rates.survival
    requests = {s: prompts * v for s, v in rates.per_prompt.items()}
    requests |= {s: passed * v for s, v in rates.per_passed.items()}
    return _Projection(
        prompts=prompts,
        accepted_after=float("nan"),
        requests=requests,
        prompt_tokens={s: n * rates.prompt_tokens[s] for s, n in requests.items()},
        completion_tokens={s: n * rates.completion_tokens[s] for s, n in requests.items()},
        novelty_at_target=float(rates.novelty.rate(seeds + max(target, start))),
    )


def _accepted_after(rates: _Rates, seeds: int, start: int, prompts: float) -> float:
    """Machine tasks in the pool after `prompts` more instruction prompts."""
    pool = float(start)
    left = prompts
    step = max(prompts / _GRID, 1.0)
    while left > 1e-9:
        take = min(step, left)
        pool += take * rates.candidates * (1 - rates.novelty.rate(seeds + pool)) * rates.survival
        left -= take
    return pool


def make_plan(
    run_dir: Path,
    seeds: int,
    target: int,
    *,
    model: str,
    backend: str,
    prices: dict[str, tuple[float, float]] | None = None,
    rng_seed: int = 0,
    upto: int | None = None,
) -> RunPlan:
    """Project what reaching `target` tasks takes from the run at `run_dir` (its committed
    prompts; with `upto`, its first `upto`), the whole run counted, what it spent so far
    included."""
    records, pilot = read_pilot(run_dir, seeds, upto)
    if len(records) < MIN_PROMPTS:
        raise SelfInstructError(
            f"{run_dir}: {len(records)} instruction prompts committed; a plan needs at least "
            f"{MIN_PROMPTS} (a larger --pilot-tasks)"
        )
    central = _rates(records, seeds, PRIOR_SLOPE)
    if central is None:
        raise SelfInstructError(
            f"{run_dir}: the pilot accepted no task from {len(records)} prompts, so nothing can "
            "be projected; look at its rejected.jsonl (selfinstruct report) before spending more"
        )
    start = pilot.accepted
    rng = np.random.default_rng(rng_seed)
    draws: list[_Projection] = []
    fits: list[_Rates] = []
    for _ in range(BOOTSTRAP):
        sample = [records[i] for i in rng.integers(0, len(records), len(records))]
        rates = _rates(sample, seeds, float(rng.normal(PRIOR_SLOPE, PRIOR_SLOPE_SD)))
        if rates is None:
            continue
        fits.append(rates)
        draws.append(_project(rates, seeds, start, target))
    best = _project(central, seeds, start, target)
    best.accepted_after = _accepted_after(central, seeds, start, best.prompts)
    for rates, d in zip(fits, draws, strict=True):
        d.accepted_after = _accepted_after(rates, seeds, start, best.prompts)
    price = price_for(prices or {}, model)
    stages = sorted(set(best.requests) | {s for d in draws for s in d.requests})

    def est(value: float, pick: str, stage: str | None = None, spent: float = 0.0) -> Estimate:
        def get(p: _Projection) -> float:
            got = getattr(p, pick)
            return _pick(got, stage) if isinstance(got, dict) else got

        return Estimate.of(value + spent, np.array([get(d) + spent for d in draws]))

    def stage_plan(name: str, stage: str | None, spent: tuple[float, float, float]) -> StagePlan:
        requests = est(_pick(best.requests, stage), "requests", stage, spent[0])
        prompt = est(_pick(best.prompt_tokens, stage), "prompt_tokens", stage, spent[1])
        completion = est(_pick(best.completion_tokens, stage), "completion_tokens", stage, spent[2])
        cost = None
        if price is not None:
            costs = np.array(
                [
                    price.cost(
                        _pick(d.prompt_tokens, stage) + spent[1],
                        _pick(d.completion_tokens, stage) + spent[2],
                    )
                    for d in draws
                ]
            )
            cost = Estimate.of(price.cost(prompt.value, completion.value), costs)
        return StagePlan(
            stage=name,
            requests=requests,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost_usd=cost,
        )

    spent_by_stage = _spent_by_stage(records)
    per_stage = [stage_plan(s, s, spent_by_stage.get(s, (0, 0, 0))) for s in stages]
    spent = (float(pilot.requests), float(pilot.prompt_tokens), float(pilot.completion_tokens))
    total = stage_plan("total", None, spent)
    remaining = stage_plan("remaining", None, (0.0, 0.0, 0.0))
    hours = remaining_hours = None
    if pilot.seconds and pilot.requests:
        per_request = pilot.seconds / pilot.requests / 3600
        remaining_hours = remaining.requests.scaled(per_request)
        hours = remaining.requests.scaled(per_request, pilot.seconds / 3600)
    prompts = est(best.prompts, "prompts", spent=float(pilot.prompts))
    reachable = best.prompts < 1e7
    return RunPlan(
        target=target,
        model=model,
        backend=backend,
        pilot=pilot,
        reachable=reachable,
        message=""
        if reachable
        else "the novelty filter would reject nearly every new instruction before the target",
        prompts=prompts,
        accepted_at_prompts=Estimate.of(
            best.accepted_after, np.array([d.accepted_after for d in draws])
        ),
        stages=per_stage,
        total=total,
        remaining=remaining,
        hours=hours,
        remaining_hours=remaining_hours,
        price=price,
        novelty=central.novelty,
        novelty_now=float(central.novelty.rate(seeds + start)),
        novelty_at_target=Estimate.of(
            best.novelty_at_target, np.array([d.novelty_at_target for d in draws])
        ),
    )


def _pick(values: dict[str, float], stage: str | None) -> float:
    return values.get(stage, 0.0) if stage else sum(values.values())


def _spent_by_stage(records: list[PromptRecord]) -> dict[str, tuple[float, float, float]]:
    spent: dict[str, tuple[float, float, float]] = {}
    for r in records:
        for s, n in r.requests.items():
            a, b, c = spent.get(s, (0.0, 0.0, 0.0))
            spent[s] = (a + n, b + r.prompt_tokens[s], c + r.completion_tokens[s])
    return spent


# -- the plan on disk, before and after a run ------------------------------------------------------


def write_plan(plan: RunPlan, run_dir: Path) -> Path:
    from selfinstruct.atomic import write_text_atomic

    path = RunDir(run_dir).plan
    write_text_atomic(path, plan.model_dump_json(indent=1) + "\n")
    return path


def read_plan(run_dir: Path) -> RunPlan | None:
    path = RunDir(run_dir).plan
    if not path.exists():
        return None
    try:
        return RunPlan.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError:
        return None  # a plan from another version: planned again when needed


def over_limits(plan: RunPlan, max_cost: float | None, max_hours: float | None) -> list[str]:
    """The limits the plan's central figure exceeds, said with the plan."""
    over = []
    cost = plan.total.cost_usd
    if max_cost is not None and cost is not None and cost.value > max_cost:
        over.append(f"cost ${plan.total.cost_usd.text(2)} > --max-cost {max_cost:g}")
    if max_hours is not None and plan.hours is not None and plan.hours.value > max_hours:
        over.append(f"wall {plan.hours.text(2)} h > --max-hours {max_hours:g}")
    if not plan.reachable:
        over.append(plan.message)
    return over


class PlanRow(BaseModel):
    what: str
    planned: Estimate
    actual: float
    inside: bool


class PlanCheck(BaseModel):
    """A run's plan beside what it used (the run's summary and report show it)."""

    target: int
    pilot_prompts: int
    rows: list[PlanRow]

    def text(self) -> str:
        return "; ".join(
            f"{r.what} {r.actual:,.0f} vs plan {r.planned.text()}"
            + ("" if r.inside else " (outside)")
            for r in self.rows
        )


def check_against(plan: RunPlan, run_dir: Path, seeds: int) -> PlanCheck | None:
    """The plan's figures beside the run's, for a run that reached the plan's target: the whole
    run's requests and tokens, and the tasks accepted after the planned number of prompts."""
    records, pilot = read_pilot(run_dir, seeds)
    if pilot.accepted < plan.target:
        return None
    at = round(plan.prompts.value)
    accepted_at = sum(r.accepted for r in records[:at])

    def row(what: str, planned: Estimate, actual: float) -> PlanRow:
        return PlanRow(
            what=what, planned=planned, actual=actual, inside=planned.low <= actual <= planned.high
        )

    reached, pool = len(records), 0
    for i, r in enumerate(records):
        pool += r.accepted
        if pool >= plan.target:
            reached = i + 1
            break
    rows = [
        row("instruction prompts", plan.prompts, reached),
        row("requests", plan.total.requests, pilot.requests),
        row("prompt tokens", plan.total.prompt_tokens, pilot.prompt_tokens),
        row("completion tokens", plan.total.completion_tokens, pilot.completion_tokens),
        row(f"tasks after {at} prompts", plan.accepted_at_prompts, accepted_at),
    ]
    if plan.hours is not None and pilot.seconds:
        rows.append(row("wall seconds", plan.hours.scaled(3600), pilot.seconds))
    return PlanCheck(target=plan.target, pilot_prompts=plan.pilot.prompts, rows=rows)


def check_plan(cfg: GenerateConfig, run_dir: Path, seeds: int, model: str) -> RunPlan | None:
    """Before `generate` spends: with --max-cost or --max-hours and a run to plan from (a pilot,
    or an earlier part of this run), refuse when the plan's central figure is over a limit."""
    if cfg.max_cost is None and cfg.max_hours is None:
        return None
    try:
        plan = make_plan(
            run_dir, seeds, cfg.target_tasks, model=model, backend=cfg.backend, prices=cfg.prices
        )
    except SelfInstructError:
        return None  # nothing to plan from yet: the budgets stop the run as it goes
    over = over_limits(plan, cfg.max_cost, cfg.max_hours)
    if over:
        raise OverBudgetError(
            f"refused before spending: the plan for {cfg.target_tasks:,} tasks says "
            f"{'; '.join(over)} (whole run: {plan.headline()}; from {plan.pilot.prompts} "
            "prompts so far). Raise the limit, lower --target, or see `selfinstruct plan`"
        )
    return plan


def run_plan(cfg: PlanConfig, pilot: Callable[[GenerateConfig], object]) -> RunPlan:
    """Plan a run to `cfg.target_tasks`: from an existing run (`from_run`), or from a pilot of
    `pilot_tasks` tasks that `pilot` runs in `cfg.run_dir` (the real run resumes from it)."""
    seeds = len(read_tasks(cfg.seed_tasks))
    source = cfg.from_run
    if source is None:
        fields = set(GenerateConfig.model_fields)
        given = cfg.model_dump(include=fields, exclude_unset=True)
        tasks = min(cfg.pilot_tasks, cfg.target_tasks)
        # A model that gives many tasks per prompt fills the pilot in a few prompts: it goes on
        # until there are enough prompts to see their spread.
        for _ in range(4):
            pilot(GenerateConfig.model_validate(given | {"target_tasks": tasks}))
            manifest = RunManifest.read(RunDir(cfg.run_dir).manifest)
            done = manifest.counts if manifest else None
            if done is None or done.prompts >= MIN_PROMPTS or done.accepted < tasks:
                break
            tasks = min(tasks * 2, cfg.target_tasks)
        source = cfg.run_dir
    manifest = RunManifest.read(RunDir(source).manifest)
    model = cfg.model or (manifest.model if manifest else None) or cfg.backend
    plan = make_plan(
        source, seeds, cfg.target_tasks, model=model, backend=cfg.backend, prices=cfg.prices
    )
    if cfg.from_run is None:
        write_plan(plan, cfg.run_dir)
    return plan
