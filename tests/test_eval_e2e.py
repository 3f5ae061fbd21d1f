"""End to end with a tiny random-weight CoDA model: `coda-eval` loads it, decodes through the real
engine, executes in the sandbox and writes results, summary and report. Random weights solve
nothing, so the check is that every stage ran and recorded its outcome."""

from __future__ import annotations

import json

import pytest

from coda_train.eval.cli import main

# greedy without top-p: sorting a 151,936-entry vocabulary per position would dominate the test's time
FEW_STEPS = ["--max-new-tokens", "8", "--steps", "4", "--temperature", "0", "--top-p", "none",
             "--device", "cpu", "--dtype", "float32", "--no-progress"]


def test_tiny_model_humaneval_run_produces_results_and_report(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "he"
    rc = main(["humaneval", "--model", str(tiny_model_dir), "--limit", "2", "-n", "2", "--batch-size", "4",
               "--out", str(out), *FEW_STEPS])
    assert rc == 0, capsys.readouterr().err
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in rows] == ["HumanEval/0", "HumanEval/1"]
    assert all(r["n"] == 2 and len(r["raw"]) == 2 and len(r["results"]) == 2 for r in rows)
    assert all(res["status"] in ("passed", "failed", "timeout") for r in rows for res in r["results"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks_done"] == 2 and set(summary["metrics"]) == {"pass@1"}
    assert summary["identity"]["decode"]["steps"] == 4 and summary["identity"]["decode"]["alg"] == "entropy"
    assert "| humaneval |" in (out / "report.md").read_text()
    # a second run finds everything done and only rewrites the reports
    assert main(["humaneval", "--model", str(tiny_model_dir), "--limit", "2", "-n", "2", "--batch-size", "4",
                 "--out", str(out), *FEW_STEPS]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


def test_tiny_model_infilling_run_scores_exact_match(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "infill"
    rc = main(["humaneval-infilling-single", "--model", str(tiny_model_dir), "--limit", "2", "--out", str(out),
               *FEW_STEPS])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tasks_done"] == 2 and {"pass@1", "exact_match"} <= set(summary["metrics"])
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert all(isinstance(r["completions"][0], str) and len(r["exact"]) == 1 for r in rows)


def test_model_directory_that_does_not_load_is_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "config.json").write_text("{broken")
    rc = main(["humaneval", "--model", str(bad), "--limit", "1", "--out", str(tmp_path / "out"), *FEW_STEPS])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("coda-eval: error: cannot load model") and "\n" == err[-1]
    assert err.count("\n") == 1


def test_missing_dataset_stops_before_loading_the_model(tmp_path, capsys):
    rc = main(["mbpp", "--model", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path), *FEW_STEPS])
    assert rc == 2 and "MBPP not found at" in capsys.readouterr().err
