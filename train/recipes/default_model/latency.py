"""Latency and memory of the shipped default model on real held-out code (until `coda-bench` covers it).

For the first `--n` held-out files: a cursor at the start of a line in the middle of the file, up to
`--context` tokens of prefix + suffix around it, a `--length`-token hole, decoded by
`coda_model.engine.Engine.infill` with confidence-threshold parallel decoding and the dual KV cache
(what the LSP uses), and also in exact mode for reference. Reports p50 / p90 wall ms, forwards per
hole, peak RSS, and the 1-minute load average (this CPU is shared: a busy machine inflates every time).

Usage:
    .venv/bin/python train/recipes/default_model/latency.py [--model model/default_model] --out runs/default_model/latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from coda_model.checkpoint import load_model
from coda_model import DecodeConfig
from coda_model.engine import Engine

EDITOR = DecodeConfig.editor()   # what coda-lsp decodes with by default

REPO = Path(__file__).resolve().parents[3]


def cursors(data: Path, tok, n: int, context: int) -> list[tuple[list[int], list[int]]]:
    out = []
    for line in (data / "heldout.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if not row["path"].endswith(".py"):
            continue
        text = row["text"]
        lines = text.splitlines(keepends=True)
        if len(lines) < 20:
            continue
        cut = sum(len(l) for l in lines[: len(lines) // 2])
        pre, suf = tok.encode(text[:cut]), tok.encode(text[cut:])
        out.append((pre[-(context * 3 // 4):], suf[: context // 4]))
        if len(out) >= n:
            break
    return out


def time_infill(engine: Engine, pre: list[int], suf: list[int], length: int, cfg: DecodeConfig) -> tuple[float, int]:
    """(milliseconds, denoising steps) of one hole decoded to the end."""
    t0, n = time.perf_counter(), 0
    for _state in engine.infill(pre, suf, length=length, config=cfg):
        n += 1
    return (time.perf_counter() - t0) * 1000, n


def summarize(times: list[float], steps: list[int]) -> dict:
    t = sorted(times)
    return {"p50_ms": round(statistics.median(t), 1), "p90_ms": round(t[int(0.9 * (len(t) - 1))], 1),
            "mean_forwards": round(sum(steps) / len(steps), 1)}


def measure(engine: Engine, cases, length: int, cfg: DecodeConfig) -> dict:
    runs = [time_infill(engine, pre, suf, length, cfg) for pre, suf in cases]
    return summarize([ms for ms, _ in runs], [n for _, n in runs])


def measure_interleaved(engine: Engine, cases, length: int, cfgs: dict[str, DecodeConfig],
                        rounds: int = 3) -> dict:
    """Like `measure` for several configs, alternating them case by case (rotating the order each time).

    Why: on a shared CPU the load drifts over a run; timing configs one after the other puts that drift
    into their ratio, alternating them spreads it evenly.
    """
    names = list(cfgs)
    runs: dict[str, list[tuple[float, int]]] = {n: [] for n in names}
    k = 0
    for _ in range(rounds):
        for pre, suf in cases:
            for name in names[k % len(names):] + names[:k % len(names)]:
                runs[name].append(time_infill(engine, pre, suf, length, cfgs[name]))
            k += 1
    return {name: {**summarize([ms for ms, _ in r], [n for _, n in r]), "runs": len(r)} for name, r in runs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "model" / "default_model"))
    ap.add_argument("--data", default=str(REPO / "data" / "default_model"))
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--threshold", type=float, default=EDITOR.threshold)
    ap.add_argument("--server-steps", type=int, default=EDITOR.steps, help="the LSP's default `steps` (max forwards per hole)")
    ap.add_argument("--server-blocks", default="",
                    help="also time the server decode with these block lengths, side by side (e.g. 32,16,8)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu", dtype="auto")
    engine = Engine(loaded)
    cases = cursors(Path(args.data), loaded.tokenizer, args.n, args.context)
    fast = DecodeConfig(steps=args.length, threshold=args.threshold, cache="dual", block_length=args.length)
    # what coda-lsp runs by default: at most `steps` forwards, threshold 0.9, dual cache in `blockLength` blocks
    def server_cfg(block: int) -> DecodeConfig:
        return DecodeConfig(steps=min(args.server_steps, args.length), threshold=args.threshold, cache="dual",
                            block_length=block)

    server = server_cfg(EDITOR.block_length)
    measure(engine, cases[:2], args.length, fast)  # warm-up
    res = {"model": args.model, "dtype": str(loaded.dtype), "cases": len(cases), "context_tokens": args.context,
           "hole_tokens": args.length, "threads": args.threads,
           "threshold_dual_cache": measure(engine, cases, args.length, fast),
           "server_defaults": measure(engine, cases, args.length, server),
           "exact_fixed_steps": measure(engine, cases[: max(3, len(cases) // 4)], args.length,
                                        DecodeConfig(steps=args.length)),
           "server_blocks_interleaved": measure_interleaved(
               engine, cases, args.length, {f"block_{b}": server_cfg(int(b)) for b in args.server_blocks.split(",") if b})
           if args.server_blocks else None,
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "load_avg_1m": os.getloadavg()[0]}
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
