"""Oracle checks on subsets: reference solutions score 100% (minus listed known-broken tasks) and
empty completions 0%, through the real prompts, post-processing, program assembly and sandbox."""

from __future__ import annotations

import json

import pytest

from coda_train.eval.cli import main
from coda_train.eval.oracle import run_oracle
from coda_train.eval.runner import EvalConfig, select_tasks
from coda_train.eval.sandbox import SandboxConfig

SUBSETS = {"humaneval": 12, "mbpp": 12, "humaneval-infilling-single": 8, "humaneval-infilling-multi": 6,
           "humaneval-infilling-random": 6}


@pytest.mark.parametrize("task", list(SUBSETS))
def test_references_pass_and_empty_completions_fail(tmp_path, task):
    cfg = EvalConfig(task=task, out_dir=tmp_path, limit=SUBSETS[task], progress=False,
                     sandbox=SandboxConfig(timeout_s=10))
    report = run_oracle(cfg)
    assert report.ok, "\n".join(report.lines())
    assert report.reference_pass_at_1 == 100.0 and report.empty_pass_at_1 == 0.0  # subsets with no weak tests
    summary = json.loads((tmp_path / "reference" / "summary.json").read_text())
    assert summary["tasks_done"] == SUBSETS[task] and summary["statuses"] == {"passed": SUBSETS[task]}
    if task.startswith("humaneval-infilling"):
        assert summary["metrics"]["exact_match"] == 100.0
        empty = json.loads((tmp_path / "empty" / "summary.json").read_text())
        blank = [t for t in select_tasks(cfg) if not t.canonical.strip()]  # random spans may be whitespace
        assert empty["metrics"]["exact_match"] == round(100 * len(blank) / SUBSETS[task], 2)


def test_oracle_command_runs_plain_completion_prompts_too(tmp_path, capsys):
    rc = main(["oracle", "humaneval", "--limit", "4", "--no-chat", "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    assert "reference pass@1 = 100.00%, empty pass@1 = 0.00%" in capsys.readouterr().out


def test_infilling_middle_whose_removal_tests_cannot_detect_is_reported_not_failed(tmp_path):
    weak, normal = "SingleLineInfilling/HumanEval/20/L0", "SingleLineInfilling/HumanEval/0/L0"
    cfg = EvalConfig(task="humaneval-infilling-single", out_dir=tmp_path, task_ids=[weak, normal], progress=False)
    report = run_oracle(cfg)
    assert report.ok and report.weak_tests == [weak] and report.empty_pass_at_1 == 50.0
    assert "1 infilling tasks also pass with an empty middle" in "\n".join(report.lines())
