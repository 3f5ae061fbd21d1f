"""The evaluation loop: tasks -> sampler -> post-processing -> sandbox -> per-task JSONL -> reports.

Resumable: every finished task is appended to `results.jsonl` (flushed and fsynced) before the
next batch starts; a re-run with the same output directory skips the tasks already there. A
half-written last line (the run was killed mid-write) is ignored and the task redone. A re-run
with different settings into the same directory is refused instead of mixing two runs.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from coda_train.eval import report
from coda_train.eval.datasets import ALIASES, Task, load_tasks
from coda_train.eval.prompts import build_prompt, extract_code, normalize_ws, program_for
from coda_train.eval.rundir import CONFIG, REPORT, RESULTS, SUMMARY, load_results
from coda_train.eval.sampler import DecodeSettings, Sampler, hole_budget
from coda_train.eval.sandbox import SandboxConfig, describe, run_program

# settings that must match for a re-run to continue an existing output directory
IDENTITY_KEYS = ("task", "model", "n_samples", "decode", "split", "dataset")


class RunMismatch(ValueError):
    """The output directory holds a run with different settings."""


@dataclass
class EvalConfig:
    task: str                          # a name from datasets.TASK_NAMES (or an alias)
    out_dir: Path                      # results.jsonl, config.json, summary.json, report.md
    model: str = ""                    # what produced the completions (model dir, "oracle", "empty")
    n_samples: int = 1                 # samples per task (pass@k needs n >= k)
    batch_size: int = 8                # sequences per engine.generate call
    limit: int | None = None           # first N tasks only
    task_ids: list[str] | None = None  # only these tasks
    data_dir: Path | None = None       # default ../shared/data
    dataset: Path | None = None        # explicit dataset file
    split: str = "test"                # MBPP split
    workers: int = 2                   # programs executed in parallel
    progress: bool = True              # tqdm progress bar
    decode: DecodeSettings = field(default_factory=DecodeSettings)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)

    def __post_init__(self):
        self.task = ALIASES.get(self.task, self.task)
        self.out_dir = Path(self.out_dir)
        if self.n_samples < 1 or self.batch_size < 1 or self.workers < 1:
            raise ValueError("n_samples, batch_size and workers must be >= 1")

    def identity(self) -> dict:
        return {"task": self.task, "model": self.model, "n_samples": self.n_samples,
                "decode": self.decode.to_dict(), "split": self.split,
                "dataset": str(self.dataset) if self.dataset else None}


def select_tasks(cfg: EvalConfig) -> list[Task]:
    tasks = load_tasks(cfg.task, data_dir=cfg.data_dir, dataset=cfg.dataset, split=cfg.split)
    if cfg.task_ids:
        wanted = set(cfg.task_ids)
        tasks = [t for t in tasks if t.task_id in wanted]
    if cfg.limit is not None:
        tasks = tasks[: cfg.limit]
    return tasks


def _prepare_out_dir(cfg: EvalConfig) -> dict[str, dict]:
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    config_path, results_path = cfg.out_dir / CONFIG, cfg.out_dir / RESULTS
    identity = cfg.identity()
    if config_path.is_file():
        try:
            previous = json.loads(config_path.read_text()).get("identity", {})
        except json.JSONDecodeError:
            previous = {}
        diff = [k for k in IDENTITY_KEYS if previous.get(k) != identity.get(k)]
        if previous and diff and results_path.is_file() and results_path.stat().st_size:
            raise RunMismatch(f"{cfg.out_dir} holds a run with different {', '.join(diff)}; "
                              "use another --out directory (finished results there are kept)")
    config_path.write_text(json.dumps({"identity": identity, "sandbox": asdict(cfg.sandbox),
                                       "batch_size": cfg.batch_size, "workers": cfg.workers}, indent=2))
    if results_path.is_file() and results_path.stat().st_size:
        with open(results_path, "rb+") as f:  # a torn last line must not swallow the next row
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
    return load_results(results_path)


def _complete(sampler: Sampler, chunk: Sequence[Task], cfg: EvalConfig, seed: int) -> list[list[str]]:
    """n raw completions per task of the chunk."""
    d = cfg.decode
    if chunk[0].style == "infill":
        return [sampler.infill(t.prompt, t.suffix, length=hole_budget(sampler.count_tokens(t.canonical)),
                               n=cfg.n_samples, settings=d, seed=seed + i) for i, t in enumerate(chunk)]
    prompts = [build_prompt(t, use_chat=d.use_chat) for t in chunk for _ in range(cfg.n_samples)]
    outs: list[str] = []
    for i in range(0, len(prompts), cfg.batch_size):
        outs += sampler.generate(prompts[i:i + cfg.batch_size], settings=d, seed=seed + i)
    return [outs[j * cfg.n_samples:(j + 1) * cfg.n_samples] for j in range(len(chunk))]


def _score(task: Task, raw: list[str], pool: ThreadPoolExecutor, sandbox: SandboxConfig) -> dict:
    completions = raw if task.style == "infill" else [extract_code(r, task) for r in raw]
    results = list(pool.map(lambda c: run_program(program_for(task, c), sandbox), completions))
    row = {"task_id": task.task_id, "raw": raw, "completions": completions,
           "results": [r.to_dict() for r in results], "n": len(results),
           "c": sum(r.status == "passed" for r in results)}
    if task.style == "infill":
        row["exact"] = [normalize_ws(c) == normalize_ws(task.canonical) for c in completions]
    return row


def run_eval(cfg: EvalConfig, sampler: Sampler) -> dict:
    """Evaluate (or finish evaluating) `cfg.task` with `sampler`; returns the summary dict."""
    tasks = select_tasks(cfg)
    if not tasks:
        raise ValueError(f"no tasks selected from {cfg.task} (check --limit / --task-id)")
    done = _prepare_out_dir(cfg)
    sandbox_info = describe(cfg.sandbox)
    pending = [(i, t) for i, t in enumerate(tasks) if t.task_id not in done]
    per_chunk = 1 if tasks[0].style == "infill" else max(1, cfg.batch_size // cfg.n_samples)
    bar = _progress(cfg, total=len(tasks), initial=len(tasks) - len(pending))
    started = time.time()
    with ThreadPoolExecutor(max_workers=cfg.workers) as pool, open(cfg.out_dir / RESULTS, "a", encoding="utf-8") as f:
        for start in range(0, len(pending), per_chunk):
            chunk = pending[start:start + per_chunk]
            raw = _complete(sampler, [t for _, t in chunk], cfg, seed=cfg.decode.seed + chunk[0][0])
            for (_, task), task_raw in zip(chunk, raw):
                row = _score(task, task_raw, pool, cfg.sandbox)
                f.write(json.dumps(row) + "\n")
                f.flush()
                os.fsync(f.fileno())
                done[task.task_id] = row
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    rows = [done[t.task_id] for t in tasks if t.task_id in done]
    summary = report.summarize(rows, identity=cfg.identity(), sandbox=sandbox_info,
                               elapsed_s=time.time() - started, n_tasks=len(tasks))
    (cfg.out_dir / SUMMARY).write_text(json.dumps(summary, indent=2))
    (cfg.out_dir / REPORT).write_text(report.markdown(summary))
    return summary


def _progress(cfg: EvalConfig, *, total: int, initial: int):
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=cfg.task, unit="task")
