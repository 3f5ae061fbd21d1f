"""Held-out single-line holes: the validation set for decode and gate settings that is not HumanEval.

Why here: the default model's recipe (`compare.py --task heldout-line`) and the gate calibration
benchmark (`coda_bench.gate`) must cut the very same holes, and both may import `coda_train`.
"""

from __future__ import annotations

import json
from pathlib import Path


def line_hole(path: str, text: str, before: int = 2000, after: int = 1000) -> dict | None:
    """The file's one hole: its first non-blank line from the middle on (None for short files)."""
    lines = text.splitlines(keepends=True)
    if len(lines) < 20:
        return None
    i = next((k for k in range(len(lines) // 2, len(lines)) if lines[k].strip()), None)
    if i is None:
        return None
    pre, suf = "".join(lines[:i]), "".join(lines[i + 1:])
    return {"task_id": f"{path}:{i + 1}", "prompt": pre[-before:], "suffix": suf[:after], "canonical_solution": lines[i]}


def heldout_line_holes(corpus: Path, limit: int, before: int = 2000, after: int = 1000) -> list[dict]:
    """One single-line hole per held-out Python file of `corpus/heldout.jsonl` (build_data.py's output).

    Files come in corpus order, none picked, so choosing a setting does not tune on the numbers we report.
    """
    rows = []
    for line in (corpus / "heldout.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if not row["path"].endswith(".py"):
            continue
        hole = line_hole(row["path"], row["text"], before, after)
        if hole is not None:
            rows.append(hole)
        if len(rows) >= limit:
            break
    return rows
