"""Summaries, markdown tables and side-by-side comparison of evaluation runs.

`summary.json` holds pass@k (unbiased estimator, mean over tasks, in %), exact match for
infilling (% of samples whose middle equals the reference after whitespace normalisation),
counts per execution status, the failing task ids, the run's identity and the sandbox in force.
"""

from __future__ import annotations

import json
from pathlib import Path

from coda_train.eval.passk import mean_pass_at_k, reportable_ks
from coda_train.eval.rundir import RESULTS, SUMMARY, load_results


def summarize(rows: list[dict], *, identity: dict, sandbox: dict | None = None, elapsed_s: float = 0.0,
              n_tasks: int | None = None) -> dict:
    counts = [(r["n"], r["c"]) for r in rows]
    n_min = min((n for n, _ in counts), default=0)
    metrics = {f"pass@{k}": round(100 * mean_pass_at_k(counts, k), 2) for k in reportable_ks(n_min)}
    exact = [e for r in rows for e in r.get("exact", [])]
    if exact:
        metrics["exact_match"] = round(100 * sum(exact) / len(exact), 2)
    statuses: dict[str, int] = {}
    for r in rows:
        for res in r["results"]:
            statuses[res["status"]] = statuses.get(res["status"], 0) + 1
    return {
        "task": identity.get("task"), "model": identity.get("model"),
        "tasks_done": len(rows), "tasks_total": n_tasks if n_tasks is not None else len(rows),
        "samples_per_task": n_min, "metrics": metrics, "statuses": statuses,
        "failed_tasks": [r["task_id"] for r in rows if r["c"] < r["n"]],
        "identity": identity, "sandbox": sandbox or {}, "elapsed_s": round(elapsed_s, 1),
    }


def _metric_names(*summaries: dict) -> list[str]:
    names: list[str] = []
    for s in summaries:
        names += [m for m in s["metrics"] if m not in names]
    return names


def markdown(summary: dict) -> str:
    names = _metric_names(summary)
    head = ["task", "model", "tasks", "samples/task", *names, "timeouts"]
    row = [summary["task"], f"`{summary['model']}`", f"{summary['tasks_done']}/{summary['tasks_total']}",
           str(summary["samples_per_task"]), *[f"{summary['metrics'][m]:.2f}" for m in names],
           str(summary["statuses"].get("timeout", 0))]
    d = summary["identity"].get("decode") or {}
    lines = [f"# coda-eval: {summary['task']}", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(row) + " |", ""]
    if d:
        lines.append("Decoding: " + ", ".join(f"{k}={v}" for k, v in d.items()) + ".")
    sb = summary.get("sandbox") or {}
    if sb:
        lines.append(f"Sandbox: python `{sb.get('python')}`, own uid: {sb.get('drops_to_uid')}, "
                     f"network namespace: {sb.get('network_namespace')}, audit hook: {sb.get('audit_guard')}.")
    return "\n".join(lines) + "\n"


def load_run(path: str | Path) -> tuple[dict, dict[str, dict]]:
    """(summary, rows by task_id) of a run directory; the summary is rebuilt from results.jsonl
    when summary.json is missing (an interrupted run)."""
    path = Path(path)
    if not (path / RESULTS).is_file():
        raise FileNotFoundError(f"{path} is not a coda-eval run directory (no {RESULTS})")
    rows = load_results(path / RESULTS)
    if (path / SUMMARY).is_file():
        summary = json.loads((path / SUMMARY).read_text())
    else:
        ident = {}
        if (path / "config.json").is_file():
            ident = json.loads((path / "config.json").read_text()).get("identity", {})
        summary = summarize(list(rows.values()), identity=ident)
    return summary, rows


def compare(a: str | Path, b: str | Path) -> str:
    """Two runs side by side: metrics with the difference, and the tasks only one of them solves."""
    sa, ra = load_run(a)
    sb, rb = load_run(b)
    lines = [f"A: {a}  ({sa['task']}, {sa['model']}, {sa['tasks_done']} tasks)",
             f"B: {b}  ({sb['task']}, {sb['model']}, {sb['tasks_done']} tasks)", "",
             "| metric | A | B | B - A |", "|---|---|---|---|"]
    for m in _metric_names(sa, sb):
        va, vb = sa["metrics"].get(m), sb["metrics"].get(m)
        delta = f"{vb - va:+.2f}" if va is not None and vb is not None else "-"
        lines.append(f"| {m} | {'-' if va is None else f'{va:.2f}'} | {'-' if vb is None else f'{vb:.2f}'} | {delta} |")
    common = sorted(set(ra) & set(rb))
    only_a = [t for t in common if ra[t]["c"] > 0 and rb[t]["c"] == 0]
    only_b = [t for t in common if rb[t]["c"] > 0 and ra[t]["c"] == 0]
    lines += ["", f"tasks in both: {len(common)}; solved only by A: {len(only_a)}; solved only by B: {len(only_b)}"]
    for label, ids in (("only A", only_a), ("only B", only_b)):
        if ids:
            lines.append(f"{label}: " + ", ".join(ids[:20]) + (" ..." if len(ids) > 20 else ""))
    return "\n".join(lines) + "\n"
