"""Markdown tables of the default model's measurements (from the JSON files `compare.py` writes).

Why: the numbers in MODEL_CARD.md and docs/default_model.md are copied from here, so every cell
traces back to one JSON file under runs/default_model/eval/.

Usage:
    .venv/bin/python train/recipes/default_model/results_table.py [--eval runs/default_model/eval]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MODELS = [  # (file suffix, label)
    ("long", "**default model** (stages 1–4, then 8.2 M more diffusion tokens in stage 5)"),
    ("final", "after stage 4 (AR warm-up → adapt → diffusion pre + mid), the from-scratch rival's budget"),
    ("pre", "same, after diffusion pre-training only"),
    ("scratch", "rival: diffusion from scratch (same diffusion tokens, no AR warm-up)"),
    ("adapted", "AR warm-up weights run bidirectionally (0 diffusion steps)"),
    ("arfim_long", "**rival: AR+FIM at the default model's budget** (AR warm-up + AR+FIM on the same rows as stages 3–5)"),
    ("arfim_pre", "rival: AR+FIM at the stage-3 budget (AR warm-up + AR+FIM on the pre-training rows)"),
    ("ar", "AR warm-up alone (AR+FIM)"),
    ("trivial", "trivial: most frequent training line"),
    ("trivial_prev", "trivial: repeat the line before the hole"),
]


def load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def fmt(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def render(ev: Path) -> str:
    out = ["| model | held-out diffusion loss (mean over σ) | masked acc σ=0.1 / 0.5 | held-out AR NLL/token |"
           " single-line infill NLL/token | multi-line infill NLL/token | single / multi, left-to-right decoding NLL |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, label in MODELS:
        h = load(ev / f"heldout_{key}.json") or {}
        acc = h.get("masked_token_accuracy_by_sigma", {})
        ns, nm = load(ev / f"nll_single_{key}.json") or {}, load(ev / f"nll_multi_{key}.json") or {}
        ls, lm = load(ev / f"nll_l2r_single_{key}.json") or {}, load(ev / f"nll_l2r_multi_{key}.json") or {}
        if not (h or ns or nm):
            continue
        accs = f"{fmt(acc.get('0.1'))} / {fmt(acc.get('0.5'))}" if acc else "–"
        if ns.get("kind") == "ar_exact_nll":   # an AR model's NLL is already its left-to-right NLL
            ls, lm = ns, nm
        l2r = f"{fmt(ls.get('nll_per_middle_token'))} / {fmt(lm.get('nll_per_middle_token'))}" if ls or lm else "–"
        out.append(f"| {label} | {fmt(h.get('diffusion_loss_mean'))} | {accs} | {fmt(h.get('ar_nll_per_token'))} |"
                   f" {fmt(ns.get('nll_per_middle_token'))} | {fmt(nm.get('nll_per_middle_token'))} | {l2r} |")
    out += ["", "| model | HumanEval single-line EM | edit sim. | multi-line EM | edit sim. | problems (single / multi) |",
            "| --- | --- | --- | --- | --- | --- |"]
    for key, label in MODELS:
        s, m = load(ev / f"single_{key}.json"), load(ev / f"multi_{key}.json")
        if not (s or m):
            continue
        s, m = s or {}, m or {}
        out.append(f"| {label} | {fmt(s.get('exact_match'))} | {fmt(s.get('edit_similarity'))} | {fmt(m.get('exact_match'))} |"
                   f" {fmt(m.get('edit_similarity'))} | {s.get('n', '–')} / {m.get('n', '–')} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", default="runs/default_model/eval")
    args = ap.parse_args(argv)
    print(render(Path(args.eval)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
