"""Quality labels: the review journal, the paper's Table 2 statistics, the LLM-judge audit, and
export / report honouring what the reviewer did."""

from __future__ import annotations

import json
from concurrent.futures import Future
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from selfinstruct.audit import parse_verdict, run_audit
from selfinstruct.backends.base import BackendError, Completion
from selfinstruct.backends.scripted import ScriptedBackend
from selfinstruct.config import AuditConfig, ExportConfig, GenerateConfig
from selfinstruct.errors import SelfInstructError
from selfinstruct.export import export
from selfinstruct.generate import run_generate
from selfinstruct.quality import (
    AnswerEvent,
    DropEvent,
    EditEvent,
    Proportion,
    SampleEvent,
    agreement,
    apply_review,
    choose_sample,
    cohen_kappa,
    quality_table,
    read_review,
)
from selfinstruct.records import Instance, Task, read_tasks
from selfinstruct.store import EventLog


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("q") / "run"
    run_generate(GenerateConfig(run_dir=run_dir, backend="scripted", target_tasks=30, window=2))
    return run_dir


def copy_run(run: Path, to: Path) -> Path:
    to.mkdir()
    for name in ("tasks.jsonl", "manifest.json"):
        (to / name).write_bytes((run / name).read_bytes())
    return to


# -- statistics -------------------------------------------------------------------------------


def test_wilson_interval_and_kappa_match_textbook_values() -> None:
    p = Proportion.of(54, 100)
    assert p.share == 0.54 and p.low == pytest.approx(0.4426, abs=1e-3)
    assert p.high == pytest.approx(0.6346, abs=1e-3)
    edge = Proportion.of(0, 10)  # no yes at all: the interval still has width
    assert edge.low == 0.0 and edge.high == pytest.approx(0.2775, abs=1e-3)
    assert Proportion.of(0, 0).share is None and Proportion.of(0, 0).text() == "-"
    # 50 pairs: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> po 0.7, pe 0.5, kappa 0.4.
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    k = cohen_kappa(pairs)
    assert k.n == 50 and k.agree == pytest.approx(0.7) and k.kappa == pytest.approx(0.4)
    assert cohen_kappa([("yes", "yes")] * 4).kappa is None  # undefined, not a fake 1.0


def test_quality_table_counts_all_fields_only_over_complete_labels() -> None:
    labels = {
        "a": {"valid_task": "yes", "input_ok": "yes", "output_ok": "yes"},
        "b": {"valid_task": "yes", "input_ok": "no", "output_ok": "yes"},
        "c": {"valid_task": "no"},
    }
    table = quality_table(labels, ["a", "b", "c", "d"])
    assert table.labelled == 3
    assert (table.rows["valid_task"].yes, table.rows["valid_task"].n) == (2, 3)
    assert (table.rows["input_ok"].yes, table.rows["input_ok"].n) == (1, 2)
    assert (table.rows["all"].yes, table.rows["all"].n) == (1, 2)
    judge = {"a": dict(labels["a"]), "b": {**labels["b"], "input_ok": "yes"}}
    agree = agreement(labels, judge)
    assert agree["valid_task"].n == 2 and agree["valid_task"].agree == 1.0
    assert agree["input_ok"].agree == 0.5 and agree["all"].n == 2


