"""`selfinstruct plan`: a pilot's record projected to a target, the pilot reused by the real run,
refusal before spending, and the plan set beside what the run used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from selfinstruct.backends.scripted import ScriptedBackend
from selfinstruct.config import GenerateConfig, PlanConfig
from selfinstruct.errors import OverBudgetError
from selfinstruct.generate import run_generate
from selfinstruct.plan import PromptRecord, fit_novelty, make_plan, read_pilot, run_plan
from selfinstruct.pricing import price_for

SEEDS = 181  # the shipped seed file


def config(run_dir: Path, **overrides) -> GenerateConfig:
    return GenerateConfig.model_validate(
        {"run_dir": run_dir, "backend": "scripted", "target_tasks": 12, "window": 2} | overrides
    )


def journal(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "requests.jsonl").read_text().splitlines()]


def test_the_pilot_record_matches_the_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    summary = run_generate(config(run_dir, target_tasks=40))
    records, pilot = read_pilot(run_dir, SEEDS)
    assert pilot.prompts == summary.prompts == len(records)
    assert pilot.accepted == summary.accepted == sum(r.accepted for r in records)
    assert pilot.requests == summary.requests == len(journal(run_dir))
    assert pilot.prompt_tokens == summary.prompt_tokens
    # Pool sizes grow by what each earlier prompt accepted.
    assert [r.pool for r in records] == list(np.cumsum([0] + [r.accepted for r in records])[:-1])
    rejected = [json.loads(line) for line in (run_dir / "rejected.jsonl").read_text().splitlines()]
    novelty = sum(r["stage"] == "novelty" for r in rejected)
    assert sum(r.novelty_rejected for r in records) == novelty
    assert all(r.candidates >= r.novelty_rejected + r.accepted for r in records)
    assert pilot.seconds is not None and pilot.seconds > 0


def test_a_plan_from_the_first_prompts_foresees_the_rest(tmp_path: Path) -> None:
    """Planned from the run's first 20 tasks, the whole run to 120: within a quarter."""
    run_dir = tmp_path / "run"
    run_generate(config(run_dir, target_tasks=120, window=4))
    records, _ = read_pilot(run_dir, SEEDS)
    pool, upto = 0, 0
    while pool < 20:
        pool += records[upto].accepted
        upto += 1
    plan = make_plan(run_dir, SEEDS, 120, model="scripted", backend="scripted", upto=upto)
    assert plan.pilot.prompts == upto and plan.pilot.accepted == pool
    actual = journal(run_dir)
    for planned, real in [
        (plan.total.requests, len(actual)),
        (plan.total.prompt_tokens, sum(e["prompt_tokens"] for e in actual)),
        (plan.total.completion_tokens, sum(e["completion_tokens"] for e in actual)),
    ]:
        assert planned.low <= planned.value <= planned.high
        assert abs(planned.value - real) / real < 0.25, (planned, real)
    # What is left is the whole run less what the pilot spent.
    assert plan.remaining.requests.value == pytest.approx(
        plan.total.requests.value - plan.pilot.requests
    )
    assert sum(s.requests.value for s in plan.stages) == pytest.approx(plan.total.requests.value)


def _records(rates: list[float], per_prompt: int = 40) -> list[PromptRecord]:
    out, pool = [], 0
    for k, rate in enumerate(rates):
        out.append(PromptRecord(k, pool, 4, per_prompt, round(rate * per_prompt)))
        pool += 50
    return out


def test_the_novelty_fit_finds_a_rising_rate_and_keeps_the_prior_on_flat_data() -> None:
    # Rates that rise with log(pool): the fit's slope is clearly positive without a prior.
    pools = np.arange(0, 2000, 50) + SEEDS
    truth = 1 / (1 + np.exp(-(-2.0 + 1.0 * (np.log(pools) - np.log(pools).mean()))))
    fit = fit_novelty(_records(list(truth), per_prompt=400), SEEDS, prior_slope=0.0, prior_sd=100)
    assert 0.8 < fit.slope < 1.2
    assert fit.rate(pools[-1]) > fit.rate(pools[0]) * 3
    # A short flat pilot cannot overrule the prior's slope.
    flat = fit_novelty(_records([0.2] * 5), SEEDS, prior_slope=0.3, prior_sd=0.1)
    assert 0.2 < flat.slope < 0.35
    # No reject yet is a small rate, not zero.
    assert fit_novelty(_records([0.0] * 8), SEEDS).rate(SEEDS) > 1e-3


