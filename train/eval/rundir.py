"""The on-disk layout of a coda-eval run directory and reading its results back.

Its own module because both the runner (writes a run) and the reports (read one, compare two)
need the file names and the tolerant JSONL reader; report must not import the runner.
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS, CONFIG, SUMMARY, REPORT = "results.jsonl", "config.json", "summary.json", "report.md"


def load_results(path: Path) -> dict[str, dict]:
    """Finished task rows by task_id; malformed lines (an interrupted write) are skipped."""
    done: dict[str, dict] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "task_id" in row and "results" in row:
                done[row["task_id"]] = row
    return done
