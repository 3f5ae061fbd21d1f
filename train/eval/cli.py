"""`coda-eval`: measure a CoDA model on HumanEval, MBPP, HumanEval-infilling and EvalPlus files.

Usage (CPU-sized example, a handful of tasks, short generations):
    coda-eval humaneval --model DIR --limit 5 --max-new-tokens 64 --steps 64 --out runs/eval/he
    coda-eval run mbpp --model DIR -n 10 --temperature 0.8        # pass@1 and pass@10
    coda-eval humaneval-infilling-single --model DIR --limit 20
    coda-eval evalplus --dataset HumanEvalPlus.jsonl.gz --model DIR --python /path/with/numpy/python3
    coda-eval oracle humaneval                                    # references -> 100%, empty -> 0%
    coda-eval compare runs/eval/a runs/eval/b
    coda-eval report runs/eval/he
    coda-eval lm-eval --model coda --model_args pretrained=DIR --tasks humaneval   # needs lm-eval
Re-running the same command continues where it stopped (results are appended per task).
Defaults are the paper's decoding: entropy, temperature 0.1, top-p 0.9, 768 tokens in 768 steps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from coda_train.eval.datasets import ALIASES, TASK_NAMES, DatasetError
from coda_model.decode_config import FIELD_NAMES, DecodeConfig
from coda_train.eval.sampler import DecodeSettings
from coda_train.eval.sandbox import SandboxConfig

COMMANDS = ("run", "oracle", "compare", "report", "lm-eval")


OPTIONAL = {n for n in FIELD_NAMES if getattr(DecodeConfig(), n) is None}


def _add_run_args(p: argparse.ArgumentParser, *, model_required: bool) -> None:
    p.add_argument("task", choices=sorted({*TASK_NAMES, *ALIASES}), help="benchmark")
    if model_required:
        p.add_argument("--model", required=True, help="CoDA model directory (config.json, safetensors, tokenizer)")
        p.add_argument("--device", default="auto")
        p.add_argument("--dtype", default="auto")
    p.add_argument("--out", type=Path, help="run directory (default runs/eval/<task>-<model name>)")
    p.add_argument("-n", "--samples", type=int, default=1, help="samples per task (pass@k needs n >= k)")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per engine call")
    p.add_argument("--limit", type=int, help="first N tasks only")
    p.add_argument("--task-id", action="append", help="only this task id (repeatable)")
    p.add_argument("--data-dir", type=Path, help="directory with mbpp/ and humaneval-infilling/ (default ../shared/data)")
    p.add_argument("--dataset", type=Path, help="explicit dataset JSONL(.gz) file")
    p.add_argument("--split", default="test", help="MBPP split: test (11-510), validation, train, prompt, all")
    p.add_argument("--workers", type=int, default=2, help="programs executed in parallel")
    p.add_argument("--no-progress", action="store_true")
    d = DecodeSettings()
    g = p.add_argument_group("decoding (defaults: the paper's, coda_model.DecodeConfig.paper())")
    g.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    for name in FIELD_NAMES:   # every DecodeConfig field, parsed and validated by DecodeConfig itself
        g.add_argument("--" + name.replace("_", "-"), dest=f"decode_{name}", default=None, metavar="VALUE",
                       help=f"default {getattr(d.decode, name)}" + ("; 'none' disables" if name in OPTIONAL else ""))
    g.add_argument("--max-prompt-tokens", type=int, default=d.max_prompt_tokens)
    g.add_argument("--no-chat", action="store_true", help="plain-completion prompts (base models)")
    s = p.add_argument_group("sandbox")
    sb = SandboxConfig()
    s.add_argument("--timeout", type=float, default=sb.timeout_s, help="seconds per program (wall clock)")
    s.add_argument("--memory-mb", type=int, default=sb.memory_bytes >> 20)
    s.add_argument("--python", help="interpreter for programs (default: this one if any user can run it, else python3)")


def _configs(a: argparse.Namespace, model: str):
    from coda_train.eval.runner import EvalConfig

    given = {n: getattr(a, f"decode_{n}") for n in FIELD_NAMES if getattr(a, f"decode_{n}") is not None}
    try:
        decode = DecodeSettings(max_new_tokens=a.max_new_tokens, max_prompt_tokens=a.max_prompt_tokens,
                                use_chat=not a.no_chat).with_values(given)
    except ValueError as exc:
        raise SystemExit(f"coda-eval: {exc}") from None
    sandbox = SandboxConfig(timeout_s=a.timeout, cpu_seconds=max(1, int(a.timeout)),
                            memory_bytes=a.memory_mb << 20, python=a.python)
    task = ALIASES.get(a.task, a.task)
    out = a.out or Path("runs") / "eval" / f"{task}-{Path(model).name or 'model'}"
    return EvalConfig(task=task, out_dir=out, model=model, n_samples=a.samples, batch_size=a.batch_size,
                      limit=a.limit, task_ids=a.task_id, data_dir=a.data_dir, dataset=a.dataset, split=a.split,
                      workers=a.workers, progress=not a.no_progress, decode=decode, sandbox=sandbox)


def _cmd_run(a) -> int:
    from coda_train.eval.runner import run_eval
    from coda_train.eval.sampler import EngineSampler

    cfg = _configs(a, str(Path(a.model)))
    from coda_train.eval.runner import select_tasks

    select_tasks(cfg)  # fail on a missing/malformed dataset before loading the model
    sampler = EngineSampler(a.model, device=a.device, dtype=a.dtype)
    try:
        summary = run_eval(cfg, sampler)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished tasks are in {cfg.out_dir}/results.jsonl; re-run the same command to resume",
              file=sys.stderr)
        return 130
    except (RuntimeError, MemoryError) as exc:  # e.g. out of memory while decoding a batch
        print(f"coda-eval: error: {type(exc).__name__}: {exc}; finished tasks are kept in "
              f"{cfg.out_dir}/results.jsonl, re-run to resume (a smaller --batch-size may help)", file=sys.stderr)
        return 1
    print((cfg.out_dir / "report.md").read_text())
    print(json.dumps(summary["metrics"]))
    return 0


def _cmd_oracle(a) -> int:
    from coda_train.eval.oracle import run_oracle

    cfg = _configs(a, "oracle")
    if a.out is None:
        cfg.out_dir = Path("runs") / "eval" / f"oracle-{cfg.task}"
    if a.limit == 0:
        cfg.limit = None
    report = run_oracle(cfg, with_empty=not a.skip_empty)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _cmd_lm_eval(rest: list[str]) -> int:
    from coda_train.eval import lm_eval_adapter

    return lm_eval_adapter.main(rest)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "lm-eval":
        return _cmd_lm_eval(argv[1:])
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv.insert(0, "run")  # `coda-eval humaneval ...` == `coda-eval run humaneval ...`
    parser = argparse.ArgumentParser(prog="coda-eval", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_args(sub.add_parser("run", help="evaluate a model on a benchmark"), model_required=True)
    po = sub.add_parser("oracle", help="check the pipeline with reference and empty solutions")
    _add_run_args(po, model_required=False)
    po.add_argument("--skip-empty", action="store_true", help="only the reference run")
    pc = sub.add_parser("compare", help="two runs side by side")
    pc.add_argument("a", type=Path)
    pc.add_argument("b", type=Path)
    pr = sub.add_parser("report", help="print a run's markdown report")
    pr.add_argument("run_dir", type=Path)
    sub.add_parser("lm-eval", help="run lm-evaluation-harness with `--model coda` registered")
    a = parser.parse_args(argv)
    from coda_train.eval.runner import RunMismatch
    from coda_train.eval.sampler import ModelLoadFailed

    try:
        if a.command == "run":
            return _cmd_run(a)
        if a.command == "oracle":
            return _cmd_oracle(a)
        if a.command == "compare":
            from coda_train.eval.report import compare

            print(compare(a.a, a.b), end="")
            return 0
        if a.command == "report":
            from coda_train.eval.report import load_run, markdown

            print(markdown(load_run(a.run_dir)[0]), end="")
            return 0
    except (DatasetError, ModelLoadFailed, RunMismatch, FileNotFoundError, ValueError) as exc:
        print(f"coda-eval: error: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