def test_plan_runs_a_pilot_the_run_resumes_and_the_summary_checks_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    cfg = PlanConfig.model_validate(
        {"run_dir": run_dir, "backend": "scripted", "target_tasks": 60, "pilot_tasks": 15}
    )
    pilots: list[GenerateConfig] = []

    def pilot(pilot_cfg: GenerateConfig) -> None:
        pilots.append(pilot_cfg)
        run_generate(pilot_cfg)

    plan = run_plan(cfg, pilot)
    assert pilots[0].target_tasks == 15 and type(pilots[0]) is GenerateConfig
    assert (run_dir / "plan.json").exists() and plan.target == 60
    asked_in_pilot = len(journal(run_dir))
    assert plan.pilot.requests == asked_in_pilot
    backend = ScriptedBackend()
    summary = run_generate(config(run_dir, target_tasks=60, window=None), backend=backend)
    # The pilot's requests come from the journal: the backend is asked only for the rest.
    assert len(backend.calls) == summary.requests - asked_in_pilot
    assert summary.plan is not None
    rows = {r.what: r for r in summary.plan.rows}
    assert rows["requests"].actual == summary.requests
    assert abs(rows["requests"].planned.value - summary.requests) / summary.requests < 0.25
    # The report sets the plan beside the run too.
    from selfinstruct.report import build_report

    page = Path(build_report(run_dir).html_path).read_text()
    assert "Plan against actual" in page and "inside the interval" in page


def test_a_plan_over_the_limits_refuses_before_spending(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    prices = {"scripted": (1000.0, 2000.0)}
    run_generate(config(run_dir, target_tasks=20))
    before = len(journal(run_dir))
    backend = ScriptedBackend()
    with pytest.raises(OverBudgetError) as refused:
        run_generate(
            config(run_dir, target_tasks=400, max_cost=5.0, prices=prices), backend=backend
        )
    assert backend.calls == [] and len(journal(run_dir)) == before
    message = str(refused.value)
    assert "refused before spending" in message and "--max-cost 5" in message
    assert refused.value.exit_code == 5
    # A limit the plan fits under runs.
    summary = run_generate(config(run_dir, target_tasks=30, max_cost=500.0, prices=prices))
    assert summary.status == "done"
    # Hours: the pilot's pace makes 100,000 tasks far more than a minute.
    with pytest.raises(OverBudgetError, match="--max-hours"):
        run_generate(config(run_dir, target_tasks=100_000, max_hours=1 / 60))


def test_max_hours_stops_a_run_as_a_budget(tmp_path: Path) -> None:
    summary = run_generate(config(tmp_path / "run", target_tasks=100_000, max_hours=1e-7))
    assert summary.status == "budget"
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["counts"]["seconds"] > 0


def test_prices_yours_first_then_the_dated_table() -> None:
    assert price_for({}, "my-local-model") is None
    mine = price_for({"gpt-4o-mini": (1.0, 2.0)}, "gpt-4o-mini")
    assert mine is not None and (mine.prompt, mine.source) == (1.0, "your price table")
    dated = price_for({}, "gpt-4o-mini-2024-07-18")
    assert dated is not None and dated.prompt == 0.15 and "built-in table of" in dated.source
    assert price_for({}, "openai/gpt-4.1-mini").completion == 1.6  # type: ignore[union-attr]
    assert price_for({}, "gpt-4o-minimal") is None


def test_cli_plan_prints_the_plan(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from selfinstruct.cli import app

    run_dir = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        ["plan", "-b", "scripted", "-o", str(run_dir), "--target", "80", "--pilot-tasks", "12"],
    )
    assert result.exit_code == 0, result.output
    for words in ("plan: 80 tasks", "whole run", "left to spend", "instruction prompts:"):
        assert words in result.output
    again = CliRunner().invoke(
        app, ["plan", "-b", "scripted", "--from-run", str(run_dir), "--target", "500"]
    )
    assert again.exit_code == 0 and "plan: 500 tasks" in again.output
