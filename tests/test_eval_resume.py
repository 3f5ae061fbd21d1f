"""Resumability, reports and compare: finished results survive interruptions and are never redone."""

from __future__ import annotations

import json

import pytest

from coda_train.eval.cli import main
from coda_train.eval.datasets import load_tasks
from coda_train.eval.rundir import load_results
from coda_train.eval.runner import EvalConfig, RunMismatch, run_eval
from coda_train.eval.sampler import OracleSampler


class CountingSampler(OracleSampler):
    """The oracle, which records the prompts it answered and can die after `fail_after` calls."""

    def __init__(self, tasks, fail_after=None):
        super().__init__(tasks)
        self.fail_after, self.calls, self.prompts = fail_after, 0, []

    def generate(self, prompts, *, settings, seed):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt
        self.calls += 1
        self.prompts += list(prompts)
        return super().generate(prompts, settings=settings, seed=seed)


def _cfg(out, **kw):
    return EvalConfig(task="humaneval", out_dir=out, model="oracle", limit=6, batch_size=2, progress=False, **kw)


def test_interrupted_run_resumes_without_redoing_finished_tasks(tmp_path):
    tasks = load_tasks("humaneval")[:6]
    with pytest.raises(KeyboardInterrupt):
        run_eval(_cfg(tmp_path), CountingSampler(tasks, fail_after=2))
    done = load_results(tmp_path / "results.jsonl")
    assert sorted(done) == [t.task_id for t in tasks[:4]]
    with open(tmp_path / "results.jsonl", "a") as f:  # killed in the middle of writing a row
        f.write('{"task_id": "HumanEval/4", "raw": ["tru')
    second = CountingSampler(tasks)
    summary = run_eval(_cfg(tmp_path), second)
    assert len(second.prompts) == 2  # only tasks 4 and 5
    assert summary["tasks_done"] == 6 and summary["metrics"]["pass@1"] == 100.0
    assert sorted(load_results(tmp_path / "results.jsonl")) == sorted(t.task_id for t in tasks)
    again = CountingSampler(tasks)
    run_eval(_cfg(tmp_path), again)
    assert again.calls == 0


def test_rerun_with_other_settings_is_refused_and_keeps_results(tmp_path):
    tasks = load_tasks("humaneval")[:6]
    run_eval(_cfg(tmp_path), CountingSampler(tasks))
    before = (tmp_path / "results.jsonl").read_text()
    with pytest.raises(RunMismatch, match="n_samples"):
        run_eval(_cfg(tmp_path, n_samples=2), CountingSampler(tasks))
    assert (tmp_path / "results.jsonl").read_text() == before


def test_pass_at_k_with_several_samples_and_reports(tmp_path):
    tasks = load_tasks("humaneval")[:3]
    cfg = EvalConfig(task="humaneval", out_dir=tmp_path / "a", model="oracle", limit=3, n_samples=10, progress=False)
    summary = run_eval(cfg, OracleSampler(tasks))
    assert summary["samples_per_task"] == 10 and summary["metrics"] == {"pass@1": 100.0, "pass@10": 100.0}
    rows = load_results(tmp_path / "a" / "results.jsonl")
    assert all(r["n"] == 10 and r["c"] == 10 for r in rows.values())
    md = (tmp_path / "a" / "report.md").read_text()
    assert "| humaneval | `oracle` | 3/3 | 10 | 100.00 | 100.00 | 0 |" in md


def test_compare_prints_two_runs_side_by_side(tmp_path, capsys):
    tasks = load_tasks("humaneval")[:4]
    run_eval(EvalConfig(task="humaneval", out_dir=tmp_path / "ref", model="oracle", limit=4, progress=False),
             OracleSampler(tasks))
    run_eval(EvalConfig(task="humaneval", out_dir=tmp_path / "empty", model="empty", limit=4, progress=False),
             OracleSampler(tasks, empty=True))
    assert main(["compare", str(tmp_path / "ref"), str(tmp_path / "empty")]) == 0
    out = capsys.readouterr().out
    assert "| pass@1 | 100.00 | 0.00 | -100.00 |" in out
    assert "solved only by A: 4; solved only by B: 0" in out
    assert main(["report", str(tmp_path / "ref")]) == 0
    assert "| humaneval | `oracle` | 4/4 |" in capsys.readouterr().out


def test_compare_of_a_directory_that_is_no_run_is_a_clear_error(tmp_path, capsys):
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 2
    assert "not a coda-eval run directory" in capsys.readouterr().err


def test_summary_is_rebuilt_for_an_interrupted_run(tmp_path):
    tasks = load_tasks("humaneval")[:6]
    with pytest.raises(KeyboardInterrupt):
        run_eval(_cfg(tmp_path), CountingSampler(tasks, fail_after=1))
    from coda_train.eval.report import load_run

    summary, rows = load_run(tmp_path)
    assert summary["tasks_done"] == 2 and summary["metrics"]["pass@1"] == 100.0
    assert json.loads((tmp_path / "config.json").read_text())["identity"]["model"] == "oracle"
