"""Completion examples on held-out files, honestly picked: the first N Python files, not the best N.

For each file the cursor sits at the start of the line in the middle of the file (the same cursors
as `latency.py`). The hole is `--length` tokens, decoded with the LSP's settings (threshold 0.9, dual
cache). The markdown shows the last lines before the cursor, the model's text, the real text that
followed, and the first lines after the hole.

Usage:
    .venv/bin/python train/recipes/default_model/examples.py --n 5 --out runs/default_model/examples.md
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from coda_model import DecodeConfig
from coda_model.checkpoint import load_model
from coda_model.engine import Engine

REPO = Path(__file__).resolve().parents[3]


def fence(text: str) -> str:
    return "```python\n" + text.rstrip("\n") + "\n```"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "model" / "default_model"))
    ap.add_argument("--data", default=str(REPO / "data" / "default_model"))
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--out", default="")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on a busy shared CPU)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu", dtype="auto")
    engine, tok = Engine(loaded), loaded.tokenizer
    lsp = DecodeConfig.editor()  # the server's default decode: what an editor shows
    cfg = replace(lsp, steps=min(lsp.steps, args.length))
    parts, done = [], 0
    for line in (Path(args.data) / "heldout.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        lines = row["text"].splitlines(keepends=True)
        if not row["path"].endswith(".py") or len(lines) < 20:
            continue
        mid = len(lines) // 2
        before, after = "".join(lines[:mid]), "".join(lines[mid:])
        pre, suf = tok.encode(before)[-384:], tok.encode(after)
        real = tok.decode(suf[: args.length])
        state = None
        for state in engine.infill(pre, suf[args.length: args.length + 128], length=args.length, config=cfg):
            pass
        got = engine.hole_text(state)
        ctx_before = "".join(lines[max(0, mid - 6):mid])
        ctx_after = tok.decode(suf[args.length: args.length + 40])
        parts.append(f"### {done + 1}. `{row['path']}` line {mid + 1}\n\nBefore the cursor (last lines):\n\n{fence(ctx_before)}\n\n"
                     f"Model ({args.length}-token hole):\n\n{fence(got)}\n\nWhat the file really has there:\n\n{fence(real)}\n\n"
                     f"After the hole:\n\n{fence(ctx_after)}\n")
        done += 1
        if done >= args.n:
            break
    text = "\n".join(parts)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