def test_review_journal_folds_and_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "review.jsonl"
    log = EventLog(path)
    log.append(SampleEvent(seed=0, size=2, task_ids=["a", "b"]))
    log.append(AnswerEvent(task_id="a", question="valid_task", value="no"))
    log.append(AnswerEvent(task_id="a", question="valid_task", value="yes"))  # changed mind
    log.append(AnswerEvent(task_id="b", question="input_ok", value="no"))
    log.append(AnswerEvent(task_id="b", question="input_ok", value=None))  # taken back
    log.append(EditEvent(task_id="a", instance=0, input="", output="fixed"))
    log.append(DropEvent(task_id="b"))
    log.close()
    with path.open("ab") as fh:
        fh.write(b'{"kind": "answer", "task_id": "a", "quest')  # the process died here
    state = read_review(path)
    assert state.answers == {"a": {"valid_task": "yes"}, "b": {}}
    assert state.dropped == {"b"} and state.edits == {("a", 0): ("", "fixed")}
    EventLog(path).close()  # reopening cuts the torn line off, so the next event is whole
    assert path.read_bytes().endswith(b"}\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "answer"}\n{"kind": "drop", "task_id": "x"}\n')
    with pytest.raises(SelfInstructError, match=r"bad.jsonl:1: not a review event"):
        read_review(bad)


def test_apply_review_edits_removes_and_drops() -> None:
    tasks = [
        Task(id="a", instruction="A.", instances=[Instance(output="1"), Instance(output="2")]),
        Task(id="b", instruction="B.", instances=[Instance(output="x")]),
        Task(id="c", instruction="C.", instances=[Instance(output="y")]),
    ]
    state = read_review(Path("/nonexistent"))
    state.apply(EditEvent(task_id="a", instance=1, input="new in", output="new out"))
    state.apply(EditEvent(task_id="c", instance=0, input="", output="  "))  # removes it
    state.apply(DropEvent(task_id="b"))
    kept, dropped, edited = apply_review(tasks, state)
    assert [t.id for t in kept] == ["a", "c"] and dropped == 1 and edited == 2
    assert kept[0].instances[1] == Instance(input="new in", output="new out")
    assert kept[1].instances == []


def test_sample_is_seeded_and_stable() -> None:
    tasks = [Task(id=str(i), instruction=f"T{i}.") for i in range(50)]
    assert choose_sample(tasks, 10, 0) == choose_sample(tasks, 10, 0)
    assert choose_sample(tasks, 10, 0) != choose_sample(tasks, 10, 1)
    assert sorted(choose_sample(tasks, 0, 0)) == sorted(t.id for t in tasks)


# -- the judge's replies ----------------------------------------------------------------------

# Replies in the shapes judges really give: the format asked for, markdown, numbered lists,
# prose on one line, bare words, a refusal, and a "N/A".
VERDICTS = [
    ("valid_task: yes\ninput_ok: yes\noutput_ok: no", ("yes", "yes", "no")),
    ("**valid_task**: Yes\n**input_ok**: Yes\n**output_ok**:  No\n\nNo.", ("yes", "yes", "no")),
    ("1. Yes\n2. No\n3. Yes", ("yes", "no", "yes")),
    ("Valid task: yes. Input OK: no. Output OK: yes.", ("yes", "no", "yes")),
    ("- valid_task = no\n- input_ok = yes\n- output_ok = no", ("no", "yes", "no")),
    ("Yes, yes, no", ("yes", "yes", "no")),
    ("I cannot judge this task.", (None, None, None)),
    ("valid_task: YES\ninput_ok: N/A\noutput_ok: yes", ("yes", None, "yes")),
    ("", (None, None, None)),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), VERDICTS)
def test_parse_verdict_never_raises(text: str, expected: tuple[str | None, ...]) -> None:
    got = parse_verdict(text)
    assert (got["valid_task"], got["input_ok"], got["output_ok"]) == expected


# -- the audit --------------------------------------------------------------------------------


def test_audit_with_the_scripted_judge_resumes_and_agrees_with_the_review(
    run: Path, tmp_path: Path
) -> None:
    work = copy_run(run, tmp_path / "run")
    cfg = AuditConfig(run=work, judge_backend="scripted", size=20)
    first = run_audit(cfg)
    assert first.tasks == 20 and first.judged == 20 and first.asked == 20 and first.unparsed == 0
    verdicts = [json.loads(x) for x in (work / "audit.jsonl").read_text().splitlines()]
    assert len(verdicts) == 20 and {v["judge"] for v in verdicts} == {"scripted/scripted"}
    assert first.table.rows["output_ok"].n == 20
    assert first.agreement is None  # nobody reviewed yet

    # A reviewer labels five of the same sample: agreement appears; nothing is asked again.
    sample = choose_sample(read_tasks(work / "tasks.jsonl"), 20, 0)
    log = EventLog(work / "review.jsonl")
    for task_id in sample[:5]:
        for question in ("valid_task", "input_ok", "output_ok"):
            log.append(AnswerEvent(task_id=task_id, question=question, value="yes"))
    log.close()
    again = run_audit(cfg)
    assert again.asked == 0 and again.reused == 20
    assert again.agreement is not None and again.agreement["valid_task"].n == 5
    summary = json.loads((work / "audit_summary.json").read_text())
    assert summary["judge"] == "scripted/scripted" and summary["agreement"]["input_ok"]["n"] == 5


def test_audit_interrupted_then_resumed_asks_each_task_once(run: Path, tmp_path: Path) -> None:
    work = copy_run(run, tmp_path / "run")

    class DiesAfter(ScriptedBackend):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.left = n

        def submit(self, request_id, prompt, params, priority=()):  # type: ignore[no-untyped-def]
            if self.left == 0:
                future: Future[Completion] = Future()
                future.set_exception(BackendError("the judge went away"))
                return future
            self.left -= 1
            return super().submit(request_id, prompt, params)

    cfg = AuditConfig(run=work, judge_backend="scripted", size=12)
    with pytest.raises(BackendError):
        run_audit(cfg, backend=DiesAfter(5))
    assert len((work / "audit.jsonl").read_text().splitlines()) == 5
    rest = ScriptedBackend()
    summary = run_audit(cfg, backend=rest)
    assert summary.reused == 5 and summary.asked == 7 and len(rest.calls) == 7
    assert summary.judged == 12


def test_audit_through_the_openai_backend_and_drop_invalid(run: Path, tmp_path: Path) -> None:
    work = copy_run(run, tmp_path / "run")
    with FakeOpenAI() as server:  # answers with the scripted judge's verdicts, over HTTP
        summary = run_audit(
            AuditConfig(
                run=work,
                judge_backend="openai",
                judge_model="judge-m",
                judge_base_url=[server.url],
                drop_invalid=True,
                prices={"judge-m": (1.0, 2.0)},
            )
        )
    tasks = read_tasks(work / "tasks.jsonl")
    assert summary.judge == "openai/judge-m" and summary.tasks == len(tasks) == summary.judged
    assert summary.prompt_tokens > 0 and summary.cost_usd and summary.cost_usd > 0
    kept = read_tasks(work / "tasks.audited.jsonl")
    rejected = [json.loads(x) for x in (work / "audit_rejected.jsonl").read_text().splitlines()]
    assert summary.kept == len(kept) and summary.dropped == len(rejected) > 0
    assert len(kept) + len(rejected) == len(tasks)
    assert all(r["reason"] == "judge_invalid" and "no" in r["detail"]["answers"].values()
               for r in rejected)  # fmt: skip


# -- export and report honour the review ------------------------------------------------------


def test_export_applies_the_reviewers_edits_and_drops(run: Path, tmp_path: Path) -> None:
    work = copy_run(run, tmp_path / "run")
    tasks = read_tasks(work / "tasks.jsonl")
    edited, dropped = tasks[0], tasks[1]
    log = EventLog(work / "review.jsonl")
    log.append(EditEvent(task_id=edited.id, instance=0, input="an edited input", output="FIXED"))
    log.append(DropEvent(task_id=dropped.id))
    log.close()
    log = EventLog(work / "review.jsonl")
    log.append(AnswerEvent(task_id=edited.id, question="valid_task", value="yes"))
    log.close()
    out = tmp_path / "data.jsonl"
    summary = export(ExportConfig(source=work, output=out, format="alpaca"))
    assert summary.review_dropped == 1 and summary.review_edited == 1
    card = (tmp_path / "README.md").read_text()
    assert "## Quality (the paper's Table 2)" in card and "| 100% [" in card
    assert "The reviewer dropped 1 task (left out here) and corrected 1" in card
    rows = json.loads(out.read_text())
    assert not any(r["instruction"] == dropped.instruction for r in rows)
    mine = [r for r in rows if r["instruction"] == edited.instruction]
    assert {
        "instruction": edited.instruction,
        "input": "an edited input",
        "output": "FIXED",
    } in mine
    assert edited.instances[0].output not in {r["output"] for r in mine}


def test_report_shows_the_quality_table(run: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from selfinstruct.report import build_report

    work = copy_run(run, tmp_path / "run")
    bare = Path(build_report(work).html_path).read_text()
    assert 'id="quality"' in bare and "No labels yet" in bare and "92%" in bare
    sample = choose_sample(read_tasks(work / "tasks.jsonl"), 200, 0)
    log = EventLog(work / "review.jsonl")
    log.append(SampleEvent(seed=0, size=200, task_ids=sample))
    for task_id, value in zip(sample[:4], ["yes", "yes", "yes", "no"], strict=True):
        for question in ("valid_task", "input_ok", "output_ok"):
            log.append(AnswerEvent(task_id=task_id, question=question, value=value))
    log.append(DropEvent(task_id=sample[3]))
    log.close()
    run_audit(AuditConfig(run=work, judge_backend="scripted", size=10))
    page = Path(build_report(work).html_path).read_text()
    section = page[page.index('<section id="quality">') :].split("</section>")[0]
    assert "human review (4 of " in section and "judge: scripted/scripted (10 tasks)" in section
    assert "75% [" in section and "Cohen" in section and "dropped 1 task and" in section
